# Hand-written wrappers for the Rust entry points registered by extendr
# (src/rust/src/lib.rs). Internal: never exported.

#' @useDynLib lmmr, .registration = TRUE
#' @noRd
NULL

#' @noRd
rs_fit_lmm <- function(x, y, weights, codes, n_levels, z, k, factor_id,
                       reml, max_iter, tol, theta_start, optimize,
                       max_time = Inf) {
  .Call(wrap__rs_fit_lmm, x, y, weights, codes, n_levels, z, k, factor_id,
        reml, max_iter, tol, theta_start, optimize, as.numeric(max_time))
}

#' @noRd
rs_check_weights <- function(weights) {
  .Call(wrap__rs_check_weights, weights)
}
