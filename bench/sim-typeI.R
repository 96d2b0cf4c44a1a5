# Type-I error of the test of a cluster-level treatment in a small
# cluster-randomised design: lmmr's Satterthwaite and Kenward-Roger t tests
# against the naive lm() t test that ignores the clustering.
#
# Run: Rscript bench/sim-typeI.R [nsim] [--check-ref=K]
#   nsim          number of simulated data sets (default 2000)
#   --check-ref=K also refit the first K data sets with lmerTest/pbkrtest and
#                 print the largest p-value and df differences (default
#                 K = 50 when lmerTest and pbkrtest are installed; 0 = off)
#
# Design: 10 clusters x 30 observations, treatment assigned by cluster
# (5 vs 5), ICC 0.25 (random-intercept variance 0.25, residual variance
# 0.75), no true treatment effect. Model: lmm(y ~ treat + (1 | cluster))
# (REML). Seeded (set.seed(20240607)), so the results are reproducible for a
# given nsim. No assertions: the script only prints the rates.

args <- commandArgs(trailingOnly = TRUE)
options(width = max(getOption("width"), 200))
nsim <- 2000L
pos <- grep("^--", args, invert = TRUE, value = TRUE)
if (length(pos) >= 1L) nsim <- as.integer(pos[1])
if (is.na(nsim) || nsim < 1L) stop("nsim must be a positive integer")
check_arg <- grep("^--check-ref=", args, value = TRUE)
have_ref <- all(vapply(c("lmerTest", "pbkrtest"), requireNamespace, logical(1), quietly = TRUE))
n_check <- if (length(check_arg)) as.integer(sub("^--check-ref=", "", check_arg[1])) else if (have_ref) 50L else 0L
n_check <- min(n_check, nsim)
if (n_check > 0L && !have_ref) stop("--check-ref needs lmerTest and pbkrtest")

suppressPackageStartupMessages(library(lmmr))

n_clusters <- 10L
m <- 30L
icc <- 0.25
alpha <- 0.05
sd_b <- sqrt(icc)
sd_e <- sqrt(1 - icc)
cluster <- factor(rep(seq_len(n_clusters), each = m))
treat <- factor(rep(rep(c("ctl", "trt"), each = n_clusters / 2), each = m))

simulate_data <- function() {
  y <- rnorm(n_clusters, sd = sd_b)[cluster] + rnorm(n_clusters * m, sd = sd_e)
  data.frame(y = y, treat = treat, cluster = cluster)
}

one_fit <- function(d) {
  out <- c(p_sat = NA, p_kr = NA, p_lm = NA, df_sat = NA, df_kr = NA, singular = NA)
  fit <- tryCatch(suppressMessages(suppressWarnings(lmm(y ~ treat + (1 | cluster), data = d))),
                  error = function(e) e)
  if (!inherits(fit, "error")) {
    cs <- tryCatch(coef(summary(fit, ddf = "Satterthwaite"))["treattrt", ], error = function(e) NULL)
    ck <- tryCatch(coef(summary(fit, ddf = "Kenward-Roger"))["treattrt", ], error = function(e) NULL)
    if (!is.null(cs)) out[c("p_sat", "df_sat")] <- cs[c("Pr(>|t|)", "df")]
    if (!is.null(ck)) out[c("p_kr", "df_kr")] <- ck[c("Pr(>|t|)", "df")]
    out["singular"] <- is_singular(fit)
  }
  out["p_lm"] <- coef(summary(lm(y ~ treat, data = d)))["treattrt", "Pr(>|t|)"]
  out
}

cat(sprintf("sim-typeI.R: %d data sets; %d clusters x %d, treatment by cluster (%d vs %d), ICC %.2f, no effect\n",
            nsim, n_clusters, m, n_clusters / 2, n_clusters / 2, icc))
cat(sprintf("date: %s; R %s; lmmr %s; cores: %d\n\n", format(Sys.time(), "%Y-%m-%d %H:%M"),
            getRversion(), utils::packageVersion("lmmr"), parallel::detectCores()))

set.seed(20240607)
t0 <- proc.time()[["elapsed"]]
res <- matrix(NA_real_, nsim, 6, dimnames = list(NULL, c("p_sat", "p_kr", "p_lm", "df_sat", "df_kr", "singular")))
data_sets <- vector("list", n_check)
for (i in seq_len(nsim)) {
  d <- simulate_data()
  if (i <= n_check) data_sets[[i]] <- d
  res[i, ] <- one_fit(d)
}
elapsed <- proc.time()[["elapsed"]] - t0

rate_row <- function(label, p, check) {
  ok <- !is.na(p)
  x <- sum(p[ok] < alpha)
  n <- sum(ok)
  ci <- if (n > 0) stats::binom.test(x, n)$conf.int else c(NA, NA)
  rate <- x / n
  data.frame(method = label, rejections = x, valid = n, rate = round(rate, 4),
             ci_lower = round(ci[1], 4), ci_upper = round(ci[2], 4),
             in_0.035_0.065 = if (check) ifelse(rate >= 0.035 && rate <= 0.065, "yes", "NO") else "-",
             stringsAsFactors = FALSE, check.names = FALSE)
}
tab <- rbind(rate_row("lmmr Satterthwaite", res[, "p_sat"], TRUE),
             rate_row("lmmr Kenward-Roger", res[, "p_kr"], TRUE),
             rate_row("lm (ignores clustering)", res[, "p_lm"], FALSE))
cat(sprintf("Type-I error at alpha = %.2f (95%% Clopper-Pearson CI):\n", alpha))
print(tab, row.names = FALSE)

sing <- res[, "singular"] == 1
cat(sprintf("\nsingular fits (cluster variance estimated at 0): %d of %d (%.1f%%)\n",
            sum(sing, na.rm = TRUE), nsim, 100 * mean(sing, na.rm = TRUE)))
nf <- sum(is.na(res[, "p_sat"]) | is.na(res[, "p_kr"]))
if (nf > 0) cat(sprintf("fits or summaries that failed: %d\n", nf))
if (any(!sing, na.rm = TRUE)) {
  ns <- !sing & !is.na(sing)
  cat(sprintf("rates among non-singular fits (%d): Satterthwaite %.4f, Kenward-Roger %.4f\n",
              sum(ns), mean(res[ns, "p_sat"] < alpha), mean(res[ns, "p_kr"] < alpha)))
}
if (any(sing, na.rm = TRUE)) {
  s <- sing & !is.na(sing)
  cat(sprintf("rates among singular fits (%d): Satterthwaite %.4f, Kenward-Roger %.4f\n",
              sum(s), mean(res[s, "p_sat"] < alpha), mean(res[s, "p_kr"] < alpha)))
}
q <- function(x) paste(formatC(stats::quantile(x, c(0, 0.25, 0.5, 0.75, 1), na.rm = TRUE),
                               format = "f", digits = 2), collapse = " / ")
cat("df of treat (min / q1 / median / q3 / max):\n")
cat("  Satterthwaite:", q(res[, "df_sat"]), "\n")
cat("  Kenward-Roger:", q(res[, "df_kr"]), "\n")
if (any(!sing, na.rm = TRUE)) {
  cat("  non-singular fits only, Satterthwaite:", q(res[!sing & !is.na(sing), "df_sat"]), "\n")
}
cat(sprintf("\nelapsed (simulation, %d fits): %.1f s (%.1f ms per data set: lmm fit + 2 summaries + lm)\n",
            nsim, elapsed, 1000 * elapsed / nsim))

if (n_check > 0L) {
  suppressPackageStartupMessages(library(lmerTest))
  t1 <- proc.time()[["elapsed"]]
  ref <- t(vapply(data_sets, function(d) {
    fr <- suppressMessages(suppressWarnings(lmerTest::lmer(y ~ treat + (1 | cluster), data = d)))
    a <- coef(summary(fr, ddf = "Satterthwaite"))["treattrt", ]
    b <- coef(summary(fr, ddf = "Kenward-Roger"))["treattrt", ]
    c(p_sat = a[["Pr(>|t|)"]], p_kr = b[["Pr(>|t|)"]], df_sat = a[["df"]], df_kr = b[["df"]])
  }, numeric(4)))
  mine <- res[seq_len(n_check), colnames(ref), drop = FALSE]
  cat(sprintf("\nCheck against lmerTest/pbkrtest on the first %d data sets (%.1f s):\n", n_check,
              proc.time()[["elapsed"]] - t1))
  for (nm in colnames(ref)) {
    dif <- abs(mine[, nm] - ref[, nm])
    rel <- dif / abs(ref[, nm])
    cat(sprintf("  %-6s max |diff| %.2e, max rel diff %.2e (at data set %d)\n", nm,
                max(dif, na.rm = TRUE), max(rel, na.rm = TRUE), which.max(rel)))
  }
  same <- sum((mine[, "p_sat"] < alpha) == (ref[, "p_sat"] < alpha), na.rm = TRUE)
  same_kr <- sum((mine[, "p_kr"] < alpha) == (ref[, "p_kr"] < alpha), na.rm = TRUE)
  cat(sprintf("  same decision at %.2f: Satterthwaite %d/%d, Kenward-Roger %d/%d\n", alpha,
              same, n_check, same_kr, n_check))
}
cat(sprintf("\nTotal elapsed: %.1f s\n", proc.time()[["elapsed"]] - t0))
