# car and multcomp support: car::Anova(), car::linearHypothesis(), car::vif()
# and multcomp's modelparm() (used by glht(), also with mcp()) for lmmr fits,
# registered lazily. Conventions of car 3.1-1 / multcomp 1.4 for lmer fits:
# Wald chi-square tests by default, F tests with Kenward-Roger's scaled F and
# denominator df (car calls pbkrtest::KRmodcomp; lmmr computes the same
# quantities itself), z tests in glht().

#' car and multcomp support for lmmr fits
#'
#' `car::Anova()` gives type II or III Wald tests for each fixed-effect term:
#' chi-square tests (default) or, with `test.statistic = "F"`, F tests with
#' Kenward-Roger's scaled F statistic and denominator df (as car for lmer
#' fits; `ddf = "Satterthwaite"` gives Satterthwaite's df and the unscaled
#' F instead). The type II hypothesis of a term is the part of the
#' hypothesis "the term and all terms containing it are zero" that is
#' orthogonal, in the metric of the covariance of the estimates (the
#' Kenward-Roger adjusted one for Kenward-Roger F tests, as car), to the
#' terms containing it (car's construction); type III tests the term's
#' coefficients (so it depends on the contrast coding, as in car).
#' `car::linearHypothesis()` tests a hypothesis matrix or car's character
#' form (`"Days = 10"`), with the same two tests. `car::vif()` gives the
#' generalised variance inflation factors from the covariance of the fixed
#' effects (as car for lmer fits). `multcomp::glht()` works through a
#' `modelparm()` method (fixed effects and their covariance, normal
#' reference distribution as for lmer fits), including `mcp()` contrasts.
#'
#' @param mod,model an `"lmmr"` fit.
#' @param type `"II"` (or `2`) or `"III"` (or `3`).
#' @param test.statistic,test `"Chisq"` (Wald chi-square) or `"F"`.
#' @param ddf for F tests: `"Kenward-Roger"` (default, as car) or
#'   `"Satterthwaite"`.
#' @param vcov. optional covariance matrix (or function) of the fixed
#'   effects for the chi-square tests.
#' @param singular.ok accepted for compatibility with car; the tests use
#'   the estimated (non-aliased) coefficients.
#' @param hypothesis.matrix,rhs,verbose as `car::linearHypothesis()`.
#' @param coef.,df as `multcomp::modelparm()`.
#' @param ... unused.
#' @return `Anova()` and `linearHypothesis()`: data frames of class
#'   `c("anova", "data.frame")` with car's columns (`Chisq`, `Df`,
#'   `Pr(>Chisq)`, or `F`, `Df`, `Df.res`, `Pr(>F)` for `Anova()` and
#'   `Res.Df`, `Df`, `F`, `Pr(>F)` for `linearHypothesis()`); `vif()`: a
#'   vector or a matrix (`GVIF`, `Df`, `GVIF^(1/(2*Df))`); `modelparm()`: a
#'   `"modelparm"` object.
#' @name lmmr-car
#' @examples
#' if (requireNamespace("car", quietly = TRUE)) {
#'   fit <- lmm(sbp ~ clinic_urban * smoker + age + (1 | clinic_id),
#'              data = phaa_clinics)
#'   car::Anova(fit)
#'   car::Anova(fit, type = 3, test.statistic = "F")
#'   car::linearHypothesis(fit, "age = 0.5")
#'   car::vif(lmm(sbp ~ clinic_urban + smoker + age + (1 | clinic_id),
#'                data = phaa_clinics))
#' }
NULL

#' @rdname lmmr-car
#' @exportS3Method car::Anova
Anova.lmmr <- function(mod, type = c("II", "III", 2, 3),
                       test.statistic = c("Chisq", "F"), vcov. = NULL,
                       singular.ok = FALSE, ddf = c("Kenward-Roger", "Satterthwaite"), ...) {
  type <- as.character(type[1])
  type <- switch(type, "2" = , II = "II", "3" = , III = "III",
                 h_abort("`type` must be \"II\" or \"III\".", "argument"))
  test.statistic <- match.arg(test.statistic)
  ddf <- match.arg(ddf)
  V <- h_car_vcov(mod, vcov.)
  parts <- if (test.statistic == "F") h_parts_for(mod, ddf) else NULL
  # as car: with Kenward-Roger F tests the type II hypotheses are built in
  # the metric of the adjusted covariance
  if (test.statistic == "F" && ddf == "Kenward-Roger") V <- parts$kenward_roger$phi_adj
  st <- h_fixed_structure(mod)
  labels <- st$labels
  p <- length(mod$beta)
  I_p <- diag(p)
  has_int <- any(st$assign == 0L)
  hyps <- list()
  if (type == "III") {
    if (has_int) hyps[["(Intercept)"]] <- I_p[st$assign == 0L, , drop = FALSE]
    for (j in seq_along(labels)) hyps[[labels[j]]] <- I_p[st$assign == j, , drop = FALSE]
  } else {
    fac <- st$factors
    for (j in seq_along(labels)) {
      rel <- h_car_relatives(labels[j], labels, fac)
      sub_rel <- which(st$assign %in% match(rel, labels))
      sub_term <- which(st$assign == j)
      H2 <- I_p[c(sub_rel, sub_term), , drop = FALSE]
      hyps[[labels[j]]] <- if (!length(sub_rel)) H2 else
        h_car_conj_comp(I_p[sub_rel, , drop = FALSE], H2, V)
    }
  }
  rows <- lapply(hyps, function(L) {
    if (!nrow(L)) return(c(NA_real_, 0, NA_real_, NA_real_))
    h_car_test(mod, L, rep(0, nrow(L)), test.statistic, ddf, V, parts)
  })
  tab <- as.data.frame(do.call(rbind, rows))
  rownames(tab) <- names(hyps)
  wald <- if (test.statistic == "Chisq") "Wald chisquare tests" else
    sprintf("Wald F tests with %s df", ddf)
  if (test.statistic == "Chisq") {
    tab <- tab[, c(1, 2, 4)]
    names(tab) <- c("Chisq", "Df", "Pr(>Chisq)")
  } else {
    names(tab) <- c("F", "Df", "Df.res", "Pr(>F)")
  }
  structure(tab, heading = c(sprintf("Analysis of Deviance Table (Type %s %s)\n", type, wald),
                             paste("Response:", deparse(mod$formula[[2]]))),
            class = c("anova", "data.frame"))
}

#' Covariance of the fixed effects for car's Wald tests
#' @noRd
h_car_vcov <- function(mod, vcov.) {
  if (is.null(vcov.)) return(mod$vcov)
  V <- as.matrix(if (is.function(vcov.)) vcov.(mod) else vcov.)
  if (!identical(dim(V), dim(mod$vcov))) {
    h_abort("`vcov.` must have one row and column per fixed-effect coefficient.", "argument")
  }
  V
}

#' Terms containing `term` (car's "relatives")
#' @noRd
h_car_relatives <- function(term, labels, fac) {
  vt <- fac[, term] > 0
  labels[vapply(labels, function(b) b != term && all(fac[vt, b] > 0), logical(1))]
}

#' Rows of span(H2) orthogonal, in the metric V, to span(H1)
#' @noRd
h_car_conj_comp <- function(H1, H2, V) {
  M <- H2 %*% V %*% t(H1)
  q <- qr(M)
  if (q$rank == 0L) return(H2)
  Q <- qr.Q(q, complete = TRUE)[, -seq_len(q$rank), drop = FALSE]
  t(Q) %*% H2
}

#' One Wald test: c(statistic, df, df.res, p)
#' @noRd
h_car_test <- function(mod, L, rhs, test, ddf, V, parts) {
  if (test == "Chisq") {
    est <- drop(L %*% mod$beta) - rhs
    stat <- drop(crossprod(est, solve(L %*% V %*% t(L), est)))
    q <- nrow(L)
    return(c(stat, q, NA_real_, stats::pchisq(stat, q, lower.tail = FALSE)))
  }
  res <- h_contest_md(mod, L, rhs, ddf, parts)
  c(res[["F value"]], res[["NumDF"]], res[["DenDF"]], res[["Pr(>F)"]])
}

#' @rdname lmmr-car
#' @exportS3Method car::linearHypothesis
linearHypothesis.lmmr <- function(model, hypothesis.matrix, rhs = NULL, vcov. = NULL,
                                  test = c("Chisq", "F"), singular.ok = FALSE,
                                  verbose = FALSE, ddf = c("Kenward-Roger", "Satterthwaite"),
                                  ...) {
  test <- match.arg(test)
  ddf <- match.arg(ddf)
  V <- h_car_vcov(model, vcov.)
  b <- model$beta
  if (is.character(hypothesis.matrix)) {
    L <- car::makeHypothesis(names(b), hypothesis.matrix, rhs)
    if (is.null(dim(L))) L <- t(L)
    rhs <- L[, ncol(L)]
    L <- L[, -ncol(L), drop = FALSE]
    rownames(L) <- hypothesis.matrix
  } else {
    L <- if (is.null(dim(hypothesis.matrix))) t(hypothesis.matrix) else hypothesis.matrix
    if (is.null(rhs)) rhs <- rep(0, nrow(L))
  }
  if (ncol(L) != length(b)) {
    h_abort(sprintf("The hypothesis matrix must have %d columns.", length(b)), "contrast")
  }
  if (verbose) {
    cat("\nHypothesis matrix:\n"); print(L)
    cat("\nRight-hand-side vector:\n"); print(rhs)
  }
  q <- as.numeric(nrow(L))
  parts <- if (test == "F") h_parts_for(model, ddf) else NULL
  res <- h_car_test(model, L, rhs, test, ddf, V, parts)
  if (test == "Chisq") {
    rval <- data.frame(Df = c(NA, q), Chisq = c(NA, res[1]), `Pr(>Chisq)` = c(NA, res[4]),
                       check.names = FALSE)
  } else {
    rval <- data.frame(Res.Df = c(res[3] + q, res[3]), Df = c(NA, q), F = c(NA, res[1]),
                       `Pr(>F)` = c(NA, res[4]), check.names = FALSE)
  }
  rownames(rval) <- 1:2
  topnote <- paste0("Model 1: restricted model\nModel 2: ",
                    paste(deparse(model$formula), collapse = "\n"))
  structure(rval, heading = c("Linear hypothesis test\n\nHypothesis:",
                              car::printHypothesis(L, rhs, names(b)), "", topnote,
                              if (is.null(vcov.)) "" else "\nNote: Coefficient covariance matrix supplied.\n"),
            class = c("anova", "data.frame"))
}

#' @rdname lmmr-car
#' @exportS3Method car::vif
vif.lmmr <- function(mod, ...) {
  v <- mod$vcov
  assign <- attr(mod$X, "assign")
  if (names(mod$beta)[1] == "(Intercept)") {
    v <- v[-1, -1, drop = FALSE]
    assign <- assign[-1]
  } else {
    h_warn("No intercept: vifs may not be sensible.", "vif")
  }
  labels <- attr(stats::terms(mod), "term.labels")
  if (length(labels) < 2L) h_abort("The model contains fewer than 2 terms.", "argument")
  R <- stats::cov2cor(v)
  detR <- det(R)
  out <- matrix(0, length(labels), 3,
                dimnames = list(labels, c("GVIF", "Df", "GVIF^(1/(2*Df))")))
  for (j in seq_along(labels)) {
    s <- which(assign == j)
    out[j, 1] <- det(R[s, s, drop = FALSE]) * det(R[-s, -s, drop = FALSE]) / detR
    out[j, 2] <- length(s)
  }
  if (all(out[, 2] == 1)) return(out[, 1])
  out[, 3] <- out[, 1]^(1 / (2 * out[, 2]))
  out
}

#' @rdname lmmr-car
#' @exportS3Method multcomp::modelparm
modelparm.lmmr <- function(model, coef. = function(m) m$beta,
                           vcov. = function(m) m$vcov, df = NULL, ...) {
  default <- utils::getS3method("modelparm", "default", envir = asNamespace("multcomp"))
  default(model, coef. = coef., vcov. = vcov., df = df, ...)
}
