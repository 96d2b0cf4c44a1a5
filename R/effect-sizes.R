# Effect sizes the mixed-models primer computes by hand: proportions of
# variance per component, the relative change of variance components between
# two fits, and Cohen's local f^2 between two nested fits.

#' Proportions of variance per component
#'
#' Splits the variance of the response as the model sees it into the
#' variance of each random-effect term (averaged over the observations, so
#' that random slopes count at the covariate values of the data, as in
#' Nakagawa's R2), the residual variance and, with `fixed = TRUE`, the
#' variance of the fixed-effects predictor. Each proportion is a component
#' divided by the sum of the components listed.
#'
#' @param x an `"lmmr"` fit.
#' @param fixed logical: include the variance of the fixed-effects linear
#'   predictor `var(X beta)` as a component (then the proportions of the
#'   random terms and residual add up to `1 - marginal R2`).
#' @return A data frame with columns `component`, `variance` and
#'   `proportion`, one row per random-effect term, the residual and
#'   optionally the fixed effects.
#' @seealso [icc()], [r2()], [variance_change()]
#' @references Nakagawa, S., Johnson, P. C. D. & Schielzeth, H. (2017). The
#'   coefficient of determination R2 and intra-class correlation coefficient
#'   from generalized linear mixed-effects models revisited and expanded.
#'   *J. R. Soc. Interface* 14: 20170213.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' variance_proportions(fit)
#' variance_proportions(fit, fixed = TRUE)
#' @export
variance_proportions <- function(x, fixed = FALSE) {
  h_check_lmm(x, "x")
  h_check_flag(fixed, "fixed")
  vc <- h_variance_components(x)
  comp <- c(if (fixed) c(`Fixed effects` = vc$fixed), vc$random,
            Residual = vc$residual)
  out <- data.frame(component = names(comp), variance = unname(comp),
                    proportion = unname(comp) / sum(comp),
                    stringsAsFactors = FALSE)
  out
}

#' Relative change of the variance components between two fits
#'
#' For every variance component present in both fits (matched by grouping
#' factor and coefficient names, as in `as.data.frame(VarCorr())`, plus the
#' residual variance), the change from the first fit (typically the null or
#' a smaller model) to the second: `relative_change = (v1 - v0) / v0`. Its
#' negative, `reduction = (v0 - v1) / v0`, is the "proportion of variance
#' explained" at that level of Raudenbush and Bryk (2002, eq. 4.12); it can
#' be negative when adding a predictor increases a variance component.
#'
#' @param fit0,fit1 `"lmmr"` fits to the same data (e.g. without and with
#'   a predictor).
#' @return A data frame with columns `grp`, `var1`, `var2`, `vcov0`,
#'   `vcov1`, `relative_change` and `reduction`; covariances (rows with
#'   `var2`) are excluded.
#' @references Raudenbush, S. W. & Bryk, A. S. (2002). *Hierarchical Linear
#'   Models*, 2nd ed., Sage, section 4.
#' @seealso [variance_proportions()], [cohens_f2()]
#' @examples
#' m0 <- lmm(sbp ~ 1 + (1 | clinic_id), data = phaa_clinics)
#' m1 <- lmm(sbp ~ age + smoker + (1 | clinic_id), data = phaa_clinics)
#' variance_change(m0, m1)
#' @export
variance_change <- function(fit0, fit1) {
  h_check_lmm(fit0, "fit0")
  h_check_lmm(fit1, "fit1")
  h_check_same_data(list(fit0, fit1), "two fits")
  v0 <- as.data.frame(VarCorr(fit0))
  v1 <- as.data.frame(VarCorr(fit1))
  v0 <- v0[is.na(v0$var2), , drop = FALSE]
  v1 <- v1[is.na(v1$var2), , drop = FALSE]
  key <- function(v) paste(v$grp, v$var1, sep = "\r")
  common <- intersect(key(v0), key(v1))
  if (!length(common)) {
    h_abort("The two fits have no variance component in common.", "argument")
  }
  a <- v0[match(common, key(v0)), , drop = FALSE]
  b <- v1[match(common, key(v1)), , drop = FALSE]
  rel <- (b$vcov - a$vcov) / a$vcov
  data.frame(grp = a$grp, var1 = a$var1, var2 = a$var2,
             vcov0 = a$vcov, vcov1 = b$vcov, relative_change = rel,
             reduction = -rel, stringsAsFactors = FALSE)
}

#' Cohen's local f-squared between two nested fits
#'
#' The effect size of the predictors that a full model adds to a reduced
#' one, `f2 = (R2_full - R2_reduced) / (1 - R2_full)` (Cohen 1988, eq.
#' 9.2.4; for mixed models Selya et al. 2012), with Nakagawa's marginal
#' (default) or conditional R2 of each fit ([r2()]). Cohen's benchmarks are
#' 0.02 (small), 0.15 (medium) and 0.35 (large).
#'
#' @param full,reduced `"lmmr"` fits to the same data; `reduced` has a
#'   subset of the fixed effects of `full`.
#' @param r2 `"marginal"` (default) or `"conditional"`.
#' @return A named numeric: `f2`, `r2_full`, `r2_reduced`.
#' @references Cohen, J. (1988). *Statistical Power Analysis for the
#'   Behavioral Sciences*, 2nd ed. Selya, A. S., Rose, J. S., Dierker, L. C.,
#'   Hedeker, D. & Mermelstein, R. J. (2012). A practical guide to calculating
#'   Cohen's f2, a measure of local effect size, from PROC MIXED.
#'   *Frontiers in Psychology* 3: 111.
#' @seealso [r2()], [variance_change()]
#' @examples
#' full <- lmm(sbp ~ age + smoker + bmi + (1 | clinic_id), data = phaa_clinics)
#' reduced <- lmm(sbp ~ age + bmi + (1 | clinic_id), data = phaa_clinics)
#' cohens_f2(full, reduced)
#' @export
cohens_f2 <- function(full, reduced, r2 = c("marginal", "conditional")) {
  h_check_lmm(full, "full")
  h_check_lmm(reduced, "reduced")
  r2 <- match.arg(r2)
  h_check_same_data(list(full, reduced), "full and reduced models")
  extra <- setdiff(names(reduced$beta), names(full$beta))
  if (length(extra)) {
    h_abort(sprintf("`reduced` must have a subset of the fixed effects of `full`; it also has %s.",
                    paste(extra, collapse = ", ")), "argument")
  }
  rf <- r2.lmmr(full)[[r2]]
  rr <- r2.lmmr(reduced)[[r2]]
  c(f2 = (rf - rr) / (1 - rf), r2_full = rf, r2_reduced = rr)
}
