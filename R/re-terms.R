# Random-effects terms: grouping factors, per-term model matrices, ordering,
# checks, and their re-evaluation on new data.
#
# Layout convention (same as lme4's Zt): the random effects are term-major; within
# a term with G levels and k columns, the coefficient of covariate c (0-based)
# for level j (0-based) has index j * k + c.

#' Deparse a variable the way `model.frame()` names its columns.
#' @noRd
h_deparse_var <- function(x) {
  paste(deparse(x, width.cutoff = 500L, backtick = !is.symbol(x) && is.language(x)), collapse = " ")
}

#' Turn a vector into a factor (factors are kept, unused levels are dropped).
#' @noRd
h_as_group_factor <- function(x) {
  if (!is.factor(x)) return(factor(x))
  if (anyNA(levels(x))) return(factor(x, exclude = NA))
  # drop unused levels with integer arithmetic (factor() on a factor goes
  # through character and costs seconds at 10^7 rows)
  codes <- as.integer(x)
  used <- tabulate(codes, nbins = nlevels(x)) > 0L
  if (all(used) && !is.ordered(x)) return(x)
  remap <- cumsum(used)
  structure(remap[codes], levels = levels(x)[used], class = "factor")
}

#' Interaction of two factors with lme4's level order.
#'
#' Levels are the observed combinations `"<f1>:<f2>"`, ordered by the level of
#' `f1` first and then by the level of `f2`.
#' @param f1,f2 factors of equal length.
#' @return a factor.
#' @noRd
h_interaction <- function(f1, f2) {
  # integer keys ordered by f1's level, then f2's; labels only for observed
  # combinations
  n2 <- nlevels(f2)
  key <- (as.numeric(f1) - 1) * n2 + as.numeric(f2)
  ukeys <- sort(unique(key[!is.na(key)]))
  labs <- paste(levels(f1)[(ukeys - 1) %/% n2 + 1], levels(f2)[(ukeys - 1) %% n2 + 1],
                sep = ":")
  if (!anyDuplicated(labs)) {
    return(structure(match(key, ukeys), levels = labs, class = "factor"))
  }
  # level names containing ":" can collide: merge them as labels
  i <- as.integer(f1)
  j <- as.integer(f2)
  lab <- paste(levels(f1)[i], levels(f2)[j], sep = ":")
  lab[is.na(i) | is.na(j)] <- NA_character_
  obs <- !is.na(lab) & !duplicated(lab)
  ord <- order(i[obs], j[obs])
  levs <- unique(lab[obs][ord])
  factor(lab, levels = levs)
}

#' Fetch a grouping variable from a model frame (error of kind "data" if absent).
#' @noRd
h_frame_var <- function(name, frame) {
  if (!name %in% names(frame)) {
    h_abort(sprintf("Grouping variable '%s' not found in the model frame.", name), "data")
  }
  frame[[name]]
}

#' Evaluate a grouping expression (names joined by `:`) to a factor.
#' @param group grouping expression (no `/`).
#' @param frame model frame.
#' @return a factor with unused levels dropped.
#' @noRd
h_group_factor <- function(group, frame) {
  g <- h_strip_parens(group)
  if (is.name(g)) return(h_as_group_factor(h_frame_var(as.character(g), frame)))
  if (h_is_call_to(g, ":")) {
    return(h_interaction(h_group_factor(g[[2L]], frame), h_group_factor(g[[3L]], frame)))
  }
  h_check_group(g)
  h_abort(sprintf("Cannot evaluate grouping factor '%s'.", h_deparse(group)), "formula")
}

#' Map each model-frame variable (deparsed) to its `predvars` call.
#' @param frame_terms the terms object of the model frame.
#' @return named list of calls.
#' @noRd
h_predvars_map <- function(frame_terms) {
  vars <- as.list(attr(frame_terms, "variables"))[-1L]
  pv <- attr(frame_terms, "predvars")
  pv <- if (is.null(pv)) vars else as.list(pv)[-1L]
  stats::setNames(pv, vapply(vars, h_deparse_var, ""))
}

#' Attach `predvars` (from the model frame) to a terms object.
#'
#' This gives `makepredictcall()` semantics: `poly()`, `scale()`, `ns()` etc.
#' are re-evaluated on new data with the coefficients computed on the fit data.
#' @param tt a terms object.
#' @param pv_map result of [h_predvars_map()].
#' @return `tt` with attribute "predvars".
#' @noRd
h_attach_predvars <- function(tt, pv_map) {
  vars <- as.list(attr(tt, "variables"))[-1L]
  pv <- lapply(vars, function(v) {
    key <- h_deparse_var(v)
    if (key %in% names(pv_map)) pv_map[[key]] else v
  })
  attr(tt, "predvars") <- as.call(c(list(as.name("list")), pv))
  tt
}

#' Copy of the frame with the grouping variables of a term turned into factors.
#' @noRd
h_factorize_groups <- function(frame, vars) {
  for (v in intersect(vars, names(frame))) {
    if (!is.factor(frame[[v]])) frame[[v]] <- factor(frame[[v]])
  }
  frame
}

#' Model matrix of the left-hand side of a bar term.
#' @param lhs_terms terms object of `~ lhs`.
#' @param frame model frame (with a "terms" attribute, so variables are matched
#'   by name).
#' @return list(Z = n x k matrix, contrasts, xlevels).
#' @noRd
h_term_model_matrix <- function(lhs_terms, frame) {
  if (!length(attr(lhs_terms, "term.labels")) && isTRUE(attr(lhs_terms, "intercept") == 1L) &&
      is.null(attr(lhs_terms, "offset"))) {
    # `(1 | g)`: a column of ones, without model.matrix()'s n row names
    return(list(Z = matrix(1, nrow(frame), 1L, dimnames = list(NULL, "(Intercept)")),
                contrasts = NULL, xlevels = stats::.getXlevels(lhs_terms, frame)))
  }
  Z <- h_model_matrix_safely(stats::model.matrix(lhs_terms, frame), "random-effects")
  contr <- attr(Z, "contrasts")
  xlev <- stats::.getXlevels(lhs_terms, frame)
  # drop the row names first: as.numeric() on a matrix carrying 10^6
  # character row names is ~100 times slower than the copy itself
  cn <- colnames(Z)
  dimnames(Z) <- NULL
  Z <- matrix(as.numeric(Z), nrow = nrow(Z), ncol = ncol(Z), dimnames = list(NULL, cn))
  list(Z = Z, contrasts = contr, xlevels = xlev)
}

#' Build one random-effects term from a (single, expanded) bar record.
#' @param bar bar record with `double = FALSE` and no `/` in the grouping.
#' @param frame model frame.
#' @param pv_map result of [h_predvars_map()].
#' @param env environment for the left-hand-side formula.
#' @return a term record (see [h_re_terms()]).
#' @noRd
h_re_term <- function(bar, frame, pv_map, env) {
  group_vars <- h_group_vars(bar$group)
  ff <- h_group_factor(bar$group, frame)
  # anyNA() first: all(is.na()) would allocate n logicals for every term
  if (anyNA(ff) || !length(ff)) {
    if (all(is.na(ff))) {
      h_abort(sprintf("Invalid grouping factor specification, %s", h_deparse(bar$group)), "grouping")
    }
    h_abort(sprintf("NA in grouping factor '%s'.", h_deparse(bar$group)), "data")
  }
  lhs <- stats::as.formula(call("~", bar$lhs), env = env)
  lhs_terms <- h_attach_predvars(stats::terms(lhs), pv_map)
  mm <- h_term_model_matrix(lhs_terms, h_factorize_groups(frame, group_vars))
  list(
    group = h_deparse(bar$group),
    term_name = h_deparse(h_bar_call(bar)),
    group_expr = bar$group,
    group_vars = group_vars,
    factor = ff,
    levels = levels(ff),
    codes = as.integer(ff) - 1L,
    n_levels = nlevels(ff),
    Z = mm$Z,
    cnms = colnames(mm$Z),
    lhs = lhs,
    lhs_terms = lhs_terms,
    xlevels = mm$xlevels,
    contrasts = mm$contrasts,
    factor_id = NA_integer_
  )
}

#' Order of the random-effects terms, as lme4.
#'
#' If the numbers of levels are not already non-increasing, the terms are put
#' in decreasing order of the number of levels; ties then end up in reverse
#' order of appearance (lme4 reverses an increasing stable order).
#' @param n_levels integer vector.
#' @return permutation vector.
#' @noRd
h_re_order <- function(n_levels) {
  idx <- seq_along(n_levels)
  if (!any(diff(n_levels) > 0)) return(idx)
  rev(order(n_levels, idx))
}

#' Assign a 0-based factor identity to terms sharing a grouping factor name.
#' @noRd
h_factor_ids <- function(groups) {
  match(groups, unique(groups)) - 1L
}

#' Check the numbers of levels of the grouping factors (as lme4's defaults).
#' @param terms list of term records.
#' @param n number of observations.
#' @noRd
h_check_levels <- function(terms, n) {
  groups <- vapply(terms, `[[`, "", "group")
  nl <- vapply(terms, `[[`, 0L, "n_levels")
  keep <- !duplicated(groups)
  groups <- groups[keep]
  nl <- nl[keep]
  if (any(nl < 2L)) {
    h_abort(
      sprintf("grouping factors must have > 1 sampled level (problems: %s)", paste(groups[nl < 2L], collapse = ", ")),
      "grouping"
    )
  }
  if (any(nl >= n)) {
    h_abort(
      sprintf(
        "number of levels of each grouping factor must be < number of observations (problems: %s)",
        paste(groups[nl >= n], collapse = ", ")
      ),
      "grouping"
    )
  }
  invisible(TRUE)
}

#' Check the number of random effects of each term against the number of
#' observations (as lme4's check.nobs.vs.nRE = "stop").
#' @noRd
h_check_n_re <- function(terms, n) {
  for (t in terms) {
    n_re <- t$n_levels * ncol(t$Z)
    if (n <= n_re) {
      h_abort(
        sprintf(
          "number of observations (=%d) <= number of random effects (=%d) for term (%s); the random-effects parameters and the residual variance (or scale parameter) are probably unidentifiable",
          as.integer(n), as.integer(n_re), t$term_name
        ),
        "too_many_re"
      )
    }
  }
  invisible(TRUE)
}

#' Check that the random-effects model matrices are finite.
#' @noRd
h_check_finite_Z <- function(terms) {
  for (t in terms) {
    if (!all(is.finite(colSums(t$Z))) && any(!is.finite(t$Z))) {
      h_abort(
        sprintf("Non-finite values (NA/NaN/Inf) in the random-effects model matrix of term (%s).", t$term_name),
        "non_finite"
      )
    }
  }
  invisible(TRUE)
}

#' Build the random-effects terms from the model frame.
#'
#' @param bars list of expanded bar records (`h_find_bars(formula, expand = TRUE)`).
#' @param frame model frame (with a "terms" attribute).
#' @param env environment for the left-hand-side formulas.
#' @param check logical, run the lme4-style checks.
#' @return `list(terms = list(<term>, ...), q = sum(n_levels * ncol(Z)))`, terms
#'   in lme4's order. Each term is
#'   `list(group, term_name, group_expr, group_vars, factor, levels, codes
#'   (0-based), n_levels, Z (n x k), cnms, lhs (formula), lhs_terms (terms with
#'   predvars), xlevels, contrasts, factor_id (0-based))`.
#' @noRd
h_re_terms <- function(bars, frame, env = parent.frame(), check = TRUE) {
  if (!length(bars)) h_abort("No random effects terms specified in formula", "formula")
  pv_map <- h_predvars_map(attr(frame, "terms"))
  terms <- lapply(bars, h_re_term, frame = frame, pv_map = pv_map, env = env)
  terms <- terms[h_re_order(vapply(terms, `[[`, 0L, "n_levels"))]
  ids <- h_factor_ids(vapply(terms, `[[`, "", "group"))
  for (i in seq_along(terms)) terms[[i]]$factor_id <- ids[i]
  if (check) {
    n <- nrow(frame)
    h_check_levels(terms, n)
    h_check_n_re(terms, n)
    h_check_finite_Z(terms)
  }
  q <- sum(vapply(terms, function(t) t$n_levels * ncol(t$Z), 0))
  list(terms = terms, q = as.integer(q))
}

#' Dense random-effects model matrix of one term (n x G*k).
#' @param codes 0-based level codes (NA allowed: row of zeros).
#' @param Z n x k matrix.
#' @param n_levels number of levels G.
#' @return n x (G * k) matrix, level-major then covariate columns.
#' @noRd
h_term_dense_Z <- function(codes, Z, n_levels) {
  n <- nrow(Z)
  k <- ncol(Z)
  out <- matrix(0, n, n_levels * k)
  ok <- which(!is.na(codes))
  for (c in seq_len(k)) {
    out[cbind(ok, codes[ok] * k + c)] <- Z[ok, c]
  }
  out
}

#' Dense random-effects model matrix Z (n x q), term-major.
#'
#' Column names are "<level>" repeated per covariate, as the row names of lme4's Zt.
#' @param re result of [h_re_terms()].
#' @return n x q matrix.
#' @noRd
h_re_dense_Z <- function(re) {
  blocks <- lapply(re$terms, function(t) {
    Zd <- h_term_dense_Z(t$codes, t$Z, t$n_levels)
    colnames(Zd) <- rep(t$levels, each = ncol(t$Z))
    Zd
  })
  do.call(cbind, blocks)
}

#' Unique grouping factors (as lme4's flist), with attribute "assign".
#' @param re result of [h_re_terms()].
#' @return named list of factors.
#' @noRd
h_re_flist <- function(re) {
  groups <- vapply(re$terms, `[[`, "", "group")
  keep <- !duplicated(groups)
  fl <- lapply(re$terms[keep], `[[`, "factor")
  names(fl) <- groups[keep]
  attr(fl, "assign") <- vapply(re$terms, `[[`, 0L, "factor_id") + 1L
  fl
}

#' Character labels of a grouping expression evaluated on new data.
#' @param group grouping expression (names joined by `:`).
#' @param newdata data frame.
#' @param env enclosure for variables not in `newdata`.
#' @return character vector (NA where any variable is NA).
#' @noRd
h_newdata_group_labels <- function(group, newdata, env) {
  g <- h_strip_parens(group)
  if (is.name(g)) {
    x <- tryCatch(
      eval(g, newdata, env),
      error = function(e) {
        h_abort(sprintf("Grouping variable '%s' not found in newdata.", as.character(g)), "data")
      }
    )
    x <- as.character(x)
    return(x)
  }
  l <- h_newdata_group_labels(g[[2L]], newdata, env)
  r <- h_newdata_group_labels(g[[3L]], newdata, env)
  out <- paste(l, r, sep = ":")
  out[is.na(l) | is.na(r)] <- NA_character_
  out
}

#' A field of a stored term, looked up at the top level, then in `$info`
#' (the fitted object keeps the builder's term record there).
#' @noRd
h_term_field <- function(term, name) {
  if (!is.null(term[[name]])) term[[name]] else term$info[[name]]
}

#' Random-effects model matrix of one term on new data.
#' @noRd
h_newdata_term_Z <- function(term, newdata) {
  tt <- h_term_field(term, "lhs_terms")
  if (is.null(tt)) tt <- stats::terms(h_term_field(term, "lhs"))
  mf <- tryCatch(
    stats::model.frame(tt, newdata, na.action = stats::na.pass, xlev = h_term_field(term, "xlevels")),
    error = function(e) h_abort(conditionMessage(e), "data")
  )
  if (nrow(mf) != nrow(newdata)) mf <- mf[rep(1L, nrow(newdata)), , drop = FALSE]
  Z <- stats::model.matrix(tt, mf, contrasts.arg = h_term_field(term, "contrasts"))
  # drop the row names first: as.numeric() on a matrix carrying 10^6
  # character row names is ~100 times slower than the copy itself
  cn <- colnames(Z)
  dimnames(Z) <- NULL
  Z <- matrix(as.numeric(Z), nrow = nrow(Z), ncol = ncol(Z), dimnames = list(NULL, cn))
  Z[, h_term_field(term, "cnms"), drop = FALSE]
}

#' Codes of the grouping factor of one term on new data.
#' @return 0-based integer codes into the original levels, NA for new levels/NA.
#' @noRd
h_newdata_term_codes <- function(term, newdata, allow_new_levels, env) {
  group_expr <- h_term_field(term, "group_expr")
  if (is.null(group_expr)) group_expr <- str2lang(term$group)
  lab <- h_newdata_group_labels(group_expr, newdata, env)
  if (anyNA(lab) && !allow_new_levels) {
    h_abort(
      sprintf("NAs are not allowed in prediction data (grouping factor '%s')", term$group),
      "data"
    )
  }
  levs <- h_term_field(term, "levels")
  if (is.null(levs)) levs <- levels(term$factor)
  codes <- match(lab, levs) - 1L
  new <- unique(lab[!is.na(lab) & is.na(codes)])
  if (length(new) && !allow_new_levels) {
    h_abort(
      sprintf(
        "new levels detected in newdata for grouping factor '%s': %s",
        term$group, paste(new, collapse = ", ")
      ),
      "new_levels"
    )
  }
  # the labels identify new levels (simulate() draws one effect per level)
  structure(as.integer(codes), labels = lab)
}

#' @noRd
h_strip_labels <- function(codes) {
  attr(codes, "labels") <- NULL
  codes
}

#' Random-effects design for new data.
#'
#' @param term_info result of [h_re_terms()] (or its `$terms` list).
#' @param newdata data frame.
#' @param allow_new_levels logical; if `FALSE` new levels (and NA) in the
#'   grouping factors are errors.
#' @return list (one element per stored term, same order) of
#'   `list(group, codes = 0-based integer (NA for new levels / NA), Z = m x k)`.
#' @noRd
h_newdata_re <- function(term_info, newdata, allow_new_levels = FALSE) {
  terms <- if (!is.null(term_info$terms)) term_info$terms else term_info
  newdata <- as.data.frame(newdata)
  lapply(terms, function(t) {
    env <- environment(h_term_field(t, "lhs"))
    if (is.null(env)) env <- parent.frame()
    codes <- h_newdata_term_codes(t, newdata, allow_new_levels, env)
    list(
      group = t$group,
      codes = h_strip_labels(codes),
      labels = attr(codes, "labels"),
      Z = h_newdata_term_Z(t, newdata)
    )
  })
}
