# emmeans support: recover_data() and emm_basis() methods for "lmmr" fits,
# registered lazily (emmeans is in Suggests) through NAMESPACE directives
# S3method(emmeans::recover_data, lmmr) written by roxygen's
# @exportS3Method. The conventions follow what emmeans 1.8.4 does for lmer
# fits (its "extending" vignette and R/helpers.R, read, not copied):
# Kenward-Roger degrees of freedom and adjusted covariance by default,
# `lmer.df = "satterthwaite"` or `"asymptotic"` (also through
# `emm_options(lmer.df = )`). The Satterthwaite / Kenward-Roger ingredients
# are computed once per reference grid (one call into Rust); each row of a
# grid then costs p x p algebra only, and there is no size limit.

#' emmeans support for lmmr fits
#'
#' Methods that let [emmeans](https://cran.r-project.org/package=emmeans)
#' (`emmeans()`, `ref_grid()`, `pairs()`, `contrast()`, `emtrends()`,
#' `joint_tests()`, ...) work on fits made by [lmm()]. They are registered
#' when emmeans is loaded, so emmeans stays optional.
#'
#' Degrees of freedom follow emmeans' conventions for `lmer()` fits:
#' Kenward-Roger (with the Kenward-Roger adjusted covariance of the fixed
#' effects) by default, or Satterthwaite, or none (`"asymptotic"`), chosen
#' with the argument `lmer.df` of `emmeans()`/`ref_grid()` or globally with
#' `emm_options(lmer.df = )`. The Satterthwaite and Kenward-Roger ingredients
#' are computed by lmmr itself (no pbkrtest or lmerTest needed), once per
#' reference grid, and, unlike emmeans for `lmer()` fits, there is no limit
#' on the number of observations (`pbkrtest.limit`, `lmerTest.limit` and
#' `disable.pbkrtest`/`disable.lmerTest` are ignored). Kenward-Roger needs
#' a REML fit: for an ML fit the adjusted covariance and the Kenward-Roger
#' terms are those of the REML refit of the same model, as pbkrtest does for
#' `lmer()` fits (and, as emmeans, the ML covariance enters the df as the
#' unadjusted one). With prior weights, Kenward-Roger results differ from
#' emmeans on `lmer()` fits because pbkrtest ignores the weights; lmmr's
#' account for them (Satterthwaite agrees). A
#' user-supplied covariance (`vcov.`) cannot be combined with Kenward-Roger;
#' Satterthwaite df are then used, as emmeans does.
#'
#' @param object an `"lmmr"` fit.
#' @param trms,xlev,grid as passed by emmeans (see
#'   `emmeans::emm_basis()`).
#' @param mode degrees-of-freedom method: `"kenward-roger"`,
#'   `"satterthwaite"` or `"asymptotic"` (default from
#'   `emm_options("lmer.df")`).
#' @param lmer.df alias of `mode`, as for `lmer()` fits.
#' @param options passed by emmeans.
#' @param ... passed by emmeans; `vcov.` (a function or matrix) replaces the
#'   covariance of the fixed effects; `pbkrtest.limit`, `lmerTest.limit`,
#'   `disable.pbkrtest` and `disable.lmerTest` are accepted and ignored.
#' @return `recover_data()`: the data used in the fit, as emmeans expects.
#'   `emm_basis()`: a list with `X`, `bhat`, `nbasis`, `V`, `dffun`,
#'   `dfargs`, `misc` and `model.matrix` (for `submodel`), as emmeans
#'   expects.
#' @name lmmr-emmeans
#' @examples
#' if (requireNamespace("emmeans", quietly = TRUE)) {
#'   fit <- lmm(sbp ~ clinic_urban * smoker + age + (1 | clinic_id),
#'              data = phaa_clinics)
#'   em <- emmeans::emmeans(fit, ~ smoker | clinic_urban)
#'   em
#'   pairs(em)
#'   emmeans::emmeans(fit, ~ smoker, lmer.df = "satterthwaite")
#' }
NULL

#' @rdname lmmr-emmeans
#' @exportS3Method emmeans::recover_data
recover_data.lmmr <- function(object, ...) {
  trms <- stats::delete.response(stats::terms(object))
  emmeans::recover_data(object$call, trms, object$na_action,
                        frame = object$frame, ...)
}

#' @rdname lmmr-emmeans
#' @exportS3Method emmeans::emm_basis
emm_basis.lmmr <- function(object, trms, xlev, grid,
                           mode = emmeans::get_emm_option("lmer.df"),
                           lmer.df, options, ...) {
  if (!missing(lmer.df)) mode <- lmer.df
  mode <- h_emm_df_mode(mode)
  dots <- list(...)
  V <- object$vcov
  user_vcov <- !is.null(dots$vcov.)
  if (user_vcov) {
    V <- if (is.function(dots$vcov.)) dots$vcov.(object) else dots$vcov.
    V <- as.matrix(V)
    if (!identical(dim(V), dim(object$vcov))) {
      h_abort("`vcov.` must be a function or a square matrix with one row per fixed-effect coefficient.",
              "argument")
    }
    if (mode == "kenward-roger") {
      message("Kenward-Roger method can't be used with user-supplied covariances")
      mode <- "satterthwaite"
    }
  }
  if (!missing(options) && !is.null(options$df) && mode != "kenward-roger") {
    mode <- "asymptotic"
  }
  dfargs <- list()
  if (mode == "kenward-roger") {
    kr <- h_emm_kr_parts(object)
    dfargs <- list(kr = kr, fun = h_emm_kr_df)
    V <- kr$phi_adj
    dimnames(V) <- dimnames(object$vcov)
    dffun <- function(k, dfargs) dfargs$fun(k, dfargs$kr)
  } else if (mode == "satterthwaite") {
    dfargs <- list(sat = h_inference_parts(object, "satterthwaite")$satterthwaite,
                   fun = h_emm_sat_df)
    dffun <- function(k, dfargs) dfargs$fun(k, dfargs$sat)
  } else {
    dffun <- function(k, dfargs) Inf
  }
  # emmeans evaluates dffun away from lmmr's namespace (it re-parents the
  # closure), so the helpers travel in dfargs
  attr(dffun, "mesg") <- mode
  contr <- attr(object$X, "contrasts") %||% object$design_info$contrasts
  m <- stats::model.frame(trms, grid, na.action = stats::na.pass, xlev = xlev)
  X <- stats::model.matrix(trms, m, contrasts.arg = contr)
  bhat <- object$beta
  nbasis <- estimability::all.estble
  if (length(bhat) < ncol(X)) {
    # aliased columns were dropped in the fit: NA coefficients, and the
    # non-estimable functions from the full design
    full <- stats::setNames(rep(NA_real_, ncol(X)), colnames(X))
    full[names(bhat)] <- bhat
    bhat <- full
    mm <- stats::model.matrix(trms, object$frame, contrasts.arg = contr)
    nbasis <- estimability::nonest.basis(mm)
  }
  list(X = X, bhat = bhat, nbasis = nbasis, V = V, dffun = dffun,
       dfargs = dfargs, misc = list(), model.matrix = h_emm_model_matrix(object))
}

#' The R factor of the weighted fixed-effects design (columns in their
#' original order, "assign" attribute), which emmeans uses for `submodel`
#' @noRd
h_emm_model_matrix <- function(object) {
  if (!isTRUE(emmeans::get_emm_option("enable.submodel"))) return(NULL)
  q <- qr(object$X * sqrt(object$weights))
  R <- qr.R(q)
  R[, q$pivot] <- R
  colnames(R)[q$pivot] <- colnames(R)
  attr(R, "assign") <- attr(object$X, "assign")
  R
}

#' Match emmeans' lmer.df option (case-insensitive, partial, as emmeans)
#' @noRd
h_emm_df_mode <- function(mode) {
  choices <- c("satterthwaite", "kenward-roger", "asymptotic")
  i <- if (is.character(mode) && length(mode) >= 1L) pmatch(tolower(mode[1]), choices) else NA
  if (is.na(i)) {
    h_abort(sprintf("`lmer.df` must be one of %s; got %s.",
                    paste0('"', choices, '"', collapse = ", "),
                    paste(deparse(mode), collapse = " ")), "argument")
  }
  choices[i]
}

#' Kenward-Roger ingredients for emmeans; an ML fit uses its REML refit, as
#' pbkrtest does for lmer fits
#' @noRd
h_emm_kr_parts <- function(object) {
  if (isTRUE(object$REML)) return(h_inference_parts(object, "kenward-roger")$kenward_roger)
  reml <- suppressMessages(refit(object, object$y, REML = TRUE))
  kr <- h_inference_parts(reml, "kenward-roger")$kenward_roger
  # as emmeans with pbkrtest: the df use the ML fit's own covariance as the
  # unadjusted one, with the adjustment terms of the REML refit
  kr$phi <- object$vcov
  kr
}

#' Kenward-Roger df of one linear function (a row of an emmeans grid) or of
#' a full-rank matrix of them
#' @noRd
h_emm_kr_df <- function(k, kr) {
  L <- rbind(k)
  if (any(!is.finite(L)) || all(L == 0)) return(NA_real_)
  h_kr_ddf(kr, L)$ddf
}

#' Satterthwaite df of one linear function, or the Fai-Cornelius denominator
#' df of a matrix of them (as lmerTest::calcSatterth)
#' @noRd
h_emm_sat_df <- function(k, sat) {
  L <- rbind(k)
  if (any(!is.finite(L)) || all(L == 0)) return(NA_real_)
  if (nrow(L) == 1L) return(h_sat_df1(sat, drop(L)))
  red <- h_reduce_contrast(L, sat$vcov_beta, rep(0, nrow(L)))
  nu <- vapply(seq_len(nrow(red$L)), function(m) h_sat_df1(sat, red$L[m, ]),
               numeric(1))
  h_fstat_ddf(nu)
}
