# Shared helpers for live comparisons with lme4 (lme4 1.1-31 from Debian).

# Fit the same model with lmm() and lme4::lmer() and compare every estimate
# with the tolerances of the core-engine issue.
expect_matches_lme4 <- function(formula, data, REML = TRUE, weights = NULL,
                                tol_fixef = 1e-5, tol_se = 1e-4,
                                tol_vc = 1e-3, tol_re = 1e-3) {
  # do.call() so that the weights reach both fitters as values
  fit <- suppressMessages(do.call(lmm, list(formula, data = data, REML = REML,
                                            weights = weights)))
  ref <- suppressMessages(suppressWarnings(do.call(lme4::lmer, list(
    formula, data = data, REML = REML, weights = weights,
    control = lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5))))))
  # criterion: ours equal to lme4's or lower, by at most 1e-7 relative
  crit_ref <- if (REML) lme4::REMLcrit(ref) else deviance(ref)
  crit <- if (REML) -2 * as.numeric(logLik(fit)) else deviance(fit)
  testthat::expect_lte((crit - crit_ref) / abs(crit_ref), 1e-7)
  testthat::expect_equal(fixef(fit), lme4::fixef(ref), tolerance = tol_fixef)
  testthat::expect_equal(sqrt(diag(vcov(fit))),
                         sqrt(diag(as.matrix(vcov(ref)))), tolerance = tol_se,
                         ignore_attr = TRUE)
  vc <- as.data.frame(VarCorr(fit))
  vc_ref <- as.data.frame(lme4::VarCorr(ref))
  testthat::expect_equal(vc$grp, vc_ref$grp)
  testthat::expect_equal(vc$vcov, vc_ref$vcov, tolerance = tol_vc)
  testthat::expect_equal(sigma(fit), sigma(ref), tolerance = tol_vc)
  re <- ranef(fit, condVar = TRUE)
  re_ref <- lme4::ranef(ref, condVar = TRUE)
  testthat::expect_setequal(names(re), names(re_ref))
  for (g in names(re_ref)) {
    testthat::expect_equal(as.matrix(re[[g]]), as.matrix(re_ref[[g]]),
                           tolerance = tol_re, ignore_attr = TRUE)
    pv <- attr(re[[g]], "postVar")
    pv_ref <- attr(re_ref[[g]], "postVar")
    testthat::expect_equal(pv, pv_ref, tolerance = tol_re, ignore_attr = TRUE)
  }
  testthat::expect_equal(unname(fitted(fit)), unname(fitted(ref)), tolerance = 1e-5)
  invisible(list(fit = fit, ref = ref))
}
