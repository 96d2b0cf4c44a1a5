# Sharing generics with lme4, lmerTest and performance instead of masking
# them. lmmr keeps its own refit(), icc(), r2(), contest() and ranova(); on a
# model lmmr did not fit they hand over to the package that made the model
# (lme4::refit(), performance::icc(), performance::r2(), lmerTest::contest(),
# lmerTest::ranova()), so attaching lmmr after those packages changes no
# answer. In the other direction, lmmr's methods are registered on the
# generics of those packages (lme4::refit, lme4::getME, lme4::isLMM, ...,
# lmerTest::contest, performance::r2, performance::check_singularity) when
# their namespaces load: NAMESPACE directives S3method(pkg::generic, class)
# (R >= 3.6 registers them lazily), so the packages stay in Suggests.

#' Call a function of another package on a model lmmr did not fit
#'
#' @param pkg,fun the package and its exported function.
#' @param what the lmmr function, for the error message.
#' @param ... the arguments.
#' @noRd
h_delegate <- function(pkg, fun, what, x, ...) {
  h_require_for(pkg, what, x)
  getExportedValue(pkg, fun)(x, ...)
}

#' Re-evaluate a matched call with another package's function, renaming
#' arguments (`rename = c(lmmr_name = "their_name")`)
#' @noRd
h_delegate_call <- function(call, pkg, fun, env, x, rename = NULL) {
  h_require_for(pkg, as.character(call[[1]])[length(as.character(call[[1]]))], x)
  call[[1]] <- call("::", as.name(pkg), as.name(fun))
  nm <- names(call)
  for (old in names(rename)) nm[nm == old] <- rename[[old]]
  names(call) <- nm
  eval(call, env)
}

#' @noRd
h_require_for <- function(pkg, what, x) {
  if (!requireNamespace(pkg, quietly = TRUE)) {
    h_abort(sprintf("%s() of lmmr needs a model fitted by lmm(); for an object of class \"%s\" it calls %s::%s(), but the %s package is not installed.",
                    what, paste(class(x), collapse = "/"), pkg, what, pkg),
            "unsupported_model")
  }
  invisible(TRUE)
}

#' lme4, lmerTest and performance generics for lmmr fits
#'
#' lmmr registers methods for its fits on the generics of lme4, lmerTest and
#' performance when those packages are loaded, and lmmr's own functions of
#' the same names hand over to those packages for models lmmr did not fit.
#' So code written for lme4 keeps working when lmmr is attached, and these
#' calls work on `lmm()` fits:
#'
#' * `lme4::getME(fit, name)`: the pieces lme4 users ask for most (see
#'   `name`); `lme4::isSingular(fit)` works through it;
#' * `lme4::isLMM()`, `lme4::isGLMM()`, `lme4::isNLMM()`, `lme4::isREML()`;
#' * `lme4::refit(fit, newresp)`: [refit.lmmr()];
#' * `lmerTest::contest(fit, L, ...)`: lmerTest's conventions (a vector `L`
#'   with `joint = TRUE` is an F test; `joint = FALSE` gives t tests with
#'   confidence limits `lower`, `upper`; a list of contrasts gives one row
#'   each; arguments `L`, `rhs`, `joint`, `collect`, `confint`, `level`,
#'   `check_estimability` (only without dropped columns) and `ddf`
#'   (`"Satterthwaite"` or `"Kenward-Roger"`) as lmerTest's); the numbers
#'   are those of lmmr's [contest()];
#' * `performance::r2(fit)` (Nakagawa's R2, as performance),
#'   `performance::check_singularity(fit)` and
#'   `performance::check_normality(fit)`.
#'
#' `lmerTest::ranova()` is a plain function that accepts only lme4 fits, so
#' it cannot be extended; use lmmr's [ranova()], which on an lme4 fit calls
#' lmerTest's.
#'
#' @param object,x an `"lmmr"` fit.
#' @param name for `getME()`: one or several of `"X"`, `"Z"`, `"Zt"`,
#'   `"y"`, `"mu"`, `"offset"`, `"b"`, `"beta"`, `"fixef"`,
#'   `"theta"`, `"lower"`, `"sigma"`, `"Lambda"`, `"Lambdat"`, `"flist"`,
#'   `"cnms"`, `"Gp"`, `"l_i"`, `"q_i"`, `"k"`, `"n_rtrms"`, `"n_rfacs"`,
#'   `"N"`, `"n"`, `"p"`, `"q"`, `"is_REML"`, `"REML"`, `"devcomp"`, or
#'   `"ALL"`. `Z`, `Zt`, `Lambda` and `Lambdat` are sparse `Matrix` objects
#'   when the Matrix package is available (as lme4), dense otherwise.
#' @param tolerance for `check_singularity()`: as `lme4::isSingular()`'s
#'   `tol`.
#' @param ... unused.
#' @return `getME()`: the piece, or a named list of pieces when `name` has
#'   several elements. `isLMM()` etc.: `TRUE`/`FALSE`. `contest()`: a data
#'   frame (or a list of them with `collect = FALSE`). `r2()`: performance's
#'   `r2_nakagawa()` result. `check_singularity()`: `TRUE`/`FALSE`.
#' @name lmmr-lme4
#' @examples
#' fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
#' if (requireNamespace("lme4", quietly = TRUE)) {
#'   lme4::getME(fit, "theta")
#'   lme4::isSingular(fit)
#'   fixef(lme4::refit(fit, sleepstudy$Reaction * 2))
#' }
#' if (requireNamespace("lmerTest", quietly = TRUE)) {
#'   lmerTest::contest(fit, c(0, 1), joint = FALSE)
#' }
NULL

#' @rdname lmmr-lme4
#' @exportS3Method lme4::getME
getME.lmmr <- function(object, name, ...) {
  known <- c("X", "Z", "Zt", "y", "mu", "offset", "b", "beta",
             "fixef", "theta", "lower", "sigma", "Lambda", "Lambdat", "flist",
             "cnms", "Gp", "l_i", "q_i", "k", "n_rtrms", "n_rfacs", "N", "n",
             "p", "q", "is_REML", "REML", "devcomp")
  if (missing(name) || !is.character(name) || !length(name)) {
    h_abort("`name` must be a character vector of component names.", "argument")
  }
  if (identical(name, "ALL")) name <- known
  bad <- setdiff(name, known)
  if (length(bad)) {
    h_abort(sprintf("getME() for lmm fits does not provide %s; available: %s.",
                    paste0('"', bad, '"', collapse = ", "),
                    paste0('"', known, '"', collapse = ", ")), "argument")
  }
  if (length(name) > 1L) {
    return(stats::setNames(lapply(name, function(nm) getME.lmmr(object, nm)), name))
  }
  terms <- object$re_terms
  sparse <- function(m) {
    if (requireNamespace("Matrix", quietly = TRUE)) Matrix::Matrix(m, sparse = TRUE) else m
  }
  switch(name,
    X = object$X,
    Z = sparse(model.matrix(object, type = "random")),
    Zt = sparse(t(model.matrix(object, type = "random"))),
    y = object$y,
    mu = object$fitted,
    offset = object$offset,
    b = unlist(lapply(terms, function(t) as.vector(t(t$b))), use.names = FALSE),
    beta = , fixef = object$beta,
    theta = object$theta,
    lower = object$lower,
    sigma = object$sigma,
    Lambda = sparse(h_lambda_matrix(terms)),
    Lambdat = sparse(t(h_lambda_matrix(terms))),
    flist = h_flist(object),
    cnms = stats::setNames(lapply(terms, function(t) t$cnms),
                           vapply(terms, function(t) t$group, character(1))),
    Gp = as.integer(cumsum(c(0, vapply(terms, function(t) t$n_levels * t$k, numeric(1))))),
    l_i = stats::setNames(vapply(terms, function(t) as.integer(t$n_levels), integer(1)),
                          vapply(terms, function(t) t$group, character(1))),
    q_i = vapply(terms, function(t) as.integer(t$n_levels * t$k), integer(1)),
    k = , n_rtrms = length(terms),
    n_rfacs = length(unique(vapply(terms, function(t) t$factor_id, integer(1)))),
    N = , n = object$n,
    p = length(object$beta),
    q = as.integer(object$q),
    is_REML = isTRUE(object$REML),
    REML = if (isTRUE(object$REML)) length(object$beta) else 0L,
    devcomp = list(
      cmp = c(ldL2 = object$ldl2, ldRX2 = object$ldrx2, pwrss = object$pwrss,
              sigmaML = sqrt(object$pwrss / h_n_obs(object)),
              sigmaREML = sqrt(object$pwrss / (h_n_obs(object) - length(object$beta))),
              REML = if (isTRUE(object$REML)) object$objective else NA_real_,
              dev = if (isTRUE(object$REML)) NA_real_ else object$objective),
      dims = c(N = object$n, n = object$n, p = length(object$beta),
               nth = length(object$theta), q = object$q,
               nAGQ = NA_integer_, compDev = 1L, useSc = 1L,
               reTrms = length(terms), REML = if (isTRUE(object$REML)) length(object$beta) else 0L,
               GLMM = 0L, NLMM = 0L))
  )
}

#' Block-diagonal relative covariance factor Lambda (q x q), lme4's order
#' (term by term, level by level)
#' @noRd
h_lambda_matrix <- function(terms) {
  blocks <- lapply(terms, function(t) kronecker(diag(t$n_levels), t$lambda))
  q <- sum(vapply(blocks, nrow, integer(1)))
  out <- matrix(0, q, q)
  off <- 0L
  for (b in blocks) {
    i <- off + seq_len(nrow(b))
    out[i, i] <- b
    off <- off + nrow(b)
  }
  out
}

#' Grouping factors, one per distinct factor, as lme4's flist
#' @noRd
h_flist <- function(object) {
  terms <- object$re_terms
  fid <- vapply(terms, function(t) t$factor_id, integer(1))
  first <- terms[!duplicated(fid)]
  out <- lapply(first, function(t) factor(t$levels[t$codes + 1L], levels = t$levels))
  names(out) <- vapply(first, function(t) t$group, character(1))
  out
}

#' @rdname lmmr-lme4
#' @exportS3Method lme4::isLMM
isLMM.lmmr <- function(x, ...) TRUE

#' @rdname lmmr-lme4
#' @exportS3Method lme4::isGLMM
isGLMM.lmmr <- function(x, ...) FALSE

#' @rdname lmmr-lme4
#' @exportS3Method lme4::isNLMM
isNLMM.lmmr <- function(x, ...) FALSE

#' @rdname lmmr-lme4
#' @exportS3Method lme4::isREML
isREML.lmmr <- function(x, ...) isTRUE(x$REML)

#' @rawNamespace S3method(lme4::refit, lmmr)
NULL

#' lmerTest's contest() conventions on top of lmmr's contest()
#' @rdname lmmr-lme4
#' @usage NULL
#' @rawNamespace S3method(lmerTest::contest, lmmr, h_lmertest_contest)
h_lmertest_contest <- function(model, L, rhs = 0, joint = TRUE, collect = TRUE,
                               confint = TRUE, level = 0.95,
                               check_estimability = FALSE,
                               ddf = c("Satterthwaite", "Kenward-Roger", "lme4"), ...) {
  ddf <- match.arg(ddf)
  if (ddf == "lme4") {
    h_abort("ddf = \"lme4\" is not available for contrasts (as in lmerTest); use \"Satterthwaite\" or \"Kenward-Roger\".",
            "ddf")
  }
  if (isTRUE(check_estimability) && length(model$dropped)) {
    h_abort("check_estimability = TRUE is not supported for fits with dropped (aliased) columns.",
            "argument")
  }
  Ls <- if (is.list(L)) L else list(L)
  one <- function(l) {
    if (!is.matrix(l)) l <- matrix(l, nrow = 1L)
    if (joint) {
      out <- contest(model, l, ddf = ddf, joint = TRUE, rhs = rhs)
      out$NumDF <- as.integer(out$NumDF)
      return(out)
    }
    out <- contest(model, l, ddf = ddf, joint = FALSE, rhs = rhs)
    if (confint) {
      h_check_level(level, "level")
      qt <- stats::qt(1 - (1 - level) / 2, out$df)
      ci <- data.frame(lower = out$Estimate - qt * out$`Std. Error`,
                       upper = out$Estimate + qt * out$`Std. Error`)
      out <- cbind(out[, 1:4], ci, out[, 5, drop = FALSE])
    }
    out
  }
  res <- lapply(Ls, one)
  if (!collect) return(res)
  out <- do.call(rbind, res)
  if (!is.null(names(Ls)) && all(vapply(res, nrow, integer(1)) == 1L)) {
    rownames(out) <- names(Ls)
  }
  out
}

#' @rdname lmmr-lme4
#' @usage NULL
#' @rawNamespace S3method(performance::r2, lmmr, h_performance_r2)
h_performance_r2 <- function(model, ...) performance::r2_nakagawa(model, ...)

#' @rdname lmmr-lme4
#' @exportS3Method performance::check_singularity
check_singularity.lmmr <- function(x, tolerance = 1e-5, ...) {
  any(abs(x$theta[x$lower == 0]) < tolerance)
}

#' @rdname lmmr-lme4
#' @param effects for `check_normality()`: `"fixed"` (Shapiro-Wilk test of
#'   the studentized residuals) or `"random"` (of each column of the
#'   conditional modes), as performance for lmer fits.
#' @exportS3Method performance::check_normality
check_normality.lmmr <- function(x, effects = c("fixed", "random"), ...) {
  effects <- match.arg(effects)
  test <- function(v) {
    v <- v[is.finite(v)]
    if (length(v) >= 5000L) suppressWarnings(stats::ks.test(v, "pnorm"))$p.value else
      stats::shapiro.test(v)$p.value
  }
  if (effects == "fixed") {
    p <- test(stats::rstudent(x))
    attr(p, "type") <- "residuals"
  } else {
    re <- ranef(x, condVar = FALSE)
    groups <- unlist(lapply(names(re), function(g) paste0(g, ": ", colnames(re[[g]]))))
    p <- unlist(lapply(names(re), function(g) vapply(re[[g]], test, numeric(1))),
                use.names = FALSE)
    attr(p, "type") <- "random effects"
    attr(p, "re_groups") <- groups
  }
  attr(p, "data") <- x
  attr(p, "object_name") <- deparse(substitute(x), width.cutoff = 500L)[1]
  attr(p, "effects") <- effects
  class(p) <- unique(c("check_normality", "see_check_normality", class(p)))
  p
}

#' @rdname refit
#' @export
refit.default <- function(object, newresp, ...) {
  h_require_for("lme4", "refit", object)
  if (missing(newresp)) lme4::refit(object, ...) else lme4::refit(object, newresp, ...)
}

#' Backward elimination of random and fixed effects (lmerTest's step())
#'
#' A method for lmerTest's `step()` generic: first the random-effect terms
#' are reduced one at a time as [ranova()] reduces them (the term with the
#' largest likelihood-ratio p-value above `alpha.random` goes), then the
#' fixed-effect terms that can be dropped ([drop1.lmmr()]: marginal terms,
#' F tests) are removed one at a time while their p-value is above
#' `alpha.fixed`. As lmerTest, the naive chi-square p-value is used for the
#' random terms. Unlike lmerTest, the last random-effect term is never
#' removed (lmmr fits mixed models only).
#'
#' @param object an `"lmmr"` fit.
#' @param ddf `"Satterthwaite"` or `"Kenward-Roger"` for the F tests.
#' @param alpha.random,alpha.fixed elimination thresholds.
#' @param reduce.fixed,reduce.random whether to reduce each part.
#' @param keep optional character vector of fixed-effect terms never to
#'   remove.
#' @param ... unused.
#' @return An object of class `"step_list"` (printed by lmerTest) with
#'   elements `random` and `fixed` (the elimination tables, column
#'   `Eliminated` giving the order of elimination, 0 for terms kept) and
#'   attributes `model` (the final fit, also `lmerTest::get_model()`) and
#'   `drop1` (its [drop1()] table).
#' @examples
#' if (requireNamespace("lmerTest", quietly = TRUE)) {
#'   fit <- lmm(sbp ~ clinic_urban * smoker + age + (1 | clinic_id),
#'              data = phaa_clinics)
#'   s <- lmerTest::step(fit)
#'   s
#'   formula(lmerTest::get_model(s))
#' }
#' @exportS3Method lmerTest::step
step.lmmr <- function(object, ddf = c("Satterthwaite", "Kenward-Roger"),
                      alpha.random = 0.1, alpha.fixed = 0.05, reduce.fixed = TRUE,
                      reduce.random = TRUE, keep, ...) {
  ddf <- match.arg(ddf)
  h_check_flag(reduce.fixed, "reduce.fixed")
  h_check_flag(reduce.random, "reduce.random")
  if (missing(keep)) keep <- character(0)
  env <- environment(object$formula_input %||% object$formula)
  if (is.null(env)) env <- parent.frame()
  model <- object
  rt <- ranova(model)
  cols <- c("npar", "logLik", "AIC", "LRT", "Df", "Pr(>Chisq)")
  rand <- cbind(Eliminated = NA_real_, rt[1, cols, drop = FALSE])
  n_el <- 0
  repeat {
    cand <- rt[-1, cols, drop = FALSE]
    p <- cand[["Pr(>Chisq)"]]
    sp <- h_split_bars(model$formula)
    stop_now <- !reduce.random || !nrow(cand) || all(is.na(p)) ||
      max(p, na.rm = TRUE) <= alpha.random
    i <- if (stop_now) NA else which.max(p)
    red <- h_ranova_reductions(model, sp$bars)
    # never remove the last random-effect term
    if (!is.na(i) && !length(h_apply_reduction(sp$bars, red[[i]]))) stop_now <- TRUE
    if (stop_now) {
      rand <- rbind(rand, cbind(Eliminated = rep(0, nrow(cand)), cand))
      break
    }
    n_el <- n_el + 1
    rand <- rbind(rand, cbind(Eliminated = n_el, cand[i, , drop = FALSE]))
    bars <- h_apply_reduction(sp$bars, red[[i]])
    newf <- h_join_formula(model$formula, sp$fixed, bars)
    model <- suppressMessages(h_refit_call(model, list(formula = newf), env))
    rt <- ranova(model)
  }
  attr(rand, "heading") <- "Backward reduced random-effect table:\n"
  class(rand) <- c("anova", "data.frame")
  d1 <- drop1(model, ddf = ddf)
  fixed <- NULL
  n_el <- 0
  repeat {
    cand <- d1[!rownames(d1) %in% keep, , drop = FALSE]
    p <- cand[["Pr(>F)"]]
    if (!reduce.fixed || !nrow(cand) || all(is.na(p)) || max(p, na.rm = TRUE) <= alpha.fixed) break
    i <- which.max(p)
    n_el <- n_el + 1
    fixed <- rbind(fixed, cbind(Eliminated = n_el, cand[i, , drop = FALSE]))
    newf <- stats::update.formula(model$formula, paste(". ~ . -", rownames(cand)[i]))
    model <- suppressMessages(h_refit_call(model, list(formula = newf), env))
    d1 <- drop1(model, ddf = ddf)
  }
  fixed <- rbind(fixed, cbind(Eliminated = rep(0, nrow(d1)), as.data.frame(d1)))
  attr(fixed, "heading") <- c("Backward reduced fixed-effect table:",
                              sprintf("Degrees of freedom method: %s \n", ddf))
  class(fixed) <- c("anova", "data.frame")
  structure(list(random = rand, fixed = fixed), model = model, drop1 = d1,
            class = "step_list")
}

