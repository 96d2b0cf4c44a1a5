# Classed conditions. Every error a user can trigger goes through h_abort() so
# that it carries the classes c("lmmr_error_<kind>", "lmmr_error", "error").

#' @noRd
h_abort <- function(message, kind, call = NULL, ...) {
  cond <- structure(
    class = c(paste0("lmmr_error_", kind), "lmmr_error", "error", "condition"),
    list(message = paste(message, collapse = "\n"), call = call, ...)
  )
  stop(cond)
}

#' @noRd
h_warn <- function(message, kind, call = NULL) {
  cond <- structure(
    class = c(paste0("lmmr_warning_", kind), "lmmr_warning", "warning", "condition"),
    list(message = paste(message, collapse = "\n"), call = call)
  )
  warning(cond)
}

#' @noRd
h_inform <- function(message, kind) {
  cond <- structure(
    class = c(paste0("lmmr_message_", kind), "lmmr_message", "message", "condition"),
    list(message = paste0(paste(message, collapse = "\n"), "\n"), call = NULL)
  )
  message(cond)
}
