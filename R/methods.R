# Extractor methods for "lmmr" fits, with lme4's names and shapes.

#' Fixed-effect estimates of a linear mixed model
#'
#' @param object an `"lmmr"` fit.
#' @param add.dropped logical: include columns of the fixed-effects design
#'   that were dropped because they were aliased (as `NA`), as lme4 does.
#' @param ... unused.
#' @return A named numeric vector.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' fixef(fit)
#' @export
fixef.lmmr <- function(object, add.dropped = FALSE, ...) {
  h_check_dots(..., .fn = "fixef")
  if (!add.dropped || length(object$dropped) == 0L) {
    return(object$beta)
  }
  all_names <- object$design_info$X_full_colnames
  out <- stats::setNames(rep(NA_real_, length(all_names)), all_names)
  out[names(object$beta)] <- object$beta
  out
}

#' Conditional modes (BLUPs) of the random effects
#'
#' @param object an `"lmmr"` fit.
#' @param condVar logical: attach the conditional variances as attribute
#'   `"postVar"` of each data frame: an array `k x k x levels` when the
#'   grouping factor has one term, and a list of such arrays (one per term)
#'   when it has several, as in lme4.
#' @param drop logical: return single-column data frames as named vectors
#'   (as lme4's `drop`).
#' @param whichel optional character vector of grouping-factor names to
#'   return (as lme4's `whichel`).
#' @param postVar deprecated synonym of `condVar` (as lme4).
#' @param ... not used (a warning names anything passed here).
#' @return A list of class `"ranef.lmmr"` with one data frame per grouping
#'   factor (rows: levels, columns: random-effect coefficients).
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' re <- ranef(fit)
#' head(re$Subject)
#' dim(attr(re$Subject, "postVar"))
#' @export
ranef.lmmr <- function(object, condVar = TRUE, drop = FALSE, whichel = NULL,
                       postVar = FALSE, ...) {
  h_check_dots(..., .fn = "ranef")
  h_check_flag(condVar, "condVar")
  h_check_flag(drop, "drop")
  h_check_flag(postVar, "postVar")
  condVar <- condVar || postVar
  terms <- object$re_terms
  fids <- vapply(terms, function(t) t$factor_id, integer(1))
  out <- list()
  for (f in unique(fids)) {
    idx <- which(fids == f)
    df <- as.data.frame(do.call(cbind, lapply(terms[idx], function(t) t$b)),
                        check.names = FALSE)
    rownames(df) <- terms[[idx[1]]]$levels
    if (condVar) {
      pv <- lapply(terms[idx], function(t) t$cond_var)
      if (length(pv) == 1L) {
        pv <- pv[[1]]
      } else {
        names(pv) <- vapply(terms[idx], function(t) paste(t$cnms, collapse = ":"),
                            character(1))
      }
      attr(df, "postVar") <- pv
    }
    out[[terms[[idx[1]]]$group]] <- df
  }
  if (!is.null(whichel)) {
    unknown <- setdiff(whichel, names(out))
    if (!is.character(whichel) || length(unknown)) {
      h_abort(sprintf("`whichel` must name grouping factors of the model (%s); unknown: %s.",
                      paste(names(out), collapse = ", "),
                      paste(unknown, collapse = ", ")), "argument")
    }
    out <- out[whichel]
  }
  if (drop) {
    # as lme4: single-column data frames become named vectors
    return(lapply(out, function(d) {
      if (ncol(d) != 1L) return(d)
      v <- stats::setNames(d[[1L]], rownames(d))
      pv <- attr(d, "postVar")
      if (!is.null(pv) && !is.list(pv)) attr(v, "postVar") <- drop(pv)
      v
    }))
  }
  structure(out, class = "ranef.lmmr")
}

#' @export
print.ranef.lmmr <- function(x, ...) {
  print(lapply(unclass(x), function(d) {
    attr(d, "postVar") <- NULL
    d
  }), ...)
  invisible(x)
}

#' @export
as.data.frame.ranef.lmmr <- function(x, ...) {
  rows <- list()
  for (g in names(x)) {
    d <- x[[g]]
    pv <- attr(d, "postVar")
    sds <- h_cond_sd(pv, ncol(d), nrow(d))
    for (j in seq_len(ncol(d))) {
      rows[[length(rows) + 1L]] <- data.frame(
        grpvar = g, term = names(d)[j], grp = rownames(d),
        condval = d[[j]], condsd = if (is.null(sds)) NA_real_ else sds[, j],
        stringsAsFactors = FALSE)
    }
  }
  out <- do.call(rbind, rows)
  out$term <- factor(out$term, levels = unique(out$term))
  out$grp <- factor(out$grp, levels = unique(out$grp))
  rownames(out) <- NULL
  out
}

#' Conditional SDs (levels x columns) from a postVar array or list of arrays
#' @noRd
h_cond_sd <- function(pv, k, G) {
  if (is.null(pv)) return(NULL)
  if (!is.list(pv)) pv <- list(pv)
  do.call(cbind, lapply(pv, function(a) {
    kk <- dim(a)[1]
    ii <- seq_len(kk)
    matrix(sqrt(vapply(seq_len(G), function(g) a[cbind(ii, ii, g)], numeric(kk))),
           ncol = kk, byrow = TRUE)
  }))
}

#' Estimated variances, standard deviations and correlations of random effects
#'
#' @param x an `"lmmr"` fit.
#' @param sigma unused (for compatibility with the generic).
#' @param ... unused.
#' @return A list of class `"VarCorr.lmmr"` with one covariance matrix per
#'   random-effect term (attributes `"stddev"` and `"correlation"`) and the
#'   residual standard deviation in attribute `"sc"`. Use
#'   `as.data.frame()` for lme4's long format (`grp`, `var1`, `var2`,
#'   `vcov`, `sdcor`).
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' VarCorr(fit)
#' as.data.frame(VarCorr(fit))
#' @export
VarCorr.lmmr <- function(x, sigma = 1, ...) {
  out <- lapply(x$re_terms, function(t) {
    cov <- t$cov
    sd <- sqrt(diag(cov))
    cor <- cov / outer(sd, sd)
    cor[!is.finite(cor)] <- 0
    diag(cor) <- 1
    attr(cov, "stddev") <- sd
    attr(cov, "correlation") <- cor
    cov
  })
  # lme4 makes repeated group names unique ("Subject", "Subject.1")
  names(out) <- make.unique(vapply(x$re_terms, function(t) t$group, character(1)))
  attr(out, "sc") <- x$sigma
  attr(out, "useSc") <- TRUE
  class(out) <- "VarCorr.lmmr"
  out
}

#' @export
as.data.frame.VarCorr.lmmr <- function(x, row.names = NULL, optional = FALSE,
                                      order = c("cov.last", "lower.tri"), ...) {
  order <- match.arg(order)
  rows <- list()
  for (i in seq_along(x)) {
    cov <- x[[i]]
    cn <- colnames(cov)
    k <- length(cn)
    sd <- attr(cov, "stddev")
    cor <- attr(cov, "correlation")
    var_rows <- data.frame(grp = names(x)[i], var1 = cn, var2 = NA_character_,
                           vcov = diag(cov), sdcor = sd,
                           stringsAsFactors = FALSE)
    cov_rows <- NULL
    if (k > 1) {
      ij <- which(lower.tri(cov), arr.ind = TRUE)
      ij <- ij[order(ij[, 2], ij[, 1]), , drop = FALSE]
      cov_rows <- data.frame(grp = names(x)[i], var1 = cn[ij[, 2]],
                             var2 = cn[ij[, 1]], vcov = cov[ij],
                             sdcor = cor[ij], stringsAsFactors = FALSE)
    }
    rows[[i]] <- rbind(var_rows, cov_rows)
    if (order == "lower.tri" && k > 1) {
      # lme4's lower.tri order: each column of the lower triangle in turn
      # (variance, then the covariances below it)
      by_col <- function(m) m[order(m[, 2], m[, 1]), , drop = FALSE]
      lt <- by_col(which(lower.tri(cov), arr.ind = TRUE))
      all_ij <- by_col(which(lower.tri(cov, diag = TRUE), arr.ind = TRUE))
      key <- ifelse(all_ij[, 1] == all_ij[, 2], all_ij[, 1],
                    k + match(paste(all_ij[, 1], all_ij[, 2]), paste(lt[, 1], lt[, 2])))
      rows[[i]] <- rows[[i]][key, , drop = FALSE]
    }
  }
  sc <- attr(x, "sc")
  rows[[length(rows) + 1L]] <- data.frame(grp = "Residual", var1 = NA_character_,
                                          var2 = NA_character_, vcov = sc^2,
                                          sdcor = sc, stringsAsFactors = FALSE)
  out <- do.call(rbind, rows)
  rownames(out) <- NULL
  out
}

#' @export
print.VarCorr.lmmr <- function(x, digits = max(3, getOption("digits") - 2),
                              comp = "Std.Dev.", ...) {
  print(h_format_varcorr(x, digits = digits, comp = comp), quote = FALSE,
        right = FALSE)
  invisible(x)
}

#' Coefficients per level of each grouping factor (fixed + random effects)
#'
#' @param object an `"lmmr"` fit.
#' @param ... unused.
#' @return A list with one data frame per grouping factor: for every level,
#'   the fixed effects plus that level's random effects.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' head(coef(fit)$Subject)
#' @export
coef.lmmr <- function(object, ...) {
  h_check_dots(..., .fn = "coef")
  re <- ranef(object, condVar = FALSE)
  fe <- object$beta
  out <- lapply(re, function(d) {
    res <- as.data.frame(matrix(fe, nrow = nrow(d), ncol = length(fe),
                                byrow = TRUE, dimnames = list(rownames(d), names(fe))),
                         check.names = FALSE)
    for (nm in names(d)) {
      if (nm %in% names(res)) res[[nm]] <- res[[nm]] + d[[nm]]
      else res[[nm]] <- d[[nm]]
    }
    res
  })
  structure(out, class = "coef.lmmr")
}

#' @export
print.coef.lmmr <- function(x, ...) {
  print(unclass(x), ...)
  invisible(x)
}

#' @export
fitted.lmmr <- function(object, ...) {
  h_check_dots(..., .fn = "fitted")
  out <- stats::setNames(object$fitted, rownames(object$frame))
  stats::napredict(object$na_action, out)
}

#' @export
logLik.lmmr <- function(object, REML = NULL, ...) {
  h_check_dots(..., .fn = "logLik")
  reml <- if (is.null(REML)) object$REML else isTRUE(REML)
  val <- if (reml) {
    if (!object$REML) {
      h_abort("The REML log-likelihood of an ML fit is not available; refit with REML = TRUE.",
              "argument")
    }
    -object$objective / 2
  } else {
    -h_ml_deviance(object) / 2
  }
  structure(val, df = length(object$beta) + length(object$theta) + 1L,
            nobs = h_n_obs(object), nall = object$n, class = "logLik")
}

#' sum(log(w)) of the prior weights of the observations that contribute
#' (positive weight; from the database for a fit from aggregates, whose rows
#' are pseudo-rows with unit weights)
#' @noRd
h_log_w_sum <- function(object) {
  if (!is.null(object$db)) object$db$log_w_sum else h_sum_log_weights(object$weights)
}

#' ML deviance at the stored estimates (for a REML fit: at the REML estimates)
#' @noRd
h_ml_deviance <- function(object) {
  if (!object$REML) return(object$objective)
  n <- h_n_obs(object)
  object$ldl2 - h_log_w_sum(object) +
    n * (1 + log(2 * pi * object$pwrss / n))
}

#' @export
deviance.lmmr <- function(object, REML = NULL, ...) {
  h_check_dots(..., .fn = "deviance")
  if (is.null(REML)) REML <- object$REML
  if (isTRUE(REML)) return(h_remlcrit(object))
  h_ml_deviance(object)
}

#' @noRd
h_remlcrit <- function(object) {
  if (!object$REML) {
    h_abort("The REML criterion of an ML fit is not available; refit with REML = TRUE.",
            "argument")
  }
  object$objective
}

#' @export
nobs.lmmr <- function(object, use.fallback = TRUE, ...) {
  h_check_dots(..., .fn = "nobs")
  object$n
}

#' Number of observations that contribute to the criterion: those with a
#' positive weight (a zero weight drops the observation's contribution); for
#' a fit from database aggregates the data's number of such rows (the
#' database query keeps only positive weights). Fits made before zero
#' weights were allowed have no `n_obs` and no zero weights.
#' @noRd
h_n_obs <- function(object) {
  if (is.null(object$n_obs)) object$n else object$n_obs
}

#' `sum(log(w))` over the observations that contribute (positive weight)
#' @noRd
h_sum_log_weights <- function(w) sum(log(w[w > 0]))

#' @export
sigma.lmmr <- function(object, ...) {
  h_check_dots(..., .fn = "sigma")
  object$sigma
}

#' Covariance matrix of the fixed effects
#'
#' The model-based covariance (the default), or a cluster-robust (sandwich)
#' one with `type`: the conventions of `clubSandwich::vcovCR()` for lmer
#' fits, see Details of [summary.lmmr()].
#'
#' @param object an `"lmmr"` fit.
#' @param type `NULL` (default: model-based), or `"CR0"`, `"CR1"`
#'   (`J / (J - 1)` scaling), `"CR1p"`, `"CR1S"`, `"CR2"` (Bell-McCaffrey
#'   bias-reduced) or `"CR3"` (jackknife-like).
#' @param cluster for `type`: `NULL` (the grouping factor with the fewest
#'   levels), the name of a grouping factor or model-frame column, or a
#'   vector with one value per observation. Every grouping factor of the
#'   model must be nested within the clusters.
#' @param ... unused.
#' @return A p x p matrix.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' vcov(fit)
#' vcov(fit, type = "CR2")
#' @export
vcov.lmmr <- function(object, type = NULL, cluster = NULL, ...) {
  if (is.null(type) && is.null(cluster)) return(object$vcov)
  h_vcov_cr(object, if (is.null(type)) "CR2" else type, cluster)$vcov
}

#' @export
formula.lmmr <- function(x, ...) x$formula

#' @export
model.frame.lmmr <- function(formula, ...) formula$frame

#' Design matrices of a linear mixed model
#'
#' @param object an `"lmmr"` fit.
#' @param type `"fixed"` for the fixed-effects design X, `"random"` for the
#'   (dense) random-effects design Z, columns ordered term by term and, within
#'   a term, level by level.
#' @param ... unused.
#' @return A numeric matrix.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' head(model.matrix(fit))
#' dim(model.matrix(fit, type = "random"))
#' @export
model.matrix.lmmr <- function(object, type = c("fixed", "random"), ...) {
  h_check_dots(..., .fn = "model.matrix")
  type <- match.arg(type)
  if (type == "fixed") return(object$X)
  blocks <- lapply(object$re_terms, function(t) {
    z <- matrix(0, object$n, t$n_levels * t$k)
    for (c in seq_len(t$k)) {
      z[cbind(seq_len(object$n), t$codes * t$k + c)] <- t$Z[, c]
    }
    colnames(z) <- paste(rep(t$levels, each = t$k), t$cnms, sep = ":")
    z
  })
  do.call(cbind, blocks)
}

#' Confidence intervals for fixed effects and variance components
#'
#' @param object an `"lmmr"` fit.
#' @param parm which parameters: for `method = "Wald"` names or indices of
#'   fixed effects (default all); for `method = "profile"` the variance
#'   components named as lme4 does (`".sig01"`, `".sig02"`, ...,
#'   `".sigma"`: per random-effect term its standard deviations and
#'   correlations, then the residual standard deviation; default all). As in
#'   lme4, `"beta_"` means all fixed effects and `"theta_"` all variance
#'   components (with `method = "Wald"` their limits are `NA`, as lme4).
#' @param level confidence level.
#' @param method `"Wald"` (default): fixed effects, estimate +/- quantile x
#'   standard error. `"profile"`: likelihood-ratio (profile) intervals for
#'   the standard deviations, correlations and residual standard deviation,
#'   as `confint(lme4_fit, method = "profile", oldNames = TRUE)`; as in lme4
#'   the profile is of the ML deviance, also for REML fits (pass
#'   `REML = TRUE` to profile the REML criterion instead). A standard
#'   deviation whose profile stays below the cutoff at zero gets a lower
#'   limit of 0. `"boot"`: parametric bootstrap intervals for the variance
#'   parameters (named as for `"profile"`) and the fixed effects, as
#'   `confint(lme4_fit, method = "boot")`, from [bootstrap_lmm()] (refits
#'   with the fit's REML/ML setting).
#' @param ddf for Wald intervals: `"none"` (default) uses normal quantiles, as
#'   `confint(lme4_fit, method = "Wald")`; `"Satterthwaite"` or
#'   `"Kenward-Roger"` use t quantiles with those degrees of freedom (and,
#'   for Kenward-Roger, the adjusted standard errors).
#' @param ... for `method = "profile"`: `REML` (see above). For
#'   `method = "boot"`: `nsim` (default 500, as lme4), `type` (or lme4's
#'   `boot.type`): `"perc"` (default), `"basic"` or `"norm"` (see
#'   [confint.lmmr_boot()]), and `seed`, `use.u`, `ncores`, `progress`, `FUN`
#'   passed to [bootstrap_lmm()].
#' @return A matrix with one row per parameter and columns for the lower and
#'   upper limits.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' confint(fit)
#' confint(fit, ddf = "Satterthwaite")
#' confint(fit, method = "profile")
#' confint(fit, method = "boot", nsim = 50, seed = 1)
#' @export
confint.lmmr <- function(object, parm, level = 0.95, method = c("Wald", "profile", "boot"),
                        ddf = c("none", "Satterthwaite", "Kenward-Roger"), ...) {
  method <- h_match_confint_method(method)
  if (method == "boot") {
    if (!missing(ddf)) h_check_dots(ddf = ddf, .fn = "confint(method = \"boot\")")
    return(h_confint_boot(object, parm = if (missing(parm)) NULL else parm,
                          level = level, ...))
  }
  dots <- list(...)
  reml <- isTRUE(dots$REML)
  dots$REML <- NULL
  if (length(dots)) do.call(h_check_dots, c(dots, .fn = "confint"))
  # lme4's parameter groups: "beta_" (all fixed effects), "theta_" (all
  # variance components; NA limits for Wald intervals, as lme4)
  if (!missing(parm) && identical(parm, "beta_")) {
    if (method == "profile") {
      h_abort("Profile intervals are available for the variance components only (parm = \"theta_\"); use method = \"Wald\" for the fixed effects.",
              "argument")
    }
    parm <- names(object$beta)
  }
  if (!missing(parm) && identical(parm, "theta_")) {
    if (method == "Wald") return(h_confint_theta_na(object, level))
    parm <- NULL
  }
  if (method == "profile") {
    h_check_number(level, "level", lower = 0)
    if (level >= 1) h_abort("`level` must be between 0 and 1.", "argument")
    out <- h_confint_profile(object, parm = if (missing(parm) || is.null(parm)) NULL else parm,
                             level = level, REML = reml)
    attr(out, "estimates") <- NULL
    return(out)
  }
  ddf <- h_match_ddf(ddf)
  h_check_number(level, "level", lower = 0)
  if (level >= 1) h_abort("`level` must be between 0 and 1.", "argument")
  beta <- object$beta
  if (missing(parm)) parm <- names(beta)
  if (is.numeric(parm)) parm <- names(beta)[parm]
  bad <- setdiff(parm, names(beta))
  if (length(bad) || anyNA(parm)) {
    h_abort(sprintf("Unknown fixed effect(s) in `parm`: %s.",
                    paste(bad, collapse = ", ")), "argument")
  }
  a <- (1 - level) / 2
  if (ddf == "none") {
    se <- stats::setNames(sqrt(diag(object$vcov)), names(beta))
    q <- stats::setNames(rep(stats::qnorm(1 - a), length(beta)), names(beta))
  } else {
    inf <- h_coef_ddf(object, ddf)
    se <- stats::setNames(inf$se, names(beta))
    q <- stats::setNames(stats::qt(1 - a, inf$df), names(beta))
  }
  out <- cbind(beta[parm] - q[parm] * se[parm], beta[parm] + q[parm] * se[parm])
  colnames(out) <- sprintf("%s %%", format(100 * c(a, 1 - a), trim = TRUE,
                                           scientific = FALSE, digits = 3))
  rownames(out) <- parm
  out
}

#' Update and refit a linear mixed model
#'
#' Changes the formula or other arguments of the call that created the fit
#' and refits. As lme4's method, the new call is evaluated first in the
#' environment of the model formula (so fits made inside a function, with
#' data local to that function, can be updated) and then in the caller's
#' frame; but an argument of `update()` given as a name (`data = d`) is
#' always the caller's object of that name.
#'
#' @param object an `"lmmr"` fit.
#' @param formula. changes to the formula, as in [stats::update.formula()]
#'   (e.g. `. ~ . + x`, `. ~ . - (0 + Days | Subject)`).
#' @param ... other arguments of [lmm()] to change (e.g. `REML = FALSE`,
#'   `data = other_data`).
#' @param evaluate if `FALSE`, return the updated call without evaluating it.
#' @return The refitted `"lmmr"` object (or the call).
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' fit_ml <- update(fit, REML = FALSE)
#' fit_ri <- update(fit, . ~ . - (Days | Subject) + (1 | Subject))
#' formula(fit_ri)
#' @export
update.lmmr <- function(object, formula., ..., evaluate = TRUE) {
  call <- object$call
  if (is.null(call)) h_abort("The fit has no stored call to update.", "argument")
  extras <- match.call(expand.dots = FALSE)$...
  if (!missing(formula.)) {
    call$formula <- stats::update.formula(formula(object), formula.)
  }
  for (nm in names(extras)) call[[nm]] <- extras[[nm]]
  if (!evaluate) return(call)
  fml <- if (inherits(object$formula_input, "formula")) object$formula_input else formula(object)
  env <- environment(fml)
  caller <- parent.frame()
  if (is.null(env)) return(eval(call, caller))
  # a name given to update() (`data = d`) means the caller's object, even
  # when the formula's environment has another object of that name (e.g.
  # performance's bootstrap calls update(fit, data = d) with resampled d)
  syms <- Filter(is.name, as.list(extras))
  if (length(syms)) {
    env2 <- new.env(parent = env)
    for (s in syms) {
      val <- tryCatch(list(eval(s, caller)), error = function(e) NULL)
      if (!is.null(val)) assign(as.character(s), val[[1]], envir = env2)
    }
    env <- env2
  }
  tryCatch(eval(call, env), error = function(e) eval(call, caller))
}

#' Wald "intervals" for the variance components: NA, as lme4
#' @noRd
h_confint_theta_na <- function(object, level) {
  h_check_number(level, "level", lower = 0)
  if (level >= 1) h_abort("`level` must be between 0 and 1.", "argument")
  np <- sum(vapply(object$re_terms, function(t) t$k * (t$k + 1L) / 2L, numeric(1)))
  a <- (1 - level) / 2
  matrix(NA_real_, np + 1L, 2L,
         dimnames = list(c(sprintf(".sig%02d", seq_len(np)), ".sigma"),
                         sprintf("%s %%", format(100 * c(a, 1 - a), trim = TRUE,
                                                 scientific = FALSE, digits = 3))))
}

#' @noRd
h_match_confint_method <- function(method) {
  if (identical(method, c("Wald", "profile", "boot"))) return("Wald")
  if (!is.character(method) || length(method) != 1L || is.na(method) ||
      !tolower(method) %in% c("wald", "profile", "boot")) {
    h_abort(sprintf("`method` must be \"Wald\", \"profile\" or \"boot\"; got %s.",
                    paste(deparse(method), collapse = " ")), "argument")
  }
  c(wald = "Wald", profile = "profile", boot = "boot")[[tolower(method)]]
}
