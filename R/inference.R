#' The one REML check of Kenward-Roger (lmm and residual-structure fits)
#' @param kr whether Kenward-Roger is asked for
#' @noRd
h_require_reml_for_kr <- function(object, kr) {
  if (isTRUE(kr) && !isTRUE(object$REML)) {
    h_abort("Kenward-Roger's method is only available for REML fits; refit the model with REML = TRUE (e.g. update(fit, REML = TRUE)).",
            "reml_required")
  }
  invisible()
}

# Small-sample inference for lmm fits: Satterthwaite and Kenward-Roger
# denominator degrees of freedom for coefficient t tests, general contrasts
# (contest()) and type I/II/III ANOVA tables (anova.lmmr()). The heavy algebra
# (Hessian of the deviance, Jacobian of Cov(beta), Kenward-Roger adjusted
# covariance) is done in Rust (src/rust/inference); here only p x p algebra.

# ---------------------------------------------------------------------------
# Rust ingredients
# ---------------------------------------------------------------------------

#' Satterthwaite / Kenward-Roger ingredients of a fit, computed in Rust
#'
#' From the fit's kept model (its cross-product blocks and factorisation,
#' rebuilt from the plain data after readRDS()): nothing is sent to Rust
#' again but theta and sigma.
#' @param method "satterthwaite", "kenward-roger" or "both".
#' @noRd
h_inference_parts <- function(object, method = "satterthwaite") {
  if (inherits(object, "lmmr_rcov")) return(h_rcov_inference_parts(object, method))
  h_require_reml_for_kr(object, method %in% c("kenward-roger", "both"))
  res <- rs_inference(
    h_model_ptr(object),
    theta = as.numeric(object$theta),
    sigma = as.numeric(object$sigma),
    reml = isTRUE(object$REML),
    method = method
  )
  h_check_rust_result(res)
}

# ---------------------------------------------------------------------------
# Degrees of freedom for a contrast
# ---------------------------------------------------------------------------

#' Satterthwaite df for a single contrast vector `l` (lmerTest's formula)
#' @noRd
h_sat_df1 <- function(sat, l) {
  v <- drop(crossprod(l, sat$vcov_beta %*% l))
  g <- vapply(sat$jacobian, function(J) drop(crossprod(l, J %*% l)), numeric(1))
  denom <- drop(crossprod(g, sat$vcov_varpar %*% g))
  2 * v^2 / denom
}

#' Denominator df of an F statistic built from q independent t statistics
#' with Satterthwaite df `nu` (Fai & Cornelius 1996; as lmerTest/SAS)
#' @noRd
h_fstat_ddf <- function(nu, tol = 1e-8) {
  if (length(nu) == 1L) return(nu)
  if (all(abs(diff(nu)) < tol)) return(mean(nu))
  if (any(nu <= 2)) return(2)
  E <- sum(nu / (nu - 2))
  2 * E / (E - length(nu))
}

#' Kenward-Roger scaling and denominator df for a full-row-rank contrast
#' matrix `L` (Kenward & Roger 1997, section 3; as pbkrtest)
#' @noRd
h_kr_ddf <- function(kr, L) {
  L <- rbind(L)
  q <- nrow(L)
  Phi <- kr$phi
  Theta <- crossprod(L, solve(L %*% Phi %*% t(L), L))
  ThPhi <- Theta %*% Phi
  tp <- lapply(kr$p_list, function(P) ThPhi %*% P %*% Phi)
  tr <- vapply(tp, function(m) sum(diag(m)), numeric(1))
  W <- kr$w
  A1 <- drop(crossprod(tr, W %*% tr))
  A2 <- 0
  ng <- length(tp)
  for (i in seq_len(ng)) {
    for (j in seq_len(ng)) {
      A2 <- A2 + W[i, j] * sum(tp[[i]] * t(tp[[j]]))
    }
  }
  B <- (A1 + 6 * A2) / (2 * q)
  g <- ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
  den <- 3 * q + 2 * (1 - g)
  c1 <- g / den
  c2 <- (q - g) / den
  c3 <- (q + 2 - g) / den
  # With few error df (a split-plot whose whole-plot stratum has 2 df) both
  # 1 - A2/q and 1 - c2 B vanish and their ratio is 0/0; pbkrtest 0.5.2
  # takes such a ratio as 1 when both are below 1e-14, treats
  # |1 + c1 B| < 1e-10 as 0 and uses no F scaling when the df are within
  # 0.01 of 2. The ratio is computed in a form without the cancellation
  # (h_kr_e_over_v1()), so it is also right when rounding leaves both at
  # ~1e-13 (a large whole-plot variance); the other guards are pbkrtest's.
  e_red <- 1 - A2 / q
  V0 <- 1 + c1 * B
  V2 <- 1 - c3 * B
  if (abs(V0) < 1e-10) V0 <- 0
  ratio <- h_kr_e_over_v1(A1, A2, q)
  rho <- ratio^2 * V0 / (q * V2)
  ddf <- 4 + (q + 2) / (q * rho - 1)
  scaling <- if (is.finite(ddf) && abs(ddf - 2) < 0.01) 1 else
    ddf * e_red / (ddf - 2)
  if (!is.finite(ddf) || !is.finite(scaling)) {
    # no information on the variance parameters in this direction
    ddf <- if (is.finite(ddf)) ddf else Inf
    scaling <- 1
  }
  list(ddf = ddf, scaling = scaling)
}

#' (1 - A2 / q) / (1 - c2 B) of the Kenward-Roger approximation without
#' cancellation
#'
#' Substituting B and c2 (functions of A1, A2, q) and writing
#' d = A1 - q A2 and e = q - A2, the ratio is exactly
#' 2 e D / N with D = (q + 2)(q + 6) A2 - 2 (q + 1) d and
#' N = e (2 (q + 2)(q + 6) A2 - (q^2 + 5q + 2) d) + q (q - 1)(q + 2) d +
#' (q + 1) d^2, so it is 1 whenever d = 0: always for q = 1 (Theta is then
#' of rank one and A1 = A2) and when the F test is exact (balanced designs,
#' where A1 = q A2). The naive quotient is 0/0 when e = 0 (an error stratum
#' with 2 df) and returns rounding noise there (DenDF 2.005 instead of 2).
#' @noRd
h_kr_e_over_v1 <- function(A1, A2, q) {
  d <- A1 - q * A2
  if (q == 1 || abs(d) <= 1e-10 * max(abs(A1), abs(q * A2))) return(1)
  e <- q - A2
  D <- (q + 2) * (q + 6) * A2 - 2 * (q + 1) * d
  N <- e * (2 * (q + 2) * (q + 6) * A2 - (q^2 + 5 * q + 2) * d) +
    q * (q - 1) * (q + 2) * d + (q + 1) * d^2
  h_ratio_00(2 * e * D, N)
}

#' x / y, or 1 when both are numerically zero (a 0/0 limit of the KR
#' approximation)
#' @noRd
h_ratio_00 <- function(x, y, tol = 1e-14) {
  if (abs(x) < tol && abs(y) < tol) 1 else x / y
}

#' Coefficient standard errors and df (used by summary.lmmr())
#'
#' @param object an `"lmmr"` fit.
#' @param ddf `"Satterthwaite"` or `"Kenward-Roger"`.
#' @return `list(se =, df =)`, one value per fixed-effect coefficient; the
#'   standard errors are Kenward-Roger adjusted for `"Kenward-Roger"`.
#' @noRd
h_coef_ddf <- function(object, ddf) {
  ddf <- h_match_ddf(ddf)
  p <- length(object$beta)
  nms <- names(object$beta)
  if (p == 0L) return(list(se = numeric(0), df = numeric(0)))
  if (ddf == "none") {
    return(list(se = stats::setNames(sqrt(diag(object$vcov)), nms),
                df = stats::setNames(rep(NA_real_, p), nms)))
  }
  if (ddf == "Satterthwaite") {
    sat <- h_inference_parts(object, "satterthwaite")$satterthwaite
    df <- vapply(seq_len(p), function(j) {
      l <- numeric(p)
      l[j] <- 1
      h_sat_df1(sat, l)
    }, numeric(1))
    se <- sqrt(diag(object$vcov))
  } else {
    kr <- h_inference_parts(object, "kenward-roger")$kenward_roger
    df <- vapply(seq_len(p), function(j) {
      l <- numeric(p)
      l[j] <- 1
      h_kr_ddf(kr, matrix(l, nrow = 1))$ddf
    }, numeric(1))
    se <- sqrt(diag(kr$phi_adj))
  }
  list(se = stats::setNames(se, nms), df = stats::setNames(df, nms))
}

# ---------------------------------------------------------------------------
# Contrast tests
# ---------------------------------------------------------------------------

#' Reduce a contrast matrix to full row rank in the metric of `V`
#' (eigen-decomposition of L V L'); returns the new contrasts, the matching
#' right-hand side and whether the rank was reduced.
#' @noRd
h_reduce_contrast <- function(L, V, rhs) {
  VL <- L %*% V %*% t(L)
  VL <- (VL + t(VL)) / 2
  e <- eigen(VL, symmetric = TRUE)
  tol <- sqrt(.Machine$double.eps)
  pos <- e$values > tol * max(abs(e$values), 0)
  if (!any(pos) && nrow(L) > 0 && max(abs(e$values)) > 0) pos[1] <- TRUE
  P <- e$vectors[, pos, drop = FALSE]
  list(L = t(P) %*% L, rhs = drop(crossprod(P, rhs)), values = e$values[pos],
       reduced = sum(pos) < nrow(L), vectors = P)
}

#' Multi-df test of L beta = rhs (Satterthwaite, Kenward-Roger or none)
#' @return named numeric: Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F)
#' @noRd
h_contest_md <- function(object, L, rhs, ddf, parts, warn = TRUE) {
  beta <- object$beta
  sigma2 <- object$sigma^2
  empty <- c(`Sum Sq` = NA_real_, `Mean Sq` = NA_real_, NumDF = 0,
             DenDF = NA_real_, `F value` = NA_real_, `Pr(>F)` = NA_real_)
  if (nrow(L) == 0L) return(empty)
  V <- if (ddf == "Kenward-Roger") parts$kenward_roger$phi else object$vcov
  red <- h_reduce_contrast(L, V, rhs)
  if (red$reduced && warn) {
    h_warn(sprintf("The contrast matrix has %d rows but rank %d; testing the %d-dimensional hypothesis it spans.",
                   nrow(L), nrow(red$L), nrow(red$L)), "contrast")
  }
  Lr <- red$L
  q <- nrow(Lr)
  if (q == 0L) return(empty)
  est <- drop(Lr %*% beta) - red$rhs
  if (ddf == "Kenward-Roger") {
    kr <- parts$kenward_roger
    VA <- Lr %*% kr$phi_adj %*% t(Lr)
    wald <- drop(crossprod(est, solve(VA, est)))
    adj <- h_kr_ddf(kr, Lr)
    # Mean Sq from the unscaled Wald F (as lmerTest), the F value scaled
    ms <- wald / q * sigma2
    Fval <- adj$scaling * wald / q
    dendf <- adj$ddf
  } else {
    Fval <- sum(est^2 / red$values) / q
    if (ddf == "Satterthwaite") {
      sat <- parts$satterthwaite
      nu <- vapply(seq_len(q), function(m) h_sat_df1(sat, Lr[m, ]), numeric(1))
      dendf <- h_fstat_ddf(nu)
    } else {
      dendf <- NA_real_
    }
  }
  if (ddf != "Kenward-Roger") ms <- Fval * sigma2
  c(`Sum Sq` = ms * q, `Mean Sq` = ms, NumDF = q, DenDF = dendf,
    `F value` = Fval,
    `Pr(>F)` = if (is.na(dendf)) NA_real_ else
      stats::pf(Fval, q, dendf, lower.tail = FALSE))
}

#' One-df t test of l beta = rhs
#' @noRd
h_contest_1d <- function(object, l, rhs, ddf, parts) {
  est <- sum(l * object$beta)
  if (ddf == "Kenward-Roger") {
    kr <- parts$kenward_roger
    se <- sqrt(drop(crossprod(l, kr$phi_adj %*% l)))
    df <- h_kr_ddf(kr, matrix(l, nrow = 1))$ddf
  } else {
    se <- sqrt(drop(crossprod(l, object$vcov %*% l)))
    df <- if (ddf == "Satterthwaite") h_sat_df1(parts$satterthwaite, l) else NA_real_
  }
  tval <- (est - rhs) / se
  c(Estimate = est, `Std. Error` = se, df = df, `t value` = tval,
    `Pr(>|t|)` = if (is.na(df)) NA_real_ else
      2 * stats::pt(abs(tval), df, lower.tail = FALSE))
}

#' @noRd
h_parts_for <- function(object, ddf) {
  switch(ddf,
         "Satterthwaite" = h_inference_parts(object, "satterthwaite"),
         "Kenward-Roger" = h_inference_parts(object, "kenward-roger"),
         NULL)
}

#' Test linear contrasts of the fixed effects
#'
#' Tests the hypothesis `L %*% beta = rhs` with small-sample degrees of
#' freedom. A contrast vector gives a t test; a contrast matrix gives an F
#' test of all rows jointly (`joint = TRUE`) or one t test per row
#' (`joint = FALSE`). The denominator degrees of freedom follow
#' Satterthwaite's method as in lmerTest (multi-df tests combine the
#' one-df Satterthwaite dfs of the eigen-decomposed contrasts, Fai &
#' Cornelius 1996) or Kenward and Roger's method as in pbkrtest (adjusted
#' covariance of the estimates, scaled F statistic).
#'
#' @param object an `"lmmr"` fit. For another model (such as an lmer fit)
#'   the call is handed to `lmerTest::contest()` (with `object` passed as
#'   its `model`), so attaching lmmr after lmerTest changes no result; on
#'   an lmmr fit, `lmerTest::contest()` works too, with lmerTest's
#'   conventions (see [lmmr-lme4]).
#' @param L a numeric vector of length `length(fixef(object))` or a matrix
#'   with that many columns.
#' @param ddf `"Satterthwaite"` (default), `"Kenward-Roger"` (REML fits
#'   only) or `"none"` (no degrees of freedom or p-values).
#' @param joint for a matrix `L`: one F test of all rows (`TRUE`) or a t
#'   test for each row (`FALSE`).
#' @param rhs the hypothesised value(s) of `L %*% beta`: a scalar or one
#'   value per row of `L`.
#' @param ... unused.
#' @return A data frame. t tests: columns `Estimate`, `Std. Error`, `df`,
#'   `t value`, `Pr(>|t|)`, one row per contrast. F test: one row with
#'   columns `Sum Sq`, `Mean Sq`, `NumDF`, `DenDF`, `F value`, `Pr(>F)`
#'   (`Mean Sq` is the F value times `sigma^2`, as lmerTest; with
#'   `ddf = "Kenward-Roger"` it is the unscaled Wald F, before the
#'   Kenward-Roger scaling, times `sigma^2`, as lmerTest). A contrast
#'   matrix of deficient row rank gives a warning of class
#'   `"lmmr_warning_contrast"` and is tested on the space it spans. An
#'   all-zero contrast (a zero vector, a zero row for t tests, or an
#'   all-zero matrix) is an error of class `"lmmr_error_contrast"`.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' contest(fit, c(0, 1))                       # t test of the slope
#' contest(fit, c(0, 1), rhs = 10)             # slope = 10?
#' contest(fit, diag(2))                       # F test of both coefficients
#' contest(fit, diag(2), ddf = "Kenward-Roger")
#' @export
contest <- function(object, L, ddf = c("Satterthwaite", "Kenward-Roger", "none"),
                    joint = TRUE, rhs = 0, ...) {
  if (!inherits(object, "lmmr")) { # e.g. an lmer fit: lmerTest's contest()
    return(h_delegate_call(match.call(), "lmerTest", "contest", parent.frame(),
                           object, rename = c(object = "model")))
  }
  ddf <- h_match_ddf(ddf)
  p <- length(object$beta)
  if (is.list(L) || !(is.numeric(L) || is.logical(L))) {
    h_abort("`L` must be a numeric vector or matrix.", "contrast")
  }
  is_vec <- is.null(dim(L))
  if (is_vec) {
    if (length(L) != p) {
      h_abort(sprintf("The contrast vector `L` must have length %d (the number of fixed-effect coefficients), not %d.",
                      p, length(L)), "contrast")
    }
    L <- matrix(L, nrow = 1L)
  } else {
    if (length(dim(L)) != 2L || ncol(L) != p) {
      h_abort(sprintf("The contrast matrix `L` must have %d columns (the number of fixed-effect coefficients), not %d.",
                      p, if (length(dim(L)) == 2L) ncol(L) else NA_integer_), "contrast")
    }
  }
  storage.mode(L) <- "double"
  if (any(!is.finite(L))) h_abort("`L` must contain only finite values.", "contrast")
  if (!is.numeric(rhs) || !(length(rhs) %in% c(1L, nrow(L))) || any(!is.finite(rhs))) {
    h_abort(sprintf("`rhs` must be a finite number or a vector of length %d.", nrow(L)),
            "contrast")
  }
  rhs <- rep_len(as.numeric(rhs), nrow(L))
  colnames(L) <- names(object$beta)
  t_cols <- c("Estimate", "Std. Error", "df", "t value", "Pr(>|t|)")
  f_cols <- c("Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)")
  if (nrow(L) == 0L || p == 0L) {
    cols <- if (is_vec || !joint) t_cols else f_cols
    return(as.data.frame(matrix(numeric(0), 0, length(cols), dimnames = list(NULL, cols)),
                         check.names = FALSE))
  }
  zero <- rowSums(abs(L)) == 0
  if (all(zero) || ((is_vec || !joint) && any(zero))) {
    h_abort(if (is_vec) "The contrast vector `L` is all zeros: there is nothing to test." else
      sprintf("%s of the contrast matrix `L` %s all zeros: there is nothing to test%s.",
              if (all(zero)) "All rows" else paste0("Row(s) ", paste(which(zero), collapse = ", ")),
              if (sum(zero) > 1L) "are" else "is",
              if (all(zero)) "" else " (remove them, or use joint = TRUE)"),
      "contrast")
  }
  parts <- h_parts_for(object, ddf)
  if (is_vec || !joint) {
    rows <- lapply(seq_len(nrow(L)), function(i) h_contest_1d(object, L[i, ], rhs[i], ddf, parts))
    out <- as.data.frame(do.call(rbind, c(rows, list(matrix(numeric(0), 0, 5,
      dimnames = list(NULL, c("Estimate", "Std. Error", "df", "t value", "Pr(>|t|)")))))),
      check.names = FALSE)
    if (!is.null(rownames(L))) rownames(out) <- rownames(L)
    return(out)
  }
  res <- h_contest_md(object, L, rhs, ddf, parts)
  as.data.frame(as.list(res), check.names = FALSE)
}

# ---------------------------------------------------------------------------
# ANOVA tables
# ---------------------------------------------------------------------------

#' @noRd
h_match_type <- function(type) {
  if (length(type) < 1L || is.null(type)) type <- 3
  t1 <- type[1]
  map <- c("1" = 1L, "2" = 2L, "3" = 3L, "I" = 1L, "II" = 2L, "III" = 3L)
  key <- as.character(t1)
  if (!(key %in% names(map))) {
    h_abort(sprintf("`type` must be 1, 2 or 3 (or \"I\", \"II\", \"III\"); got %s.",
                    paste(deparse(type), collapse = " ")), "argument")
  }
  unname(map[key])
}

#' Term structure of the fixed-effects design of a fit
#' @noRd
h_fixed_structure <- function(object) {
  X <- object$X
  tt <- object$design_info$fixed_terms
  labels <- attr(tt, "term.labels")
  assign <- attr(X, "assign")
  if (is.null(assign) || length(assign) != ncol(X)) {
    h_abort("The fit does not record which model term each fixed-effect column belongs to.",
            "argument")
  }
  fac <- attr(tt, "factors")
  list(X = X, labels = labels, assign = assign, factors = fac, terms = tt)
}

#' For each term, the terms that contain it (all its variables and more)
#' @noRd
h_containment <- function(labels, fac) {
  out <- stats::setNames(vector("list", length(labels)), labels)
  if (!length(labels)) return(out)
  for (a in labels) {
    va <- fac[, a] > 0
    out[[a]] <- labels[vapply(labels, function(b) {
      b != a && all(fac[va, b] > 0)
    }, logical(1))]
  }
  out
}

#' Containment by column spaces of the over-parametrised term designs
#' @noRd
h_containment_span <- function(object, st) {
  labels <- st$labels
  fac <- st$factors
  out <- stats::setNames(vector("list", length(labels)), labels)
  if (!length(labels)) return(out)
  full <- lapply(labels, function(l) {
    h_full_term_columns(h_hyp_frame(object), rownames(fac)[fac[, l] > 0])
  })
  rk <- function(m) qr(m, tol = 1e-9)$rank
  ranks <- vapply(full, rk, numeric(1))
  vars_of <- lapply(labels, function(l) rownames(fac)[fac[, l] > 0])
  for (a in seq_along(labels)) {
    # a term only contains terms made of its own variables (an aliased term
    # such as a coarsening of a factor is not contained in it)
    out[[a]] <- labels[vapply(seq_along(labels), function(b) {
      b != a && all(vars_of[[a]] %in% vars_of[[b]]) &&
        rk(cbind(full[[b]], full[[a]])) == ranks[b]
    }, logical(1))]
  }
  out
}

#' Type I (sequential) contrasts: rows of the unit upper-triangular
#' (Doolittle) factor of X'X, i.e. the Cholesky rows scaled to a unit
#' diagonal (the basis matters for the multi-df Satterthwaite DenDF; this is
#' the one lmerTest uses)
#' @noRd
h_contrasts_type1 <- function(st) {
  X <- st$X
  if (ncol(X) == 0L || !length(st$labels)) {
    return(stats::setNames(list(), character(0)))
  }
  R <- chol(crossprod(X))
  R <- R / diag(R)
  lapply(stats::setNames(seq_along(st$labels), st$labels), function(j) {
    R[st$assign == j, , drop = FALSE]
  })
}

#' Type II contrasts: each term adjusted for all terms that do not contain
#' it, where B contains A when the columns of A's over-parametrised design
#' lie in the span of B's (so `temp` is contained in `recipe:temp` but
#' `recipe` is not, as in lmerTest)
#' @noRd
h_contrasts_type2 <- function(object, st) {
  X <- st$X
  if (ncol(X) <= 1L || length(st$labels) <= 1L) return(h_contrasts_type1(st))
  XtX <- crossprod(X)
  cont <- h_containment_span(object, st)
  lapply(stats::setNames(seq_along(st$labels), st$labels), function(j) {
    lab <- st$labels[j]
    own <- st$assign == j
    inside <- st$assign %in% match(cont[[lab]], st$labels)
    other <- !own & !inside
    if (!any(inside)) {
      # not contained in another term: its coefficients are zero given all
      # the other columns (identity rows, the basis lmerTest uses)
      L <- diag(ncol(X))[own, , drop = FALSE]
      dimnames(L) <- list(colnames(X)[own], colnames(X))
      return(L)
    }
    # Gaussian elimination with the other terms first, then the term, then
    # the terms containing it: the term's rows of the unit upper-triangular
    # factor (the basis lmerTest uses; the multi-df Satterthwaite DenDF
    # depends on it)
    ord <- c(which(other), which(own), which(inside))
    R <- chol(XtX[ord, ord, drop = FALSE])
    R <- R / diag(R)
    rows <- R[match(which(own), ord), , drop = FALSE]
    L <- matrix(0, nrow(rows), ncol(X), dimnames = list(colnames(X)[own], colnames(X)))
    L[, ord] <- rows
    L
  })
}

#' Columns of the over-parametrised design for one term: all indicator
#' columns of every factor, times the numeric variables
#' @noRd
h_full_term_columns <- function(frame, vars) {
  n <- nrow(frame)
  out <- matrix(1, n, 1)
  for (v in vars) {
    x <- frame[[v]]
    if (is.null(x)) x <- eval(parse(text = v), frame, environment(formula(attr(frame, "terms"))))
    if (is.factor(x) || is.character(x) || is.logical(x)) {
      f <- factor(x)
      m <- stats::model.matrix(~ 0 + f, data.frame(f = f))
    } else {
      m <- as.matrix(x)
      storage.mode(m) <- "double"
    }
    out <- do.call(cbind, lapply(seq_len(ncol(m)), function(j) out * m[, j]))
  }
  out
}

#' Null space basis of a matrix (columns)
#' @noRd
h_null <- function(A, tol = 1e-9) {
  if (nrow(A) == 0L) return(diag(ncol(A)))
  s <- svd(A, nu = 0, nv = ncol(A))
  rank <- sum(s$d > tol * max(s$d, 0))
  s$v[, setdiff(seq_len(ncol(A)), seq_len(rank)), drop = FALSE]
}

#' Is term `a` contained in term `b` in lmerTest's sense: every variable of
#' `a` is in `b`, `b` has more variables, and both have the same numeric
#' (non-factor) variables
#' @noRd
h_containment_vars <- function(object, labels, fac) {
  out <- stats::setNames(vector("list", length(labels)), labels)
  if (!length(labels)) return(out)
  vars_of <- lapply(stats::setNames(labels, labels), function(l) rownames(fac)[fac[, l] == 1])
  all_vars <- unique(unlist(vars_of))
  is_num <- vapply(all_vars, function(v) {
    x <- h_hyp_frame(object)[[v]]
    if (is.null(x)) {
      x <- tryCatch(eval(parse(text = v), h_hyp_frame(object),
                         environment(object$design_info$fixed_terms)),
                    error = function(e) NULL)
    }
    identical(stats::.MFclass(x), "numeric")
  }, logical(1))
  nums <- lapply(vars_of, function(v) v[is_num[v]])
  for (a in labels) {
    out[[a]] <- labels[vapply(labels, function(b) {
      b != a && all(vars_of[[a]] %in% vars_of[[b]]) &&
        length(setdiff(vars_of[[b]], vars_of[[a]])) > 0L &&
        setequal(nums[[a]], nums[[b]])
    }, logical(1))]
  }
  out
}

#' Type III contrasts for a fit whose design was rank deficient (aliased
#' columns dropped). The hypotheses of a term are that its coefficients in
#' the treatment-coded, full-rank design are zero, each made orthogonal
#' (in the metric of the over-parametrised parameters) to the hypotheses of
#' the terms containing it; they are then mapped to the coding of the fit.
#' This is the construction lmerTest uses; for full-rank designs it spans the
#' same hypotheses as h_contrasts_type3().
#' @noRd
h_contrasts_type3_aliased <- function(object, st) {
  X <- st$X
  labels <- st$labels
  fac <- st$factors
  frame <- h_hyp_frame(object)
  ctr <- object$design_info$contrasts
  treat <- length(ctr) == 0L ||
    all(vapply(ctr, function(cc) identical(cc, "contr.treatment"), logical(1)))
  if (treat) {
    XT <- X
    asgnT <- st$assign
  } else {
    ctrT <- lapply(ctr, function(cc) "contr.treatment")
    XT <- stats::model.matrix(st$terms, frame, contrasts.arg = ctrT)
    asgnT <- attr(XT, "assign")
    q <- qr(XT, tol = 1e-7, LAPACK = FALSE)
    keep <- sort(q$pivot[seq_len(q$rank)])
    XT <- XT[, keep, drop = FALSE]
    asgnT <- asgnT[keep]
  }
  XT <- matrix(as.numeric(XT), nrow(XT), ncol(XT))
  # over-parametrised design: every factor coded by all its indicators
  vars_of <- lapply(labels, function(l) rownames(fac)[fac[, l] > 0])
  blocks <- lapply(vars_of, function(v) h_full_term_columns(frame, v))
  if (any(st$assign == 0L)) blocks <- c(list(matrix(1, nrow(X), 1)), blocks)
  rdX <- do.call(cbind, blocks)
  qT <- qr(XT)
  # beta_T = M gamma for the estimable functions; Euclidean metric on gamma
  M <- qr.coef(qT, rdX)
  M[is.na(M)] <- 0
  cont <- h_containment_vars(object, labels, fac)
  ord <- attr(st$terms, "order")
  funs <- lapply(seq_along(labels), function(j) {
    t(diag(ncol(XT))[asgnT == j, , drop = FALSE]) # p_T x k unit vectors
  })
  names(funs) <- labels
  gam <- lapply(funs, function(C) crossprod(M, C)) # the same functions of gamma
  for (j in order(ord, decreasing = TRUE)) {
    lab <- labels[j]
    if (!length(cont[[lab]]) || !ncol(gam[[lab]])) next
    B <- do.call(cbind, gam[cont[[lab]]])
    if (!ncol(B)) next
    r <- qr.resid(qr(B), gam[[lab]])
    r[abs(r) < 1e-10 * max(abs(r), 1)] <- 0
    gam[[lab]] <- r
  }
  # back to beta_T (M has full row rank), then to the coefficients of the fit
  G <- M %*% t(M)
  toX <- qr.coef(qT, X)
  toX[is.na(toX)] <- 0
  lapply(stats::setNames(labels, labels), function(lab) {
    g <- gam[[lab]]
    if (!ncol(g)) return(matrix(0, 0, ncol(X), dimnames = list(NULL, colnames(X))))
    C <- solve(G, M %*% g)
    L <- t(C) %*% toX
    L[abs(L) < 1e-10 * max(abs(L), 1)] <- 0
    L <- L[rowSums(abs(L)) > 1e-8, , drop = FALSE]
    colnames(L) <- colnames(X)
    L
  })
}

#' Type III contrasts: hypotheses defined on the over-parametrised model
#' (every factor coded by all its indicators), so they do not depend on the
#' contrast coding; each term's hypothesis involves only the term and terms
#' containing it and is orthogonal to the hypotheses of the terms containing
#' it (Goodnight's construction of SAS type III estimable functions).
#' @noRd
h_contrasts_type3 <- function(object, st) {
  # type III bases are built on rows of the frame: for a fit from database
  # aggregates, on the rows of its stand-in frame (see h_hyp_frame())
  if (!is.null(object$db)) st$X <- h_db_hyp_X(object, st)
  X <- st$X
  labels <- st$labels
  if (!length(labels)) return(list())
  fac <- st$factors
  frame <- h_hyp_frame(object)
  vars_of <- lapply(labels, function(l) rownames(fac)[fac[, l] > 0])
  cols <- list()
  blocks <- list()
  has_int <- any(st$assign == 0L)
  if (has_int) {
    blocks[[1]] <- matrix(1, nrow(X), 1)
  }
  for (j in seq_along(labels)) {
    blocks[[length(blocks) + 1L]] <- h_full_term_columns(frame, vars_of[[j]])
  }
  term_id <- rep(seq_along(blocks) - has_int, vapply(blocks, ncol, integer(1)))
  rdX <- do.call(cbind, blocks)
  # missing cells: all-zero columns of factor-only parts
  missing <- labels[vapply(seq_along(labels), function(j) {
    any(colSums(abs(rdX[, term_id == j, drop = FALSE])) == 0)
  }, logical(1))]
  if (length(missing)) {
    h_inform(sprintf("Missing cells for: %s. \nInterpret type III hypotheses with care.",
                     paste(missing, collapse = ", ")), "missing_cells")
  }
  if (length(object$dropped)) {
    # aliased columns were dropped: test the terms as they are estimated
    return(h_contrasts_type3_aliased(object, st))
  }
  keep <- colSums(abs(rdX)) > 0
  rdX <- rdX[, keep, drop = FALSE]
  term_id <- term_id[keep]
  # basis of the estimable functions (row space of rdX)
  s <- svd(rdX)
  r <- sum(s$d > 1e-9 * s$d[1])
  B <- s$v[, seq_len(r), drop = FALSE]
  # map from estimable functions of the full parameters to beta:
  # l' gamma = l' ginv(rdX) X beta for l in the row space
  Tmap <- s$v[, seq_len(r), drop = FALSE] %*%
    (crossprod(s$u[, seq_len(r), drop = FALSE], X) / s$d[seq_len(r)])
  cont <- h_containment(labels, fac)
  order_of <- colSums(fac > 0)
  hyp <- list()
  for (j in order(-order_of[labels])) {
    lab <- labels[j]
    ids <- c(j, match(cont[[lab]], labels))
    zero_rows <- !(term_id %in% ids)
    cons <- B[zero_rows, , drop = FALSE]
    for (c2 in cont[[lab]]) {
      if (!is.null(hyp[[c2]]) && ncol(hyp[[c2]])) {
        cons <- rbind(cons, crossprod(hyp[[c2]], B))
      }
    }
    nb <- h_null(cons)
    hyp[[lab]] <- B %*% nb
  }
  out <- lapply(stats::setNames(labels, labels), function(lab) {
    L <- t(hyp[[lab]]) %*% Tmap
    L[abs(L) < 1e-10 * max(abs(L), 1)] <- 0
    L
  })
  h_type3_basis(object, st, out)
}

#' Re-express type III hypotheses in the basis lmerTest uses (the multi-df
#' Satterthwaite DenDF depends on the basis, the F value does not): the
#' Doolittle rows of type I for a single-term model, otherwise the rows of
#' the treatment-coded construction of h_contrasts_type3_aliased(). A basis
#' is only swapped in when it spans exactly the same hypotheses.
#' @noRd
h_type3_basis <- function(object, st, hyp) {
  alt <- tryCatch({
    if (ncol(st$X) <= 1L || length(st$labels) <= 1L) h_contrasts_type1(st) else
      h_contrasts_type3_aliased(object, st)
  }, error = function(e) NULL)
  if (is.null(alt)) return(hyp)
  rk <- function(m) {
    if (!nrow(m)) return(0L)
    m <- m / pmax(sqrt(rowSums(m^2)), .Machine$double.xmin)
    qr(t(m), tol = 1e-7)$rank
  }
  for (lab in names(hyp)) {
    L <- hyp[[lab]]
    A <- alt[[lab]]
    if (is.null(A) || nrow(A) != nrow(L) || ncol(A) != ncol(L) || !nrow(L)) next
    r <- rk(L)
    if (r == nrow(L) && rk(A) == r && rk(rbind(L, A)) == r) {
      dimnames(A) <- dimnames(L)
      hyp[[lab]] <- A
    }
  }
  hyp
}

#' ANOVA tables for linear mixed models
#'
#' With one fit: an F test for each fixed-effect term, with Satterthwaite's
#' (default, as lmerTest) or Kenward-Roger's (as pbkrtest/lmerTest)
#' denominator degrees of freedom. Type 3 (default) tests each term with
#' hypotheses that do not depend on the contrast coding of factors (the
#' SAS type III hypotheses: defined on the model with every factor coded by
#' all its indicator columns, each term's hypothesis orthogonal to those of
#' the terms containing it); type 2 tests each term adjusted for all terms
#' that do not contain it; type 1 tests the terms sequentially (hypotheses
#' from the Cholesky factor of `X'X`, as lmerTest). Empty cells in
#' interactions of factors are reported with a message. When aliased columns
#' were dropped from the fixed-effects design (`fit$dropped`), the terms are
#' tested as they are estimated, as lmerTest does: the type III hypotheses
#' of a term are then built from its columns of the treatment-coded
#' full-rank design (made orthogonal to the terms containing it), and a term
#' whose columns were all dropped gets `NumDF` 0 and no test.
#'
#' With several fits (`anova(fit0, fit1, ...)`): likelihood-ratio tests, as
#' lme4's `anova()`. The fits are sorted by their number of parameters and
#' must use the same observations and response. A linear model fitted by
#' [stats::lm()] may be included (e.g. to test all random effects at once);
#' it enters with its ML log-likelihood and `length(coef()) + 1` parameters
#' (its rank plus one when coefficients are aliased), so REML `lmm` fits are
#' then refitted with ML (with a message).
#'
#' When to refit with ML. A likelihood-ratio test between REML fits is only
#' valid when the fits have the same fixed effects, because the REML
#' criterion depends on the fixed-effects design. lmmr therefore refits REML
#' fits with ML (with a message) only when the fixed effects differ (or a
#' linear model or an ML fit is involved); REML fits with identical fixed
#' effects, which differ only in their random effects, are compared on their
#' REML log-likelihoods, the usual test for variance components (the heading
#' then says "REML fits compared without refitting"). This differs from
#' lme4, whose `anova()` refits every REML fit with ML by default
#' (`refit = TRUE`) even then; use `update(fit, REML = FALSE)` on each fit to
#' reproduce lme4's numbers. With `refit = FALSE` no fit is refitted and
#' REML fits cannot be compared with ML fits or linear models (an error of
#' class `"lmmr_error_argument"`). Any other further argument is an error of
#' that class too.
#'
#' @param object an `"lmmr"` fit.
#' @param ... further `"lmmr"` fits (or `lm` fits) for a likelihood-ratio
#'   comparison; optionally `refit = FALSE` to compare REML fits without
#'   refitting and `model.names`, a character vector of names for the
#'   models (in the order given); `test = "PB"` for a parametric bootstrap
#'   LRT (column `Pr(PB)`, as `pbkrtest::PBmodcomp()`: ML refits, `nsim`
#'   responses (default 1000) simulated from the smaller fit of each pair,
#'   p-value `(1 + #{LRT* > LRT}) / (1 + #{LRT* > 0})`) with `nsim`, `seed`,
#'   `ncores` and `progress` as in [bootstrap_lmm()].
#' @param type type of the hypotheses: `3`, `2` or `1` (also `"III"`,
#'   `"II"`, `"I"`).
#' @param ddf `"Satterthwaite"`, `"Kenward-Roger"` (REML fits only) or
#'   `"none"` (F values without degrees of freedom or p-values).
#' @return A data frame of class `c("anova", "data.frame")` with one row per
#'   term and columns `Sum Sq`, `Mean Sq`, `NumDF`, `DenDF`, `F value`,
#'   `Pr(>F)` (`Mean Sq` is the F value times `sigma^2` and `Sum Sq` is
#'   `Mean Sq` times `NumDF`, as lmerTest; with `ddf = "Kenward-Roger"` the
#'   unscaled Wald F is used, as lmerTest). For multi-df terms the
#'   Satterthwaite `DenDF` depends on the basis chosen for the hypothesis
#'   matrix; lmerTest's bases are used (Doolittle rows for types I and II,
#'   treatment-coded rows for type III), so the DenDF match lmerTest's. With several fits, a data frame
#'   of class `c("anova", "data.frame")` with columns `npar`, `AIC`, `BIC`,
#'   `logLik`, `deviance`, `Chisq`, `Df`, `Pr(>Chisq)`, one row per fit.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' anova(fit)
#' anova(fit, ddf = "Kenward-Roger")
#' fit0 <- lmm(Reaction ~ 1 + (Days | Subject), data = sleepstudy)
#' anova(fit0, fit)
#' anova(fit0, fit, test = "PB", nsim = 20, seed = 1)
#' @export
anova.lmmr <- function(object, ..., type = c(3, 2, 1),
                      ddf = c("Satterthwaite", "Kenward-Roger", "none")) {
  dots <- list(...)
  dn <- names(dots) %||% rep("", length(dots))
  opt <- dn %in% c("refit", "model.names", h_anova_sim_args())
  is_fit <- !opt & vapply(dots, function(d) inherits(d, "lmmr") || h_is_lm(d), logical(1))
  bad <- !opt & !is_fit
  if (any(bad)) {
    what <- vapply(which(bad), function(i) {
      if (nzchar(dn[i])) sprintf("`%s`", dn[i]) else
        sprintf("an object of class \"%s\"", class(dots[[i]])[1])
    }, character(1))
    h_abort(sprintf("anova() for lmm fits takes further models fitted by lmm() or lm() (for a likelihood-ratio test), `refit`, `model.names`, `test`, `nsim`, `seed`, `ncores`, `type` and `ddf`; got %s.",
                    paste(what, collapse = ", ")), "argument")
  }
  if (any(is_fit)) {
    cl <- match.call(expand.dots = FALSE)
    dot_names <- vapply(cl$...[is_fit], function(e) paste(deparse(e), collapse = " "),
                        character(1))
    if (any(nzchar(dn[is_fit]))) {
      nm <- dn[is_fit]
      dot_names[nzchar(nm)] <- nm[nzchar(nm)]
    }
    obj_name <- paste(deparse(cl$object), collapse = " ")
    all_names <- c(obj_name, dot_names)
    # as lme4: the models' expressions name them; generic names only when
    # those are not unique or unreadably long
    if (anyDuplicated(all_names) || max(nchar(all_names)) > 200L) {
      h_warn("Could not find unique model names; assigning generic names MODEL1, MODEL2, ...",
             "model_names")
      all_names <- paste0("MODEL", seq_along(all_names))
    }
    if (!is.null(dots$model.names)) {
      all_names <- dots$model.names
      if (!is.character(all_names) || anyNA(all_names) || anyDuplicated(all_names)) {
        h_abort("`model.names` must be distinct character strings, one per model.", "argument")
      }
    }
    refit <- if (!is.null(dots$refit)) dots$refit else TRUE
    if (!is.null(dots$test)) return(h_anova_test(c(list(object), dots[is_fit]), all_names, dots))
    return(h_anova_lrt(c(list(object), dots[is_fit]), all_names, refit = refit))
  }
  h_anova_sim_single(dots)
  type <- h_match_type(type)
  ddf <- h_match_ddf(ddf)
  h_require_reml_for_kr(object, ddf == "Kenward-Roger")
  st <- h_fixed_structure(object)
  Ls <- switch(type,
               h_contrasts_type1(st),
               h_contrasts_type2(object, st),
               h_contrasts_type3(object, st))
  parts <- h_parts_for(object, ddf)
  cols <- c("Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)")
  rows <- lapply(Ls, function(L) {
    h_contest_md(object, L, rep(0, nrow(L)), ddf, parts, warn = FALSE)
  })
  tab <- if (length(rows)) do.call(rbind, rows) else
    matrix(numeric(0), 0, 6, dimnames = list(NULL, cols))
  tab <- as.data.frame(tab, check.names = FALSE)
  rownames(tab) <- names(Ls)
  if (ddf == "none") tab <- tab[, c("Sum Sq", "Mean Sq", "NumDF", "F value"), drop = FALSE]
  type_name <- c("Type I", "Type II", "Type III")[type]
  method <- switch(ddf,
                   "Satterthwaite" = " with Satterthwaite's method",
                   "Kenward-Roger" = " with Kenward-Roger's method",
                   "none" = " (no denominator degrees of freedom)")
  structure(tab, heading = paste0(type_name, " Analysis of Variance Table", method),
            class = c("anova", "data.frame"))
}
