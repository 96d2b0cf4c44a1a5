# Methods on generics of the stats package that other packages (car,
# multcomp, emmeans, insight, broom, stats::drop1) rely on: terms(),
# df.residual(), weights(), extractAIC(), drop1(), family(), hatvalues(),
# cooks.distance(). Shapes and values as lme4 1.1-31 / lmerTest 3.1-3 give
# for lmer fits.

#' Model terms of a linear mixed model
#'
#' As `terms()` for lme4 fits: the terms of the fixed-effects part by
#' default, of the random-effects part (bars replaced by `+`) with
#' `random.only = TRUE`, or of the whole model frame with
#' `fixed.only = FALSE`.
#'
#' @param x an `"lmmr"` fit.
#' @param fixed.only logical: terms of the fixed part only.
#' @param random.only logical: terms of the random part only.
#' @param ... unused.
#' @return A `"terms"` object.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' attr(terms(fit), "term.labels")
#' attr(terms(fit, random.only = TRUE), "term.labels")
#' @export
terms.lmmr <- function(x, fixed.only = TRUE, random.only = FALSE, ...) {
  if (missing(fixed.only) && random.only) fixed.only <- FALSE
  if (fixed.only && random.only) {
    h_abort("`fixed.only` and `random.only` cannot both be TRUE.", "argument")
  }
  if (fixed.only) {
    tt <- x$design_info$fixed_terms
    attr(tt, "lmmr_kept_columns") <- NULL
    return(tt)
  }
  if (random.only) {
    bars <- h_split_bars(x$formula)$bars
    txt <- vapply(bars, function(b) {
      paste(deparse(b[[2]], width.cutoff = 500L), "+",
            paste(deparse(b[[3]], width.cutoff = 500L), collapse = " "))
    }, character(1))
    f <- stats::as.formula(paste("~", paste(txt, collapse = " + ")),
                           env = environment(x$formula))
    return(stats::terms(f))
  }
  attr(x$frame, "terms")
}

#' Residual degrees of freedom, weights, AIC, family of a linear mixed model
#'
#' `df.residual()` is the number of observations minus the number of
#' parameters (fixed effects, covariance parameters and the residual
#' standard deviation), as lme4. `weights()` gives the prior weights (1 when
#' none were given) of the rows used in the fit, as lme4. `extractAIC()` gives the equivalent degrees of freedom
#' and the AIC of the ML fit (a REML fit is refitted by ML, as lme4), so
#' that `stats::step()`-style comparisons of fixed effects are valid.
#' `family()` is [stats::gaussian()].
#'
#' @param object,fit an `"lmmr"` fit.
#' @param type for `weights()`: only `"prior"` (working weights exist for
#'   generalised models only).
#' @param scale unused (must be 0, as for lme4 fits).
#' @param k penalty per parameter.
#' @param ... unused.
#' @return `df.residual()`: a number; `weights()`: a numeric vector;
#'   `extractAIC()`: `c(edf, AIC)`; `family()`: a `"family"` object.
#' @name lmmr-stats
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' df.residual(fit)
#' head(weights(fit))
#' extractAIC(fit)
#' family(fit)
NULL

#' @rdname lmmr-stats
#' @export
df.residual.lmmr <- function(object, ...) {
  object$n - h_npar(object)
}

#' @rdname lmmr-stats
#' @export
weights.lmmr <- function(object, type = c("prior", "working"), ...) {
  type <- match.arg(type)
  if (type == "working") {
    h_abort("Working weights are only defined for generalised linear mixed models; use type = \"prior\".",
            "argument")
  }
  object$weights # on the rows used, not padded (as lme4)
}

#' @rdname lmmr-stats
#' @export
extractAIC.lmmr <- function(fit, scale = 0, k = 2, ...) {
  if (!identical(scale, 0)) {
    h_abort("`scale` is not used for linear mixed models; leave it at 0.", "argument")
  }
  ml <- if (isTRUE(fit$REML)) suppressMessages(refit(fit, fit$y, REML = FALSE)) else fit
  ll <- stats::logLik(ml)
  edf <- attr(ll, "df")
  c(edf, -2 * as.numeric(ll) + k * edf)
}

#' @rdname lmmr-stats
#' @export
family.lmmr <- function(object, ...) stats::gaussian()

#' Leverages and Cook's distances of a linear mixed model
#'
#' The leverages are the diagonal of the hat matrix that maps the response
#' to the conditional fitted values `X beta + Z b` (fixed and random
#' effects), as `hatvalues()` for lme4 fits; Cook's distances are computed
#' from them and the Pearson residuals as lme4 does
#' (`(r / (1 - h))^2 h / (sigma^2 p)`), and the studentized residuals
#' (Pearson residual over `sigma * sqrt(1 - h)`) as lme4's `rstudent()`. The computation uses a dense
#' `n x (q + p)` matrix (q random-effect coefficients, p fixed effects), so
#' it is meant for moderate designs.
#'
#' @param model an `"lmmr"` fit.
#' @param ... unused.
#' @return A numeric vector with one value per observation; `influence()`:
#'   a list with element `hat`.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' summary(hatvalues(fit))
#' head(cooks.distance(fit))
#' @name lmmr-influence
NULL

#' @rdname lmmr-influence
#' @export
hatvalues.lmmr <- function(model, ...) {
  h <- stats::setNames(h_hat(model), rownames(model$frame))
  stats::napredict(model$na_action, h)
}

#' Leverages on the rows used in the fit
#' @noRd
h_hat <- function(model) {
  n <- model$n
  p <- ncol(model$X)
  q <- model$q
  if (as.numeric(n) * (q + p) > 5e7) {
    h_abort(sprintf("hatvalues() needs a dense %d x %d matrix here, which is too large.",
                    n, q + p), "too_large")
  }
  ZL <- matrix(0, n, q)
  off <- 0L
  for (t in model$re_terms) {
    zl <- t$Z %*% t$lambda
    for (j in seq_len(t$k)) {
      ZL[cbind(seq_len(n), off + t$codes * t$k + j)] <- zl[, j]
    }
    off <- off + t$n_levels * t$k
  }
  A <- cbind(ZL, model$X) * sqrt(model$weights)
  C <- crossprod(A)
  diag(C)[seq_len(q)] <- diag(C)[seq_len(q)] + 1
  rowSums((A %*% solve(C)) * A)
}

#' Cook's distances on the rows used in the fit, from the leverages `h`
#' @noRd
h_cooks <- function(model, h = h_hat(model)) {
  r <- (model$y - model$fitted) * sqrt(model$weights)
  p <- qr(model$X)$rank
  out <- (r / (1 - h))^2 * h / (model$sigma^2 * p)
  out[is.infinite(out)] <- NaN
  out
}

#' @rdname lmmr-influence
#' @export
cooks.distance.lmmr <- function(model, ...) {
  out <- stats::setNames(h_cooks(model), rownames(model$frame))
  stats::napredict(model$na_action, out)
}

#' @rdname lmmr-influence
#' @export
rstudent.lmmr <- function(model, ...) {
  # lme4's definition for linear mixed models: the Pearson residual over
  # sigma * sqrt(1 - h)
  h <- h_hat(model)
  r <- (model$y - model$fitted) * sqrt(model$weights) / (model$sigma * sqrt(1 - h))
  r[is.infinite(r)] <- NaN
  stats::napredict(model$na_action, stats::setNames(r, rownames(model$frame)))
}

#' @rdname lmmr-influence
#' @param do.coef for `influence()`: only `FALSE` is supported (leverages
#'   only, as `influence(lme4_fit, do.coef = FALSE)`); case-deletion
#'   estimates would need one refit per observation.
#' @export
influence.lmmr <- function(model, do.coef = FALSE, ...) {
  if (!isFALSE(do.coef)) {
    h_abort("influence() for lmm fits gives the leverages only; use do.coef = FALSE (case-deletion refits are not implemented).",
            "argument")
  }
  structure(list(hat = hatvalues(model)), class = "influence.lmmr")
}

#' Single-term deletions with F tests
#'
#' As lmerTest's `drop1()`: an F test (Satterthwaite or Kenward-Roger
#' denominator df) for each fixed-effect term that can be dropped while
#' respecting marginality (`drop.scope()`), with the type III hypotheses of
#' [anova.lmmr()].
#'
#' @param object an `"lmmr"` fit.
#' @param scope optional character vector of term labels to test (each must
#'   be droppable) or a formula; by default all marginal terms.
#' @param ddf `"Satterthwaite"` (default) or `"Kenward-Roger"`.
#' @param ... unused.
#' @return A data frame of class `c("anova", "data.frame")` with columns
#'   `Sum Sq`, `Mean Sq`, `NumDF`, `DenDF`, `F value`, `Pr(>F)`.
#' @examples
#' fit <- lmm(sbp ~ clinic_urban * smoker + age + (1 | clinic_id),
#'            data = phaa_clinics)
#' drop1(fit)
#' @export
drop1.lmmr <- function(object, scope, ddf = c("Satterthwaite", "Kenward-Roger"), ...) {
  ddf <- h_match_ddf(ddf)
  if (ddf == "none") h_abort("`ddf` must be \"Satterthwaite\" or \"Kenward-Roger\".", "ddf")
  tt <- stats::terms(object)
  marg <- stats::drop.scope(tt)
  if (missing(scope)) {
    scope <- marg
  } else {
    if (inherits(scope, "formula")) scope <- attr(stats::terms(scope), "term.labels")
    if (!is.character(scope) || !length(scope)) {
      h_abort("`scope` must be a non-empty character vector of term labels or a formula.",
              "argument")
    }
    bad <- setdiff(scope, marg)
    if (length(bad)) {
      h_abort(sprintf("Term(s) %s cannot be dropped (not in the model, or contained in other terms).",
                      paste(bad, collapse = ", ")), "argument")
    }
  }
  tab <- stats::anova(object, type = 3, ddf = ddf)
  tab <- tab[scope, , drop = FALSE]
  method <- if (ddf == "Satterthwaite") "Satterthwaite's" else "Kenward-Roger's"
  attr(tab, "heading") <- c(sprintf("Single term deletions using %s method:", method),
                            sprintf("\nModel:\n%s",
                                    paste(deparse(object$formula_input %||% object$formula,
                                                  width.cutoff = 500L), collapse = " ")))
  tab
}
