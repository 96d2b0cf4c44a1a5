# insight 0.19.0 / performance 0.10.2 / parameters 0.20.2 on lmm fits,
# against the same calls on the lmerTest::lmer() fit.

skip_if_not_installed("insight")
skip_if_not_installed("performance")
skip_if_not_installed("lmerTest")

test_that("insight reads the model as it reads the lmer fit", {
  for (name in c("sleep", "clinics", "dye2")) {
    m <- interop_fits(name)
    tol <- if (name == "sleep") 1e-4 else 1e-6
    ff <- insight::find_formula(m$fit)
    fr <- insight::find_formula(m$ref)
    expect_identical(names(ff), names(fr))
    expect_identical(lapply(ff, deparse), lapply(fr, deparse))
    expect_identical(insight::find_random(m$fit), insight::find_random(m$ref))
    expect_equal(insight::get_random(m$fit), suppressWarnings(insight::get_random(m$ref)),
                 ignore_attr = TRUE)
    expect_true(insight::is_mixed_model(m$fit))
    info <- insight::model_info(m$fit)
    expect_true(info$is_mixed && info$is_linear && info$family == "gaussian")
    expect_identical(insight::find_parameters(m$fit), insight::find_parameters(m$ref))
    expect_same_table(insight::get_parameters(m$fit), insight::get_parameters(m$ref), tol = tol)
    expect_same_table(insight::get_statistic(m$fit), insight::get_statistic(m$ref), tol = tol)
    expect_equal(insight::get_varcov(m$fit), insight::get_varcov(m$ref), tolerance = tol,
                 ignore_attr = TRUE)
    for (type in c("residual", "normal")) {
      expect_equal(insight::get_df(m$fit, type = type), insight::get_df(m$ref, type = type),
                   tolerance = tol, ignore_attr = TRUE, label = type)
    }
    # insight's own Satterthwaite/KR for lmer refits through lmerTest, which
    # cannot find this data from here: compare with lmerTest directly
    expect_equal(insight::get_df(m$fit, type = "satterthwaite"),
                 coef(summary(m$ref))[, "df"], tolerance = tol, ignore_attr = TRUE)
    expect_equal(insight::get_df(m$fit, type = "kenward"),
                 coef(summary(m$ref, ddf = "Kenward-Roger"))[, "df"], tolerance = tol,
                 ignore_attr = TRUE)
    vf <- suppressWarnings(insight::get_variance(m$fit))
    vr <- suppressWarnings(insight::get_variance(m$ref))
    expect_identical(names(vf), names(vr))
    expect_equal(vf, vr, tolerance = 1e-4)
    expect_equal(as.numeric(insight::get_predicted(m$fit)),
                 as.numeric(insight::get_predicted(m$ref)), tolerance = tol)
    expect_identical(insight::find_algorithm(m$fit)$algorithm,
                     insight::find_algorithm(m$ref)$algorithm)
    expect_equal(as.numeric(insight::get_loglikelihood(m$fit, estimator = "ML")),
                 as.numeric(insight::get_loglikelihood(m$ref, estimator = "ML")), tolerance = tol)
  }
})

test_that("performance gives the lmer numbers", {
  for (name in c("sleep", "clinics")) {
    m <- interop_fits(name)
    tol <- if (name == "sleep") 1e-4 else 1e-6
    expect_equal(unclass(performance::icc(m$fit)), unclass(performance::icc(m$ref)),
                 tolerance = tol, ignore_attr = TRUE)
    expect_equal(unclass(performance::r2_nakagawa(m$fit)),
                 unclass(performance::r2_nakagawa(m$ref)), tolerance = tol, ignore_attr = TRUE)
    expect_equal(unclass(call_global(performance::r2, m$fit)), unclass(performance::r2(m$ref)),
                 tolerance = tol, ignore_attr = TRUE)
    expect_false(performance::check_singularity(m$fit))
    expect_same_table(performance::model_performance(m$fit),
                      performance::model_performance(m$ref), tol = tol)
  }
  s <- interop_fits("dye2")
  expect_identical(suppressWarnings(performance::icc(s$fit)),
                   suppressWarnings(performance::icc(s$ref)))
  expect_same_table(suppressWarnings(performance::model_performance(s$fit)),
                    suppressMessages(suppressWarnings(performance::model_performance(s$ref))))
  expect_true(performance::check_singularity(s$fit))
  expect_identical(performance::check_singularity(s$fit), performance::check_singularity(s$ref))
  for (name in c("sleep", "clinics")) {
    m <- interop_fits(name)
    tol <- if (name == "sleep") 1e-4 else 1e-6
    for (eff in c("fixed", "random")) {
      expect_equal(c(performance::check_normality(m$fit, effects = eff)),
                   c(performance::check_normality(m$ref, effects = eff)), tolerance = tol * 10)
    }
  }
  # check_model(): the same panels and data as for the lmer fit, except the
  # homogeneity panel (performance computes it with rstandard() for classes
  # it does not know), the QQ panel (studentized residuals from rstudent()
  # instead of the raw residuals it uses for merMod fits) and the posterior
  # predictive check (random draws)
  grDevices::pdf(NULL)
  on.exit(grDevices::dev.off())
  m <- interop_fits("clinics")
  a <- suppressMessages(suppressWarnings(performance::check_model(m$fit)))
  b <- suppressMessages(suppressWarnings(performance::check_model(m$ref)))
  expect_s3_class(a, "check_model")
  expect_setequal(setdiff(names(b), names(a)), "HOMOGENEITY")
  for (nm in c("REQQ", "NORM", "NCV", "OUTLIERS", "INFLUENTIAL")) {
    expect_equal(a[[nm]], b[[nm]], tolerance = 1e-5, ignore_attr = TRUE, label = nm)
  }
})

test_that("parameters::model_parameters() gives the lmer table", {
  skip_if_not_installed("parameters")
  for (name in c("sleep", "clinics")) {
    m <- interop_fits(name)
    tol <- if (name == "sleep") 1e-4 else 1e-6
    mp <- function(x, ...) as.data.frame(suppressMessages(parameters::model_parameters(x, ...)))
    expect_same_table(mp(m$fit), mp(m$ref), tol = tol)
    expect_same_table(mp(m$fit, effects = "fixed"), mp(m$ref, effects = "fixed"), tol = tol)
    # parameters' own Satterthwaite/KR for lmer refits through lmerTest,
    # which cannot find this data from here: compare with lmerTest directly
    for (cim in c("satterthwaite", "kenward")) {
      a <- mp(m$fit, ci_method = cim, effects = "fixed")
      ref <- coef(summary(m$ref, ddf = if (cim == "kenward") "Kenward-Roger" else "Satterthwaite"))
      expect_equal(a$df_error, unname(ref[, "df"]), tolerance = tol)
      expect_equal(a$SE, unname(ref[, "Std. Error"]), tolerance = tol)
      expect_equal(a$p, unname(ref[, "Pr(>|t|)"]), tolerance = tol)
    }
  }
  expect_output(print(parameters::model_parameters(interop_fits("sleep")$fit)), "Days")
})
