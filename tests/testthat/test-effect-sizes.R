test_that("variance_proportions() splits the variance as r2() and icc()", {
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  vp <- variance_proportions(fit)
  expect_named(vp, c("component", "variance", "proportion"))
  expect_equal(sum(vp$proportion), 1)
  expect_equal(vp$variance[vp$component == "Residual"], sigma(fit)^2)
  # the random share equals the adjusted ICC (performance's definition)
  expect_equal(sum(vp$proportion[vp$component != "Residual"]),
               icc(fit)$adjusted, tolerance = 1e-10)
  vpf <- variance_proportions(fit, fixed = TRUE)
  expect_equal(vpf$proportion[1], r2(fit)$marginal, tolerance = 1e-10)
  # random intercept only: the component is tau^2 itself
  f0 <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  vc <- as.data.frame(VarCorr(f0))
  expect_equal(variance_proportions(f0)$variance, vc$vcov, tolerance = 1e-10)
  expect_error(variance_proportions(lm(Reaction ~ Days, sleepstudy)), class = "lmmr_error")
})

test_that("variance_change() gives the proportional reduction by hand", {
  m0 <- lmm(sbp ~ 1 + (1 | clinic_id), data = phaa_clinics)
  m1 <- lmm(sbp ~ age + smoker + clinic_urban + (1 | clinic_id), data = phaa_clinics)
  vc <- variance_change(m0, m1)
  v0 <- as.data.frame(VarCorr(m0))$vcov
  v1 <- as.data.frame(VarCorr(m1))$vcov
  expect_equal(vc$relative_change, (v1 - v0) / v0)
  expect_equal(vc$reduction, (v0 - v1) / v0)
  expect_equal(vc$grp, c("clinic_id", "Residual"))
  m2 <- lmm(sbp ~ 1 + (1 | clinic_id), data = phaa_clinics[-1, ])
  expect_error(variance_change(m0, m2), class = "lmmr_error_data_mismatch")
})

test_that("cohens_f2() from the marginal R2 of the two fits", {
  full <- lmm(sbp ~ age + smoker + bmi + (1 | clinic_id), data = phaa_clinics)
  reduced <- lmm(sbp ~ age + bmi + (1 | clinic_id), data = phaa_clinics)
  f <- cohens_f2(full, reduced)
  rf <- r2(full)$marginal
  rr <- r2(reduced)$marginal
  expect_equal(f[["f2"]], (rf - rr) / (1 - rf))
  expect_gt(f[["f2"]], 0)
  fc <- cohens_f2(full, reduced, r2 = "conditional")
  expect_equal(fc[["r2_full"]], r2(full)$conditional)
  expect_error(cohens_f2(reduced, full), class = "lmmr_error_argument")
  expect_error(cohens_f2(full, reduced, r2 = "x"))
})
