# Hand-written wrappers for the Rust entry points registered by extendr
# (src/rust/src/lib.rs). Internal: never exported.

#' @useDynLib lmmr, .registration = TRUE
#' @noRd
NULL

#' @noRd
rs_fit_lmm <- function(x, y, weights, codes, n_levels, z, k, factor_id,
                       reml, max_iter, tol, theta_start, optimize,
                       n_obs = NULL, log_w_sum = NULL) {
  .Call(wrap__rs_fit_lmm, x, y, weights, codes, n_levels, z, k, factor_id,
        reml, max_iter, tol, theta_start, optimize, n_obs, log_w_sum)
}
