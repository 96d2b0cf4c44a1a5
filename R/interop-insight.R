# easystats support: methods on insight's generics (the ones its "adding new
# models" guide names), so that insight, performance and parameters read
# lmmr fits as they read lmer fits (insight 0.19.0, performance 0.10.2,
# parameters 0.20.2). Registered lazily through S3method(insight::gen, lmmr)
# NAMESPACE directives.

#' insight / performance / parameters support for lmmr fits
#'
#' Methods on the generics of [insight](https://easystats.github.io/insight/)
#' so that `performance::icc()`, `performance::r2_nakagawa()`,
#' `performance::check_singularity()`, `performance::model_performance()`,
#' `performance::compare_performance()`, `performance::check_model()` and
#' `parameters::model_parameters()` work on [lmm()] fits and give the
#' numbers they give for the same `lmer()` fit. `find_formula()` returns the
#' fixed (`conditional`) and `random` parts; `get_df()` gives residual,
#' Satterthwaite (`type = "satterthwaite"`) and Kenward-Roger
#' (`type = "kenward"`) degrees of freedom computed by lmmr; `get_variance()`
#' gives the variance components of [icc.lmmr()] in insight's layout.
#'
#' @param x an `"lmmr"` fit.
#' @param effects,component,type,flatten,verbose,tolerance,estimator as for
#'   the insight generics.
#' @param ... passed on (to insight's default methods where lmmr has nothing
#'   to add).
#' @return As the insight generics (see their documentation).
#' @name lmmr-insight
#' @examples
#' if (requireNamespace("insight", quietly = TRUE)) {
#'   fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#'   insight::find_formula(fit)
#'   insight::get_df(fit, type = "satterthwaite")
#'   str(insight::get_variance(fit))
#' }
NULL

#' @rdname lmmr-insight
#' @exportS3Method insight::find_formula
find_formula.lmmr <- function(x, verbose = TRUE, ...) {
  sp <- h_split_bars(x$formula)
  env <- environment(x$formula)
  random <- lapply(sp$bars, function(b) {
    stats::as.formula(paste("~", paste(deparse(b, width.cutoff = 500L), collapse = " ")),
                      env = env)
  })
  if (length(random) == 1L) random <- random[[1]]
  out <- list(conditional = x$fixed_formula %||% x$design_info$fixed_formula)
  if (length(sp$bars)) out$random <- random
  structure(out, class = c("insight_formula", "list"))
}

#' @rdname lmmr-insight
#' @exportS3Method insight::find_parameters
find_parameters.lmmr <- function(x, effects = c("all", "fixed", "random"),
                                 flatten = FALSE, ...) {
  effects <- match.arg(effects)
  out <- list(conditional = names(x$beta))
  if (effects != "fixed") {
    out$random <- lapply(ranef(x, condVar = FALSE), colnames)
  }
  if (effects == "random") out <- out["random"]
  if (flatten) unique(unlist(out, use.names = FALSE)) else out
}

#' @rdname lmmr-insight
#' @exportS3Method insight::get_parameters
get_parameters.lmmr <- function(x, effects = c("fixed", "random"), ...) {
  effects <- match.arg(effects)
  if (effects == "random") {
    return(lapply(unclass(ranef(x, condVar = FALSE)), function(d) {
      attr(d, "postVar") <- NULL
      d
    }))
  }
  data.frame(Parameter = names(x$beta), Estimate = unname(x$beta),
             stringsAsFactors = FALSE)
}

#' @rdname lmmr-insight
#' @exportS3Method insight::get_statistic
get_statistic.lmmr <- function(x, ...) {
  se <- sqrt(diag(x$vcov))
  out <- data.frame(Parameter = names(x$beta), Statistic = unname(x$beta / se),
                    stringsAsFactors = FALSE)
  attr(out, "statistic") <- "t-statistic"
  out
}

#' @rdname lmmr-insight
#' @exportS3Method insight::get_varcov
get_varcov.lmmr <- function(x, ...) x$vcov

#' @rdname lmmr-insight
#' @exportS3Method insight::get_df
get_df.lmmr <- function(x, type = "residual", ...) {
  type <- tolower(type)
  if (type == "satterthwaite") {
    return(h_coef_ddf(x, "Satterthwaite")$df)
  }
  if (type %in% c("kr", "kenward", "kenward-roger")) {
    return(h_coef_ddf(x, "Kenward-Roger")$df)
  }
  if (type %in% c("residual", "model", "wald")) {
    return(stats::df.residual(x))
  }
  if (type == "normal") return(Inf)
  h_abort(sprintf("get_df(type = \"%s\") is not available for lmm fits; use \"residual\", \"normal\", \"satterthwaite\" or \"kenward\".",
                  type), "argument")
}

#' @rdname lmmr-insight
#' @exportS3Method insight::find_algorithm
find_algorithm.lmmr <- function(x, ...) {
  list(algorithm = if (isTRUE(x$REML)) "REML" else "ML", optimizer = "lmmr")
}

#' @rdname lmmr-insight
#' @exportS3Method insight::get_modelmatrix
get_modelmatrix.lmmr <- function(x, ...) x$X

#' @rdname lmmr-insight
#' @exportS3Method insight::get_loglikelihood
get_loglikelihood.lmmr <- function(x, estimator = NULL, ...) {
  if (is.null(estimator)) return(stats::logLik(x))
  est <- toupper(estimator)
  if (!est %in% c("ML", "REML")) {
    h_abort("`estimator` must be \"ML\" or \"REML\" for linear mixed models.", "argument")
  }
  stats::logLik(x, REML = est == "REML")
}

#' @rdname lmmr-insight
#' @exportS3Method insight::get_deviance
get_deviance.lmmr <- function(x, ...) stats::deviance(x, REML = FALSE)

#' @rdname lmmr-insight
#' @exportS3Method insight::n_parameters
n_parameters.lmmr <- function(x, effects = c("fixed", "random"), ...) {
  effects <- match.arg(effects)
  if (effects == "fixed") length(x$beta) else length(x$beta) + length(x$theta) + 1L
}

#' @rdname lmmr-insight
#' @exportS3Method insight::is_converged
is_converged.lmmr <- function(x, tolerance = 0.001, ...) isTRUE(x$optinfo$converged)

#' Singular in performance's sense (check_singularity() with `tolerance`)
#' @noRd
h_insight_singular <- function(x, tolerance = 1e-5) {
  any(abs(x$theta[x$lower == 0]) < tolerance)
}

#' @rdname lmmr-insight
#' @exportS3Method insight::get_variance
get_variance.lmmr <- function(x, component = c("all", "fixed", "random", "residual",
                                               "distribution", "dispersion",
                                               "intercept", "slope", "rho01", "rho00"),
                              verbose = TRUE, tolerance = 1e-5, ...) {
  component <- match.arg(component)
  vc <- h_variance_components(x)
  terms <- x$re_terms
  intercept <- list()
  slope <- list()
  rho01 <- list()
  for (t in terms) {
    cov <- t$cov
    cn <- t$cnms
    i0 <- match("(Intercept)", cn)
    if (!is.na(i0)) intercept[[t$group]] <- cov[i0, i0]
    for (j in setdiff(seq_along(cn), i0)) {
      slope[[paste(t$group, cn[j], sep = ".")]] <- cov[j, j]
    }
    if (!is.na(i0) && length(cn) > 1L) {
      rho <- cov[i0, -i0] / sqrt(cov[i0, i0] * diag(cov)[-i0])
      rho[!is.finite(rho)] <- 0
      rho01[[t$group]] <- if (length(rho) == 1L) unname(rho) else rho
    }
  }
  out <- list(var.fixed = vc$fixed, var.random = sum(vc$random),
              var.residual = vc$residual, var.distribution = vc$residual,
              var.dispersion = 0)
  if (h_insight_singular(x, tolerance)) {
    # as insight for lmer fits: no random-effect variance on the boundary,
    # so performance's icc() is NA and the conditional R2 is NA
    if (verbose) {
      h_warn("Can't compute random effect variances. Some variance components equal zero. Your model may suffer from singularity (see `?lmmr::is_singular`).",
             "singular")
    }
    out$var.random <- NULL
  }
  if (length(intercept)) out$var.intercept <- unlist(intercept)
  if (length(slope)) out$var.slope <- unlist(slope)
  if (length(rho01)) out$cor.slope_intercept <- unlist(rho01)
  if (component == "all") return(out)
  key <- switch(component, fixed = "var.fixed", random = "var.random",
                residual = "var.residual", distribution = "var.distribution",
                dispersion = "var.dispersion", intercept = "var.intercept",
                slope = "var.slope", rho01 = "cor.slope_intercept",
                rho00 = "cor.slopes")
  out[key]
}

#' @rdname lmmr-insight
#' @param predict,data,ci,iterations,include_random as for
#'   `insight::get_predicted()`: only `predict = "expectation"` /
#'   `"link"` (the same for a linear model) and no intervals are supported.
#' @exportS3Method insight::get_predicted
get_predicted.lmmr <- function(x, data = NULL, predict = "expectation", ci = NULL,
                               include_random = "default", iterations = NULL,
                               verbose = TRUE, ...) {
  if (!is.null(ci)) {
    h_abort("get_predicted() for lmm fits gives no intervals; use ci = NULL.", "argument")
  }
  if (!is.null(predict) && !predict %in% c("expectation", "link", "response")) {
    h_abort("`predict` must be \"expectation\" or \"link\" for lmm fits.", "argument")
  }
  re.form <- if (isFALSE(include_random)) NA else NULL
  if (identical(include_random, "default") && !is.null(data)) {
    re.form <- if (all(vapply(x$re_terms, function(t) t$group %in% names(data), logical(1)))) NULL else NA
  }
  pred <- if (is.null(data)) predict(x, re.form = re.form) else
    predict(x, newdata = data, re.form = re.form, allow.new.levels = TRUE)
  structure(as.numeric(pred), class = c("get_predicted", "numeric"),
            predict = "expectation")
}

#' Performance indices of an lmmr fit, as performance gives for lmer fits
#' (AIC and BIC from the fit's own log-likelihood, REML for REML fits)
#' @rdname lmmr-insight
#' @param model an `"lmmr"` fit.
#' @param metrics `"all"` (default) or a subset of `"AIC"`, `"AICc"`,
#'   `"BIC"`, `"R2"`, `"ICC"`, `"RMSE"`, `"SIGMA"`.
#' @exportS3Method performance::model_performance
model_performance.lmmr <- function(model, metrics = "all", verbose = TRUE, ...) {
  all_m <- c("AIC", "AICc", "BIC", "R2", "ICC", "RMSE", "SIGMA")
  if (identical(metrics, "all") || identical(metrics, "common")) metrics <- all_m
  bad <- setdiff(toupper(metrics), toupper(all_m))
  if (length(bad)) {
    h_abort(sprintf("Unknown metric(s) %s; lmm fits offer %s.", paste(bad, collapse = ", "),
                    paste(all_m, collapse = ", ")), "argument")
  }
  m <- toupper(metrics)
  ll <- stats::logLik(model)
  k <- attr(ll, "df")
  n <- model$n
  aic <- -2 * as.numeric(ll) + 2 * k
  out <- list()
  if ("AIC" %in% m) out$AIC <- aic
  if ("AICC" %in% m) out$AICc <- aic + 2 * k * (k + 1) / (n - k - 1)
  if ("BIC" %in% m) out$BIC <- -2 * as.numeric(ll) + log(n) * k
  singular <- h_insight_singular(model)
  if ("R2" %in% m) {
    r <- r2(model)
    # as performance for singular lmer fits: no conditional R2, no ICC
    out$R2_conditional <- if (singular) NA_real_ else r$conditional
    out$R2_marginal <- r$marginal
  }
  if ("ICC" %in% m && !singular) out$ICC <- suppressWarnings(icc(model))$adjusted
  if ("RMSE" %in% m) out$RMSE <- sqrt(mean(residuals(model)^2, na.rm = TRUE))
  if ("SIGMA" %in% m) out$Sigma <- model$sigma
  structure(as.data.frame(out, check.names = FALSE),
            class = c("performance_model", "data.frame"))
}

#' Parameters table of an lmmr fit, as parameters gives for lmer fits
#' @rdname lmmr-insight
#' @param ci_method degrees of freedom for the intervals and p-values:
#'   `"residual"` (default, as parameters for lmer fits: `df.residual()`),
#'   `"wald"` (the same), `"normal"`, `"satterthwaite"`, `"kenward"`.
#' @exportS3Method parameters::model_parameters
model_parameters.lmmr <- function(model, ci = 0.95, ci_method = NULL,
                                  effects = c("all", "fixed", "random"),
                                  verbose = TRUE, ...) {
  effects <- match.arg(effects)
  ci_method <- tolower(ci_method %||% "residual")
  ci_method <- switch(ci_method, wald = "residual", kr = , "kenward-roger" = "kenward",
                      ci_method)
  if (!ci_method %in% c("residual", "normal", "satterthwaite", "kenward")) {
    h_abort("`ci_method` must be \"residual\", \"wald\", \"normal\", \"satterthwaite\" or \"kenward\" for lmm fits.",
            "argument")
  }
  h_check_level(ci, "ci")
  beta <- model$beta
  p <- length(beta)
  se <- sqrt(diag(model$vcov))
  df <- switch(ci_method,
               residual = rep(stats::df.residual(model), p),
               normal = rep(Inf, p),
               satterthwaite = h_coef_ddf(model, "Satterthwaite")$df,
               kenward = {
                 inf <- h_coef_ddf(model, "Kenward-Roger")
                 se <- inf$se
                 inf$df
               })
  tval <- beta / se
  q <- stats::qt(1 - (1 - ci) / 2, df)
  fixed <- data.frame(Parameter = names(beta), Coefficient = unname(beta),
                      SE = unname(se), CI = ci, CI_low = unname(beta - q * se),
                      CI_high = unname(beta + q * se), t = unname(tval),
                      df_error = unname(df),
                      p = unname(2 * stats::pt(abs(tval), df, lower.tail = FALSE)),
                      stringsAsFactors = FALSE)
  if (ci_method == "residual") fixed$df_error <- as.integer(fixed$df_error)
  fixed$Effects <- "fixed"
  out <- fixed
  if (effects != "fixed") {
    fixed$Group <- ""
    rnd <- h_insight_ran_pars(model, ci)
    out <- if (effects == "all") rbind(fixed, rnd) else rnd
    if (ci_method == "residual") out$df_error <- as.integer(out$df_error)
  }
  rownames(out) <- NULL
  structure(out, class = c("parameters_model", "see_parameters_model", "data.frame"),
            ci = ci, ci_method = ci_method, df_method = ci_method,
            test_statistic = "t-statistic", model_class = class(model),
            mixed_model = TRUE, linear_model = TRUE, n_obs = model$n,
            pretty_names = stats::setNames(names(beta), names(beta)),
            object_name = deparse(substitute(model), width.cutoff = 500L)[1],
            verbose = verbose, exponentiate = FALSE, ordinal_model = FALSE,
            digits = 2, ci_digits = 2, p_digits = 3, footer_digits = 3)
}

#' Random-effect SDs and correlations in parameters' layout
#' @noRd
h_insight_ran_pars <- function(model, ci) {
  rows <- list()
  add <- function(par, est, group) {
    rows[[length(rows) + 1L]] <<- data.frame(
      Parameter = par, Coefficient = est, SE = NA_real_, CI = ci,
      CI_low = NA_real_, CI_high = NA_real_, t = NA_real_, df_error = NA_real_,
      p = NA_real_, Effects = "random", Group = group, stringsAsFactors = FALSE)
  }
  for (t in model$re_terms) {
    sd <- sqrt(diag(t$cov))
    cn <- sub("^\\(Intercept\\)$", "Intercept", t$cnms)
    for (j in seq_along(cn)) add(sprintf("SD (%s)", cn[j]), unname(sd[j]), t$group)
    if (length(cn) > 1L) {
      for (j in 1:(length(cn) - 1L)) {
        for (i in (j + 1L):length(cn)) {
          r <- t$cov[i, j] / (sd[i] * sd[j])
          add(sprintf("Cor (%s~%s)", cn[j], cn[i]), if (is.finite(r)) unname(r) else 0, t$group)
        }
      }
    }
  }
  add("SD (Observations)", model$sigma, "Residual")
  do.call(rbind, rows)
}

#' @rdname lmmr-insight
#' @exportS3Method insight::get_random
get_random.lmmr <- function(x, ...) {
  vars <- insight::find_random(x, split_nested = TRUE, flatten = TRUE)
  d <- stats::model.frame(x)
  d[, intersect(vars, names(d)), drop = FALSE]
}
