#' Summarise a linear mixed model fit
#'
#' @details
#' Satterthwaite's df use the observed Hessian of the REML (or ML) deviance
#' in the variance parameters (theta, sigma) and the Jacobian of the
#' covariance of the fixed effects, as lmerTest; the derivatives are
#' analytic. Kenward-Roger follows pbkrtest: the linear parametrisation of
#' the marginal covariance (one parameter per variance and covariance) and
#' the *expected* REML information; it needs a REML fit. SAS PROC MIXED
#' (`DDFM=KR`) and mmrm use the *observed* information instead, so their df
#' can differ slightly in unbalanced designs (one documented case: 175.94
#' with the expected versus 177.04 with the observed information); in
#' balanced designs the two agree. The observed-information variant is not
#' offered yet.
#'
#' Cluster-robust standard errors (`vcov = "CR2"` etc.) follow clubSandwich
#' for lmer fits: the working covariance is the fitted marginal covariance
#' V_j of each cluster, the bread `(X' V^-1 X)^-1`, the residuals the
#' marginal ones `y - X beta`; CR1 scales by `J / (J - 1)` (J clusters),
#' CR2 uses the Bell-McCaffrey adjustment matrices
#' `A_j = R_j' (R_j (V_j - X_j M X_j') R_j')^(-1/2) R_j` (`V_j = R_j' R_j`,
#' `M = (X' V^-1 X)^-1`), CR3 `(I - H_jj)^-1`. The degrees of freedom are
#' those of Bell and McCaffrey (2002) and Pustejovsky and Tipton (2018).
#' Only per-cluster blocks are formed; clusters must contain whole levels
#' of every grouping factor. Prior weights enter the working covariance
#' (clubSandwich does not accept weighted lmer fits); offsets are
#' subtracted from the residuals.
#'
#' @param object an `"lmmr"` fit.
#' @param ddf method for the denominator degrees of freedom of the t tests:
#'   `"Satterthwaite"` (default, as lmerTest), `"Kenward-Roger"` (as
#'   pbkrtest/lmerTest) or `"none"` (no df and p-values, as lme4).
#' @param vcov `NULL` (model-based standard errors), or a cluster-robust
#'   type, `"CR0"`, `"CR1"`, `"CR1p"`, `"CR1S"`, `"CR2"` or `"CR3"` (see
#'   [vcov.lmmr()]): the coefficient table then has cluster-robust standard
#'   errors and Satterthwaite (Bell-McCaffrey) degrees of freedom, as
#'   `clubSandwich::coef_test(fit, vcov = "CR2", test = "Satterthwaite")`
#'   on the lmer fit; `ddf` is not used.
#' @param cluster with `vcov`: the clusters, see [vcov.lmmr()] (default the
#'   grouping factor with the fewest levels).
#' @param ... unused.
#' @return An object of class `"summary.lmmr"` whose `coefficients` (see
#'   [coef()]) is a matrix with columns `Estimate`, `Std. Error`, `df`,
#'   `t value` and `Pr(>|t|)` (the last three only when `ddf` is not
#'   `"none"`).
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' summary(fit, ddf = "none")
#' coef(summary(fit, vcov = "CR2"))
#' @export
summary.lmmr <- function(object, ddf = c("Satterthwaite", "Kenward-Roger", "none"),
                         vcov = NULL, cluster = NULL, ...) {
  h_check_dots(..., .fn = "summary")
  ddf_given <- !missing(ddf)
  ddf <- h_match_ddf(ddf)
  beta <- object$beta
  se <- sqrt(diag(object$vcov))
  coefs <- cbind(Estimate = beta, `Std. Error` = se, `t value` = beta / se)
  robust <- NULL
  if (!is.null(vcov) || !is.null(cluster)) {
    if (ddf_given) h_check_dots(ddf = ddf, .fn = "summary(vcov = )")
    robust <- h_coef_table_cr(object, if (is.null(vcov)) "CR2" else vcov, cluster)
    coefs <- robust$coefficients
    ddf <- "Satterthwaite"
  } else if (ddf != "none") {
    inf <- h_coef_ddf(object, ddf)
    coefs <- cbind(Estimate = beta, `Std. Error` = inf$se, df = inf$df,
                   `t value` = beta / inf$se,
                   `Pr(>|t|)` = 2 * stats::pt(abs(beta / inf$se), inf$df,
                                              lower.tail = FALSE))
  }
  structure(list(
    object = object, ddf = ddf, coefficients = coefs,
    varcor = VarCorr(object),
    scaled_residuals = if (is.null(object$db)) residuals(object, type = "pearson", scaled = TRUE),
    vcov = if (is.null(robust)) object$vcov else robust$vcov,
    robust = robust[c("type", "n_clusters")]
  ), class = "summary.lmmr")
}

#' @noRd
h_match_ddf <- function(ddf) {
  choices <- c("Satterthwaite", "Kenward-Roger", "none")
  if (!is.character(ddf) || length(ddf) < 1L || !(ddf[1] %in% choices)) {
    h_abort(sprintf("`ddf` must be one of %s; got %s.",
                    paste0('"', choices, '"', collapse = ", "),
                    paste(deparse(ddf), collapse = " ")), "ddf")
  }
  ddf[1]
}

#' @export
coef.summary.lmmr <- function(object, ...) object$coefficients

#' @export
vcov.summary.lmmr <- function(object, ...) object$vcov

#' @export
print.summary.lmmr <- function(x, digits = max(3, getOption("digits") - 3), ...) {
  obj <- x$object
  h_fit_header(obj)
  cat("\n")
  if (obj$REML) {
    cat(sprintf("REML criterion at convergence: %s\n\n", format(obj$objective, digits = 5, nsmall = 1)))
  } else {
    ll <- logLik(obj)
    tab <- c(AIC = stats::AIC(obj), BIC = stats::BIC(obj), logLik = as.numeric(ll),
             deviance = obj$objective, df.resid = obj$n - length(ll) - 0)
    tab["df.resid"] <- obj$n - attr(ll, "df")
    print(round(tab, 1))
    cat("\n")
  }
  if (!is.null(x$scaled_residuals)) {
    cat("Scaled residuals: \n")
    q <- zapsmall(stats::quantile(x$scaled_residuals, na.rm = TRUE), digits + 1L)
    names(q) <- c("Min", "1Q", "Median", "3Q", "Max")
    print(q, digits = digits)
  } else {
    cat("Fitted from database aggregates (the rows stay in the database).\n")
  }
  cat("\nRandom effects:\n")
  print(h_format_varcorr(x$varcor, digits = digits), quote = FALSE, right = FALSE)
  cat(h_groups_line(obj), "\n")
  cat("\nFixed effects:\n")
  if (length(x$robust)) {
    cat(sprintf("(cluster-robust %s standard errors, %d clusters; Satterthwaite (Bell-McCaffrey) degrees of freedom)\n",
                x$robust$type, x$robust$n_clusters))
  } else if (x$ddf != "none") {
    cat(sprintf("(t tests use %s's method for the degrees of freedom)\n",
                x$ddf))
  }
  stats::printCoefmat(x$coefficients, digits = digits,
                      has.Pvalue = x$ddf != "none", P.values = x$ddf != "none")
  p <- length(obj$beta)
  if (p > 1 && p <= 12) {
    cat("\nCorrelation of Fixed Effects:\n")
    v <- obj$vcov
    cr <- v / outer(sqrt(diag(v)), sqrt(diag(v)))
    ab <- abbreviate(colnames(cr), minlength = 6)
    out <- format(round(cr, 3), nsmall = 3)
    out[upper.tri(out, diag = TRUE)] <- ""
    dimnames(out) <- list(ab, ab)
    print(out[-1, -p, drop = FALSE], quote = FALSE, right = TRUE)
  }
  if (length(obj$dropped)) {
    cat(sprintf("fixed-effect model matrix is rank deficient so dropping %d column(s): %s\n",
                length(obj$dropped), paste(obj$dropped, collapse = ", ")))
  }
  h_fit_footer(obj)
  invisible(x)
}
