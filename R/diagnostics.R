# Model checking for "lmmr" fits: residuals at the observation level
# (conditional and marginal), standardised random effects (level-2
# residuals), and base-graphics diagnostic plots.

#' Residuals of a linear mixed model
#'
#' Observation-level (level-1) residuals. `level = 1` (default) gives
#' *conditional* residuals, observed minus fitted values including all
#' random effects (`y - X beta - offset - Z b`); `level = 0` gives
#' *marginal* residuals, observed minus the population-level prediction
#' (`y - X beta - offset`), which still contain the random effects. A
#' character vector of grouping-factor names gives residuals conditional on
#' the random effects of those factors only (e.g. `level = "school"` in a
#' model with `(1 | school) + (1 | class)`).
#'
#' Cluster-level (level-2) residuals are the BLUPs of the random effects,
#' standardised: see [ranef_std()]; `level = 2` is not accepted here
#' because they are not one value per observation.
#'
#' @param object an `"lmmr"` fit.
#' @param type `"response"` (observed minus fitted) or `"pearson"` (response
#'   residuals times the square root of the prior weights, as lme4);
#'   as in lme4 for linear mixed models, `"working"` is the same as
#'   `"response"` and `"deviance"` the same as `"pearson"`.
#' @param scaled logical: divide by the residual standard deviation.
#' @param level `1` or `"conditional"` (default), `0` or `"marginal"`, or a
#'   character vector of grouping-factor names (see Details).
#' @param ... unused.
#' @return A numeric vector (padded with `NA` when the fit used
#'   `na.action = na.exclude`).
#' @seealso [ranef_std()], [plot.lmmr()]
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' summary(residuals(fit, scaled = TRUE))
#' # marginal residuals: y - X beta
#' head(residuals(fit, level = 0))
#' @export
residuals.lmmr <- function(object, type = c("response", "pearson", "deviance", "working"),
                          scaled = FALSE, level = 1, ...) {
  h_check_dots(..., .fn = "residuals")
  type <- match.arg(type)
  # as lme4 for linear mixed models: working = response, deviance = pearson
  if (type == "working") type <- "response"
  if (type == "deviance") type <- "pearson"
  use <- h_residual_level(object, level)
  if (all(use)) {
    r <- object$y - object$fitted
  } else {
    eta <- drop(object$X %*% object$beta) + object$offset
    for (t in which(use)) {
      term <- object$re_terms[[t]]
      eta <- eta + rowSums(term$Z * term$b[term$codes + 1L, , drop = FALSE])
    }
    r <- object$y - eta
  }
  if (type == "pearson") r <- r * sqrt(object$weights)
  if (scaled) r <- r / object$sigma
  r <- stats::setNames(r, rownames(object$frame))
  stats::naresid(object$na_action, r)
}

#' Which random-effect terms a residual `level` conditions on
#' @noRd
h_residual_level <- function(object, level) {
  n_terms <- length(object$re_terms)
  groups <- vapply(object$re_terms, function(t) t$group, character(1))
  bad <- function() {
    h_abort("`level` must be 1 (\"conditional\"), 0 (\"marginal\") or names of grouping factors of the model. Cluster-level residuals are given by ranef_std().",
            "argument")
  }
  if (length(level) == 1L && !is.na(level)) {
    if (is.numeric(level)) {
      if (level == 1) return(rep(TRUE, n_terms))
      if (level == 0) return(rep(FALSE, n_terms))
      bad()
    }
    if (identical(level, "conditional")) return(rep(TRUE, n_terms))
    if (identical(level, "marginal")) return(rep(FALSE, n_terms))
  }
  if (!is.character(level) || !length(level) || anyNA(level)) bad()
  unknown <- setdiff(level, groups)
  if (length(unknown)) {
    h_abort(sprintf("`level` names grouping factor(s) not in the model: %s (the model has %s).",
                    paste(unknown, collapse = ", "),
                    paste(unique(groups), collapse = ", ")), "argument")
  }
  groups %in% level
}

#' Standardised random effects (cluster-level residuals)
#'
#' The BLUPs (conditional modes) of the random effects divided by a standard
#' deviation, one row per level and random-effect coefficient. Two
#' standardisations are available:
#'
#' * `"diagnostic"` (default): divide by the SD of the BLUP itself,
#'   `sqrt(Sigma_jj - C_jj)`, where `Sigma_jj` is the estimated variance of
#'   the random effect and `C_jj` its conditional (posterior) variance.
#'   Since `Var(b) = Var(b_hat) + Var(b - b_hat)` and `Var(b - b_hat) = C`,
#'   this is the variance of `b_hat` under the model, so the standardised
#'   values are approximately standard normal if the model is right: use
#'   them for normal QQ plots and to spot outlying clusters (|value| > 2 or 3).
#' * `"conditional"`: divide by the conditional SD `sqrt(C_jj)` (the SD
#'   behind lme4's `condVar` intervals and the caterpillar plot): this
#'   measures how far a cluster's effect is from 0 relative to its own
#'   uncertainty ("comparative" standardisation); it is not standard normal.
#'
#' @param object an `"lmmr"` fit.
#' @param type `"diagnostic"` or `"conditional"`, see Details.
#' @return A data frame with columns `group`, `term` (random-effect
#'   coefficient), `level`, `blup`, `cond_sd` (conditional SD),
#'   `blup_sd` (`sqrt(Sigma_jj - C_jj)`) and `std` (the standardised value).
#' @seealso [residuals.lmmr()], [plot.lmmr()], [ranef()]
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' rs <- ranef_std(fit)
#' head(rs)
#' qqnorm(rs$std[rs$term == "(Intercept)"])
#' @export
ranef_std <- function(object, type = c("diagnostic", "conditional")) {
  h_check_not_rcov(object, "ranef_std()")
  h_check_lmm(object)
  type <- match.arg(type)
  rows <- list()
  for (t in object$re_terms) {
    G <- t$n_levels
    for (j in seq_len(t$k)) {
      cv <- t$cond_var[j, j, ]
      cond_sd <- sqrt(pmax(cv, 0))
      blup_sd <- sqrt(pmax(t$cov[j, j] - cv, 0))
      den <- if (type == "diagnostic") blup_sd else cond_sd
      std <- ifelse(den > 0, t$b[, j] / den, NA_real_)
      rows[[length(rows) + 1L]] <- data.frame(
        group = t$group, term = t$cnms[j], level = t$levels,
        blup = unname(t$b[, j]), cond_sd = cond_sd, blup_sd = blup_sd,
        std = unname(std), stringsAsFactors = FALSE)
    }
  }
  out <- do.call(rbind, rows)
  rownames(out) <- NULL
  attr(out, "type") <- type
  out
}

#' Diagnostic plots for a linear mixed model
#'
#' Base-graphics diagnostic plots, in top-down order by default (cluster
#' level first, then observation level):
#'
#' 1. `"caterpillar"`: BLUPs of each random-effect coefficient, sorted, with
#'    95% intervals `b +/- 1.96 * conditional SD` (one panel per term
#'    coefficient);
#' 2. `"qq_ranef"`: normal QQ plots of the standardised BLUPs
#'    ([ranef_std()], diagnostic standardisation), one per coefficient;
#' 3. `"resid_fitted"`: standardised conditional (Pearson) residuals
#'    against fitted values, with a smoother;
#' 4. `"qq_resid"`: normal QQ plot of the standardised conditional
#'    residuals;
#' 5. `"scale_location"`: `sqrt(|standardised residual|)` against fitted
#'    values, with a smoother (checks constant variance).
#'
#' Each selected plot is drawn on its own page; plots 1 and 2 split the page
#' into one panel per random-effect coefficient. The most extreme
#' observations (`id.n`) are labelled by their row names.
#'
#' @param x an `"lmmr"` fit.
#' @param which plots to draw: numbers 1 to 5 or the names above.
#' @param ask logical: ask before each new page (as [plot.lm()]).
#' @param id.n number of extreme residuals / clusters to label.
#' @param max_levels caterpillar plots label at most this many levels on the
#'   axis.
#' @param ... further graphical parameters passed to the plotting functions.
#' @return `x`, invisibly.
#' @seealso [residuals.lmmr()], [ranef_std()]
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' op <- par(no.readonly = TRUE)
#' plot(fit, which = 1)
#' plot(fit, which = c("resid_fitted", "qq_resid"), ask = FALSE)
#' par(op)
#' @export
plot.lmmr <- function(x, which = 1:5,
                     ask = length(which) > 1L && grDevices::dev.interactive(),
                     id.n = 3, max_levels = 40, ...) {
  all_plots <- c("caterpillar", "qq_ranef", "resid_fitted", "qq_resid",
                 "scale_location")
  if (is.character(which)) {
    bad <- setdiff(which, all_plots)
    if (length(bad)) {
      h_abort(sprintf("Unknown plot(s) in `which`: %s; choose from %s or 1 to 5.",
                      paste(bad, collapse = ", "),
                      paste(all_plots, collapse = ", ")), "argument")
    }
    which <- match(which, all_plots)
  }
  if (!is.numeric(which) || !length(which) || any(!which %in% 1:5)) {
    h_abort("`which` must contain numbers from 1 to 5 or plot names.", "argument")
  }
  if (ask) {
    old_ask <- grDevices::devAskNewPage(TRUE)
    on.exit(grDevices::devAskNewPage(old_ask), add = TRUE)
  }
  r <- residuals(x, type = "pearson", scaled = TRUE)
  r <- r[!is.na(r)]
  fv <- x$fitted
  for (w in which) {
    switch(all_plots[w],
           caterpillar = h_plot_caterpillar(x, max_levels = max_levels, ...),
           qq_ranef = h_plot_qq_ranef(x, id.n = id.n, ...),
           resid_fitted = h_plot_resid(fv, r, id.n = id.n,
                                       ylab = "Standardised residuals",
                                       main = "Residuals vs fitted", ...),
           qq_resid = h_plot_qq(r, id.n = id.n,
                                main = "Normal QQ: level-1 residuals",
                                ylab = "Standardised residuals", ...),
           scale_location = h_plot_resid(fv, sqrt(abs(r)), id.n = id.n,
                                         ylab = expression(sqrt("|standardised residual|")),
                                         main = "Scale-location", zero = FALSE,
                                         ...))
  }
  invisible(x)
}

#' Panels for a multi-panel page; returns the old par to restore
#' @noRd
h_panel_layout <- function(n) {
  nc <- ceiling(sqrt(n))
  nr <- ceiling(n / nc)
  graphics::par(mfrow = c(nr, nc))
}

#' @noRd
h_plot_caterpillar <- function(x, max_levels = 40, ...) {
  rs <- ranef_std(x, type = "conditional")
  keys <- unique(rs[c("group", "term")])
  op <- h_panel_layout(nrow(keys))
  on.exit(graphics::par(op), add = TRUE)
  for (i in seq_len(nrow(keys))) {
    d <- rs[rs$group == keys$group[i] & rs$term == keys$term[i], , drop = FALSE]
    d <- d[order(d$blup), , drop = FALSE]
    lo <- d$blup - 1.96 * d$cond_sd
    hi <- d$blup + 1.96 * d$cond_sd
    pos <- seq_len(nrow(d))
    show <- nrow(d) <= max_levels
    graphics::plot(d$blup, pos, xlim = range(lo, hi, 0), pch = 19, cex = 0.7,
                   yaxt = "n", ylab = if (show) "" else keys$group[i],
                   xlab = "BLUP with 95% interval",
                   main = sprintf("%s: %s", keys$group[i], keys$term[i]), ...)
    graphics::segments(lo, pos, hi, pos, col = "grey40")
    graphics::abline(v = 0, lty = 2, col = "grey50")
    if (show) {
      graphics::axis(2, at = pos, labels = d$level, las = 1,
                     cex.axis = if (nrow(d) > 20) 0.6 else 0.8, tick = FALSE)
    }
  }
  invisible(NULL)
}

#' @noRd
h_plot_qq_ranef <- function(x, id.n = 3, ...) {
  rs <- ranef_std(x, type = "diagnostic")
  keys <- unique(rs[c("group", "term")])
  op <- h_panel_layout(nrow(keys))
  on.exit(graphics::par(op), add = TRUE)
  for (i in seq_len(nrow(keys))) {
    d <- rs[rs$group == keys$group[i] & rs$term == keys$term[i], , drop = FALSE]
    v <- stats::setNames(d$std, d$level)
    h_plot_qq(v[is.finite(v)], id.n = id.n,
              main = sprintf("Normal QQ: %s %s", keys$group[i], keys$term[i]),
              ylab = "Standardised BLUPs", ...)
  }
  invisible(NULL)
}

#' @noRd
h_plot_qq <- function(v, id.n = 3, main = "", ylab = "", ...) {
  if (length(v) < 2L) {
    graphics::plot.new()
    graphics::title(main = main)
    graphics::text(0.5, 0.5, "too few values")
    return(invisible(NULL))
  }
  qq <- stats::qqnorm(v, main = main, ylab = ylab,
                      xlab = "Theoretical quantiles", pch = 1, ...)
  stats::qqline(v, lty = 2, col = "grey40")
  h_label_extremes(qq$x, qq$y, names(v), abs(v), id.n)
  invisible(NULL)
}

#' @noRd
h_plot_resid <- function(fv, r, id.n = 3, ylab = "", main = "", zero = TRUE,
                         ...) {
  graphics::plot(fv, r, xlab = "Fitted values (conditional)", ylab = ylab,
                 main = main, pch = 1, ...)
  if (zero) graphics::abline(h = 0, lty = 3, col = "grey50")
  ok <- is.finite(fv) & is.finite(r)
  if (sum(ok) > 3L) {
    graphics::lines(stats::lowess(fv[ok], r[ok]), col = "red")
  }
  h_label_extremes(fv, r, names(r), abs(r), id.n)
  invisible(NULL)
}

#' @noRd
h_label_extremes <- function(x, y, labels, score, id.n) {
  if (id.n <= 0 || is.null(labels) || !length(score)) return(invisible(NULL))
  idx <- utils::head(order(score, decreasing = TRUE), id.n)
  graphics::text(x[idx], y[idx], labels[idx], pos = 4, cex = 0.7, xpd = NA)
  invisible(NULL)
}
