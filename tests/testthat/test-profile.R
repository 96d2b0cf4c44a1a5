# Profile-likelihood confidence intervals for the variance components
# (h_confint_profile()), compared with confint(<merMod>, method = "profile").
#
# lme4 1.1-31 profiles the ML deviance for every fit (profile.merMod() refits
# REML fits by ML first), so REML and ML fits give the same intervals there;
# h_confint_profile() does the same by default. lme4 locates the ends by
# spline interpolation of a grid of profile points, ours by root finding on
# the profile itself; the largest difference seen on these examples is
# 1.7e-4 relative (Dyestuff, lower end of .sig01, where lme4's value is the
# less accurate: zeta there is -1.95984 instead of -1.95996).

prof_fit <- function(formula, data, REML = TRUE) {
  suppressMessages(lmm(formula, data = data, REML = REML))
}

lme4_profile_ci <- function(formula, data, REML = TRUE, rows) {
  ref <- suppressMessages(lme4::lmer(formula, data = data, REML = REML))
  ci <- suppressMessages(suppressWarnings(
    stats::confint(ref, method = "profile", oldNames = TRUE)))
  ci[rows, , drop = FALSE]
}

expect_profile_matches_lme4 <- function(formula, data, REML = TRUE,
                                        tol = 1e-3) {
  fit <- prof_fit(formula, data, REML)
  ci <- h_confint_profile(fit)
  ref <- lme4_profile_ci(formula, data, REML, rownames(ci))
  expect_equal(rownames(ci), rownames(ref))
  expect_equal(colnames(ci), colnames(ref))
  expect_equal(unclass(ci), unclass(ref), tolerance = tol, ignore_attr = TRUE)
  invisible(list(ci = ci, ref = ref))
}

# zeta (signed root of the deviance increase) at a value of parameter m
prof_zeta <- function(fit, m, value, REML = FALSE) {
  ctx <- h_prof_context(fit, REML)
  cache <- new.env()
  cache$values <- numeric(0)
  cache$pars <- list()
  h_prof_zeta(ctx, m, value, cache)
}

test_that("profile intervals match lme4 on Dyestuff (REML and ML)", {
  skip_if_not_installed("lme4")
  f <- Yield ~ 1 + (1 | Batch)
  r1 <- expect_profile_matches_lme4(f, lme4::Dyestuff, REML = TRUE)
  r2 <- expect_profile_matches_lme4(f, lme4::Dyestuff, REML = FALSE)
  expect_equal(rownames(r1$ci), c(".sig01", ".sigma"))
  expect_equal(colnames(r1$ci), c("2.5 %", "97.5 %"))
  # as lme4 1.1-31, the ML deviance is profiled for both
  expect_equal(unclass(r1$ci), unclass(r2$ci), tolerance = 1e-6,
               ignore_attr = TRUE)
})

test_that("profile intervals match lme4 on sleepstudy", {
  skip_if_not_installed("lme4")
  expect_profile_matches_lme4(Reaction ~ Days + (1 | Subject),
                              lme4::sleepstudy)
  r <- expect_profile_matches_lme4(Reaction ~ Days + (Days | Subject),
                                   lme4::sleepstudy)
  expect_equal(rownames(r$ci), c(".sig01", ".sig02", ".sig03", ".sigma"))
  # the correlation interval lies within [-1, 1] and contains the estimate
  est <- attr(r$ci, "estimates")
  expect_true(all(r$ci[, 1] < est & est < r$ci[, 2]))
  expect_true(r$ci[".sig02", 1] > -1 && r$ci[".sig02", 2] < 1)
  expect_profile_matches_lme4(Reaction ~ Days + (Days | Subject),
                              lme4::sleepstudy, REML = FALSE)
})

test_that("profile intervals match lme4 on Penicillin (crossed effects)", {
  skip_if_not_installed("lme4")
  r <- expect_profile_matches_lme4(diameter ~ 1 + (1 | plate) + (1 | sample),
                                   lme4::Penicillin)
  expect_equal(rownames(r$ci), c(".sig01", ".sig02", ".sigma"))
})

test_that("an sd estimated at 0 gets lower limit 0 (Dyestuff2)", {
  skip_if_not_installed("lme4")
  r <- expect_profile_matches_lme4(Yield ~ 1 + (1 | Batch), lme4::Dyestuff2)
  expect_identical(r$ci[".sig01", 1], 0)
  expect_gt(r$ci[".sig01", 2], 0)
})

test_that("the lower limit is 0 when the profile at 0 stays below the cutoff", {
  skip_if_not_installed("lme4")
  fit <- prof_fit(Yield ~ 1 + (1 | Batch), lme4::Dyestuff)
  # at 95% the lower end of .sig01 is interior; at 99.9% the profile at 0
  # (|zeta| = 2.32) is below the cutoff 3.29, so the lower end is 0
  z0 <- prof_zeta(fit, 1L, 0)
  expect_true(abs(z0) > qnorm(0.975) && abs(z0) < qnorm(0.9995))
  ci <- h_confint_profile(fit, parm = ".sig01", level = 0.999)
  expect_identical(ci[1, 1], 0)
  expect_equal(colnames(ci), c("0.05 %", "99.95 %"))
})

test_that("the ends are where |zeta| reaches the cutoff; parm and level", {
  fit <- prof_fit(Reaction ~ Days + (Days | Subject), lmmr::sleepstudy)
  ci <- h_confint_profile(fit, parm = c(".sig02", ".sigma"), level = 0.9)
  expect_equal(dim(ci), c(2L, 2L))
  expect_equal(rownames(ci), c(".sig02", ".sigma"))
  expect_equal(colnames(ci), c("5 %", "95 %"))
  cut <- qnorm(0.95)
  expect_equal(prof_zeta(fit, 2L, ci[1, 1]), -cut, tolerance = 1e-6)
  expect_equal(prof_zeta(fit, 2L, ci[1, 2]), cut, tolerance = 1e-6)
  expect_equal(prof_zeta(fit, 4L, ci[2, 1]), -cut, tolerance = 1e-6)
  expect_equal(prof_zeta(fit, 4L, ci[2, 2]), cut, tolerance = 1e-6)
  expect_equal(h_confint_profile(fit, parm = 4L, level = 0.9), ci[2, , drop = FALSE],
               ignore_attr = TRUE)
  expect_error(h_confint_profile(fit, parm = "Days"),
               class = "lmmr_error_argument")
  expect_error(h_confint_profile(fit, parm = 9L), class = "lmmr_error_argument")
  expect_error(h_confint_profile(fit, level = 1), class = "lmmr_error_argument")
})

test_that("the profiled deviance is the fit's criterion at the optimum", {
  w <- rep(c(1, 2, 0.5), 60)
  fit_ml <- suppressMessages(lmm(Reaction ~ Days + (Days | Subject),
                                 data = lmmr::sleepstudy, weights = w,
                                 REML = FALSE))
  ctx <- h_prof_context(fit_ml, REML = FALSE)
  expect_equal(ctx$dev0, fit_ml$objective, tolerance = 1e-8)
  expect_equal(unname(ctx$est[4]), fit_ml$sigma, tolerance = 1e-5)
  fit <- prof_fit(Reaction ~ Days + (Days | Subject), lmmr::sleepstudy)
  ctx <- h_prof_context(fit, REML = TRUE)
  expect_equal(ctx$dev0, fit$objective, tolerance = 1e-8)
  # a REML fit is profiled around its ML estimates by default, around its
  # REML estimates with REML = TRUE
  ci_reml <- h_confint_profile(fit, REML = TRUE)
  est <- attr(ci_reml, "estimates")
  vc <- VarCorr(fit)$Subject
  expect_equal(unname(est[c(1, 3)]), unname(sqrt(diag(vc))), tolerance = 1e-4)
  expect_equal(unname(est[4]), fit$sigma, tolerance = 1e-5)
  ci_ml <- h_confint_profile(fit)
  expect_true(all(ci_reml[c(1, 3), 2] > ci_ml[c(1, 3), 2]))
  expect_equal(prof_zeta(fit, 1L, ci_reml[1, 2], REML = TRUE), qnorm(0.975),
               tolerance = 1e-6)
})

test_that("three correlated random effects: ends on the cutoff", {
  skip_on_cran()
  set.seed(42)
  d <- lmmr::sleepstudy
  d$x <- rnorm(nrow(d))
  b <- rnorm(18, sd = 30)
  d$Reaction <- d$Reaction + b[as.integer(d$Subject)] * d$x
  fit <- prof_fit(Reaction ~ Days + x + (Days + x | Subject), d,
                  REML = FALSE)
  expect_false(is_singular(fit))
  ci <- h_confint_profile(fit, parm = c(".sig05", ".sig06"))
  est <- attr(ci, "estimates")[c(".sig05", ".sig06")]
  expect_true(all(ci[, 1] < est & est < ci[, 2]))
  cut <- qnorm(0.975)
  expect_equal(prof_zeta(fit, 5L, ci[1, 1]), -cut, tolerance = 1e-6)
  expect_equal(prof_zeta(fit, 5L, ci[1, 2]), cut, tolerance = 1e-6)
  expect_equal(prof_zeta(fit, 6L, ci[2, 2]), cut, tolerance = 1e-6)
})
