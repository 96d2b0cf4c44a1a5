test_that("predict(re.form =) selects random-effect columns as lme4 does", {
  skip_if_not_installed("lme4")
  ss <- lme4::sleepstudy
  forms <- list(Reaction ~ Days + (1 | Subject),
                Reaction ~ Days + (Days | Subject),
                Reaction ~ Days + (1 | Subject) + (0 + Days | Subject),
                Reaction ~ Days + (Days || Subject))
  rfs <- list(~ (1 | Subject), ~ (0 + Days | Subject), ~ (Days | Subject), NA, NULL, ~ 0)
  nd <- ss[c(1, 15, 100), ]
  for (f in forms) {
    own <- lmm(f, data = ss)
    ref <- lme4::lmer(f, data = ss)
    for (rf in rfs) {
      pr <- tryCatch(predict(ref, re.form = rf), error = function(e) NULL)
      if (is.null(pr)) {
        # lme4 fails (cryptically) when re.form asks for effects not in the model
        expect_error(predict(own, re.form = rf), "not in the model",
                     class = "lmmr_error_argument")
        expect_error(predict(own, newdata = nd, re.form = rf), class = "lmmr_error_argument")
      } else {
        expect_equal(unname(predict(own, re.form = rf)), unname(pr), tolerance = 1e-5)
        expect_equal(unname(predict(own, newdata = nd, re.form = rf)),
                     unname(predict(ref, newdata = nd, re.form = rf)), tolerance = 1e-5)
      }
    }
  }
})

test_that("predict(re.form =) with a term not in the model is a classed error", {
  fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  expect_error(predict(fit, re.form = ~ (Days | Subject)),
               "\\(Days \\| Subject\\) is not in the model.*no random effect for Days by Subject",
               class = "lmmr_error_argument")
  expect_error(predict(fit, re.form = ~ (zz | Subject)), class = "lmmr_error_argument")
  # random intercepts only from a random-slope model (lme4 allows it)
  fit2 <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  b <- ranef(fit2)$Subject
  p1 <- predict(fit2, re.form = ~ (1 | Subject))
  p0 <- predict(fit2, re.form = NA)
  expect_equal(unname(p1 - p0), b[as.character(sleepstudy$Subject), "(Intercept)"],
               tolerance = 1e-10)
  # simulate() conditions on whole terms only
  expect_error(simulate(fit2, re.form = ~ (1 | Subject)), class = "lmmr_error_argument")
  expect_equal(dim(simulate(fit2, re.form = ~ (Days | Subject), seed = 1)), c(180L, 1L))
})
