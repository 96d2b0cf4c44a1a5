# boxcox(): ML profile log-likelihood of the Box-Cox parameter.

bc_data <- function(seed = 3, J = 30, m = 10) {
  set.seed(seed)
  cl <- factor(rep(seq_len(J), each = m))
  x <- runif(J * m)
  data.frame(cl, x, y = exp(1 + 0.5 * x + rnorm(J, 0, 0.3)[cl] +
                              rnorm(J * m, 0, 0.2)))
}

test_that("Box-Cox on exp(normal LMM) data picks lambda near 0", {
  d <- bc_data()
  fit <- suppressMessages(lmm(y ~ x + (1 | cl), d))
  bc <- boxcox(fit)
  expect_s3_class(bc, "lmm_boxcox")
  expect_length(bc$loglik, 41L)
  expect_lt(abs(bc$best), 0.25)
  expect_true(bc$ci[["lower"]] < 0 && 0 < bc$ci[["upper"]])
  # the interval end points sit at the chi-square cutoff
  expect_equal(bc$loglik_best - bc$cutoff, qchisq(0.95, 1) / 2)
  expect_output(print(bc), "REML")
  expect_output(print(bc), "lambda = 0 \\(log\\)")
})

test_that("profile equals direct ML fits of the transformed response plus the Jacobian", {
  d <- bc_data()
  fit <- suppressMessages(lmm(y ~ x + (1 | cl), d))
  bc <- boxcox(fit, lambda = c(-1, 0, 0.5, 1))
  jac <- sum(log(d$y))
  direct <- function(lam, f) {
    m <- suppressMessages(lmm(f, d, REML = FALSE))
    as.numeric(logLik(m)) + (lam - 1) * jac
  }
  expect_equal(bc$loglik[bc$lambda == 0], direct(0, log(y) ~ x + (1 | cl)),
               tolerance = 1e-8)
  expect_equal(bc$loglik[bc$lambda == 0.5],
               direct(0.5, I((y^0.5 - 1) / 0.5) ~ x + (1 | cl)), tolerance = 1e-8)
  expect_equal(bc$loglik[bc$lambda == -1],
               direct(-1, I((y^-1 - 1) / -1) ~ x + (1 | cl)), tolerance = 1e-8)
  # lambda = 1 is the untransformed ML fit
  expect_equal(bc$loglik[bc$lambda == 1],
               as.numeric(logLik(update(fit, REML = FALSE))), tolerance = 1e-8)
})

test_that("Box-Cox errors and plot", {
  d <- bc_data()
  d$y0 <- d$y - 3
  f0 <- suppressMessages(lmm(y0 ~ x + (1 | cl), d))
  expect_error(boxcox(f0), class = "lmmr_error_nonpositive_response")
  expect_error(boxcox(lm(y ~ x, d)), class = "lmmr_error_unsupported_model")
  fit <- suppressMessages(lmm(y ~ x + (1 | cl), d))
  expect_error(boxcox(fit, lambda = 1), class = "lmmr_error_argument")
  bc <- boxcox(fit, lambda = seq(-1, 1, 0.25))
  pdf(NULL)
  on.exit(dev.off())
  expect_invisible(plot(bc))
})

test_that("boxcox(): lambdas where y^lambda overflows are skipped with a warning", {
  fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  expect_warning(bc <- boxcox(fit, lambda = c(-50, -1, 0, 1, 400)),
                 "overflows .* lambda = 400.*constant to machine precision at lambda = -50",
                 class = "lmmr_warning_boxcox_range")
  expect_equal(bc$lambda, c(-50, -1, 0, 1, 400))
  expect_true(is.na(bc$loglik[1]) && is.na(bc$loglik[5]))
  bc2 <- boxcox(fit, lambda = c(-1, 0, 1))
  expect_equal(bc$loglik[2:4], bc2$loglik)
  expect_error(boxcox(fit, lambda = c(-50, 400)), class = "lmmr_error_argument")
  expect_no_warning(boxcox(fit, lambda = seq(-3, 3, 1)))
})
