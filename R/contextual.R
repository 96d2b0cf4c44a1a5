# Within- and between-cluster effects of a level-1 predictor (contextual
# effects): a helper to split a predictor into its cluster mean and the
# deviation from it, and contextual() for the contrasts.

#' Split a predictor into between-cluster and within-cluster parts
#'
#' Adds, for each variable in `x`, a column `<x>_between` with the cluster
#' mean of `x` and a column `<x>_within` with the deviation of `x` from its
#' cluster mean (cluster-mean centring). Cluster means ignore missing values
#' of `x`; rows with a missing `x` get `NA` in `<x>_within`.
#'
#' Entering both columns in a mixed model (`y ~ x_within + x_between + (1 |
#' cluster)`) separates the within-cluster effect (the coefficient of
#' `x_within`) from the between-cluster effect (of `x_between`); see
#' [contextual()].
#'
#' @param data a data frame.
#' @param x character vector: names of numeric columns of `data` to split.
#' @param cluster name of the column of `data` that identifies the clusters.
#' @param suffix length-2 character vector: suffixes of the new columns for
#'   the between and the within part.
#' @return `data` with the new columns added (existing columns of the same
#'   names are overwritten).
#' @seealso [contextual()]
#' @examples
#' d <- split_within_between(sleepstudy, "Days", "Subject")
#' head(d)
#' @export
split_within_between <- function(data, x, cluster,
                                 suffix = c("_between", "_within")) {
  if (!is.data.frame(data)) h_abort("`data` must be a data frame.", "argument")
  if (!is.character(x) || !length(x) || anyNA(x)) {
    h_abort("`x` must be a character vector of column names.", "argument")
  }
  if (!is.character(cluster) || length(cluster) != 1L || is.na(cluster)) {
    h_abort("`cluster` must be a single column name.", "argument")
  }
  if (!is.character(suffix) || length(suffix) != 2L || anyNA(suffix) ||
      suffix[1] == suffix[2]) {
    h_abort("`suffix` must be two different strings.", "argument")
  }
  missing_cols <- setdiff(c(x, cluster), names(data))
  if (length(missing_cols)) {
    h_abort(sprintf("Column(s) not found in `data`: %s.",
                    paste(missing_cols, collapse = ", ")), "argument")
  }
  cl <- data[[cluster]]
  for (v in x) {
    xv <- data[[v]]
    if (!is.numeric(xv)) {
      h_abort(sprintf("Column `%s` must be numeric to be split into within and between parts.",
                      v), "argument")
    }
    means <- h_cluster_means(xv, cl)
    data[[paste0(v, suffix[1])]] <- means
    data[[paste0(v, suffix[2])]] <- xv - means
  }
  data
}

#' Cluster means of x (ignoring NA x), NA for NA clusters
#' @noRd
h_cluster_means <- function(x, cluster) {
  f <- factor(cluster, exclude = NA)
  ok <- !is.na(x) & !is.na(f)
  sums <- tapply(x[ok], f[ok], sum)
  counts <- tapply(rep(1, sum(ok)), f[ok], sum)
  m <- as.numeric(sums / counts)
  out <- m[as.integer(f)]
  out[is.na(f)] <- NA_real_
  out
}

#' Within, between and contextual effects
#'
#' Tests the within-cluster effect, the between-cluster effect and their
#' difference, the *contextual effect* (the effect of the cluster mean over
#' and above the individual value), of a predictor `x` in a fitted mixed
#' model. Two parametrisations are recognised from the names of the fixed
#' effects:
#'
#' * **mean + deviation** (`y ~ x_within + x_between + ...`, as produced by
#'   [split_within_between()]): within = `b[x_within]`,
#'   between = `b[x_between]`, contextual = `b[x_between] - b[x_within]`;
#' * **mean + raw x** (`y ~ x + x_between + ...`): within = `b[x]`,
#'   contextual = `b[x_between]`, between = `b[x] + b[x_between]`.
#'
#' If the model has `x_within`, `x_between` *and* `x`, the first is used.
#' Each effect is a linear contrast `L beta` of the fixed effects with
#' standard error `sqrt(L V L')` (Kenward-Roger: from the adjusted
#' covariance). Degrees of freedom come from [contest()] (Satterthwaite or
#' Kenward-Roger, one t test per row); should that fail, from
#' the per-coefficient Satterthwaite df of [summary.lmmr()] (for a contrast of
#' two coefficients, the smaller of their dfs, which is conservative), and if
#' that is unavailable too, `df = Inf` (Wald z test). The method used is
#' stored in the attribute `"df_method"` and printed.
#'
#' @param fit an `"lmmr"` fit.
#' @param x base name of the predictor (e.g. `"ses"`, for coefficients
#'   `ses_within` and `ses_between`, or `ses` and `ses_between`).
#' @param suffix suffixes of the between and within columns, as in
#'   [split_within_between()].
#' @param level confidence level of the intervals.
#' @param ddf `"Satterthwaite"` or `"Kenward-Roger"`, passed on when
#'   available.
#' @return A data frame of class `"lmm_contextual"` with rows `within`,
#'   `between`, `contextual` and columns `estimate`, `std_error`, `df`,
#'   `t_value`, `p_value`, `lower`, `upper`; attributes
#'   `"parametrisation"` (`"mean + deviation"` or `"mean + raw x"`),
#'   `"cluster"`, `"L"` (the contrast matrix) and `"df_method"`.
#' @seealso [split_within_between()]
#' @examples
#' d <- split_within_between(sleepstudy, "Days", "Subject")
#' # Days is balanced, so Days_between is constant and cannot be estimated;
#' # make an unbalanced version for the illustration
#' d <- d[!(d$Subject %in% c("308", "309") & d$Days > 5), ]
#' d <- split_within_between(d, "Days", "Subject")
#' fit <- lmm(Reaction ~ Days_within + Days_between + (1 | Subject), data = d)
#' contextual(fit, "Days")
#' @export
contextual <- function(fit, x, suffix = c("_between", "_within"),
                       level = 0.95, ddf = c("Satterthwaite", "Kenward-Roger")) {
  h_check_lmm(fit, "fit")
  ddf <- match.arg(ddf)
  h_check_level(level, "level")
  if (!is.character(x) || length(x) != 1L || is.na(x)) {
    h_abort("`x` must be the name of a single predictor, e.g. \"ses\".",
            "argument")
  }
  nm_b <- paste0(x, suffix[1])
  nm_w <- paste0(x, suffix[2])
  all_names <- c(names(fit$beta), fit$dropped)
  beta_names <- names(fit$beta)
  if (nm_w %in% all_names && nm_b %in% all_names) {
    param <- "mean + deviation"
    within_var <- nm_w
  } else if (x %in% all_names && nm_b %in% all_names) {
    param <- "mean + raw x"
    within_var <- x
  } else {
    h_abort(sprintf("contextual() needs the fixed effects to contain `%s` together with `%s` (mean + deviation) or `%s` (mean + raw x); use split_within_between() to create them.",
                    nm_b, nm_w, x), "contextual_terms")
  }
  cluster <- h_find_cluster(fit, nm_b)
  if (within_var %in% fit$dropped || !h_varies_within(fit, within_var, cluster)) {
    h_abort(sprintf("`%s` does not vary within the clusters%s, so within and between effects cannot be separated.",
                    within_var,
                    if (is.na(cluster)) "" else sprintf(" (%s)", cluster)),
            "no_within_variation")
  }
  if (nm_b %in% fit$dropped) {
    h_abort(sprintf("`%s` was dropped from the fixed effects (collinear with other predictors, e.g. the cluster means do not vary), so the between effect cannot be estimated.",
                    nm_b), "no_between_variation")
  }
  p <- length(beta_names)
  e <- function(nm) as.numeric(beta_names == nm)
  L <- if (param == "mean + deviation") {
    rbind(within = e(nm_w), between = e(nm_b), contextual = e(nm_b) - e(nm_w))
  } else {
    rbind(within = e(x), between = e(x) + e(nm_b), contextual = e(nm_b))
  }
  colnames(L) <- beta_names
  tests <- h_contrast_tests(fit, L, ddf)
  q <- stats::qt(1 - (1 - level) / 2, tests$df)
  out <- data.frame(
    estimate = tests$estimate, std_error = tests$se, df = tests$df,
    t_value = tests$estimate / tests$se,
    p_value = 2 * stats::pt(abs(tests$estimate / tests$se), tests$df,
                            lower.tail = FALSE),
    lower = tests$estimate - q * tests$se,
    upper = tests$estimate + q * tests$se,
    row.names = rownames(L)
  )
  attr(out, "parametrisation") <- param
  attr(out, "cluster") <- cluster
  attr(out, "L") <- L
  attr(out, "df_method") <- tests$method
  attr(out, "level") <- level
  attr(out, "x") <- x
  class(out) <- c("lmm_contextual", "data.frame")
  out
}

#' Grouping factor within which the between variable is constant
#' @noRd
h_find_cluster <- function(fit, between_name) {
  xb <- fit$frame[[between_name]]
  groups <- unique(vapply(fit$re_terms, function(t) t$group, character(1)))
  if (is.null(xb) || !is.numeric(xb)) return(if (length(groups)) groups[1] else NA_character_)
  for (g in groups) {
    term <- fit$re_terms[[match(g, vapply(fit$re_terms, function(t) t$group, ""))]]
    r <- tapply(xb, term$codes, function(v) diff(range(v)))
    if (all(r <= 1e-8 * max(1, abs(xb)))) return(g)
  }
  h_warn(sprintf("`%s` is not constant within any grouping factor of the model; is it really a cluster mean?",
                 between_name), "contextual")
  NA_character_
}

#' Does a frame variable vary within the clusters of a grouping factor?
#' @noRd
h_varies_within <- function(fit, var, cluster) {
  v <- fit$frame[[var]]
  if (is.null(v) || !is.numeric(v) || is.na(cluster)) return(TRUE)
  term <- fit$re_terms[[match(cluster, vapply(fit$re_terms, function(t) t$group, ""))]]
  sds <- tapply(v, term$codes, function(z) if (length(z) > 1) max(z) - min(z) else 0)
  scale <- max(1, abs(v))
  any(sds > 1e-8 * scale)
}

#' Estimates, SEs and df of the rows of a contrast matrix
#' @noRd
h_contrast_tests <- function(fit, L, ddf) {
  est <- drop(L %*% fit$beta)
  se <- sqrt(pmax(rowSums((L %*% fit$vcov) * L), 0))
  contest_fun <- get0("contest", envir = topenv(), inherits = FALSE,
                      mode = "function")
  df <- NULL
  method <- NULL
  if (!is.null(contest_fun)) {
    res <- tryCatch(
      as.data.frame(contest_fun(fit, L, ddf = ddf, joint = FALSE)),
      error = function(e) NULL
    )
    if (!is.null(res) && nrow(res) == nrow(L) &&
        all(c("df", "Std. Error") %in% names(res)) && all(is.finite(res$df))) {
      df <- as.numeric(res$df)
      se <- as.numeric(res[["Std. Error"]])
      method <- sprintf("%s (contest())", ddf)
    }
  }
  if (is.null(df)) {
    coef_df <- tryCatch({
      cf <- summary(fit, ddf = ddf)$coefficients
      if ("df" %in% colnames(cf)) cf[, "df"] else NULL
    }, error = function(e) NULL)
    if (!is.null(coef_df) && all(is.finite(coef_df))) {
      df <- apply(L, 1, function(l) min(coef_df[l != 0]))
      method <- sprintf("%s df of the coefficients (smallest for a difference)", ddf)
    }
  }
  if (is.null(df)) {
    df <- rep(Inf, nrow(L))
    method <- "none available: Wald z test (df = Inf)"
  }
  list(estimate = est, se = se, df = df, method = method)
}

#' @export
print.lmm_contextual <- function(x, digits = 3, ...) {
  lev <- attr(x, "level")
  cat(sprintf("Within, between and contextual effects of `%s` (%s parametrisation)\n",
              attr(x, "x"), attr(x, "parametrisation")))
  if (!is.na(attr(x, "cluster"))) cat(sprintf("Clusters: %s\n", attr(x, "cluster")))
  cat("\n")
  df <- x
  class(df) <- "data.frame"
  for (a in c("L", "parametrisation", "cluster", "df_method", "level", "x")) {
    attr(df, a) <- NULL
  }
  names(df) <- c("Estimate", "Std. Error", "df", "t value", "Pr(>|t|)",
                 sprintf("%g%% lower", 100 * lev), sprintf("%g%% upper", 100 * lev))
  print(format(df, digits = digits))
  cat(sprintf("\ncontextual = between - within: the effect of the cluster mean over and above\nthe individual value.  df: %s.\n",
              attr(x, "df_method")))
  invisible(x)
}
