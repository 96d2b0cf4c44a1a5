# Comparisons of several fits: likelihood-ratio tests between lmm fits
# (anova(fit0, fit1, ...)) and tests of the random-effect terms (ranova()).

#' Number of parameters of a fit (fixed effects, theta, sigma)
#' @noRd
h_npar <- function(fit) length(fit$beta) + length(fit$theta) + 1L

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
#' model (no re-evaluation of the call, so the data need not be reachable)
#' @noRd
h_refit_ml <- function(fit) {
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
    fits[reml] <- lapply(fits[reml], h_refit_ml)
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
  chisq <- c(NA, 2 * diff(ll))
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

#' Does a bar term's left-hand side contain an intercept, and how many other
#' columns does it have?
#' @noRd
h_bar_lhs <- function(bar, frame) {
  lhs <- bar[[2]]
  tt <- stats::terms(stats::as.formula(call("~", lhs)))
  if (attr(tt, "intercept") == 1L) {
    return(list(intercept = TRUE, n_other = length(attr(tt, "term.labels"))))
  }
  # `(0 + f | g)` with a factor f spans the intercept (its columns sum to
  # one): it is the same model as `(f | g)` and is reduced the same way
  mm <- tryCatch(stats::model.matrix(tt, frame), error = function(e) NULL)
  spans_one <- !is.null(mm) && ncol(mm) > 1L &&
    max(abs(qr.resid(qr(mm), rep(1, nrow(mm))))) < 1e-8
  if (spans_one) {
    return(list(intercept = TRUE, n_other = ncol(mm) - 1L))
  }
  list(intercept = FALSE, n_other = length(attr(tt, "term.labels")))
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
#' reduced — `(x | g)` becomes `(1 | g)` (so does `(0 + f | g)` for a factor
#' `f`, whose columns span the intercept); `(1 | g)` and slope-only terms
#' `(0 + x | g)` are removed — with the same REML/ML setting, and compares
#' it with the full model by a likelihood-ratio test (as lmerTest's
#' `ranova()`). When the only random-effect term is removed, the reduced
#' model is a linear model and its REML or ML log-likelihood is used on the
#' same scale. Because the null hypothesis puts a variance on the boundary
#' of the parameter space, the naive chi-square p-value is conservative; the
#' column `Pr(>Chisq) mixture` gives the boundary-corrected p-value: a 50:50
#' mixture of chi-square distributions with 0 and 1 df when one variance is
#' removed, and with `k - 1` and `k` df when a `k`-dimensional term loses
#' one dimension (its variance and covariances; Self & Liang 1987, Stram &
#' Lee 1994). It is `NA` when more than one dimension is removed at once.
#'
#' @param model an `"lmmr"` fit.
#' @param reduce.terms if `TRUE` (default) terms with random slopes are
#'   reduced to random intercepts; if `FALSE` every term is removed
#'   entirely.
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
  h_check_lmm(model, "model")
  env <- environment(model$formula_input %||% model$formula)
  if (is.null(env)) env <- parent.frame()
  form <- model$formula
  sp <- h_split_bars(form)
  ll_full <- as.numeric(stats::logLik(model))
  np_full <- h_npar(model)
  rows <- list(data.frame(npar = np_full, logLik = ll_full,
                          AIC = -2 * ll_full + 2 * np_full, LRT = NA_real_,
                          Df = NA_real_, `Pr(>Chisq)` = NA_real_,
                          `Pr(>Chisq) mixture` = NA_real_, check.names = FALSE))
  rnames <- "<none>"
  for (i in seq_along(sp$bars)) {
    bar <- sp$bars[[i]]
    info <- h_bar_lhs(bar, model$frame)
    k <- as.integer(info$intercept) + info$n_other
    bar_txt <- paste(deparse(bar, width.cutoff = 500L), collapse = " ")
    if (isTRUE(reduce.terms) && info$intercept && info$n_other > 0) {
      newbar <- bar
      newbar[[2]] <- 1
      bars <- sp$bars
      bars[[i]] <- newbar
      lhs_txt <- paste(deparse(bar[[2]], width.cutoff = 500L), collapse = " ")
      lhs_txt <- sub("^(1|0|-1) \\+ ", "", lhs_txt)
      label <- sprintf("%s in (%s)", lhs_txt, bar_txt)
      dims_removed <- k - 1L
    } else {
      bars <- sp$bars[-i]
      label <- sprintf("(%s)", bar_txt)
      dims_removed <- k
    }
    if (length(bars)) {
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
    pmix <- if (dims_removed == 1L && df > 0) {
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
