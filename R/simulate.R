# Parametric simulation from a fitted "lmmr" and refitting to a new response.

#' Simulate responses from a fitted linear mixed model
#'
#' Draws new responses from the fitted model, as `lme4::simulate.merMod()`.
#' With `re.form = NA` (default) the simulation is *unconditional*: new
#' random effects are drawn from their estimated distribution
#' `N(0, Sigma_t)` for every level of every term, new residuals from
#' `N(0, sigma^2 / w_i)`, and both are added to the fixed part
#' `X beta + offset`. With `re.form = NULL` the simulation is *conditional*
#' on the estimated random effects (BLUPs): only new residuals are added to
#' the fitted values. A formula such as `~ (1 | Subject)` conditions on the
#' BLUPs of the named grouping factors and draws new random effects for the
#' others.
#'
#' @param object an `"lmmr"` fit.
#' @param nsim number of simulated responses.
#' @param seed `NULL` or an integer passed to [set.seed()]; as in
#'   [stats::simulate()] the random number generator state used is stored in
#'   the attribute `"seed"` of the result.
#' @param re.form `NA` (or `~0`, default) for unconditional simulation, `NULL`
#'   to condition on all BLUPs, or a formula with some of the model's
#'   random-effect terms.
#' @param ... unused.
#' @return A data frame with `nobs(object)` rows and `nsim` columns
#'   `sim_1`, ..., `sim_<nsim>`, row names as the model frame, and attribute
#'   `"seed"`.
#' @seealso [refit()] to fit the model to a simulated response.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' sims <- simulate(fit, nsim = 2, seed = 1)
#' head(sims)
#' # conditional on the fitted subject effects
#' head(simulate(fit, nsim = 1, seed = 1, re.form = NULL))
#' @export
simulate.lmmr <- function(object, nsim = 1, seed = NULL, re.form = NA, ...) {
  h_check_lmm(object)
  if (!is.numeric(nsim) || length(nsim) != 1L || !is.finite(nsim) || nsim < 1 ||
      nsim != round(nsim)) {
    h_abort(sprintf("`nsim` must be a single positive whole number; got %s.",
                    paste(deparse(nsim), collapse = " ")), "argument")
  }
  nsim <- as.integer(nsim)
  if (!exists(".Random.seed", envir = .GlobalEnv, inherits = FALSE)) {
    stats::runif(1)
  }
  if (is.null(seed)) {
    rng_state <- get(".Random.seed", envir = .GlobalEnv)
  } else {
    old_seed <- get(".Random.seed", envir = .GlobalEnv)
    on.exit(assign(".Random.seed", old_seed, envir = .GlobalEnv))
    set.seed(seed)
    rng_state <- structure(seed, kind = as.list(RNGkind()))
  }
  keep <- h_re_form_terms(object, re.form)
  partial <- vapply(attr(keep, "columns"), function(m) any(m) && !all(m), logical(1))
  if (any(partial)) {
    h_abort(sprintf("simulate() conditions on whole random-effect terms; `re.form` selects only some columns of %s. Use whole terms, e.g. re.form = NULL or NA.",
                    paste(vapply(object$re_terms[partial], function(t) {
                      sprintf("(%s | %s)", paste(t$cnms, collapse = " + "), t$group)
                    }, character(1)), collapse = ", ")), "argument")
  }
  n <- object$n
  base <- drop(object$X %*% object$beta) + object$offset
  for (t in which(keep)) {
    term <- object$re_terms[[t]]
    base <- base + rowSums(term$Z * term$b[term$codes + 1L, , drop = FALSE])
  }
  res_sd <- object$sigma / sqrt(object$weights)
  # a zero-weight row does not contribute to the fit: its simulated value is
  # its mean (an infinite residual variance would make the refit fail)
  res_sd[object$weights == 0] <- 0
  out <- matrix(NA_real_, n, nsim)
  for (s in seq_len(nsim)) {
    eta <- base
    for (t in which(!keep)) {
      eta <- eta + h_draw_term(object$re_terms[[t]])
    }
    out[, s] <- eta + stats::rnorm(n, 0, res_sd)
  }
  out <- as.data.frame(out)
  names(out) <- paste0("sim_", seq_len(nsim))
  rownames(out) <- rownames(object$frame)
  attr(out, "seed") <- rng_state
  out
}

#' Draw new random effects of one term and return their contribution Z b*
#' @noRd
h_draw_term <- function(term) {
  k <- term$k
  G <- term$n_levels
  ch <- h_chol_psd(term$cov)
  b <- matrix(stats::rnorm(G * k), G, k) %*% ch
  rowSums(term$Z * b[term$codes + 1L, , drop = FALSE])
}

#' Upper-triangular factor R with R'R = S for a positive semi-definite S
#' @noRd
h_chol_psd <- function(S) {
  e <- eigen(S, symmetric = TRUE)
  vals <- pmax(e$values, 0)
  t(e$vectors %*% diag(sqrt(vals), length(vals)))
}

#' Refit a model to a new response
#'
#' Generic with a method for `"lmmr"` fits. `lme4` also has a `refit()`
#' generic; when both packages are attached the one attached last masks the
#' other (use `lmmr::refit()` explicitly if needed).
#'
#' @param object a fitted model.
#' @param newresp the new response, see the method.
#' @param ... passed to methods.
#' @return A refitted model of the same class as `object`.
#' @examples
#' fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
#' fit2 <- refit(fit, simulate(fit, seed = 1)[[1]])
#' fixef(fit2)
#' @export
refit <- function(object, newresp, ...) UseMethod("refit")

#' Refit an `"lmmr"` fit to a new response
#'
#' Refits exactly the same model (same fixed-effects design, random-effects
#' structure, weights and offset) to a new response vector, without going
#' back to the data: the design is rebuilt from the fitted object and passed
#' to the Rust fitting kernel. This is robust to transformed responses (e.g.
#' `log(y) ~ ...`), to data that are no longer available, and to `subset` and
#' missing values (the new response is on the rows used in the fit).
#'
#' @param object an `"lmmr"` fit.
#' @param newresp numeric vector of length `nobs(object)` on the scale of
#'   the model's response (i.e. already transformed when the formula
#'   transforms the response), or a one-column data frame such as a column of
#'   [simulate.lmmr()] output. When the fit used `na.action = na.exclude`, a
#'   vector with the full length (including the excluded rows) is also
#'   accepted; its excluded rows are dropped.
#' @param REML logical: `TRUE` for REML, `FALSE` for ML; by default as the
#'   original fit.
#' @param theta optional starting values for the relative covariance factor
#'   (default: the starting values of the original fit's control).
#' @param ... unused.
#' @return A new `"lmmr"` fit whose `call` is that of `object` and whose
#'   response `y` is `newresp`.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' y_new <- simulate(fit, seed = 42)$sim_1
#' fixef(refit(fit, y_new))
#' # maximum likelihood on a transformed response
#' logLik(refit(fit, log(sleepstudy$Reaction), REML = FALSE))
#' @export
refit.lmmr <- function(object, newresp, REML = object$REML, theta = NULL, ...) {
  h_check_lmm(object)
  h_check_flag(REML, "REML")
  y <- h_newresp(object, newresp)
  design <- h_design_from_fit(object, y)
  control <- object$control
  if (is.null(control)) control <- lmm_control()
  res <- h_fit_design(design, REML = REML, control = control, theta = theta)
  fit <- h_build_lmm(design, res, REML = REML, call = object$call,
                     control = control)
  fit
}

#' Check and align a new response for refit()
#' @noRd
h_newresp <- function(object, newresp) {
  if (is.data.frame(newresp)) {
    if (ncol(newresp) != 1L) {
      h_abort("`newresp` must be a numeric vector or a one-column data frame.",
              "argument")
    }
    newresp <- newresp[[1L]]
  }
  if (is.matrix(newresp) && ncol(newresp) == 1L) newresp <- drop(newresp)
  if (!is.numeric(newresp) || !is.null(dim(newresp))) {
    h_abort("`newresp` must be a numeric vector or a one-column data frame.",
            "argument")
  }
  n <- object$n
  na <- object$na_action
  if (length(newresp) != n && inherits(na, "exclude") &&
      length(newresp) == n + length(na)) {
    newresp <- newresp[-as.integer(na)]
  }
  if (length(newresp) != n) {
    h_abort(sprintf("`newresp` must have length %d (the number of observations used in the fit), not %d.",
                    n, length(newresp)), "argument")
  }
  if (any(!is.finite(newresp))) {
    h_abort("`newresp` contains NA/NaN/Inf values.", "non_finite")
  }
  as.numeric(newresp)
}

#' Rebuild the model design (as h_model_design()) from a fitted object
#' @noRd
h_design_from_fit <- function(object, y) {
  terms <- lapply(object$re_terms, function(t) {
    term <- t$info
    term$factor <- factor(t$levels[t$codes + 1L], levels = t$levels)
    term$codes <- t$codes
    term$Z <- t$Z
    term$group <- t$group
    term$cnms <- t$cnms
    term$levels <- t$levels
    term$n_levels <- t$n_levels
    term$factor_id <- t$factor_id
    term$lhs <- t$lhs
    term
  })
  frame <- object$frame
  if (!is.null(frame) && ncol(frame) >= 1L) {
    resp <- attr(attr(frame, "terms"), "response")
    if (isTRUE(resp == 1L) && is.null(dim(frame[[1L]]))) frame[[1L]] <- y
  }
  info <- object$design_info
  c(list(
    y = y,
    X = object$X,
    dropped = object$dropped,
    weights = object$weights,
    offset = object$offset,
    has_weights = isTRUE(object$has_weights),
    re = list(terms = terms, q = as.integer(object$q)),
    frame = frame,
    formula = object$formula,
    na_action = object$na_action,
    n = object$n,
    n_obs = h_n_obs(object)
  ), info)
}
