# The kept Rust model behind a fit (h_model_engine(), h_model_ptr()).

test_that("a fit keeps its model and a restored fit rebuilds it lazily", {
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  expect_true(is.environment(fit$engine))
  expect_true(lmmr:::rs_model_is_live(fit$engine$ptr))
  path <- tempfile(fileext = ".rds")
  on.exit(unlink(path))
  saveRDS(fit, path)
  restored <- readRDS(path)
  # the pointer does not survive serialisation...
  expect_false(lmmr:::rs_model_is_live(restored$engine$ptr))
  # ...and is rebuilt from the plain data on first use
  ptr <- lmmr:::h_model_ptr(restored)
  expect_true(lmmr:::rs_model_is_live(ptr))
  expect_true(lmmr:::rs_model_is_live(restored$engine$ptr))
  ev <- lmmr:::h_check_rust_result(
    lmmr:::rs_model_evaluate(ptr, as.numeric(fit$theta), TRUE))
  expect_equal(ev$objective, fit$objective, tolerance = 1e-10)
  expect_equal(ev$sigma, sigma(fit), tolerance = 1e-10)
  expect_equal(ev$beta, unname(fixef(fit)), tolerance = 1e-10)
  y2 <- simulate(fit, seed = 3)[[1]]
  expect_equal(fixef(refit(restored, y2)), fixef(refit(fit, y2)),
               tolerance = 1e-10)
  expect_equal(confint(restored, method = "profile", parm = ".sigma"),
               confint(fit, method = "profile", parm = ".sigma"),
               tolerance = 1e-8)
})

test_that("the kept model reads the fit's own X, which R copies before any change", {
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  y2 <- simulate(fit, seed = 4)[[1]]
  before <- refit(fit, y2)
  # changing the fit's X in place (and a copy of it, and garbage
  # collections) leaves the matrix the model reads alone
  x_kept <- fit$X
  fit$X[, 2] <- 0
  x_kept[1, 1] <- 1e6
  rm(x_kept)
  invisible(gc())
  after <- refit(fit, y2)
  expect_identical(fixef(after), fixef(before))
  expect_identical(after$theta, before$theta)
  ev <- lmmr:::h_check_rust_result(lmmr:::rs_model_evaluate(
    lmmr:::h_model_ptr(fit), as.numeric(fit$theta), TRUE))
  expect_equal(ev$objective, fit$objective, tolerance = 1e-12)
  # a model built from a matrix that R then drops keeps it alive: a new
  # response (which reads X again) after the matrix's memory could have been
  # reused gives the numbers of a model built with that response
  re <- lmmr:::h_rust_re_args(fit$re_terms)
  build <- function(x, y) {
    lmmr:::rs_model_new(x = x, y = y, weights = numeric(0),
                        codes = re$codes, n_levels = re$n_levels, z = re$z,
                        k = re$k, factor_id = re$factor_id, n_obs = NULL,
                        log_w_sum = NULL, threads = NULL)
  }
  x <- model.matrix(~ Days, sleepstudy) + 0
  ptr <- build(x, sleepstudy$Reaction)
  len <- length(x)
  rm(x)
  invisible(gc())
  junk <- lapply(1:50, function(i) rep(NaN, len))
  lmmr:::h_check_rust_result(lmmr:::rs_model_set_response(ptr, y2))
  ev1 <- lmmr:::h_check_rust_result(lmmr:::rs_model_evaluate(ptr, c(1, 0.1, 0.5), TRUE))
  ev2 <- lmmr:::h_check_rust_result(lmmr:::rs_model_evaluate(
    build(model.matrix(~ Days, sleepstudy) + 0, y2), c(1, 0.1, 0.5), TRUE))
  expect_equal(ev1$objective, ev2$objective, tolerance = 1e-12)
  expect_equal(ev1$beta, ev2$beta, tolerance = 1e-12)
})

test_that("refits share the kept model and each use loads its own response", {
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  y2 <- simulate(fit, seed = 1)[[1]]
  f2 <- refit(fit, y2)
  expect_identical(f2$engine, fit$engine)
  d2 <- sleepstudy
  d2$Reaction <- y2
  fresh <- lmm(Reaction ~ Days + (Days | Subject), data = d2)
  expect_equal(fixef(f2), fixef(fresh), tolerance = 1e-8)
  expect_equal(f2$theta, fresh$theta, tolerance = 1e-6)
  expect_equal(f2$objective, fresh$objective, tolerance = 1e-10)
  # the original fit's response is loaded back when it is used again
  ev <- lmmr:::h_check_rust_result(lmmr:::rs_model_evaluate(
    lmmr:::h_model_ptr(fit), as.numeric(fit$theta), TRUE))
  expect_equal(ev$objective, fit$objective, tolerance = 1e-10)
  ev2 <- lmmr:::h_check_rust_result(lmmr:::rs_model_evaluate(
    lmmr:::h_model_ptr(f2), as.numeric(f2$theta), TRUE))
  expect_equal(ev2$objective, f2$objective, tolerance = 1e-10)
})

test_that("an offset and weights are kept by the model", {
  d <- sleepstudy
  d$w <- rep(c(1, 2, 0.5), length.out = nrow(d))
  d$off <- d$Days * 2
  fit <- lmm(Reaction ~ Days + (1 | Subject), data = d, weights = w,
             offset = off)
  y2 <- simulate(fit, seed = 2)[[1]]
  d2 <- d
  d2$Reaction <- y2
  fresh <- lmm(Reaction ~ Days + (1 | Subject), data = d2, weights = w,
               offset = off)
  f2 <- refit(fit, y2)
  expect_equal(fixef(f2), fixef(fresh), tolerance = 1e-8)
  expect_equal(f2$objective, fresh$objective, tolerance = 1e-10)
  expect_equal(fitted(f2), fitted(fresh), tolerance = 1e-8)
})

test_that("ML refits of LRTs do not need the data", {
  local_d <- sleepstudy
  fit0 <- lmm(Reaction ~ 1 + (Days | Subject), data = local_d)
  fit1 <- lmm(Reaction ~ Days + (Days | Subject), data = local_d)
  ref <- suppressMessages(anova(fit0, fit1))
  rm(local_d)
  tab <- suppressMessages(anova(fit0, fit1))
  expect_equal(tab, ref)
  # ML deviances as lme4 1.1-31:
  # deviance(lmer(Reaction ~ 1 + (Days | Subject), sleepstudy, REML = FALSE))
  # deviance(lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = FALSE))
  expect_equal(tab$deviance, c(1775.475882, 1751.939344), tolerance = 1e-8)
})

test_that("a pointer that is not a model is an error, not a crash", {
  expect_error(
    lmmr:::h_check_rust_result(lmmr:::rs_model_evaluate(NULL, 1, TRUE)),
    class = "lmmr_error_invalid_input")
  fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  expect_error(
    lmmr:::h_check_rust_result(lmmr:::rs_model_evaluate(
      lmmr:::h_model_ptr(fit), c(1, 2), TRUE)),
    class = "lmmr_error_invalid_input")
  expect_error(
    lmmr:::h_check_rust_result(lmmr:::rs_model_set_response(
      lmmr:::h_model_ptr(fit), rep(300, nobs(fit)))),
    class = "lmmr_error_non_finite")
  # a failed response change leaves the kept model usable
  expect_equal(fixef(refit(fit, sleepstudy$Reaction)), fixef(fit),
               tolerance = 1e-10)
})

test_that("boxcox and bootstrap intervals work from the fit alone", {
  local_d <- sleepstudy
  fit <- lmm(Reaction ~ Days + (1 | Subject), data = local_d)
  bc_ref <- boxcox(fit, lambda = seq(-1, 1, 0.25))
  icc_ref <- icc(fit, ci = 0.9, nsim = 10, seed = 4)
  path <- tempfile(fileext = ".rds")
  on.exit(unlink(path))
  saveRDS(fit, path)
  rm(local_d, fit)
  restored <- readRDS(path)
  bc <- boxcox(restored, lambda = seq(-1, 1, 0.25))
  expect_equal(bc$loglik, bc_ref$loglik, tolerance = 1e-8)
  expect_equal(bc$best, bc_ref$best, tolerance = 1e-6)
  ic <- icc(restored, ci = 0.9, nsim = 10, seed = 4)
  expect_true(is.matrix(ic$ci))
  expect_equal(ic$ci, icc_ref$ci, tolerance = 1e-8)
})

test_that("the data pass gives identical fits whatever the number of threads", {
  set.seed(11)
  n <- 150000 # several slabs of rows
  d <- data.frame(x = rnorm(n), a = factor(sample(40, n, TRUE)),
                  b = factor(sample(6, n, TRUE)), w = runif(n, 0.5, 2))
  d$y <- d$x + rnorm(40)[d$a] + rnorm(6)[d$b] + rnorm(n)
  f <- y ~ x + (x | a) + (1 | b)
  fits <- lapply(1:3, function(k) lmm(f, d, weights = w, control = lmm_control(threads = k)))
  for (k in 2:3) {
    expect_identical(fits[[k]]$objective, fits[[1]]$objective)
    expect_identical(fits[[k]]$beta, fits[[1]]$beta)
    expect_identical(fits[[k]]$theta, fits[[1]]$theta)
    expect_identical(fits[[k]]$fitted, fits[[1]]$fitted)
  }
  # and refits with a new response (one pass for the response parts)
  y2 <- d$y * 2 + 1
  r1 <- refit(fits[[1]], y2)
  r3 <- refit(fits[[3]], y2)
  expect_identical(r3$objective, r1$objective)
  expect_identical(lmm_control()$threads, NULL)
  expect_identical(lmm_control(threads = 2)$threads, 2L)
  expect_error(lmm_control(threads = 0), class = "lmmr_error_argument")
  expect_error(lmm_control(threads = 1.5), class = "lmmr_error_argument")
  expect_error(lmm_control(threads = "a"), class = "lmmr_error_argument")
})

test_that("without an offset the fit is the one with a zero offset", {
  d <- sleepstudy
  d$zero <- 0
  d$off <- d$Days * 3
  f0 <- lmm(Reaction ~ Days + (Days | Subject), data = d)
  fz <- lmm(Reaction ~ Days + (Days | Subject), data = d, offset = zero)
  expect_identical(fixef(f0), fixef(fz))
  expect_identical(fitted(f0), fitted(fz))
  expect_identical(f0$offset, fz$offset)
  # a real offset is in the fitted values, and refits keep it
  fo <- lmm(Reaction ~ Days + (Days | Subject), data = d, offset = off)
  b <- as.numeric(t(as.matrix(ranef(fo)$Subject))) # Z's column order
  expect_equal(unname(fitted(fo) - fo$offset),
               unname(drop(fo$X %*% fixef(fo)) +
                        drop(as.matrix(lme4::getME(fo, "Z")) %*% b)),
               tolerance = 1e-8)
  expect_equal(fitted(refit(f0, d$Reaction)), fitted(f0), tolerance = 1e-10)
})

test_that("a design too large to store Q (formed from R's X where it is read) fits as lme4", {
  skip_on_cran()
  skip_if_not_installed("lme4")
  set.seed(11)
  n <- 430000 # n p = 4.3e6 > 2^22: Q is not stored
  X <- matrix(rnorm(n * 9), n, 9, dimnames = list(NULL, paste0("x", 1:9)))
  g <- sample.int(3000, n, replace = TRUE)
  d <- data.frame(y = drop(X %*% seq(0.1, 0.9, by = 0.1)) + rnorm(3000)[g] + rnorm(n),
                  X, g = factor(g))
  f <- y ~ x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 + x9 + (1 | g)
  fit <- lmm(f, d)
  ref <- lme4::lmer(f, d)
  expect_equal(fit$objective, lme4::REMLcrit(ref), tolerance = 1e-10)
  expect_equal(fixef(fit), lme4::fixef(ref), tolerance = 1e-7)
  expect_equal(unname(fitted(fit)), unname(fitted(ref)), tolerance = 1e-7)
  # a new response on the kept model equals a fresh fit
  y2 <- simulate(fit, seed = 5)[[1]]
  d2 <- d
  d2$y <- y2
  expect_equal(fixef(refit(fit, y2)), fixef(lmm(f, d2)), tolerance = 1e-8)
})
