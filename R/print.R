# Printing in the familiar lme4 layout.

#' Random-effects table as a character matrix (Groups, Name, Variance,
#' Std.Dev., Corr)
#' @noRd
h_format_varcorr <- function(vc, digits = 4, comp = c("Variance", "Std.Dev.")) {
  rows <- list()
  for (i in seq_along(vc)) {
    cov <- vc[[i]]
    cn <- colnames(cov)
    k <- length(cn)
    sd <- attr(cov, "stddev")
    cor <- attr(cov, "correlation")
    block <- cbind(Groups = c(names(vc)[i], rep("", k - 1L)), Name = cn)
    if ("Variance" %in% comp) block <- cbind(block, Variance = format(diag(cov), digits = digits))
    if ("Std.Dev." %in% comp) block <- cbind(block, Std.Dev. = format(sd, digits = digits))
    if (k > 1) {
      cm <- matrix("", k, k - 1L)
      for (r in 2:k) for (c in seq_len(r - 1L)) cm[r, c] <- sprintf("%.2f", cor[r, c])
      colnames(cm) <- c("Corr", rep("", k - 2L))
      block <- list(block, cm)
    } else {
      block <- list(block, NULL)
    }
    rows[[i]] <- block
  }
  max_corr <- max(0L, vapply(rows, function(b) if (is.null(b[[2]])) 0L else ncol(b[[2]]), integer(1)))
  sc <- attr(vc, "sc")
  res_row <- c(Groups = "Residual", Name = "")
  if ("Variance" %in% comp) res_row <- c(res_row, Variance = format(sc^2, digits = digits))
  if ("Std.Dev." %in% comp) res_row <- c(res_row, Std.Dev. = format(sc, digits = digits))
  body <- lapply(rows, function(b) {
    m <- b[[1]]
    if (max_corr > 0) {
      extra <- matrix("", nrow(m), max_corr)
      if (!is.null(b[[2]])) extra[, seq_len(ncol(b[[2]]))] <- b[[2]]
      colnames(extra) <- c("Corr", rep("", max_corr - 1L))
      m <- cbind(m, extra)
    }
    m
  })
  res <- matrix(c(res_row, rep("", max_corr)), nrow = 1)
  out <- do.call(rbind, c(body, list(res)))
  colnames(out) <- c(names(res_row), if (max_corr > 0) c("Corr", rep("", max_corr - 1L)))
  rownames(out) <- rep("", nrow(out))
  # align numbers within columns
  for (j in 3:ncol(out)) out[, j] <- format(out[, j], justify = "right")
  out
}

#' One-line description of the grouping structure
#' @noRd
h_groups_line <- function(x) {
  terms <- x$re_terms
  fids <- vapply(terms, function(t) t$factor_id, integer(1))
  keep <- !duplicated(fids)
  ng <- vapply(terms[keep], function(t) t$n_levels, numeric(1))
  nm <- vapply(terms[keep], function(t) t$group, character(1))
  sprintf("Number of obs: %d, groups:  %s", x$n,
          paste(paste(nm, ng, sep = ", "), collapse = "; "))
}

#' @noRd
h_fit_header <- function(x) {
  cat(sprintf("Linear mixed model fit by %s ['lmm']\n",
              if (x$REML) "REML" else "maximum likelihood"))
  cat("Formula:", paste(deparse(x$formula, width.cutoff = 500L), collapse = " "), "\n")
  if (!is.null(x$call$data)) cat("   Data:", deparse(x$call$data), "\n")
  if (x$has_weights) cat("Weights:", deparse(x$call$weights), "\n")
}

#' @noRd
h_fit_footer <- function(x) {
  if (x$singular) cat("boundary (singular) fit: see help('is_singular')\n")
  if (!x$optinfo$converged) {
    cat("Optimiser did not converge:", x$optinfo$message, "\n")
  }
}

#' @export
print.lmm <- function(x, digits = max(3, getOption("digits") - 3), ...) {
  h_fit_header(x)
  if (x$REML) {
    cat(sprintf("REML criterion at convergence: %s\n", format(x$objective, nsmall = 3, digits = 7)))
  } else {
    ll <- logLik(x)
    cat(sprintf("     AIC      BIC   logLik deviance\n%8.4g %8.4g %8.4g %8.4g\n",
                stats::AIC(x), stats::BIC(x), as.numeric(ll), x$objective))
  }
  cat("Random effects:\n")
  print(h_format_varcorr(VarCorr(x), digits = digits, comp = "Std.Dev."),
        quote = FALSE, right = FALSE)
  cat(h_groups_line(x), "\n")
  cat("Fixed Effects:\n")
  print(format(x$beta, digits = digits), quote = FALSE)
  if (length(x$dropped)) {
    cat(sprintf("fit warnings:\nfixed-effect model matrix is rank deficient so dropping %d column(s): %s\n",
                length(x$dropped), paste(x$dropped, collapse = ", ")))
  }
  h_fit_footer(x)
  invisible(x)
}
