#' Predictions from a linear mixed model
#'
#' @param object an `"lmmr"` fit.
#' @param newdata optional data frame; without it, predictions are for the
#'   data used in the fit.
#' @param re.form which random effects to include: `NULL` (default) for all,
#'   `NA` or `~0` for none (population-level predictions), or a formula with
#'   a subset of the model's random effects, e.g. `~ (1 | Subject)`. As in
#'   lme4, its terms select random-effect columns by grouping factor and
#'   column name: on a model with `(Days | Subject)`, `~ (1 | Subject)`
#'   includes only the random intercepts and `~ (0 + Days | Subject)` only
#'   the random slopes. A term asking for random effects the model does not
#'   have (e.g. `~ (Days | Subject)` when the model has `(1 | Subject)`) is
#'   an error of class `"lmmr_error_argument"`.
#' @param allow.new.levels logical: if `TRUE`, levels of grouping factors not
#'   seen in the fit (and `NA` levels) get random effects of zero; if
#'   `FALSE` (default) they are an error.
#' @param na.action what to do with rows of `newdata` whose prediction is
#'   `NA` (missing covariates): [stats::na.pass()] (default, as lme4) keeps
#'   them as `NA`, [stats::na.omit()] drops them, [stats::na.exclude()] keeps
#'   them as `NA`, [stats::na.fail()] is an error. Without `newdata`, an
#'   explicit `na.omit` returns the predictions for the rows used in the fit
#'   only (no `NA` padding of an `na.exclude` fit) and `na.exclude` pads.
#' @param se.fit logical: also return standard errors of the
#'   population-level (fixed-effects) part `X beta`, from `vcov(object)`.
#'   When the predictions include random effects, a warning says that the
#'   standard errors do not include the uncertainty of the random effects.
#' @param ... not used (a warning names anything passed here).
#' @return A numeric vector of predictions; with `se.fit = TRUE`, a list with
#'   components `fit` and `se.fit`.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' head(predict(fit))
#' nd <- data.frame(Days = 0:2, Subject = "308")
#' predict(fit, newdata = nd)
#' predict(fit, newdata = nd, re.form = NA)
#' predict(fit, newdata = nd, re.form = NA, se.fit = TRUE)
#' predict(fit, newdata = data.frame(Days = 1, Subject = "new"),
#'         allow.new.levels = TRUE)
#' @export
predict.lmmr <- function(object, newdata = NULL, re.form = NULL,
                        allow.new.levels = FALSE, na.action = stats::na.pass,
                        se.fit = FALSE, ...) {
  h_check_dots(..., .fn = "predict")
  h_check_flag(allow.new.levels, "allow.new.levels")
  h_check_flag(se.fit, "se.fit")
  na_fun <- h_match_na_action(na.action)
  use <- h_re_form_terms(object, re.form)
  if (se.fit && any(use)) {
    h_warn("`se.fit` gives the standard errors of the population-level part X beta only; they do not include the uncertainty of the random effects (use re.form = NA for population-level predictions).",
           "se_fit")
  }
  if (is.null(newdata)) {
    X <- object$X
    if (all(unlist(attr(use, "columns")))) {
      eta <- object$fitted
    } else {
      eta <- drop(X %*% object$beta) + object$offset
      for (t in which(use)) {
        term <- object$re_terms[[t]]
        m <- attr(use, "columns")[[t]]
        eta <- eta + rowSums(term$Z[, m, drop = FALSE] *
                               term$b[term$codes + 1L, m, drop = FALSE])
      }
    }
    nms <- rownames(object$frame)
    fit_na <- object$na_action
    if (!missing(na.action) && !is.null(fit_na)) {
      # an explicit na.action re-classes the fit's (as lme4's predict)
      cls <- class(attr(na_fun(NA), "na.action"))
      if (length(cls)) class(fit_na) <- cls
    }
    pad <- function(v) stats::napredict(fit_na, stats::setNames(v, nms))
    out <- pad(eta)
    if (se.fit) return(list(fit = out, se.fit = pad(h_se_fixed(X, object$vcov))))
    return(out)
  }
  if (!is.data.frame(newdata)) {
    h_abort("`newdata` must be a data frame.", "argument")
  }
  fx <- h_newdata_X(object$design_info, newdata)
  eta <- drop(fx$X %*% object$beta) + fx$offset
  if (any(use)) {
    re <- h_newdata_re(object$re_terms[use], newdata, allow.new.levels)
    for (i in seq_along(re)) {
      term <- object$re_terms[use][[i]]
      m <- attr(use, "columns")[use][[i]]
      codes <- re[[i]]$codes
      contrib <- rowSums(re[[i]]$Z[, m, drop = FALSE] *
                           term$b[ifelse(is.na(codes), 1L, codes + 1L), m, drop = FALSE])
      contrib[is.na(codes)] <- 0
      eta <- eta + contrib
    }
  }
  eta <- stats::setNames(eta, rownames(newdata))
  se <- if (se.fit) stats::setNames(h_se_fixed(fx$X, object$vcov), rownames(newdata))
  kept <- h_apply_na_action(na_fun, eta)
  if (se.fit) return(list(fit = eta[kept], se.fit = se[kept]))
  eta[kept]
}

#' Standard errors of X beta: sqrt(diag(X V X'))
#' @noRd
h_se_fixed <- function(X, V) {
  sqrt(pmax(rowSums((X %*% V) * X), 0))
}

#' An na.action given as a function or a name, checked
#' @noRd
h_match_na_action <- function(na.action) {
  f <- if (is.character(na.action) && length(na.action) == 1L) {
    tryCatch(match.fun(na.action), error = function(e) NULL)
  } else if (is.function(na.action)) na.action
  if (is.null(f)) {
    h_abort("`na.action` must be a function such as na.pass, na.omit, na.exclude or na.fail (or its name).",
            "argument")
  }
  f
}

#' Which predictions an na.action keeps (rows with NA predictions are the
#' incomplete ones); na.fail becomes a classed error
#' @noRd
h_apply_na_action <- function(na_fun, eta) {
  probe <- data.frame(.eta = unname(eta))
  res <- tryCatch(na_fun(probe), error = function(e) {
    h_abort(sprintf("Missing values in `newdata`: %s", conditionMessage(e)), "na")
  })
  omitted <- attr(res, "na.action")
  keep <- rep(TRUE, length(eta))
  if (!is.null(omitted) && !inherits(omitted, "exclude")) keep[as.integer(omitted)] <- FALSE
  keep
}

#' Which random-effect terms a re.form selects (logical, one per term), with
#' attribute "columns": for each term, which of its columns are selected.
#' As lme4, a bar of `re.form` selects random-effect columns by grouping
#' factor and column name, so `~ (1 | g)` on a model with `(x | g)` keeps
#' only the random intercepts; columns the model does not have are an error.
#' @noRd
h_re_form_terms <- function(object, re.form) {
  terms <- object$re_terms
  n_terms <- length(terms)
  all_cols <- lapply(terms, function(t) rep(TRUE, length(t$cnms)))
  no_cols <- lapply(terms, function(t) rep(FALSE, length(t$cnms)))
  if (is.null(re.form)) return(structure(rep(TRUE, n_terms), columns = all_cols))
  if (length(re.form) == 1L && !is.language(re.form) && is.na(re.form)) {
    return(structure(rep(FALSE, n_terms), columns = no_cols))
  }
  if (!inherits(re.form, "formula")) {
    h_abort("`re.form` must be NULL, NA or a formula such as ~ (1 | g) or ~ 0.",
            "argument")
  }
  bars <- h_find_bars(h_expanded_formula(h_unwrap_bar_formulas(re.form)))
  if (length(bars) == 0L) return(structure(rep(FALSE, n_terms), columns = no_cols))
  have <- vapply(terms, function(t) t$group, character(1))
  cols <- no_cols
  for (b in bars) {
    g <- gsub(" ", "", paste(deparse(b$group), collapse = ""))
    bar_txt <- sprintf("(%s | %s)", paste(deparse(b$lhs, width.cutoff = 500L), collapse = " "),
                       paste(deparse(b$group, width.cutoff = 500L), collapse = " "))
    if (!(g %in% have)) {
      h_abort(sprintf("`re.form` names grouping factor(s) not in the model: %s.", g),
              "argument")
    }
    avail <- unique(unlist(lapply(terms[have == g], function(t) t$cnms)))
    cn <- h_bar_colnames(object, b$lhs)
    if (is.null(cn)) {
      h_abort(sprintf("`re.form` term %s is not in the model: it uses variables the model's data do not contain (the model's random effects by %s: %s).",
                      bar_txt, g, paste(avail, collapse = ", ")), "argument")
    }
    miss <- setdiff(cn, avail)
    if (length(miss)) {
      h_abort(sprintf("`re.form` term %s is not in the model: the model has no random effect for %s by %s (its random effects by %s: %s).",
                      bar_txt, paste(miss, collapse = ", "), g, g,
                      paste(avail, collapse = ", ")), "argument")
    }
    for (t in which(have == g)) cols[[t]] <- cols[[t]] | terms[[t]]$cnms %in% cn
  }
  structure(vapply(cols, any, logical(1)), columns = cols)
}

#' Column names of the random-effect model matrix of a bar's left-hand side,
#' built from the model frame (NULL when a variable is not available)
#' @noRd
h_bar_colnames <- function(object, lhs) {
  tt <- stats::terms(stats::as.formula(call("~", lhs), env = environment(object$formula)))
  vars <- vapply(as.list(attr(tt, "variables"))[-1L],
                 function(v) paste(deparse(v, width.cutoff = 500L), collapse = " "),
                 character(1))
  frame <- object$frame
  vals <- lapply(vars, function(v) {
    if (v %in% names(frame)) return(frame[[v]])
    tryCatch(eval(str2lang(v), frame, environment(object$formula)),
             error = function(e) NULL)
  })
  if (any(vapply(vals, function(x) is.null(x) || NROW(x) != nrow(frame), logical(1)))) {
    return(NULL)
  }
  vf <- structure(stats::setNames(vals, vars), class = "data.frame",
                  row.names = seq_len(nrow(frame)))
  attr(vf, "terms") <- tt
  tryCatch(colnames(stats::model.matrix(tt, vf)), error = function(e) NULL)
}

#' Bars written with a one-sided formula, `(~ 1 | g)` (which R parses as
#' `~(1 | g)`; accepted by lme4's predict()), rewritten as `(1 | g)`
#' @noRd
h_unwrap_bar_formulas <- function(f) {
  walk <- function(e) {
    if (!is.call(e)) return(e)
    # R parses (~ 1 | g) as ~(1 | g): a one-sided formula inside the formula
    if (identical(e[[1]], as.name("~")) && length(e) == 2L) return(walk(e[[2]]))
    if ((identical(e[[1]], as.name("|")) || identical(e[[1]], as.name("||"))) &&
        length(e) == 3L) {
      lhs <- e[[2]]
      if (is.call(lhs) && identical(lhs[[1]], as.name("~")) && length(lhs) == 2L) {
        e[[2]] <- lhs[[2]]
      }
      return(e)
    }
    for (i in seq_along(e)[-1L]) if (!is.null(e[[i]])) e[[i]] <- walk(e[[i]])
    e
  }
  out <- f
  out[[length(f)]] <- walk(f[[length(f)]])
  out
}
