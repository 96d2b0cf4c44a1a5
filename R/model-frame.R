# Model frame and fixed-effects design of a linear mixed model.

#' Evaluate the `data` argument safely.
#'
#' @param data `NULL`, a data frame / list / environment, or an unevaluated
#'   expression (symbol or call) evaluated in `env`.
#' @param env environment.
#' @return `NULL`, a data frame, list or environment.
#' @noRd
h_eval_data <- function(data, env) {
  if (is.language(data)) {
    expr <- data
    data <- tryCatch(
      eval(expr, env),
      error = function(e) {
        h_abort(
          sprintf("bad 'data': could not evaluate '%s': %s", h_deparse(expr), conditionMessage(e)),
          "data"
        )
      }
    )
  }
  if (is.null(data) || is.data.frame(data) || is.environment(data)) return(data)
  if (is.matrix(data)) return(as.data.frame(data))
  if (is.list(data)) return(data)
  h_abort(sprintf("'data' must be a data frame, list or environment, not of class '%s'.", class(data)[1L]), "data")
}

#' Evaluate an argument such as `subset`, `weights` or `offset` in the data,
#' then in `env`.
#'
#' @param expr `NULL`, a value, or an unevaluated expression.
#' @param data `NULL`, data frame, list or environment.
#' @param env enclosing environment.
#' @param what argument name for messages.
#' @return the value.
#' @noRd
h_eval_arg <- function(expr, data, env, what) {
  if (!is.language(expr)) return(expr)
  tryCatch(
    if (is.null(data)) eval(expr, env) else eval(expr, data, env),
    error = function(e) {
      h_abort(sprintf("could not evaluate '%s' (%s): %s", what, h_deparse(expr), conditionMessage(e)), "data")
    }
  )
}

#' A single string naming a column of the data is taken as that column.
#' @noRd
h_column_by_name <- function(x, data) {
  if (is.character(x) && length(x) == 1L && !is.null(data) && x %in% names(data)) data[[x]] else x
}

#' Check the type of the evaluated `weights` argument (its values are
#' checked once, by the rule the fit uses: see [h_frame_weights()]).
#' @noRd
h_check_weights_arg <- function(weights) {
  if (is.null(weights)) return(invisible(NULL))
  if (!is.numeric(weights) || is.matrix(weights) && ncol(weights) > 1L) {
    h_abort("'weights' must be a numeric vector.", "argument")
  }
  invisible(NULL)
}

#' Check the evaluated `offset` argument.
#' @noRd
h_check_offset_arg <- function(offset) {
  if (is.null(offset)) return(invisible(NULL))
  if (!is.numeric(offset)) h_abort("'offset' must be a numeric vector.", "argument")
  invisible(NULL)
}

#' Resolve the `na.action` argument to a function.
#' @param na.action `NULL` (use `getOption("na.action")`, default `na.omit`), a
#'   function or the name of one.
#' @return a function.
#' @noRd
h_na_action_fun <- function(na.action) {
  if (is.null(na.action)) na.action <- getOption("na.action", "na.omit")
  if (is.null(na.action)) na.action <- "na.omit"
  if (is.character(na.action)) {
    na.action <- tryCatch(
      match.fun(na.action),
      error = function(e) h_abort(sprintf("unknown na.action '%s'.", na.action), "argument")
    )
  }
  if (!is.function(na.action)) h_abort("'na.action' must be a function or the name of one.", "argument")
  na.action
}

#' Turn character columns of a model frame into factors (attributes kept).
#' @noRd
h_factorize_characters <- function(frame) {
  for (v in names(frame)) {
    if (is.character(frame[[v]])) frame[[v]] <- factor(frame[[v]])
  }
  frame
}

#' Build the single model frame with all variables of the fixed and random parts.
#'
#' The evaluated `subset`, `weights` and `offset` are handed to
#' `model.frame()` through a child of the formula environment (so the call
#' holds no copies of the data); the environment of the frame's terms is reset
#' to the formula environment afterwards.
#' @param frame_formula formula from [h_frame_formula()].
#' @param data evaluated data (or `NULL`).
#' @param subset,weights,offset evaluated values or `NULL`.
#' @param na.action function.
#' @return a model frame with "terms" (and "na.action" if rows were removed).
#' @noRd
h_build_frame <- function(frame_formula, data, subset, weights, offset, na.action) {
  fenv <- environment(frame_formula)
  local_env <- new.env(parent = fenv)
  local_env$.lmmr_data <- data
  local_env$.lmmr_na_action <- na.action
  environment(frame_formula) <- local_env
  mf <- call("model.frame", formula = frame_formula, data = quote(.lmmr_data))
  extras <- list(subset = subset, weights = weights, offset = offset)
  for (nm in names(extras)) {
    if (!is.null(extras[[nm]])) {
      assign(paste0(".lmmr_", nm), extras[[nm]], envir = local_env)
      mf[[nm]] <- as.name(paste0(".lmmr_", nm))
    }
  }
  # Build with na.pass and apply na.action only when something is missing:
  # na.omit's row scan and copy cost as much as the frame itself at 10^6 rows.
  # Unused factor levels are dropped afterwards as model.frame() would
  # (drop.unused.levels = TRUE), but found by counting codes instead of
  # model.frame()'s unique() of every factor.
  mf$na.action <- quote(stats::na.pass)
  mf[[1L]] <- quote(stats::model.frame)
  frame <- tryCatch(
    eval(mf, local_env),
    error = function(e) h_abort(conditionMessage(e), "data")
  )
  if (anyNA(frame)) {
    frame <- tryCatch(na.action(frame), error = function(e) h_abort(conditionMessage(e), "data"))
  }
  frame <- h_drop_unused_levels(frame)
  tt <- attr(frame, "terms")
  environment(tt) <- fenv
  attr(frame, "terms") <- tt
  if (nrow(frame) == 0L) h_abort("0 (non-NA) cases: no observations left after removing missing values.", "no_data")
  h_factorize_characters(frame)
}

#' Extract and check the response from a model frame.
#'
#' As `lme4::lmer()`: a one-column matrix (e.g. `cbind(y)` or a matrix
#' column of the data) is taken as its column, and a logical response as 0/1.
#' @return numeric vector.
#' @noRd
h_frame_response <- function(frame) {
  # the response is the first column of a model frame whose terms have one;
  # model.response() would also attach 10^n row names
  y <- if (isTRUE(attr(attr(frame, "terms"), "response") == 1L)) frame[[1L]] else NULL
  if (is.null(y)) h_abort("The formula must have a response (left-hand side).", "response")
  if (is.data.frame(y)) y <- as.matrix(y)
  if (is.matrix(y)) {
    if (ncol(y) != 1L) {
      h_abort(sprintf("The response must be a numeric vector or a one-column matrix, not a matrix with %d columns.", ncol(y)), "response")
    }
    y <- y[, 1L]
  }
  if (is.logical(y)) y <- as.numeric(y)
  if (!is.numeric(y)) {
    h_abort(sprintf("The response must be numeric, not of class '%s'.", class(y)[1L]), "response")
  }
  # unnamed: methods take the row names from the model frame when needed
  y <- as.numeric(y)
  # a non-finite value makes the sum non-finite: only then look closer
  if (!is.finite(sum(y)) && any(!is.finite(y))) h_abort("NA/NaN/Inf in the response.", "response")
  y
}

#' Drop linearly dependent columns of the fixed-effects model matrix.
#'
#' Uses a pivoted QR decomposition (LINPACK, tolerance `tol`): the columns
#' kept are the first `rank` pivoted columns, i.e. aliased columns are dropped
#' from the right as lme4 does. A message of kind "rank_deficient" names the
#' dropped columns.
#' @param X model matrix.
#' @param tol tolerance.
#' @param rows optional logical vector: the rows whose rank matters.
#' @param xtx optional `crossprod(X)` (ignored with `rows`), so that the
#'   screen does not pass over `X` again.
#' @return list(X = reduced matrix with "assign" and "contrasts", dropped =
#'   character names of dropped columns).
#' @noRd
h_drop_rank_deficient <- function(X, tol = 1e-7, rows = NULL, xtx = NULL) {
  p <- ncol(X)
  if (p == 0L) return(list(X = X, dropped = character()))
  # the rank that matters is that of the rows that contribute (positive weight)
  Xr <- if (is.null(rows)) X else X[rows, , drop = FALSE]
  if (!is.null(rows)) xtx <- NULL
  if (h_clearly_full_rank(Xr, xtx)) return(list(X = X, dropped = character()))
  qx <- qr(Xr, tol = tol, LAPACK = FALSE)
  if (qx$rank == p) return(list(X = X, dropped = character()))
  keep <- sort(qx$pivot[seq_len(qx$rank)])
  dropped <- colnames(X)[-keep]
  n_drop <- p - qx$rank
  msg <- sprintf(
    "fixed-effect model matrix is rank deficient so dropping %d %s (%s)",
    n_drop,
    if (n_drop == 1L) "column / coefficient" else "columns / coefficients",
    paste(dropped, collapse = ", ")
  )
  h_inform(msg, "rank_deficient")
  X_new <- X[, keep, drop = FALSE]
  attr(X_new, "assign") <- attr(X, "assign")[keep]
  attr(X_new, "contrasts") <- attr(X, "contrasts")
  list(X = X_new, dropped = dropped)
}

#' Warn, as lme4, if the continuous predictors are on very different scales.
#' @param s1,s2,binary the columns' sums, sums of squares and whether they
#'   hold only 0s and 1s (from the one pass made anyway, h_x_summaries());
#'   binary columns (the intercept, dummies) are left out.
#' @noRd
h_check_scale_x <- function(X, s1, s2, binary, tol = 1000) {
  if (!ncol(X) || nrow(X) < 2L) return(invisible(FALSE))
  n <- nrow(X)
  continuous <- !binary
  if (!any(continuous)) return(invisible(FALSE))
  means <- s1[continuous] / n
  sds <- sqrt(pmax(s2[continuous] - n * means^2, 0) / (n - 1))
  ratios <- outer(sds, sds, "/")
  logs <- c(abs(log(ratios[lower.tri(ratios)])), abs(log(sds)))
  if (any(logs > log(tol), na.rm = TRUE)) {
    h_warn("Some predictor variables are on very different scales: consider rescaling", "scale")
    return(invisible(TRUE))
  }
  invisible(FALSE)
}

#' Terms object of the fixed-effects formula (a `.` is expanded with the data,
#' as `lm()` and `lme4::lmer()` do).
#' @noRd
h_fixed_terms <- function(fixed_formula, data) {
  if (!"." %in% all.names(fixed_formula)) return(stats::terms(fixed_formula))
  if (!is.data.frame(data)) {
    h_abort("'.' in the formula needs a data frame in 'data'.", "formula")
  }
  stats::terms(fixed_formula, data = data)
}

#' Fixed-effects model matrix from the model frame.
#' @param fixed_terms terms object of the fixed-effects formula.
#' @param frame model frame.
#' @param contrasts the `contrasts` argument (or `NULL`).
#' @return the full model matrix (before dropping aliased columns).
#' @noRd
h_fixed_matrix <- function(fixed_terms, frame, contrasts) {
  h_fixed_matrix_sums(fixed_terms, frame, contrasts)$X
}

#' [h_fixed_matrix()] with its cross-products, computed once for the
#' finiteness check, the rank screen and the scale check.
#' @return list(X = model matrix, s1 = column sums, xtx = crossprod(X),
#'   binary = which columns are 0/1); all but X are NULL for a matrix without
#'   columns.
#' @noRd
h_fixed_matrix_sums <- function(fixed_terms, frame, contrasts) {
  # below ~50,000 rows model.matrix() is faster than the fixed cost of
  # working out the layout (~0.5-1 ms), and gives the same matrix
  X <- if (nrow(frame) >= 50000L && !isFALSE(getOption("lmmr.rust_model_matrix"))) {
    h_columns_model_matrix(fixed_terms, frame, contrasts)
  }
  if (is.null(X)) {
    X <- h_model_matrix_safely(stats::model.matrix(fixed_terms, frame, contrasts.arg = contrasts),
                               "fixed-effects")
    rownames(X) <- NULL
  }
  xs <- h_x_summaries(X)
  # NA/NaN/Inf make their column's sums non-finite: only then (or when finite
  # values overflow) look at the elements (no n x p temporaries otherwise)
  if (!is.null(xs) && !all(is.finite(c(xs$s1, diag(xs$xtx)))) && any(!is.finite(X))) {
    h_abort("Non-finite values (NA/NaN/Inf) in the fixed-effects model matrix.", "non_finite")
  }
  list(X = X, s1 = xs$s1, xtx = xs$xtx, binary = xs$binary)
}

#' The fixed-effects model matrix built in Rust from the frame's columns
#'
#' Numeric variables (vectors, and matrices such as the `poly()`, `ns()` or
#' `scale()` columns that `model.frame()` has evaluated) are used as they
#' are; factors (logical variables as factors with levels FALSE, TRUE, as
#' `model.matrix()` takes them) are expanded from their integer codes
#' through their contrast matrices (the factor's "contrasts" attribute, the
#' `contrasts` argument, or `getOption("contrasts")`, as `model.matrix()`
#' resolves them), or through indicator columns where the terms code a
#' factor by dummies (a term without its margin, e.g. `0 + f` or `f:g`
#' alone); interactions are the products of their variables' columns, taken
#' left to right with the first variable varying fastest, as
#' `model.matrix()` forms them. Rust fills the columns (`rs_fill_columns()`,
#' multithreaded), so the values are those of `model.matrix()`; the column
#' names, order, "assign" and "contrasts" come from `model.matrix()` on the
#' frame's first two rows (they depend only on the terms, the levels, the
#' variables' column names and the contrasts). The result is identical to
#' `model.matrix()` without its n row names.
#' @return the matrix, or NULL (then `model.matrix()` builds it) for a frame
#'   of fewer than two rows, a formula without terms, variables of other
#'   types, or where the template call warns or fails (so that the full call
#'   gives its messages).
#' @noRd
h_columns_model_matrix <- function(fixed_terms, frame, contrasts) {
  n <- nrow(frame)
  fac <- attr(fixed_terms, "factors")
  labs <- attr(fixed_terms, "term.labels")
  if (n < 2L || !length(labs) || !is.matrix(fac) || !identical(colnames(fac), labs)) return(NULL)
  # the frame's names of the variables (rownames(fac) may carry backticks)
  vars <- vapply(as.list(attr(fixed_terms, "variables"))[-1L], function(e) {
    paste(deparse(e, width.cutoff = 500L, backtick = FALSE), collapse = " ")
  }, "")
  if (length(vars) != nrow(fac) || !all(vars[rowSums(fac != 0L) > 0L] %in% names(frame))) {
    return(NULL)
  }
  # without an intercept the first factor of the first term that has one is
  # coded by indicators (as model.matrix()'s C code does)
  if (!isTRUE(attr(fixed_terms, "intercept") == 1L)) {
    nlev <- vapply(vars, function(v) {
      x <- frame[[v]]
      if (is.factor(x)) nlevels(x) else if (is.logical(x)) 2L else 0L
    }, 0L)
    resp <- attr(fixed_terms, "response")
    first <- NULL
    for (t in seq_len(ncol(fac))) {
      i <- which(nlev > 1L & fac[, t] > 0L & seq_along(vars) > resp)
      if (length(i)) {
        first <- c(i[1L], t)
        break
      }
    }
    if (!is.null(first)) fac[first[1L], first[2L]] <- 2L
  }
  sub <- frame[1:2, , drop = FALSE]
  attr(sub, "terms") <- attr(frame, "terms")
  tmpl <- tryCatch(stats::model.matrix(fixed_terms, sub, contrasts.arg = contrasts),
                   warning = function(w) NULL, error = function(e) NULL)
  if (is.null(tmpl)) return(NULL)
  # each variable's components: a numeric column, or a factor's codes with
  # one column of its contrast (or indicator) matrix
  default_contr <- as.character(getOption("contrasts"))
  prepared <- list()
  var_parts <- function(v, dummies) {
    key <- paste0(v, if (dummies) "\r2" else "\r1")
    if (!is.null(prepared[[key]])) return(prepared[[key]])
    x <- frame[[v]]
    if (is.logical(x) && is.null(dim(x))) x <- factor(x, levels = c(FALSE, TRUE))
    out <- if (is.factor(x)) {
      codes <- unclass(x)
      attributes(codes) <- NULL
      cm <- if (dummies) {
        diag(nlevels(x))
      } else {
        if (is.null(attr(x, "contrasts"))) {
          stats::contrasts(x) <- default_contr[1L + is.ordered(x)]
        }
        ca <- contrasts[[v]]
        if (!is.null(ca)) {
          if (is.matrix(ca)) stats::contrasts(x, ncol(ca)) <- ca else stats::contrasts(x) <- ca
        }
        stats::contrasts(x)
      }
      storage.mode(cm) <- "double"
      lapply(seq_len(ncol(cm)), function(j) list(codes = codes, table = cm[, j]))
    } else if (is.numeric(x) && is.null(dim(x)) && (!is.object(x) || identical(class(x), "AsIs"))) {
      list(as.double(unclass(x)))
    } else if (is.numeric(x) && is.matrix(x) && nrow(x) == n) {
      x <- unclass(x)
      lapply(seq_len(ncol(x)), function(j) as.double(x[, j]))
    } else {
      NULL
    }
    prepared[[key]] <<- out
    out
  }
  comps <- list()
  cols <- list()
  col_term <- integer()
  if (isTRUE(attr(fixed_terms, "intercept") == 1L)) {
    cols[[1L]] <- integer()
    col_term <- 0L
  }
  for (t in seq_along(labs)) {
    in_term <- which(fac[, t] != 0L)
    parts <- vector("list", length(in_term))
    for (i in seq_along(in_term)) {
      pv <- var_parts(vars[in_term[i]], fac[in_term[i], t] == 2L)
      if (is.null(pv)) return(NULL)
      parts[[i]] <- length(comps) + seq_along(pv)
      comps <- c(comps, pv)
    }
    # the term's columns: every combination, the first variable fastest
    grid <- as.matrix(expand.grid(parts, KEEP.OUT.ATTRS = FALSE))
    for (r in seq_len(nrow(grid))) cols[[length(cols) + 1L]] <- as.integer(grid[r, ])
    col_term <- c(col_term, rep(t, nrow(grid)))
  }
  if (!identical(col_term, as.integer(attr(tmpl, "assign")))) return(NULL)
  X <- rs_fill_columns(n, comps, cols)
  if (is.list(X)) h_check_rust_result(X)
  attr(X, "dimnames") <- list(NULL, colnames(tmpl))
  attr(X, "assign") <- attr(tmpl, "assign")
  if (!is.null(attr(tmpl, "contrasts"))) attr(X, "contrasts") <- attr(tmpl, "contrasts")
  X
}

#' Column sums and cross-product of a model matrix, from one multithreaded
#' pass in Rust (`[X 1]'[X 1]`, `rs_cross_products()`), and which columns
#' hold only 0s and 1s.
#' @return list(s1 = column sums, xtx = crossprod(X), binary = logical), or
#'   NULL for no columns.
#' @noRd
h_x_summaries <- function(X) {
  p <- ncol(X)
  if (!p) return(NULL)
  if (typeof(X) != "double") storage.mode(X) <- "double"
  res <- h_check_rust_result(rs_cross_products(X))
  g <- res$gram
  xtx <- g[seq_len(p), seq_len(p), drop = FALSE]
  dimnames(xtx) <- list(colnames(X), colnames(X))
  list(s1 = stats::setNames(g[seq_len(p), p + 1L], colnames(X)), xtx = xtx,
       binary = res$binary)
}

#' Weights from the model frame (1s if none).
#'
#' The values are checked by the Rust core's rule (`check_weights()` in
#' src/rust/core/src/input.rs, the same function the fit validates with):
#' finite, non-negative, not all zero. A zero weight drops the observation's
#' contribution to the criterion (as in `lm()`); the row keeps a fitted value.
#' @return numeric vector with attribute "n_positive" (number of positive
#'   weights).
#' @noRd
h_frame_weights <- function(frame) {
  w <- stats::model.weights(frame)
  if (is.null(w)) return(structure(rep(1, nrow(frame)), n_positive = nrow(frame)))
  w <- as.numeric(w)
  res <- h_check_rust_result(rs_check_weights(w))
  structure(w, n_positive = as.integer(res$n_positive))
}

#' Offset from the model frame: formula `offset()` terms plus the `offset`
#' argument (0s if none).
#' @noRd
h_frame_offset <- function(frame) {
  off <- stats::model.offset(frame)
  if (is.null(off)) return(rep(0, nrow(frame)))
  off <- as.numeric(off)
  if (any(!is.finite(off))) h_abort("NA/NaN/Inf in the offset.", "non_finite")
  off
}

#' Model frame and design matrices of a linear mixed model.
#'
#' Called from `lmm()` as
#' `mc <- match.call(); h_model_design(formula, data = mc$data, subset = mc$subset,
#' weights = mc$weights, na.action = na.action, offset = mc$offset,
#' contrasts = contrasts, env = parent.frame())`, i.e. `data`, `subset`,
#' `weights` and `offset` may be unevaluated expressions (they are evaluated in
#' the data, then in `env`) or values.
#'
#' @param formula lme4-style formula.
#' @param data,subset,weights,offset see above.
#' @param na.action `NULL`, a function or a function name.
#' @param contrasts `NULL` or a list for `model.matrix(contrasts.arg = )`.
#' @param env environment in which to evaluate the arguments.
#' @return list(y, X, dropped, X_full_colnames, weights, offset, has_offset,
#'   has_weights (whether the call gave an offset or weights),
#'   re, frame, fixed_formula, fixed_terms, xlevels, contrasts, formula,
#'   na_action, n, n_obs = number of rows with a positive weight).
#' @noRd
h_model_design <- function(formula, data = NULL, subset = NULL, weights = NULL,
                           na.action = NULL, offset = NULL, contrasts = NULL,
                           env = parent.frame()) {
  formula <- h_as_formula(formula, env)
  if (is.null(environment(formula))) environment(formula) <- env
  if (length(formula) != 3L) h_abort("The formula must have a response (left-hand side).", "response")
  bars <- h_find_bars(formula, expand = TRUE)
  cov_term <- h_find_cov_term(formula)
  if (!length(bars) && is.null(cov_term)) h_abort("No random effects terms specified in formula", "formula")
  data <- h_eval_data(data, env)
  subset <- h_eval_arg(subset, data, env, "subset")
  weights <- h_column_by_name(h_eval_arg(weights, data, env, "weights"), data)
  offset <- h_column_by_name(h_eval_arg(offset, data, env, "offset"), data)
  h_check_weights_arg(weights)
  h_check_offset_arg(offset)
  frame <- h_build_frame(h_frame_formula(formula), data, subset, weights, offset, h_na_action_fun(na.action))
  n <- nrow(frame)
  y <- h_frame_response(frame)
  re <- if (length(bars) || is.null(cov_term)) h_re_terms(bars, frame, env = environment(formula))
  fixed_formula <- h_no_bars(formula)
  fixed_terms <- h_attach_predvars(h_fixed_terms(fixed_formula, data), h_predvars_map(attr(frame, "terms")))
  xs <- h_fixed_matrix_sums(fixed_terms, frame, contrasts)
  X_full <- xs$X
  xs$X <- NULL
  weights <- h_frame_weights(frame)
  n_pos <- attr(weights, "n_positive")
  reduced <- h_drop_rank_deficient(X_full, rows = if (n_pos < n) weights > 0, xtx = xs$xtx)
  if (!is.null(xs$xtx)) {
    kept <- match(colnames(reduced$X), colnames(X_full))
    h_check_scale_x(reduced$X, s1 = xs$s1[kept], s2 = diag(xs$xtx)[kept],
                    binary = xs$binary[kept])
  }
  weights <- as.numeric(weights)
  attr(fixed_terms, "lmmr_kept_columns") <- colnames(reduced$X)
  cov <- NULL
  if (!is.null(cov_term)) {
    if (!is.null(stats::model.weights(frame))) {
      h_abort("Prior weights cannot be combined with a residual covariance structure.", "cov_struct")
    }
    cov <- h_cov_layout(cov_term, frame, re)
    h_check_cov_identified(cov, re, cov_term, n, ncol(reduced$X))
  }
  out <- list(
    y = y,
    X = reduced$X,
    dropped = reduced$dropped,
    X_full_colnames = colnames(X_full),
    weights = weights,
    offset = h_frame_offset(frame),
    has_offset = !is.null(stats::model.offset(frame)),
    has_weights = !is.null(stats::model.weights(frame)),
    re = re,
    frame = frame,
    fixed_formula = fixed_formula,
    fixed_terms = fixed_terms,
    xlevels = stats::.getXlevels(fixed_terms, frame),
    contrasts = attr(X_full, "contrasts"),
    formula = h_expanded_formula(formula),
    na_action = attr(frame, "na.action"),
    n = n,
    n_obs = n_pos
  )
  if (!is.null(cov)) out[c("cov", "cov_term")] <- list(cov, cov_term)
  out
}

#' Model design from the matched call of `lmm()`.
#'
#' `formula`, `na.action` and `contrasts` are evaluated in `env`; `data`,
#' `subset`, `weights` and `offset` are passed on unevaluated so that they are
#' looked up in the data first (as `lm()` and `lme4::lmer()` do).
#' @param mc result of `match.call()` in `lmm()`.
#' @param env the environment `lmm()` was called from.
#' @return see [h_model_design()].
#' @noRd
h_model_design_from_call <- function(mc, env) {
  if (is.null(mc$formula)) h_abort("argument 'formula' is missing.", "formula")
  formula <- tryCatch(
    eval(mc$formula, env),
    error = function(e) h_abort(sprintf("could not evaluate 'formula': %s", conditionMessage(e)), "formula")
  )
  h_model_design(
    formula,
    data = mc$data,
    subset = mc$subset,
    weights = mc$weights,
    na.action = if (!is.null(mc$na.action)) eval(mc$na.action, env),
    offset = mc$offset,
    contrasts = if (!is.null(mc$contrasts)) eval(mc$contrasts, env),
    env = env
  )
}

#' Names of the kept fixed-effects columns stored with the design.
#' @noRd
h_kept_colnames <- function(design_info) {
  X <- design_info[["X"]]
  if (!is.null(X)) return(colnames(X))
  kept <- attr(design_info[["fixed_terms"]], "lmmr_kept_columns")
  if (!is.null(kept)) return(kept)
  full <- design_info[["X_full_colnames"]]
  if (is.null(full)) return(NULL)
  setdiff(full, design_info[["dropped"]])
}

#' Fixed-effects design for new data.
#'
#' @param design_info result of [h_model_design()] or a subset of it with
#'   `fixed_terms`, `xlevels`, `contrasts` (the kept columns are taken from
#'   `X`, else from attribute "lmmr_kept_columns" of `fixed_terms`, else
#'   `X_full_colnames` minus `dropped`).
#' @param newdata data frame (the response is not needed).
#' @return list(X = m x p matrix of the kept columns, offset = numeric m, the
#'   formula `offset()` terms evaluated on `newdata`, 0s if none).
#' @noRd
h_newdata_X <- function(design_info, newdata) {
  tt <- stats::delete.response(design_info$fixed_terms)
  newdata <- as.data.frame(newdata)
  mf <- tryCatch(
    stats::model.frame(tt, newdata, na.action = stats::na.pass, xlev = design_info$xlevels),
    error = function(e) h_abort(conditionMessage(e), "data")
  )
  if (nrow(mf) != nrow(newdata)) mf <- mf[rep(1L, nrow(newdata)), , drop = FALSE]
  X <- stats::model.matrix(tt, mf, contrasts.arg = design_info$contrasts)
  kept <- h_kept_colnames(design_info)
  if (!is.null(kept)) X <- X[, kept, drop = FALSE]
  rownames(X) <- NULL
  off <- stats::model.offset(mf)
  off <- if (is.null(off)) rep(0, nrow(X)) else as.numeric(off)
  list(X = X, offset = off)
}

#' Cheap screen for a full-rank X: a pivoted Cholesky of the column-scaled
#' cross-product (one BLAS pass, instead of a QR of the n x p matrix). Only
#' when it is not clearly well conditioned does the caller run the QR that
#' decides which columns are aliased.
#' @noRd
h_clearly_full_rank <- function(X, xtx = NULL) {
  if (is.null(xtx)) xtx <- crossprod(X)
  d <- sqrt(diag(xtx))
  if (any(!is.finite(d)) || any(d == 0)) return(FALSE)
  xtx <- xtx / outer(d, d)
  r <- suppressWarnings(chol(xtx, pivot = TRUE, tol = 1e-9))
  # smallest pivot of the scaled Cholesky factor plays the role of QR's
  # |R_jj| / |x_j|; keep a wide margin over the QR tolerance
  attr(r, "rank") == ncol(X) && min(abs(diag(r))) > 1e-4
}

#' Evaluate a model.matrix() call and turn its errors (complex variables,
#' unknown contrast functions, ...) into classed errors
#' @noRd
h_model_matrix_safely <- function(expr, what) {
  tryCatch(expr, error = function(e) {
    h_abort(sprintf("Could not build the %s model matrix: %s", what, conditionMessage(e)),
            "data")
  })
}

#' Drop unused factor levels of a model frame after rows were removed,
#' keeping its attributes ("terms", "na.action")
#' @noRd
h_drop_unused_levels <- function(frame) {
  for (nm in names(frame)) {
    x <- frame[[nm]]
    if (is.factor(x) && !all(tabulate(x, nbins = nlevels(x)) > 0L)) {
      # what model.frame(drop.unused.levels = TRUE) does to such a column
      frame[[nm]] <- x[, drop = TRUE]
    }
  }
  frame
}
