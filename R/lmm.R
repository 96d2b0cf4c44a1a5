#' Fit a linear mixed model
#'
#' Fits a linear mixed model written in the formula language of `lme4` by
#' restricted (REML) or full maximum likelihood. The profiled criterion is
#' optimised in Rust over the relative covariance factor of the random
#' effects; fixed effects and the residual standard deviation are profiled
#' out, as in `lme4::lmer()`, so the estimates agree with lme4's.
#'
#' @param formula a two-sided formula with fixed effects and random-effect
#'   terms in lme4 syntax: `(1 | g)`, `(x | g)`, `(0 + x | g)`, `(x || g)`
#'   (uncorrelated), `(1 | a/b)` (nested), `(1 | a:b)`, crossed terms, and
#'   `offset()` terms; and at most one residual covariance structure for
#'   repeated measures, `us(visit | subject)`, `cs()`, `csh()`, `ar1()`,
#'   `ar1h()`, `toep()`, `toeph()`, `adh()`, `sp_exp(x1, x2 | subject)`,
#'   grouped `us(visit | arm / subject)`, alone or with random-effect terms
#'   whose grouping factors contain the subject (see [cov_struct]). Such a
#'   fit has class `c("lmmr_rcov", "lmmr")`.
#' @param data a data frame containing the variables in `formula`, or a
#'   database table as a dbplyr lazy table (`dplyr::tbl(con, "name")`, any
#'   DBI backend): the model is then fitted from SQL aggregates computed in
#'   the database (see the section "Data in a database").
#' @param REML logical: `TRUE` (default) for REML estimates, `FALSE` for
#'   maximum likelihood.
#' @param weights optional prior weights (a numeric vector or a column name
#'   of `data`), as in `lme4::lmer()`: the residual variance of observation
#'   i is `sigma^2 / weights[i]`. Weights must be finite and non-negative; a
#'   zero weight drops the observation's contribution to the likelihood (as
#'   in `lm()`; the row still gets a fitted value).
#' @param subset optional expression selecting the rows of `data` to use.
#' @param na.action how to handle missing values: `na.omit` (default),
#'   `na.exclude` (fitted values and residuals are padded with `NA`) or
#'   `na.fail`.
#' @param offset optional numeric vector added to the linear predictor (in
#'   addition to any `offset()` terms in the formula).
#' @param contrasts optional list of contrasts for factors of the fixed part,
#'   as in [stats::model.matrix()].
#' @param control a list from [lmm_control()].
#' @return An object of class `"lmmr"`: a list of plain R data (so it can be
#'   saved with [saveRDS()]) with methods for [print()], [summary()],
#'   [fixef()], [ranef()], [VarCorr()], [coef()], [fitted()],
#'   [residuals()], [predict()], [logLik()], [AIC()], [BIC()],
#'   [deviance()], [nobs()], [sigma()], [vcov()], [formula()],
#'   [model.matrix()], [update()] and [confint()].
#' @section Data in a database:
#' With a dbplyr lazy table as `data`, the rows never come to R. lmm() asks
#' the database for the levels of the factors (`SELECT DISTINCT`), weighted
#' means of the model's columns, and, per combination of the levels of the
#' grouping factors, the weighted sums of products of the centred columns
#' (`GROUP BY` with `SUM`, `CASE WHEN` for factor dummies): only these
#' aggregates are transferred, their size does not depend on the number of
#' rows. The fit, `summary()` (Satterthwaite and Kenward-Roger), `anova()`,
#' `fixef()`, `ranef()`, `VarCorr()`, `icc()`, `r2()`, `confint()` and
#' likelihood-ratio tests work as for an in-memory fit and agree with it.
#' Numeric terms may use arithmetic, `log()`, `exp()`, `sqrt()`, `abs()` and
#' `I()`; `poly()`, splines, `scale()` and other functions are an error of
#' class `"lmmr_error_sql_unsupported"` (compute such columns in the table
#' first). Methods that need the rows (`fitted()`, `residuals()`, `plot()`,
#' `simulate()`, `predict()` without `newdata`) are an error of class
#' `"lmmr_error_rows_in_database"`. Rows with a `NULL` in a used column are
#' dropped in SQL (as `na.omit`); `na.action = na.fail` makes them an error.
#' `weights` must be a column name; `subset` is not supported (filter the
#' table with `dplyr::filter()` first). lmm() only reads from the database.
#' @seealso [lmm_control()], [summary.lmmr()], [ranef.lmmr()], [VarCorr.lmmr()]
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' fit
#' fixef(fit)
#' VarCorr(fit)
#' # maximum likelihood instead of REML
#' fit_ml <- update(fit, REML = FALSE)
#' logLik(fit_ml)
#' # the same model on a table in a database (SQLite in memory)
#' if (requireNamespace("RSQLite", quietly = TRUE) &&
#'     requireNamespace("dbplyr", quietly = TRUE)) {
#'   con <- DBI::dbConnect(RSQLite::SQLite(), ":memory:")
#'   DBI::dbWriteTable(con, "sleep", as.data.frame(sleepstudy))
#'   fit_db <- lmm(Reaction ~ Days + (Days | Subject), data = dplyr::tbl(con, "sleep"))
#'   fixef(fit_db)
#'   DBI::dbDisconnect(con)
#' }
#' @export
lmm <- function(formula, data = NULL, REML = TRUE, weights = NULL, subset,
                na.action, offset = NULL, contrasts = NULL,
                control = lmm_control()) {
  mc <- match.call(expand.dots = FALSE)
  h_check_flag(REML, "REML")
  if (!inherits(control, "lmm_control")) {
    h_abort("`control` must be created by lmm_control().", "argument")
  }
  if (isTRUE(tryCatch(h_is_lazy_table(data), error = function(e) FALSE))) {
    if (!missing(subset) || !is.null(offset)) {
      h_abort("For a database table, filter rows with dplyr::filter() and write offsets as offset() terms in the formula; `subset` and `offset` are not supported.",
              "argument")
    }
    w <- if (is.null(mc$weights)) NULL else if (is.character(mc$weights)) mc$weights else
      h_deparse(mc$weights)
    fit <- h_lmm_db(formula, data, REML = REML, weights = w,
                    na.action = if (missing(na.action)) NULL else na.action,
                    contrasts = contrasts, control = control, call = mc)
    fit$formula_input <- formula
    return(fit)
  }
  design <- h_model_design_from_call(mc, parent.frame())
  if (!is.null(design$cov)) {
    res <- h_fit_rcov_design(design, REML = REML, control = control)
    fit <- h_build_rcov_fit(design, res, REML = REML, call = mc, control = control)
  } else {
    res <- h_fit_design(design, REML = REML, control = control)
    fit <- h_build_lmm(design, res, REML = REML, call = mc, control = control)
  }
  fit$formula_input <- if (inherits(formula, "formula")) formula else design$formula
  fit
}

#' Control settings for lmm()
#'
#' @param max_iter maximum number of iterations of the optimiser, a projected
#'   quasi-Newton (BFGS) method on the analytic gradient of the profiled
#'   criterion with the bounds on the diagonal of the relative covariance
#'   factor; each iteration costs about one evaluation of the criterion and
#'   its gradient. The budget is shared by the continuation runs of one
#'   start (see Details).
#' @param tol convergence tolerance: an end point is accepted as an optimum
#'   when the decrease of the criterion predicted by a Newton step (with a
#'   Hessian from finite differences of the analytic gradient, computed at
#'   the end point) is below `tol` relative to the criterion.
#' @details
#' Where the optimiser stops, lmm() checks the end point: the gradient on
#' the free parameters, the sign of the gradient on the bounds (a variance
#' at zero must not have a gradient pointing into the interior) and the
#' curvature on the free parameters. Where the check finds a way down
#' (a remaining descent direction, a saddle point or a maximum along a
#' direction) the search continues from there. Fits that end on (or next to)
#' the boundary, and all fits with at most 10 covariance parameters, are
#' also restarted from a few other points (and from the mirror image of a
#' zero diagonal), keeping the best optimum. A criterion that keeps
#' decreasing as a variance grows until the random effects reproduce the
#' response is a perfect-fit error (class `lmmr_error_non_finite`). A fit
#' whose optimum could not be confirmed is
#' reported with a warning (class `lmmr_warning_convergence`) and has
#' `fit$optinfo$converged` set to `FALSE`.
#' @param singular_tol a fit is reported as singular (on the boundary of the
#'   parameter space) when a diagonal element of the relative covariance
#'   factor is below this value, as `lme4::isSingular()`.
#' @param theta_start optional starting values for the relative covariance
#'   factor (lme4's `theta`, in lme4's order).
#' @param max_time time budget of the optimisation, in seconds (building the
#'   cross-products from the data is not counted). When it is spent the fit
#'   stops at the best point reached, with a warning of class
#'   `lmmr_warning_time_budget` that names the term that makes the fit slow;
#'   the fit is reported as not converged. `Inf` for no budget.
#' @param threads number of threads for the passes over the data rows
#'   (building the cross-products once per fit, and again for each new
#'   response of a refit); `NULL` (default) uses all cores. The results do not
#'   depend on it: the rows are split into fixed slabs whose partial sums are
#'   combined in a fixed order, so fits are bit-identical whatever the number
#'   of threads.
#' @return A list of class `"lmm_control"`.
#' @examples
#' ctrl <- lmm_control(max_iter = 500)
#' # one thread for the data pass (e.g. when fits run in parallel)
#' ctrl <- lmm_control(threads = 1)
#' fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy, control = ctrl)
#' # stop any optimisation after 30 seconds
#' ctrl <- lmm_control(max_time = 30)
#' @export
lmm_control <- function(max_iter = 1000L, tol = 1e-10, singular_tol = 1e-4,
                        theta_start = NULL, max_time = 60, threads = NULL) {
  h_check_number(max_iter, "max_iter", lower = 1)
  if (max_iter > .Machine$integer.max) {
    h_abort(sprintf("`max_iter` must be at most %d.", .Machine$integer.max), "argument")
  }
  h_check_number(tol, "tol", lower = 0)
  h_check_number(singular_tol, "singular_tol", lower = 0)
  if (!is.null(theta_start) &&
      (!is.numeric(theta_start) || anyNA(theta_start))) {
    h_abort("`theta_start` must be NULL or a numeric vector without NA.",
            "argument")
  }
  if (!is.numeric(max_time) || length(max_time) != 1L || is.na(max_time) || max_time < 0) {
    h_abort("`max_time` must be a single non-negative number of seconds (Inf for no budget).",
            "argument")
  }
  if (!is.null(threads)) {
    h_check_number(threads, "threads", lower = 1)
    if (threads != round(threads) || threads > 1024) {
      h_abort("`threads` must be NULL (all cores) or a whole number between 1 and 1024.", "argument")
    }
    threads <- as.integer(threads)
  }
  structure(list(max_iter = as.integer(max_iter), tol = as.numeric(tol),
                 singular_tol = as.numeric(singular_tol),
                 theta_start = theta_start, max_time = as.numeric(max_time),
                 threads = threads),
            class = "lmm_control")
}

#' @noRd
h_check_flag <- function(x, name) {
  if (!is.logical(x) || length(x) != 1L || is.na(x)) {
    h_abort(sprintf("`%s` must be TRUE or FALSE.", name), "argument")
  }
  invisible(x)
}

#' @noRd
h_check_number <- function(x, name, lower = -Inf) {
  if (!is.numeric(x) || length(x) != 1L || !is.finite(x) || x < lower) {
    h_abort(sprintf("`%s` must be a single finite number >= %s.", name, lower),
            "argument")
  }
  invisible(x)
}
