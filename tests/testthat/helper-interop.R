# Shared fits for the interop tests: each model fitted once with lmm() and
# with lmerTest::lmer() (lme4 1.1-31, lmerTest 3.1-3), the reference for
# every client call (emmeans 1.8.4, broom.mixed 0.2.9.4, insight 0.19.0,
# performance 0.10.2, parameters 0.20.2, car 3.1-1, multcomp 1.4).
interop_cache <- new.env()

interop_data <- function(name) {
  switch(name,
    sleep = lme4::sleepstudy,
    # a categorical-time model (repeated measures, 5 visits)
    visits = {
      d <- lme4::sleepstudy[lme4::sleepstudy$Days %in% c(0, 2, 4, 6, 8), ]
      d$time <- factor(d$Days)
      d
    },
    clinics = phaa_clinics,
    dye2 = lme4::Dyestuff2)
}

interop_formula <- function(name) {
  switch(name,
    sleep = Reaction ~ Days + (Days | Subject),
    visits = Reaction ~ time + (1 | Subject),
    clinics = sbp ~ clinic_urban * smoker + age + (1 | clinic_id),
    dye2 = Yield ~ 1 + (1 | Batch))
}

# list(fit = lmm fit, ref = lmerTest fit) for one of the models above
interop_fits <- function(name) {
  if (is.null(interop_cache[[name]])) {
    d <- interop_data(name)
    f <- interop_formula(name)
    fit <- suppressMessages(lmm(f, data = d))
    ref <- suppressMessages(lmerTest::lmer(f, data = d,
      control = lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5))))
    interop_cache[[name]] <- list(fit = fit, ref = ref, data = d, formula = f)
  }
  interop_cache[[name]]
}

# Compare two tables (data frames, tibbles, summary_emm, anova) column by
# column: same names, same character columns, numeric columns within `tol`
# relative (see below for entries near zero)
# (confidence limits, `tol_ci`: a limit near zero carries the relative error
# of the estimate and of the quantile, e.g. of qtukey())
expect_same_table <- function(a, b, tol = 1e-6, tol_ci = 10 * tol) {
  a <- as.data.frame(a)
  b <- as.data.frame(b)
  testthat::expect_identical(names(a), names(b))
  testthat::expect_identical(dim(a), dim(b))
  for (nm in names(b)) {
    if (is.numeric(b[[nm]])) {
      x <- a[[nm]]
      y <- b[[nm]]
      testthat::expect_identical(is.na(x), is.na(y), label = nm)
      inf <- !is.na(y) & is.infinite(y)
      testthat::expect_equal(x[inf], y[inf], label = nm)
      ok <- !is.na(y) & !inf
      # relative, except for entries near zero (e.g. a confidence limit
      # close to 0), which are compared on the scale of their column
      rel <- abs(x[ok] - y[ok]) / pmax(abs(y[ok]), 1e-3 * max(abs(y[ok]), 0), 1e-8)
      tl <- if (grepl("CL$|^conf\\.|^CI_", nm)) tol_ci else tol
      testthat::expect_lte(max(c(0, rel)), tl, label = nm)
    } else {
      testthat::expect_identical(as.character(a[[nm]]), as.character(b[[nm]]), label = nm)
    }
  }
}

# Call `fun(...)` from the global environment, as user code does: inside the
# tests the calling frame sees lmmr's namespace, where S3 dispatch would find
# lmmr's own r2.lmmr() before the method registered on performance::r2
call_global <- function(fun, ...) {
  eval(as.call(c(list(fun), list(...))), globalenv())
}
