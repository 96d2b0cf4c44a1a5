# Hand-written wrapper for the inference entry point registered by extendr
# (src/rust/src/inference_glue.rs). Internal: never exported.

#' @noRd
rs_inference <- function(x, y, weights, codes, n_levels, z, k, factor_id,
                         theta, sigma, reml, method, n_obs = NULL) {
  .Call(wrap__rs_inference, x, y, weights, codes, n_levels, z, k, factor_id,
        theta, sigma, reml, method, n_obs)
}
