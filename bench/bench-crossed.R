# Large crossed designs (issue 11), lmm() against lme4::lmer() side by side
# in one R process:
#   * InstEval (lme4's data, 73,421 ratings, 2,972 students x 1,128
#     lecturers): y ~ service * dept + studage + lectage + (1 | s) + (1 | d),
#     ML and REML;
#   * a simulated ratings table shaped like MovieLens-1M: 10^6 ratings of
#     3,706 items by 6,040 users, skewed counts (user activity lognormal,
#     item popularity Zipf-like), ratings 1-5: rating ~ 1 + (1 | user) +
#     (1 | item), REML, then Satterthwaite and Kenward-Roger (summary());
#     lme4 on it only with --lme4-movielens (on this machine's reference
#     BLAS lme4's supernodal CHOLMOD factorisation of it ran over 13 minutes
#     without finishing);
#   * with --big: a 10^7-row table, 10^5 users x 2 x 10^4 items (no lme4;
#     time and peak memory only).
# Prints elapsed seconds, the ratio, the criteria and their difference.
#
# Run: Rscript bench/bench-crossed.R [--no-lme4] [--lme4-movielens] [--big]
#        [--no-movielens] [--big-only]
suppressPackageStartupMessages(library(lmmr))
options(width = 200)
args <- commandArgs(trailingOnly = TRUE)
use_lme4 <- !"--no-lme4" %in% args && requireNamespace("lme4", quietly = TRUE)

status_mb <- function(field) {
  s <- readLines("/proc/self/status")
  as.numeric(sub("[^0-9]*([0-9]+).*", "\\1", grep(paste0("^", field, ":"), s, value = TRUE))) / 1024
}
reset_peak <- function() tryCatch({ writeLines("5", "/proc/self/clear_refs"); TRUE }, error = function(e) FALSE)
el <- function(expr) {
  expr <- substitute(expr)
  env <- parent.frame()
  invisible(gc(FALSE))
  t <- system.time(val <- suppressWarnings(suppressMessages(eval(expr, env))))
  list(value = val, elapsed = t[["elapsed"]], cpu = t[["user.self"]] + t[["sys.self"]])
}
crit <- function(fit) -2 * as.numeric(logLik(fit))
rows <- list()
add <- function(name, a, b, extra = "") {
  rows[[length(rows) + 1L]] <<- data.frame(
    workload = name, lmm_s = round(a$elapsed, 3), lme4_s = if (is.null(b)) NA else round(b$elapsed, 3),
    ratio = if (is.null(b)) NA else round(a$elapsed / b$elapsed, 4),
    lmm_crit = crit(a$value), rel_crit_diff = if (is.null(b)) NA else
      signif((crit(a$value) - crit(b$value)) / abs(crit(b$value)), 3),
    lmm_evals = a$value$optinfo$n_eval, lmm_grads = a$value$optinfo$n_grad,
    lme4_evals = if (is.null(b)) NA else b$value@optinfo$feval, note = extra,
    stringsAsFactors = FALSE)
  print(rows[[length(rows)]], row.names = FALSE)
}

# warm-up: load and run both packages once before timing
data("sleepstudy", package = "lme4")
invisible(lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy))
if (use_lme4) invisible(lme4::lmer(Reaction ~ Days + (1 | Subject), data = sleepstudy))

# InstEval ------------------------------------------------------------------
data("InstEval", package = "lme4")
fi <- y ~ service * dept + studage + lectage + (1 | s) + (1 | d)
for (reml in if ("--big-only" %in% args) logical(0) else c(FALSE, TRUE)) {
  # lmm: the median of three runs (the first fit of this size in a session
  # also pays for R growing its heap: a few full garbage collections, ~0.1 s
  # each with lme4 and Matrix loaded; its time is printed too); lme4: one run
  runs <- lapply(1:3, function(i) el(lmm(fi, data = InstEval, REML = reml)))
  a <- runs[[order(vapply(runs, `[[`, 0, "elapsed"))[2]]]
  b <- if (use_lme4) el(lme4::lmer(fi, data = InstEval, REML = reml))
  add(sprintf("InstEval %s", if (reml) "REML" else "ML"), a, b,
      sprintf("p = %d, q = %d + %d; lmm runs %s s", length(a$value$beta), nlevels(InstEval$s),
              nlevels(InstEval$d), paste(vapply(runs, function(r) sprintf("%.2f", r$elapsed), ""),
                                         collapse = " / ")))
}

# MovieLens-1M shape ---------------------------------------------------------
make_ratings <- function(n, n_user, n_item, seed = 1) {
  set.seed(seed)
  act <- rlnorm(n_user, 0, 1)            # user activity
  pop <- 1 / seq_len(n_item)^0.9         # item popularity, Zipf-like
  pop <- sample(pop)
  # every user and item rated at least once, the rest by activity/popularity
  u <- c(seq_len(n_user), sample.int(n_user, n - n_user - n_item, replace = TRUE, prob = act),
         sample.int(n_user, n_item, replace = TRUE))
  i <- c(sample.int(n_item, n_user, replace = TRUE, prob = pop),
         sample.int(n_item, n - n_user - n_item, replace = TRUE, prob = pop), seq_len(n_item))
  eta <- 3.5 + rnorm(n_user, sd = 0.45)[u] + rnorm(n_item, sd = 0.5)[i] + rnorm(n, sd = 0.9)
  data.frame(rating = pmin(5, pmax(1, round(eta))), user = factor(u), item = factor(i))
}
if (!"--no-movielens" %in% args && !"--big-only" %in% args) {
  ml <- make_ratings(1e6, 6040, 3706)
  fm <- rating ~ 1 + (1 | user) + (1 | item)
  invisible(gc(FALSE))
  rss0 <- status_mb("VmRSS")
  reset_peak()
  a <- el(lmm(fm, data = ml))
  peak <- status_mb("VmHWM") - rss0
  b <- if (use_lme4 && "--lme4-movielens" %in% args) el(lme4::lmer(fm, data = ml))
  add("MovieLens-1M shape REML", a, b, sprintf("10^6 x (6,040 + 3,706), peak +%.0f MB", peak))
  s1 <- el(summary(a$value, ddf = "Satterthwaite"))
  s2 <- el(summary(a$value, ddf = "Kenward-Roger"))
  cat(sprintf("MovieLens-1M shape: summary() Satterthwaite %.2f s, Kenward-Roger %.2f s (target < 5 s)\n",
              s1$elapsed, s2$elapsed))
  rm(ml)
}

# 10^7 rows, 10^5 x 2 x 10^4 -----------------------------------------------
if ("--big" %in% args || "--big-only" %in% args) {
  big <- make_ratings(1e7, 1e5, 2e4)
  invisible(gc(FALSE))
  rss0 <- status_mb("VmRSS")
  reset_peak()
  # no time budget: one evaluation with gradient of the 20,001-column dense
  # block takes about a minute on 2 cores
  a <- el(tryCatch(lmm(rating ~ 1 + (1 | user) + (1 | item), data = big,
                       control = lmm_control(max_time = Inf)), error = function(e) e))
  if (inherits(a$value, "error")) {
    cat("10^7 x (10^5 + 2 x 10^4): error:", conditionMessage(a$value), "\n")
  } else {
    add("10^7 ratings, 10^5 x 2 x 10^4", a, NULL,
        sprintf("peak +%.0f MB, CPU %.0f s", status_mb("VmHWM") - rss0, a$cpu))
  }
}

res <- do.call(rbind, rows)
print(res, row.names = FALSE)
