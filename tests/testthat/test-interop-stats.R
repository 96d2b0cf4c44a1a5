# stats generics (terms, df.residual, weights, extractAIC, drop1, family,
# residuals types, hatvalues, cooks.distance), confint(parm = "beta_" /
# "theta_") and lattice plots of ranef(), against lme4 1.1-31 / lmerTest
# 3.1-3 on the same fits.

skip_if_not_installed("lmerTest")

test_that("terms(), df.residual(), weights(), family(), extractAIC() match lme4", {
  for (name in c("sleep", "clinics", "dye2")) {
    m <- interop_fits(name)
    for (args in list(list(), list(random.only = TRUE), list(fixed.only = FALSE))) {
      a <- do.call(terms, c(list(m$fit), args))
      b <- do.call(terms, c(list(m$ref), args))
      expect_identical(attr(a, "term.labels"), attr(b, "term.labels"))
      expect_identical(attr(a, "intercept"), attr(b, "intercept"))
    }
    expect_identical(df.residual(m$fit), df.residual(m$ref))
    expect_equal(weights(m$fit), weights(m$ref))
    expect_identical(family(m$fit)$family, family(m$ref)$family)
    expect_identical(family(m$fit)$link, family(m$ref)$link)
    expect_equal(extractAIC(m$fit), extractAIC(m$ref), tolerance = 1e-7)
  }
  fit <- interop_fits("sleep")$fit
  expect_error(terms(fit, fixed.only = TRUE, random.only = TRUE), class = "lmmr_error_argument")
  expect_error(weights(fit, type = "working"), class = "lmmr_error_argument")
  expect_error(extractAIC(fit, scale = 1), class = "lmmr_error_argument")
})

test_that("residuals(type =), hatvalues(), cooks.distance() match lme4", {
  for (name in c("sleep", "clinics", "dye2")) {
    m <- interop_fits(name)
    tol <- if (name == "sleep") 1e-4 else 1e-6
    for (type in c("response", "working", "pearson", "deviance")) {
      expect_equal(residuals(m$fit, type = type), residuals(m$ref, type = type),
                   tolerance = tol, label = type)
    }
    expect_equal(hatvalues(m$fit), hatvalues(m$ref), tolerance = tol)
    expect_equal(cooks.distance(m$fit), cooks.distance(m$ref), tolerance = tol * 10)
  }
  # weights and missing values (na.exclude pads with NA, as lme4)
  d <- lme4::sleepstudy
  d$w <- rep(c(1, 2, 0.5), length.out = nrow(d))
  d$Reaction[5] <- NA
  f <- lmm(Reaction ~ Days + (1 | Subject), d, weights = w, na.action = na.exclude)
  r <- lme4::lmer(Reaction ~ Days + (1 | Subject), d, weights = w, na.action = na.exclude)
  expect_equal(hatvalues(f), hatvalues(r), tolerance = 1e-6)
  expect_equal(residuals(f, type = "pearson"), residuals(r, type = "pearson"), tolerance = 1e-6)
  expect_equal(weights(f), weights(r))
})

test_that("drop1() matches lmerTest's drop1()", {
  for (name in c("clinics", "visits")) {
    m <- interop_fits(name)
    for (ddf in c("Satterthwaite", "Kenward-Roger")) {
      a <- drop1(m$fit, ddf = ddf)
      b <- drop1(m$ref, ddf = ddf)
      expect_same_table(a, b)
      expect_identical(rownames(a), rownames(b))
    }
  }
  m <- interop_fits("clinics")
  expect_identical(rownames(drop1(m$fit, scope = "age")), "age")
  expect_error(drop1(m$fit, scope = "smoker"), class = "lmmr_error_argument")
})

test_that("confint(parm = 'beta_' / 'theta_') as lme4", {
  m <- interop_fits("clinics")
  expect_equal(confint(m$fit, parm = "beta_"),
               confint(m$ref, parm = "beta_", method = "Wald"), tolerance = 1e-6)
  expect_identical(confint(m$fit, parm = "theta_"),
                   confint(m$ref, parm = "theta_", method = "Wald"))
  s <- interop_fits("sleep")
  expect_identical(dimnames(confint(s$fit, parm = "theta_")),
                   dimnames(confint(s$ref, parm = "theta_", method = "Wald")))
  p <- suppressWarnings(confint(m$fit, parm = "theta_", method = "profile"))
  expect_equal(p, suppressMessages(confint(m$ref, parm = "theta_", method = "profile")),
               tolerance = 1e-4)
  expect_error(confint(m$fit, parm = "beta_", method = "profile"),
               class = "lmmr_error_argument")
})

test_that("lattice dotplot() and qqmath() of ranef() work as for lme4", {
  skip_if_not_installed("lattice")
  m <- interop_fits("sleep")
  re <- ranef(m$fit, condVar = TRUE)
  p <- lattice::dotplot(re)
  q <- lattice::qqmath(re)
  pr <- lattice::dotplot(lme4::ranef(m$ref, condVar = TRUE))
  expect_identical(names(p), names(pr))
  expect_s3_class(p$Subject, "trellis")
  expect_s3_class(q$Subject, "trellis")
  # same level order (by the first column) and the same panels
  expect_identical(p$Subject$y.limits, pr$Subject$y.limits)
  expect_identical(names(p$Subject$packet.sizes), names(pr$Subject$packet.sizes))
  grDevices::pdf(NULL)
  on.exit(grDevices::dev.off())
  expect_no_error(print(p$Subject))
  expect_no_error(print(q$Subject))
  expect_no_error(print(lattice::dotplot(ranef(m$fit, condVar = FALSE))$Subject))
})

test_that("rstudent() and influence(do.coef = FALSE) match lme4", {
  for (name in c("clinics", "dye2")) {
    m <- interop_fits(name)
    expect_equal(rstudent(m$fit), rstudent(m$ref), tolerance = 1e-6)
    expect_equal(influence(m$fit, do.coef = FALSE)$hat,
                 influence(m$ref, do.coef = FALSE)$hat, tolerance = 1e-6)
  }
  expect_no_error(influence(interop_fits("clinics")$fit))
  expect_error(influence(interop_fits("clinics")$fit, do.coef = TRUE),
               class = "lmmr_error_argument")
})

test_that("update(fit, data = d) uses the caller's d (as performance's bootstrap needs)", {
  assign("interop_d", phaa_clinics, envir = globalenv())
  on.exit(rm("interop_d", envir = globalenv()))
  fit <- eval(quote(lmm(sbp ~ age + (1 | clinic_id), data = interop_d)), globalenv())
  resample <- function(model) {
    interop_d <- phaa_clinics[phaa_clinics$smoker == "No", ]
    update(model, data = interop_d)
  }
  fit2 <- resample(fit)
  expect_identical(nobs(fit2), sum(phaa_clinics$smoker == "No"))
  skip_if_not_installed("performance")
  ci <- suppressWarnings(performance::icc(fit, ci = 0.9, iterations = 5))
  expect_gt(ci$ICC_adjusted[3] - ci$ICC_adjusted[2], 0)
})
