# Numbers printed in vignettes/independence-to-mixed.Rmd (and data.R) for
# the prevention example, checked to the printed precision with lmmr alone.

prevention_fit <- function() {
  lmm(risk ~ 1 + (1 | community), data = prevention)
}

test_that("prevention: variance components and ICC as printed", {
  fit <- prevention_fit()
  vc <- as.data.frame(VarCorr(fit))
  expect_equal(round(vc$vcov[vc$grp == "community"], 2), 93.37)
  expect_equal(round(vc$vcov[vc$grp == "Residual"], 2), 11.33)
  expect_equal(round(icc(fit)$adjusted, 3), 0.892)
  expect_equal(round(icc_from_variances(vc$vcov[1], vc$vcov[2]), 3), 0.892)
})

test_that("prevention: intercept and its standard error as printed", {
  fit <- prevention_fit()
  expect_equal(round(unname(fixef(fit)), 1), 43.2)
  expect_equal(round(sqrt(vcov(fit)[1, 1]), 3), 4.386)
  expect_equal(round(unname(coef(summary(fit, ddf = "none"))[1, "Std. Error"]), 3),
               4.386)
})

test_that("prevention: BLUPs of communities A to E as printed", {
  fit <- prevention_fit()
  re <- ranef(fit)$community
  expect_equal(rownames(re), c("A", "B", "C", "D", "E"))
  expect_equal(round(re[, "(Intercept)"], 2),
               c(-0.19, -11.84, 12.42, -6.02, 5.63))
})

test_that("prevention: the by-hand ANOVA estimators agree with lmm()", {
  fit <- prevention_fit()
  means <- tapply(prevention$risk, prevention$community, mean)
  grand <- mean(prevention$risk)
  msb <- 4 * sum((means - grand)^2) / 4
  msw <- sum((prevention$risk - means[prevention$community])^2) / 15
  vc <- as.data.frame(VarCorr(fit))
  expect_equal(vc$vcov, c((msb - msw) / 4, msw), tolerance = 1e-6)
  expect_equal(sqrt(vcov(fit)[1, 1]), sqrt(msb / 20), tolerance = 1e-6)
})

test_that("prevention: intercept has 4 (Satterthwaite) degrees of freedom", {
  fit <- prevention_fit()
  # The df column exists only once summary() computes Satterthwaite df;
  # skip (rather than fail) while that part of lmmr is not available.
  cf <- tryCatch(coef(summary(fit, ddf = "Satterthwaite")),
                 error = function(e) NULL)
  skip_if(is.null(cf) || !("df" %in% colnames(cf)),
          "summary() does not provide Satterthwaite df yet")
  expect_equal(round(unname(cf[1, "df"]), 1), 4)
})

test_that("independence-to-mixed, GEE section: slopes and SEs as printed", {
  # Numbers printed by vignettes/independence-to-mixed.Rmd section 5.
  m_ri <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  m_rs <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  expect_equal(round(fixef(m_ri)[["Days"]], 2), 10.47)
  expect_equal(round(fixef(m_rs)[["Days"]], 2), 10.47)
  expect_equal(round(sqrt(vcov(m_ri)["Days", "Days"]), 4), 0.8042)
  expect_equal(round(sqrt(vcov(m_rs)["Days", "Days"]), 4), 1.5458)
  expect_equal(round(sqrt(vcov(m_ri, type = "CR2")["Days", "Days"]), 4), 1.5458)
  expect_equal(round(sqrt(vcov(m_rs, type = "CR2")["Days", "Days"]), 4), 1.5458)
  skip_if_not_installed("geepack")
  g <- geepack::geeglm(Reaction ~ Days, id = Subject, data = sleepstudy,
                       family = gaussian, corstr = "exchangeable")
  expect_equal(round(summary(g)$coefficients["Days", "Std.err"], 4), 1.5022)
})

test_that("independence-to-mixed, GEE section: logistic attenuation as printed", {
  skip_if_not_installed("geepack")
  set.seed(2024)
  n_cl <- 300; m <- 8
  cl <- rep(seq_len(n_cl), each = m)
  x <- rnorm(n_cl * m)
  b <- rnorm(n_cl, sd = 2)[cl]
  yb <- rbinom(n_cl * m, 1, plogis(-0.5 + 1 * x + b))
  db <- data.frame(yb, x, cl)
  c2 <- (16 * sqrt(3) / (15 * pi))^2
  expect_equal(round(1 / sqrt(1 + c2 * 4), 4), 0.6477)
  g <- geepack::geeglm(yb ~ x, id = cl, data = db, family = binomial,
                       corstr = "exchangeable")
  expect_equal(round(coef(g)[["x"]], 4), 0.6473)
})

test_that("primer: numbers as printed", {
  # vignettes/primer.Rmd
  ri <- lmm(score ~ treatment + age + (1 | group), data = primer_groups)
  expect_equal(round(unname(fixef(ri)), 4), c(24.5684, -3.2157, 0.1153))
  expect_equal(round(as.data.frame(VarCorr(ri))$vcov, 1), c(3.3, 34.9))
  cf <- coef(summary(ri))
  expect_equal(round(unname(cf["treatmenttherapy", "df"]), 2), 6.48)
  sh <- shrinkage(ri)
  vc <- as.data.frame(VarCorr(ri))
  n_j <- as.vector(table(primer_groups$group))
  lambda <- (n_j / vc$vcov[2]) / (n_j / vc$vcov[2] + 1 / vc$vcov[1])
  expect_equal(sh$reliability, lambda, tolerance = 1e-8)
  expect_equal(round(lambda[1], 4), 0.3618)
  rs <- lmm(score ~ treatment * month + (month | patient), data = primer_long)
  ri_long <- lmm(score ~ treatment * month + (1 | patient), data = primer_long)
  lr <- 2 * (as.numeric(logLik(rs)) - as.numeric(logLik(ri_long)))
  expect_equal(round(lr, 4), 7.8333)
  cat_t <- lmm(score ~ treatment * time + (1 | patient), data = primer_long, REML = FALSE)
  lin_t <- lmm(score ~ treatment * month + (1 | patient), data = primer_long, REML = FALSE)
  a <- anova(lin_t, cat_t)
  expect_equal(round(a$Chisq[2], 2), 4.78)
  rs_main <- lmm(score ~ treatment + month + (month | patient), data = primer_long)
  f2 <- cohens_f2(rs, rs_main)
  expect_equal(round(f2[["f2"]], 5), 0.05846)
  skip_if_not_installed("emmeans")
  em <- emmeans::emmeans(update(cat_t, REML = TRUE), ~ time)
  s <- summary(emmeans::contrast(em, list(c(0, -0.5, -0.5, 1))))
  expect_equal(round(s$estimate, 2), -2.28)
  expect_equal(round(s$df), 178)
})

test_that("primer: covariance structures by AIC/BIC as printed", {
  ar1_fit <- lmm(score ~ treatment * time + ar1(time | patient),
                 data = primer_long, REML = FALSE)
  tab <- compare_cov_structures(ar1_fit, c("cs", "csh", "ar1", "ar1h", "toep", "us"))
  expect_equal(tab$structure[1], "toep")
  expect_equal(round(tab$logLik[tab$structure == "toep"], 1), -683.2)
  expect_equal(round(tab$logLik[tab$structure == "ar1"], 1), -696.7)
  expect_equal(round(tab$AIC[tab$structure == "us"]), 1392)
})
