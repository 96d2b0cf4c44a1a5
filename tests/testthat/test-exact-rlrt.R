# Exact (restricted) LRT for one variance component. References: RLRsim
# 3.1.8 exactRLRT() / exactLRT() on the equivalent lme4 1.1-31 fits. The two
# null distributions are simulated with different random numbers, so
# p-values agree within Monte Carlo error: with nsim = 20000 each, the
# difference of two independent estimates of p has standard error
# sqrt(2 p (1 - p) / 20000) (0.0045 at p = 0.27); we allow 4 of them.

weak_group_data <- function() {
  set.seed(7)
  d <- data.frame(g = factor(rep(1:12, each = 6)), x = rnorm(72))
  d$y <- 1 + 0.3 * d$x + rnorm(12, sd = 0.25)[d$g] + rnorm(72)
  d
}

mc_tol <- function(p, n1, n2) 4 * sqrt(p * (1 - p) * (1 / n1 + 1 / n2))

test_that("exact_rlrt(): statistic equals RLRsim's, p-value within Monte Carlo error", {
  skip_if_not_installed("RLRsim")
  skip_if_not_installed("lme4")
  d <- weak_group_data()
  fit <- lmm(y ~ x + (1 | g), data = d)
  m <- lme4::lmer(y ~ x + (1 | g), data = d)
  own <- exact_rlrt(fit, nsim = 20000, seed = 1)
  ref <- RLRsim::exactRLRT(m, nsim = 20000, seed = 1)
  expect_s3_class(own, "htest")
  # measured: 0.2577349 both
  expect_equal(unname(own$statistic), unname(ref$statistic), tolerance = 1e-6)
  # measured: 0.2730 (lmmr) vs 0.2724 (RLRsim)
  expect_lt(abs(own$p.value - ref$p.value), mc_tol(ref$p.value, 20000, 20000))
  # the null distributions: mass at zero and upper quantiles
  expect_lt(abs(mean(own$sample == 0) - mean(ref$sample == 0)), mc_tol(0.54, 20000, 20000))
  expect_equal(quantile(own$sample, c(0.9, 0.95)), quantile(ref$sample, c(0.9, 0.95)),
               tolerance = 0.05)
})

test_that("exact_rlrt(): three-model form (a slope variance next to an intercept) as RLRsim", {
  skip_if_not_installed("RLRsim")
  skip_if_not_installed("lme4")
  d <- weak_group_data()
  d$t <- rep(0:5, 12)
  d$y2 <- d$y + rnorm(12, sd = 0.5)[d$g] + rnorm(12, sd = 0.15)[d$g] * d$t
  fA <- lmm(y2 ~ x + t + (1 | g) + (0 + t | g), data = d)
  f0 <- lmm(y2 ~ x + t + (1 | g), data = d)
  f1 <- lmm(y2 ~ x + t + (0 + t | g), data = d)
  mA <- lme4::lmer(y2 ~ x + t + (1 | g) + (0 + t | g), data = d)
  m0 <- lme4::lmer(y2 ~ x + t + (1 | g), data = d)
  m1 <- lme4::lmer(y2 ~ x + t + (0 + t | g), data = d)
  own <- exact_rlrt(f1, fA, f0, nsim = 20000, seed = 2)
  ref <- suppressMessages(RLRsim::exactRLRT(m1, mA, m0, nsim = 20000, seed = 2))
  expect_equal(unname(own$statistic), unname(ref$statistic), tolerance = 1e-5)
  # measured: p 0.12 (both, within Monte Carlo error)
  expect_gt(ref$p.value, 0.05)
  expect_lt(abs(own$p.value - ref$p.value), mc_tol(ref$p.value, 20000, 20000))
  expect_equal(quantile(own$sample, 0.95), quantile(ref$sample, 0.95), tolerance = 0.05)
})

test_that("exact_lrt(): statistic equals RLRsim's exactLRT, p-value within Monte Carlo error", {
  skip_if_not_installed("RLRsim")
  skip_if_not_installed("lme4")
  d <- weak_group_data()
  fit <- lmm(y ~ x + (1 | g), data = d, REML = FALSE)
  m <- lme4::lmer(y ~ x + (1 | g), data = d, REML = FALSE)
  l0 <- lm(y ~ 1, data = d)
  own <- exact_lrt(fit, l0, nsim = 20000, seed = 1)
  ref <- RLRsim::exactLRT(m, l0, nsim = 20000, seed = 1)
  # measured: 4.199632 both; p 0.0679 vs 0.0657
  expect_equal(unname(own$statistic), unname(ref$statistic), tolerance = 1e-6)
  expect_lt(abs(own$p.value - ref$p.value), mc_tol(ref$p.value, 20000, 20000))
  expect_equal(quantile(own$sample, c(0.5, 0.9)), quantile(ref$sample, c(0.5, 0.9)),
               tolerance = 0.05)
  # REML fit: refitted by ML, with a message
  expect_message(exact_lrt(lmm(y ~ x + (1 | g), data = d), l0, nsim = 10),
                 class = "lmmr_message_refit")
})

test_that("exact_rlrt(): a zero statistic, seeds, bad input", {
  d <- weak_group_data()
  fit <- lmm(y ~ x + (1 | g), data = d)
  expect_identical(exact_rlrt(fit, nsim = 100, seed = 3)$sample,
                   exact_rlrt(fit, nsim = 100, seed = 3)$sample)
  set.seed(1)
  u <- runif(1)
  set.seed(1)
  invisible(exact_rlrt(fit, nsim = 10, seed = 5))
  expect_identical(runif(1), u)
  # a variance estimated as zero: statistic 0, p-value 1, no simulation
  fA <- lmm(Reaction ~ Days + (1 | Subject) + (1 | Days), data = sleepstudy)
  f0 <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  f1 <- lmm(Reaction ~ Days + (1 | Days), data = sleepstudy)
  expect_lt(fA$theta[["Days.(Intercept)"]], 1e-6)
  expect_message(res <- exact_rlrt(f1, fA, f0), class = "lmmr_message_rlrt_zero")
  expect_equal(res$p.value, 1)
  expect_null(res$sample)
  expect_message(exact_rlrt(lmm(y ~ x + (1 | g), data = d, REML = FALSE), nsim = 10),
                 class = "lmmr_message_refit")
  two <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  expect_error(exact_rlrt(two), class = "lmmr_error_argument")
  expect_error(exact_rlrt(fit, mA = fit), class = "lmmr_error_argument")
  expect_error(exact_rlrt(fit, nsim = 0), class = "lmmr_error_argument")
  expect_error(exact_rlrt(fit, log.grid.hi = -20), class = "lmmr_error_argument")
  expect_error(exact_lrt(fit, fit), class = "lmmr_error_argument")
  fA <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  f0 <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  f1 <- lmm(Reaction ~ Days + (0 + Days | Subject), data = sleepstudy)
  # two parameters differ (a variance and a covariance): not a single variance
  expect_error(exact_rlrt(f1, fA, f0), class = "lmmr_error_argument")
  fB <- lmm(Reaction ~ 1 + (1 | Subject) + (0 + Days | Subject), data = sleepstudy)
  expect_error(exact_rlrt(f1, fB, f0), class = "lmmr_error_argument")
})
