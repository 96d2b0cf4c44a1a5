# Variance partition of a fitted "lmmr": ICC, Nakagawa R2, design effects and
# shrinkage. Definitions follow Nakagawa, Johnson & Schielzeth (2017) as
# implemented in performance 0.10.2 / insight 0.19 (re-derived here, no code
# taken from those packages).

#' Variance components used by icc(), r2() and design_effect()
#'
#' * fixed: var(X beta) (sample variance, n - 1 denominator, offset excluded)
#' * random, per term t: mean over observations of z_it' Sigma_t z_it, where
#'   z_it is the row of the term's covariate matrix (for a random intercept
#'   this is just the intercept variance)
#' * residual: sigma^2
#' @return list(fixed, random (named by term), by_group (named by grouping
#'   factor), residual, groups (term -> group))
#' @noRd
h_variance_components <- function(x) {
  if (!inherits(x, "lmmr")) {
    h_abort("`x` must be a model fitted by lmm().", "unsupported_model")
  }
  if (!length(x$re_terms)) {
    h_abort("The model has no random effects, so there is no variance to partition between clusters.",
            "no_random_effects")
  }
  if (!is.null(x$db)) {
    # from the database's moments of the columns (no rows in R)
    mo <- x$db$moments
    ix <- match(x$db$x_keys, mo$keys)
    cov_x <- (mo$second[ix, ix, drop = FALSE] - outer(mo$mean[ix], mo$mean[ix])) *
      mo$n / (mo$n - 1)
    var_fixed <- max(0, drop(crossprod(x$beta, cov_x %*% x$beta)))
    per_term <- vapply(seq_along(x$re_terms), function(i) {
      iz <- match(x$db$z_keys[[i]], mo$keys)
      sum(x$re_terms[[i]]$cov * mo$second[iz, iz, drop = FALSE])
    }, numeric(1))
  } else {
    var_fixed <- if (x$n > 1L) stats::var(drop(x$X %*% x$beta)) else 0
    per_term <- vapply(x$re_terms, function(t) {
      mean(rowSums((t$Z %*% t$cov) * t$Z))
    }, numeric(1))
  }
  groups <- vapply(x$re_terms, function(t) t$group, character(1))
  term_labels <- vapply(x$re_terms, function(t) {
    paste0(t$group, ": ", paste(t$cnms, collapse = " + "))
  }, character(1))
  names(per_term) <- term_labels
  ug <- unique(groups)
  by_group <- vapply(ug, function(g) sum(per_term[groups == g]), numeric(1))
  names(by_group) <- ug
  list(fixed = var_fixed, random = per_term, by_group = by_group,
       residual = x$sigma^2, groups = groups,
       has_slopes = any(vapply(x$re_terms, function(t) {
         !identical(t$cnms, "(Intercept)")
       }, logical(1))))
}

#' ICC from the variance components
#' @noRd
h_icc_values <- function(vc) {
  v_re <- sum(vc$random)
  c(adjusted = v_re / (v_re + vc$residual),
    unadjusted = v_re / (vc$fixed + v_re + vc$residual))
}

#' Intraclass correlation coefficient
#'
#' Generic with a method for `"lmmr"` fits. The `performance` package has a
#' function of the same name; on a model not fitted by lmmr, lmmr's `icc()`
#' calls `performance::icc()`, so attaching lmmr after performance changes
#' no result (and `performance::icc()` works on lmmr fits too).
#'
#' @param x a fitted model.
#' @param ... passed to methods (for other models: to `performance::icc()`).
#' @return See [icc.lmmr()]; for other models, the result of
#'   `performance::icc()`.
#' @seealso [icc.lmmr()], [icc_from_variances()], [r2()], [design_effect()]
#' @examples
#' fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
#' icc(fit)
#' @export
icc <- function(x, ...) UseMethod("icc")

#' @rdname icc
#' @export
icc.default <- function(x, ...) h_delegate("performance", "icc", "icc", x, ...)

#' Intraclass correlation of a linear mixed model
#'
#' The *adjusted* ICC is the share of the variance not explained by the fixed
#' effects that lies between clusters,
#' `sigma2_random / (sigma2_random + sigma2)`; the *unadjusted* ICC also
#' counts the variance of the fixed-effects predictions in the denominator,
#' `sigma2_random / (sigma2_fixed + sigma2_random + sigma2)`
#' (Nakagawa, Johnson & Schielzeth, 2017). The components are defined as in
#' `performance::icc()` 0.10.2 (and agree with it to numerical precision for
#' models with correlated or single random-effect terms):
#'
#' * `sigma2_fixed = var(X beta)`, the sample variance (denominator `n - 1`)
#'   of the fixed-effects linear predictor (offset excluded);
#' * `sigma2_random` is the sum over all random-effect terms of the mean over
#'   the observations of `z_i' Sigma z_i`, where `z_i` holds the term's
#'   covariates for observation `i` (1 for an intercept) and `Sigma` is the
#'   term's covariance matrix. For a random intercept this is its variance;
#'   with random slopes it is the random-effect variance averaged over the
#'   observed covariate values (so it depends on their centring). Several
#'   grouping factors are summed;
#' * `sigma2 = sigma(x)^2`, the residual variance (prior weights are ignored).
#'
#' One difference with performance 0.10.2 (insight 0.19): for uncorrelated
#' terms such as `(Days || Subject)`, insight drops the term
#' `(0 + Days | Subject)` from the random variance; `icc()` here keeps all
#' terms.
#'
#' Confidence intervals are obtained by a parametric bootstrap: `nsim`
#' responses are simulated from the fit ([simulate.lmmr()], new random
#' effects), the model is refitted to each ([refit()], same REML/ML setting)
#' and the percentile interval of the bootstrap ICCs is returned. No
#' delta-method interval is offered: the ICC is a bounded ratio of variance
#' components whose sampling distribution is skewed (and piles up at 0 when a
#' variance is near its boundary), where a symmetric Wald interval is
#' misleading.
#'
#' @param x an `"lmmr"` fit.
#' @param ci `NULL` (no interval) or a confidence level such as `0.95` for a
#'   parametric bootstrap percentile interval.
#' @param nsim number of bootstrap simulations when `ci` is given.
#' @param seed optional seed for the bootstrap simulations.
#' @param ... unused.
#' @return An object of class `"lmm_icc"`: a list with `adjusted` and
#'   `unadjusted` ICC, `components` (a data frame with one row per grouping
#'   factor: `group`, `variance`, `icc_adjusted` = its share of the
#'   non-fixed variance, `icc_unadjusted`), `var_fixed`, `var_random`,
#'   `var_residual`, and when `ci` is given `ci` (a 2 x 2 matrix, rows
#'   `adjusted`/`unadjusted`, columns lower/upper), `ci_level`, `nsim`,
#'   `n_failed` and `boot` (the bootstrap ICCs).
#' @references Nakagawa, S., Johnson, P. C. D. and Schielzeth, H. (2017). The
#'   coefficient of determination R2 and intra-class correlation coefficient
#'   from generalized linear mixed-effects models revisited and expanded.
#'   *Journal of the Royal Society Interface* 14: 20170213.
#' @seealso [r2()], [design_effect()], [icc_from_variances()]
#' @examples
#' fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
#' icc(fit)
#' fit2 <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' res <- icc(fit2)
#' res$adjusted
#' res$components
#' # parametric bootstrap interval (use more simulations in practice)
#' icc(fit, ci = 0.95, nsim = 20, seed = 1)
#' @export
icc.lmmr <- function(x, ci = NULL, nsim = 200, seed = NULL, ...) {
  h_check_dots(..., .fn = "icc")
  vc <- h_variance_components(x)
  vals <- h_icc_values(vc)
  v_re <- sum(vc$random)
  total_adj <- v_re + vc$residual
  total <- vc$fixed + total_adj
  comps <- data.frame(
    group = names(vc$by_group),
    variance = unname(vc$by_group),
    icc_adjusted = unname(vc$by_group) / total_adj,
    icc_unadjusted = unname(vc$by_group) / total,
    stringsAsFactors = FALSE
  )
  if (v_re <= 0 || isTRUE(x$singular)) {
    h_warn("The fit is singular (a random-effect variance is estimated as zero or a correlation as +/-1); the ICC is at or near its boundary and should be interpreted with care.",
           "singular")
  }
  out <- list(adjusted = unname(vals["adjusted"]),
              unadjusted = unname(vals["unadjusted"]),
              components = comps, var_fixed = vc$fixed, var_random = v_re,
              var_residual = vc$residual, has_slopes = vc$has_slopes)
  if (!is.null(ci)) {
    h_check_level(ci)
    boot <- h_bootstrap(x, nsim = nsim, seed = seed, stat = function(f) {
      h_icc_values(h_variance_components(f))
    })
    probs <- c((1 - ci) / 2, 1 - (1 - ci) / 2)
    ok <- stats::complete.cases(boot)
    cim <- t(apply(boot[ok, , drop = FALSE], 2, stats::quantile, probs = probs,
                   names = FALSE))
    dimnames(cim) <- list(c("adjusted", "unadjusted"), c("lower", "upper"))
    out$ci <- cim
    out$ci_level <- ci
    out$nsim <- nsim
    out$n_failed <- sum(!ok)
    out$boot <- boot
  }
  structure(out, class = "lmm_icc")
}

#' @noRd
h_check_level <- function(level, name = "ci") {
  if (!is.numeric(level) || length(level) != 1L || !is.finite(level) ||
      level <= 0 || level >= 1) {
    h_abort(sprintf("`%s` must be NULL or a single confidence level strictly between 0 and 1, such as 0.95.",
                    name), "argument")
  }
  invisible(level)
}

#' Parametric bootstrap of a statistic (the engine of bootstrap_lmm())
#' @return nsim x length(stat) matrix, NA rows for failed refits
#' @noRd
h_bootstrap <- function(x, nsim, seed, stat) {
  h_check_number(nsim, "nsim", lower = 2)
  bootstrap_lmm(x, FUN = stat, nsim = nsim, seed = seed)$t
}

#' Plural of a grouping-factor name for sentences ("Subjects")
#' @noRd
h_plural <- function(g) {
  if (!grepl("^[A-Za-z][A-Za-z0-9_.]*$", g)) return(paste("levels of", g))
  if (grepl("(s|x|z|ch|sh)$", g)) return(paste0(g, "es"))
  if (grepl("[^aeiouAEIOU]y$", g)) return(sub("y$", "ies", g))
  paste0(g, "s")
}

#' @noRd
h_and <- function(x) {
  if (length(x) <= 1L) return(x)
  paste(paste(x[-length(x)], collapse = ", "), "and", x[length(x)])
}

#' @noRd
h_dash <- function() {
  if (isTRUE(l10n_info()$`UTF-8`)) " \u2014 " else " -- "
}

#' @noRd
h_pct <- function(p) sprintf("%.0f%%", 100 * p)

#' @export
print.lmm_icc <- function(x, digits = 2, ...) {
  groups <- x$components$group
  where <- h_and(vapply(groups, h_plural, character(1)))
  cat("Intraclass correlation coefficient\n\n")
  cat(sprintf("  Adjusted ICC:   %s%s%s of the variance not explained by the fixed effects lies between %s.\n",
              formatC(x$adjusted, digits = digits, format = "f"), h_dash(),
              h_pct(x$adjusted), where))
  cat(sprintf("  Unadjusted ICC: %s%s%s of the total variance (fixed effects included) lies between %s.\n",
              formatC(x$unadjusted, digits = digits, format = "f"), h_dash(),
              h_pct(x$unadjusted), where))
  if (nrow(x$components) > 1L) {
    cat("\n  By grouping factor (adjusted): ",
        paste(sprintf("%s %s", groups,
                      formatC(x$components$icc_adjusted, digits = digits,
                              format = "f")), collapse = ", "),
        "\n", sep = "")
  }
  if (!is.null(x$ci)) {
    cat(sprintf("\n  %s%% parametric bootstrap interval (%d simulations%s):\n",
                format(100 * x$ci_level), x$nsim,
                if (x$n_failed) sprintf(", %d refits failed", x$n_failed) else ""))
    cat(sprintf("    adjusted   [%s, %s]\n    unadjusted [%s, %s]\n",
                formatC(x$ci[1, 1], digits = digits + 1, format = "f"),
                formatC(x$ci[1, 2], digits = digits + 1, format = "f"),
                formatC(x$ci[2, 1], digits = digits + 1, format = "f"),
                formatC(x$ci[2, 2], digits = digits + 1, format = "f")))
  }
  if (isTRUE(x$has_slopes)) {
    cat("\n  Note: with random slopes the between-cluster variance is averaged over the\n  observed covariate values, so the ICC depends on how they are centred.\n")
  }
  invisible(x)
}

#' Intraclass correlation from two variances
#'
#' `between / (between + within)`: the share of the total variance that lies
#' between clusters, e.g. for planning a study or reading a published table.
#'
#' @param between between-cluster (random-intercept) variance(s), >= 0.
#' @param within within-cluster (residual) variance(s), >= 0; recycled with
#'   `between`.
#' @return A numeric vector of ICCs.
#' @seealso [icc()], [shrinkage_factor()]
#' @examples
#' icc_from_variances(200, 800) # 0.2
#' icc_from_variances(3, 12)    # 0.2
#' # from a fit
#' fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
#' vc <- as.data.frame(VarCorr(fit))
#' icc_from_variances(vc$vcov[1], vc$vcov[2])
#' @export
icc_from_variances <- function(between, within) {
  h_check_variances(between, "between")
  h_check_variances(within, "within")
  if (any(between + within <= 0)) {
    h_abort("`between + within` must be positive.", "argument")
  }
  between / (between + within)
}

#' @noRd
h_check_variances <- function(x, name) {
  if (!is.numeric(x) || !length(x) || any(!is.finite(x)) || any(x < 0)) {
    h_abort(sprintf("`%s` must be a numeric vector of finite, non-negative variances.",
                    name), "argument")
  }
  invisible(x)
}

#' Nakagawa's marginal and conditional R2
#'
#' Generic with a method for `"lmmr"` fits. The `performance` package has a
#' function of the same name; on a model not fitted by lmmr, lmmr's `r2()`
#' calls `performance::r2()`, so attaching lmmr after performance changes
#' no result (`performance::r2()` on an lmmr fit gives performance's
#' Nakagawa R2).
#'
#' @param x a fitted model.
#' @param ... passed to methods (for other models: to `performance::r2()`).
#' @return See [r2.lmmr()]; for other models, the result of
#'   `performance::r2()`.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' r2(fit)
#' @export
r2 <- function(x, ...) UseMethod("r2")

#' @rdname r2
#' @export
r2.default <- function(x, ...) h_delegate("performance", "r2", "r2", x, ...)

#' Nakagawa R2 of a linear mixed model
#'
#' Marginal R2 = `sigma2_fixed / (sigma2_fixed + sigma2_random + sigma2)`
#' (variance explained by the fixed effects) and conditional R2 =
#' `(sigma2_fixed + sigma2_random) / (sigma2_fixed + sigma2_random + sigma2)`
#' (fixed and random effects together), with the variance components
#' defined in [icc.lmmr()] (Nakagawa, Johnson & Schielzeth, 2017;
#' `performance::r2_nakagawa()` 0.10.2).
#'
#' @param x an `"lmmr"` fit.
#' @param ... unused.
#' @return An object of class `"lmm_r2"`: a list with `marginal`,
#'   `conditional`, `var_fixed`, `var_random` and `var_residual`.
#' @seealso [icc.lmmr()]
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' res <- r2(fit)
#' res
#' res$marginal
#' @export
r2.lmmr <- function(x, ...) {
  vc <- h_variance_components(x)
  v_re <- sum(vc$random)
  total <- vc$fixed + v_re + vc$residual
  structure(list(marginal = vc$fixed / total,
                 conditional = (vc$fixed + v_re) / total,
                 var_fixed = vc$fixed, var_random = v_re,
                 var_residual = vc$residual),
            class = "lmm_r2")
}

#' @export
print.lmm_r2 <- function(x, digits = 3, ...) {
  cat("Nakagawa R2 for a linear mixed model\n\n")
  cat(sprintf("  Marginal R2:    %s%s%s of the variance is explained by the fixed effects.\n",
              formatC(x$marginal, digits = digits, format = "f"), h_dash(),
              h_pct(x$marginal)))
  cat(sprintf("  Conditional R2: %s%s%s is explained by the fixed and random effects together.\n",
              formatC(x$conditional, digits = digits, format = "f"), h_dash(),
              h_pct(x$conditional)))
  invisible(x)
}

#' Design effect of clustering
#'
#' For each grouping factor, the design effect
#' `deff = 1 + (m_bar - 1) * ICC` and the effective sample size
#' `n_eff = n / deff`: how many independent observations the clustered data
#' are worth for estimating an overall mean.
#'
#' `ICC` is the grouping factor's share of the variance not explained by the
#' fixed effects, `sigma2_g / (sum of all random variances + sigma2)` (the
#' per-factor adjusted ICC of [icc.lmmr()]). With unequal cluster sizes
#' `m_j`, `m_bar` is the size-weighted mean cluster size
#' `sum(m_j^2) / sum(m_j)` (the average size of the cluster an observation
#' belongs to), not the plain mean `mean(m_j)`: under a random-intercept model
#' the variance of the overall sample mean is
#' `(sigma2_g * sum(m_j^2) + sigma2 * n) / n^2
#'  = (sigma2_g + sigma2) / n * (1 + (sum(m_j^2) / n - 1) * ICC)`,
#' so this choice makes `deff` exact for unequal sizes (and equal to the usual
#' formula for equal sizes). The plain mean is reported as `m_mean` for
#' reference; it understates the design effect when sizes vary.
#'
#' @param x an `"lmmr"` fit.
#' @return A data frame of class `"lmm_design_effect"` with one row per
#'   grouping factor: `group`, `n_clusters`, `m_mean` (mean cluster size),
#'   `m_bar` (size-weighted mean cluster size), `icc`, `deff`, `n`, `n_eff`.
#' @seealso [icc.lmmr()]
#' @examples
#' fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
#' design_effect(fit)
#' @export
design_effect <- function(x) {
  h_check_not_rcov(x, "design_effect()")
  vc <- h_variance_components(x)
  total <- sum(vc$random) + vc$residual
  groups <- names(vc$by_group)
  rows <- lapply(groups, function(g) {
    term <- x$re_terms[[match(g, vc$groups)]]
    m <- tabulate(term$codes + 1L, nbins = term$n_levels)
    m <- m[m > 0]
    n <- sum(m)
    icc_g <- unname(vc$by_group[g]) / total
    m_bar <- sum(m^2) / n
    deff <- 1 + (m_bar - 1) * icc_g
    data.frame(group = g, n_clusters = length(m), m_mean = mean(m),
               m_bar = m_bar, icc = icc_g, deff = deff, n = n,
               n_eff = n / deff, stringsAsFactors = FALSE)
  })
  out <- do.call(rbind, rows)
  rownames(out) <- NULL
  class(out) <- c("lmm_design_effect", "data.frame")
  out
}

#' @export
print.lmm_design_effect <- function(x, digits = 3, ...) {
  cat("Design effect of clustering (deff = 1 + (m_bar - 1) * ICC,\n",
      "m_bar = sum(m_j^2) / sum(m_j), n_eff = n / deff)\n\n", sep = "")
  df <- as.data.frame(unclass(x), stringsAsFactors = FALSE)
  print(format(df, digits = digits), row.names = FALSE)
  for (i in seq_len(nrow(df))) {
    cat(sprintf("\n%d observations in %d %s are worth about %.0f independent ones.",
                df$n[i], df$n_clusters[i], h_plural(df$group[i]), df$n_eff[i]))
  }
  cat("\n")
  invisible(x)
}

#' Shrinkage of cluster effects
#'
#' For every random-intercept term `(1 | g)` of the model, shows per cluster
#' the number of observations `m_j`, the raw cluster-mean deviation (the mean
#' of `y - X beta - offset` over the cluster's observations), the reliability
#' `lambda_j = sigma_g^2 / (sigma_g^2 + sigma^2 / m_j)` and the BLUP. With a
#' single random-intercept term the BLUP is exactly
#' `lambda_j * raw deviation` (the raw mean is shrunk towards 0 by the factor
#' `lambda_j`, more strongly for small clusters). With several terms the
#' relation is only approximate, since the other terms' effects are not
#' removed from the raw deviations. With prior weights, `m_j` is the sum of
#' the weights in the cluster and the raw deviation is weighted. Terms with
#' random slopes, e.g. `(x | g)` (intercept and slope) or `(0 + x | g)`, are
#' skipped with a message of class `"lmmr_message_shrinkage_skipped"`
#' naming them (their BLUPs are not shrunken cluster means); a model with
#' no random-intercept-only term is an error of class
#' `"lmmr_error_no_random_intercept"`.
#'
#' @param x an `"lmmr"` fit.
#' @return A data frame of class `"lmm_shrinkage"` with columns `group`,
#'   `level`, `m`, `raw_deviation`, `reliability`, `shrunken`
#'   (`reliability * raw_deviation`) and `blup`.
#' @seealso [shrinkage_factor()] for user-supplied variances.
#' @examples
#' fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
#' s <- shrinkage(fit)
#' head(s)
#' @export
shrinkage <- function(x) {
  h_check_not_rcov(x, "shrinkage()")
  if (!inherits(x, "lmmr")) {
    h_abort("`x` must be a model fitted by lmm().", "unsupported_model")
  }
  keep <- vapply(x$re_terms, function(t) identical(t$cnms, "(Intercept)"),
                 logical(1))
  why <- vapply(x$re_terms[!keep], function(t) {
    slopes <- setdiff(t$cnms, "(Intercept)")
    int <- "(Intercept)" %in% t$cnms
    sprintf("(%s + %s | %s) has %s for %s %s",
            if (int) "1" else "0", paste(slopes, collapse = " + "), t$group,
            if (length(slopes) > 1L) "random slopes" else "a random slope",
            paste(slopes, collapse = ", "),
            if (int) "besides its intercept" else "and no intercept")
  }, character(1))
  if (!any(keep)) {
    h_abort(sprintf("shrinkage() is defined for random-intercept-only terms such as (1 | g), whose BLUPs are shrunken cluster means; with random slopes they are not. This model has no such term: %s.",
                    paste(why, collapse = "; ")),
            "no_random_intercept")
  }
  if (any(!keep)) {
    h_inform(sprintf("shrinkage() skips terms with random slopes, whose BLUPs are not shrunken cluster means: %s.",
                     paste(why, collapse = "; ")), "shrinkage_skipped")
  }
  marg <- x$y - drop(x$X %*% x$beta) - x$offset
  w <- x$weights
  rows <- lapply(x$re_terms[keep], function(t) {
    idx <- t$codes + 1L
    m <- as.numeric(tapply(w, factor(idx, levels = seq_len(t$n_levels)), sum))
    m[is.na(m)] <- 0
    raw <- as.numeric(tapply(w * marg, factor(idx, levels = seq_len(t$n_levels)), sum)) / m
    s2 <- t$cov[1, 1]
    rel <- s2 / (s2 + x$sigma^2 / m)
    data.frame(group = t$group, level = t$levels, m = m, raw_deviation = raw,
               reliability = rel, shrunken = rel * raw, blup = t$b[, 1],
               stringsAsFactors = FALSE)
  })
  out <- do.call(rbind, rows)
  rownames(out) <- NULL
  class(out) <- c("lmm_shrinkage", "data.frame")
  out
}

#' @export
print.lmm_shrinkage <- function(x, digits = 3, n = 10, ...) {
  df <- as.data.frame(unclass(x), stringsAsFactors = FALSE)
  cat("Shrinkage of random intercepts: BLUP ~ reliability x raw cluster-mean deviation,\n",
      "reliability = sigma_g^2 / (sigma_g^2 + sigma^2 / m_j)\n", sep = "")
  for (g in unique(df$group)) {
    d <- df[df$group == g, , drop = FALSE]
    cat(sprintf("\n%s: %d clusters, reliability from %.2f to %.2f (mean %.2f)\n",
                g, nrow(d), min(d$reliability), max(d$reliability),
                mean(d$reliability)))
    d$group <- NULL
    print(format(utils::head(d, n), digits = digits), row.names = FALSE)
    if (nrow(d) > n) cat(sprintf("... %d more rows\n", nrow(d) - n))
  }
  invisible(x)
}

#' Shrinkage (reliability) factor from variances
#'
#' `var_between / (var_between + var_within / m)`: the reliability of a
#' cluster mean based on `m` observations, i.e. the factor by which a
#' random-intercept model shrinks the raw cluster-mean deviation towards
#' zero.
#'
#' @param var_between between-cluster variance, >= 0.
#' @param var_within within-cluster (residual) variance, >= 0.
#' @param m cluster size(s), > 0 (vectorised).
#' @return A numeric vector of shrinkage factors in \[0, 1\].
#' @seealso [shrinkage()]
#' @examples
#' shrinkage_factor(5, 20, m = 100) # 0.96
#' shrinkage_factor(5, 20, m = 4)   # 0.5
#' shrinkage_factor(5, 20, m = c(1, 4, 10, 100))
#' # with the variances of a fit
#' fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
#' vc <- as.data.frame(VarCorr(fit))
#' shrinkage_factor(vc$vcov[1], vc$vcov[2], m = 10)
#' @export
shrinkage_factor <- function(var_between, var_within, m) {
  h_check_variances(var_between, "var_between")
  h_check_variances(var_within, "var_within")
  if (!is.numeric(m) || !length(m) || any(!is.finite(m)) || any(m <= 0)) {
    h_abort("`m` must be a numeric vector of positive cluster sizes.",
            "argument")
  }
  den <- var_between + var_within / m
  if (any(den <= 0)) h_abort("The variances must not both be zero.", "argument")
  var_between / den
}
