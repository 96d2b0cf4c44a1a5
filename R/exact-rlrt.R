# Exact (restricted) likelihood-ratio tests for one variance component:
# the finite-sample null distribution of Crainiceanu & Ruppert (2004),
# simulated from its spectral representation (as RLRsim::exactRLRT and
# exactLRT), no refitting involved.

#' Exact restricted likelihood-ratio test for one variance component
#'
#' Tests `H0: variance = 0` for a random effect with the exact finite-sample
#' null distribution of the restricted likelihood-ratio statistic
#' (Crainiceanu and Ruppert, 2004), as `RLRsim::exactRLRT()`. Under H0
#' (with one random-effect term `(1 | g)` or `(0 + x | g)` and i.i.d.
#' errors)
#' \deqn{RLRT = \sup_{\lambda \ge 0} (n - p) \log(1 + N(\lambda) /
#' D(\lambda)) - \sum_s \log(1 + \lambda \mu_s)}
#' with \eqn{N(\lambda) = \sum_s \lambda\mu_s/(1+\lambda\mu_s) w_s^2},
#' \eqn{D(\lambda) = \sum_s w_s^2/(1+\lambda\mu_s) + \chi^2_{n-p-K}},
#' \eqn{w_s} independent standard normals and \eqn{\mu_s} the eigenvalues
#' of \eqn{Z'(I - H_X)Z}. The supremum is taken over a grid of
#' \eqn{\lambda} (the variance ratio), equidistant on the log scale, as
#' RLRsim; the p-value is the share of simulated values above the observed
#' statistic.
#'
#' One-model form: `m` has exactly one random-effect term with one column,
#' and the statistic compares it with the linear model without it. Three-model
#' form (several random effects): `m` is a model with only the random
#' effect to test, `mA` the full model and `m0` the full model without it
#' (same fixed effects); the statistic is `2 (logLik(mA) - logLik(m0))`
#' (REML) and its null distribution the one of `m`. ML fits are refitted
#' by REML (with a message).
#'
#' @param m an `"lmmr"` fit with a single random-effect term with a single
#'   column.
#' @param mA,m0 for the three-model form: the full model and the full
#'   model without the tested random effect (`"lmmr"` fits).
#' @param nsim number of values simulated from the null distribution.
#' @param seed `NULL` or an integer for [set.seed()] (the caller's random
#'   number stream is restored afterwards).
#' @param log.grid.hi,log.grid.lo,gridlength the grid of variance ratios:
#'   0 and `gridlength - 1` values equidistant on the log scale between
#'   `exp(log.grid.lo)` and `exp(log.grid.hi)` (RLRsim's defaults).
#' @return An object of class `"htest"`: `statistic` (`RLRT`), `p.value`,
#'   `method`, and `sample` (the simulated null values; `NULL` when the
#'   observed statistic is 0 and no simulation is needed, p-value 1).
#' @references Crainiceanu, C. and Ruppert, D. (2004). Likelihood ratio
#'   tests in linear mixed models with one variance component. *Journal of
#'   the Royal Statistical Society B* 66, 165-185.
#' @seealso [exact_lrt()], [ranova()], [anova.lmmr()] with `test = "PB"`.
#' @examples
#' fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
#' exact_rlrt(fit, nsim = 2000, seed = 1)
#' # three-model form: test the slope variance next to the intercept
#' mA <- lmm(Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), data = sleepstudy)
#' m0 <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
#' m <- lmm(Reaction ~ Days + (0 + Days | Subject), data = sleepstudy)
#' exact_rlrt(m, mA, m0, nsim = 2000, seed = 1)
#' @export
exact_rlrt <- function(m, mA = NULL, m0 = NULL, nsim = 10000, seed = NULL,
                       log.grid.hi = 8, log.grid.lo = -10, gridlength = 200) {
  h_check_lmm(m, "m")
  nsim <- h_check_nsim(nsim)
  grid <- h_rlrt_grid(log.grid.lo, log.grid.hi, gridlength)
  if (is.null(mA) != is.null(m0)) {
    h_abort("Give both `mA` and `m0` (three-model form) or neither.", "argument")
  }
  sp <- h_rlrt_spectrum(m)
  if (is.null(mA)) {
    m <- h_as_reml(m, "m")
    obj0 <- h_fit_design(h_design_from_fit(m, m$y), REML = TRUE,
                         control = m$control %||% lmm_control(),
                         theta = 0, optimize = FALSE)$objective
    stat <- max(0, obj0 - m$objective)
  } else {
    h_check_lmm(mA, "mA")
    h_check_lmm(m0, "m0")
    h_check_same_data(list(m, mA, m0))
    if (!identical(dim(mA$X), dim(m0$X)) || any(mA$X != m0$X)) {
      h_abort("The fixed effects of `mA` and `m0` differ; a REML-based test needs the same fixed effects.",
              "argument")
    }
    if (h_npar(mA) - h_npar(m0) != 1L) {
      h_abort(sprintf("`mA` has %d more parameters than `m0`; exact_rlrt() tests a single variance (no covariances set to zero under H0).",
                      h_npar(mA) - h_npar(m0)), "argument")
    }
    mA <- h_as_reml(mA, "mA")
    m0 <- h_as_reml(m0, "m0")
    stat <- max(0, m0$objective - mA$objective)
  }
  # differences below the optimiser's accuracy are a zero statistic
  if (stat < 1e-7) stat <- 0
  if (stat == 0) {
    h_inform("Observed RLRT statistic is 0, no simulation performed.", "rlrt_zero")
    return(h_rlrt_htest(c(RLRT = 0), 1, 0, NULL, "RLRT"))
  }
  rng <- h_sim_seed(seed)
  on.exit(h_restore_seed(rng), add = TRUE)
  sample <- h_rlrt_simulate(sp, nsim, grid, reml = TRUE)
  h_rlrt_htest(c(RLRT = stat), mean(stat < sample), nsim, sample, "RLRT")
}

#' Exact likelihood-ratio test for one variance component (and fixed effects)
#'
#' As `RLRsim::exactLRT()`: the exact finite-sample null distribution of the
#' (ML) likelihood-ratio statistic comparing a model `m` with one
#' random-effect term (one column) with a linear model `m0` without it,
#' whose fixed effects may be a subset of those of `m` (q restrictions).
#' Under H0 (Crainiceanu and Ruppert, 2004)
#' \deqn{LRT = n \log(1 + \chi^2_q / \sum_{s=1}^{n-p} w_s^2) +
#' \sup_{\lambda \ge 0} n \log(1 + N(\lambda)/D(\lambda)) -
#' \sum_s \log(1 + \lambda \xi_s)}
#' with \eqn{N}, \eqn{D} as in [exact_rlrt()] and \eqn{\xi_s} the eigenvalues
#' of \eqn{Z'Z}. A REML fit `m` is refitted by ML (with a message).
#'
#' @param m an `"lmmr"` fit with a single random-effect term with a single
#'   column.
#' @param m0 a linear model fitted by [stats::lm()] to the same
#'   observations, nested in `m`.
#' @inheritParams exact_rlrt
#' @return An object of class `"htest"` (`statistic` `LRT`, `p.value`,
#'   `method`, `sample`).
#' @seealso [exact_rlrt()]
#' @examples
#' fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy, REML = FALSE)
#' exact_lrt(fit, lm(Reaction ~ 1, data = sleepstudy), nsim = 2000, seed = 1)
#' @export
exact_lrt <- function(m, m0, nsim = 10000, seed = NULL, log.grid.hi = 8,
                      log.grid.lo = -10, gridlength = 200) {
  h_check_lmm(m, "m")
  if (!h_is_lm(m0)) h_abort("`m0` must be a linear model fitted by lm().", "argument")
  nsim <- h_check_nsim(nsim)
  grid <- h_rlrt_grid(log.grid.lo, log.grid.hi, gridlength)
  sp <- h_rlrt_spectrum(m)
  if (h_fit_n(m0) != m$n) {
    h_abort("`m` and `m0` were not fitted to the same observations.", "data_mismatch")
  }
  q <- ncol(m$X) - m0$rank
  if (q < 0) h_abort("`m0` is not nested in `m` (it has more fixed effects).", "argument")
  if (q == 0) h_inform("No restrictions on fixed effects; the REML-based exact_rlrt() is preferable.", "rlrt_reml")
  if (isTRUE(m$REML)) {
    h_inform("Refitting `m` by ML for the likelihood-ratio test.", "refit")
    m <- suppressMessages(refit.lmmr(m, m$y, REML = FALSE))
  }
  stat <- max(0, 2 * (as.numeric(logLik.lmmr(m)) -
                       as.numeric(stats::logLik(m0, REML = FALSE))))
  rng <- h_sim_seed(seed)
  on.exit(h_restore_seed(rng), add = TRUE)
  sample <- h_rlrt_simulate(sp, nsim, grid, reml = FALSE, q = q)
  h_rlrt_htest(c(LRT = stat), mean(stat < sample), nsim, sample, "LRT")
}

#' REML version of a fit (refitted with a message when it is ML)
#' @noRd
h_as_reml <- function(f, name) {
  if (isTRUE(f$REML)) return(f)
  h_inform(sprintf("Refitting `%s` by REML for the restricted likelihood-ratio test.", name),
           "refit")
  suppressMessages(refit.lmmr(f, f$y, REML = TRUE))
}

#' The grid of variance ratios
#' @noRd
h_rlrt_grid <- function(lo, hi, length) {
  h_check_number(lo, "log.grid.lo")
  h_check_number(hi, "log.grid.hi")
  h_check_number(length, "gridlength", lower = 3)
  if (hi <= lo) h_abort("`log.grid.hi` must be larger than `log.grid.lo`.", "argument")
  c(0, exp(seq(lo, hi, length.out = as.integer(length) - 1L)))
}

#' Eigenvalues the null distribution depends on: mu (of Z'(I - H)Z) and xi
#' (of Z'Z), both scaled by the largest of them, for the one random-effect
#' term of `m` (rows weighted by sqrt(prior weights))
#' @noRd
h_rlrt_spectrum <- function(m) {
  terms <- m$re_terms
  if (length(terms) != 1L || terms[[1]]$k != 1L) {
    h_abort("exact_rlrt() and exact_lrt() need `m` with a single random-effect term with one column, such as (1 | g); for several random effects use the three-model form exact_rlrt(m, mA, m0), where `m` has only the random effect to test.",
            "argument")
  }
  t <- terms[[1]]
  sw <- sqrt(m$weights)
  X <- m$X * sw
  z <- drop(t$Z) * sw
  G <- t$n_levels
  g <- t$codes + 1L
  ztz <- tapply(z^2, factor(g, levels = seq_len(G)), sum)
  ztz[is.na(ztz)] <- 0
  ZtX <- rowsum(X * z, g, reorder = TRUE)
  full <- matrix(0, G, ncol(X))
  full[sort(unique(g)), ] <- ZtX
  qx <- qr(X)
  if (qx$rank < ncol(X)) h_abort("The fixed-effects design is rank deficient.", "argument")
  Rinv <- backsolve(qr.R(qx), diag(ncol(X)))
  B <- full[, qx$pivot, drop = FALSE] %*% Rinv
  A <- diag(as.numeric(ztz), G) - tcrossprod(B)
  mu <- eigen((A + t(A)) / 2, symmetric = TRUE, only.values = TRUE)$values
  xi <- as.numeric(ztz)
  top <- max(mu, xi)
  mu <- mu / top
  xi <- xi / top
  mu <- mu[mu > 1e-10 * max(mu)]
  xi <- xi[xi > 0]
  list(mu = mu, xi = xi, n = m$n, p = ncol(X))
}

#' Simulate the null distribution (grid maximisation, vectorised over
#' chunks of simulations)
#' @noRd
h_rlrt_simulate <- function(sp, nsim, grid, reml = TRUE, q = 0L) {
  mu <- sp$mu
  K <- length(mu)
  n <- sp$n
  p <- sp$p
  df_rest <- max(0L, n - p - K)
  nn <- if (reml) n - p else n
  lm <- outer(mu, grid)
  A <- lm / (1 + lm)
  B <- 1 / (1 + lm)
  pen <- if (reml) colSums(log1p(lm)) else colSums(log1p(outer(sp$xi, grid)))
  out <- numeric(nsim)
  chunk <- max(1L, min(nsim, 2000L))
  done <- 0L
  while (done < nsim) {
    nb <- min(chunk, nsim - done)
    w2 <- matrix(stats::rchisq(nb * K, 1), nb, K)
    rest <- if (df_rest > 0) stats::rchisq(nb, df_rest) else numeric(nb)
    N <- w2 %*% A
    D <- w2 %*% B + rest
    f <- nn * log1p(N / D) - rep(pen, each = nb)
    val <- pmax(0, f[cbind(seq_len(nb), max.col(f, ties.method = "first"))])
    if (!reml) {
      tot <- rowSums(w2) + rest
      u <- if (q > 0) stats::rchisq(nb, q) else numeric(nb)
      val <- val + n * log1p(u / tot)
    }
    out[done + seq_len(nb)] <- val
    done <- done + nb
  }
  out
}

#' @noRd
h_rlrt_htest <- function(stat, p, nsim, sample, what) {
  if (!is.null(sample) && stats::quantile(sample, 0.9) == 0) {
    h_warn(sprintf("Null distribution has mass %g at zero.", mean(sample == 0)),
           "rlrt_mass_at_zero")
  }
  structure(list(
    statistic = stat, p.value = p,
    method = sprintf("simulated finite sample distribution of %s (Crainiceanu & Ruppert 2004); p-value based on %d simulated values",
                     what, as.integer(nsim)),
    sample = sample
  ), class = "htest")
}
