# Box-Cox transformation of the response of a linear mixed model: profile
# log-likelihood over lambda from ML refits, with the Jacobian of the
# transformation so that the likelihoods are on the scale of the original y.

#' Box-Cox transformation of the response
#'
#' Generic with a method for `"lmmr"` fits. `MASS::boxcox()` is a function of
#' the same name; whichever package is attached last masks the other (use
#' `lmmr::boxcox()` to be explicit).
#'
#' @param object a fitted model.
#' @param ... passed to methods.
#' @return See [boxcox.lmmr()].
#' @examples
#' fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
#' boxcox(fit, lambda = seq(-1, 1, 0.25))
#' @export
boxcox <- function(object, ...) UseMethod("boxcox")

#' @rdname boxcox
#' @export
boxcox.default <- function(object, ...) {
  h_abort(sprintf("boxcox() here needs a linear mixed model fitted by lmm(), not an object of class \"%s\" (for lm fits see MASS::boxcox()).",
                  paste(class(object), collapse = "/")), "unsupported_model")
}

#' Box-Cox profile likelihood of a linear mixed model
#'
#' For each `lambda`, the model is refitted by maximum likelihood (ML, not
#' REML: REML likelihoods of different responses are not comparable) to the
#' transformed response `y(lambda) = (y^lambda - 1) / lambda`
#' (`log(y)` for `lambda = 0`), and its log-likelihood is put back on the
#' scale of `y` by adding the log-Jacobian of the transformation,
#' `(lambda - 1) * sum(log(y))`:
#'
#' `l(lambda) = logLik_ML(y(lambda)) + (lambda - 1) * sum(log(y))`.
#'
#' The best `lambda` maximises `l`; it is located on the grid and refined by
#' [optimize()] between the neighbouring grid points. The confidence interval
#' is the likelihood-ratio interval `{lambda: 2 (l(best) - l(lambda)) <=
#' qchisq(level, 1)}`, with end points found by [uniroot()] between grid
#' points; an end point is `NA` when the interval extends beyond the grid.
#'
#' The transformation applies to the model's response as it appears in the
#' formula (so `log(y) ~ ...` would be transformed again: fit the
#' untransformed response). The fixed-effects design, random effects, weights
#' and offset are kept; an offset is on the transformed scale, so a warning
#' is given when there is one. Fits are done with [refit()] on the
#' transformed response divided by its standard deviation `s` (for numerical
#' stability when `y^lambda` is tiny or huge), and `n log(s)` is subtracted
#' from the log-likelihood, which is exact since ML fits are
#' scale-equivariant (not done when there is an offset). A fit that does not
#' meet the model's convergence tolerance is retried with tolerance `1e-8`
#' (from the default and then from the original fit's `theta`); fits that still do not converge are reported in a single warning
#' of class `"lmmr_warning_convergence"`.
#'
#' Once a scale is chosen (preferably an interpretable `lambda` inside the
#' interval: 1 none, 0.5 square root, 0 log, -1 reciprocal), refit the final
#' model on that scale **with REML** (the default of [lmm()]).
#'
#' @param object an `"lmmr"` fit with a strictly positive response.
#' @param lambda grid of values of the transformation parameter. Values at
#'   which `y^lambda` overflows, or leaves the transformed response constant
#'   to machine precision, are skipped with a warning of class
#'   `"lmmr_warning_boxcox_range"` (their `loglik` is `NA`).
#' @param level confidence level of the interval for `lambda`.
#' @param ... unused.
#' @return An object of class `"lmm_boxcox"`: a list with `lambda` (the
#'   grid), `loglik` (the profile log-likelihood on the grid), `best`, its
#'   `loglik_best`, `ci` (lower, upper), `level`, `cutoff` (the
#'   log-likelihood at the interval's end points), `jacobian_term`
#'   (`sum(log(y))`) and `n`. It has [print()] and [plot()] methods.
#' @references Box, G. E. P. and Cox, D. R. (1964). An analysis of
#'   transformations. *Journal of the Royal Statistical Society B* 26,
#'   211-252.
#' @examples
#' fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
#' bc <- boxcox(fit, lambda = seq(-2, 2, 0.2))
#' bc
#' plot(bc)
#' @export
boxcox.lmmr <- function(object, lambda = seq(-2, 2, 0.1), level = 0.95, ...) {
  h_check_dots(..., .fn = "boxcox")
  h_check_lmm(object)
  y <- object$y
  if (any(y <= 0)) {
    h_abort(sprintf("The Box-Cox transformation needs a strictly positive response; %d of %d values are <= 0 (minimum %s). Shift the response (e.g. y + c) before fitting, or use another transformation.",
                    sum(y <= 0), length(y), format(min(y))), "nonpositive_response")
  }
  if (!is.numeric(lambda) || length(lambda) < 2L || any(!is.finite(lambda))) {
    h_abort("`lambda` must be a numeric vector of at least two finite values.",
            "argument")
  }
  h_check_level(level, "level")
  lambda <- sort(unique(lambda))
  if (any(object$offset != 0)) {
    h_warn("The model has an offset; it is kept as is on the transformed scale, which is rarely what is intended.",
           "boxcox_offset")
  }
  sum_log_y <- sum(log(y))
  rescale <- all(object$offset == 0)
  failed <- numeric(0)
  # values of lambda at which y^lambda cannot be represented: it overflows
  # (Inf) or the transformed response is constant to machine precision
  status <- vapply(lambda, function(lam) h_boxcox_status(y, lam), character(1))
  if (any(status != "ok")) {
    over <- lambda[status == "overflow"]
    flat <- lambda[status == "flat"]
    fmt <- function(v) paste(format(signif(v, 4)), collapse = ", ")
    msg <- c(
      if (length(over)) sprintf("overflows (y^lambda is Inf) at lambda = %s", fmt(over)),
      if (length(flat)) sprintf("is constant to machine precision at lambda = %s", fmt(flat)))
    if (sum(status == "ok") < 2L) {
      h_abort(sprintf("The transformed response (y^lambda - 1) / lambda %s; fewer than two usable values of `lambda` remain. Use a narrower `lambda` grid (e.g. seq(-2, 2, 0.1)).",
                      paste(msg, collapse = " and ")), "argument")
    }
    h_warn(sprintf("The transformed response (y^lambda - 1) / lambda %s; these values of `lambda` are skipped (profile log-likelihood NA).",
                   paste(msg, collapse = " and ")), "boxcox_range")
  }
  ok_lambda <- lambda[status == "ok"]
  prof <- function(lam) {
    if (h_boxcox_status(y, lam) != "ok") return(-Inf)
    yt <- h_boxcox_transform(y, lam)
    # ML fits are scale-equivariant: fitting yt / s and subtracting n log(s)
    # gives the same log-likelihood, with better-conditioned numbers when
    # y^lambda is tiny or huge
    s <- if (rescale) stats::sd(yt) else 1
    if (!is.finite(s) || s <= 0) s <- 1
    fit <- h_quiet_refit(object, yt / s)
    if (!isTRUE(fit$optinfo$converged)) {
      # retry once with a looser (still tight) convergence tolerance
      relaxed <- object
      relaxed$control$tol <- max(object$control$tol, 1e-8)
      fit <- h_quiet_refit(relaxed, yt / s)
      if (!isTRUE(fit$optinfo$converged)) {
        # and from the estimates of the original fit as starting values
        fit <- h_quiet_refit(relaxed, yt / s, theta = object$theta)
      }
      if (!isTRUE(fit$optinfo$converged)) failed <<- c(failed, lam)
    }
    as.numeric(logLik(fit)) - length(y) * log(s) + (lam - 1) * sum_log_y
  }
  ll_ok <- vapply(ok_lambda, prof, numeric(1))
  ll <- rep(NA_real_, length(lambda))
  ll[status == "ok"] <- ll_ok
  i <- which.max(ll_ok)
  best <- ok_lambda[i]
  ll_best <- ll_ok[i]
  if (i > 1L && i < length(ok_lambda)) {
    opt <- stats::optimize(prof, c(ok_lambda[i - 1L], ok_lambda[i + 1L]),
                           maximum = TRUE, tol = 1e-6)
    if (opt$objective > ll_best) {
      best <- opt$maximum
      ll_best <- opt$objective
    }
  }
  cutoff <- ll_best - stats::qchisq(level, 1) / 2
  g <- function(lam) prof(lam) - cutoff
  lower <- NA_real_
  upper <- NA_real_
  left <- which(ok_lambda <= best & ll_ok < cutoff)
  if (length(left)) {
    a <- ok_lambda[max(left)]
    lower <- stats::uniroot(g, c(a, best), tol = 1e-6)$root
  }
  right <- which(ok_lambda >= best & ll_ok < cutoff)
  if (length(right)) {
    b <- ok_lambda[min(right)]
    upper <- stats::uniroot(g, c(best, b), tol = 1e-6)$root
  }
  if (length(failed)) {
    h_warn(sprintf("The ML fit did not converge for lambda = %s; the profile may be inaccurate there.",
                   paste(format(unique(signif(failed, 3))), collapse = ", ")),
           "convergence")
  }
  structure(list(lambda = lambda, loglik = ll, best = best,
                 loglik_best = ll_best, ci = c(lower = lower, upper = upper),
                 level = level, cutoff = cutoff, jacobian_term = sum_log_y,
                 n = length(y), response = deparse(object$formula[[2L]])),
            class = "lmm_boxcox")
}

#' ML refit with convergence warnings and messages muffled (checked by caller)
#' @noRd
h_quiet_refit <- function(object, y, theta = NULL) {
  withCallingHandlers(
    suppressMessages(refit(object, y, REML = FALSE, theta = theta)),
    lmmr_warning_convergence = function(w) invokeRestart("muffleWarning")
  )
}

#' Can the Box-Cox transform of `y` at `lambda` be used? "ok", "overflow"
#' (non-finite values) or "flat" (no variation left in double precision)
#' @noRd
h_boxcox_status <- function(y, lambda) {
  yt <- h_boxcox_transform(y, lambda)
  if (any(!is.finite(yt))) return("overflow")
  spread <- diff(range(yt))
  if (diff(range(y)) > 0 && !(spread > 1e-9 * max(abs(yt)))) return("flat")
  "ok"
}

#' Box-Cox transformation (log at lambda = 0)
#' @noRd
h_boxcox_transform <- function(y, lambda) {
  if (abs(lambda) < 1e-10) log(y) else (y^lambda - 1) / lambda
}

#' @export
print.lmm_boxcox <- function(x, digits = 3, ...) {
  cat(sprintf("Box-Cox transformation of %s (ML profile log-likelihood over %d values of lambda)\n\n",
              x$response, length(x$lambda)))
  ci_txt <- vapply(x$ci, function(v) {
    if (is.na(v)) "beyond the grid" else formatC(v, digits = digits, format = "f")
  }, character(1))
  cat(sprintf("  Best lambda: %s (log-likelihood %s)\n",
              formatC(x$best, digits = digits, format = "f"),
              formatC(x$loglik_best, digits = 2, format = "f")))
  cat(sprintf("  %g%% likelihood-ratio interval: [%s, %s]\n",
              100 * x$level, ci_txt[1], ci_txt[2]))
  nice <- c(`1 (no transformation)` = 1, `0.5 (square root)` = 0.5,
            `0 (log)` = 0, `-0.5 (reciprocal square root)` = -0.5,
            `-1 (reciprocal)` = -1)
  lo <- if (is.na(x$ci[1])) -Inf else x$ci[1]
  hi <- if (is.na(x$ci[2])) Inf else x$ci[2]
  inside <- nice[nice >= lo & nice <= hi]
  if (length(inside)) {
    pick <- inside[which.min(abs(inside - x$best))]
    cat(sprintf("  Interpretable choice inside the interval: lambda = %s\n",
                names(pick)))
  }
  cat("\n  The profile uses ML fits. Refit the final model on the chosen scale with\n",
      " REML (the default of lmm()) before reporting it.\n", sep = "")
  invisible(x)
}

#' Plot a Box-Cox profile
#'
#' Draws the profile log-likelihood against `lambda` with the best value and
#' the likelihood-ratio confidence interval (base graphics).
#'
#' @param x an `"lmm_boxcox"` object from [boxcox.lmmr()].
#' @param xlab,ylab,main axis labels and title.
#' @param ... further arguments passed to [plot.default()].
#' @return `x`, invisibly.
#' @examples
#' fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
#' plot(boxcox(fit, lambda = seq(-2, 2, 0.25)))
#' @export
plot.lmm_boxcox <- function(x, xlab = expression(lambda),
                            ylab = "profile log-likelihood",
                            main = "Box-Cox profile (ML)", ...) {
  graphics::plot(x$lambda, x$loglik, type = "l", xlab = xlab, ylab = ylab,
                 main = main, ...)
  graphics::abline(h = x$cutoff, lty = 3, col = "grey40")
  graphics::abline(v = x$best, lty = 2)
  ci <- x$ci[!is.na(x$ci)]
  if (length(ci)) graphics::abline(v = ci, lty = 3)
  graphics::mtext(sprintf("best %.2f, %g%% CI [%s, %s]", x$best, 100 * x$level,
                          if (is.na(x$ci[1])) "?" else sprintf("%.2f", x$ci[1]),
                          if (is.na(x$ci[2])) "?" else sprintf("%.2f", x$ci[2])),
                  side = 3, line = 0.3, cex = 0.8)
  invisible(x)
}
