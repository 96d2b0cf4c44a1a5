# Shared by the tests and bench/fuzz/fuzz.R (which sources this file).

# -2 log L of an lme4 fit's model at `theta` (REML criterion or ML deviance),
# computed densely from lme4's X, Z and Lambda template with the n x n
# marginal covariance: an independent referee for both packages' values
# (each is only as accurate as its own sparse or blocked algebra).
dense_criterion <- function(fit, theta) {
  X <- lme4::getME(fit, "X")
  y <- lme4::getME(fit, "y") - lme4::getME(fit, "offset")
  w <- stats::weights(fit)
  Lt <- lme4::getME(fit, "Lambdat")
  Lt@x <- theta[lme4::getME(fit, "Lind")]
  ZL <- as.matrix(Matrix::crossprod(lme4::getME(fit, "Zt"), Matrix::t(Lt)))
  n <- length(y)
  p <- ncol(X)
  R <- chol(diag(1 / w, n) + tcrossprod(ZL))
  Xs <- backsolve(R, X, transpose = TRUE)
  ys <- backsolve(R, y, transpose = TRUE)
  sc <- sqrt(colSums(Xs^2))
  qx <- qr(sweep(Xs, 2, sc, "/"))
  rss <- sum(qr.resid(qx, ys)^2)
  reml <- lme4::isREML(fit)
  nn <- if (reml) n - p else n
  out <- nn * (1 + log(2 * pi * rss / nn)) + 2 * sum(log(diag(R)))
  if (reml) out <- out + 2 * sum(log(abs(diag(qr.R(qx))))) + 2 * sum(log(sc))
  out
}

