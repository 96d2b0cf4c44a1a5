# "Maximal" crossed random-effect structures (issue 8): 56 subjects x 32
# items, 1,790 rows, a 2 x 2 x 2 within-subject and within-item design coded
# as seven +/-0.5 contrasts, so 8 random-effect columns per factor.
#   * `||` on both factors: 16 covariance parameters;
#   * full 8 x 8 covariance matrices on both factors: 72 parameters.
# Prints lmm and lme4::lmer times, criterion evaluations (lme4:
# fit@optinfo$feval; lmm: factorisations, of which `n_grad` also computed the
# analytic gradient), the criteria and the ratios, in one run.
# Run: Rscript bench/bench-maximal.R [--ml]
suppressPackageStartupMessages({
  library(lmmr)
  library(lme4)
})
reml <- !("--ml" %in% commandArgs(trailingOnly = TRUE))

make_maximal <- function(seed = 2024, n_subj = 56, n_item = 32) {
  set.seed(seed)
  d <- expand.grid(subj = seq_len(n_subj), item = seq_len(n_item))
  # Latin square: each subject sees each item in one of the 8 conditions.
  cond <- (d$subj + d$item) %% 8
  bits <- sapply(0:2, function(b) (cond %/% 2^b) %% 2 - 0.5)
  X <- cbind(bits, bits[, 1] * bits[, 2] * 2, bits[, 1] * bits[, 3] * 2,
             bits[, 2] * bits[, 3] * 2, bits[, 1] * bits[, 2] * bits[, 3] * 4)
  colnames(X) <- paste0("c", 1:7)
  Z <- cbind(1, X)
  sd_s <- c(0.6, 0.3, 0.25, 0.2, 0.1, 0.05, 0.1, 0.02)
  sd_i <- c(0.4, 0.2, 0.05, 0.15, 0.02, 0.1, 0.0, 0.05)
  corr <- function(r) {
    m <- matrix(r, 8, 8)
    diag(m) <- 1
    m
  }
  bs <- MASS_free_mvrnorm(n_subj, sd_s, corr(0.3))
  bi <- MASS_free_mvrnorm(n_item, sd_i, corr(-0.1))
  eta <- 0.5 + drop(X %*% c(0.3, -0.2, 0.1, 0.05, 0, 0.1, 0)) +
    rowSums(Z * bs[d$subj, ]) + rowSums(Z * bi[d$item, ])
  d <- data.frame(y = eta + rnorm(nrow(d)), X, subj = factor(d$subj), item = factor(d$item))
  d[-c(17, 1001), ]  # 1,790 rows
}

MASS_free_mvrnorm <- function(n, sds, r) {
  s <- diag(sds) %*% r %*% diag(sds)
  e <- eigen(s, symmetric = TRUE)
  z <- matrix(rnorm(n * 8), n, 8)
  z %*% t(e$vectors %*% diag(sqrt(pmax(e$values, 0))))
}

d <- make_maximal()
cols <- paste0("c", 1:7)
fe <- paste(cols, collapse = " + ")
forms <- list(
  "|| on both (16 params)" = as.formula(sprintf("y ~ %s + (%s || subj) + (%s || item)", fe, fe, fe)),
  "full 8x8 on both (72 params)" = as.formula(sprintf("y ~ %s + (%s | subj) + (%s | item)", fe, fe, fe))
)

crit_lmer <- function(f) if (reml) REMLcrit(f) else deviance(f)
rows <- list()
for (nm in names(forms)) {
  f <- forms[[nm]]
  t_lmm <- system.time(fit1 <- suppressWarnings(suppressMessages(lmm(f, data = d, REML = reml))))[["elapsed"]]
  t_lmer <- system.time(fit2 <- suppressWarnings(suppressMessages(lmer(f, data = d, REML = reml))))[["elapsed"]]
  c1 <- -2 * as.numeric(logLik(fit1))
  c2 <- crit_lmer(fit2)
  rows[[nm]] <- data.frame(
    model = nm, n = nrow(d), k = length(fit1$theta),
    lmm_s = t_lmm, lmer_s = t_lmer, time_ratio = t_lmm / t_lmer,
    lmm_evals = fit1$optinfo$n_eval, lmm_grads = fit1$optinfo$n_grad,
    lmer_evals = fit2@optinfo$feval,
    lmm_crit = c1, lmer_crit = c2, rel_crit_diff = (c1 - c2) / abs(c2),
    lmm_converged = fit1$optinfo$converged)
}
res <- do.call(rbind, rows)
cat(sprintf("%s criterion; targets: fewer evaluations than lme4, time ratio <= 0.1, rel_crit_diff <= 1e-6\n\n",
            if (reml) "REML" else "ML"))
print(res, digits = 10, row.names = FALSE)
