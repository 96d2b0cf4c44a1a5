# Comparisons of several fits: likelihood-ratio tests between lmm fits
# (anova(fit0, fit1, ...)) and tests of the random-effect terms (ranova()).

#' Number of parameters of a fit (fixed effects, theta, sigma)
#' @noRd
h_npar <- function(fit) {
  if (inherits(fit, "lmmr_rcov")) return(length(fit$beta) + fit$cov_struct$n_par)
  length(fit$beta) + length(fit$theta) + 1L
}

#' Re-evaluate a fit's call with changes, in the environment of its formula
#' @noRd
h_refit_call <- function(fit, changes, env = NULL) {
  cl <- fit$call
  for (nm in names(changes)) cl[[nm]] <- changes[[nm]]
  if (is.null(env)) {
    env <- environment(fit$formula_input %||% fit$formula)
    if (is.null(env)) env <- parent.frame(2)
  }
  eval(cl, env)
}

#' ML refit of a REML fit: the same design refitted with the fit's kept
#' model (no re-evaluation of the call, so the data need not be reachable);
#' fits on database tables are refitted from the table
#' @noRd
h_refit_ml <- function(fit, env = NULL) {
  if (inherits(fit, "lmmr_db")) return(h_refit_call(fit, list(REML = FALSE), env))
  ml <- refit.lmmr(fit, fit$y, REML = FALSE)
  ml$call$REML <- FALSE
  ml
}

#' @noRd
`%||%` <- function(a, b) if (is.null(a)) b else a

#' Is `x` a linear model that can enter a likelihood-ratio comparison?
#' @noRd
h_is_lm <- function(x) inherits(x, "lm") && !inherits(x, c("glm", "mlm"))

#' Response values and number of observations of an lmm or lm fit
#' @noRd
h_fit_y <- function(f) {
  if (h_is_lm(f)) as.numeric(stats::model.response(stats::model.frame(f))) else
    as.numeric(f$y)
}

#' @noRd
h_fit_n <- function(f) if (h_is_lm(f)) length(h_fit_y(f)) else as.numeric(f$n)

#' Check that fits used the same observations
#' @noRd
h_check_same_data <- function(fits, what = "models") {
  n <- vapply(fits, h_fit_n, numeric(1))
  if (length(unique(n)) > 1L) {
    h_abort(sprintf("The %s were not all fitted to the same size of dataset (%s observations); compare fits to the same rows (e.g. remove missing values first).",
                    what, paste(n, collapse = ", ")), "data_mismatch")
  }
  y1 <- h_fit_y(fits[[1]])
  for (f in fits[-1]) {
    if (!isTRUE(all.equal(h_fit_y(f), y1, tolerance = 1e-10))) {
      h_abort(sprintf("The %s were not fitted to the same response values.", what),
              "data_mismatch")
    }
  }
  invisible(TRUE)
}

#' Likelihood-ratio comparison of several fits (anova(fit0, fit1, ...));
#' linear models fitted by lm() enter with their ML log-likelihood
#' @noRd
h_anova_lrt <- function(fits, names, refit = TRUE, env = NULL) {
  if (length(names) != length(fits)) {
    h_abort("`model.names` must have one name per model.", "argument")
  }
  is_lm <- vapply(fits, h_is_lm, logical(1))
  for (f in fits[!is_lm]) h_check_lmm(f, "...")
  h_check_same_data(fits)
  if (!isTRUE(refit) && !isFALSE(refit)) {
    h_abort("`refit` must be TRUE or FALSE.", "argument")
  }
  reml <- vapply(fits, function(f) !h_is_lm(f) && isTRUE(f$REML), logical(1))
  fixed <- lapply(fits, function(f) {
    sort(if (h_is_lm(f)) names(stats::coef(f)) else names(f$beta))
  })
  same_fixed <- all(vapply(fixed, identical, logical(1), fixed[[1]]))
  if (isTRUE(refit) && any(reml) && !(all(reml) && same_fixed)) {
    h_inform(if (any(is_lm))
      "refitting model(s) with ML (instead of REML): linear models enter with their ML log-likelihood"
      else "refitting model(s) with ML (instead of REML)", "refit")
    fits[reml] <- lapply(fits[reml], h_refit_ml, env = env)
    reml[] <- FALSE
  } else if (any(reml) && !all(reml)) {
    h_abort(if (any(is_lm))
      "Cannot compare REML fits with a linear model (whose log-likelihood is ML) without refitting; use refit = TRUE."
      else "Cannot compare REML and ML fits without refitting; use refit = TRUE.",
      "argument")
  }
  npar <- vapply(fits, function(f) {
    if (h_is_lm(f)) as.numeric(attr(stats::logLik(f, REML = FALSE), "df")) else h_npar(f)
  }, numeric(1))
  ll <- vapply(fits, function(f) {
    if (h_is_lm(f)) as.numeric(stats::logLik(f, REML = FALSE)) else as.numeric(stats::logLik(f))
  }, numeric(1))
  n <- h_fit_n(fits[[1]])
  ord <- order(npar)
  npar <- npar[ord]
  ll <- ll[ord]
  names <- names[ord]
  # as lme4: a model with a lower log-likelihood than its smaller neighbour
  # (not nested in it) gets Chisq 0, and p-values only where Df > 0
  chisq <- c(NA, 2 * pmax(0, diff(ll)))
  df <- c(NA, diff(npar))
  pval <- ifelse(!is.na(df) & df > 0,
                 stats::pchisq(chisq, pmax(df, 1), lower.tail = FALSE), NA_real_)
  tab <- data.frame(npar = npar, AIC = -2 * ll + 2 * npar,
                    BIC = -2 * ll + log(n) * npar, logLik = ll,
                    deviance = -2 * ll, Chisq = chisq, Df = df,
                    `Pr(>Chisq)` = pval, check.names = FALSE,
                    row.names = names)
  forms <- vapply(fits[ord], function(f) {
    fo <- if (h_is_lm(f)) stats::formula(f) else f$formula_input %||% f$formula
    paste(deparse(fo, width.cutoff = 500L), collapse = " ")
  }, character(1))
  data_name <- paste(deparse(fits[[1]]$call$data), collapse = " ")
  if (nchar(data_name) > 60L) data_name <- paste0(substr(data_name, 1L, 57L), "...")
  heading <- c(paste0("Data: ", data_name),
               paste0("Models:\n", paste0(names, ": ", forms, collapse = "\n")),
               if (all(reml)) "(REML fits compared without refitting)")
  structure(tab, heading = heading, class = c("anova", "data.frame"))
}

#' Split a formula's right-hand side into fixed part and bar terms
#' @noRd
h_split_bars <- function(formula) {
  rhs <- formula[[length(formula)]]
  terms <- list()
  strip <- function(e) {
    while (is.call(e) && identical(e[[1]], as.name("("))) e <- e[[2]]
    e
  }
  collect <- function(e) {
    e0 <- e
    e <- strip(e)
    if (!identical(e, e0) && !(is.call(e) && identical(e[[1]], as.name("+")))) e <- e0
    if (is.call(e) && identical(e[[1]], as.name("+")) && length(e) == 3L) {
      collect(e[[2]])
      collect(e[[3]])
    } else {
      terms[[length(terms) + 1L]] <<- e
    }
  }
  collect(rhs)
  is_bar <- vapply(terms, function(e) {
    e <- strip(e)
    is.call(e) && (identical(e[[1]], as.name("|")) || identical(e[[1]], as.name("||")))
  }, logical(1))
  list(fixed = terms[!is_bar], bars = lapply(terms[is_bar], strip))
}

#' Rebuild a formula from the response, fixed terms and bar terms
#' @noRd
h_join_formula <- function(formula, fixed, bars) {
  parts <- c(vapply(fixed, function(e) paste(deparse(e, width.cutoff = 500L), collapse = " "), character(1)),
             vapply(bars, function(e) paste0("(", paste(deparse(e, width.cutoff = 500L), collapse = " "), ")"),
                    character(1)))
  if (!length(parts)) parts <- "1"
  lhs <- if (length(formula) == 3L) paste(deparse(formula[[2]], width.cutoff = 500L), collapse = " ") else ""
  out <- stats::as.formula(paste(lhs, "~", paste(parts, collapse = " + ")),
                           env = environment(formula))
  out
}

#' The reductions of one random-effect term, as lmerTest's ranova() makes
#' them
#'
#' A term whose left-hand side has no variables, `(1 | g)`, is removed. Each
#' other term is reduced once per variable that may be dropped (respecting
#' marginality): that variable is removed and the rest kept, and a term with
#' a single variable becomes `(1 | g)` — also `(0 + x | g)`, which is then not
#' nested in the full model (Df 0 or a negative LRT, as lmerTest reports).
#' `reduce = FALSE` removes every term whole.
#' @return list of reductions, each `list(label, bar (NULL = removed),
#'   nested, dims_removed, k)`; `k` is the term's number of columns.
#' @noRd
h_bar_reductions <- function(bar, frame, reduce = TRUE) {
  lhs <- bar[[2]]
  tt <- stats::terms(stats::as.formula(call("~", lhs)))
  labels <- attr(tt, "term.labels")
  intercept <- attr(tt, "intercept") == 1L
  bar_txt <- paste(deparse(bar, width.cutoff = 500L), collapse = " ")
  mm_of <- function(f) tryCatch(stats::model.matrix(f, frame), error = function(e) NULL)
  mm_full <- mm_of(tt)
  k <- if (is.null(mm_full)) length(labels) + intercept else ncol(mm_full)
  scope <- if (length(labels)) stats::drop.scope(tt) else character(0)
  if (!isTRUE(reduce) || !length(scope)) {
    return(list(list(label = sprintf("(%s)", bar_txt), bar = NULL,
                     nested = TRUE, dims_removed = k, k = k)))
  }
  lapply(scope, function(s) {
    rest <- setdiff(labels, s)
    new_lhs <- if (!length(rest)) "1" else
      paste0(if (intercept) "" else "0 + ", paste(rest, collapse = " + "))
    newbar <- bar
    newbar[[2]] <- str2lang(new_lhs)
    mm_new <- mm_of(stats::as.formula(paste("~", new_lhs)))
    # nested when the reduced columns lie in the span of the full ones
    nested <- !is.null(mm_full) && !is.null(mm_new) &&
      max(abs(qr.resid(qr(mm_full), mm_new))) <
        1e-8 * max(1, max(abs(mm_new)))
    k_new <- if (is.null(mm_new)) length(rest) + 1L else ncol(mm_new)
    list(label = sprintf("%s in (%s)", s, bar_txt), bar = newbar,
         nested = nested, dims_removed = k - k_new, k = k)
  })
}

#' All reductions ranova() makes, in the order of its rows, each with the
#' `index` of its bar term
#' @noRd
h_ranova_reductions <- function(model, bars, reduce.terms = TRUE) {
  out <- list()
  for (i in seq_along(bars)) {
    for (r in h_bar_reductions(bars[[i]], h_hyp_frame(model), reduce.terms)) {
      r$index <- i
      out[[length(out) + 1L]] <- r
    }
  }
  out
}

#' The bar terms after one reduction; a reduced term equal to another term
#' is the same term (the formula algebra lmerTest relies on:
#' (1 | g) + (1 | g) is (1 | g))
#' @noRd
h_apply_reduction <- function(bars, r) {
  i <- r$index
  if (is.null(r$bar)) bars <- bars[-i] else bars[[i]] <- r$bar
  bars[!duplicated(vapply(bars, function(e)
    paste(deparse(e, width.cutoff = 500L), collapse = " "), character(1)))]
}

#' REML or ML log-likelihood of the linear model without random effects,
#' on the scale of lmm's log-likelihood (prior weights included)
#' @noRd
h_lm_loglik <- function(fit, REML) {
  X <- fit$X
  y <- fit$y - fit$offset
  w <- fit$weights
  n <- length(y)
  p <- ncol(X)
  sw <- sqrt(w)
  qx <- qr(X * sw)
  res <- qr.resid(qx, y * sw)
  rss <- sum(res^2)
  if (REML) {
    m <- n - p
    ldr <- sum(log(abs(diag(qr.R(qx)))))
    0.5 * (sum(log(w)) - m * (log(2 * pi) + 1 - log(m) + log(rss))) - ldr
  } else {
    0.5 * (sum(log(w)) - n * (log(2 * pi) + 1 - log(n) + log(rss)))
  }
}

#' Likelihood-ratio tests for the random-effect terms
#'
#' For each random-effect term of the model, refits the model with that term
#' reduced, with the same REML/ML setting, and compares it with the full
#' model by a likelihood-ratio test. The reductions are lmerTest's
#' (`lmerTest::ranova()`): `(1 | g)` is removed; a term with variables is
#' reduced once per variable that can be dropped, keeping the others —
#' `(x1 + x2 | g)` gives the rows `x1 in (x1 + x2 | g)` (reduced to
#' `(x2 | g)`) and `x2 in (x1 + x2 | g)`; a term with one variable becomes
#' `(1 | g)`, also `(0 + x | g)` and `(0 + f | g)`. When the reduced term is
#' not nested in the full one (`(0 + x | g)` against `(1 | g)`), the table
#' reports what lmerTest reports: `Df` 0 (p-value `NA`) or a negative LRT
#' (p-value 1). When the only random-effect term is removed, the reduced
#' model is a linear model and its REML or ML log-likelihood is used on the
#' same scale. Because the null hypothesis puts a variance on the boundary
#' of the parameter space, the naive chi-square p-value is conservative; the
#' column `Pr(>Chisq) mixture` gives the boundary-corrected p-value: a 50:50
#' mixture of chi-square distributions with 0 and 1 df when one variance is
#' removed, and with `k - 1` and `k` df when a `k`-dimensional term loses
#' one dimension (its variance and covariances; Self & Liang 1987, Stram &
#' Lee 1994). It is `NA` when more than one dimension is removed at once or
#' the models are not nested.
#'
#' @param model an `"lmmr"` fit (for another model, such as an lmer fit,
#'   the call is handed to `lmerTest::ranova()`).
#' @param reduce.terms if `TRUE` (default) terms with variables are reduced
#'   as described above; if `FALSE` every term is removed entirely (as
#'   lmerTest's `reduce.terms = FALSE`).
#' @param ... unused.
#' @return A data frame of class `c("ranova_lmm", "anova", "data.frame")`:
#'   the first row is the full model, then one row per reduced term, with
#'   columns `npar`, `logLik`, `AIC`, `LRT`, `Df`, `Pr(>Chisq)` and
#'   `Pr(>Chisq) mixture`.
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' ranova(fit)
#' @export
ranova <- function(model, reduce.terms = TRUE, ...) {
  if (!inherits(model, "lmmr")) { # e.g. an lmer fit: lmerTest's ranova()
    return(h_delegate_call(match.call(), "lmerTest", "ranova", parent.frame(), model))
  }
  env <- environment(model$formula_input %||% model$formula)
  if (is.null(env)) env <- parent.frame()
  form <- model$formula
  sp <- h_split_bars(form)
  rcov <- inherits(model, "lmmr_rcov")
  if (rcov && !length(sp$bars)) {
    h_abort("The model has no random-effect terms to test: its within-subject covariance is the residual structure's (compare structures with anova(fit1, fit2) or compare_cov_structures()).",
            "no_random_effects")
  }
  ll_full <- as.numeric(stats::logLik(model))
  np_full <- h_npar(model)
  rows <- list(data.frame(npar = np_full, logLik = ll_full,
                          AIC = -2 * ll_full + 2 * np_full, LRT = NA_real_,
                          Df = NA_real_, `Pr(>Chisq)` = NA_real_,
                          `Pr(>Chisq) mixture` = NA_real_, check.names = FALSE))
  rnames <- "<none>"
  for (r in h_ranova_reductions(model, sp$bars, reduce.terms)) {
    bars <- h_apply_reduction(sp$bars, r)
    label <- r$label
    k <- r$k
    dims_removed <- if (r$nested) r$dims_removed else NA_integer_
    if (length(bars) || rcov) {
      # with a residual structure the reduced model keeps it (sp$fixed
      # holds the structure's term)
      newf <- h_join_formula(form, sp$fixed, bars)
      red <- suppressMessages(h_refit_call(model, list(formula = newf), env))
      h_check_same_data(list(model, red), "full and reduced models")
      if (red$n != model$n) {
        h_abort("The number of rows in use has changed between the full and the reduced model.",
                "data_mismatch")
      }
      ll <- as.numeric(stats::logLik(red))
      np <- h_npar(red)
    } else {
      ll <- h_lm_loglik(model, isTRUE(model$REML))
      np <- length(model$beta) + 1L
    }
    lrt <- 2 * (ll_full - ll)
    df <- np_full - np
    p <- if (df > 0) stats::pchisq(max(lrt, 0), df, lower.tail = FALSE) else NA_real_
    pmix <- if (!is.na(dims_removed) && dims_removed == 1L && df > 0) {
      if (lrt <= 0) 1 else
        0.5 * (if (k - 1L == 0L) 0 else stats::pchisq(lrt, k - 1L, lower.tail = FALSE)) +
          0.5 * stats::pchisq(lrt, k, lower.tail = FALSE)
    } else NA_real_
    rows[[length(rows) + 1L]] <- data.frame(npar = np, logLik = ll,
      AIC = -2 * ll + 2 * np, LRT = lrt, Df = df, `Pr(>Chisq)` = p,
      `Pr(>Chisq) mixture` = pmix, check.names = FALSE)
    rnames <- c(rnames, label)
  }
  tab <- do.call(rbind, rows)
  rownames(tab) <- rnames
  heading <- c("ANOVA-like table for random effects: single-term deletions",
               paste0("\nModel:\n", paste(deparse(model$formula_input %||% model$formula,
                                                  width.cutoff = 500L), collapse = " ")))
  structure(tab, heading = heading, REML = isTRUE(model$REML),
            class = c("ranova_lmm", "anova", "data.frame"))
}

#' @export
print.ranova_lmm <- function(x, digits = max(getOption("digits") - 2L, 3L), ...) {
  heading <- attr(x, "heading")
  if (!is.null(heading)) cat(heading, sep = "\n")
  cat("\n")
  fmt_num <- function(v, d) ifelse(is.na(v), "", format(v, digits = d))
  fmt_p <- function(v) {
    out <- rep("", length(v))
    ok <- !is.na(v)
    out[ok] <- format.pval(v[ok], digits = max(1L, digits - 3L), eps = .Machine$double.eps)
    out
  }
  out <- data.frame(
    npar = format(x$npar),
    logLik = fmt_num(round(x$logLik, 2), digits + 2L),
    AIC = fmt_num(round(x$AIC, 2), digits + 2L),
    LRT = fmt_num(x$LRT, digits),
    Df = ifelse(is.na(x$Df), "", format(x$Df)),
    `Pr(>Chisq)` = fmt_p(x[["Pr(>Chisq)"]]),
    `Pr(>Chisq) mixture` = fmt_p(x[["Pr(>Chisq) mixture"]]),
    check.names = FALSE, row.names = rownames(x)
  )
  print(out, quote = FALSE, right = TRUE)
  cat(sprintf("\nLog-likelihoods are %s.\n",
              if (isTRUE(attr(x, "REML"))) "restricted (REML)" else "maximum likelihood (ML)"))
  cat("Pr(>Chisq): naive chi-square p-value of the likelihood-ratio test (conservative,\n",
      "  the null hypothesis puts a variance on the boundary of the parameter space).\n",
      "Pr(>Chisq) mixture: boundary-corrected p-value from a 50:50 chi-square mixture\n",
      "  (Self & Liang 1987; Stram & Lee 1994); empty when it does not apply.\n", sep = "")
  invisible(x)
}
