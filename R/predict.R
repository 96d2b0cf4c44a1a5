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
#' @param ... unused.
#' @return A numeric vector of predictions.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' head(predict(fit))
#' nd <- data.frame(Days = 0:2, Subject = "308")
#' predict(fit, newdata = nd)
#' predict(fit, newdata = nd, re.form = NA)
#' predict(fit, newdata = data.frame(Days = 1, Subject = "new"),
#'         allow.new.levels = TRUE)
#' @export
predict.lmmr <- function(object, newdata = NULL, re.form = NULL,
                        allow.new.levels = FALSE, ...) {
  h_check_flag(allow.new.levels, "allow.new.levels")
  use <- h_re_form_terms(object, re.form)
  if (is.null(newdata)) {
    if (all(unlist(attr(use, "columns")))) return(fitted(object))
    eta <- drop(object$X %*% object$beta) + object$offset
    for (t in which(use)) {
      term <- object$re_terms[[t]]
      m <- attr(use, "columns")[[t]]
      eta <- eta + rowSums(term$Z[, m, drop = FALSE] *
                             term$b[term$codes + 1L, m, drop = FALSE])
    }
    eta <- stats::setNames(eta, rownames(object$frame))
    return(stats::napredict(object$na_action, eta))
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
  stats::setNames(eta, rownames(newdata))
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
  bars <- h_find_bars(h_expanded_formula(re.form))
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
