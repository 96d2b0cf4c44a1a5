test_that("as.data.frame(ranef()) works with random slopes and matches lme4", {
  skip_if_not_installed("lme4")
  forms <- list(Reaction ~ Days + (Days | Subject),
                Reaction ~ Days + (Days || Subject),
                Reaction ~ Days + (1 | Subject) + (0 + Days | Subject))
  for (f in forms) {
    own <- as.data.frame(ranef(lmm(f, data = sleepstudy)))
    ref <- as.data.frame(lme4::ranef(lme4::lmer(f, data = lme4::sleepstudy),
                                     condVar = TRUE))
    expect_equal(as.character(own$grpvar), as.character(ref$grpvar))
    expect_equal(as.character(own$term), as.character(ref$term))
    expect_equal(as.character(own$grp), as.character(ref$grp))
    expect_equal(own$condval, ref$condval, tolerance = 1e-4)
    expect_equal(own$condsd, ref$condsd, tolerance = 1e-4)
  }
})

test_that("confint(): Wald and profile intervals, other methods are a classed error", {
  fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  expect_error(confint(fit, method = "bootstrap"), class = "lmmr_error_argument")
  expect_error(confint(fit, method = c("wald", "boot")), class = "lmmr_error_argument")
  expect_equal(confint(fit, method = "Wald"), confint(fit))
  pr <- confint(fit, method = "profile")
  expect_equal(rownames(pr), c(".sig01", ".sigma"))
  expect_error(confint(fit, parm = "Days", method = "profile"), class = "lmmr_error_argument")
})
