# Regression tests for the optimiser (issues 8 and 16): cases where lmm's
# optimum used to be worse than lme4's while reported as converged. Data from
# the generator of bench/optim-cases.R; lme4 1.1-31 fitted live.

h_optim_case_data <- function(seed) {
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
  d$y <- 1 + 0.5 * d$x1 + u[d$g1] + v[d$g1] * d$z1 + w[d$g] * d$x2 / 3 +
    rnorm(n) * runif(1, 0.2, 2)
  d$w <- runif(n, 0.2, 3)
  d$off <- rnorm(n)
  d
}

# lmm's criterion must not be worse than lme4's by more than 1e-6 relative,
# unless lmm warns that it could not confirm its optimum.
h_expect_not_worse <- function(formula, data, REML, weights = NULL, offset = NULL) {
  args <- list(formula = formula, data = data, REML = REML, weights = weights,
               offset = offset)
  warned <- FALSE
  fit <- withCallingHandlers(
    suppressMessages(do.call(lmm, args)),
    lmmr_warning_convergence = function(w) {
      warned <<- TRUE
      invokeRestart("muffleWarning")
    })
  ref <- suppressWarnings(suppressMessages(do.call(lme4::lmer, args)))
  crit <- -2 * as.numeric(logLik(fit))
  crit_ref <- if (REML) lme4::REMLcrit(ref) else deviance(ref)
  if (!warned) {
    expect_true(fit$optinfo$converged)
    expect_lte((crit - crit_ref) / abs(crit_ref), 1e-6)
  }
  invisible(list(fit = fit, ref = ref, warned = warned, crit = crit, crit_ref = crit_ref))
}

test_that("an interior local minimum next to a lower zero variance is left", {
  skip_if_not_installed("lme4")
  # y ~ x3 + (0 + x1 | g1) with weights, ML: the descent from theta = 1
  # stopped at an interior local minimum (about 7e-5 and 5e-3 relative
  # worse than lme4's zero variance).
  for (seed in c(4016, 4183)) {
    d <- h_optim_case_data(seed)
    res <- h_expect_not_worse(y ~ x3 + (0 + x1 | g1), d, REML = FALSE, weights = d$w)
    expect_false(res$warned)
  }
})

test_that("an unbounded ML criterion is a classed perfect-fit error", {
  skip_if_not_installed("lme4")
  # y ~ 0 + x3:x4 + x1 + (x1 + z1 + x2 + 0 || g), ML, 11 rows: the random
  # slopes can reproduce the response, so the deviance decreases without
  # bound as their variances grow. lmm used to stop at -22.15 and call it
  # converged after 200 iterations (lme4 1.1-31 stops at -41.27); the
  # criterion goes further down (below -100) until the penalised residual
  # sum of squares vanishes, and that is reported as a perfect fit.
  d <- h_optim_case_data(2190)
  expect_error(suppressMessages(lmm(y ~ 0 + x3:x4 + x1 + (x1 + z1 + x2 + 0 || g), d,
                                    REML = FALSE)),
               class = "lmmr_error_non_finite", regexp = "perfect fit")
})

test_that("two identical terms with an offset do not stay on the symmetric path", {
  skip_if_not_installed("lme4")
  # y ~ x5 + z1 + (z1 | g1) + (z1 | g1) with an offset: from the symmetric
  # default start a quasi-Newton path keeps both terms equal (a worse
  # singular optimum, 0.26% above lme4's).
  d <- h_optim_case_data(3320)
  res <- h_expect_not_worse(y ~ x5 + z1 + (z1 | g1) + (z1 | g1), d, REML = TRUE,
                            offset = d$off)
  expect_false(res$warned)
})

test_that("the gradient reported at the optimum is analytic and small", {
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  expect_true(fit$optinfo$converged)
  expect_length(fit$optinfo$gradient, 3)
  expect_lt(max(abs(fit$optinfo$gradient)), 1e-3)
  expect_gt(fit$optinfo$n_grad, 0)
  # lme4 1.1-31, lmer(Reaction ~ Days + (Days | Subject), sleepstudy): REMLcrit
  expect_equal(-2 * as.numeric(logLik(fit)), 1743.628272, tolerance = 1e-9)
})

test_that("an optimum that cannot be confirmed gives a classed warning", {
  # One quasi-Newton iteration is not enough, and the end-point check says so.
  expect_warning(fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy,
                            control = lmm_control(max_iter = 1)),
                 class = "lmmr_warning_convergence")
  expect_false(fit$optinfo$converged)
  expect_match(fit$optinfo$message, "maximum number of iterations")
})
