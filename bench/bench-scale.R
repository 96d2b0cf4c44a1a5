# The data pass at memory speed (issue 11): lmm() against one
# crossprod(cbind(1, X, y)) pass and lme4::lmer(), side by side in one R
# process, on y ~ x1 + ... + x9 + (1 | g) with 10^4 groups; then where the
# time of lmm() goes (Rprof) and memory from /proc/self/status.
#
# Run: Rscript bench/bench-scale.R [n] [--no-lme4] [--threads=k]
#   n defaults to 1e6. For 10^7 rows run it under /usr/bin/time -v with
#   --no-lme4 (lme4 needs minutes and several GiB there).
suppressPackageStartupMessages(library(lmmr))
options(width = 200)
args <- commandArgs(trailingOnly = TRUE)
n <- if (length(num <- args[!grepl("^--", args)])) as.numeric(num[1]) else 1e6
use_lme4 <- !"--no-lme4" %in% args && requireNamespace("lme4", quietly = TRUE)
thr <- sub("^--threads=", "", grep("^--threads=", args, value = TRUE))
threads <- if (length(thr)) as.integer(thr) else NULL

status_mb <- function(field) {
  s <- readLines("/proc/self/status")
  as.numeric(sub("[^0-9]*([0-9]+).*", "\\1", grep(paste0("^", field, ":"), s, value = TRUE))) / 1024
}
# median elapsed and CPU (user + system, all threads) seconds
time_it <- function(expr, reps) {
  expr <- substitute(expr)
  env <- parent.frame()
  tm <- vapply(seq_len(reps), function(i) {
    invisible(gc(FALSE))
    st <- system.time(suppressMessages(eval(expr, env)))
    c(st[["elapsed"]], st[["user.self"]] + st[["sys.self"]])
  }, numeric(2))
  c(elapsed = median(tm[1, ]), cpu = median(tm[2, ]))
}
# lmmr versions before lmm_control(threads =)
has_threads <- "threads" %in% names(formals(lmm_control))
ctl <- function(threads) if (has_threads) lmm_control(threads = threads) else lmm_control()

set.seed(1)
G <- 1e4
X <- matrix(rnorm(n * 9), n, 9, dimnames = list(NULL, paste0("x", 1:9)))
g <- sample.int(G, n, replace = TRUE)
y <- drop(X %*% seq(0.1, 1, length.out = 9)) + rnorm(G)[g] + rnorm(n)
d <- data.frame(y = y, X, g = factor(g))
rm(g)
f <- y ~ x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 + x9 + (1 | g)
ctrl <- ctl(threads)
data_mb <- as.numeric(object.size(d)) / 2^20
x_mb <- n * 10 * 8 / 2^20

# peak memory of one fit: the kernel's peak RSS is reset just before it
# (writing 5 to /proc/self/clear_refs), so the peak beyond the RSS with the
# data loaded is what the fit needs (the fit object included)
invisible(gc(FALSE))
rss_data <- status_mb("VmRSS")
reset <- tryCatch({ writeLines("5", "/proc/self/clear_refs"); TRUE }, error = function(e) FALSE)
fit <- lmm(f, d, control = ctrl) # warm-up (and the criterion)
hwm <- status_mb("VmHWM")
reps <- if (n > 5e6) 1 else 5
t_cp <- time_it(crossprod(cbind(1, X, y)), reps + 2)
t_lmm <- time_it(lmm(f, d, control = ctrl), reps)
t_lmer <- if (use_lme4) time_it(lme4::lmer(f, d), 1) else c(NA, NA)
crit_diff <- if (use_lme4) {
  f2 <- lme4::lmer(f, d)
  (fit$objective - lme4::REMLcrit(f2)) / abs(lme4::REMLcrit(f2))
} else NA
# threads: the same numbers whatever their number
fit1 <- lmm(f, d, control = ctl(1))
t_lmm1 <- time_it(lmm(f, d, control = ctl(1)), reps)

cat(sprintf("lmmr %s; n = %g, p = 10, G = %d, (1 | g); threads: %s; load average %s\n",
            utils::packageVersion("lmmr"), n, G,
            if (is.null(threads)) "all cores" else threads,
            paste(scan("/proc/loadavg", what = "", n = 3, quiet = TRUE), collapse = " ")))
tab <- rbind(t_cp, t_lmm, t_lmm1, t_lmer)
res <- data.frame(
  what = c("crossprod(cbind(1, X, y))", "lmm()", "lmm(), 1 thread", "lme4::lmer()"),
  elapsed = tab[, 1], lmm_over_this = t_lmm[1] / tab[, 1],
  cpu = tab[, 2], lmm_cpu_over_this = t_lmm[2] / tab[, 2],
  lmm1_cpu_over_this = t_lmm1[2] / tab[, 2]
)
print(res, digits = 3, row.names = FALSE)
cat(sprintf("criterion: lmm - lmer relative %.2g; 1 thread vs default identical: %s\n",
            crit_diff, identical(fit1$objective, fit$objective) && identical(fit1$beta, fit$beta)))
cat(sprintf("memory: data frame %.0f MB, X (n x 10) %.0f MB; RSS with the data %.0f MB, peak RSS during the first fit %.0f MB%s: %.0f MB beyond the data (%.2f X)\n",
            data_mb, x_mb, rss_data, hwm, if (reset) "" else " (peak of the whole process)",
            hwm - rss_data, (hwm - rss_data) / x_mb))

# where the time goes
prof <- tempfile()
Rprof(prof, interval = 0.005)
fit <- suppressMessages(lmm(f, d, control = ctrl))
Rprof(NULL)
tot <- summaryRprof(prof)$by.total
rownames(tot) <- gsub('"', "", rownames(tot))
keep <- c("lmm", "h_model_design", "h_build_frame", "h_re_terms", "h_fixed_matrix_sums",
          "h_columns_model_matrix", "rs_fill_columns", "rs_cross_products",
          "stats::model.matrix", "h_x_summaries", "h_drop_rank_deficient", "rs_model_new",
          "rs_model_fit", "h_build_lmm")
tot <- tot[intersect(keep, rownames(tot)), c("total.time", "total.pct")]
cat("\nwhere the time of one lmm() call goes (Rprof, seconds):\n")
print(tot)

# the fixed-effects matrix with interactions and factors: model.matrix()
# against the matrix built in Rust from the columns (identical), and the fit
d$f1 <- factor(sample(letters[1:5], n, TRUE))
d$f2 <- factor(sample(LETTERS[1:3], n, TRUE))
fi <- y ~ x1 * f1 + x2:f2 + x3 + (1 | g)
ns <- asNamespace("lmmr")
fr <- ns$h_build_frame(ns$h_frame_formula(fi), d, NULL, NULL, NULL, stats::na.omit)
tt <- ns$h_attach_predvars(ns$h_fixed_terms(ns$h_no_bars(fi), d), ns$h_predvars_map(attr(fr, "terms")))
t_mm <- time_it({ mm <- stats::model.matrix(tt, fr); rownames(mm) <- NULL }, reps)
t_rs <- time_it(rs <- ns$h_columns_model_matrix(tt, fr, NULL), reps)
# alternating, five of each (the order and R's heap growth otherwise decide)
tt_fit <- vapply(1:10, function(i) {
  old <- options(lmmr.rust_model_matrix = i %% 2 == 1)
  on.exit(options(old))
  time_it(lmm(fi, d, control = ctrl), 1)[1]
}, 0)
t_fit <- median(tt_fit[c(TRUE, FALSE)])
t_fit_mm <- median(tt_fit[c(FALSE, TRUE)])
cat(sprintf("\n%s (p = %d): model.matrix() %.3f s elapsed (%.3f CPU), built in Rust %.3f s (%.3f CPU), identical: %s; lmm() %.3f s, with model.matrix() %.3f s (medians of 5, alternating)\n",
            deparse(fi), ncol(mm), t_mm[1], t_mm[2], t_rs[1], t_rs[2], identical(mm, rs),
            t_fit, t_fit_mm))
