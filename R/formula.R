# Parsing of lme4-style mixed-model formulas.
#
# A random-effects ("bar") term is written `(lhs | group)` (correlated) or
# `(lhs || group)` (uncorrelated). Bar terms must be joined to the rest of the
# right-hand side by `+`. Grouping expressions may only be variable names joined
# by `:` (interaction) or `/` (nesting). The parser represents a bar term as
# `list(lhs = <expression>, group = <expression>, double = <logical>)`.

#' Is an expression a bar call (`|` or `||`)?
#' @param x an R expression.
#' @return `TRUE` or `FALSE`.
#' @noRd
h_is_bar <- function(x) {
  is.call(x) && (identical(x[[1L]], as.name("|")) || identical(x[[1L]], as.name("||")))
}

#' Is an expression a call to a given operator/function?
#' @param x an R expression.
#' @param op character, the function name.
#' @noRd
h_is_call_to <- function(x, op) {
  is.call(x) && identical(x[[1L]], as.name(op))
}

#' Strip enclosing parentheses from an expression.
#' @noRd
h_strip_parens <- function(x) {
  while (h_is_call_to(x, "(") && length(x) == 2L) x <- x[[2L]]
  x
}

#' Does an expression contain a bar anywhere?
#' @noRd
h_has_bar <- function(x) {
  if (!is.call(x)) return(FALSE)
  if (h_is_bar(x)) return(TRUE)
  any(vapply(as.list(x)[-1L], h_has_bar, logical(1L)))
}

#' Right-hand side of a formula.
#' @param formula a formula.
#' @return the right-hand side expression.
#' @noRd
h_rhs <- function(formula) {
  formula[[length(formula)]]
}

#' Check that an object is a formula (or coerce a character string).
#' @noRd
h_as_formula <- function(formula, env = parent.frame()) {
  if (is.character(formula) && length(formula) == 1L) {
    formula <- stats::as.formula(formula, env = env)
  }
  if (!inherits(formula, "formula") && is.call(formula) && h_is_call_to(formula, "~")) {
    formula <- stats::as.formula(formula, env = env)
  }
  if (!inherits(formula, "formula")) {
    h_abort("'formula' must be a formula.", "formula")
  }
  formula
}

#' Make a bar-term record.
#' @noRd
h_bar <- function(lhs, group, double = FALSE) {
  list(lhs = lhs, group = group, double = double)
}

#' Convert a bar-term record back to a call `lhs | group`.
#' @param bar a bar-term record.
#' @return a call.
#' @noRd
h_bar_call <- function(bar) {
  op <- if (isTRUE(bar$double)) "||" else "|"
  call(op, bar$lhs, bar$group)
}

#' Is a grouping expression valid: names joined by `:` or `/` (parentheses allowed)?
#' @param group expression.
#' @return `TRUE` or `FALSE`.
#' @noRd
h_group_ok <- function(group) {
  g <- h_strip_parens(group)
  if (is.name(g)) return(nzchar(as.character(g)))
  if (h_is_call_to(g, ":") || h_is_call_to(g, "/")) {
    return(length(g) == 3L && h_group_ok(g[[2L]]) && h_group_ok(g[[3L]]))
  }
  FALSE
}

#' Check a grouping expression, signalling an error of kind "formula".
#' @param group expression.
#' @return invisible `TRUE`.
#' @noRd
h_check_group <- function(group) {
  if (!h_group_ok(group)) {
    h_abort(
      sprintf(
        "Invalid grouping factor specification '%s': grouping factors must be variable names, possibly joined by ':' or '/'.",
        h_deparse(group)
      ),
      "formula"
    )
  }
  invisible(TRUE)
}

#' Parse one bar call into a bar record, validating it.
#' @noRd
h_parse_bar <- function(x) {
  if (length(x) != 3L) {
    h_abort(sprintf("Malformed random-effects term '%s'.", h_deparse(x)), "formula")
  }
  lhs <- x[[2L]]
  group <- x[[3L]]
  if (h_has_bar(lhs) || h_has_bar(group)) {
    h_abort(sprintf("Nested bars in random-effects term '%s'.", h_deparse(x)), "formula")
  }
  h_check_group(group)
  h_bar(lhs, group, double = identical(x[[1L]], as.name("||")))
}

#' Walk the right-hand side of a formula and collect the bar terms.
#'
#' Bar terms may appear at the top level, joined by `+` (or as the first
#' argument of a binary `-`), possibly in parentheses. A bar nested inside any
#' other call is an error.
#' @param x right-hand side expression.
#' @return list of bar-term records in order of appearance.
#' @noRd
h_collect_bars <- function(x) {
  if (!is.call(x) || h_is_cov_term(x)) return(list())
  if (h_is_bar(x)) return(list(h_parse_bar(x)))
  if (h_is_call_to(x, "(") && length(x) == 2L) return(h_collect_bars(x[[2L]]))
  if (h_is_call_to(x, "+")) {
    return(do.call(c, lapply(as.list(x)[-1L], h_collect_bars)))
  }
  if (h_is_call_to(x, "-") && length(x) == 3L && !h_has_bar(x[[3L]])) {
    return(h_collect_bars(x[[2L]]))
  }
  if (h_has_bar(x)) {
    h_abort(
      sprintf(
        "Random-effects terms must be added to the formula with '+'; cannot parse '%s'.",
        h_deparse(x)
      ),
      "formula"
    )
  }
  list()
}

#' Expand an uncorrelated `(lhs || g)` bar into single-column bars.
#'
#' As in lme4, an intercept (if present) gets its own term `(1 | g)` and every
#' term label of `lhs` gets `(0 + label | g)`.
#' @param bar a bar record.
#' @return list of bar records (with `double = FALSE`).
#' @noRd
h_expand_double <- function(bar) {
  if (!isTRUE(bar$double)) return(list(bar))
  tt <- stats::terms(stats::as.formula(call("~", bar$lhs)))
  out <- list()
  if (attr(tt, "intercept") == 1L) out <- list(h_bar(1, bar$group))
  labs <- attr(tt, "term.labels")
  for (lab in labs) {
    out <- c(out, list(h_bar(call("+", 0, str2lang(lab)), bar$group)))
  }
  out
}

#' Expand a nested grouping expression `a/b/c` into its grouping factors.
#'
#' Follows lme4's order and naming: `a/b` gives `b:a` then `a`; `a/b/c` gives
#' `c:(b:a)`, `b:a`, `a`.
#' @param group grouping expression.
#' @return list of grouping expressions.
#' @noRd
h_expand_slash <- function(group) {
  g <- h_strip_parens(group)
  if (!h_is_call_to(g, "/")) return(list(group))
  left <- h_expand_slash(g[[2L]])
  right <- h_expand_slash(g[[3L]])
  inner <- lapply(right, function(r) call(":", r, left[[1L]]))
  c(inner, left)
}

#' Expand `||` and `/` in a list of bar records.
#' @param bars list of bar records.
#' @return list of bar records, all with `double = FALSE` and no `/`.
#' @noRd
h_expand_bars <- function(bars) {
  singles <- do.call(c, c(list(list()), lapply(bars, h_expand_double)))
  out <- lapply(singles, function(b) {
    lapply(h_expand_slash(b$group), function(g) h_bar(b$lhs, g))
  })
  do.call(c, c(list(list()), out))
}

#' Find the random-effects (bar) terms of a formula.
#' @param formula a model formula.
#' @param expand logical; expand `||` and `/` (as lme4's findbars does).
#' @return list of bar records `list(lhs, group, double)`.
#' @noRd
h_find_bars <- function(formula, expand = FALSE) {
  bars <- h_collect_bars(h_rhs(formula))
  if (expand) bars <- h_expand_bars(bars)
  bars
}

#' Remove the bar terms from an expression.
#' @param x right-hand side expression.
#' @return expression without bars, or `NULL` if nothing is left.
#' @noRd
h_drop_bars <- function(x) {
  if (!is.call(x)) return(x)
  if (h_is_bar(x)) return(NULL)
  if (h_is_call_to(x, "(") && length(x) == 2L) {
    inner <- h_drop_bars(x[[2L]])
    if (is.null(inner)) return(NULL)
    x[[2L]] <- inner
    return(x)
  }
  if (h_is_call_to(x, "+") || (h_is_call_to(x, "-") && length(x) == 3L)) {
    if (length(x) == 2L) {
      inner <- h_drop_bars(x[[2L]])
      if (is.null(inner)) return(NULL)
      x[[2L]] <- inner
      return(x)
    }
    l <- h_drop_bars(x[[2L]])
    r <- h_drop_bars(x[[3L]])
    if (is.null(l) && is.null(r)) return(NULL)
    if (is.null(r)) return(l)
    if (is.null(l)) return(if (h_is_call_to(x, "-")) call("-", r) else r)
    x[[2L]] <- l
    x[[3L]] <- r
    return(x)
  }
  x
}

#' Build a formula with the response of `formula` and a new right-hand side.
#' @noRd
h_set_rhs <- function(formula, rhs) {
  out <- if (length(formula) == 3L) call("~", formula[[2L]], rhs) else call("~", rhs)
  env <- environment(formula)
  if (is.null(env)) env <- parent.frame()
  stats::as.formula(out, env = env)
}

#' Fixed-effects part of a mixed-model formula.
#'
#' Bar terms are removed; if nothing is left the right-hand side is `1`
#' (`y ~ (1 | g)` has fixed part `y ~ 1`). Offsets and the response are kept.
#' @param formula a model formula.
#' @return a formula (environment of `formula`).
#' @noRd
h_no_bars <- function(formula) {
  h_collect_bars(h_rhs(formula)) # validates
  rhs <- h_drop_bars(h_rhs(formula))
  if (!is.null(rhs)) rhs <- h_drop_cov_term(rhs) # residual structure (cov-struct.R)
  if (is.null(rhs)) rhs <- 1
  h_set_rhs(formula, rhs)
}

#' Join expressions with `+`.
#' @param exprs list of expressions.
#' @noRd
h_sum_exprs <- function(exprs) {
  Reduce(function(a, b) call("+", a, b), exprs)
}

#' Replace each bar in an expression by its expansion.
#' @noRd
h_replace_bars <- function(x) {
  if (!is.call(x)) return(x)
  bar_expr <- if (h_is_bar(x)) x else if (h_is_call_to(x, "(") && length(x) == 2L && h_is_bar(h_strip_parens(x))) h_strip_parens(x) else NULL
  if (!is.null(bar_expr)) {
    bars <- h_expand_bars(list(h_parse_bar(bar_expr)))
    pieces <- lapply(bars, function(b) call("(", h_bar_call(b)))
    out <- h_sum_exprs(pieces)
    if (length(pieces) > 1L) out <- call("(", out)
    return(out)
  }
  if (h_is_call_to(x, "+") || h_is_call_to(x, "-")) {
    for (i in seq_along(x)[-1L]) x[[i]] <- h_replace_bars(x[[i]])
  }
  x
}

#' The full formula with `||` and `/` expanded.
#'
#' E.g. `y ~ x + (x || g)` becomes `y ~ x + ((1 | g) + (0 + x | g))` and
#' `y ~ (1 | a/b)` becomes `y ~ ((1 | b:a) + (1 | a))`.
#' @param formula a model formula.
#' @return a formula (environment of `formula`).
#' @noRd
h_expanded_formula <- function(formula) {
  h_collect_bars(h_rhs(formula)) # validates
  h_set_rhs(formula, h_replace_bars(h_rhs(formula)))
}

#' Names of the variables in a grouping expression.
#' @noRd
h_group_vars <- function(group) {
  all.vars(group)
}

#' Formula used to build the model frame: all variables of the fixed and
#' random parts (bars replaced by `+`, grouping variables as plain names).
#' @param formula a model formula.
#' @return a formula (environment of `formula`).
#' @noRd
h_frame_formula <- function(formula) {
  bars <- h_find_bars(formula)
  fixed_rhs <- h_rhs(h_no_bars(formula))
  pieces <- list(fixed_rhs)
  for (b in bars) {
    pieces <- c(pieces, list(call("(", b$lhs)), lapply(h_group_vars(b$group), as.name))
  }
  ct <- h_find_cov_term(formula)
  if (!is.null(ct)) pieces <- c(pieces, lapply(h_cov_term_vars(ct), as.name))
  h_set_rhs(formula, h_sum_exprs(pieces))
}

#' Deparse an expression to a single string.
#' @noRd
h_deparse <- function(x) {
  paste(deparse(x, width.cutoff = 500L), collapse = " ")
}
