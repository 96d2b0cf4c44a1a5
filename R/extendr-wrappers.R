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

#' @noRd
rs_fit_rcov <- function(x, y, subj_start, visit, coords, subj_group,
                        subj_pattern, cluster_start, cov_type, m, n_groups,
                        codes, z, k, reml, max_iter, gtol, theta_start,
                        optimize) {
  .Call(wrap__rs_fit_rcov, x, y, subj_start, visit, coords, subj_group,
        subj_pattern, cluster_start, cov_type, m, n_groups, codes, z, k, reml,
        max_iter, gtol, theta_start, optimize)
}
