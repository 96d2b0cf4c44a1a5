# Hand-written wrappers for the Rust entry points registered by extendr
# (src/rust/src/lib.rs). Internal: never exported.

#' @useDynLib lmmr, .registration = TRUE
#' @noRd
NULL

#' @noRd
rs_model_new <- function(x, y, weights, codes, n_levels, z, k, factor_id,
                         n_obs = NULL, log_w_sum = NULL, threads = NULL) {
  .Call(wrap__rs_model_new, x, y, weights, codes, n_levels, z, k, factor_id,
        n_obs, log_w_sum, if (!is.null(threads)) as.numeric(threads))
}

#' @noRd
rs_cross_products <- function(x, threads = NULL) {
  .Call(wrap__rs_cross_products, x, as.numeric(nrow(x)), as.numeric(ncol(x)),
        if (!is.null(threads)) as.numeric(threads))
}

#' @noRd
rs_fill_columns <- function(n, comps, cols) {
  .Call(wrap__rs_fill_columns, as.numeric(n), comps, cols)
}

#' @noRd
rs_model_is_live <- function(ptr) .Call(wrap__rs_model_is_live, ptr)

#' @noRd
rs_model_fit <- function(ptr, reml, max_iter, tol, theta_start, optimize,
                         max_time = Inf, restarts = TRUE) {
  .Call(wrap__rs_model_fit, ptr, reml, max_iter, tol, theta_start, optimize,
        as.numeric(max_time), isTRUE(restarts))
}

#' @noRd
rs_model_set_response <- function(ptr, y) {
  .Call(wrap__rs_model_set_response, ptr, y)
}

#' @noRd
rs_model_evaluate <- function(ptr, theta, reml) {
  .Call(wrap__rs_model_evaluate, ptr, theta, reml)
}

#' @noRd
rs_rcov_model_new <- function(x, y, subj_start, visit, coords, subj_group,
                              subj_pattern, cluster_start, cov_type, m, n_groups,
                              codes, z, k) {
  .Call(wrap__rs_rcov_model_new, x, y, subj_start, visit, coords, subj_group,
        subj_pattern, cluster_start, cov_type, m, n_groups, codes, z, k)
}

#' @noRd
rs_rcov_model_is_live <- function(ptr) .Call(wrap__rs_rcov_model_is_live, ptr)

#' @noRd
rs_rcov_model_set_response <- function(ptr, y) .Call(wrap__rs_rcov_model_set_response, ptr, y)

#' @noRd
rs_rcov_model_fit <- function(ptr, reml, max_iter, gtol, theta_start, optimize) {
  .Call(wrap__rs_rcov_model_fit, ptr, reml, max_iter, gtol, theta_start, optimize)
}

#' @noRd
rs_rcov_model_inference <- function(ptr, theta, reml, kr, linear) {
  .Call(wrap__rs_rcov_model_inference, ptr, theta, reml, kr, linear)
}

#' @noRd
rs_check_weights <- function(weights) {
  .Call(wrap__rs_check_weights, weights)
}

#' @noRd
rs_model_refit_metric <- function(ptr, theta, reml) {
  .Call(wrap__rs_model_refit_metric, ptr, as.numeric(theta), isTRUE(reml))
}

#' @noRd
rs_model_refit_many <- function(ptr, ys, theta_start, metric, reml, max_iter,
                                tol, max_time = Inf) {
  .Call(wrap__rs_model_refit_many, ptr, ys, as.numeric(theta_start),
        as.numeric(metric), isTRUE(reml), as.integer(max_iter),
        as.numeric(tol), as.numeric(max_time))
}
