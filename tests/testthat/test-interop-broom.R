# tidy()/glance()/augment() on lmm fits against broom.mixed 0.2.9.4 on the
# same lmerTest::lmer() fit.

skip_if_not_installed("broom.mixed")
skip_if_not_installed("lmerTest")

test_that("tidy() matches broom.mixed for every effects type", {
  for (name in c("clinics", "visits", "dye2", "sleep")) {
    m <- interop_fits(name)
    tol <- if (name == "sleep") 1e-4 else 1e-6
    tidy_both <- function(...) {
      list(generics::tidy(m$fit, ...), suppressWarnings(broom.mixed::tidy(m$ref, ...)))
    }
    chk <- function(...) {
      r <- tidy_both(...)
      expect_same_table(r[[1]], r[[2]], tol = tol)
    }
    chk()
    chk(effects = "fixed", conf.int = TRUE)
    chk(effects = "fixed", conf.int = TRUE, conf.level = 0.9, ddf.method = "Kenward-Roger")
    chk(effects = "fixed", conf.int = TRUE, ddf.method = "lme4")
    chk(effects = "ran_pars", conf.int = TRUE)
    chk(effects = "ran_pars", scales = "vcov")
    chk(effects = "ran_vals", conf.int = TRUE)
    chk(effects = "ran_coefs")
    chk(effects = c("fixed", "ran_pars", "ran_vals", "ran_coefs"))
  }
  expect_s3_class(generics::tidy(interop_fits("sleep")$fit), "tbl_df")
})

test_that("tidy() profile intervals for ran_pars match", {
  m <- interop_fits("clinics")
  a <- generics::tidy(m$fit, effects = "ran_pars", conf.int = TRUE, conf.method = "profile")
  b <- suppressMessages(broom.mixed::tidy(m$ref, effects = "ran_pars", conf.int = TRUE,
                                          conf.method = "profile"))
  expect_same_table(a, b, tol = 1e-5, tol_ci = 1e-4)
})

test_that("glance() and augment() match broom.mixed", {
  for (name in c("clinics", "sleep", "dye2")) {
    m <- interop_fits(name)
    tol <- if (name == "sleep") 1e-4 else 1e-6
    expect_same_table(generics::glance(m$fit), broom.mixed::glance(m$ref), tol = tol)
    ml <- suppressMessages(refit(m$fit, REML = FALSE))
    ml_ref <- suppressMessages(lme4::refitML(m$ref))
    expect_same_table(generics::glance(ml), broom.mixed::glance(ml_ref), tol = tol)
    expect_same_table(generics::augment(m$fit), broom.mixed::augment(m$ref),
                      tol = if (name == "sleep") 1e-3 else 1e-5)
  }
  m <- interop_fits("sleep")
  nd <- m$data[1:5, ]
  a <- generics::augment(m$fit, newdata = nd)
  expect_equal(a$.fitted, unname(predict(m$fit, newdata = nd)))
})

test_that("tidy() rejects arguments it cannot honour", {
  fit <- interop_fits("sleep")$fit
  expect_error(generics::tidy(fit, effects = "nope"), class = "lmmr_error_argument")
  expect_error(generics::tidy(fit, exponentiate = TRUE), class = "lmmr_error_argument")
  expect_error(generics::tidy(fit, effects = "ran_pars", scales = "bogus"),
               class = "lmmr_error_argument")
  expect_error(generics::tidy(fit, effects = "fixed", scales = "vcov"),
               class = "lmmr_error_argument")
})
