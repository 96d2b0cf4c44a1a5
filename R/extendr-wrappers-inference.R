# Hand-written wrapper for the inference entry point registered by extendr
# (src/rust/src/inference_glue.rs). Internal: never exported.

#' @noRd
rs_inference <- function(ptr, theta, sigma, reml, method) {
  .Call(wrap__rs_inference, ptr, theta, sigma, reml, method)
}
