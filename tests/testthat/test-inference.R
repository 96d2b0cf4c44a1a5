# Small-sample inference: Satterthwaite and Kenward-Roger df, contest(),
# anova types I/II/III. References are computed live with lmerTest 3.1-3 /
# pbkrtest 0.5.2 (Debian) or cited from their test suites / SAS PROC MIXED.

# Put lme4's estimates into an lmm fit, so that the inference computations
# are compared at identical parameter values (isolates them from the
# optimiser's last digits).
plug_lme4 <- function(fit, ref) {
  th <- lme4::getME(ref, "theta")
  m <- match(names(fit$theta), names(th))
  if (anyNA(m)) {
    # lme4 names nested terms cask:batch where lmm says batch:cask
    alt <- vapply(strsplit(names(th), ".", fixed = TRUE), function(s) {
      g <- paste(rev(strsplit(s[1], ":", fixed = TRUE)[[1]]), collapse = ":")
      paste(c(g, s[-1]), collapse = ".")
    }, character(1))
    m[is.na(m)] <- match(names(fit$theta)[is.na(m)], alt)
  }
  stopifnot(!anyNA(m))
  fit$theta[] <- th[m]
  fit$sigma <- stats::sigma(ref)
  nm <- names(fit$beta)
  fit$beta[] <- lme4::fixef(ref)[nm]
  fit$vcov[] <- as.matrix(stats::vcov(ref))[nm, nm]
  fit
}

fit_both <- function(formula, data, ...) {
  # do.call() so that weights reach both fitters as values
  fit <- suppressMessages(do.call(lmm, list(formula, data = data, ...)))
  ref <- suppressMessages(do.call(lmerTest::lmer, list(formula, data = data, ...)))
  list(fit = fit, ref = ref, plugged = plug_lme4(fit, ref))
}

cases <- function() {
  list(
    sleep = list(Reaction ~ Days + (Days | Subject), lme4::sleepstudy),
    sleep_diag = list(Reaction ~ Days + (Days || Subject), lme4::sleepstudy),
    dyestuff = list(Yield ~ 1 + (1 | Batch), lme4::Dyestuff),
    penicillin = list(diameter ~ 1 + (1 | plate) + (1 | sample), lme4::Penicillin),
    pastes = list(strength ~ 1 + (1 | batch / cask), lme4::Pastes),
    cake = list(angle ~ recipe * temperature + (1 | recipe:replicate), lme4::cake),
    ham = list(Informed.liking ~ Product * Information * Gender +
                 (1 | Product:Consumer) + (1 | Consumer), lmerTest::ham)
  )
}

rel_err <- function(a, b) max(abs(a / b - 1))

test_that("Satterthwaite and Kenward-Roger coefficient tests match lmerTest/pbkrtest", {
  skip_if_not_installed("lmerTest")
  skip_if_not_installed("pbkrtest")
  for (nm in names(cases())) {
    cs <- cases()[[nm]]
    b <- fit_both(cs[[1]], cs[[2]])
    # lmerTest 3.1-3: coef(summary(lmer(...), ddf = ...))
    ref_s <- coef(summary(b$ref, ddf = "Satterthwaite"))
    ref_k <- coef(summary(b$ref, ddf = "Kenward-Roger"))
    own_s <- coef(summary(b$fit, ddf = "Satterthwaite"))
    own_k <- coef(summary(b$fit, ddf = "Kenward-Roger"))
    # own fit: df within 1e-3, KR standard errors within 1e-4 (relative)
    expect_lt(rel_err(own_s[, "df"], ref_s[, "df"]), 1e-3, label = nm)
    expect_lt(rel_err(own_k[, "df"], ref_k[, "df"]), 1e-3, label = nm)
    expect_lt(rel_err(own_k[, "Std. Error"], ref_k[, "Std. Error"]), 1e-4, label = nm)
    # at lme4's estimates the analytic derivatives reproduce lmerTest's
    # numerical ones and pbkrtest's KR exactly (up to numDeriv's accuracy)
    pl_s <- coef(summary(b$plugged, ddf = "Satterthwaite"))
    pl_k <- coef(summary(b$plugged, ddf = "Kenward-Roger"))
    expect_lt(rel_err(pl_s[, "df"], ref_s[, "df"]), 1e-6, label = nm)
    expect_lt(rel_err(pl_k[, "df"], ref_k[, "df"]), 1e-8, label = nm)
    expect_lt(rel_err(pl_k[, "Std. Error"], ref_k[, "Std. Error"]), 1e-8, label = nm)
  }
})

test_that("the adjusted covariance equals pbkrtest::vcovAdj()", {
  skip_if_not_installed("pbkrtest")
  for (nm in c("sleep", "penicillin", "ham")) {
    cs <- cases()[[nm]]
    b <- fit_both(cs[[1]], cs[[2]])
    kr <- lmmr:::h_inference_parts(b$plugged, "kenward-roger")$kenward_roger
    # pbkrtest 0.5.2: vcovAdj(lmer fit)
    ref <- as.matrix(pbkrtest::vcovAdj(b$ref))
    expect_equal(kr$phi_adj, ref, tolerance = 1e-8, ignore_attr = TRUE, label = nm)
  }
})

test_that("hard-coded lmerTest references (legacy fits, Penicillin)", {
  # lmerTestR@35dc588 tests/test_legacy.R (saved legacy_fits.RData), case E01
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  cf <- coef(summary(fit))
  expect_equal(unname(cf[, "df"]), c(17.00001574, 17.00000100), tolerance = 1e-4)
  expect_equal(unname(cf[, "Std. Error"]), c(6.824555788, 1.545788933), tolerance = 1e-4)
  a <- anova(fit)
  expect_equal(a[["F value"]], 45.853004, tolerance = 1e-4)
  expect_equal(a$DenDF, 17.000001, tolerance = 1e-4)
  expect_equal(a[["Sum Sq"]], 30031.014, tolerance = 1e-4)
  # pbkrtest@bb7c4f9 man/get_ddf_Lb.Rd: KR ddf = 17 for the slope
  expect_equal(contest(fit, c(0, 1), ddf = "Kenward-Roger")$df, 17, tolerance = 1e-4)
  skip_if_not_installed("lme4")
  # local lmerTest 3.1-3 / pbkrtest 0.5.2 (cases.csv K05): Sat df
  # 5.486592362, KR df 5.48706186
  pen <- lmm(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  expect_equal(unname(coef(summary(pen))[, "df"]), 5.486592362, tolerance = 1e-3)
  expect_equal(unname(coef(summary(pen, ddf = "Kenward-Roger"))[, "df"]), 5.48706186,
               tolerance = 1e-3)
})

test_that("ham (Product + Information + Gender) matches lmerTest's legacy values", {
  skip_if_not_installed("lmerTest")
  # lmerTestR@35dc588 tests/test_legacy.R, case E02
  fit <- lmm(Informed.liking ~ Product + Information + Gender + (1 | Product:Consumer),
             data = lmerTest::ham)
  a <- anova(fit)
  expect_equal(a[["F value"]], c(3.5029472, 3.8714295, 1.1064092), tolerance = 1e-4)
  expect_equal(a$DenDF, c(318.99968, 322.99964, 318.99968), tolerance = 1e-4)
  expect_equal(a$NumDF, c(3, 1, 1))
  cf <- coef(summary(fit))
  expect_equal(unname(cf[, "df"]),
               c(343.6883234, rep(318.9998587, 3), 322.9998777, 318.9998587),
               tolerance = 1e-4)
})

test_that("anova types I/II/III match lmerTest (Satterthwaite and KR)", {
  skip_if_not_installed("lmerTest")
  cake <- lme4::cake
  models <- list(
    cases()$cake, cases()$ham, cases()$sleep,
    list(angle ~ recipe * temp + (1 | recipe:replicate), cake),
    list(Informed.liking ~ Product * Age + (1 | Consumer), lmerTest::ham)
  )
  for (m in models) {
    b <- fit_both(m[[1]], m[[2]])
    for (type in 1:3) {
      for (ddf in c("Satterthwaite", "Kenward-Roger")) {
        own <- anova(b$plugged, type = type, ddf = ddf)
        ref <- suppressMessages(anova(b$ref, type = type, ddf = ddf))[rownames(own), ]
        lab <- paste(deparse(m[[1]]), type, ddf)
        expect_equal(own$NumDF, ref$NumDF, label = lab)
        expect_lt(rel_err(own[["F value"]], ref[["F value"]]), 1e-6, label = lab)
        expect_lt(rel_err(own$DenDF, ref$DenDF), 1e-6, label = lab)
        expect_lt(rel_err(own[["Sum Sq"]], ref[["Sum Sq"]]), 1e-6, label = lab)
        # and with lmm's own estimates, within the issue's 1e-3
        own2 <- anova(b$fit, type = type, ddf = ddf)
        expect_lt(rel_err(own2[["F value"]], ref[["F value"]]), 1e-3, label = lab)
        expect_lt(rel_err(own2$DenDF, ref$DenDF), 1e-3, label = lab)
      }
    }
  }
})

test_that("anova table structure and heading", {
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  a <- anova(fit)
  expect_s3_class(a, c("anova", "data.frame"))
  expect_named(a, c("Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"))
  expect_match(attr(a, "heading"), "Type III Analysis of Variance Table with Satterthwaite's method")
  expect_match(attr(anova(fit, type = "I", ddf = "Kenward-Roger"), "heading"),
               "Type I .*Kenward-Roger")
  expect_identical(anova(fit, type = "II"), anova(fit, type = 2))
  expect_named(anova(fit, ddf = "none"), c("Sum Sq", "Mean Sq", "NumDF", "F value"))
})

test_that("SAS PROC MIXED type II F values (lmerTest's test_compare_sas.R)", {
  skip_if_not_installed("lmerTest")
  # lmerTestR@35dc588 tests/test_compare_sas.R, case E13 (SAS 'GLM 101' toy)
  d <- data.frame(a = factor(c(1, 1, 1, 2, 2, 2, 2, 2, 1, 2)),
                  b = factor(c(1, 1, 2, 1, 2, 2, 2, 2, 2, 1)),
                  f = factor(c(1, 2, 1, 2, 1, 2, 1, 2, 1, 2)),
                  y = c(12, 14, 11, 20, 17, 23, 35, 46, 15, 16))
  m1 <- suppressMessages(lmm(y ~ a * b + (1 | f), data = d))
  m2 <- suppressMessages(lmm(y ~ b * a + (1 | f), data = d))
  a1 <- anova(m1, type = 2)
  expect_equal(a1[["F value"]], c(3.90131, 1.32753, 0.99565), tolerance = 1e-5)
  a2 <- anova(m2, type = 2)
  expect_equal(a2[["F value"]][c(2, 1, 3)], a1[["F value"]], tolerance = 1e-8)
  # lmerTestR@35dc588 tests/test_compare_sas.R, case G02
  g <- lmm(Informed.liking ~ Product * Age + (1 | Consumer), data = lmerTest::ham)
  expect_equal(anova(g, type = 2)[["F value"]], c(2.48135, .005387, 1.48451),
               tolerance = 1e-4)
})

test_that("type III is invariant to the contrast coding; missing cells give a message", {
  skip_if_not_installed("lme4")
  # lmerTestR@35dc588 tests/test_anova.R, case D09 (cake4)
  cake4 <- lme4::cake
  cake4$temperature <- factor(cake4$temperature, ordered = FALSE)
  cake4 <- droplevels(subset(cake4, temperature %in% levels(cake4$temperature)[1:3]))
  cake4 <- droplevels(subset(cake4, !((recipe == "A" & temperature == "175") |
                                        (recipe == "B" & temperature == "185") |
                                        (recipe == "C" & temperature == "195"))))
  f <- angle ~ recipe * temperature + (1 | recipe:replicate)
  fits <- suppressMessages(list(
    lmm(f, data = cake4),
    lmm(f, data = cake4, contrasts = list(recipe = "contr.sum", temperature = "contr.SAS")),
    lmm(f, data = cake4, contrasts = list(recipe = "contr.helmert", temperature = "contr.poly"))
  ))
  expect_message(a1 <- anova(fits[[1]]), "Missing cells for: recipe:temperature")
  expect_message(anova(fits[[1]]), "Interpret type III hypotheses with care.")
  for (f2 in fits[-1]) {
    a2 <- suppressMessages(anova(f2))
    expect_equal(a2[["F value"]], a1[["F value"]], tolerance = 1e-4)
    expect_equal(a2$DenDF, a1$DenDF, tolerance = 1e-4)
  }
  skip_if_not_installed("lmerTest")
  ref <- suppressMessages(anova(lmerTest::lmer(f, data = cake4)))
  expect_equal(a1[["F value"]], ref[["F value"]], tolerance = 1e-4)
  expect_equal(a1$DenDF, ref$DenDF, tolerance = 1e-4)
})

test_that("ham three-way model: type III with both methods", {
  skip_if_not_installed("lmerTest")
  b <- fit_both(cases()$ham[[1]], cases()$ham[[2]])
  own <- anova(b$fit, ddf = "Kenward-Roger")
  ref <- anova(b$ref, ddf = "Kenward-Roger")
  expect_equal(own[["F value"]], ref[["F value"]], tolerance = 1e-3)
  expect_equal(own$DenDF, ref$DenDF, tolerance = 1e-3)
  # cases.csv E04 notes 309.5 df for the LS-means; the Product main effect
  # is tested on the Product:Consumer stratum (237 df in both methods)
  expect_equal(own["Product", "DenDF"], 237, tolerance = 1e-3)
})

test_that("contest(): t tests, F tests, rhs, consistency with anova", {
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  t1 <- contest(fit, c(0, 1))
  expect_named(t1, c("Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"))
  cf <- coef(summary(fit))
  expect_equal(t1$Estimate, cf["Days", "Estimate"])
  expect_equal(t1$df, cf["Days", "df"])
  expect_equal(t1[["t value"]], cf["Days", "t value"])
  # t^2 = F, also with a right-hand side (lmerTest test_contestMD.R, E14)
  f1 <- contest(fit, matrix(c(0, 1), 1), rhs = 10)
  t2 <- contest(fit, c(0, 1), rhs = 10)
  expect_equal(f1[["F value"]], t2[["t value"]]^2, tolerance = 1e-8)
  expect_equal(f1$DenDF, t2$df, tolerance = 1e-8)
  # F test of a term equals the anova row
  expect_equal(contest(fit, matrix(c(0, 1), 1))[["F value"]], anova(fit)[["F value"]])
  # joint = FALSE: one t test per row
  tt <- contest(fit, diag(2), joint = FALSE)
  expect_equal(nrow(tt), 2)
  expect_equal(tt$df, unname(cf[, "df"]))
  kr <- contest(fit, diag(2), ddf = "Kenward-Roger")
  expect_equal(kr$NumDF, 2)
  expect_true(is.finite(kr$DenDF))
  skip_if_not_installed("lmerTest")
  ref <- lmerTest::lmer(Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy)
  fp <- plug_lme4(fit, ref)
  L <- rbind(c(1, 0), c(1, 5))
  for (ddf in c("Satterthwaite", "Kenward-Roger")) {
    own <- contest(fp, L, ddf = ddf)
    lt <- lmerTest::contest(ref, L, ddf = ddf)
    expect_equal(own[["F value"]], lt[["F value"]], tolerance = 1e-6)
    expect_equal(own$DenDF, lt$DenDF, tolerance = 1e-6)
  }
})

test_that("multi-df Satterthwaite denominator (Fai-Cornelius rule, mmrm tests E15)", {
  fd <- lmmr:::h_fstat_ddf
  nu <- c(3, 5, 10)
  E <- sum(nu / (nu - 2))
  expect_equal(fd(nu), 2 * E / (E - 3))
  expect_equal(fd(22), 22)
  expect_equal(fd(c(10 + 1e-10, 10 + 2e-10, 10 + 3e-10)), 10 + 2e-10)
  expect_equal(fd(c(1.9, 5, 10, 15)), 2)
  expect_equal(fd(c(2, 5, 10, 15)), 2)
  expect_false(fd(c(2.1, 5, 10, 15)) == 2)
})

test_that("bad input gives classed conditions", {
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  # lmerTestR@35dc588 tests/test_anova.R, test_summary.R (L25-L30)
  expect_error(anova(fit, ddf = "KR"), class = "lmmr_error_ddf")
  expect_error(summary(fit, ddf = "KR"), class = "lmmr_error_ddf")
  expect_error(contest(fit, c(0, 1), ddf = "sat"), class = "lmmr_error_ddf")
  expect_error(anova(fit, type = 0), class = "lmmr_error_argument")
  expect_error(anova(fit, type = "i"), class = "lmmr_error_argument")
  expect_error(contest(fit, c(1, 0, 1)), class = "lmmr_error_contrast")
  expect_error(contest(fit, 1), class = "lmmr_error_contrast")
  expect_error(contest(fit, matrix(1, 2, 3)), class = "lmmr_error_contrast")
  expect_error(contest(fit, list(c(0, 1))), class = "lmmr_error_contrast")
  expect_error(contest(fit, c(0, 1), rhs = c(1, 2)), class = "lmmr_error_contrast")
  L <- rbind(c(0, 1), c(0, 2), c(1, 0))
  expect_warning(res <- contest(fit, L), class = "lmmr_warning_contrast")
  expect_equal(res$NumDF, 2)
  expect_warning(contest(fit, L, ddf = "Kenward-Roger"), class = "lmmr_warning_contrast")
  ml <- update(fit, REML = FALSE)
  expect_error(summary(ml, ddf = "Kenward-Roger"), class = "lmmr_error_reml_required")
  expect_error(anova(ml, ddf = "Kenward-Roger"), class = "lmmr_error_reml_required")
  expect_error(contest(ml, c(0, 1), ddf = "Kenward-Roger"), class = "lmmr_error_reml_required")
  # Satterthwaite on an ML fit works (as lmerTest)
  expect_true(all(is.finite(coef(summary(ml))[, "df"])))
})

test_that("Satterthwaite on ML fits matches lmerTest", {
  skip_if_not_installed("lmerTest")
  b <- fit_both(Reaction ~ Days + (Days | Subject), lme4::sleepstudy, REML = FALSE)
  own <- coef(summary(b$plugged))[, "df"]
  ref <- coef(summary(b$ref))[, "df"]
  expect_lt(rel_err(own, ref), 1e-6)
})

test_that("models without fixed effects or with only an intercept", {
  fit0 <- lmm(Reaction ~ 1 + (Days | Subject), data = sleepstudy)
  expect_equal(nrow(anova(fit0)), 0)
  expect_equal(nrow(coef(summary(fit0, ddf = "Kenward-Roger"))), 1)
  # lmerTestR@35dc588 tests/test_contestMD.R / test_contest1D.R (E14, F07):
  # zero-row contrasts and models without fixed effects give 0-row tables
  expect_equal(nrow(contest(fit0, matrix(numeric(0), 0, 1))), 0)
  fit_none <- lmm(Reaction ~ -1 + (Days | Subject), data = sleepstudy)
  expect_equal(nrow(contest(fit_none, numeric(0))), 0)
  expect_equal(nrow(coef(summary(fit_none, ddf = "Kenward-Roger"))), 0)
  # no-intercept model (F07): NumDF 1, DenDF 17 with both methods
  fit_ni <- lmm(Reaction ~ Days - 1 + (Days | Subject), data = sleepstudy)
  for (ddf in c("Satterthwaite", "Kenward-Roger")) {
    a <- anova(fit_ni, ddf = ddf)
    expect_equal(a$NumDF, 1)
    expect_equal(a$DenDF, 17, tolerance = 1e-4)
  }
})

test_that("hard-coded cake degrees of freedom (lmerTest test_anova.R)", {
  skip_if_not_installed("lme4")
  # lmerTestR@35dc588 tests/test_anova.R, case E07: NumDF c(2, 1, 2),
  # DenDF c(254.0157612, 222, 222)
  a <- anova(lmm(angle ~ recipe * temp + (1 | recipe:replicate), data = lme4::cake))
  expect_equal(a$NumDF, c(2, 1, 2))
  expect_equal(a$DenDF, c(254.0157612, 222, 222), tolerance = 1e-4)
  # case E08: ordered temperature, type I NumDF c(2, 5, 10), DenDF c(42, 210, 210),
  # and type I = II = III in this balanced design
  fit <- lmm(angle ~ recipe * temperature + (1 | recipe:replicate), data = lme4::cake)
  a1 <- anova(fit, type = 1)
  expect_equal(a1$NumDF, c(2, 5, 10))
  expect_equal(a1$DenDF, c(42, 210, 210), tolerance = 1e-4)
  expect_equal(anova(fit, type = 2)[["F value"]], a1[["F value"]], tolerance = 1e-8)
  expect_equal(anova(fit, type = 3)[["F value"]], a1[["F value"]], tolerance = 1e-8)
})

test_that("prior weights: Satterthwaite matches lmerTest, KR is invariant to rescaling", {
  skip_if_not_installed("lmerTest")
  d <- lme4::sleepstudy
  d$w <- rep(c(0.5, 1, 2), length.out = nrow(d))
  b <- fit_both(Reaction ~ Days + (Days | Subject), d, weights = d$w)
  expect_lt(rel_err(coef(summary(b$plugged))[, "df"], coef(summary(b$ref))[, "df"]), 1e-6)
  # pbkrtest 0.5.2 builds Sigma with an identity residual covariance even for
  # weighted fits, so KR is not compared with it; instead: constant weights c
  # with sigma * sqrt(c) and theta / sqrt(c) describe the same marginal model
  # as the unweighted fit, so KR must give the same df and SEs.
  f1 <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  f2 <- f1
  f2$weights[] <- 4
  f2$has_weights <- TRUE
  f2$sigma <- 2 * f1$sigma
  f2$theta <- f1$theta / 2
  # edited by hand: drop the kept model so that it is rebuilt from the
  # edited plain data (the weights), as after readRDS()
  f2$engine <- NULL
  k1 <- coef(summary(f1, ddf = "Kenward-Roger"))
  k2 <- coef(summary(f2, ddf = "Kenward-Roger"))
  expect_equal(k2[, "df"], k1[, "df"], tolerance = 1e-8)
  expect_equal(k2[, "Std. Error"], k1[, "Std. Error"], tolerance = 1e-8)
  s2 <- coef(summary(f2))
  expect_equal(s2[, "df"], coef(summary(f1))[, "df"], tolerance = 1e-8)
})

test_that("singular fits (variance estimated as zero) match lmerTest/pbkrtest", {
  skip_if_not_installed("lmerTest")
  # Dyestuff2: theta = 0 (cases.csv A04); lmerTest 3.1-3 gives df 29
  # (Satterthwaite) and 5 (Kenward-Roger)
  b <- fit_both(Yield ~ 1 + (1 | Batch), lme4::Dyestuff2)
  expect_equal(unname(coef(summary(b$fit))[, "df"]), 29, tolerance = 1e-4)
  expect_equal(unname(coef(summary(b$fit, ddf = "Kenward-Roger"))[, "df"]), 5, tolerance = 1e-4)
  expect_equal(coef(summary(b$fit, ddf = "Kenward-Roger"))[, "Std. Error"],
               coef(summary(b$ref, ddf = "Kenward-Roger"))[, "Std. Error"], tolerance = 1e-4)
})

test_that("KR and Satterthwaite are fast for many clusters", {
  skip_on_cran()
  set.seed(1)
  g <- 1000
  n <- 50000
  d <- data.frame(id = factor(rep(seq_len(g), length.out = n)), x = runif(n))
  d$y <- d$x + rnorm(g)[d$id] * 0.5 + rnorm(n)
  fit <- lmm(y ~ x + (1 | id), data = d)
  tm <- system.time(cf <- coef(summary(fit, ddf = "Kenward-Roger")))
  expect_lt(tm[["elapsed"]], 5)
  expect_true(all(is.finite(cf[, "df"])))
})

test_that("anova() with aliased (dropped) columns matches lmerTest, all types", {
  skip_if_not_installed("lmerTest")
  set.seed(1)
  d <- data.frame(y = rnorm(60), x = rnorm(60), g = factor(rep(1:10, each = 6)),
                  h = factor(rep(1:3, 20)))
  set.seed(5)
  d$y <- d$y + rnorm(10)[d$g] + 0.5 * d$x
  d$h2 <- d$h
  levels(d$h2) <- c("a", "b", "b")
  d$x2 <- 2 * d$x
  forms <- list(y ~ h + h2 + x + (1 | g), y ~ x + x2 + (1 | g),
                y ~ h2 + h + x + (1 | g), y ~ h * x + h2 + (1 | g))
  for (f in forms) {
    own <- suppressMessages(lmm(f, data = d))
    expect_true(length(own$dropped) > 0)
    ref <- suppressMessages(lmerTest::lmer(f, data = d))
    for (type in 1:3) for (ddf in c("Satterthwaite", "Kenward-Roger")) {
      a <- anova(own, type = type, ddf = ddf)
      b <- anova(ref, type = type, ddf = ddf)
      tested <- rownames(b)[!is.na(b$NumDF)]
      expect_setequal(rownames(a)[a$NumDF > 0], tested)
      expect_equal(a[tested, "NumDF"], b[tested, "NumDF"])
      expect_equal(a[tested, "F value"], b[tested, "F value"], tolerance = 1e-5)
      expect_equal(a[tested, "DenDF"], b[tested, "DenDF"], tolerance = 1e-4)
    }
  }
  # the brief's numbers: h has 2 df, F = 0.2032; x alongside x2 = 2x: F = 11.761
  a <- anova(suppressMessages(lmm(y ~ h + h2 + x + (1 | g), data = d)))
  expect_equal(a["h", "NumDF"], 2)
  expect_equal(a["h", "F value"], 0.2032093, tolerance = 1e-5)
  expect_equal(a["h2", "NumDF"], 0)
  a <- anova(suppressMessages(lmm(y ~ x + x2 + (1 | g), data = d)))
  expect_equal(a["x", "F value"], 11.76134, tolerance = 1e-5)
  # other contrast codings give the same tests
  ct <- list(h = "contr.sum", h2 = "contr.helmert")
  for (f in forms[c(1, 3, 4)]) {
    own <- suppressMessages(lmm(f, data = d, contrasts = ct))
    ref <- suppressMessages(lmerTest::lmer(f, data = d, contrasts = ct))
    for (type in 1:3) {
      a <- anova(own, type = type)
      b <- anova(ref, type = type)
      tested <- rownames(b)[!is.na(b$NumDF)]
      expect_equal(a[tested, "F value"], b[tested, "F value"], tolerance = 1e-5)
      expect_equal(a[tested, "DenDF"], b[tested, "DenDF"], tolerance = 1e-4)
    }
  }
})

test_that("contest(): all-zero contrasts are a classed error, not NaN", {
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  expect_error(contest(fit, c(0, 0)), "all zeros", class = "lmmr_error_contrast")
  expect_error(contest(fit, matrix(0, 2, 2)), class = "lmmr_error_contrast")
  expect_error(contest(fit, rbind(c(0, 0), c(0, 1)), joint = FALSE),
               class = "lmmr_error_contrast")
  # a zero row in a joint test is only a rank deficiency
  expect_warning(r <- contest(fit, rbind(c(0, 0), c(0, 1))), class = "lmmr_warning_contrast")
  expect_equal(r[["F value"]], contest(fit, c(0, 1))[["t value"]]^2, tolerance = 1e-8)
  f4 <- lmm(Reaction ~ Days + I(Days^2) + I(Days^3) + (1 | Subject), data = sleepstudy)
  expect_error(contest(f4, c(0, 0, 0, 0)), class = "lmmr_error_contrast")
})

test_that("inference uses the fit's kept model: after readRDS() and after a refit sharing it", {
  skip_if_not_installed("lme4")
  # crossed: (1 | plate) + (1 | sample)
  fit <- lmm(diameter ~ 1 + (1 | plate) + (1 | sample), data = lme4::Penicillin)
  kr <- coef(summary(fit, ddf = "Kenward-Roger"))
  sat <- coef(summary(fit))
  # the pointer does not survive serialisation: rebuilt from the plain data
  f2 <- unserialize(serialize(fit, NULL))
  expect_false(lmmr:::rs_model_is_live(f2$engine$ptr))
  expect_equal(coef(summary(f2, ddf = "Kenward-Roger")), kr, tolerance = 1e-10)
  # a refit with another response loads its response into the shared model;
  # the original fit's inference reloads its own
  set.seed(3)
  f3 <- refit(fit, newresp = fit$y + rnorm(length(fit$y)))
  expect_false(isTRUE(all.equal(coef(summary(f3))[, "df"], sat[, "df"])))
  expect_equal(coef(summary(fit)), sat, tolerance = 1e-10)
  expect_equal(coef(summary(fit, ddf = "Kenward-Roger")), kr, tolerance = 1e-10)
})
