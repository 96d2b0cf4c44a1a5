# From a model design (h_model_design()) to a fitted "lmmr" object: one call
# into Rust, then assembly of plain R data.

#' Fit a design with the kept Rust model
#'
#' `engine` is the kept model of an earlier fit of the same design (see
#' [h_model_engine()]); without it a new one is built from `design`. The
#' result carries the engine in `$engine`.
#' @noRd
h_fit_design <- function(design, REML, control, theta = NULL,
                         optimize = TRUE, engine = NULL) {
  if (optimize) {
    bad <- h_unidentifiable_terms(design)
    if (length(bad)) {
      return(h_fit_without_terms(design, bad, REML, control, theta, engine))
    }
  }
  terms <- design$re$terms
  theta_start <- if (!is.null(theta)) theta else control$theta_start
  if (!is.null(theta_start)) {
    n_theta <- sum(vapply(terms, function(t) ncol(t$Z) * (ncol(t$Z) + 1) / 2,
                          numeric(1)))
    if (length(theta_start) != n_theta) {
      h_abort(sprintf("`theta` must have length %d (one value per element of the lower triangle of each term's relative covariance factor), not %d.",
                      n_theta, length(theta_start)), "argument")
    }
    theta_start <- as.numeric(theta_start)
  }
  # without an offset the response itself (no n-vector of y - 0)
  resp <- if (isFALSE(design$has_offset)) as.numeric(design$y) else
    as.numeric(design$y - design$offset)
  if (!is.environment(engine)) {
    engine <- h_model_engine(design, threads = control$threads, resp = resp)
  }
  ptr <- h_engine_ptr(engine, resp, function() design)
  res <- rs_model_fit(ptr, reml = REML, max_iter = control$max_iter,
                      tol = control$tol, theta_start = theta_start,
                      optimize = optimize,
                      # fits saved before the control existed have no max_time
                      max_time = if (is.null(control$max_time)) Inf else control$max_time,
                      restarts = !isFALSE(control$restarts))
  res <- h_check_rust_result(res)
  res$engine <- engine
  res
}

#' The kept model of a design: an environment holding the external pointer
#' to the Rust model (cross-product blocks and workspace, built once) and the
#' response currently loaded in it
#'
#' Fits share it with their refits (refit(), simulate-and-refit, boxcox(),
#' profiles, ML refits of LRTs); whoever uses the pointer first loads the
#' response it needs (h_engine_ptr()). The environment survives saveRDS() but
#' the pointer does not: it is rebuilt lazily from the plain data.
#' @noRd
h_model_engine <- function(design = NULL, threads = NULL, resp = NULL) {
  engine <- new.env(parent = emptyenv())
  # threads of the passes over the rows (NULL: all cores), kept for rebuilds
  engine$threads <- threads
  if (!is.null(design)) h_engine_build(engine, design, resp)
  engine
}

#' (Re)build the Rust model of a design into an engine
#' @param resp optional `design$y - design$offset` as double (computed if
#'   NULL).
#' @noRd
h_engine_build <- function(engine, design, resp = NULL) {
  x <- design$X
  # the Rust model keeps this matrix (no copy of its own): the fit's own X,
  # not a duplicate, where it is already double
  if (!is.double(x)) storage.mode(x) <- "double"
  re <- h_rust_re_args(design$re$terms)
  if (is.null(resp)) resp <- as.numeric(design$y - design$offset)
  # no prior weights: an empty vector (Rust reads it as all ones, with the
  # same numbers) instead of n ones
  w <- if (isFALSE(design$has_weights)) numeric(0) else as.numeric(design$weights)
  ptr <- rs_model_new(x = x, y = resp, weights = w,
                      codes = re$codes, n_levels = re$n_levels, z = re$z,
                      k = re$k, factor_id = re$factor_id,
                      # pseudo-rows of a database fit carry the data's n and
                      # sum(log w); for data rows Rust counts the rows with a
                      # positive weight itself
                      n_obs = if (!is.null(design$log_w_sum)) as.numeric(design$n_obs),
                      log_w_sum = if (!is.null(design$log_w_sum)) as.numeric(design$log_w_sum),
                      threads = engine$threads)
  if (is.list(ptr)) h_check_rust_result(ptr)
  engine$ptr <- ptr
  engine$resp <- resp
  invisible(engine)
}

#' The live pointer of an engine with response `resp` loaded
#'
#' @param design_fn function returning the design, called only when the
#'   model must be rebuilt (no pointer yet, or a nil one after readRDS()).
#' @noRd
h_engine_ptr <- function(engine, resp, design_fn) {
  if (is.null(engine$ptr) || !rs_model_is_live(engine$ptr)) {
    h_engine_build(engine, design_fn())
  }
  if (!identical(engine$resp, resp)) {
    h_check_rust_result(rs_model_set_response(engine$ptr, resp))
    engine$resp <- resp
  }
  engine$ptr
}

#' The kept model of a fit (an engine environment); a new, empty one for
#' fits made before fits kept their model
#' @noRd
h_fit_engine <- function(fit) {
  if (is.environment(fit$engine)) fit$engine else h_model_engine()
}

#' The live external pointer to a fit's Rust model, with response `y` (on
#' the scale of the fit's response, offset included) loaded
#'
#' Rebuilt from the plain data of the fit (X, y, weights, offset, terms) when
#' missing or nil (after readRDS()); never needs the data or the caller's
#' environment.
#' @noRd
h_model_ptr <- function(fit, y = fit$y) {
  h_engine_ptr(h_fit_engine(fit), as.numeric(y - fit$offset),
               function() h_design_from_fit(fit, fit$y))
}

#' Random-effect terms whose columns all lie in the column space of the
#' fixed effects (rank [X Z_t] = rank X, e.g. a grouping factor that is a
#' coarsening of a fixed factor): the data cannot identify their variance
#' (the REML criterion is flat in it, the ML deviance smallest at zero).
#' Only terms with at most p levels can be such terms, so the check costs
#' nothing for ordinary designs.
#' @return integer indices of such terms
#' @noRd
h_unidentifiable_terms <- function(design) {
  X <- design$X
  p <- ncol(X)
  terms <- design$re$terms
  cand <- which(vapply(terms, function(t) t$n_levels <= p, logical(1)))
  if (!length(cand) || p == 0L) return(integer(0))
  sw <- sqrt(as.numeric(design$weights))
  qx <- qr(X * sw)
  cand[vapply(cand, function(i) {
    t <- terms[[i]]
    ind <- outer(as.integer(t$codes), seq_len(t$n_levels) - 1L, `==`)
    zz <- do.call(cbind, lapply(seq_len(ncol(t$Z)), function(c) t$Z[, c] * ind)) * sw
    tot <- sum(zz^2)
    tot > 0 && sum(qr.resid(qx, zz)^2) < 1e-10 * tot
  }, logical(1))]
}

#' Fit with the unidentifiable terms' relative covariance fixed at zero: the
#' other parameters are optimised without them, then the full model is
#' evaluated there (so BLUPs, conditional variances and the layout of the
#' result are those of the full model), with a warning naming the terms
#' @noRd
h_fit_without_terms <- function(design, bad, REML, control, theta,
                                engine = NULL) {
  terms <- design$re$terms
  nth <- vapply(terms, function(t) ncol(t$Z) * (ncol(t$Z) + 1) / 2, numeric(1))
  labels <- vapply(terms[bad], function(t) {
    cn <- t$cnms
    lhs <- if ("(Intercept)" %in% cn) {
      paste(c("1", setdiff(cn, "(Intercept)")), collapse = " + ")
    } else paste("0 +", paste(cn, collapse = " + "))
    sprintf("(%s | %s)", lhs, t$group)
  }, character(1))
  h_warn(sprintf("The variance of random-effect term%s %s cannot be identified: %s columns lie in the column space of the fixed effects (e.g. the grouping factor is a coarsening of a fixed factor), so the criterion does not depend on %s. %s set to zero; remove the term or the fixed effect.",
                 if (length(bad) > 1L) "s" else "", paste(labels, collapse = ", "),
                 if (length(bad) > 1L) "their" else "its",
                 if (length(bad) > 1L) "them" else "it",
                 if (length(bad) > 1L) "They are" else "It is"),
         "not_identifiable")
  pos <- rep(seq_along(terms), nth)
  full <- numeric(sum(nth))
  keep <- setdiff(seq_along(terms), bad)
  if (length(keep)) {
    red <- design
    red$re$terms <- terms[keep]
    red$re$q <- sum(vapply(terms[keep], function(t) t$n_levels * ncol(t$Z), numeric(1)))
    th_red <- if (is.null(theta)) NULL else theta[pos %in% keep]
    res_red <- h_fit_design(red, REML = REML, control = control, theta = th_red)
    full[pos %in% keep] <- res_red$theta
  }
  res <- h_fit_design(design, REML = REML, control = control, theta = full,
                      optimize = FALSE, engine = engine)
  if (length(keep)) {
    res$converged <- res_red$converged
    res$message <- res_red$message
    res$n_eval <- res_red$n_eval + 1L
    res$time_budget_spent <- isTRUE(res_red$time_budget_spent)
  } else {
    res$converged <- TRUE
    res$message <- "no identifiable variance parameter"
  }
  res
}

#' Random-effect terms as the vectors the Rust entry points take (shared by
#' the fit and the inference calls)
#' @noRd
h_rust_re_args <- function(terms) {
  list(
    codes = lapply(terms, function(t) as.integer(t$codes)),
    n_levels = vapply(terms, function(t) as.integer(t$n_levels), integer(1)),
    z = lapply(terms, function(t) {
      z <- t$Z
      if (!is.double(z)) storage.mode(z) <- "double"
      z
    }),
    k = vapply(terms, function(t) ncol(t$Z), integer(1)),
    factor_id = vapply(terms, function(t) as.integer(t$factor_id), integer(1))
  )
}

#' Turn an error list returned by Rust into a classed R error
#' @noRd
h_check_rust_result <- function(res) {
  if (!is.null(res$error_kind)) {
    msg <- res$error_message
    if (identical(res$error_kind, "interrupted")) {
      msg <- "Interrupted by the user (Ctrl-C); the computation was abandoned."
    }
    if (identical(res$error_kind, "not_positive_definite")) {
      msg <- paste(msg, "This usually means the fixed-effects design is (nearly) rank deficient or the data are degenerate; check for collinear predictors or rescale them.")
    }
    h_abort(msg, res$error_kind)
  }
  res
}

#' Names of the theta parameters, as lme4 (`Subject.Days.(Intercept)`)
#' @noRd
h_theta_names <- function(terms) {
  unlist(lapply(terms, function(t) {
    cn <- t$cnms
    k <- length(cn)
    out <- character(0)
    for (j in seq_len(k)) {
      for (i in j:k) {
        out <- c(out, if (i == j) paste(t$group, cn[i], sep = ".")
                      else paste(t$group, cn[i], cn[j], sep = "."))
      }
    }
    out
  }))
}

#' Lower-triangular k x k matrix from its column-major lower triangle
#' @noRd
h_lower_tri <- function(values, k) {
  m <- matrix(0, k, k)
  m[lower.tri(m, diag = TRUE)] <- values
  m
}

#' Per-term results: covariance, relative factor, BLUPs, conditional variances
#' @noRd
h_term_results <- function(terms, res) {
  sigma <- res$sigma
  th_pos <- 0L
  b_pos <- 0L
  out <- vector("list", length(terms))
  for (t in seq_along(terms)) {
    term <- terms[[t]]
    k <- ncol(term$Z)
    G <- term$n_levels
    nth <- k * (k + 1L) / 2L
    lambda <- h_lower_tri(res$theta[th_pos + seq_len(nth)], k)
    th_pos <- th_pos + nth
    b <- matrix(res$b[b_pos + seq_len(G * k)], nrow = G, ncol = k,
                byrow = TRUE, dimnames = list(levels(term$factor), term$cnms))
    b_pos <- b_pos + G * k
    cov <- sigma^2 * tcrossprod(lambda)
    dimnames(cov) <- list(term$cnms, term$cnms)
    cond_var <- array(res$cond_var[[t]], dim = c(k, k, G))
    out[[t]] <- list(
      group = term$group, cnms = term$cnms, factor_id = term$factor_id,
      levels = levels(term$factor), n_levels = G, k = k, lhs = term$lhs,
      codes = as.integer(term$codes), Z = term$Z,
      lambda = lambda, cov = cov, b = b, cond_var = cond_var,
      info = term[setdiff(names(term), c("factor", "codes", "Z"))]
    )
  }
  out
}

#' Assemble the "lmmr" object (plain R data only)
#' @noRd
h_build_lmm <- function(design, res, REML, call, control) {
  X <- design$X
  p <- ncol(X)
  n <- length(design$y)
  beta <- stats::setNames(as.numeric(res$beta), colnames(X))
  vc <- matrix(res$vcov_beta, p, p, dimnames = list(colnames(X), colnames(X)))
  terms <- h_term_results(design$re$terms, res)
  theta <- stats::setNames(as.numeric(res$theta), h_theta_names(design$re$terms))
  lower <- as.numeric(res$lower)
  fitted <- as.numeric(res$fitted)
  if (!isFALSE(design$has_offset)) fitted <- fitted + design$offset
  singular <- any(theta[lower == 0] < control$singular_tol)
  fit <- structure(list(
    call = call,
    formula = design$formula,
    fixed_formula = design$fixed_formula,
    REML = REML,
    beta = beta,
    dropped = design$dropped,
    vcov = vc,
    sigma = as.numeric(res$sigma),
    theta = theta,
    lower = lower,
    objective = as.numeric(res$objective),
    pwrss = as.numeric(res$pwrss),
    ldl2 = as.numeric(res$ldl2),
    ldrx2 = as.numeric(res$ldrx2),
    re_terms = terms,
    X = X,
    y = as.numeric(design$y),
    weights = as.numeric(design$weights),
    has_weights = isTRUE(design$has_weights),
    offset = as.numeric(design$offset),
    fitted = fitted,
    frame = design$frame,
    design_info = design[intersect(names(design),
      c("fixed_terms", "xlevels", "contrasts", "X_full_colnames", "fixed_formula", "dropped"))],
    na_action = design$na_action,
    optinfo = list(converged = isTRUE(res$converged), gradient = res$gradient,
                   at_bound = res$at_bound, n_eval = res$n_eval,
                   n_grad = res$n_grad, message = res$message,
                   time_budget_spent = isTRUE(res$time_budget_spent)),
    singular = singular,
    n = n, n_obs = if (is.null(design$n_obs)) n else as.integer(design$n_obs),
    p = p, q = sum(vapply(terms, function(t) t$n_levels * t$k, numeric(1))),
    control = control,
    engine = res$engine
  ), class = "lmmr")
  h_report_fit_problems(fit)
  fit
}

#' Tell the user about boundary fits and convergence trouble
#' @noRd
h_report_fit_problems <- function(fit) {
  if (isTRUE(fit$optinfo$time_budget_spent)) {
    h_warn(h_time_budget_message(fit), "time_budget")
  } else if (!fit$optinfo$converged) {
    h_warn(sprintf("The optimiser could not confirm an optimum (%s) after %d evaluations; the estimates may be inaccurate. Try rescaling predictors, simplifying the random effects, or raising `max_iter` in lmm_control().",
                   fit$optinfo$message, as.integer(fit$optinfo$n_eval)),
           "convergence")
  }
  if (fit$singular) {
    h_inform("boundary (singular) fit: a random-effect variance is estimated as (nearly) zero or a correlation as +/-1; see ?is_singular",
             "singular")
  }
  invisible(fit)
}

#' Message of the warning for a fit stopped by its time budget, naming the
#' term responsible.
#'
#' The cost of one evaluation of the criterion grows with the size of the
#' dense block (fixed-effect columns and random-effect columns of the terms
#' not on the primary grouping factor); the number of evaluations grows with
#' the number of covariance parameters. The term named is: a grouping factor
#' that is also a fixed effect (its levels become fixed-effect columns and
#' its random effects are confounded with them), else the term with the most
#' columns outside the primary factor when those dominate, else the term with
#' the largest gradient component (the one still moving), else the term with
#' the most covariance parameters.
#' @noRd
h_time_budget_message <- function(fit) {
  terms <- fit$re_terms
  p <- fit$p
  n_theta <- vapply(terms, function(t) t$k * (t$k + 1) / 2, numeric(1))
  labels <- vapply(terms, function(t) {
    nm <- t$info$term_name
    if (is.null(nm)) sprintf("(... | %s)", t$group) else sprintf("(%s)", nm)
  }, "")
  fixed_vars <- all.vars(h_no_bars_safe(fit$fixed_formula))
  grp_vars <- lapply(terms, function(t) {
    v <- t$info$group_vars
    if (is.null(v)) all.vars(str2lang(t$group)) else v
  })
  both <- which(vapply(grp_vars, function(v) length(v) && all(v %in% fixed_vars), NA))
  # columns of each term outside the primary (block-diagonal) factor
  size <- vapply(terms, function(t) t$n_levels * t$k, numeric(1))
  fid <- vapply(terms, function(t) t$factor_id, numeric(1))
  fsize <- tapply(size, fid, sum)
  prim <- as.numeric(names(fsize)[which.max(fsize)])
  rest <- ifelse(fid == prim, 0, size)
  why <- if (length(both)) {
    t <- both[1L]
    sprintf("term %s: its grouping factor '%s' is also in the fixed effects (%d fixed-effect columns), so its random effects are confounded with fixed effects and every evaluation works on a dense block of %d columns; drop '%s' from one of the two parts",
            labels[t], terms[[t]]$group, p, p + sum(rest), terms[[t]]$group)
  } else if (sum(rest) + p > 300) {
    t <- if (max(rest) >= p) which.max(rest) else NA_integer_
    if (is.na(t)) {
      sprintf("the %d fixed-effect columns: every evaluation works on a dense block of %d columns", p, p + sum(rest))
    } else {
      sprintf("term %s: its %d random-effect columns (crossed with the primary grouping factor) make every evaluation work on a dense block of %d columns",
              labels[t], as.integer(rest[t]), as.integer(p + sum(rest)))
    }
  } else {
    g <- abs(as.numeric(fit$optinfo$gradient))
    owner <- rep(seq_along(terms), n_theta)
    t <- if (length(g) == length(owner) && any(is.finite(g))) owner[which.max(replace(g, !is.finite(g), -1))]
         else which.max(n_theta)
    sprintf("term %s: it has %d covariance parameters and was still changing when the budget ran out; consider simplifying it (e.g. `||` or fewer slopes)",
            labels[t], as.integer(n_theta[t]))
  }
  sprintf("The optimisation stopped when its time budget ran out (%s); the estimates are the best point reached and may be inaccurate. The time goes into %s. Raise `max_time` in lmm_control() to continue.",
          fit$optinfo$message, why)
}

#' Fixed-effects formula without bars (tolerates NULL)
#' @noRd
h_no_bars_safe <- function(f) if (is.null(f)) ~1 else f

#' Is a fit singular?
#'
#' A fit is singular (on the boundary of the parameter space) when a
#' random-effect variance is estimated as zero or the covariance matrix of a
#' term is not of full rank (a correlation of +/-1), as in
#' `lme4::isSingular()`: some diagonal element of the relative covariance
#' factor `theta` is below `tol`. Such fits are legitimate estimates, but
#' usually mean the random-effects structure is richer than the data support.
#'
#' @param x an `"lmmr"` fit (for another model, such as an lmer fit,
#'   `lme4::isSingular()` is called).
#' @param tol tolerance for a diagonal element of the relative covariance
#'   factor to count as zero.
#' @return `TRUE` or `FALSE`.
#' @examples
#' d <- sleepstudy
#' d$noise <- factor(rep(1:2, length.out = nrow(d)))
#' fit <- lmm(Reaction ~ Days + (1 | Subject) + (1 | noise), data = d)
#' is_singular(fit)
#' @export
is_singular <- function(x, tol = 1e-4) {
  if (!inherits(x, "lmmr")) return(h_delegate("lme4", "isSingular", "is_singular", x, tol = tol))
  if (inherits(x, "lmmr_rcov")) return(isTRUE(x$singular))
  any(x$theta[x$lower == 0] < tol)
}

#' @noRd
h_check_lmm <- function(x, name = "object") {
  if (!inherits(x, "lmmr")) {
    h_abort(sprintf("`%s` must be a model fitted by lmm().", name), "argument")
  }
  invisible(x)
}
