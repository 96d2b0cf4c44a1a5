# Fits from sufficient statistics computed in a database.
#
# Everything a linear mixed model needs from the data is the weighted Gram
# matrix of [Z X y] (plus n and sum(log w)), and every block of it is a sum
# over rows grouped by the levels of the grouping factors. For a dbplyr lazy
# table, lmm() computes per *cell* (one combination of the levels of all
# grouping factors) the Gram matrix of the model's columns with two SQL
# aggregate queries (weighted means first, centred products second), brings
# back only these aggregates, and turns each cell's Gram matrix G_c into a
# few "pseudo-rows" R_c with R_c' R_c = G_c (rank of G_c rows, at most the
# number of columns). The pseudo-rows carry the cell's grouping levels, so
# the in-memory engine fits them as it fits data rows and gets the same
# blocks, the same criterion (with the real n and sum(log w)) and the same
# inference, while the rows never leave the database.

#' Is `data` a lazy database table (dbplyr)?
#' @noRd
h_is_lazy_table <- function(data) inherits(data, "tbl_lazy")

#' @noRd
h_db_require <- function() {
  for (p in c("DBI", "dplyr", "dbplyr")) {
    if (!requireNamespace(p, quietly = TRUE)) {
      h_abort(sprintf("Fitting on a database table needs the package '%s'.", p),
              "missing_package")
    }
  }
}

#' Functions that may appear in a numeric model term computed in SQL: the
#' arithmetic operators and functions every SQL engine has (dbplyr
#' translates them).
#' @noRd
h_sql_functions <- c("+", "-", "*", "/", "^", "(", "I", "log", "exp", "sqrt",
                     "abs", "log10", "log2")

#' Check that a numeric term can be computed in SQL; strip I()
#' @param expr the variable's expression in the formula.
#' @param numeric_cols names of the table's numeric columns.
#' @noRd
h_sql_numeric_expr <- function(expr, numeric_cols, what) {
  walk <- function(e) {
    if (is.numeric(e)) return(e)
    if (is.name(e)) {
      v <- as.character(e)
      if (!(v %in% numeric_cols)) {
        h_abort(sprintf("%s uses column '%s', which is not a numeric column of the table.",
                        what, v), "data")
      }
      return(e)
    }
    if (is.call(e)) {
      fn <- as.character(e[[1L]])[1L]
      if (!(fn %in% h_sql_functions)) {
        h_abort(sprintf("%s uses %s(), which cannot be computed in the database (only arithmetic, log(), exp(), sqrt(), abs() and I() are pushed to SQL); compute the column in the table first, or collect the data and fit in memory.",
                        what, fn), "sql_unsupported")
      }
      if (fn == "I" || (fn == "(" && length(e) == 2L)) return(walk(e[[2L]]))
      for (i in seq_along(e)[-1L]) e[[i]] <- walk(e[[i]])
      return(e)
    }
    h_abort(sprintf("%s: cannot translate '%s' to SQL.", what, h_deparse(e)), "sql_unsupported")
  }
  walk(expr)
}

#' The table's column names and column classes (from its first rows: SQLite
#' columns computed by expressions have no declared type)
#' @noRd
h_db_schema <- function(tbl) {
  proto <- tryCatch(dplyr::collect(utils::head(tbl, 10L)),
                    error = function(e) {
                      h_abort(sprintf("Could not read the table: %s", conditionMessage(e)), "data")
                    })
  list(names = names(proto),
       numeric = names(proto)[vapply(proto, is.numeric, logical(1))],
       character = names(proto)[vapply(proto, function(x) is.character(x) || is.factor(x),
                                       logical(1))])
}

#' Sorted distinct values of a column (the levels R's factor() would give)
#' @noRd
h_db_levels <- function(tbl, var) {
  d <- dplyr::collect(dplyr::distinct(tbl, !!as.name(var)))
  v <- d[[1L]]
  v <- v[!is.na(v)]
  as.character(sort(unique(v)))
}

#' A factor variable of a formula term: a column name, or factor(column)
#' @return the column name, or NULL when `expr` is not a factor variable
#' @noRd
h_db_factor_column <- function(expr, schema) {
  if (is.name(expr) && as.character(expr) %in% schema$character) return(as.character(expr))
  if (h_is_call_to(expr, "factor") && length(expr) == 2L && is.name(expr[[2L]]) &&
      as.character(expr[[2L]]) %in% schema$names) {
    return(as.character(expr[[2L]]))
  }
  NULL
}

#' SQL-able expressions (R calls that dbplyr translates) for every column of
#' the model matrix of a terms object, in model.matrix()'s order and with its
#' names
#' @param tt terms object (fixed part, or `~ lhs` of a bar).
#' @param schema from h_db_schema().
#' @param levels named list of factor levels by column name.
#' @param contrasts user's contrasts (list) or NULL.
#' @return list(names, exprs, factor_cols)
#' @noRd
h_db_model_columns <- function(tt, schema, levels, contrasts = NULL) {
  vars <- as.list(attr(tt, "variables"))[-1L]
  var_labels <- vapply(vars, h_deparse, character(1))
  fac <- attr(tt, "factors")
  labels <- attr(tt, "term.labels")
  names_out <- character(0)
  exprs_out <- list()
  if (attr(tt, "intercept") == 1L) {
    names_out <- "(Intercept)"
    exprs_out <- list(1)
  }
  off <- attr(tt, "offset")
  factor_cols <- character(0)
  for (lab in labels) {
    in_term <- which(fac[, lab] > 0)
    cols <- lapply(in_term, function(vi) {
      v <- vars[[vi]]
      vl <- var_labels[vi]
      fcol <- h_db_factor_column(v, schema)
      if (is.null(fcol)) {
        e <- h_sql_numeric_expr(v, schema$numeric, sprintf("The term '%s'", vl))
        return(list(names = vl, exprs = list(e)))
      }
      factor_cols <<- union(factor_cols, fcol)
      lev <- levels[[fcol]]
      cm <- if (fac[vi, lab] == 1L) {
        ct <- contrasts[[vl]] %||% getOption("contrasts")[[1L]]
        m <- if (is.matrix(ct)) ct else {
          f <- if (is.function(ct)) ct else match.fun(ct)
          f(lev)
        }
        m <- as.matrix(m)
        if (is.null(colnames(m))) colnames(m) <- seq_len(ncol(m))
        m
      } else {
        structure(diag(length(lev)), dimnames = list(lev, lev))
      }
      col <- as.name(fcol)
      ex <- lapply(seq_len(ncol(cm)), function(j) {
        nz <- which(cm[, j] != 0)
        args <- lapply(nz, function(i) call("~", call("==", col, lev[i]), cm[i, j]))
        as.call(c(list(quote(dplyr::case_when)), args, list(call("~", TRUE, 0))))
      })
      list(names = paste0(vl, colnames(cm)), exprs = ex)
    })
    # first variable varies fastest, as model.matrix()
    grid <- expand.grid(lapply(cols, function(cl) seq_along(cl$names)))
    for (r in seq_len(nrow(grid))) {
      idx <- unlist(grid[r, ])
      nm <- paste(vapply(seq_along(idx), function(i) cols[[i]]$names[idx[i]], ""), collapse = ":")
      ex <- Reduce(function(a, b) call("*", a, b),
                   lapply(seq_along(idx), function(i) cols[[i]]$exprs[[idx[i]]]))
      names_out <- c(names_out, nm)
      exprs_out <- c(exprs_out, list(ex))
    }
  }
  offset_exprs <- lapply(off, function(i) {
    e <- vars[[i]]
    h_sql_numeric_expr(e[[2L]], schema$numeric, "The offset")
  })
  list(names = names_out, exprs = exprs_out, factor_cols = factor_cols,
       offset = offset_exprs)
}

#' A small data frame with every factor level, for model.matrix() naming
#' and for the metadata of the random-effect terms
#' @noRd
h_db_prototype <- function(vars, schema, levels, n = NULL) {
  nlev <- vapply(levels, length, integer(1))
  if (is.null(n)) n <- max(2L, nlev)
  out <- lapply(vars, function(v) {
    if (v %in% names(levels)) factor(rep_len(levels[[v]], n), levels = levels[[v]])
    else seq_len(n) / n + 1
  })
  names(out) <- vars
  as.data.frame(out, stringsAsFactors = FALSE, optional = TRUE)
}

#' Fit a linear mixed model to a lazy database table (called by lmm())
#' @noRd
h_lmm_db <- function(formula, tbl, REML, weights, na.action, contrasts, control, call) {
  h_db_require()
  formula <- h_as_formula(formula)
  if (length(formula) != 3L) h_abort("The formula must have a response (left-hand side).", "response")
  bars <- h_find_bars(formula, expand = TRUE)
  if (!length(bars)) h_abort("No random effects terms specified in formula", "formula")
  schema <- h_db_schema(tbl)
  used <- unique(c(all.vars(formula), weights))
  missing_cols <- setdiff(used, schema$names)
  if (length(missing_cols)) {
    h_abort(sprintf("The table has no column %s.", paste(sprintf("'%s'", missing_cols), collapse = ", ")),
            "data")
  }
  na_fun <- if (is.null(na.action)) "na.omit" else if (is.character(na.action)) na.action else
    if (identical(na.action, stats::na.fail)) "na.fail" else "na.omit"
  # rows with a NULL in a used column: dropped in SQL (na.omit/na.exclude) or an error
  not_null <- lapply(used, function(v) call("!", call("is.na", as.name(v))))
  n_all <- dplyr::pull(dplyr::collect(dplyr::summarise(tbl, n = dplyr::n())), "n")
  tbl_ok <- dplyr::filter(tbl, !!!not_null)
  if (weights_given <- !is.null(weights)) {
    tbl_ok <- dplyr::filter(tbl_ok, !!as.name(weights) > 0)
  }
  # levels of every character column the model uses
  group_vars <- unique(unlist(lapply(bars, function(b) h_group_vars(b$group))))
  char_used <- intersect(used, schema$character)
  lev_cols <- union(char_used, h_db_factor_calls(formula))
  levels <- stats::setNames(lapply(lev_cols, function(v) h_db_levels(tbl_ok, v)), lev_cols)
  # fixed part
  fixed_formula <- h_no_bars(formula)
  fixed_terms <- stats::terms(fixed_formula)
  fx <- h_db_model_columns(stats::delete.response(fixed_terms), schema, levels, contrasts)
  y_expr <- h_sql_numeric_expr(formula[[2L]], schema$numeric, "The response")
  # random parts
  re_cols <- lapply(bars, function(b) {
    tt <- stats::terms(stats::as.formula(call("~", b$lhs)))
    h_db_model_columns(tt, schema, levels)
  })
  for (g in group_vars) {
    if (!(g %in% names(levels))) levels[[g]] <- h_db_levels(tbl_ok, g)
    if (length(levels[[g]]) < 2L) {
      h_abort(sprintf("The grouping column '%s' has fewer than two levels.", g), "grouping")
    }
  }
  # the columns whose Gram matrix is needed, without duplicates; `one` first
  all_exprs <- c(list(1), fx$exprs, unlist(lapply(re_cols, `[[`, "exprs"), recursive = FALSE))
  keys <- vapply(all_exprs, h_deparse, character(1))
  uniq <- !duplicated(keys)
  u_exprs <- all_exprs[uniq]
  u_keys <- keys[uniq]
  resp <- y_expr
  for (o in fx$offset) resp <- call("-", resp, o)
  m <- length(u_exprs) + 1L                           # + response
  w_expr <- if (weights_given) as.name(weights) else 1
  # pass 1: counts, weighted means (the shifts), unweighted moments for R2
  cols <- c(stats::setNames(u_exprs, sprintf("lmmr_u%d", seq_along(u_exprs))), list(lmmr_y = resp),
            list(lmmr_w = w_expr),
            if (weights_given) list(lmmr_lw = call("log", as.name(weights))))
  tbl_u <- dplyr::mutate(tbl_ok, !!!cols)
  u_names <- c(sprintf("lmmr_u%d", seq_along(u_exprs)), "lmmr_y")
  s1 <- c(c(.sw = "lmmr_w"),
          stats::setNames(sprintf("lmmr_w * %s", u_names), paste0(".m", u_names)),
          if (weights_given) c(.slw = "lmmr_lw"))
  p1 <- h_db_aggregate(tbl_u, character(0), s1)
  n <- as.numeric(p1$.n)
  if (!is.finite(n) || n == 0) h_abort("No rows left after removing missing values.", "no_data")
  if (na_fun %in% c("na.fail") && n < n_all) {
    h_abort(sprintf("The table has %d rows with missing values in the model's columns.", n_all - n), "na")
  }
  shift <- vapply(u_names, function(u) p1[[paste0(".m", u)]] / p1$.sw, numeric(1))
  shift[1L] <- 0                                     # the constant column
  # pass 2: per cell, the weighted Gram of the centred columns
  shifted <- stats::setNames(lapply(seq_along(u_names), function(i) {
    if (shift[i] == 0) as.name(u_names[i]) else call("-", as.name(u_names[i]), unname(shift[i]))
  }), paste0("lmmr_c", seq_along(u_names)))
  tbl_c <- dplyr::mutate(tbl_u, !!!shifted)
  pairs <- which(upper.tri(diag(m), diag = TRUE), arr.ind = TRUE)
  gram_exprs <- stats::setNames(
    sprintf("lmmr_w * lmmr_c%d * lmmr_c%d", pairs[, 1], pairs[, 2]),
    sprintf(".g%d_%d", pairs[, 1], pairs[, 2]))
  cells <- h_db_aggregate(tbl_c, group_vars, gram_exprs)
  names(cells)[names(cells) == ".n"] <- ".cn"
  # unweighted moments of the columns (Nakagawa's R2 and the ICC average
  # over the rows); from the cells when there are no weights
  G_sum <- matrix(0, m, m)
  G_sum[cbind(pairs[, 1], pairs[, 2])] <- colSums(as.matrix(cells[, names(gram_exprs), drop = FALSE]))
  G_sum[cbind(pairs[, 2], pairs[, 1])] <- G_sum[cbind(pairs[, 1], pairs[, 2])]
  n_trips <- 4L + length(levels)
  if (weights_given) {
    s3 <- c(stats::setNames(sprintf("lmmr_c%d", seq_len(m)), sprintf(".a%d", seq_len(m))),
            stats::setNames(sprintf("lmmr_c%d * lmmr_c%d", pairs[, 1], pairs[, 2]),
                            sprintf(".b%d_%d", pairs[, 1], pairs[, 2])))
    p3 <- h_db_aggregate(tbl_c, character(0), s3)
    n_trips <- n_trips + 1L
    csum <- unlist(p3[sprintf(".a%d", seq_len(m))])
    G_un <- matrix(0, m, m)
    G_un[cbind(pairs[, 1], pairs[, 2])] <- unlist(p3[sprintf(".b%d_%d", pairs[, 1], pairs[, 2])])
    G_un[cbind(pairs[, 2], pairs[, 1])] <- G_un[cbind(pairs[, 1], pairs[, 2])]
  } else {
    csum <- G_sum[1L, ]
    G_un <- G_sum
  }
  # raw second moments and means of the columns: u = c + shift
  csum <- unname(csum)
  M2 <- (G_un + outer(shift, csum) + outer(csum, shift)) / n + outer(shift, shift)
  mu <- csum / n + shift
  moments <- list(keys = c(u_keys, "lmmr_y"), mean = unname(mu), second = unname(M2), n = n)
  # pseudo-rows per cell
  pr <- h_pseudo_rows(cells, pairs, m)
  U <- pr$rows
  for (i in seq_len(m)[-1L]) U[, i] <- U[, i] + shift[i] * U[, 1L]  # undo the centring
  cell_frame <- cells[pr$cell, group_vars, drop = FALSE]
  for (g in group_vars) cell_frame[[g]] <- factor(as.character(cell_frame[[g]]), levels = levels[[g]])
  col_of <- function(e) match(h_deparse(e), u_keys)
  X <- U[, vapply(fx$exprs, col_of, integer(1)), drop = FALSE]
  colnames(X) <- fx$names
  y <- U[, m]
  # metadata of the random-effect terms from the in-memory code, on a frame
  # with the cells' levels; then the pseudo-rows' Z
  lhs_vars <- setdiff(unique(unlist(lapply(bars, function(b) all.vars(b$lhs)))), group_vars)
  frame <- cell_frame
  if (length(lhs_vars)) frame <- cbind(frame, h_db_prototype(lhs_vars, schema, levels, n = nrow(cell_frame)))
  re <- h_re_terms(bars, frame, env = environment(formula), check = FALSE)
  bar_keys <- vapply(bars, function(b) h_deparse(h_bar_call(b)), character(1))
  for (i in seq_along(re$terms)) {
    j <- match(re$terms[[i]]$term_name, bar_keys)
    rc <- re_cols[[j]]
    Z <- U[, vapply(rc$exprs, col_of, integer(1)), drop = FALSE]
    if (!identical(rc$names, re$terms[[i]]$cnms)) {
      h_abort(sprintf("Internal error: random-effect columns %s do not match %s.",
                      paste(rc$names, collapse = ", "), paste(re$terms[[i]]$cnms, collapse = ", ")),
              "internal")
    }
    colnames(Z) <- rc$names
    re$terms[[i]]$Z <- Z
  }
  # model.matrix() naming check and the design information predict() needs
  pv <- h_db_prototype(setdiff(all.vars(fixed_formula[-2L]), character(0)), schema, levels)
  mf_proto <- stats::model.frame(stats::delete.response(fixed_terms), pv)
  mm <- stats::model.matrix(stats::delete.response(fixed_terms), mf_proto, contrasts.arg = contrasts)
  if (!identical(colnames(mm), fx$names)) {
    h_abort(sprintf("Internal error: fixed-effect columns %s do not match model.matrix()'s %s.",
                    paste(fx$names, collapse = ", "), paste(colnames(mm), collapse = ", ")), "internal")
  }
  attr(X, "assign") <- attr(mm, "assign")
  attr(X, "contrasts") <- attr(mm, "contrasts")
  reduced <- h_drop_rank_deficient(X)
  fixed_terms_i <- stats::terms(fixed_formula)
  attr(fixed_terms_i, "lmmr_kept_columns") <- colnames(reduced$X)
  design <- list(
    y = y, X = reduced$X, dropped = reduced$dropped, X_full_colnames = colnames(X),
    weights = rep(1, length(y)), offset = rep(0, length(y)),
    has_weights = weights_given, re = re, frame = NULL,
    fixed_formula = fixed_formula, fixed_terms = fixed_terms_i,
    xlevels = stats::.getXlevels(stats::delete.response(fixed_terms), mf_proto),
    contrasts = attr(mm, "contrasts"), formula = h_expanded_formula(formula),
    na_action = NULL, n = n,
    n_obs = n, log_w_sum = if (weights_given) p1$.slw else 0
  )
  res <- h_fit_design(design, REML = REML, control = control)
  fit <- h_build_lmm(design, res, REML = REML, call = call, control = control)
  fit$n <- n
  hyp_frame <- h_db_hyp_frame(tbl_ok, formula, schema, levels, fx$factor_cols)
  n_trips <- n_trips + as.integer(length(fx$factor_cols) > 0L)
  fit$db <- list(table = tbl, n_cells = nrow(cells), n_pseudo_rows = nrow(U),
                 frame = hyp_frame, round_trips = n_trips,
                 rows_transferred = nrow(cells) + 2L + sum(lengths(levels)),
                 log_w_sum = design$log_w_sum, moments = moments,
                 x_keys = vapply(fx$exprs, h_deparse, character(1))[!(fx$names %in% reduced$dropped)],
                 z_keys = lapply(fit$re_terms, function(t) {
                   j <- match(t$info$term_name, bar_keys)
                   vapply(re_cols[[j]]$exprs, h_deparse, character(1))
                 }))
  class(fit) <- c("lmmr_db", class(fit))
  fit
}

#' Column names used as factor(col) in a formula
#' @noRd
h_db_factor_calls <- function(formula) {
  out <- character(0)
  walk <- function(e) {
    if (!is.call(e)) return(invisible())
    if (h_is_call_to(e, "factor") && length(e) == 2L && is.name(e[[2L]])) {
      out <<- c(out, as.character(e[[2L]]))
    }
    for (a in as.list(e)[-1L]) walk(a)
  }
  walk(formula)
  unique(out)
}

#' Pseudo-rows of each cell: R_c with R_c' R_c = G_c (from the eigen
#' decomposition, dropping numerically zero directions)
#' @param cells data frame of the cell aggregates.
#' @param pairs the (row, col) index pairs of the upper triangle, in the
#'   order of the `.g` columns.
#' @param m size of the Gram matrices.
#' @return list(rows = matrix, cell = index of the cell of each row)
#' @noRd
h_pseudo_rows <- function(cells, pairs, m) {
  gcols <- sprintf(".g%d_%d", pairs[, 1], pairs[, 2])
  S <- as.matrix(cells[, gcols, drop = FALSE])
  storage.mode(S) <- "double"
  idx_u <- (pairs[, 2] - 1L) * m + pairs[, 1]
  idx_l <- (pairs[, 1] - 1L) * m + pairs[, 2]
  rows <- vector("list", nrow(S))
  G <- matrix(0, m, m)
  for (c in seq_len(nrow(S))) {
    G[idx_u] <- S[c, ]
    G[idx_l] <- S[c, ]
    e <- eigen(G, symmetric = TRUE)
    # eigenvalues come sorted: keep the numerically non-zero ones (at most
    # as many as the cell has rows)
    k <- seq_len(min(sum(e$values > max(e$values[1L], 0) * 1e-14 * m), cells$.cn[c]))
    rows[[c]] <- t(e$vectors[, k, drop = FALSE] * rep(sqrt(e$values[k]), each = m))
  }
  cnt <- vapply(rows, nrow, integer(1))
  list(rows = do.call(rbind, rows), cell = rep(seq_along(rows), cnt))
}

#' The model frame, or for a fit from database aggregates a small stand-in:
#' every combination of the fixed factors that occurs in the table (a few
#' times), generic values for the numeric variables and the levels of the
#' random-effect variables. The hypothesis bases of anova() and the term
#' reductions of ranova() depend on the data only through which factor
#' combinations occur (and on the numeric columns being in general
#' position), so they are the same on it.
#' @noRd
h_hyp_frame <- function(object) {
  if (!is.null(object$frame) || is.null(object$db)) return(object$frame)
  object$db$frame
}

#' Build the stand-in frame of h_hyp_frame() for a database fit
#' @noRd
h_db_hyp_frame <- function(tbl_ok, formula, schema, levels, factor_cols) {
  vars <- unique(all.vars(formula[-2L]))
  combos <- if (length(factor_cols)) {
    as.data.frame(dplyr::collect(dplyr::distinct(tbl_ok, !!!lapply(factor_cols, as.name))))
  } else data.frame(.one = 1)[, 0, drop = FALSE]
  nc <- max(1L, nrow(combos))
  rep_n <- 3L
  n <- nc * rep_n
  # reproducible generic values without touching the user's random stream
  gen <- (((seq_len(n * max(1L, length(vars))) * 0.6180339887498949) %% 1) - 0.5) * 2
  out <- list()
  for (i in seq_along(vars)) {
    v <- vars[i]
    if (v %in% factor_cols) {
      out[[v]] <- factor(rep(as.character(combos[[v]]), times = rep_n), levels = levels[[v]])
    } else if (v %in% names(levels)) {
      out[[v]] <- factor(rep_len(levels[[v]], n), levels = levels[[v]])
    } else {
      out[[v]] <- 1 + gen[(i - 1L) * n + seq_len(n)]
    }
  }
  fr <- as.data.frame(out, optional = TRUE)
  attr(fr, "terms") <- stats::terms(h_frame_formula(formula))
  fr
}

#' @noRd
h_rows_in_database <- function(what) {
  h_abort(sprintf("%s needs the rows of the data, which are in the database: the model was fitted from SQL aggregates. Collect the data (dplyr::collect()) and fit in memory to use it.",
                  what), "rows_in_database")
}

#' Methods that need the data rows, for fits made from a database table
#'
#' A fit whose `data` was a database table (class `"lmmr_db"`, see
#' [lmm()]) keeps only aggregates of the rows, so methods that need one
#' value per row raise an error of class `"lmmr_error_rows_in_database"`.
#' `predict()` with `newdata` works as for any fit.
#' @param object,x an `"lmmr_db"` fit.
#' @param newdata data frame for `predict()`; required.
#' @param ... passed on (`predict()` with `newdata`) or not used.
#' @return `predict()`: predictions for `newdata`; the others do not
#'   return.
#' @examples
#' if (requireNamespace("RSQLite", quietly = TRUE) &&
#'     requireNamespace("dbplyr", quietly = TRUE)) {
#'   con <- DBI::dbConnect(RSQLite::SQLite(), ":memory:")
#'   DBI::dbWriteTable(con, "sleep", as.data.frame(sleepstudy))
#'   fit <- lmm(Reaction ~ Days + (1 | Subject), data = dplyr::tbl(con, "sleep"))
#'   predict(fit, newdata = data.frame(Days = 0:2, Subject = "308"))
#'   try(fitted(fit))
#'   DBI::dbDisconnect(con)
#' }
#' @name lmmr_db-methods
NULL

#' @rdname lmmr_db-methods
#' @export
fitted.lmmr_db <- function(object, ...) h_rows_in_database("fitted()")

#' @rdname lmmr_db-methods
#' @export
residuals.lmmr_db <- function(object, ...) h_rows_in_database("residuals()")

#' @rdname lmmr_db-methods
#' @export
simulate.lmmr_db <- function(object, ...) h_rows_in_database("simulate()")

#' @rdname lmmr_db-methods
#' @export
plot.lmmr_db <- function(x, ...) h_rows_in_database("plot()")

#' @rdname lmmr_db-methods
#' @export
model.matrix.lmmr_db <- function(object, ...) h_rows_in_database("model.matrix()")

#' @rdname lmmr_db-methods
#' @export
refit.lmmr_db <- function(object, ...) h_rows_in_database("refit()")

#' @rdname lmmr_db-methods
#' @export
predict.lmmr_db <- function(object, newdata = NULL, ...) {
  if (is.null(newdata)) h_rows_in_database("predict() without `newdata`")
  NextMethod()
}

#' The fixed-effects model matrix of the stand-in frame of a database fit
#' (the columns of the fit, with their "assign" attribute)
#' @noRd
h_db_hyp_X <- function(object, st) {
  fr <- h_hyp_frame(object)
  tt <- stats::delete.response(st$terms)
  mf <- stats::model.frame(tt, fr)
  X <- stats::model.matrix(tt, mf, contrasts.arg = object$design_info$contrasts)
  keep <- colnames(object$X)
  a <- attr(X, "assign")
  X <- X[, keep, drop = FALSE]
  attr(X, "assign") <- a[match(keep, colnames(stats::model.matrix(tt, mf,
                                  contrasts.arg = object$design_info$contrasts)))]
  X
}

#' SQL of an aggregate query over a lazy table: per group (or overall),
#' `COUNT(*)` and `SUM()` of each expression (plain SQL over the table's
#' columns and the ones it computes, which carry no special characters)
#' @param tbl lazy table.
#' @param group_vars grouping column names (may be empty).
#' @param sums named character vector of SQL expressions.
#' @noRd
h_db_aggregate_sql <- function(tbl, group_vars, sums) {
  con <- dbplyr::remote_con(tbl)
  qid <- function(x) as.character(dbplyr::escape(dbplyr::ident(x), con = con))
  sub <- as.character(dbplyr::sql_render(tbl))
  g <- vapply(group_vars, qid, character(1))
  sel <- c(g, "COUNT(*) AS lmmr_n",
           sprintf("SUM(%s) AS %s", unname(sums), sprintf("lmmr_s%d", seq_along(sums))))
  paste0("SELECT ", paste(sel, collapse = ", "), " FROM (", sub, ") lmmr_sub",
         if (length(g)) paste0(" GROUP BY ", paste(g, collapse = ", ")))
}

#' Run h_db_aggregate_sql() and name the result (group columns, `.n`, the
#' names of `sums`)
#' @noRd
h_db_aggregate <- function(tbl, group_vars, sums) {
  sql <- h_db_aggregate_sql(tbl, group_vars, sums)
  res <- tryCatch(DBI::dbGetQuery(dbplyr::remote_con(tbl), sql), error = function(e) {
    h_abort(sprintf("The database could not compute the aggregates: %s", conditionMessage(e)),
            "database")
  })
  res <- as.data.frame(res)
  names(res) <- c(group_vars, ".n", names(sums))
  for (v in c(".n", names(sums))) res[[v]] <- as.numeric(res[[v]])
  res
}
