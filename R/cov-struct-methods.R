# Methods for fits with a residual covariance structure (class
# c("lmmr_rcov", "lmmr")): printing, VarCorr, likelihood, residuals,
# prediction, the covariance matrices and the comparison of structures.

#' Covariance and correlation matrices of a residual structure
#'
#' @param object an `"lmmr"` fit with a residual covariance structure (see
#'   [cov_struct]).
#' @param correlation logical: return correlation matrices instead of
#'   covariances.
#' @return A list with one matrix over the visit levels per group (a single
#'   element `"(all)"` for an ungrouped structure). For `sp_exp()` each
#'   element is a vector `c(variance, rho)` (correlation `rho^distance`).
#' @examples
#' set.seed(1)
#' d <- data.frame(id = factor(rep(1:30, each = 3)),
#'                 visit = factor(rep(c("V1", "V2", "V3"), 30)))
#' d$y <- rnorm(90) + rep(rnorm(30), each = 3)
#' fit <- lmm(y ~ visit + cs(visit | id), data = d)
#' cov_matrix(fit)
#' cov_matrix(fit, correlation = TRUE)
#' @export
cov_matrix <- function(object, correlation = FALSE) {
  h_check_rcov(object)
  h_check_flag(correlation, "correlation")
  covs <- object$cov_struct$covs
  if (!correlation || object$cov_struct$type == "sp_exp") return(covs)
  lapply(covs, stats::cov2cor)
}

#' @noRd
h_check_rcov <- function(x, name = "object") {
  if (!inherits(x, "lmmr_rcov")) {
    h_abort(sprintf("`%s` must be a model fitted by lmm() with a residual covariance structure such as us(visit | subject).", name),
            "argument")
  }
  invisible(x)
}

#' @export
VarCorr.lmmr_rcov <- function(x, sigma = 1, ...) {
  h_check_dots(..., .fn = "VarCorr")
  re <- lapply(seq_along(x$re_cov), function(t) {
    cov <- x$re_cov[[t]]
    sd <- sqrt(pmax(diag(cov), 0))
    cor <- cov / outer(sd, sd)
    cor[!is.finite(cor)] <- 0
    diag(cor) <- 1
    attr(cov, "stddev") <- sd
    attr(cov, "correlation") <- cor
    cov
  })
  names(re) <- make.unique(vapply(x$re_terms_rcov, `[[`, "", "group"))
  structure(re, residual = x$cov_struct, class = "VarCorr.lmmr_rcov")
}

#' @export
print.VarCorr.lmmr_rcov <- function(x, digits = max(3, getOption("digits") - 3), ...) {
  if (length(x)) {
    cat("Random effects:\n")
    for (nm in names(x)) {
      cat(" Groups:", nm, "\n")
      print(signif(unclass(x[[nm]])[, , drop = FALSE] + 0, digits))
    }
  }
  h_print_cov_struct(attr(x, "residual"), digits)
  invisible(x)
}

#' @noRd
h_print_cov_struct <- function(cs, digits) {
  cat(sprintf("Residual covariance: %s\n", h_deparse(cs$call)))
  for (g in seq_along(cs$covs)) {
    if (cs$grouped) cat(sprintf(" Group %s:\n", cs$group_levels[g]))
    par <- cs$natural[[g]]
    cat(" Parameters (SAS parametrisation):\n")
    print(signif(par, digits))
    if (cs$type != "sp_exp") {
      V <- cs$covs[[g]]
      cat(" Covariance over visits:\n")
      print(signif(V, digits))
      cat(" Correlation:\n")
      print(round(stats::cov2cor(V), 3))
    }
  }
  invisible(NULL)
}

#' @export
print.lmmr_rcov <- function(x, digits = max(3, getOption("digits") - 3), ...) {
  h_fit_header(x)
  cat(sprintf("%s criterion (-2 log-likelihood) at convergence: %s\n",
              if (x$REML) "REML" else "ML", format(x$objective, nsmall = 3, digits = 7)))
  print(VarCorr(x), digits = digits)
  cat(sprintf("Number of obs: %d, subjects: %d\n", x$n, nlevels(x$layout$subject)))
  cat("Fixed Effects:\n")
  print(signif(x$beta, digits))
  h_fit_footer(x)
  invisible(x)
}

#' @export
summary.lmmr_rcov <- function(object, ddf = c("Satterthwaite", "Kenward-Roger", "none"), ...) {
  h_check_dots(..., .fn = "summary")
  choices <- c("Satterthwaite", "Kenward-Roger", "Kenward-Roger-Linear", "none")
  if (!is.character(ddf) || !(ddf[1] %in% choices)) {
    h_abort(sprintf("`ddf` must be one of %s.", paste0('"', choices, '"', collapse = ", ")), "ddf")
  }
  ddf <- ddf[1]
  beta <- object$beta
  se <- sqrt(diag(object$vcov))
  coefs <- cbind(Estimate = beta, `Std. Error` = se, `t value` = beta / se)
  if (ddf != "none") {
    p <- length(beta)
    if (ddf == "Satterthwaite") {
      sat <- h_rcov_inference_parts(object, "satterthwaite")$satterthwaite
      df <- vapply(seq_len(p), function(j) h_sat_df1(sat, replace(numeric(p), j, 1)), 0)
    } else {
      kr <- h_rcov_inference_parts(object, "kenward-roger",
                                   linear = ddf == "Kenward-Roger-Linear")$kenward_roger
      df <- vapply(seq_len(p), function(j) {
        h_kr_ddf(kr, matrix(replace(numeric(p), j, 1), nrow = 1))$ddf
      }, 0)
      se <- sqrt(diag(kr$phi_adj))
    }
    coefs <- cbind(Estimate = beta, `Std. Error` = se, df = df, `t value` = beta / se,
                   `Pr(>|t|)` = 2 * stats::pt(abs(beta / se), df, lower.tail = FALSE))
  }
  structure(list(object = object, ddf = ddf, coefficients = coefs,
                 varcor = VarCorr(object), vcov = object$vcov),
            class = c("summary.lmmr_rcov", "summary.lmmr"))
}

#' @export
print.summary.lmmr_rcov <- function(x, digits = max(3, getOption("digits") - 3), ...) {
  obj <- x$object
  h_fit_header(obj)
  ll <- logLik(obj)
  tab <- c(`-2 logLik` = -2 * as.numeric(ll), AIC = stats::AIC(obj), BIC = stats::BIC(obj),
           npar = attr(ll, "df"))
  cat(sprintf("\n%s fit:\n", if (obj$REML) "REML" else "ML"))
  print(round(tab, 4))
  cat("\n")
  print(x$varcor, digits = digits)
  cat(sprintf("Number of obs: %d, subjects: %d\n", obj$n, nlevels(obj$layout$subject)))
  cat("\nFixed effects:\n")
  if (x$ddf != "none") {
    cat(sprintf("(t tests use %s's method for the degrees of freedom)\n", x$ddf))
  }
  stats::printCoefmat(x$coefficients, digits = digits,
                      has.Pvalue = x$ddf != "none", P.values = x$ddf != "none")
  h_fit_footer(obj)
  invisible(x)
}

#' @export
logLik.lmmr_rcov <- function(object, REML = NULL, ...) {
  h_check_dots(..., .fn = "logLik")
  if (!is.null(REML) && !identical(isTRUE(REML), isTRUE(object$REML))) {
    h_abort(sprintf("This fit is a%s fit; refit it with REML = %s for that log-likelihood (update(fit, REML = %s)).",
                    if (object$REML) " REML" else "n ML", isTRUE(REML), isTRUE(REML)),
            "argument")
  }
  structure(-object$objective / 2, df = length(object$beta) + object$cov_struct$n_par,
            nobs = object$n, nall = object$n, class = "logLik")
}

#' @export
deviance.lmmr_rcov <- function(object, REML = NULL, ...) {
  h_check_dots(..., .fn = "deviance")
  -2 * as.numeric(logLik(object, REML = REML))
}

#' Marginal covariance blocks (V, rows in sorted order, number of subjects
#' sharing it) of a residual-structure fit
#' @noRd
h_rcov_V_blocks <- function(object) {
  bl <- h_rcov_blocks(object, derivs = FALSE)$blocks
  lapply(bl, function(b) list(V = b$V, rows = b$rows, N = b$N, nb = b$nb))
}

#' @export
residuals.lmmr_rcov <- function(object, type = c("response", "pearson", "normalized"),
                                scaled = FALSE, level = 0, ...) {
  h_check_dots(..., .fn = "residuals")
  type <- match.arg(type)
  if (!identical(level, 0) && !identical(level, 1)) {
    h_abort("`level` must be 0 (marginal: y - X beta) or 1 (conditional on the random effects).",
            "argument")
  }
  r <- object$y - object$fitted
  if (level == 1 && !is.null(object$design_re)) {
    if (type != "response") {
      h_abort("Conditional (level = 1) residuals are available as type = \"response\" only.",
              "argument")
    }
    bl <- h_rcov_blups(object)
    for (t in seq_along(bl)) {
      term <- object$design_re$terms[[t]]
      r <- r - rowSums(term$Z * as.matrix(bl[[t]])[as.integer(term$codes) + 1L, , drop = FALSE])
    }
  }
  if (type != "response") {
    o <- object$layout$order
    rs <- r[o]
    out <- numeric(length(rs))
    for (b in h_rcov_V_blocks(object)) {
      R <- matrix(rs[b$rows], b$nb, b$N)
      R <- if (type == "pearson") R / sqrt(diag(b$V)) else
        backsolve(chol(b$V), R, transpose = TRUE)
      out[b$rows] <- as.vector(R)
    }
    r[o] <- out
  }
  r <- stats::setNames(r, rownames(object$frame))
  stats::naresid(object$na_action, r)
}

#' @export
predict.lmmr_rcov <- function(object, newdata = NULL, ...) {
  h_check_dots(..., .fn = "predict")
  if (is.null(newdata)) return(stats::fitted(object))
  nx <- h_newdata_X(object$design_info, newdata)
  stats::setNames(drop(nx$X %*% object$beta) + nx$offset, rownames(newdata))
}

#' @export
ranef.lmmr_rcov <- function(object, condVar = FALSE, ...) {
  h_check_dots(..., .fn = "ranef")
  terms <- if (is.null(object$design_re)) list() else object$design_re$terms
  if (!length(terms)) {
    h_abort("This fit has no random effects (only a residual covariance structure).",
            "not_implemented")
  }
  if (!isFALSE(condVar)) {
    h_warn("Conditional variances are not available yet for fits with a residual covariance structure; returning the BLUPs only.",
           "not_implemented")
  }
  h_rcov_blups(object)
}

#' BLUPs b = G Z' V^-1 (y - X beta) of the random effects of a
#' residual-structure fit, one data frame per term (levels x columns)
#' @noRd
h_rcov_blups <- function(object) {
  terms <- object$design_re$terms
  o <- object$layout$order
  r <- (object$y - object$fitted)[o]
  e <- numeric(length(r))
  for (b in h_rcov_V_blocks(object)) {
    e[b$rows] <- as.vector(solve(b$V, matrix(r[b$rows], b$nb, b$N)))
  }
  out <- lapply(seq_along(terms), function(t) {
    Z <- terms[[t]]$Z[o, , drop = FALSE]
    cd <- as.integer(terms[[t]]$codes)[o] + 1L
    s <- rowsum(Z * e, cd, reorder = TRUE)
    B <- matrix(0, terms[[t]]$n_levels, ncol(Z))
    B[as.integer(rownames(s)), ] <- s
    B <- B %*% object$re_cov[[t]]
    df <- as.data.frame(B)
    names(df) <- terms[[t]]$cnms
    rownames(df) <- levels(terms[[t]]$factor)
    df
  })
  names(out) <- make.unique(vapply(terms, `[[`, "", "group"))
  out
}

#' @export
simulate.lmmr_rcov <- function(object, nsim = 1, seed = NULL, ...) {
  h_check_dots(..., .fn = "simulate")
  if (!is.null(seed)) set.seed(seed)
  o <- object$layout$order
  mu <- object$fitted[o]
  out <- matrix(0, object$n, nsim)
  for (b in h_rcov_V_blocks(object)) {
    L <- t(chol(b$V))
    for (s in seq_len(nsim)) {
      out[b$rows, s] <- mu[b$rows] + as.vector(L %*% matrix(stats::rnorm(b$nb * b$N), b$nb, b$N))
    }
  }
  res <- matrix(0, object$n, nsim)
  res[o, ] <- out
  res <- as.data.frame(res)
  names(res) <- paste0("sim_", seq_len(nsim))
  res
}

#' Compare residual covariance structures by AIC and BIC
#'
#' Refits a model with each of several residual covariance structures
#' (same visit, subject and group) by maximum likelihood (the default, as
#' the primer's lesson does; with the same fixed effects REML may be used
#' too) and tabulates the fit criteria, smallest AIC first.
#'
#' @param object an `"lmmr"` fit with a residual covariance structure.
#' @param structures character vector of structure names, from `"us"`,
#'   `"cs"`, `"csh"`, `"ar1"`, `"ar1h"`, `"toep"`, `"toeph"`, `"adh"`.
#' @param REML logical: compare REML fits instead of ML fits.
#' @return A data frame with columns `structure`, `npar` (covariance
#'   parameters plus fixed effects), `logLik`, `AIC`, `BIC`, `converged`;
#'   the fits are in attribute `"fits"`.
#' @examples
#' set.seed(1)
#' d <- data.frame(id = factor(rep(1:30, each = 3)),
#'                 visit = factor(rep(c("V1", "V2", "V3"), 30)))
#' d$y <- rnorm(90) + rep(rnorm(30), each = 3)
#' fit <- lmm(y ~ visit + cs(visit | id), data = d)
#' compare_cov_structures(fit, c("cs", "ar1", "us"))
#' @export
compare_cov_structures <- function(object, structures = c("cs", "ar1", "toep", "us"),
                                   REML = FALSE) {
  h_check_rcov(object)
  h_check_flag(REML, "REML")
  bad <- setdiff(structures, setdiff(h_cov_types(), "sp_exp"))
  if (!is.character(structures) || !length(structures) || length(bad)) {
    h_abort(sprintf("`structures` must name structures among %s.",
                    paste(setdiff(h_cov_types(), "sp_exp"), collapse = ", ")), "argument")
  }
  if (object$cov_struct$type == "sp_exp") {
    h_abort("compare_cov_structures() needs a fit whose structure is indexed by a visit factor.",
            "argument")
  }
  fml <- object$formula_input %||% object$formula
  ct <- h_find_cov_term(fml)
  fits <- lapply(structures, function(s) {
    term <- ct$call
    term[[1L]] <- as.name(s)
    f2 <- h_set_rhs(fml, h_replace_cov_term(h_rhs(fml), term))
    h_refit_call(object, list(formula = f2, REML = REML))
  })
  ll <- vapply(fits, function(f) as.numeric(logLik(f)), 0)
  np <- vapply(fits, function(f) attr(logLik(f), "df"), 0)
  tab <- data.frame(structure = structures, npar = np, logLik = ll,
                    AIC = vapply(fits, stats::AIC, 0), BIC = vapply(fits, stats::BIC, 0),
                    converged = vapply(fits, function(f) f$optinfo$converged, TRUE),
                    stringsAsFactors = FALSE)
  ord <- order(tab$AIC)
  tab <- tab[ord, ]
  rownames(tab) <- NULL
  structure(tab, fits = stats::setNames(fits[ord], structures[ord]))
}

#' Replace the residual-structure term of an expression
#' @noRd
h_replace_cov_term <- function(x, term) {
  if (h_is_cov_term(x)) return(term)
  if (!is.call(x)) return(x)
  if (h_is_call_to(x, "+") || h_is_call_to(x, "-") || h_is_call_to(x, "(")) {
    for (i in seq_along(x)[-1L]) x[[i]] <- h_replace_cov_term(x[[i]], term)
  }
  x
}

#' Error for a method not (yet) available for residual-structure fits
#' @noRd
h_rcov_unsupported <- function(what) {
  h_abort(sprintf("%s is not available yet for fits with a residual covariance structure.", what),
          "not_implemented")
}

#' @noRd
h_check_not_rcov <- function(x, what) {
  if (inherits(x, "lmmr_rcov")) h_rcov_unsupported(what)
  invisible(x)
}

#' Confidence intervals for a fit with a residual covariance structure
#'
#' Wald intervals: the fixed effects with `vcov(fit)`, the covariance
#' parameters (SAS's parametrisation, the names of `VarCorr(fit)`'s
#' structure parameters and of the random-effect covariances) with their
#' asymptotic covariance `2 H^-1` from the observed information `H` of the
#' REML (ML) criterion (the matrix Satterthwaite's method uses), as SAS's
#' Wald intervals. Variance intervals from this approximation can extend
#' below zero.
#' @param object a fit with a residual covariance structure.
#' @param parm parameters: names or indices, `"beta_"` (fixed effects) or
#'   `"theta_"` (covariance parameters); default all (covariance
#'   parameters first, as lme4).
#' @param level confidence level.
#' @param method `"Wald"`, or `"profile"` (covariance parameters only):
#'   the profile likelihood interval of the REML (ML) criterion, refitting
#'   the other covariance parameters at each value (on the fit's kept Rust
#'   model). Available for the parameters that are one parameter of the
#'   structure's kernel (variances and correlations of `ar1`, `ar1h`, `adh`,
#'   `csh`, `sp_exp`, the variances and lag-1 correlation of `toeph`, the
#'   common variance of `toep`, a random intercept's variance); the others
#'   (covariances of `us`/`toep`, `cs`, random-effect covariance matrices)
#'   give a classed `lmmr_error_not_implemented`. Intervals are mapped from
#'   the kernel's scale, so they respect the parameter's range.
#' @param ... unused.
#' @return A matrix with one row per parameter and the lower and upper
#'   limits.
#' @examples
#' set.seed(1)
#' d <- data.frame(id = factor(rep(1:40, each = 4)),
#'                 visit = factor(rep(c("V1", "V2", "V3", "V4"), 40)))
#' d$y <- rnorm(160) + rep(rnorm(40), each = 4)
#' fit <- lmm(y ~ visit + ar1(visit | id), data = d)
#' confint(fit)
#' confint(fit, "theta_")
#' confint(fit, "rho", method = "profile")
#' @export
confint.lmmr_rcov <- function(object, parm, level = 0.95, method = c("Wald", "profile"), ...) {
  h_check_dots(..., .fn = "confint")
  h_check_number(level, "level", lower = 0)
  if (!is.character(method) || !(method[1] %in% c("Wald", "profile"))) {
    h_abort("`method` must be \"Wald\" for fits with a residual covariance structure.", "argument")
  }
  z <- stats::qnorm(1 - (1 - level) / 2)
  pct <- paste(format(100 * c((1 - level) / 2, 1 - (1 - level) / 2), trim = TRUE), "%")
  if (method[1] == "profile") {
    phi <- h_rcov_phi(object)
    idx <- if (missing(parm) || identical(parm, "theta_")) seq_along(phi) else
      if (is.character(parm)) match(parm, names(phi)) else parm
    if (anyNA(idx) || any(idx < 1 | idx > length(phi))) {
      h_abort("Profile intervals are for the covariance parameters: `parm` must name them (see confint(fit, \"theta_\")) or be \"theta_\".", "argument")
    }
    coords <- h_rcov_coordinates(object)
    if (any(vapply(coords[idx], is.null, TRUE))) {
      bad <- names(phi)[idx][vapply(coords[idx], is.null, TRUE)]
      h_abort(sprintf("Profile intervals are not available yet for %s: %s a function of several of the kernel's parameters, so profiling %s needs constrained refits. Profile intervals exist for the variances and correlations that are one parameter of the structure (e.g. ar1, ar1h, adh, csh, sp_exp, the first correlation of toeph, a random intercept's variance); use method = \"Wald\" for the others.",
                      paste(sprintf("'%s'", bad), collapse = ", "),
                      if (length(bad) > 1) "each is" else "it is", if (length(bad) > 1) "them" else "it"),
              "not_implemented")
    }
    ci <- t(vapply(idx, function(i) h_rcov_profile_one(object, coords[[i]], level), numeric(2)))
    dimnames(ci) <- list(names(phi)[idx], pct)
    return(ci)
  }
  fixed <- function() {
    se <- sqrt(diag(object$vcov))
    ci <- cbind(object$beta - z * se, object$beta + z * se)
    dimnames(ci) <- list(names(object$beta), pct)
    ci
  }
  covpar <- function() {
    phi <- h_rcov_phi(object)
    W <- h_rcov_inference_parts(object, "satterthwaite")$satterthwaite$vcov_varpar
    se <- sqrt(pmax(diag(W), 0))
    ci <- cbind(phi - z * se, phi + z * se)
    dimnames(ci) <- list(names(phi), pct)
    ci
  }
  if (missing(parm)) return(rbind(covpar(), fixed()))
  if (identical(parm, "beta_")) return(fixed())
  if (identical(parm, "theta_")) return(covpar())
  if (is.character(parm) && all(parm %in% names(object$beta))) return(fixed()[parm, , drop = FALSE])
  all <- rbind(covpar(), fixed())
  if (is.character(parm) && !all(parm %in% rownames(all))) {
    h_abort(sprintf("Unknown parameter%s %s; use names from confint(fit), \"beta_\" or \"theta_\".",
                    if (sum(!parm %in% rownames(all)) > 1) "s" else "",
                    paste(sprintf("'%s'", setdiff(parm, rownames(all))), collapse = ", ")), "argument")
  }
  all[parm, , drop = FALSE]
}

#' @export
coef.lmmr_rcov <- function(object, ...) h_rcov_unsupported("coef() (per-level coefficients)")

#' Variance components of a residual-structure fit, averaged over the
#' observations (Nakagawa, Johnson & Schielzeth 2017): the variance of the
#' fixed-effect predictor, each random-effect term's mean of
#' `diag(Z_t G_t Z_t')` and the mean residual variance `diag(R_i)`.
#' @noRd
h_rcov_variance_components <- function(x) {
  lay <- x$layout
  cs <- x$cov_struct
  eta <- drop(x$X %*% x$beta)
  v_fixed <- if (length(eta) > 1L) stats::var(eta) else 0 # as performance (n - 1)
  terms <- if (is.null(x$design_re)) list() else x$design_re$terms
  by_group <- vapply(seq_along(terms), function(t) {
    Z <- terms[[t]]$Z
    mean(rowSums((Z %*% x$re_cov[[t]]) * Z))
  }, 0)
  names(by_group) <- vapply(terms, function(t) t$group, "")
  # residual variance of each observation (rows in the data's order)
  s <- rep(seq_along(lay$subj_ids), diff(lay$subj_start))
  g <- lay$subj_group[s] + 1L
  v_row <- if (cs$type == "sp_exp") {
    vapply(cs$covs, function(V) V[["variance"]], 0)[g]
  } else {
    vapply(seq_along(g), function(i) cs$covs[[g[i]]][lay$visit_code[i] + 1L, lay$visit_code[i] + 1L], 0)
  }
  homogeneous <- cs$type %in% c("cs", "ar1", "toep", "sp_exp") ||
    stats::sd(v_row) <= 1e-12 * mean(v_row)
  list(fixed = v_fixed, random = by_group, residual = mean(v_row),
       homogeneous = homogeneous, by_group = by_group,
       has_slopes = any(vapply(terms, function(t) ncol(t$Z) > 1L || !identical(t$cnms, "(Intercept)"), TRUE)))
}

#' ICC of a fit with a residual covariance structure
#'
#' The ICC is the share of the variance that the random effects explain
#' (as [icc.lmmr()] and `performance::icc()` define it). With a residual
#' structure it is defined when the model has random-effect terms and the
#' residual variance is the same at every visit (`cs`, `ar1`, `toep`,
#' `sp_exp`, or a heterogeneous structure whose variances coincide): then
#' `adjusted = sigma2_random / (sigma2_random + sigma2_residual)` and
#' `unadjusted` adds the fixed-effect variance to the denominator, as for
#' fits without a residual structure.
#'
#' It is not defined (a classed error `lmmr_error_not_defined`) when
#' - the model has no random-effect terms: all within-subject correlation
#'   is in the residual structure, so no variance is "between clusters";
#'   read the correlations from `cov_matrix(fit, correlation = TRUE)`
#'   (for `cs()` the common correlation is the ICC of the equivalent
#'   random-intercept model);
#' - the residual variance differs between visits (`us`, `csh`, `ar1h`,
#'   `toeph`, `adh`): the share of the random effects then differs from
#'   visit to visit, so no single ICC exists.
#' @param x a fit with a residual covariance structure.
#' @param ... unused.
#' @return An object of class `"lmm_icc"` as [icc.lmmr()] (without the
#'   bootstrap interval).
#' @examples
#' set.seed(1)
#' d <- data.frame(site = factor(rep(1:8, each = 20)), id = factor(rep(1:40, each = 4)),
#'                 visit = factor(rep(c("V1", "V2", "V3", "V4"), 40)))
#' d$y <- rnorm(160) + rep(rnorm(40), each = 4) + rep(rnorm(8), each = 20)
#' fit <- lmm(y ~ visit + (1 | site) + ar1(visit | id), data = d)
#' icc(fit)
#' @export
icc.lmmr_rcov <- function(x, ...) {
  h_check_dots(..., .fn = "icc")
  vc <- h_rcov_variance_components(x)
  if (!length(vc$random)) {
    h_abort("The ICC is the share of the variance due to random effects, and this model has none: its within-subject correlation is the residual structure's. See cov_matrix(fit, correlation = TRUE) (for cs() the common correlation is the ICC of the equivalent random-intercept model).",
            "not_defined")
  }
  if (!vc$homogeneous) {
    h_abort(sprintf("The residual variance of %s() differs between visits, so the share of the variance due to the random effects differs from visit to visit and no single ICC exists. Use a structure with a common variance (cs, ar1, toep) or compare the variances in VarCorr(fit).",
                    x$cov_struct$type), "not_defined")
  }
  v_re <- sum(vc$random)
  total_adj <- v_re + vc$residual
  total <- vc$fixed + total_adj
  comps <- data.frame(group = names(vc$by_group), variance = unname(vc$by_group),
                      icc_adjusted = unname(vc$by_group) / total_adj,
                      icc_unadjusted = unname(vc$by_group) / total, stringsAsFactors = FALSE)
  if (isTRUE(x$singular)) {
    h_warn("The fit is singular (a random-effect variance is estimated as zero or a correlation as +/-1); the ICC is at or near its boundary and should be interpreted with care.",
           "singular")
  }
  structure(list(adjusted = v_re / total_adj, unadjusted = v_re / total, components = comps,
                 var_fixed = vc$fixed, var_random = v_re, var_residual = vc$residual,
                 has_slopes = vc$has_slopes), class = "lmm_icc")
}

#' Nakagawa R2 of a fit with a residual covariance structure
#'
#' Marginal R2 = `sigma2_fixed / (sigma2_fixed + sigma2_random +
#' sigma2_residual)` and conditional R2 = `(sigma2_fixed + sigma2_random) /
#' (...)`, with the random-effect and residual variances averaged over the
#' observations (each row's `diag(Z G Z')` and its visit's residual variance;
#' Nakagawa, Johnson & Schielzeth 2017, the averaging `performance` uses for
#' random slopes). Heterogeneous residual variances are therefore weighted
#' by how often each visit is observed. Residual correlations are not
#' "explained" variance: they do not enter either R2.
#' @param x a fit with a residual covariance structure.
#' @param ... unused.
#' @return An object of class `"lmm_r2"` as [r2.lmmr()].
#' @examples
#' set.seed(1)
#' d <- data.frame(site = factor(rep(1:8, each = 20)), id = factor(rep(1:40, each = 4)),
#'                 visit = factor(rep(c("V1", "V2", "V3", "V4"), 40)))
#' d$y <- rnorm(160) + rep(rnorm(40), each = 4) + rep(rnorm(8), each = 20)
#' fit <- lmm(y ~ visit + (1 | site) + us(visit | id), data = d)
#' r2(fit)
#' @export
r2.lmmr_rcov <- function(x, ...) {
  h_check_dots(..., .fn = "r2")
  vc <- h_rcov_variance_components(x)
  v_re <- sum(vc$random)
  total <- vc$fixed + v_re + vc$residual
  structure(list(marginal = vc$fixed / total, conditional = (vc$fixed + v_re) / total,
                 var_fixed = vc$fixed, var_random = v_re, var_residual = vc$residual),
            class = "lmm_r2")
}

#' @export
boxcox.lmmr_rcov <- function(object, ...) h_rcov_unsupported("boxcox()")

#' @export
plot.lmmr_rcov <- function(x, ...) h_rcov_unsupported("plot()")

#' Refit a residual-structure model to a new response
#'
#' The fit's kept Rust model (design, layout, workspace) is reused with the
#' new response;
#' the optimiser starts at the fit's covariance parameters, as lme4's
#' `refit()` does.
#' @param object a fit with a residual covariance structure.
#' @param newresp new response: a numeric vector with one value per
#'   observation used in the fit (or per row of the data for an
#'   `na.omit` fit); by default the fit's own response.
#' @param REML refit with REML (default: as the fit).
#' @param ... unused.
#' @return A fit of class `c("lmmr_rcov", "lmmr")`.
#' @examples
#' set.seed(1)
#' d <- data.frame(site = factor(rep(1:8, each = 20)), id = factor(rep(1:40, each = 4)),
#'                 visit = factor(rep(c("V1", "V2", "V3", "V4"), 40)))
#' d$y <- rnorm(160) + rep(rnorm(40), each = 4) + rep(rnorm(8), each = 20)
#' fit <- lmm(y ~ visit + ar1(visit | id), data = d)
#' fit2 <- refit(fit, simulate(fit, seed = 1)[[1]])
#' fixef(fit2)
#' @export
refit.lmmr_rcov <- function(object, newresp, REML = object$REML, ...) {
  h_check_dots(..., .fn = "refit")
  if (missing(newresp)) newresp <- object$y
  h_check_flag(REML, "REML")
  y <- h_newresp(object, newresp)
  design <- h_rcov_design_of(object, y)
  control <- object$control
  if (is.null(control)) control <- lmm_control()
  res <- h_fit_rcov_design(design, REML = REML, control = control, theta = object$rcov_theta,
                           engine = h_rcov_fit_engine(object))
  fit <- h_build_rcov_fit(design, res, REML = REML, call = object$call, control = control)
  fit$formula_input <- object$formula_input
  fit
}

#' @export
model.matrix.lmmr_rcov <- function(object, type = c("fixed", "random"), ...) {
  h_check_dots(..., .fn = "model.matrix")
  type <- match.arg(type)
  if (type == "random") h_rcov_unsupported("model.matrix(type = \"random\")")
  object$X
}

#' @export
as.data.frame.VarCorr.lmmr_rcov <- function(x, row.names = NULL, optional = FALSE,
                                            order = c("cov.last", "lower.tri"), ...) {
  order <- match.arg(order)
  rows <- list()
  add <- function(grp, V) {
    idx <- which(lower.tri(V, diag = TRUE), arr.ind = TRUE)
    if (order == "cov.last") idx <- idx[order(idx[, 1L] != idx[, 2L]), , drop = FALSE]
    nm <- rownames(V)
    sd <- sqrt(pmax(diag(V), 0))
    diagonal <- idx[, 1L] == idx[, 2L]
    rows[[length(rows) + 1L]] <<- data.frame(
      grp = grp, var1 = nm[idx[, 2L]],
      var2 = ifelse(diagonal, NA_character_, nm[idx[, 1L]]),
      vcov = V[idx],
      sdcor = ifelse(diagonal, sd[idx[, 1L]], V[idx] / (sd[idx[, 1L]] * sd[idx[, 2L]])),
      stringsAsFactors = FALSE)
  }
  for (nm in names(x)) add(nm, unclass(x[[nm]]))
  cs <- attr(x, "residual")
  for (g in seq_along(cs$covs)) {
    grp <- if (cs$grouped) paste0("Residual:", cs$group_levels[g]) else "Residual"
    if (cs$type == "sp_exp") {
      v <- cs$covs[[g]]
      rows[[length(rows) + 1L]] <- data.frame(
        grp = grp, var1 = c("variance", "rho"), var2 = NA_character_,
        vcov = c(v[["variance"]], NA), sdcor = c(sqrt(v[["variance"]]), v[["rho"]]),
        stringsAsFactors = FALSE)
    } else {
      add(grp, cs$covs[[g]])
    }
  }
  out <- do.call(rbind, rows)
  rownames(out) <- NULL
  out
}

#' For each covariance parameter (SAS's parametrisation) the kernel's
#' unconstrained coordinate that it is a monotone function of alone, with
#' that function; NULL where the parameter mixes several coordinates
#' (covariances of us/toep, lags beyond 1 of toeph, cs, random-effect
#' covariance matrices larger than 1 x 1)
#' @noRd
h_rcov_coordinates <- function(object) {
  cs <- object$cov_struct
  m <- cs$m
  npg <- length(cs$natural[[1L]])
  ng <- length(cs$natural)
  logistic <- function(t) 1 / (1 + exp(-t))
  one <- function(j) {
    v2 <- function(t) exp(2 * t)
    switch(cs$type,
      ar1 = if (j == 1L) list(j = j, f = exp) else list(j = j, f = tanh),
      sp_exp = if (j == 1L) list(j = j, f = exp) else
        list(j = j, f = function(t) -1 / log(logistic(t))),
      csh = if (j <= m) list(j = j, f = v2) else
        list(j = j, f = function(t) (exp(t) - 1) / (exp(t) + m - 1)),
      ar1h = if (j <= m) list(j = j, f = v2) else list(j = j, f = tanh),
      adh = if (j <= m) list(j = j, f = v2) else list(j = j, f = tanh),
      toeph = if (j <= m) list(j = j, f = v2) else if (j == m + 1L) list(j = j, f = tanh),
      toep = if (j == 1L) list(j = j, f = exp),
      us = if (j == 1L) list(j = j, f = v2),
      NULL)
  }
  out <- list()
  for (g in seq_len(ng)) for (j in seq_len(npg)) {
    o <- one(j)
    if (!is.null(o)) o$j <- (g - 1L) * npg + o$j
    out[length(out) + 1L] <- list(o)
  }
  off <- npg * ng
  for (G in object$re_cov) {
    nk <- nrow(G) * (nrow(G) + 1) / 2
    for (q in seq_len(nk)) {
      out[length(out) + 1L] <- list(if (nrow(G) == 1L) list(j = off + 1L, f = function(t) t^2, lower0 = TRUE))
    }
    off <- off + nk
  }
  out
}

#' Profile likelihood interval of one covariance parameter (a single
#' unconstrained coordinate `j` of the kernel, monotone map `f` to SAS's
#' parametrisation), on the fit's kept model
#' @noRd
h_rcov_profile_one <- function(object, co, level) {
  terms <- if (is.null(object$design_re)) list() else object$design_re$terms
  engine <- h_rcov_fit_engine(object)
  th0 <- object$rcov_theta
  j <- co$j
  reml <- isTRUE(object$REML)
  ptr <- function() h_rcov_engine_ptr(engine, object$X, object$y - object$offset, object$layout, terms)
  fg <- function(th) {
    res <- rs_rcov_model_fit(ptr(), reml = reml, max_iter = 1L, gtol = 1e-6,
                             theta_start = th, optimize = FALSE)
    if (!is.null(res$error_kind) || !is.finite(res$objective)) return(list(f = Inf, g = rep(0, length(th))))
    list(f = res$objective, g = res$gradient)
  }
  start <- th0
  prof <- function(t) {
    free <- setdiff(seq_along(th0), j)
    full <- function(x) replace(replace(th0, free, x), j, t)
    val <- function(x) fg(full(x))$f
    gr <- function(x) fg(full(x))$g[free]
    o <- stats::optim(start[free], val, gr, method = "BFGS",
                      control = list(maxit = 500, reltol = 1e-12))
    start <<- full(o$par)
    o$value
  }
  fmin <- object$objective
  crit <- stats::qchisq(level, 1)
  side <- function(dir) {
    start <<- th0
    step <- 0.1 * max(1, abs(th0[j]))
    t_in <- th0[j]
    for (i in seq_len(40)) {
      t_out <- t_in + dir * step
      if (isTRUE(co$lower0) && dir < 0 && t_out <= 0) {
        if (prof(0) - fmin < crit) return(0)
        t_out <- 0
      }
      d <- prof(t_out) - fmin
      if (is.finite(d) && d >= crit) break
      if (!is.finite(d)) return(NA_real_)
      t_in <- t_out
      step <- step * 2
    }
    start <<- th0
    r <- stats::uniroot(function(t) prof(t) - fmin - crit, sort(c(t_in, t_out)), tol = 1e-8)
    r$root
  }
  lo <- side(-1)
  hi <- side(1)
  sort(co$f(c(lo, hi)))
}
