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

test_that("predict() na.action on newdata as lme4", {
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  nd <- sleepstudy
  nd$Days[c(3, 50, 100)] <- NA
  expect_length(predict(fit, newdata = nd), 180)
  expect_equal(sum(is.na(predict(fit, newdata = nd))), 3)
  p_omit <- predict(fit, newdata = nd, na.action = na.omit)
  expect_length(p_omit, 177)
  expect_false(any(c("3", "50", "100") %in% names(p_omit)))
  expect_equal(sum(is.na(predict(fit, newdata = nd, na.action = "na.exclude"))), 3)
  expect_error(predict(fit, newdata = nd, na.action = na.fail), class = "lmmr_error_na")
  expect_error(predict(fit, newdata = nd, na.action = 3), class = "lmmr_error_argument")
  skip_if_not_installed("lme4")
  ref <- lme4::lmer(Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy)
  expect_equal(unname(p_omit), unname(predict(ref, newdata = nd, na.action = na.omit)),
               tolerance = 1e-5)
})

test_that("predict() on an na.exclude fit pads unless na.omit is asked for", {
  d <- sleepstudy
  d$Reaction[c(3, 5)] <- NA
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = d, na.action = na.exclude)
  expect_length(predict(fit), 180)
  expect_length(predict(fit, na.action = na.omit), 178)
})

test_that("predict(se.fit = TRUE) gives population-level standard errors", {
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  nd <- data.frame(Days = c(0, 4.5, 9), Subject = "308")
  p <- predict(fit, newdata = nd, re.form = NA, se.fit = TRUE)
  expect_named(p, c("fit", "se.fit"))
  X <- cbind(1, nd$Days)
  expect_equal(unname(p$se.fit), sqrt(diag(X %*% vcov(fit) %*% t(X))), tolerance = 1e-12)
  expect_equal(unname(p$fit), drop(X %*% fixef(fit)), tolerance = 1e-10)
  expect_warning(predict(fit, newdata = nd, se.fit = TRUE), class = "lmmr_warning_se_fit")
  expect_length(predict(fit, re.form = NA, se.fit = TRUE)$se.fit, 180)
})

test_that("predict() accepts re.form bars written with a formula, as lme4's tests", {
  skip_if_not_installed("lme4")
  fit <- lmm(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  ref <- lme4::lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  own <- predict(fit, re.form = ~ (1 | plate) + (~ 1 | sample))
  expect_equal(unname(own), unname(predict(fit)), tolerance = 1e-12)
  expect_equal(unname(own), unname(predict(ref, re.form = ~ (1 | plate) + (~ 1 | sample))),
               tolerance = 1e-5)
  expect_equal(unname(predict(fit, re.form = ~ (~ 1 | plate))),
               unname(predict(ref, re.form = ~ (1 | plate))), tolerance = 1e-5)
})

test_that("methods warn about arguments they do not use", {
  fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  expect_warning(predict(fit, foo = 1), class = "lmmr_warning_unused_argument")
  expect_warning(fixef(fit, bar = 2), class = "lmmr_warning_unused_argument")
  expect_warning(ranef(fit, whatever = TRUE), class = "lmmr_warning_unused_argument")
  expect_warning(summary(fit, zzz = "KR"), class = "lmmr_warning_unused_argument")
  expect_warning(residuals(fit, foo = "pearson"), class = "lmmr_warning_unused_argument")
  expect_warning(simulate(fit, seed = 1, foo = 3), class = "lmmr_warning_unused_argument")
  expect_warning(confint(fit, method = "Wald", foo = 1), class = "lmmr_warning_unused_argument")
  expect_silent(nobs(fit, use.fallback = TRUE))
})

test_that("residuals(type = 'deviance' / 'working') as lme4 for LMMs", {
  skip_if_not_installed("lme4")
  w <- rep(c(1, 2), 90)
  fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy, weights = w)
  ref <- lme4::lmer(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy, weights = w)
  expect_equal(unname(residuals(fit, type = "deviance")),
               unname(residuals(ref, type = "deviance")), tolerance = 1e-5)
  expect_equal(unname(residuals(fit, type = "working")),
               unname(residuals(ref, type = "working")), tolerance = 1e-5)
})

test_that("ranef() drop and whichel as lme4", {
  fit <- lmm(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  r <- ranef(fit, whichel = "sample")
  expect_named(r, "sample")
  d <- ranef(fit, drop = TRUE)
  expect_true(is.numeric(d$plate) && !is.null(names(d$plate)))
  expect_equal(unname(d$plate), ranef(fit)$plate[[1]], ignore_attr = TRUE)
  expect_error(ranef(fit, whichel = "nope"), class = "lmmr_error_argument")
})
