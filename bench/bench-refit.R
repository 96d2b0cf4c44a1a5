# Refit-heavy work with the kept model: profile confidence intervals, Box-Cox,
# and a loop of refits to simulated responses, timed side by side with lme4
# (and with lmmr's own fit time) in one R process.
# Run: Rscript bench/bench-refit.R [--quick]
#   --quick: skips lme4's profile on the n = 200,000 model (the slowest
#   reference) and uses 20 instead of 100 refits.
suppressPackageStartupMessages({
  library(lmmr)
  library(lme4)
})
quick <- "--quick" %in% commandArgs(trailingOnly = TRUE)

time_it <- function(expr, reps = 1L) {
  expr <- substitute(expr)
  env <- parent.frame()
  times <- vapply(seq_len(reps), function(i) {
    gc(FALSE)
    system.time(suppressMessages(suppressWarnings(eval(expr, env))))[["elapsed"]]
  }, numeric(1))
  median(times)
}

max_rel <- function(a, b) max(abs(a - b) / pmax(abs(b), 1e-8))

set.seed(1)
n <- 200000
G <- 2000
big <- local({
  g <- sample.int(G, n, replace = TRUE)
  x <- rnorm(n)
  b0 <- rnorm(G)
  b1 <- rnorm(G, sd = 0.5)
  data.frame(y = 1 + 0.5 * x + b0[g] + b1[g] * x + rnorm(n), x = x,
             g = factor(g))
})
f_big <- y ~ x + (x | g)
f_sleep <- Reaction ~ Days + (Days | Subject)

rows <- list()
add <- function(task, lmm_s, ref_s, ref_label, fit_s, agreement) {
  rows[[length(rows) + 1L]] <<- data.frame(
    task = task, lmm_s = lmm_s, reference = ref_label, ref_s = ref_s,
    ratio_ref = lmm_s / ref_s, lmm_fit_s = fit_s, ratio_fit = lmm_s / fit_s,
    agreement = agreement)
}

## 1. confint(method = "profile")
for (case in list(list("sleepstudy (Days|Subject)", f_sleep, lme4::sleepstudy, 5L),
                  list(sprintf("n = %d, %d groups, (x|g)", n, G), f_big, big, 1L))) {
  label <- case[[1]]
  form <- case[[2]]
  dat <- case[[3]]
  reps <- case[[4]]
  t_fit <- time_it(lmm(form, data = dat), reps = max(reps, 3L))
  fit <- suppressMessages(lmm(form, data = dat))
  t_prof <- time_it(ci <- confint(fit, method = "profile"), reps = reps)
  skip_ref <- quick && nrow(dat) > 1e4
  if (skip_ref) {
    t_ref <- NA_real_
    agree <- NA_character_
  } else {
    fit4 <- lmer(form, data = dat)
    t_ref <- time_it(ci4 <- confint(fit4, method = "profile", parm = "theta_",
                                    oldNames = TRUE), reps = reps)
    agree <- sprintf("max rel diff of ends %.1e", max_rel(ci, ci4))
  }
  add(paste("profile confint,", label), t_prof, t_ref,
      "lme4 confint(profile)", t_fit, agree)
}

## 2. boxcox() over the default lambda grid, vs the same grid of ML refits
## with lme4::refit()
fit_s <- suppressMessages(lmm(f_sleep, data = lme4::sleepstudy))
t_fit_s <- time_it(lmm(f_sleep, data = lme4::sleepstudy), reps = 5L)
bc <- boxcox(fit_s)
t_bc <- time_it(boxcox(fit_s), reps = 3L)
fit4_ml <- lmer(f_sleep, data = lme4::sleepstudy, REML = FALSE)
y <- lme4::sleepstudy$Reaction
bc_ref <- function() {
  vapply(bc$lambda, function(lam) {
    yt <- if (abs(lam) < 1e-12) log(y) else (y^lam - 1) / lam
    s <- sd(yt)
    as.numeric(logLik(lme4::refit(fit4_ml, yt / s))) - length(y) * log(s) +
      (lam - 1) * sum(log(y))
  }, numeric(1))
}
t_bc_ref <- time_it(ll_ref <- bc_ref(), reps = 3L)
ok <- is.finite(bc$loglik)
add(sprintf("boxcox, sleepstudy, %d lambdas (+ optimise, CI)", length(bc$lambda)),
    t_bc, t_bc_ref, "lme4::refit(ML) on the grid only", t_fit_s,
    sprintf("max abs diff of profile loglik %.1e",
            max(abs(bc$loglik[ok] - ll_ref[ok]))))

## 3. a loop of refits to simulated responses
n_refit <- if (quick) 20L else 100L
for (case in list(list("sleepstudy", f_sleep, lme4::sleepstudy),
                  list(sprintf("n = %d, (x|g)", n), f_big, big))) {
  form <- case[[2]]
  dat <- case[[3]]
  fit <- suppressMessages(lmm(form, data = dat))
  fit4 <- lmer(form, data = dat)
  t_fit <- time_it(lmm(form, data = dat), reps = 3L)
  m <- if (nrow(dat) > 1e4) min(n_refit, 20L) else n_refit
  sims <- simulate(fit, nsim = m, seed = 1)
  t_loop <- time_it(ours <- vapply(sims, function(s) lmmr::fixef(lmmr::refit(fit, s))[2], 0))
  t_loop4 <- time_it(theirs <- vapply(sims, function(s)
    lme4::fixef(lme4::refit(fit4, s))[2], 0))
  add(sprintf("%d refits (simulate, refit), %s", m, case[[1]]), t_loop, t_loop4,
      "lme4::refit loop", t_fit,
      sprintf("max rel diff of slopes %.1e", max_rel(ours, theirs)))
}

res <- do.call(rbind, rows)
options(width = 200)
print(res, digits = 3, row.names = FALSE)
cat("\nratio_ref = lmm / reference; ratio_fit = lmm / one lmm() fit of the same model.\n")
cat("Target: profile confint within 20x the fit time on the n = 200,000 model.\n")
