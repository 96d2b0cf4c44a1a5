# Issue 16 shapes whose lmm optimum used to be worse than lme4's while
# "converged": simulate small data sets for each formula over many seeds, fit
# lmm() and lme4::lmer(), and count the cases where lmm's criterion is worse
# by more than 1e-6 relative, split by whether lmm warned.
# Run: R_LIBS=<lib> Rscript bench/optim-cases.R [n_seeds] [case numbers, e.g. 2,3,4]
suppressPackageStartupMessages({
  library(lmmr)
  library(lme4)
})
args <- commandArgs(trailingOnly = TRUE)
n_seeds <- if (length(args)) as.integer(args[1]) else 40L
only <- if (length(args) > 1) as.integer(strsplit(args[2], ",")[[1]]) else NULL

make_data <- function(seed) {
  set.seed(seed)
  n <- sample(c(8:40, 60, 120, 300), 1)
  ng <- sample(2:8, 1)
  d <- data.frame(
    x1 = rnorm(n), x2 = rnorm(n, 3, 2), x3 = runif(n), x4 = rnorm(n),
    x5 = factor(sample(letters[1:3], n, TRUE)), z1 = rnorm(n),
    g = factor(sample(ng, n, TRUE)), g1 = factor(sample(ng, n, TRUE)),
    g2 = factor(sample(sample(2:6, 1), n, TRUE)))
  u <- rnorm(nlevels(d$g1)) * runif(1, 0, 2)
  v <- rnorm(nlevels(d$g1)) * runif(1, 0, 1)
  w <- rnorm(nlevels(d$g)) * runif(1, 0, 1)
  d$y <- 1 + 0.5 * d$x1 + u[d$g1] + v[d$g1] * d$z1 + w[d$g] * d$x2 / 3 + rnorm(n) * runif(1, 0.2, 2)
  d$w <- runif(n, 0.2, 3)
  d$off <- rnorm(n)
  d
}

cases <- list(
  list(f = y ~ (x2 | g1) - 1, weights = TRUE, REML = TRUE),
  list(f = y ~ 0 + x3:x4 + x1 + (x1 + z1 + x2 + 0 || g), REML = FALSE),
  list(f = y ~ x5 + z1 + (z1 | g1) + (z1 | g1), offset = TRUE, REML = TRUE),
  list(f = y ~ x3 + (0 + x1 | g1), weights = TRUE, REML = FALSE),
  list(f = y ~ (x3 | g2) + (x1 || g2) + (1 | x5) - 1, REML = TRUE)
)

fit_both <- function(cs, d) {
  args <- list(formula = cs$f, data = d, REML = cs$REML)
  if (isTRUE(cs$weights)) args$weights <- d$w
  if (isTRUE(cs$offset)) args$offset <- d$off
  warned <- FALSE
  f1 <- tryCatch(withCallingHandlers(suppressMessages(do.call(lmm, args)),
                                     warning = function(w) {
                                       if (inherits(w, "lmmr_warning_convergence")) warned <<- TRUE
                                       invokeRestart("muffleWarning")
                                     }),
                 error = function(e) NULL)
  f2 <- tryCatch(suppressWarnings(suppressMessages(do.call(lmer, args))), error = function(e) NULL)
  if (is.null(f1) || is.null(f2)) return(NULL)
  c1 <- -2 * as.numeric(logLik(f1))
  c2 <- if (cs$REML) REMLcrit(f2) else deviance(f2)
  # lme4 1.1-31 keeps an intercept in `y ~ (x | g) - 1` (nobars() gives
  # `y ~ 1`) where lmm fits none: a different model, counted apart.
  data.frame(rel = (c1 - c2) / abs(c2), warned = warned, n_eval = f1$optinfo$n_eval,
             same_model = length(fixef(f1)) == length(lme4::fixef(f2)))
}

out <- list()
for (i in if (is.null(only)) seq_along(cases) else only) {
  res <- do.call(rbind, lapply(seq_len(n_seeds), function(s) {
    r <- fit_both(cases[[i]], make_data(1000 * i + s))
    if (!is.null(r)) r$seed <- 1000 * i + s
    r
  }))
  mism <- !res$same_model
  res <- res[!mism, , drop = FALSE]
  worse <- res$rel > 1e-6
  out[[i]] <- data.frame(formula = deparse(cases[[i]]$f), fits = nrow(res),
                         other_model = sum(mism),
                         worse_silent = sum(worse & !res$warned),
                         worse_warned = sum(worse & res$warned),
                         better = sum(res$rel < -1e-6),
                         max_rel = if (nrow(res)) max(res$rel) else NA, median_evals = median(res$n_eval),
                         worst_seeds = paste(head(res$seed[order(-res$rel)][worse[order(-res$rel)]], 3), collapse = ","))
}
print(do.call(rbind, out), right = FALSE, row.names = FALSE)
