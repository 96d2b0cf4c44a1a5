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
#' @param use.u logical: if `TRUE`, condition on the BLUPs (the same as
#'   `re.form = NULL`, as lme4's `use.u`).
#' @param newdata optional data frame: simulate responses for its rows
#'   instead of the rows of the fit. Random effects of the fitted levels are
#'   the BLUPs (conditional simulation) or new draws (unconditional); new
#'   draws are made for every level present in `newdata`, and levels not in
#'   the fit need `allow.new.levels = TRUE` (with conditional simulation
#'   their random effects are zero).
#' @param allow.new.levels logical, see `newdata`.
#' @param na.action for `newdata`: what to do with rows whose fixed part is
#'   `NA` (missing covariates); `na.pass` (default) keeps them as `NA`,
#'   `na.omit` drops them.
#' @param weights optional prior weights for the rows of `newdata` (default
#'   1), so that residuals have variance `sigma^2 / weights`.
#' @param ... not used (a warning names anything passed here).
#' @return A data frame with `nobs(object)` rows (padded with `NA` rows when
#'   the fit used `na.action = na.exclude`, as lme4) or one row per row of
#'   `newdata`, and `nsim` columns `sim_1`, ..., `sim_<nsim>`, and attribute
#'   `"seed"`.
#' @seealso [refit()] to fit the model to a simulated response.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' sims <- simulate(fit, nsim = 2, seed = 1)
#' head(sims)
#' # conditional on the fitted subject effects
#' head(simulate(fit, nsim = 1, seed = 1, re.form = NULL))
#' # new subjects, days 0 to 9
#' nd <- data.frame(Days = 0:9, Subject = "new")
#' simulate(fit, seed = 1, newdata = nd, allow.new.levels = TRUE)$sim_1
#' @export
simulate.lmmr <- function(object, nsim = 1, seed = NULL, re.form = NA,
                          use.u = FALSE, newdata = NULL,
                          allow.new.levels = FALSE, na.action = stats::na.pass,
                          weights = NULL, ...) {
  h_check_lmm(object)
  h_check_dots(..., .fn = "simulate")
  h_check_flag(use.u, "use.u")
  h_check_flag(allow.new.levels, "allow.new.levels")
  if (use.u) re.form <- NULL
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
  design <- if (is.null(newdata)) h_sim_design_fit(object) else
    h_sim_design_newdata(object, newdata, allow.new.levels, weights)
  n <- length(design$base)
  base <- design$base
  for (t in which(keep)) {
    base <- base + design$blup_part[[t]]
  }
  res_sd <- object$sigma / sqrt(design$weights)
  # a zero-weight row does not contribute to the fit: its simulated value is
  # its mean (an infinite residual variance would make the refit fail)
  res_sd[design$weights == 0] <- 0
  out <- matrix(NA_real_, n, nsim)
  # the factor of each term's covariance, once for all simulations
  chs <- lapply(object$re_terms, function(t) h_chol_psd(t$cov))
  for (s in seq_len(nsim)) {
    eta <- base
    for (t in which(!keep)) {
      tm <- design$terms[[t]]
      eta <- eta + h_draw_term(object$re_terms[[t]], tm$codes, tm$Z, tm$n_levels,
                               ch = chs[[t]])
    }
    out[, s] <- eta + stats::rnorm(n, 0, res_sd)
  }
  rownames(out) <- design$rownames
  if (is.null(newdata)) {
    out <- stats::napredict(object$na_action, out)
  } else {
    kept <- h_apply_na_action(h_match_na_action(na.action), base)
    out <- out[kept, , drop = FALSE]
  }
  out <- as.data.frame(out)
  names(out) <- paste0("sim_", seq_len(nsim))
  attr(out, "seed") <- rng_state
  out
}

#' The parts simulate() needs for the rows of the fit
#' @noRd
h_sim_design_fit <- function(object) {
  terms <- lapply(object$re_terms, function(t) {
    list(codes = t$codes, Z = t$Z, n_levels = t$n_levels)
  })
  list(
    base = drop(object$X %*% object$beta) + object$offset,
    blup_part = lapply(object$re_terms, function(t) {
      rowSums(t$Z * t$b[t$codes + 1L, , drop = FALSE])
    }),
    terms = terms, weights = object$weights,
    rownames = rownames(object$frame)
  )
}

#' The parts simulate() needs for the rows of `newdata`: new draws are made
#' per level present in `newdata` (fitted levels first, then new ones)
#' @noRd
h_sim_design_newdata <- function(object, newdata, allow_new_levels, weights) {
  if (!is.data.frame(newdata)) h_abort("`newdata` must be a data frame.", "argument")
  m <- nrow(newdata)
  if (is.null(weights)) weights <- rep(1, m)
  if (!is.numeric(weights) || length(weights) != m || anyNA(weights) ||
      any(weights <= 0) || any(!is.finite(weights))) {
    h_abort(sprintf("`weights` must be positive finite numbers, one per row of `newdata` (%d).", m),
            "argument")
  }
  fx <- h_newdata_X(object$design_info, newdata)
  re <- h_newdata_re(object$re_terms, newdata, allow_new_levels)
  terms <- lapply(seq_along(re), function(i) {
    codes <- re[[i]]$codes
    G <- object$re_terms[[i]]$n_levels
    labs <- re[[i]]$labels
    new <- is.na(codes)
    if (any(new)) {
      # one new draw per distinct new level (an NA level gets its own draw
      # per row, as an unseen group)
      key <- ifelse(is.na(labs), paste0(".na", seq_along(labs)), as.character(labs))
      codes[new] <- G + match(key[new], unique(key[new])) - 1L
      G <- G + length(unique(key[new]))
    }
    list(codes = codes, Z = re[[i]]$Z, n_levels = G)
  })
  blup_part <- lapply(seq_along(re), function(i) {
    t <- object$re_terms[[i]]
    codes <- re[[i]]$codes
    v <- rowSums(re[[i]]$Z * t$b[ifelse(is.na(codes), 1L, codes + 1L), , drop = FALSE])
    v[is.na(codes)] <- 0
    v
  })
  list(base = drop(fx$X %*% object$beta) + fx$offset, blup_part = blup_part,
       terms = terms, weights = weights,
       rownames = rownames(newdata) %||% as.character(seq_len(m)))
}

#' Draw new random effects of one term (for `n_levels` levels) and return
#' their contribution Z b* on rows with 0-based level `codes`
#' @noRd
h_draw_term <- function(term, codes = term$codes, Z = term$Z,
                        n_levels = term$n_levels, ch = h_chol_psd(term$cov)) {
  k <- term$k
  b <- matrix(stats::rnorm(n_levels * k), n_levels, k) %*% ch
  rowSums(Z * b[codes + 1L, , drop = FALSE])
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
#' generic: lmmr's method is registered on it too (so `lme4::refit()` works
#' on lmmr fits), and lmmr's `refit()` on another model calls
#' `lme4::refit()` (the default method), so attaching lmmr after lme4
#' changes no result.
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
#' back to the data: the fit's kept model (cross-product blocks built once in
#' Rust) is reused and only its response part is recomputed; a fit restored
#' by [readRDS()] rebuilds it from the design stored in the fit. The refit
#' shares the kept model with `object`. This is robust to transformed responses (e.g.
#' `log(y) ~ ...`), to data that are no longer available, and to `subset` and
#' missing values (the new response is on the rows used in the fit).
#'
#' @param object an `"lmmr"` fit.
#' @param newresp (default: the fit's own response) numeric vector of
#'   length `nobs(object)` on the scale of
#'   the model's response (i.e. already transformed when the formula
#'   transforms the response), or a one-column data frame such as a column of
#'   [simulate.lmmr()] output. When rows were dropped for missing values
#'   (`na.omit` or `na.exclude`), a vector with the full length (including
#'   the dropped rows, which may be `NA`) is also accepted, as in lme4; its
#'   dropped rows are ignored.
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
  h_check_dots(..., .fn = "refit")
  h_check_lmm(object)
  if (missing(newresp)) newresp <- object$y # as lme4: refit to the same response
  h_check_flag(REML, "REML")
  y <- h_newresp(object, newresp)
  design <- h_design_from_fit(object, y)
  control <- object$control
  if (is.null(control)) control <- lmm_control()
  res <- h_fit_design(design, REML = REML, control = control, theta = theta,
                      engine = h_fit_engine(object))
  fit <- h_build_lmm(design, res, REML = REML, call = object$call,
                     control = control)
  fit$formula_input <- object$formula_input
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
  if (length(newresp) != n && !is.null(na) &&
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
    term$factor <- structure(t$codes + 1L, levels = t$levels, class = "factor")
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
    n_obs = h_n_obs(object),
    log_w_sum = if (!is.null(object$db)) object$db$log_w_sum
  ), info)
}
