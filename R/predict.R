#' Predictions from a linear mixed model
#'
#' @param object an `"lmm"` fit.
#' @param newdata optional data frame; without it, predictions are for the
#'   data used in the fit.
#' @param re.form which random effects to include: `NULL` (default) for all,
#'   `NA` or `~0` for none (population-level predictions), or a formula with
#'   a subset of the model's random-effect terms, e.g. `~ (1 | Subject)`.
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
predict.lmm <- function(object, newdata = NULL, re.form = NULL,
                        allow.new.levels = FALSE, ...) {
  h_check_flag(allow.new.levels, "allow.new.levels")
  use <- h_re_form_terms(object, re.form)
  if (is.null(newdata)) {
    if (all(use)) return(fitted(object))
    eta <- drop(object$X %*% object$beta) + object$offset
    for (t in which(use)) {
      term <- object$re_terms[[t]]
      eta <- eta + rowSums(term$Z * term$b[term$codes + 1L, , drop = FALSE])
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
      codes <- re[[i]]$codes
      contrib <- rowSums(re[[i]]$Z * term$b[ifelse(is.na(codes), 1L, codes + 1L), , drop = FALSE])
      contrib[is.na(codes)] <- 0
      eta <- eta + contrib
    }
  }
  stats::setNames(eta, rownames(newdata))
}

#' Which random-effect terms a re.form selects (logical, one per term)
#' @noRd
h_re_form_terms <- function(object, re.form) {
  n_terms <- length(object$re_terms)
  if (is.null(re.form)) return(rep(TRUE, n_terms))
  if (length(re.form) == 1L && is.na(re.form)) return(rep(FALSE, n_terms))
  if (!inherits(re.form, "formula")) {
    h_abort("`re.form` must be NULL, NA or a formula such as ~ (1 | g) or ~ 0.",
            "argument")
  }
  bars <- h_find_bars(h_expanded_formula(re.form))
  if (length(bars) == 0L) return(rep(FALSE, n_terms))
  key <- function(group, cnms) paste(group, paste(sort(cnms), collapse = "+"))
  have <- vapply(object$re_terms, function(t) t$group, character(1))
  wanted <- vapply(bars, function(b) paste(deparse(b$group), collapse = ""),
                   character(1))
  wanted <- gsub(" ", "", wanted)
  bad <- setdiff(wanted, have)
  if (length(bad)) {
    h_abort(sprintf("`re.form` names grouping factor(s) not in the model: %s.",
                    paste(bad, collapse = ", ")), "argument")
  }
  have %in% wanted
}
