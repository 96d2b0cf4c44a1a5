# car 3.1-1 and multcomp 1.4 on lmm fits against the same calls on the
# lmerTest::lmer() fit (car's F tests use pbkrtest 0.5.2's KRmodcomp).

skip_if_not_installed("car")
skip_if_not_installed("lmerTest")
skip_if_not_installed("pbkrtest")

test_that("car::Anova() matches for types II/III, chi-square and F", {
  for (name in c("clinics", "visits")) {
    m <- interop_fits(name)
    for (type in c("II", "III")) {
      for (test in c("Chisq", "F")) {
        a <- car::Anova(m$fit, type = type, test.statistic = test)
        b <- car::Anova(m$ref, type = type, test.statistic = test)
        expect_same_table(a, b)
        expect_identical(attr(a, "heading"), attr(b, "heading"))
      }
    }
  }
  m <- interop_fits("clinics")
  s <- car::Anova(m$fit, test.statistic = "F", ddf = "Satterthwaite")
  ref <- lmerTest:::anova.lmerModLmerTest(m$ref, type = 2)
  expect_equal(s$Df.res, ref$DenDF, tolerance = 1e-6)
  expect_error(car::Anova(m$fit, type = "IV"), class = "lmmr_error_argument")
})

test_that("car::linearHypothesis() and car::vif() match", {
  m <- interop_fits("clinics")
  expect_same_table(car::linearHypothesis(m$fit, "age = 0.5"),
                    car::linearHypothesis(m$ref, "age = 0.5"))
  hyp <- c("age = 0", "smokerYes = 0")
  a <- car::linearHypothesis(m$fit, hyp, test = "F")
  expect_same_table(a, car::linearHypothesis(m$ref, hyp, test = "F"))
  expect_output(print(a), "smokerYes = 0")
  L <- rbind(c(0, 1, 0, 0, 0), c(0, 0, 1, 0, 0))
  expect_same_table(car::linearHypothesis(m$fit, L), car::linearHypothesis(m$ref, L))
  f <- sbp ~ clinic_urban + smoker + age + bmi + (1 | clinic_id)
  expect_equal(car::vif(lmm(f, data = phaa_clinics)),
               car::vif(lmerTest::lmer(f, data = phaa_clinics)), tolerance = 1e-6)
  expect_equal(car::vif(m$fit), car::vif(m$ref), tolerance = 1e-6)
})

test_that("multcomp::glht() with mcp() matches", {
  skip_if_not_installed("multcomp")
  m <- interop_fits("visits")
  g1 <- multcomp::glht(m$fit, linfct = multcomp::mcp(time = "Tukey"))
  g2 <- multcomp::glht(m$ref, linfct = multcomp::mcp(time = "Tukey"))
  expect_equal(g1$linfct, g2$linfct)
  set.seed(1)
  s1 <- summary(g1)
  set.seed(1)
  s2 <- summary(g2)
  expect_equal(s1$test$coefficients, s2$test$coefficients, tolerance = 1e-6)
  expect_equal(s1$test$sigma, s2$test$sigma, tolerance = 1e-6)
  expect_equal(s1$test$tstat, s2$test$tstat, tolerance = 1e-6)
  # single-step p-values come from numerical integration (mvtnorm)
  expect_equal(s1$test$pvalues, s2$test$pvalues, tolerance = 1e-3, ignore_attr = TRUE)
  u1 <- summary(g1, test = multcomp::adjusted("bonferroni"))
  u2 <- summary(g2, test = multcomp::adjusted("bonferroni"))
  expect_equal(u1$test$pvalues, u2$test$pvalues, tolerance = 1e-6, ignore_attr = TRUE)
  d <- interop_fits("clinics")
  K <- rbind(age10 = c(0, 0, 0, 10, 0))
  expect_equal(summary(multcomp::glht(d$fit, linfct = K))$test$tstat,
               summary(multcomp::glht(d$ref, linfct = K))$test$tstat, tolerance = 1e-6)
})
