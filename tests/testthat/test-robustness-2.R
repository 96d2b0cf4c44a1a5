# Second adversarial round: reference comparisons with lmerTest 3.1-3 /
# pbkrtest 0.5.2 (computed live) for the cases where the multi-df
# Satterthwaite DenDF depends on the basis of the hypothesis matrix, the
# Kenward-Roger Mean Sq, and weighted Kenward-Roger.

rob2_data <- function() {
  ss <- lme4::sleepstudy
  set.seed(1)
  ss$w <- runif(180, .5, 2)
  ss$f3 <- factor(sample(c("a", "b", "c"), 180, TRUE))
  ss$ord <- factor(sample(1:4, 180, TRUE), ordered = TRUE)
  ss
}

rob2_compare_anova <- function(formula, data, types = 1:3, ddf = "Satterthwaite") {
  fit <- suppressMessages(do.call(lmm, list(formula, data = data)))
  ref <- suppressMessages(do.call(lmerTest::lmer, list(formula, data = data)))
  for (ty in types) {
    a <- suppressMessages(anova(fit, type = ty, ddf = ddf))
    b <- anova(ref, type = ty, ddf = ddf)
    expect_equal(rownames(a), rownames(b))
    expect_equal(a$NumDF, b$NumDF, tolerance = 1e-8)
    expect_equal(a[["F value"]], b[["F value"]], tolerance = 1e-3)
    expect_equal(a$DenDF, b$DenDF, tolerance = 1e-3)
    expect_equal(a[["Mean Sq"]], b[["Mean Sq"]], tolerance = 1e-3)
  }
}

test_that("multi-df Satterthwaite DenDF uses lmerTest's hypothesis bases (types 1-3)", {
  skip_if_not_installed("lmerTest")
  ss <- rob2_data()
  # no intercept: type II DenDF for f3 was 72.2 instead of 40.1
  rob2_compare_anova(Reaction ~ 0 + Days + f3 + (Days | Subject), ss)
  rob2_compare_anova(Reaction ~ f3 * ord + (1 | Subject), ss)
  rob2_compare_anova(Reaction ~ splines::ns(Days, 3) + f3 + (1 | Subject), ss)
  rob2_compare_anova(Reaction ~ f3 * Days + (Days | Subject), ss)
  rob2_compare_anova(Reaction ~ ord * Days + (1 | Subject), ss)
  rob2_compare_anova(Reaction ~ f3 + (1 | Subject), ss)
})

test_that("the type III basis change does not change the hypotheses", {
  ss <- rob2_data()
  fit <- lmm(Reaction ~ f3 * Days + (Days | Subject), data = ss)
  st <- lmmr:::h_fixed_structure(fit)
  L <- lmmr:::h_contrasts_type3(fit, st)
  for (lab in names(L)) {
    expect_equal(qr(rbind(L[[lab]], L[[lab]]))$rank, nrow(L[[lab]]))
  }
  # sum-to-zero coding gives the same table
  fit2 <- lmm(Reaction ~ f3 * Days + (Days | Subject), data = ss,
              contrasts = list(f3 = "contr.sum"))
  a1 <- anova(fit)
  a2 <- anova(fit2)
  expect_equal(a1[["F value"]], a2[["F value"]], tolerance = 1e-6)
  expect_equal(a1$DenDF, a2$DenDF, tolerance = 1e-6)
})

test_that("Kenward-Roger anova: Mean Sq from the unscaled Wald statistic, as lmerTest", {
  skip_if_not_installed("lmerTest")
  skip_if_not_installed("pbkrtest")
  ss <- rob2_data()
  rob2_compare_anova(Reaction ~ 0 + Days + f3 + (Days | Subject), ss, types = 2:3,
                     ddf = "Kenward-Roger")
  rob2_compare_anova(Reaction ~ f3 * Days + (Days | Subject), ss, ddf = "Kenward-Roger")
  fit <- lmm(Reaction ~ f3 * Days + (Days | Subject), data = ss)
  L <- rbind(c(0, 1, 0, 0, 0, 0), c(0, 0, 1, 0, 0, 0))
  ct <- contest(fit, L, ddf = "Kenward-Roger")
  ref <- lmerTest::contest(lmerTest::lmer(Reaction ~ f3 * Days + (Days | Subject), ss),
                           L, ddf = "Kenward-Roger")
  expect_equal(ct[["Mean Sq"]], ref[["Mean Sq"]], tolerance = 1e-3)
  expect_equal(ct[["F value"]], ref[["F value"]], tolerance = 1e-3)
})

test_that("weighted Kenward-Roger equals KR of the equivalent unweighted model", {
  # pbkrtest ignores prior weights (its SE/df differ by ~1%/15% here); the
  # reference is the same model written with sqrt(w)-scaled response,
  # fixed and random-effect columns and no weights.
  skip_if_not_installed("lmerTest")
  ss <- rob2_data()
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = ss, weights = w)
  ss$sw <- sqrt(ss$w)
  ss$yw <- ss$Reaction * ss$sw
  ss$swD <- ss$sw * ss$Days
  ref <- lmerTest::lmer(yw ~ 0 + sw + swD + (0 + sw + swD | Subject), data = ss)
  a <- coef(summary(fit, ddf = "Kenward-Roger"))
  b <- coef(summary(ref, ddf = "Kenward-Roger"))
  expect_equal(unname(a[, "df"]), unname(b[, "df"]), tolerance = 1e-3)
  expect_equal(unname(a[, "Std. Error"]), unname(b[, "Std. Error"]), tolerance = 1e-3)
  a <- coef(summary(fit))
  b <- coef(summary(ref))
  expect_equal(unname(a[, "df"]), unname(b[, "df"]), tolerance = 1e-3)
})
