# broom.mixed conventions for lmmr fits: tidy(), glance() and augment()
# methods on the generics of the `generics` package (which broom and
# broom.mixed re-export), registered lazily. Column names, row order and
# numbers as broom.mixed 0.2.9.4 gives for lmerTest fits.

#' Tidy, glance and augment lmmr fits (broom.mixed conventions)
#'
#' Methods for the `tidy()`, `glance()` and `augment()` generics of the
#' generics package (re-exported by broom and broom.mixed), with the
#' conventions of broom.mixed for `lmerTest::lmer()` fits.
#'
#' `tidy()`: one row per parameter. `effects` chooses among `"fixed"`
#' (columns `estimate`, `std.error`, `statistic`, `df`, `p.value`, with
#' Satterthwaite df by default), `"ran_pars"` (standard deviations
#' `sd__<term>` and correlations `cor__<term1>.<term2>`, or with
#' `scales = "vcov"` variances `var__` and covariances `cov__`; the residual
#' is `sd__Observation` in group `"Residual"`), `"ran_vals"` (conditional
#' modes with their conditional standard deviations, one row per level and
#' term) and `"ran_coefs"` (fixed plus random coefficients per level).
#' `conf.int = TRUE` adds `conf.low` and `conf.high`: for fixed effects
#' t intervals with the chosen df (normal intervals with
#' `ddf.method = "lme4"`), for `ran_vals` normal intervals from the
#' conditional SDs, and for `ran_pars` `NA` with `conf.method = "Wald"` (as
#' broom.mixed) or profile intervals with `conf.method = "profile"` (SD and
#' correlation scale only).
#'
#' `glance()`: `nobs`, `sigma`, `logLik`, `AIC`, `BIC`, `REMLcrit` (REML
#' fits) or `deviance` (ML fits), `df.residual`.
#'
#' `augment()`: the model frame with `.fitted`, `.resid`, `.hat`, `.cooksd`,
#' `.fixed`, `.mu`, `.offset`, `.sqrtXwt`, `.sqrtrwt`, `.weights`, `.wtres`
#' (as broom.mixed); with `newdata`, the new data with `.fitted` (and
#' `.fixed`).
#'
#' @param x an `"lmmr"` fit.
#' @param effects one or more of `"fixed"`, `"ran_pars"`, `"ran_vals"`,
#'   `"ran_coefs"`.
#' @param scales for `ran_pars`: `"sdcor"` (default) or `"vcov"`; must be
#'   `NA` or `NULL` for the other effects.
#' @param exponentiate must be `FALSE` (a linear model).
#' @param ran_prefix optional character vector of two prefixes replacing
#'   `"sd"`/`"cor"` (or `"var"`/`"cov"`).
#' @param conf.int logical: add confidence limits.
#' @param conf.level confidence level.
#' @param conf.method `"Wald"` (default) or `"profile"`.
#' @param ddf.method `"Satterthwaite"` (default), `"Kenward-Roger"` (with
#'   the Kenward-Roger adjusted standard errors) or `"lme4"` (no df and
#'   p-values, as lme4).
#' @param data for `augment()`: the data to augment (default the model
#'   frame).
#' @param newdata for `augment()`: new data to predict.
#' @param ... unused.
#' @return A tibble (a data frame when the tibble package is missing).
#' @name lmmr-broom
#' @examples
#' if (requireNamespace("generics", quietly = TRUE)) {
#'   fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#'   generics::tidy(fit, effects = "fixed", conf.int = TRUE)
#'   generics::tidy(fit, effects = "ran_pars", scales = "vcov")
#'   generics::glance(fit)
#'   head(generics::augment(fit))
#' }
NULL

#' @noRd
h_as_tibble <- function(df) {
  rownames(df) <- NULL
  if (requireNamespace("tibble", quietly = TRUE)) tibble::as_tibble(df) else df
}

#' @rdname lmmr-broom
#' @exportS3Method generics::tidy
tidy.lmmr <- function(x, effects = c("ran_pars", "fixed"), scales = NULL,
                      exponentiate = FALSE, ran_prefix = NULL, conf.int = FALSE,
                      conf.level = 0.95, conf.method = "Wald",
                      ddf.method = NULL, ...) {
  ok <- c("fixed", "ran_pars", "ran_vals", "ran_coefs")
  if (!is.character(effects) || !length(effects) || !all(effects %in% ok)) {
    h_abort(sprintf("`effects` must be one or more of %s.", paste0('"', ok, '"', collapse = ", ")),
            "argument")
  }
  if (!isFALSE(exponentiate)) {
    h_abort("`exponentiate = TRUE` makes no sense for a linear mixed model.", "argument")
  }
  h_check_flag(conf.int, "conf.int")
  h_check_level(conf.level, "conf.level")
  conf.method <- match.arg(conf.method, c("Wald", "profile"))
  if (!is.null(scales)) {
    if (length(scales) == 1L) scales <- rep(scales, length(effects))
    if (length(scales) != length(effects)) {
      h_abort("`scales` must have one element per element of `effects`.", "argument")
    }
    for (i in seq_along(effects)) {
      if (effects[i] == "ran_pars") {
        if (!scales[i] %in% c("sdcor", "vcov")) {
          h_abort("`scales` for ran_pars must be \"sdcor\" or \"vcov\".", "argument")
        }
      } else if (!is.na(scales[i])) {
        h_abort(sprintf("`scales` must be NA for effects = \"%s\".", effects[i]), "argument")
      }
    }
  }
  ddf <- if (is.null(ddf.method)) "Satterthwaite" else
    match.arg(ddf.method, c("Satterthwaite", "Kenward-Roger", "lme4"))
  parts <- list()
  # broom.mixed's order: fixed, ran_pars, ran_vals, ran_coefs
  if ("fixed" %in% effects) {
    parts$fixed <- h_tidy_fixed(x, ddf, conf.int, conf.level)
  }
  if ("ran_pars" %in% effects) {
    sc <- if (is.null(scales)) "sdcor" else scales[effects == "ran_pars"]
    parts$ran_pars <- h_tidy_ran_pars(x, sc, ran_prefix, conf.int, conf.level, conf.method)
  }
  if ("ran_vals" %in% effects) {
    parts$ran_vals <- h_tidy_ran_vals(x, conf.int, conf.level)
  }
  if ("ran_coefs" %in% effects) {
    parts$ran_coefs <- h_tidy_ran_coefs(x)
  }
  cols <- unique(unlist(lapply(parts, names)))
  first <- c("effect", "group", "level", "term")
  cols <- c(intersect(first, cols), setdiff(cols, c(first, "conf.low", "conf.high")),
            intersect(c("conf.low", "conf.high"), cols))
  parts <- lapply(parts, function(p) {
    for (nm in setdiff(cols, names(p))) {
      p[[nm]] <- if (nm %in% c("group", "level", "term", "effect")) NA_character_ else NA_real_
    }
    p[, cols, drop = FALSE]
  })
  h_as_tibble(do.call(rbind, unname(parts)))
}

#' @noRd
h_tidy_fixed <- function(x, ddf, conf.int, conf.level) {
  beta <- x$beta
  out <- data.frame(effect = "fixed", term = names(beta), estimate = unname(beta),
                    stringsAsFactors = FALSE)
  if (ddf == "lme4") {
    se <- sqrt(diag(x$vcov))
    out$std.error <- unname(se)
    out$statistic <- unname(beta / se)
    q <- stats::qnorm(1 - (1 - conf.level) / 2)
  } else {
    inf <- h_coef_ddf(x, ddf)
    se <- inf$se
    out$std.error <- unname(se)
    out$statistic <- unname(beta / se)
    out$df <- unname(inf$df)
    out$p.value <- unname(2 * stats::pt(abs(beta / se), inf$df, lower.tail = FALSE))
    q <- stats::qt(1 - (1 - conf.level) / 2, inf$df)
  }
  if (conf.int) {
    out$conf.low <- unname(beta - q * se)
    out$conf.high <- unname(beta + q * se)
  }
  out
}

#' @noRd
h_tidy_ran_pars <- function(x, scales, ran_prefix, conf.int, conf.level, conf.method) {
  vc <- as.data.frame(VarCorr(x), order = "lower.tri")
  is_cov <- !is.na(vc$var2)
  pref <- if (scales == "vcov") c("var", "cov") else c("sd", "cor")
  if (!is.null(ran_prefix)) pref <- ran_prefix
  var1 <- ifelse(vc$grp == "Residual", "Observation", vc$var1)
  term <- ifelse(is_cov, paste0(pref[2], "__", vc$var1, ".", vc$var2),
                 paste0(pref[1], "__", var1))
  est <- if (scales == "vcov") vc$vcov else vc$sdcor
  out <- data.frame(effect = "ran_pars", group = vc$grp, term = term,
                    estimate = est, stringsAsFactors = FALSE)
  if (conf.int) {
    out$conf.low <- NA_real_
    out$conf.high <- NA_real_
    if (conf.method == "profile") {
      if (scales == "vcov") {
        h_abort("Profile intervals for ran_pars are available on the sdcor scale only.",
                "argument")
      }
      # lme4's .sig01, .sig02, ... run over each term's lower triangle by
      # column, the order of as.data.frame(VarCorr(), order = "lower.tri")
      ci <- confint(x, parm = "theta_", level = conf.level, method = "profile")
      out$conf.low <- unname(ci[, 1])
      out$conf.high <- unname(ci[, 2])
    }
  }
  out
}

#' @noRd
h_tidy_ran_vals <- function(x, conf.int, conf.level) {
  re <- as.data.frame(ranef(x, condVar = TRUE))
  out <- data.frame(effect = "ran_vals", group = re$grpvar, level = as.character(re$grp),
                    term = as.character(re$term), estimate = re$condval,
                    std.error = re$condsd, stringsAsFactors = FALSE)
  if (conf.int) {
    q <- stats::qnorm(1 - (1 - conf.level) / 2)
    out$conf.low <- out$estimate - q * out$std.error
    out$conf.high <- out$estimate + q * out$std.error
  }
  out
}

#' @noRd
h_tidy_ran_coefs <- function(x) {
  cf <- coef(x)
  rows <- list()
  for (g in names(cf)) {
    d <- cf[[g]]
    for (nm in names(d)) {
      rows[[length(rows) + 1L]] <- data.frame(effect = "ran_coefs", group = g,
                                              level = rownames(d), term = nm,
                                              estimate = d[[nm]], stringsAsFactors = FALSE)
    }
  }
  do.call(rbind, rows)
}

#' @rdname lmmr-broom
#' @exportS3Method generics::glance
glance.lmmr <- function(x, ...) {
  ll <- stats::logLik(x)
  out <- data.frame(nobs = as.integer(x$n), sigma = x$sigma, logLik = as.numeric(ll),
                    AIC = stats::AIC(x), BIC = stats::BIC(x))
  if (isTRUE(x$REML)) out$REMLcrit <- x$objective else out$deviance <- stats::deviance(x)
  out$df.residual <- as.integer(stats::df.residual(x))
  h_as_tibble(out)
}

#' @rdname lmmr-broom
#' @exportS3Method generics::augment
augment.lmmr <- function(x, data = stats::model.frame(x), newdata = NULL, ...) {
  if (!is.null(newdata)) {
    out <- as.data.frame(newdata)
    out$.fitted <- unname(predict(x, newdata = newdata, allow.new.levels = TRUE))
    out$.fixed <- unname(predict(x, newdata = newdata, re.form = NA))
    return(h_as_tibble(out))
  }
  out <- as.data.frame(data)
  if (nrow(out) != x$n) {
    h_abort(sprintf("`data` must have the %d rows used in the fit.", x$n), "argument")
  }
  fixed <- drop(x$X %*% x$beta) + x$offset
  sw <- sqrt(x$weights)
  strip <- function(v) unname(as.numeric(v))
  out$.fitted <- x$fitted
  out$.resid <- x$y - x$fitted
  h <- h_hat(x)
  out$.hat <- h
  out$.cooksd <- h_cooks(x, h)
  out$.fixed <- fixed
  out$.mu <- x$fitted
  out$.offset <- x$offset
  out$.sqrtXwt <- sw
  out$.sqrtrwt <- sw
  out$.weights <- x$weights
  out$.wtres <- sw * (x$y - x$fitted)
  h_as_tibble(out)
}
