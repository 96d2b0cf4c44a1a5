# Shared by the tests and bench/fuzz/fuzz.R (which sources this file).

# -2 log L of an lme4 fit's model at `theta` (REML criterion or ML deviance),
# an independent referee for both packages' values (each is only as accurate
# as its own sparse or blocked algebra). Dense Householder QR of the
# penalised least-squares problem
#   min || [W^1/2 y; 0] - [W^1/2 Z Lambda, W^1/2 X; I, 0] [u; beta] ||^2,
# in two stages (the Z Lambda block, then X in the remaining rows), which
# stays accurate for large theta where the n x n marginal covariance
# I + Z Lambda Lambda' Z' is too ill-conditioned to factorise. X's columns
# are scaled for its QR and the scales added back to log |R_X|^2.
dense_criterion <- function(fit, theta) {
  pt <- if (inherits(fit, "merMod")) dense_parts(fit) else fit
  X <- pt$X
  y <- pt$y
  sw <- sqrt(pt$w)
  Lt <- pt$Lambdat
  Lt@x <- theta[pt$Lind]
  ZL <- as.matrix(Matrix::crossprod(pt$Zt, Matrix::t(Lt)))
  n <- length(y)
  p <- ncol(X)
  q <- ncol(ZL)
  # y minus its least-squares fit on X (twice, for the digits a response far
  # from zero loses): a shift within the span of X leaves the criterion
  # unchanged, and the QR below then works on the part that matters
  if (p > 0) {
    qx0 <- qr(X)
    for (i in 1:2) y <- y - drop(X %*% qr.coef(qx0, y))
  }
  qa <- qr(rbind(sw * ZL, diag(q)), LAPACK = TRUE)
  ld_l2 <- 2 * sum(log(abs(diag(qa$qr)[seq_len(q)])))
  rest <- qr.qty(qa, rbind(cbind(sw * X, sw * y), matrix(0, q, p + 1)))[-seq_len(q), , drop = FALSE]
  ld_rx2 <- 0
  r <- rest[, p + 1]
  if (p > 0) {
    sc <- sqrt(colSums(rest[, seq_len(p), drop = FALSE]^2))
    qx <- qr(sweep(rest[, seq_len(p), drop = FALSE], 2, sc, "/"), LAPACK = TRUE)
    ld_rx2 <- 2 * sum(log(abs(diag(qx$qr)[seq_len(p)]))) + 2 * sum(log(sc))
    r <- qr.qty(qx, r)[-seq_len(p)]
  }
  pwrss <- sum(r^2)
  reml <- pt$REML
  nn <- if (reml) n - p else n
  out <- ld_l2 + nn * (1 + log(2 * pi * pwrss / nn)) - 2 * sum(log(sw))
  if (reml) out <- out + ld_rx2
  out
}

# What dense_criterion() needs of an lme4 fit (the fuzz harness caches it).
dense_parts <- function(fit) {
  list(X = lme4::getME(fit, "X"),
       y = lme4::getME(fit, "y") - lme4::getME(fit, "offset"),
       w = stats::weights(fit), Zt = lme4::getME(fit, "Zt"),
       Lambdat = lme4::getME(fit, "Lambdat"), Lind = lme4::getME(fit, "Lind"),
       REML = lme4::isREML(fit))
}
