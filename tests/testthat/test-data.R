# Tests of the shipped datasets (data/*.rda, built by data-raw/*.R).

# Return a shipped dataset: from the installed/loaded lmmr package when it
# provides it, otherwise (during development, before the package is
# installed) from the package sources' data/ directory.
lmmr_dataset <- function(name) {
  obj <- tryCatch(getExportedValue("lmmr", name), error = function(e) NULL)
  if (is.null(obj)) {
    path <- testthat::test_path("..", "..", "data", paste0(name, ".rda"))
    testthat::skip_if_not(file.exists(path), paste("dataset", name, "not found"))
    env <- new.env()
    load(path, envir = env)
    obj <- env[[name]]
  }
  obj
}

# REML fit with lme4, quietly (singular fits are not errors here).
fit_lme4 <- function(formula, data) {
  suppressMessages(suppressWarnings(lme4::lmer(formula, data = data, REML = TRUE)))
}

vc_lme4 <- function(fit) {
  vc <- as.data.frame(lme4::VarCorr(fit))
  c(between = vc$vcov[1], residual = vc$vcov[nrow(vc)])
}

wald_ci <- function(fit, term) {
  cf <- stats::coef(summary(fit))
  cf[term, "Estimate"] + c(-1, 1) * stats::qnorm(0.975) * cf[term, "Std. Error"]
}

# ---- phaa_clinics -------------------------------------------------------

test_that("phaa_clinics has the documented structure", {
  d <- lmmr_dataset("phaa_clinics")
  expect_s3_class(d, "data.frame")
  expect_named(d, c("clinic_id", "clinic_urban", "clinic_size", "age",
                    "female", "bmi", "smoker", "sbp"))
  expect_gte(nrow(d), 900)
  expect_lte(nrow(d), 1000)
  expect_s3_class(d$clinic_id, "factor")
  expect_equal(nlevels(d$clinic_id), 30)
  expect_true(all(table(d$clinic_id) >= 20 & table(d$clinic_id) <= 50))
  expect_gt(length(unique(table(d$clinic_id))), 1) # unequal clinic sizes
  expect_s3_class(d$clinic_urban, "factor")
  expect_equal(levels(d$clinic_urban), c("rural", "urban"))
  expect_s3_class(d$smoker, "factor")
  expect_equal(levels(d$smoker), c("No", "Yes"))
  expect_type(d$female, "integer")
  expect_true(all(d$female %in% 0:1))
  for (v in c("clinic_size", "age", "bmi", "sbp")) expect_type(d[[v]], "double")
  expect_false(anyNA(d))
  expect_true(all(d$age >= 18 & d$age <= 90))
  expect_true(all(d$bmi >= 16 & d$bmi <= 50))
  expect_true(all(d$sbp >= 70 & d$sbp <= 240))
  expect_true(stats::median(d$sbp) > 110 && stats::median(d$sbp) < 145)
  # clinic-level variables are constant within clinics
  per_clinic <- function(x) tapply(x, d$clinic_id, function(v) length(unique(v)))
  expect_true(all(per_clinic(d$clinic_urban) == 1))
  expect_true(all(per_clinic(d$clinic_size) == 1))
})

test_that("phaa_clinics: null model variances and ICC (lme4, REML)", {
  skip_if_not_installed("lme4")
  d <- lmmr_dataset("phaa_clinics")
  vc <- vc_lme4(fit_lme4(sbp ~ 1 + (1 | clinic_id), d))
  icc <- vc[["between"]] / sum(vc)
  expect_gte(vc[["between"]], 50)
  expect_lte(vc[["between"]], 80)
  expect_gte(vc[["residual"]], 250)
  expect_lte(vc[["residual"]], 350)
  expect_gte(icc, 0.15)
  expect_lte(icc, 0.21)
})

test_that("phaa_clinics: covariates lower the ICC; no random smoker slope", {
  skip_if_not_installed("lme4")
  d <- lmmr_dataset("phaa_clinics")
  m2 <- fit_lme4(sbp ~ age + female + bmi + smoker + clinic_urban +
                   scale(clinic_size) + (1 | clinic_id), d)
  vc <- vc_lme4(m2)
  icc_adj <- vc[["between"]] / sum(vc)
  expect_gte(icc_adj, 0.07)
  expect_lte(icc_adj, 0.13)

  m3 <- fit_lme4(sbp ~ age + female + bmi + smoker + clinic_urban +
                   scale(clinic_size) + (1 + smoker | clinic_id), d)
  lrt <- suppressMessages(stats::anova(m2, m3, refit = FALSE))
  expect_equal(lrt$Df[2], 2)
  expect_gte(lrt$Chisq[2], 1)
  expect_lte(lrt$Chisq[2], 3)
  expect_gt(lrt$`Pr(>Chisq)`[2], 0.10)
})

test_that("phaa_clinics: within- and between-clinic age slopes differ", {
  skip_if_not_installed("lme4")
  d <- lmmr_dataset("phaa_clinics")
  d$age_mean <- stats::ave(d$age, d$clinic_id)
  d$age_within <- d$age - d$age_mean

  check_slopes <- function(fit) {
    ci_w <- wald_ci(fit, "age_within")
    ci_b <- wald_ci(fit, "age_mean")
    expect_gt(ci_b[1], ci_w[2]) # non-overlapping 95% Wald intervals
    expect_gt(ci_w[1], 0.3)
    expect_lt(ci_w[2], 0.7)
    b <- stats::coef(summary(fit))["age_mean", "Estimate"]
    expect_gt(b, 1.1)
    expect_lt(b, 2.2)
  }
  check_slopes(fit_lme4(sbp ~ age_within + age_mean + (1 | clinic_id), d))
  check_slopes(fit_lme4(sbp ~ age_within + age_mean + female + bmi + smoker +
                          clinic_urban + scale(clinic_size) + (1 | clinic_id), d))
})

# ---- prevention ---------------------------------------------------------

test_that("prevention has the documented structure and values", {
  d <- lmmr_dataset("prevention")
  expect_s3_class(d, "data.frame")
  expect_named(d, c("community", "school", "risk"))
  expect_equal(nrow(d), 20)
  expect_s3_class(d$community, "factor")
  expect_equal(levels(d$community), LETTERS[1:5])
  expect_equal(as.vector(table(d$community)), rep(4L, 5))
  expect_s3_class(d$school, "factor")
  expect_equal(nlevels(d$school), 4)
  expect_type(d$risk, "double")
  expect_equal(
    unname(split(d$risk, d$community)),
    list(c(42, 47, 39, 44), c(31, 28, 35, 30), c(55, 58, 51, 60),
         c(38, 41, 36, 33), c(48, 52, 45, 51))
  )
})

test_that("prevention: random-intercept model gives the textbook answers", {
  skip_if_not_installed("lme4")
  d <- lmmr_dataset("prevention")
  m <- fit_lme4(risk ~ 1 + (1 | community), d)
  vc <- vc_lme4(m)
  expect_equal(round(vc[["between"]], 2), 93.37)
  expect_equal(round(vc[["residual"]], 2), 11.33)
  expect_equal(round(vc[["between"]] / sum(vc), 3), 0.892)
  cf <- stats::coef(summary(m))
  expect_equal(round(cf["(Intercept)", "Estimate"], 1), 43.2)
  expect_equal(round(cf["(Intercept)", "Std. Error"], 3), 4.386)
  blup <- lme4::ranef(m)$community[, "(Intercept)"]
  expect_equal(round(blup, 2), c(-0.19, -11.84, 12.42, -6.02, 5.63))
})

test_that("prevention: Satterthwaite df of the intercept is 4 (lmerTest)", {
  skip_if_not_installed("lmerTest")
  d <- lmmr_dataset("prevention")
  m <- suppressMessages(lmerTest::lmer(risk ~ 1 + (1 | community), data = d))
  cf <- stats::coef(summary(m))
  expect_equal(round(cf["(Intercept)", "df"], 2), 4)
})

# ---- sleepstudy ---------------------------------------------------------

test_that("sleepstudy has the documented structure", {
  d <- lmmr_dataset("sleepstudy")
  expect_s3_class(d, "data.frame")
  expect_named(d, c("Reaction", "Days", "Subject"))
  expect_equal(nrow(d), 180)
  expect_s3_class(d$Subject, "factor")
  expect_equal(nlevels(d$Subject), 18)
  expect_equal(sort(unique(d$Days)), 0:9)
  expect_type(d$Reaction, "double")
})

test_that("sleepstudy is identical to lme4::sleepstudy", {
  skip_if_not_installed("lme4")
  d <- lmmr_dataset("sleepstudy")
  env <- new.env()
  utils::data("sleepstudy", package = "lme4", envir = env)
  expect_identical(d, env$sleepstudy)
})

# ---- trial_typeI --------------------------------------------------------

test_that("trial_typeI has the documented structure and rejection rates", {
  d <- lmmr_dataset("trial_typeI")
  expect_s3_class(d, "data.frame")
  expect_named(d, c("rep", "p_lm", "p_mixed"))
  expect_equal(nrow(d), 1000)
  expect_equal(d$rep, seq_len(1000))
  expect_false(anyNA(d))
  expect_true(all(d$p_lm >= 0 & d$p_lm <= 1))
  expect_true(all(d$p_mixed >= 0 & d$p_mixed <= 1))
  # ignoring the clustering inflates the type-I error; the mixed model keeps it
  expect_gt(mean(d$p_lm < 0.05), 0.3)
  expect_gt(mean(d$p_mixed < 0.05), 0.02)
  expect_lt(mean(d$p_mixed < 0.05), 0.08)
})
