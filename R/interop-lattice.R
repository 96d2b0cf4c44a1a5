# lattice plots of the conditional modes, as lme4's dotplot()/qqmath()
# methods for ranef() output: one trellis object per grouping factor.
# Registered lazily on lattice's generics.

#' Caterpillar and normal quantile plots of random effects
#'
#' `lattice::dotplot()` of `ranef(fit)` draws, for each grouping factor, the
#' conditional modes of every level with intervals of `level` coverage from
#' the conditional variances (when `ranef()` was called with
#' `condVar = TRUE`), levels ordered by the first random-effect column, one
#' panel per column (a "caterpillar plot", as lme4). `lattice::qqmath()`
#' draws the conditional modes against normal quantiles, with the same
#' intervals.
#'
#' @param x a `"ranef.lmmr"` object from [ranef.lmmr()].
#' @param data unused (for the generic).
#' @param level coverage of the intervals.
#' @param ... passed to `lattice::dotplot()` / `lattice::xyplot()`.
#' @return A named list of `"trellis"` objects, one per grouping factor.
#' @name lmmr-lattice
#' @examples
#' if (requireNamespace("lattice", quietly = TRUE)) {
#'   fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#'   p <- lattice::dotplot(ranef(fit, condVar = TRUE))
#'   class(p$Subject)
#'   q <- lattice::qqmath(ranef(fit, condVar = TRUE))
#' }
NULL

#' Long data for plotting one grouping factor's conditional modes
#' @noRd
h_ranef_long <- function(x, g, level) {
  h_check_level(level, "level")
  d <- as.data.frame(x)
  d <- d[d$grpvar == g, , drop = FALSE]
  first <- d[d$term == levels(droplevels(d$term))[1], ]
  ord <- as.character(first$grp)[order(first$condval)]
  d$grp <- factor(as.character(d$grp), levels = ord)
  d$term <- droplevels(d$term)
  z <- stats::qnorm(1 - (1 - level) / 2)
  d$lower <- d$condval - z * d$condsd
  d$upper <- d$condval + z * d$condsd
  d
}

#' @rdname lmmr-lattice
#' @exportS3Method lattice::dotplot
dotplot.ranef.lmmr <- function(x, data, level = 0.95, ...) {
  out <- lapply(stats::setNames(names(x), names(x)), function(g) {
    d <- h_ranef_long(x, g, level)
    lattice::dotplot(
      grp ~ condval | term, data = d, scales = list(x = list(relation = "free")),
      lower = d$lower, upper = d$upper, main = g, xlab = NULL,
      prepanel = function(x, y, subscripts, lower, upper, ...) {
        list(xlim = range(c(x, lower[subscripts], upper[subscripts]), na.rm = TRUE))
      },
      panel = function(x, y, subscripts, lower, upper, ...) {
        lattice::panel.abline(v = 0, col = "grey")
        ok <- !is.na(lower[subscripts])
        if (any(ok)) {
          lattice::panel.segments(lower[subscripts][ok], as.numeric(y)[ok],
                                  upper[subscripts][ok], as.numeric(y)[ok])
        }
        lattice::panel.dotplot(x, y, ...)
      }, ...)
  })
  out
}

#' @rdname lmmr-lattice
#' @exportS3Method lattice::qqmath
qqmath.ranef.lmmr <- function(x, data, level = 0.95, ...) {
  out <- lapply(stats::setNames(names(x), names(x)), function(g) {
    d <- h_ranef_long(x, g, level)
    d <- d[order(d$term, d$condval), ]
    d$nq <- stats::ave(d$condval, d$term, FUN = function(v) stats::qnorm(stats::ppoints(length(v))))
    lattice::xyplot(
      nq ~ condval | term, data = d, scales = list(x = list(relation = "free")),
      lower = d$lower, upper = d$upper, main = g, xlab = NULL,
      ylab = "Standard normal quantiles",
      prepanel = function(x, y, subscripts, lower, upper, ...) {
        list(xlim = range(c(x, lower[subscripts], upper[subscripts]), na.rm = TRUE))
      },
      panel = function(x, y, subscripts, lower, upper, ...) {
        lattice::panel.abline(v = 0, col = "grey")
        ok <- !is.na(lower[subscripts])
        if (any(ok)) {
          lattice::panel.segments(lower[subscripts][ok], y[ok], upper[subscripts][ok], y[ok])
        }
        lattice::panel.xyplot(x, y, ...)
      }, ...)
  })
  out
}
