#' lmmr: fast linear mixed models with a Rust core
#'
#' Fits linear mixed models written in lme4's formula language with
#' [lmm()]; estimates agree with `lme4::lmer()`. See
#' `vignette("getting-started", package = "lmmr")`.
#'
#' @keywords internal
#' @importFrom stats nobs sigma fitted residuals predict vcov deviance logLik
#'   formula confint coef model.matrix model.frame update AIC BIC simulate
#'   terms df.residual weights extractAIC drop1 family hatvalues cooks.distance
#'   influence rstudent
"_PACKAGE"
