# Likelihood-ratio comparisons of several fits (anova(fit0, fit1, ...)) and
# ranova(). References: lme4 1.1-31 anova.merMod and lmerTest 3.1-3 ranova,
# computed live, and values from lmerTest's test suite (cases.csv H01-H04).

test_that("anova(fit0, fit1) matches lme4's likelihood-ratio table", {
  skip_if_not_installed("lme4")
  ss <- lme4::sleepstudy
  fm0 <- lmm(Reaction ~ 1 + (Days | Subject), data = ss)
  fm1 <- lmm(Reaction ~ Days + (Days | Subject), data = ss)
  expect_message(a <- anova(fm1, fm0), "refitting model(s) with ML (instead of REML)",
                 fixed = TRUE)
  expect_s3_class(a, c("anova", "data.frame"))
  expect_named(a, c("npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"))
  expect_equal(rownames(a), c("fm0", "fm1"))  # sorted by npar
  r0 <- lme4::lmer(Reaction ~ 1 + (Days | Subject), data = ss)
  r1 <- lme4::lmer(Reaction ~ Days + (Days | Subject), data = ss)
  ref <- suppressMessages(anova(r0, r1))
  for (col in c("npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)")) {
    expect_equal(a[[col]], ref[[col]], tolerance = 1e-4, label = col)
  }
})

test_that("REML fits with the same fixed effects are compared without refitting", {
  skip_if_not_installed("lme4")
  ss <- lme4::sleepstudy
  fm1 <- lmm(Reaction ~ Days + (Days | Subject), data = ss)
  fm2 <- lmm(Reaction ~ Days + (1 | Subject), data = ss)
  expect_no_message(a <- anova(fm1, fm2))
  # lmerTestR@35dc588 tests/test_ranova_step.R (H01): LRT 42.83681343
  expect_equal(a$Chisq[2], 42.83681343, tolerance = 1e-4)
  ref <- anova(lme4::lmer(Reaction ~ Days + (1 | Subject), data = ss),
               lme4::lmer(Reaction ~ Days + (Days | Subject), data = ss), refit = FALSE)
  expect_equal(a$logLik, ref$logLik, tolerance = 1e-6)
  expect_equal(a$AIC, ref$AIC, tolerance = 1e-6)
  # refit = FALSE keeps REML fits even when the fixed effects differ
  fm0 <- lmm(Reaction ~ 1 + (Days | Subject), data = ss)
  expect_no_message(b <- anova(fm0, fm1, refit = FALSE))
  expect_equal(b$logLik[2], as.numeric(logLik(fm1)))
})

test_that("anova of fits to different data is a classed error", {
  ss <- sleepstudy
  fm1 <- lmm(Reaction ~ Days + (Days | Subject), data = ss)
  fm3 <- lmm(Reaction ~ Days + (1 | Subject), data = ss[-1, ])
  # lme4@32b5bfd tests/testthat/test-methods.R (L20)
  expect_error(anova(fm1, fm3), class = "lmmr_error_data_mismatch")
  ss2 <- ss
  ss2$Reaction <- rev(ss2$Reaction)
  fm4 <- lmm(Reaction ~ Days + (1 | Subject), data = ss2)
  expect_error(anova(fm1, fm4), class = "lmmr_error_data_mismatch")
})

test_that("ranova reduces (x | g) to (1 | g) and matches lmerTest", {
  fm1 <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  r <- ranova(fm1)
  expect_s3_class(r, "ranova_lmm")
  expect_named(r, c("npar", "logLik", "AIC", "LRT", "Df", "Pr(>Chisq)", "Pr(>Chisq) mixture"))
  expect_equal(nrow(r), 2)
  expect_equal(r$Df[2], 2)
  # lmerTestR@35dc588 tests/test_ranova_step.R (H01): local logLik
  # -871.8141360 vs -893.2325427, LRT 42.83681343
  expect_equal(r$logLik, c(-871.8141360, -893.2325427), tolerance = 1e-6)
  expect_equal(r$LRT[2], 42.83681343, tolerance = 1e-4)
  # boundary mixture 0.5 chi2_1 + 0.5 chi2_2 (Stram & Lee 1994)
  lrt <- r$LRT[2]
  expect_equal(r[["Pr(>Chisq) mixture"]][2],
               0.5 * pchisq(lrt, 1, lower.tail = FALSE) + 0.5 * pchisq(lrt, 2, lower.tail = FALSE))
  expect_output(print(r), "mixture")
  skip_if_not_installed("lmerTest")
  ref <- lmerTest::ranova(lmerTest::lmer(Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy))
  expect_equal(r$LRT, ref$LRT, tolerance = 1e-4)
  expect_equal(r$npar, ref$npar)
})

test_that("ranova removing the only term compares with the linear model", {
  fm1 <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  # lmerTestR@35dc588 tests/test_ranova_step.R (H02): REML LRT vs lm 150.0353915
  r <- ranova(fm1, reduce.terms = FALSE)
  expect_equal(r$Df[2], 3)
  expect_equal(r$LRT[2], 150.0353915, tolerance = 1e-4)
  expect_equal(r$logLik[2], as.numeric(logLik(lm(Reaction ~ Days, sleepstudy), REML = TRUE)),
               tolerance = 1e-8)
  # H03: ML fit, LRT 106.2144134; logLik -897.0393215 / -950.1465282
  fm2 <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy, REML = FALSE)
  r2 <- ranova(fm2)
  expect_equal(r2$LRT[2], 106.2144134, tolerance = 1e-4)
  expect_equal(r2$logLik, c(-897.0393215, -950.1465282), tolerance = 1e-6)
  expect_equal(r2[["Pr(>Chisq) mixture"]][2], 0.5 * pchisq(r2$LRT[2], 1, lower.tail = FALSE))
})

test_that("ranova handles || terms, nested terms and slope-only terms", {
  skip_if_not_installed("lmerTest")
  ss <- lme4::sleepstudy
  r <- ranova(lmm(Reaction ~ Days + (Days || Subject), data = ss))
  ref <- lmerTest::ranova(lmerTest::lmer(Reaction ~ Days + (Days || Subject), data = ss))
  expect_equal(nrow(r), 3)
  expect_equal(sort(r$LRT[-1]), sort(ref$LRT[-1]), tolerance = 1e-4)
  expect_equal(r$Df[-1], c(1, 1))
  pastes <- lme4::Pastes
  rp <- suppressMessages(ranova(lmm(strength ~ 1 + (1 | batch / cask), data = pastes)))
  refp <- lmerTest::ranova(lmerTest::lmer(strength ~ 1 + (1 | batch / cask), data = pastes))
  expect_equal(sort(rp$LRT[-1]), sort(refp$LRT[-1]), tolerance = 1e-4)
  # a slope-only term is reduced to (1 | g) as lmerTest: not nested, Df 0
  r0 <- ranova(lmm(Reaction ~ Days + (0 + Days | Subject), data = ss))
  ref0 <- lmerTest::ranova(lmerTest::lmer(Reaction ~ Days + (0 + Days | Subject), data = ss))
  expect_equal(r0$Df[2], 0)
  expect_true(is.na(r0[["Pr(>Chisq)"]][2]))
  expect_true(is.na(r0[["Pr(>Chisq) mixture"]][2]))
  expect_equal(rownames(r0), rownames(ref0))
  expect_equal(r0$LRT, ref0$LRT, tolerance = 1e-4)
})

test_that("ranova reduces one slope at a time as lmerTest", {
  skip_if_not_installed("lmerTest")
  set.seed(1)
  d <- data.frame(g = gl(20, 10), x1 = rnorm(200), x2 = rnorm(200))
  d$y <- rnorm(200) + rnorm(20)[d$g] + d$x1 * rnorm(20)[d$g]
  f <- y ~ x1 + x2 + (x1 + x2 | g)
  r <- suppressWarnings(ranova(lmm(f, data = d)))
  ref <- suppressMessages(lmerTest::ranova(lmerTest::lmer(f, data = d)))
  expect_equal(rownames(r), rownames(ref))
  expect_equal(rownames(r)[2:3], c("x1 in (x1 + x2 | g)", "x2 in (x1 + x2 | g)"))
  expect_equal(r$npar, ref$npar)
  expect_equal(r$Df, ref$Df)
  expect_equal(r$LRT, ref$LRT, tolerance = 1e-4)
  expect_equal(r[["Pr(>Chisq)"]], ref[["Pr(>Chisq)"]], tolerance = 1e-4)
  # one dimension of a 3-dimensional term: 50:50 mixture of chi2_2 and chi2_3
  expect_equal(r[["Pr(>Chisq) mixture"]][3],
               0.5 * pchisq(r$LRT[3], 2, lower.tail = FALSE) +
                 0.5 * pchisq(r$LRT[3], 3, lower.tail = FALSE))
  # (0 + poly(Days, 2) | Subject) -> (1 | Subject): negative LRT, p = 1
  ss <- lme4::sleepstudy
  fp <- Reaction ~ Days + (0 + poly(Days, 2) | Subject)
  rp <- ranova(lmm(fp, data = ss))
  refp <- lmerTest::ranova(lmerTest::lmer(fp, data = ss))
  expect_equal(rp$Df, refp$Df)
  expect_equal(rp$LRT, refp$LRT, tolerance = 1e-4)
  expect_equal(rp[["Pr(>Chisq)"]][2], 1)
  expect_equal(rownames(rp), rownames(refp))
  # reduce.terms = FALSE removes whole terms
  rf <- suppressWarnings(ranova(lmm(f, data = d), reduce.terms = FALSE))
  reff <- suppressMessages(lmerTest::ranova(lmerTest::lmer(f, data = d), reduce.terms = FALSE))
  expect_equal(rf$LRT, reff$LRT, tolerance = 1e-4)
  expect_equal(rf$Df, reff$Df)
})

test_that("ranova on a Dyestuff REML fit matches lmerTest", {
  skip_if_not_installed("lmerTest")
  d <- lme4::Dyestuff
  r <- ranova(lmm(Yield ~ 1 + (1 | Batch), data = d))
  ref <- lmerTest::ranova(lmerTest::lmer(Yield ~ 1 + (1 | Batch), data = d))
  expect_equal(r$LRT[2], ref$LRT[2], tolerance = 1e-4)
  expect_equal(r$logLik, ref$logLik, tolerance = 1e-6)
})

test_that("anova() against an lm(): likelihood-ratio test as lme4, ML refit", {
  skip_if_not_installed("lme4")
  ss <- lme4::sleepstudy
  fit <- lmm(Reaction ~ Days + (1 | Subject), data = ss)
  l1 <- lm(Reaction ~ Days, data = ss)
  l0 <- lm(Reaction ~ 1, data = ss)
  ref <- lme4::lmer(Reaction ~ Days + (1 | Subject), data = ss)
  for (l in list(l1, l0)) {
    expect_message(a <- anova(fit, l), "refitting model\\(s\\) with ML", class = "lmmr_message_refit")
    b <- suppressMessages(anova(ref, l))
    expect_equal(a$npar, b$npar)
    expect_equal(a$logLik, b$logLik, tolerance = 1e-6)
    expect_equal(a$Chisq, b$Chisq, tolerance = 1e-5)
    expect_equal(a$Df, b$Df)
    expect_equal(a[["Pr(>Chisq)"]], b[["Pr(>Chisq)"]], tolerance = 1e-5)
  }
  # the lm row is first (fewer parameters), npar = length(coef) + 1
  expect_equal(rownames(suppressMessages(anova(fit, l1))), c("l1", "fit"))
  expect_equal(suppressMessages(anova(fit, l1))$npar, c(3, 4))
  # with weights
  ss$w <- rep(c(1, 2), length.out = nrow(ss))
  fw <- suppressMessages(lmm(Reaction ~ Days + (1 | Subject), data = ss, weights = w))
  lw <- lm(Reaction ~ Days, data = ss, weights = w)
  rw <- lme4::lmer(Reaction ~ Days + (1 | Subject), data = ss, weights = w)
  expect_equal(suppressMessages(anova(fw, lw))$Chisq,
               suppressMessages(anova(rw, lw))$Chisq, tolerance = 1e-5)
  # REML against lm without refitting: classed error; other data: classed error
  expect_error(anova(fit, l1, refit = FALSE), class = "lmmr_error_argument")
  l_sub <- lm(Reaction ~ Days, data = ss[-1, ])
  expect_error(suppressMessages(anova(fit, l_sub)), class = "lmmr_error_data_mismatch")
  # ML fits need no refit
  fml <- lmm(Reaction ~ Days + (1 | Subject), data = ss, REML = FALSE)
  expect_no_message(a <- anova(fml, l1))
  expect_equal(a$Chisq[2], 106.21, tolerance = 1e-4)
})

test_that("anova() with extra arguments that are not models: classed error", {
  fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  expect_error(anova(fit, "foo"), class = "lmmr_error_argument")
  expect_error(anova(fit, foo = 3), class = "lmmr_error_argument")
  expect_error(anova(fit, glm(Reaction ~ Days, data = sleepstudy)),
               class = "lmmr_error_argument")
  fit0 <- lmm(Reaction ~ 1 + (1 | Subject), data = sleepstudy)
  expect_error(suppressMessages(anova(fit0, fit, "foo")), class = "lmmr_error_argument")
  a <- suppressMessages(anova(fit0, fit, model.names = c("null", "days")))
  expect_equal(rownames(a), c("null", "days"))
})

test_that("REML fits with the same fixed effects are compared without refitting", {
  f1 <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  f0 <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  expect_no_message(a <- anova(f0, f1))
  expect_equal(a$logLik, c(as.numeric(logLik(f0)), as.numeric(logLik(f1))))
  expect_match(attr(a, "heading")[3], "REML fits compared without refitting")
})

test_that("ranova reduces (0 + f | g) with a factor f to (1 | g), as lmerTest", {
  skip_if_not_installed("lmerTest")
  d <- sleepstudy
  d$f3 <- factor(rep(c("a", "b", "c"), length.out = 180))
  fit <- suppressMessages(lmm(Reaction ~ Days + (0 + f3 | Subject), d))
  ref <- suppressMessages(lmerTest::lmer(Reaction ~ Days + (0 + f3 | Subject), d))
  own <- ranova(fit)
  theirs <- lmerTest::ranova(ref)
  expect_equal(rownames(own), rownames(theirs))
  expect_equal(own$LRT[2], theirs$LRT[2], tolerance = 1e-4)
  expect_equal(own$Df[2], theirs$Df[2])
})

test_that("anova() of non-nested fits: Chisq 0 and names from the call, as lme4", {
  set.seed(1)
  ss <- lme4::sleepstudy
  ss$z1 <- rnorm(180)
  ss$z2 <- rnorm(180)
  m1 <- lmm(Reaction ~ Days + (1 | Subject), data = ss, REML = FALSE)
  m2 <- lmm(Reaction ~ z1 + z2 + (1 | Subject), data = ss, REML = FALSE)
  a <- anova(m1, m2, lmm(Reaction ~ Days + (Days | Subject), data = ss, REML = FALSE))
  expect_equal(a$Chisq[2], 0)
  expect_equal(a[["Pr(>Chisq)"]][2], 1)
  expect_equal(rownames(a)[1:2], c("m1", "m2"))
  expect_match(rownames(a)[3], "lmm(Reaction ~ Days + (Days | Subject)", fixed = TRUE)
  expect_warning(a2 <- anova(m1, m1), class = "lmmr_warning_model_names")
  expect_equal(rownames(a2), c("MODEL1", "MODEL2"))
  skip_if_not_installed("lme4")
  l1 <- lme4::lmer(Reaction ~ Days + (1 | Subject), data = ss, REML = FALSE)
  l2 <- lme4::lmer(Reaction ~ z1 + z2 + (1 | Subject), data = ss, REML = FALSE)
  l3 <- lme4::lmer(Reaction ~ Days + (Days | Subject), data = ss, REML = FALSE)
  ref <- anova(l1, l2, l3)
  expect_equal(a$Chisq, ref$Chisq, tolerance = 1e-4)
  expect_equal(a$Df, ref$Df)
  expect_equal(a[["Pr(>Chisq)"]], ref[["Pr(>Chisq)"]], tolerance = 1e-4)
})
