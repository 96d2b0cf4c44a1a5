# Cluster-robust (sandwich) covariance of the fixed effects, CR0-CR3, and
# the Satterthwaite (Bell-McCaffrey) degrees of freedom of its t tests, with
# the conventions of clubSandwich for lmer fits: the working covariance is
# the model's marginal covariance V (per cluster: Z_j Lambda Lambda' Z_j' +
# W_j^-1, relative to sigma^2), the bread is (X' V^-1 X)^-1, the residuals
# are the marginal residuals y - X beta, and the CR2 adjustment matrices are
# those of Bell & McCaffrey (2002) with V as the target. Everything is done
# per cluster (n_j x n_j blocks); no n x n matrix is formed.

#' Cluster-robust covariance of the fixed effects and its pieces
#'
#' @param object an `"lmmr"` fit.
#' @param type `"CR0"`, `"CR1"`, `"CR1p"`, `"CR1S"`, `"CR2"` or `"CR3"`.
#' @param cluster `NULL` (the grouping factor with the fewest levels), the
#'   name of a grouping factor or of a column of the model frame, or a vector
#'   with one value per observation used in the fit (or per row of the data
#'   when rows were dropped for missing values).
#' @return A list: `vcov` (p x p), `cluster` (factor), `G` and `H` (per
#'   cluster, for the degrees of freedom), `M`.
#' @noRd
h_vcov_cr <- function(object, type = "CR2", cluster = NULL) {
  h_check_lmm(object)
  type <- h_match_arg(type, c("CR0", "CR1", "CR1p", "CR1S", "CR2", "CR3"), "type")
  cl <- h_cr_cluster(object, cluster)
  J <- nlevels(cl)
  n <- object$n
  X <- object$X
  p <- ncol(X)
  s2 <- object$sigma^2
  M <- object$vcov / s2
  resid <- object$y - object$offset - drop(X %*% object$beta)
  rows <- split(seq_len(n), cl)
  scale <- switch(type, CR1 = sqrt(J / (J - 1)), CR1p = sqrt(J / (J - p)),
                  CR1S = sqrt(J * (n - 1) / ((J - 1) * (n - p))), 1)
  if (!is.finite(scale) || scale <= 0) {
    h_abort(sprintf("%s needs more clusters (%d) than fixed effects (%d).", type, J, p),
            "argument")
  }
  rel_cov <- lapply(object$re_terms, function(t) t$cov / s2)
  comps <- matrix(0, p, J)
  Gs <- vector("list", J)
  ML <- t(chol(M))
  Hs <- vector("list", J)
  for (j in seq_len(J)) {
    r <- rows[[j]]
    Xj <- X[r, , drop = FALSE]
    Vj <- h_cr_marginal_block(object, r, rel_cov)
    Rj <- chol(Vj)
    Wj <- chol2inv(Rj)
    XWj <- crossprod(Xj, Wj)
    Ej <- switch(type,
      CR2 = {
        Gj <- Rj %*% (Vj - Xj %*% M %*% t(Xj)) %*% t(Rj)
        XWj %*% (t(Rj) %*% h_sym_power(Gj, -1 / 2) %*% Rj)
      },
      CR3 = XWj %*% solve(diag(length(r)) - Xj %*% M %*% XWj),
      XWj * scale)
    comps[, j] <- Ej %*% resid[r]
    MEj <- M %*% Ej
    Gs[[j]] <- MEj %*% t(Rj)
    Hs[[j]] <- MEj %*% Xj %*% ML
  }
  V <- M %*% tcrossprod(comps) %*% M
  dimnames(V) <- list(colnames(X), colnames(X))
  list(vcov = V, cluster = cl, G = Gs, H = Hs, type = type)
}

#' Marginal covariance (relative to sigma^2) of the rows `r` of one cluster
#' @noRd
h_cr_marginal_block <- function(object, r, rel_cov) {
  V <- diag(1 / object$weights[r], length(r))
  for (t in seq_along(object$re_terms)) {
    term <- object$re_terms[[t]]
    Zr <- term$Z[r, , drop = FALSE]
    codes <- term$codes[r]
    V <- V + (Zr %*% rel_cov[[t]] %*% t(Zr)) * outer(codes, codes, "==")
  }
  V
}

#' Symmetric matrix power through the eigen decomposition, eigenvalues
#' below 1e-12 set to zero (a generalised inverse square root for CR2)
#' @noRd
h_sym_power <- function(x, pow) {
  e <- eigen((x + t(x)) / 2, symmetric = TRUE)
  vals <- ifelse(e$values > 1e-12, e$values^pow, 0)
  e$vectors %*% (vals * t(e$vectors))
}

#' The clustering factor (rows of the fit), checked: at least two clusters
#' and every grouping factor of the model nested in it
#' @noRd
h_cr_cluster <- function(object, cluster) {
  terms <- object$re_terms
  n <- object$n
  if (is.null(cluster)) {
    if (!length(terms)) {
      h_abort("The model has no grouping factor; give `cluster`.", "argument")
    }
    nl <- vapply(terms, function(t) t$n_levels, numeric(1))
    t <- terms[[which.min(nl)]]
    cl <- t$codes
    attr(cl, "name") <- t$group
  } else if (is.character(cluster) && length(cluster) == 1L && n != 1L) {
    groups <- vapply(terms, function(t) t$group, character(1))
    if (cluster %in% groups) {
      cl <- terms[[match(cluster, groups)]]$codes
    } else if (!is.null(object$frame) && cluster %in% names(object$frame)) {
      cl <- object$frame[[cluster]]
    } else {
      h_abort(sprintf("`cluster` \"%s\" is neither a grouping factor of the model (%s) nor a column of its model frame; pass the clustering variable itself.",
                      cluster, paste(groups, collapse = ", ")), "argument")
    }
  } else {
    cl <- cluster
    na <- object$na_action
    if (length(cl) != n && !is.null(na) && length(cl) == n + length(na)) {
      cl <- cl[-as.integer(na)]
    }
    if (length(cl) != n) {
      h_abort(sprintf("`cluster` must have one value per observation used in the fit (%d), not %d.",
                      n, length(cl)), "argument")
    }
  }
  if (anyNA(cl)) h_abort("`cluster` must not contain missing values.", "argument")
  cl <- droplevels(as.factor(cl))
  if (nlevels(cl) < 2L) {
    h_abort("Cluster-robust standard errors need at least two clusters.", "argument")
  }
  for (t in terms) {
    per_level <- tapply(as.integer(cl), t$codes, function(v) length(unique(v)))
    if (any(per_level > 1L)) {
      h_abort(sprintf("The grouping factor %s is not nested within the clusters; cluster-robust standard errors need every random effect within one cluster (cluster on %s or a coarser factor).",
                      t$group, t$group), "argument")
    }
  }
  cl
}

#' Satterthwaite (Bell-McCaffrey) degrees of freedom of each coefficient's
#' robust t test, as clubSandwich::coef_test(test = "Satterthwaite")
#'
#' For coefficient i, with g_ji the i-th row of M E_j R_j' and h_ji the
#' i-th row of M E_j X_j L (L L' = M), the J x J matrix P has entries
#' delta_jk |g_ji|^2 - h_ji . h_ki; df = tr(P)^2 / ||P||_F^2, computed
#' without forming P.
#' @noRd
h_cr_satterthwaite <- function(cr) {
  p <- nrow(cr$vcov)
  vapply(seq_len(p), function(i) {
    g2 <- vapply(cr$G, function(g) sum(g[i, ]^2), numeric(1))
    Hi <- do.call(rbind, lapply(cr$H, function(h) h[i, ]))
    if (is.null(dim(Hi))) Hi <- matrix(Hi, ncol = 1L)
    h2 <- rowSums(Hi^2)
    tr <- sum(g2) - sum(h2)
    ss <- sum(g2^2) - 2 * sum(g2 * h2) + sum(crossprod(Hi)^2)
    tr^2 / ss
  }, numeric(1))
}

#' Coefficient table with cluster-robust standard errors and Satterthwaite
#' df (summary(fit, vcov = "CR2"))
#' @noRd
h_coef_table_cr <- function(object, type, cluster) {
  cr <- h_vcov_cr(object, type, cluster)
  beta <- object$beta
  se <- sqrt(diag(cr$vcov))
  df <- h_cr_satterthwaite(cr)
  tval <- beta / se
  list(coefficients = cbind(Estimate = beta, `Std. Error` = se, df = df,
                            `t value` = tval,
                            `Pr(>|t|)` = 2 * stats::pt(abs(tval), df, lower.tail = FALSE)),
       vcov = cr$vcov, type = cr$type, n_clusters = nlevels(cr$cluster))
}
