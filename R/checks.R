# Argument checks shared by the methods.

#' Warn about arguments a method does not use (instead of dropping them
#' silently), as lme4 does ("unused arguments ignored")
#' @param ... the `...` of the calling method.
#' @param .fn the method's name, for the message.
#' @noRd
h_check_dots <- function(..., .fn) {
  n <- ...length()
  if (n == 0L) return(invisible(NULL))
  nms <- names(list(...))
  if (is.null(nms)) nms <- rep("", n)
  shown <- ifelse(nzchar(nms), sprintf("`%s`", nms), sprintf("an unnamed argument (position %d)", seq_len(n)))
  h_warn(sprintf("%s() for lmmr fits does not use %s; ignored.", .fn,
                 paste(shown, collapse = ", ")), "unused_argument")
  invisible(NULL)
}
