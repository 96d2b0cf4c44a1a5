# Printing in the familiar lme4 layout.

#' Random-effects table as a character matrix (Groups, Name, Variance,
#' Std.Dev., Corr); numbers of a column are formatted together, as lme4 does
#' @noRd
h_format_varcorr <- function(vc, digits = 4, comp = c("Variance", "Std.Dev.")) {
  groups <- names(vc)
  ks <- vapply(vc, ncol, integer(1))
  max_corr <- max(0L, ks - 1L)
  grp <- unlist(lapply(seq_along(vc), function(i) c(groups[i], rep("", ks[i] - 1L))))
  nm <- unlist(lapply(vc, colnames))
  vars <- unlist(lapply(vc, diag))
  sds <- unlist(lapply(vc, function(m) attr(m, "stddev")))
  sc <- attr(vc, "sc")
  out <- cbind(Groups = c(grp, "Residual"), Name = c(nm, ""))
  if ("Variance" %in% comp) out <- cbind(out, Variance = format(c(vars, sc^2), digits = digits))
  if ("Std.Dev." %in% comp) out <- cbind(out, Std.Dev. = format(c(sds, sc), digits = digits))
  if (max_corr > 0) {
    corr <- matrix("", length(grp) + 1L, max_corr)
    row0 <- 0L
    for (i in seq_along(vc)) {
      cor <- attr(vc[[i]], "correlation")
      if (ks[i] > 1) {
        for (r in 2:ks[i]) for (c in seq_len(r - 1L)) {
          corr[row0 + r, c] <- formatC(cor[r, c], digits = 2, format = "f")
        }
      }
      row0 <- row0 + ks[i]
    }
    colnames(corr) <- c("Corr", rep("", max_corr - 1L))
    out <- cbind(out, corr)
  }
  rownames(out) <- rep("", nrow(out))
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
  cat(sprintf("Linear mixed model fit by %s ['lmmr']\n",
              if (x$REML) "REML" else "maximum likelihood"))
  fml <- if (is.null(x$formula_input)) x$formula else x$formula_input
  cat("Formula:", paste(deparse(fml, width.cutoff = 500L), collapse = " "), "\n")
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
print.lmmr <- function(x, digits = max(3, getOption("digits") - 3), ...) {
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
