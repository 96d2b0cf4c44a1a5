# Profile-likelihood confidence intervals for the variance components.
#
# Method (Bates, Maechler, Bolker & Walker 2015, JSS 67(1), section 5.1): the
# parameters are the random-effect standard deviations and correlations and
# the residual standard deviation. For one parameter fixed at a value, the
# deviance is minimised over all the others; the signed square root of the
# increase over the global minimum, zeta, is (approximately) standard normal,
# and the interval ends are where |zeta| reaches sqrt(qchisq(level, 1)). The
# ends are found by bracketing and root finding on the profile itself.
#
# The inner minimisations run over lme4's theta (the relative Cholesky
# factor, lower bounds 0 on its diagonal), which is feasible for any number
# of random-effect columns; the fixed parameter enters through a map of the
# free theta: fixing a standard deviation sets sigma = value / (norm of the
# component's row of Lambda); fixing a correlation rotates that row of Lambda
# to the required angle with the other row, keeping its length; fixing sigma
# is direct. Only Lambda %*% t(Lambda) matters, so columns of Lambda are
# sign-flipped to keep its diagonal non-negative.

#' Profile-likelihood confidence intervals for the variance components
#'
#' @param object an `"lmmr"` fit.
#' @param parm `NULL` (all variance components), or names among `".sig01"`,
#'   ..., `".sigma"` (also `"theta_"` for all), or indices into that list.
#' @param level confidence level.
#' @param REML `FALSE` (default) profiles the maximum-likelihood deviance, as
#'   lme4 1.1-31 does for every fit (its `profile()` refits REML fits by ML
#'   first, so the intervals are around the ML estimates); `TRUE` profiles
#'   the REML criterion (intervals around the REML estimates).
#' @return A numeric matrix with one row per parameter (row names `.sig01`,
#'   ..., `.sigma`) and two columns (`"2.5 %"`, `"97.5 %"` for level 0.95).
#'   A standard deviation whose profile at 0 stays below the cutoff gets
#'   lower limit 0; a correlation whose profile at -1 or 1 stays below the
#'   cutoff gets limit -1 or 1. Attribute `"estimates"`: the parameters at
#'   the optimum of the profiled criterion.
#' @noRd
h_confint_profile <- function(object, parm = NULL, level = 0.95, REML = FALSE) {
  h_check_lmm(object)
  if (!is.numeric(level) || length(level) != 1L || !is.finite(level) ||
      level <= 0 || level >= 1) {
    h_abort("`level` must be a single number between 0 and 1.", "argument")
  }
  ctx <- h_prof_context(object, REML = isTRUE(REML))
  all_names <- ctx$names
  if (is.null(parm) || identical(parm, "theta_")) {
    idx <- seq_along(all_names)
  } else if (is.numeric(parm)) {
    idx <- as.integer(parm)
    if (anyNA(idx) || any(idx < 1L | idx > length(all_names))) {
      h_abort(sprintf("`parm` indices must be between 1 and %d (the variance components %s).",
                      length(all_names), paste(all_names, collapse = ", ")),
              "argument")
    }
  } else if (is.character(parm)) {
    idx <- match(parm, all_names)
    if (anyNA(idx)) {
      h_abort(sprintf("Unknown variance component(s) in `parm`: %s. Profile intervals are available for %s.",
                      paste(parm[is.na(idx)], collapse = ", "),
                      paste(all_names, collapse = ", ")), "argument")
    }
  } else {
    h_abort("`parm` must be NULL, a character vector or numeric indices.",
            "argument")
  }
  cutoff <- sqrt(stats::qchisq(level, 1))
  out <- matrix(NA_real_, length(idx), 2L)
  for (r in seq_along(idx)) {
    out[r, ] <- h_prof_interval(ctx, idx[r], cutoff)
  }
  a <- (1 - level) / 2
  colnames(out) <- sprintf("%s %%", format(100 * c(a, 1 - a), trim = TRUE,
                                           scientific = FALSE, digits = 3))
  rownames(out) <- all_names[idx]
  attr(out, "estimates") <- stats::setNames(ctx$est, all_names)
  out
}

#' Everything the profiles need: layout of the parameters, deviance
#' function, optimum
#' @noRd
h_prof_context <- function(object, REML) {
  control <- object$control
  if (is.null(control)) control <- lmm_control()
  layout <- h_prof_layout(object$re_terms)
  n <- h_n_obs(object)
  p <- object$p
  nn <- if (REML) n - p else n
  ldw <- h_log_w_sum(object)
  # every evaluation goes to the fit's kept model: one factorisation, no
  # random effects or fitted values
  ptr <- h_model_ptr(object)
  evaluate <- function(theta) {
    h_check_rust_result(rs_model_evaluate(ptr, as.numeric(theta), REML))
  }
  # deviance at theta: profiled over sigma when sigma is NULL
  devfun <- function(theta, sigma = NULL) {
    r <- evaluate(theta)
    if (is.null(sigma)) return(r$objective)
    base <- r$ldl2 + (if (REML) r$ldrx2 else 0) - ldw
    base + nn * log(2 * pi * sigma^2) + r$pwrss / sigma^2
  }
  theta0 <- as.numeric(object$theta)
  lower <- as.numeric(object$lower)
  if (!identical(isTRUE(object$REML), REML)) {
    res <- h_check_rust_result(rs_model_fit(
      ptr, reml = REML, max_iter = control$max_iter, tol = control$tol,
      theta_start = theta0, optimize = TRUE))
    theta0 <- as.numeric(res$theta)
  }
  # polish the optimum (the profiles must not find a lower deviance than the
  # base)
  dev0 <- devfun(theta0)
  pol <- h_prof_minimise(devfun, theta0, lower, rep(Inf, length(lower)))
  if (pol$objective < dev0) {
    theta0 <- pol$par
    dev0 <- pol$objective
  }
  r <- evaluate(theta0)
  sigma <- sqrt(r$pwrss / nn)
  phi <- h_prof_theta_to_phi(theta0, layout)
  ctx <- list(layout = layout, devfun = devfun, nn = nn, theta = theta0,
              lower = lower, phi = phi, sigma = sigma, dev0 = dev0,
              est = c(ifelse(layout$is_sd, phi * sigma, phi), sigma))
  np <- length(phi)
  ctx$names <- c(sprintf(".sig%02d", seq_len(np)), ".sigma")
  ctx
}

#' Parameter layout: one row per sd/correlation, lme4's order
#' @noRd
h_prof_layout <- function(re_terms) {
  rows <- list()
  for (t in seq_along(re_terms)) {
    k <- re_terms[[t]]$k
    if (is.null(k)) k <- length(re_terms[[t]]$cnms)
    for (j in seq_len(k)) {
      for (i in j:k) {
        rows[[length(rows) + 1L]] <- c(term = t, i = i, j = j, k = k)
      }
    }
  }
  m <- do.call(rbind, rows)
  is_sd <- m[, "i"] == m[, "j"]
  list(term = unname(m[, "term"]), i = unname(m[, "i"]), j = unname(m[, "j"]),
       k = unname(m[, "k"]), is_sd = unname(is_sd),
       n_terms = length(re_terms))
}

#' theta to relative sds/correlations (phi)
#' @noRd
h_prof_theta_to_phi <- function(theta, layout) {
  out <- numeric(length(layout$term))
  pos <- 0L
  for (t in seq_len(layout$n_terms)) {
    sel <- which(layout$term == t)
    k <- layout$k[sel[1L]]
    lambda <- h_lower_tri(theta[pos + seq_along(sel)], k)
    pos <- pos + length(sel)
    C <- tcrossprod(lambda)
    sds <- sqrt(diag(C))
    for (s in sel) {
      i <- layout$i[s]
      j <- layout$j[s]
      out[s] <- if (i == j) sds[i] else if (sds[i] > 0 && sds[j] > 0) {
        C[i, j] / (sds[i] * sds[j])
      } else 0
    }
  }
  out
}

#' Bounded minimisation (nlminb) that also copes with no free parameters
#' @noRd
h_prof_minimise <- function(fn, start, lower, upper) {
  if (length(start) == 0L) return(list(par = start, objective = fn(start)))
  start <- pmin(pmax(start, lower), upper)
  safe <- function(x) {
    v <- fn(pmin(pmax(x, lower), upper))
    if (!is.finite(v)) 1e100 else v
  }
  res <- stats::nlminb(start, safe, lower = lower, upper = upper,
                       control = list(eval.max = 1000L, iter.max = 500L,
                                      rel.tol = 1e-12))
  list(par = pmin(pmax(res$par, lower), upper), objective = res$objective)
}

#' Positions in theta of the entries of term t
#' @noRd
h_prof_term_pos <- function(layout, t) which(layout$term == t)

#' Map the free theta to the theta with parameter m fixed at `value`, and
#' the sigma to use (NULL: profiled out)
#' @noRd
h_prof_map <- function(ctx, m, value, x) {
  layout <- ctx$layout
  np <- length(ctx$phi)
  if (m == np + 1L) return(list(theta = x, sigma = value))
  pos <- h_prof_term_pos(layout, layout$term[m])
  k <- layout$k[m]
  i <- layout$i[m]
  j <- layout$j[m]
  L <- h_lower_tri(x[pos], k)
  if (i == j) {
    if (value <= 0) {
      L[i, ] <- 0
      x[pos] <- L[lower.tri(L, diag = TRUE)]
      return(list(theta = x, sigma = NULL))
    }
    r <- sqrt(sum(L[i, ]^2))
    if (!(r > 0)) return(NULL)
    return(list(theta = x, sigma = value / r))
  }
  # correlation between components i > j: rotate row i
  nj <- sqrt(sum(L[j, ]^2))
  w <- L[i, ]
  s <- sqrt(sum(w^2))
  if (nj > 0 && s > 0) {
    u <- L[j, ] / nj
    wp <- w - sum(w * u) * u
    nwp <- sqrt(sum(wp^2))
    if (nwp <= 1e-12 * s) {
      # w parallel to u: any direction orthogonal to u within the first i
      # coordinates
      e <- numeric(k)
      e[i] <- 1
      wp <- e - sum(e * u) * u
      nwp <- sqrt(sum(wp^2))
    }
    v <- wp / nwp
    L[i, ] <- s * (value * u + sqrt(max(1 - value^2, 0)) * v)
    sg <- ifelse(diag(L) < 0, -1, 1)
    L <- L * rep(sg, each = k)
    x[pos] <- L[lower.tri(L, diag = TRUE)]
  }
  list(theta = x, sigma = NULL)
}

#' Profiled deviance with parameter m (index among .sig01, ..., .sigma) fixed
#' at `value` on the absolute scale
#'
#' `cache` is an environment holding earlier solutions (free theta by fixed
#' value) used as warm starts.
#' @noRd
h_prof_fixed <- function(ctx, m, value, cache) {
  layout <- ctx$layout
  np <- length(ctx$phi)
  nth <- length(ctx$theta)
  is_sd <- m <= np && layout$is_sd[m]
  lower <- ctx$lower
  upper <- rep(Inf, nth)
  free <- seq_len(nth)
  start0 <- ctx$theta
  if (is_sd) {
    pos <- h_prof_term_pos(layout, layout$term[m])
    k <- layout$k[m]
    i <- layout$i[m]
    L <- h_lower_tri(start0[pos], k)
    if (value <= 0) {
      # the row of this component is fixed at 0
      row <- which(row(L)[lower.tri(L, diag = TRUE)] == i)
      free <- setdiff(free, pos[row])
    } else {
      # start with sigma as at the optimum: row scaled to the fixed sd
      r <- sqrt(sum(L[i, ]^2))
      if (r > 0) L[i, ] <- L[i, ] * value / (ctx$sigma * r) else
        L[i, i] <- value / ctx$sigma
      start0[pos] <- L[lower.tri(L, diag = TRUE)]
    }
  }
  fn <- function(xf) {
    x <- start0
    x[free] <- xf
    mp <- h_prof_map(ctx, m, value, x)
    if (is.null(mp)) return(Inf)
    ctx$devfun(mp$theta, mp$sigma)
  }
  lower <- lower[free]
  upper <- upper[free]
  start <- start0[free]
  warm <- length(cache$values) > 0L && !(is_sd && value <= 0)
  if (warm) {
    near <- which.min(abs(cache$values - value))
    start <- cache$pars[[near]]
    if (is_sd && cache$values[near] > 0) {
      # keep sigma as at the nearest solution
      Ls <- h_lower_tri(start[pos], k)
      Ls[i, ] <- Ls[i, ] * value / cache$values[near]
      start[pos] <- Ls[lower.tri(Ls, diag = TRUE)]
    }
  }
  res <- h_prof_minimise(fn, start, lower, upper)
  if (warm) {
    # guard against a poor local solution from the warm start
    s0 <- pmin(pmax(start0[free], lower), upper)
    if (fn(s0) < res$objective) {
      res2 <- h_prof_minimise(fn, s0, lower, upper)
      if (res2$objective < res$objective) res <- res2
    }
  }
  if (!(is_sd && value <= 0)) {
    cache$values <- c(cache$values, value)
    cache$pars <- c(cache$pars, list(res$par))
  }
  res$objective
}

#' Signed square root of the deviance increase, zeta
#' @noRd
h_prof_zeta <- function(ctx, m, value, cache) {
  est <- ctx$est[m]
  d <- h_prof_fixed(ctx, m, value, cache) - ctx$dev0
  sign(value - est) * sqrt(max(d, 0))
}

#' Both ends of the profile interval of parameter m
#' @noRd
h_prof_interval <- function(ctx, m, cutoff) {
  np <- length(ctx$phi)
  is_cor <- m <= np && !ctx$layout$is_sd[m]
  cache <- new.env()
  cache$values <- numeric(0)
  cache$pars <- list()
  c(h_prof_end(ctx, m, cutoff, -1, is_cor, cache),
    h_prof_end(ctx, m, cutoff, +1, is_cor, cache))
}

#' One end of a profile interval: bracket, then uniroot on zeta
#'
#' Standard deviations and sigma are searched on the log scale (where zeta
#' is close to linear), correlations on their own scale within [-1, 1].
#' @noRd
h_prof_end <- function(ctx, m, cutoff, dir, is_cor, cache) {
  est <- unname(ctx$est[m])
  target <- dir * cutoff
  z <- function(v) h_prof_zeta(ctx, m, v, cache)
  tol <- 1e-9
  if (is_cor) {
    bound <- dir * 1
    if (abs(est - bound) < 1e-8) return(bound)
    f <- function(v) z(v) - target
    step <- 0.1 * abs(bound - est)
    prev <- est
    f_prev <- -target
    repeat {
      v <- est + dir * step
      if (abs(v - est) >= abs(bound - est)) v <- bound
      fv <- f(v)
      if (dir * fv >= 0) break
      if (v == bound) return(bound)
      prev <- v
      f_prev <- fv
      step <- step * 3
    }
    return(stats::uniroot(f, sort(c(prev, v)),
                          f.lower = if (prev < v) f_prev else fv,
                          f.upper = if (prev < v) fv else f_prev,
                          tol = tol)$root)
  }
  is_sd <- m <= length(ctx$phi)
  f_log <- function(lx) z(exp(lx)) - target
  if (dir < 0 && est <= 0) return(0)
  if (dir < 0 && is_sd) {
    # lower end at the boundary when the profile at 0 stays below the cutoff
    if (abs(z(0)) < cutoff) return(0)
  }
  if (est <= 0) {
    # upper end of an sd estimated at 0: double from a scale of sigma
    prev <- 0
    f_prev <- -cutoff
    v <- 0.05 * ctx$sigma
    repeat {
      fv <- z(v) - cutoff
      if (fv >= 0) break
      prev <- v
      f_prev <- fv
      v <- v * 2
      if (v > 1e8 * ctx$sigma) return(Inf)
    }
    if (prev == 0) {
      return(stats::uniroot(function(x) z(x) - cutoff, c(0, v), f.lower = f_prev,
                            f.upper = fv, tol = tol * v)$root)
    }
    est_log <- log(prev)
    f_est <- f_prev
    lv <- log(v)
  } else {
    # log scale, expanding steps extrapolated from the current zeta
    est_log <- log(est)
    f_est <- -target
    step <- 0.1
    prev <- est_log
    f_prev <- f_est
    repeat {
      lv <- est_log + dir * step
      fv <- f_log(lv)
      if (dir * fv >= 0) break
      prev <- lv
      f_prev <- fv
      zv <- fv + target
      grow <- if (dir * zv > 0) min(max(1.1 * target / zv, 1.5), 8) else 4
      step <- step * grow
      if (step > 50) return(if (dir < 0) 0 else Inf)
    }
    est_log <- prev
    f_est <- f_prev
  }
  lo <- min(est_log, lv)
  hi <- max(est_log, lv)
  r <- stats::uniroot(f_log, c(lo, hi),
                      f.lower = if (est_log < lv) f_est else fv,
                      f.upper = if (est_log < lv) fv else f_est,
                      tol = tol)
  exp(r$root)
}
