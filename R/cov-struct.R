# Residual covariance structures for repeated measures: the formula term
# (`us(visit | subject)`, ...), the per-subject layout handed to Rust, the
# covariance parameters in SAS's parametrisation, and the fit object.

#' Residual covariance structures for repeated measures
#'
#' A model formula of [lmm()] may hold one term describing the covariance of
#' the residuals within a subject, written as mmrm writes it:
#' `us(visit | subject)`, or grouped `us(visit | arm / subject)` (one matrix
#' per level of `arm`, which must be constant within a subject). The visit
#' must be a factor: its levels give the order of the visits (the lag of
#' `ar1()`, `toep()`, `adh()`); subjects may miss visits, but a subject may
#' not have two rows at one visit. The spatial exponential `sp_exp()` takes
#' numeric coordinates instead: `sp_exp(time | subject)` or
#' `sp_exp(x1, x2 | subject)` (Euclidean distance).
#'
#' The term can be combined with lme4 random-effect terms whose grouping
#' factors contain the subject (every subject within one level), e.g.
#' `(1 | site) + ar1(visit | subject)` or `(1 | subject) + ar1(visit |
#' subject)`. The marginal covariance of the observations of a cluster (a
#' subject, or a level of the coarsest grouping factor) is then `Z G Z' +
#' R`. There is no common residual variance: `sigma()` is 1 and the variances
#' are the structure's.
#'
#' | lmmr / mmrm | covariance (visits i, j) | parameters | SAS `TYPE=` | nlme | glmmTMB | lme4 2.0 |
#' |---|---|---|---|---|---|---|
#' | `us` | unstructured | m(m+1)/2 | `UN` | `corSymm` + `varIdent` | `us` | (`us`, random effects only) |
#' | `cs` | `s2 (rho + (1-rho) [i=j])` | 2 | `CS` | `corCompSymm` | `homcs` | `cs` (hom.) |
#' | `csh` | `s_i s_j rho` (i != j) | m + 1 | `CSH` | `corCompSymm` + `varIdent` | `cs` | `cs(hom = FALSE)` |
#' | `ar1` | `s2 rho^abs(i-j)` | 2 | `AR(1)` | `corAR1` | `homar1`/`ar1`* | `ar1` |
#' | `ar1h` | `s_i s_j rho^abs(i-j)` | m + 1 | `ARH(1)` | `corAR1` + `varIdent` | `ar1` | `ar1(hom = FALSE)` |
#' | `toep` | `s2 rho_abs(i-j)` | m | `TOEP` | `corARMA(p = m-1)` | `homtoep` | |
#' | `toeph` | `s_i s_j rho_abs(i-j)` | 2m - 1 | `TOEPH` | `corARMA(p = m-1)` + `varIdent` | `toep` | |
#' | `adh` | `s_i s_j prod(rho_i..rho_{j-1})` | 2m - 1 | `ANTE(1)` | | | |
#' | `sp_exp` | `s2 rho^d_ij` (`exp(-d/theta)` in SAS) | 2 | `SP(EXP)(coords)` | `corExp` | `exp` | |
#'
#' (*glmmTMB's `ar1` has one variance; its heterogeneous forms are `cs` and
#' `toep`. In glmmTMB and lme4 2.0 these are random-effect covariances,
#' imitating a residual structure only with the dispersion fixed near zero.)
#'
#' The estimates are REML or ML with the fixed effects profiled out; the
#' log-likelihood is SAS PROC MIXED's and nlme's (`-2 * logLik(fit)` is SAS's
#' "-2 Res Log Likelihood"). Kenward-Roger inference follows SAS `DDFM=KR`:
#' observed information, and the second-derivative term of the adjusted
#' covariance in SAS's parametrisation of each structure (variances,
#' correlations, and for `sp_exp` the range `theta`); `UN`, `CS` and `TOEP`
#' are linear in SAS's parameters, so there `DDFM=KR` and `DDFM=KR(LINEAR)`
#' coincide. `summary(fit, ddf = "Kenward-Roger-Linear")` gives
#' `KR(LINEAR)`. Satterthwaite uses the same observed information (its df
#' do not depend on the parametrisation). These small-sample ingredients are
#' computed in R on blocks of identical covariance (one per visit pattern
#' without random effects, one per cluster with them): quick for
#' subject-level clusters, slow (dense) for clusters of hundreds of
#' observations.
#'
#' `refit()`, `r2()`, `ranova()` (for the random-effect terms; the reduced
#' models keep the residual structure) and, where it is defined, `icc()`
#' (see [icc.lmmr_rcov()]) work on these fits, and `confint()` with Wald
#' intervals for all covariance parameters and profile intervals for most
#' (see [confint.lmmr_rcov()]). Not available yet: conditional variances of
#' the random effects, database (lazy table) data, prior weights.
#'
#' @section Agreement with SAS PROC MIXED:
#' On mmrm's `fev_data` (`FEV1 ~ ARMCD + <structure>`, REML) lmmr's
#' criterion equals SAS's -2 log L for CS, AR(1), TOEPH and SP(EXP) to 1e-8
#' and is lower for UN, CSH, ANTE(1), ARH(1) and TOEP (by 7e-7 to 1.3e-5):
#' SAS stops slightly before the optimum (as does its iteration history's
#' convergence criterion of 1e-8). The Kenward-Roger standard errors and df
#' then differ from SAS's by up to 1.2e-4 / 4e-4 (relative). Evaluated at
#' SAS's printed covariance estimates instead (an internal fit at given
#' parameters), lmmr reproduces SAS's KR and KR(LINEAR) numbers within what
#' the rounding of the printed estimates allows, and the SE (4 decimals)
#' and df (integer) of SAS's listing exactly; see `bench/README.md` for the
#' table.
#'
#' @name cov_struct
#' @return Not a function; see [lmm()].
#' @seealso [lmm()], [compare_cov_structures()], [cov_matrix()]
#' @examples
#' set.seed(1)
#' d <- data.frame(id = factor(rep(1:40, each = 4)),
#'                 visit = factor(rep(c("V1", "V2", "V3", "V4"), 40)))
#' d$y <- rnorm(160) + rep(rnorm(40), each = 4)
#' fit <- lmm(y ~ visit + ar1(visit | id), data = d)
#' fit
#' cov_matrix(fit)
NULL

#' Names of the residual structures
#' @noRd
h_cov_types <- function() {
  c("us", "cs", "csh", "ar1", "ar1h", "toep", "toeph", "adh", "sp_exp")
}

#' Is an expression a residual-structure term `type(... | ...)`?
#' @noRd
h_is_cov_term <- function(x) {
  if (!is.call(x) || !is.name(x[[1L]])) return(FALSE)
  if (!as.character(x[[1L]]) %in% h_cov_types()) return(FALSE)
  n <- length(x)
  n >= 2L && h_is_call_to(x[[n]], "|")
}

#' Residual-structure terms at the top level of a right-hand side
#' @return list of calls
#' @noRd
h_collect_cov_terms <- function(x) {
  if (!is.call(x)) return(list())
  if (h_is_cov_term(x)) return(list(x))
  if (h_is_call_to(x, "(") && length(x) == 2L) return(h_collect_cov_terms(x[[2L]]))
  if (h_is_call_to(x, "+")) {
    return(do.call(c, c(list(list()), lapply(as.list(x)[-1L], h_collect_cov_terms))))
  }
  if (h_is_call_to(x, "-") && length(x) == 3L) return(h_collect_cov_terms(x[[2L]]))
  list()
}

#' Parse the residual-structure term of a formula (or NULL)
#'
#' @return `NULL` or list(type, call, visit (list of expressions), subject
#'   (expression), group (expression or NULL))
#' @noRd
h_find_cov_term <- function(formula) {
  terms <- h_collect_cov_terms(h_rhs(formula))
  if (!length(terms)) return(NULL)
  if (length(terms) > 1L) {
    h_abort(sprintf("Only one residual covariance structure term is allowed; found %d (%s).",
                    length(terms),
                    paste(vapply(terms, h_deparse, ""), collapse = ", ")),
            "cov_struct")
  }
  x <- terms[[1L]]
  type <- as.character(x[[1L]])
  n <- length(x)
  bar <- x[[n]]
  visit <- c(if (n > 2L) as.list(x)[2:(n - 1L)], list(bar[[2L]]))
  rhs <- h_strip_parens(bar[[3L]])
  group <- NULL
  subject <- rhs
  if (h_is_call_to(rhs, "/")) {
    group <- rhs[[2L]]
    subject <- rhs[[3L]]
  }
  if (type != "sp_exp" && length(visit) != 1L) {
    h_abort(sprintf("'%s()' takes one visit factor: write %s(visit | subject).", type, type),
            "cov_struct")
  }
  for (e in c(list(subject), if (!is.null(group)) list(group))) {
    if (!h_group_ok(e) || h_is_call_to(h_strip_parens(e), "/")) {
      h_abort(sprintf("Invalid subject or group '%s' in '%s': use variable names (possibly joined by ':').",
                      h_deparse(e), h_deparse(x)), "cov_struct")
    }
  }
  list(type = type, call = x, visit = visit, subject = subject, group = group)
}

#' Remove the residual-structure term from an expression (NULL if empty)
#' @noRd
h_drop_cov_term <- function(x) {
  if (h_is_cov_term(x)) return(NULL)
  if (!is.call(x)) return(x)
  if (h_is_call_to(x, "(") && length(x) == 2L) {
    inner <- h_drop_cov_term(x[[2L]])
    if (is.null(inner)) return(NULL)
    x[[2L]] <- inner
    return(x)
  }
  if ((h_is_call_to(x, "+") || h_is_call_to(x, "-")) && length(x) == 3L) {
    l <- h_drop_cov_term(x[[2L]])
    r <- h_drop_cov_term(x[[3L]])
    if (is.null(l) && is.null(r)) return(NULL)
    if (is.null(r)) return(l)
    if (is.null(l)) return(if (h_is_call_to(x, "-")) call("-", r) else r)
    x[[2L]] <- l
    x[[3L]] <- r
  }
  x
}

#' Variables of the residual-structure term, for the model frame
#' @noRd
h_cov_term_vars <- function(ct) {
  unique(c(unlist(lapply(ct$visit, all.vars)), all.vars(ct$subject),
           if (!is.null(ct$group)) all.vars(ct$group)))
}

#' Number of parameters of a structure over m visits (per group)
#' @noRd
h_cov_npar <- function(type, m) {
  switch(type,
         us = m * (m + 1) / 2, cs = 2, ar1 = 2, sp_exp = 2,
         csh = m + 1, ar1h = m + 1, toep = m, toeph = 2 * m - 1, adh = 2 * m - 1)
}

#' Build and check the residual-structure layout from the model frame
#'
#' @param ct parsed term ([h_find_cov_term()]).
#' @param frame model frame.
#' @param re random-effect terms ([h_re_terms()]) or NULL.
#' @return list with the factors, the row order (cluster, subject, visit),
#'   the per-subject and per-cluster offsets and the per-row visit codes.
#' @noRd
h_cov_layout <- function(ct, frame, re) {
  n <- nrow(frame)
  subject <- h_group_factor(ct$subject, frame)
  group <- if (is.null(ct$group)) factor(rep("(all)", n)) else h_group_factor(ct$group, frame)
  if (ct$type == "sp_exp") {
    coords <- do.call(cbind, lapply(ct$visit, function(e) {
      v <- tryCatch(eval(e, frame, environment(attr(frame, "terms"))),
                    error = function(err) h_abort(conditionMessage(err), "data"))
      if (!is.numeric(v)) {
        h_abort(sprintf("The coordinates of sp_exp() must be numeric; '%s' is of class '%s'.",
                        h_deparse(e), class(v)[1L]), "cov_struct")
      }
      as.numeric(v)
    }))
    visit <- NULL
    m <- 1L
    vcode <- rep(0L, n)
  } else {
    visit <- tryCatch(eval(ct$visit[[1L]], frame, environment(attr(frame, "terms"))),
                      error = function(err) h_abort(conditionMessage(err), "data"))
    if (!is.factor(visit)) {
      h_abort(sprintf("The visit variable '%s' of %s() must be a factor (its levels give the order of the visits), not of class '%s'; use factor(%s) or sp_exp() for numeric times.",
                      h_deparse(ct$visit[[1L]]), ct$type, class(visit)[1L],
                      h_deparse(ct$visit[[1L]])), "cov_struct")
    }
    m <- nlevels(visit)
    vcode <- as.integer(visit) - 1L
    coords <- NULL
  }
  scode <- as.integer(subject)
  gcode <- as.integer(group)
  # group constant within subject
  g_first <- gcode[match(seq_len(nlevels(subject)), scode)]
  if (any(gcode != g_first[scode])) {
    h_abort(sprintf("The group '%s' of %s() must be constant within each subject ('%s').",
                    h_deparse(ct$group), ct$type, h_deparse(ct$subject)), "cov_struct")
  }
  if (!is.null(visit)) {
    key <- (scode - 1) * m + vcode
    if (anyDuplicated(key)) {
      i <- which(duplicated(key))[1L]
      h_abort(sprintf("Subject '%s' has more than one observation at visit '%s': each subject may have at most one row per level of '%s'.",
                      levels(subject)[scode[i]], levels(visit)[vcode[i] + 1L],
                      h_deparse(ct$visit[[1L]])), "cov_struct")
    }
  }
  cluster <- h_cov_clusters(subject, re, ct)
  ord <- if (is.null(re) || !length(re$terms)) {
    # subjects with one visit pattern next to each other (factor reuse)
    pat <- h_subject_patterns(scode, vcode, gcode, nlevels(subject), ct$type)
    order(pat$pattern[scode], scode, vcode)
  } else {
    order(cluster[scode], scode, vcode)
  }
  s_sorted <- scode[ord]
  run <- c(TRUE, s_sorted[-1L] != s_sorted[-n])
  subj_start <- c(which(run) - 1L, n)
  subj_ids <- s_sorted[run]
  cl_sorted <- cluster[subj_ids]
  crun <- c(TRUE, cl_sorted[-1L] != cl_sorted[-length(cl_sorted)])
  if (anyDuplicated(cl_sorted[crun])) h_abort("internal: clusters not contiguous", "internal")
  cluster_start <- c(which(crun) - 1L, length(subj_ids))
  pattern <- h_subject_patterns(scode, vcode, gcode, nlevels(subject), ct$type)$pattern
  list(
    type = ct$type, m = as.integer(m), n_groups = nlevels(group),
    subject = subject, visit = visit, group = group, coords = coords,
    order = ord, subj_start = as.integer(subj_start),
    subj_ids = subj_ids,
    subj_group = as.integer(g_first[subj_ids] - 1L),
    subj_pattern = as.integer(pattern[subj_ids] - 1L),
    cluster_start = as.integer(cluster_start),
    visit_code = as.integer(vcode[ord]),
    coords_sorted = if (is.null(coords)) numeric(0) else coords[ord, , drop = FALSE],
    visit_levels = if (is.null(visit)) NULL else levels(visit),
    group_levels = levels(group),
    grouped = !is.null(ct$group)
  )
}

#' Visit-pattern id of each subject (same group and same visits)
#' @noRd
h_subject_patterns <- function(scode, vcode, gcode, n_subj, type) {
  if (type == "sp_exp") return(list(pattern = seq_len(n_subj)))
  o <- order(scode, vcode)
  keys <- vapply(split(vcode[o], scode[o]), paste, "", collapse = ",")
  gk <- gcode[match(seq_len(n_subj), scode)]
  key <- paste(gk, keys, sep = "|")
  list(pattern = match(key, unique(key)))
}

#' Clusters of subjects: subjects sharing a level of a random-effect
#' grouping factor are in one cluster; each subject must lie within one level
#' of every grouping factor
#' @noRd
h_cov_clusters <- function(subject, re, ct) {
  ns <- nlevels(subject)
  scode <- as.integer(subject)
  if (is.null(re) || !length(re$terms)) return(seq_len(ns))
  cl <- seq_len(ns)
  for (t in re$terms) {
    codes <- as.integer(t$codes) + 1L
    first <- codes[match(seq_len(ns), scode)]
    if (any(codes != first[scode])) {
      h_abort(sprintf("The subject '%s' of %s() is not nested in the random-effect grouping factor '%s': each subject's rows must all have the same level of '%s'.",
                      h_deparse(ct$subject), ct$type, t$group, t$group), "cov_struct")
    }
  }
  # merge subjects sharing a level until stable (connected components)
  repeat {
    old <- cl
    for (t in re$terms) {
      lev <- (as.integer(t$codes) + 1L)[match(seq_len(ns), scode)]
      m <- tapply(cl, lev, min)
      cl <- pmin(cl, as.integer(m[as.character(lev)]))
    }
    if (identical(cl, old)) break
  }
  match(cl, unique(cl))
}

#' Checks that the data identify the structure's parameters
#' @noRd
h_check_cov_identified <- function(lay, re, ct, n, p) {
  type <- lay$type
  npar <- h_cov_npar(type, lay$m) * lay$n_groups +
    sum(vapply(if (is.null(re)) list() else re$terms,
               function(t) ncol(t$Z) * (ncol(t$Z) + 1) / 2, numeric(1)))
  nm <- h_deparse(ct$call)
  if (type != "us" && type != "sp_exp" && lay$m < 2L) {
    h_abort(sprintf("%s() needs at least two visit levels; '%s' has %d.", type,
                    h_deparse(ct$visit[[1L]]), lay$m), "cov_struct")
  }
  if (npar > n - p) {
    h_abort(sprintf("The model has %d covariance parameters but only %d observations beyond the %d fixed effects: the data cannot identify them. Use a simpler structure than %s.",
                    npar, n - p, p, nm), "cov_struct")
  }
  if (type != "sp_exp") {
    v <- lay$visit_code
    s <- rep(seq_along(lay$subj_ids), diff(lay$subj_start))
    g <- lay$subj_group[s]
    for (gi in seq_len(lay$n_groups) - 1L) {
      rows <- g == gi
      seen <- tabulate(v[rows] + 1L, lay$m)
      if (type %in% c("us", "csh", "ar1h", "toeph", "adh") && any(seen == 0)) {
        h_abort(sprintf("Visit level%s %s of '%s' %s no observations%s, so the variance%s of %s cannot be identified; drop unused levels or use a homogeneous structure.",
                        if (sum(seen == 0) > 1) "s" else "",
                        paste(sprintf("'%s'", lay$visit_levels[seen == 0]), collapse = ", "),
                        h_deparse(ct$visit[[1L]]),
                        if (sum(seen == 0) > 1) "have" else "has",
                        if (lay$grouped) sprintf(" in group '%s'", lay$group_levels[gi + 1L]) else "",
                        if (sum(seen == 0) > 1) "s" else "", nm), "cov_struct")
      }
      if (type %in% c("us", "adh")) {
        # every covariance needs a subject observed at both visits
        pairs <- matrix(0, lay$m, lay$m)
        ind <- matrix(0, sum(rows), lay$m)
        ss <- s[rows]
        uniq <- unique(ss)
        ind <- matrix(0, length(uniq), lay$m)
        ind[cbind(match(ss, uniq), v[rows] + 1L)] <- 1
        pairs <- crossprod(ind)
        need <- if (type == "us") lower.tri(pairs) else
          (row(pairs) == col(pairs) + 1L)
        if (any(pairs[need] == 0)) {
          w <- which(need & pairs == 0, arr.ind = TRUE)[1L, ]
          h_abort(sprintf("No subject is observed at both visits '%s' and '%s'%s, so their covariance in %s cannot be identified; use a structure with fewer parameters.",
                          lay$visit_levels[w[2L]], lay$visit_levels[w[1L]],
                          if (lay$grouped) sprintf(" in group '%s'", lay$group_levels[gi + 1L]) else "",
                          nm), "cov_struct")
        }
      }
    }
  }
  if (!is.null(re)) {
    for (t in re$terms) {
      # a term on the subject itself (one level per subject); a term on a
      # coarser factor (site) holding several subjects adds covariance
      # between subjects and is identified
      n_subj <- length(unique(as.integer(lay$subject)))
      same <- length(unique(t$codes)) == n_subj &&
        length(unique(paste(as.integer(lay$subject), t$codes))) == n_subj
      if (!same) next
      has_int <- "(Intercept)" %in% t$cnms
      if (type == "us" || (has_int && type %in% c("cs", "csh", "toep", "toeph"))) {
        h_abort(sprintf("The random-effect term on '%s' duplicates part of %s: its covariance over the visits is contained in the residual structure, so the data cannot identify both. Drop the random-effect term or use a structure such as ar1().",
                        t$group, nm), "cov_struct")
      }
    }
  }
  invisible(npar)
}

# ---------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------

#' The design's arguments of the Rust entry points (rows in the layout's
#' order: cluster, subject, visit)
#' @noRd
h_rcov_args <- function(X, y, lay, terms) {
  o <- lay$order
  x <- X[o, , drop = FALSE]
  storage.mode(x) <- "double"
  x <- matrix(x, nrow = nrow(x), ncol = ncol(x))
  list(
    x = x,
    y = as.numeric(y[o]),
    subj_start = lay$subj_start,
    visit = lay$visit_code,
    coords = as.numeric(lay$coords_sorted),
    subj_group = lay$subj_group,
    subj_pattern = lay$subj_pattern,
    cluster_start = lay$cluster_start,
    cov_type = lay$type,
    m = lay$m,
    n_groups = as.integer(lay$n_groups),
    codes = lapply(terms, function(t) as.integer(t$codes)[o]),
    z = lapply(terms, function(t) {
      z <- t$Z[o, , drop = FALSE]
      storage.mode(z) <- "double"
      z
    }),
    k = vapply(terms, function(t) ncol(t$Z), integer(1))
  )
}

#' A new, empty kept model of a residual-structure design: an environment
#' that will hold the Rust model's external pointer (`ptr`) and the response
#' loaded into it (`resp`). It survives saveRDS() with a dead pointer, which
#' h_rcov_engine_ptr() rebuilds from the fit's plain data.
#' @noRd
h_rcov_engine <- function() new.env(parent = emptyenv())

#' The live pointer of a kept residual-structure model with response `y`
#' (offset subtracted, rows in the data's order) loaded; (re)built from the
#' design when missing or dead
#' @noRd
h_rcov_engine_ptr <- function(engine, X, y, lay, terms) {
  y <- as.numeric(y)
  if (is.null(engine$ptr) || !rs_rcov_model_is_live(engine$ptr)) {
    ptr <- do.call(rs_rcov_model_new, h_rcov_args(X, y, lay, terms))
    if (is.list(ptr)) h_check_rust_result(ptr)
    engine$ptr <- ptr
    engine$resp <- y
  } else if (!identical(engine$resp, y)) {
    h_check_rust_result(rs_rcov_model_set_response(engine$ptr, y[lay$order]))
    engine$resp <- y
  }
  engine$ptr
}

#' The kept model of a residual-structure fit (a new, empty one for objects
#' without it)
#' @noRd
h_rcov_fit_engine <- function(fit) {
  if (is.environment(fit$rcov_engine)) fit$rcov_engine else h_rcov_engine()
}

#' Fit a design with a residual structure on its kept Rust model
#'
#' `engine`: the kept model of an earlier fit of the same design (refits,
#' fits at given parameters); without it a new one is built. The result
#' carries it in `$engine`.
#' @noRd
h_fit_rcov_design <- function(design, REML, control, theta = NULL, optimize = TRUE,
                              engine = NULL) {
  lay <- design$cov
  o <- lay$order
  terms <- if (is.null(design$re)) list() else design$re$terms
  if (!is.environment(engine)) engine <- h_rcov_engine()
  ptr <- h_rcov_engine_ptr(engine, design$X, design$y - design$offset, lay, terms)
  res <- rs_rcov_model_fit(ptr, reml = REML,
                           max_iter = as.integer(max(control$max_iter, 1000L)),
                           gtol = 1e-6, theta_start = theta, optimize = optimize)
  res <- h_check_rust_result(res)
  fitted <- numeric(length(o))
  fitted[o] <- res$fitted
  res$fitted <- fitted
  res$engine <- engine
  res
}

#' The m x m covariance of each group from the Rust output (list), or the
#' (variance, rho) of sp_exp
#' @noRd
h_group_covs <- function(lay, res) {
  if (lay$type == "sp_exp") {
    out <- lapply(seq_len(lay$n_groups), function(g) {
      c(variance = res$group_cov[2 * g - 1], rho = res$group_cov[2 * g])
    })
  } else {
    m <- lay$m
    out <- lapply(seq_len(lay$n_groups), function(g) {
      matrix(res$group_cov[(g - 1) * m * m + seq_len(m * m)], m, m,
             dimnames = list(lay$visit_levels, lay$visit_levels))
    })
  }
  stats::setNames(out, lay$group_levels)
}

#' Covariance parameters in SAS's parametrisation (one group)
#'
#' `us`: the lower triangle of the covariance, row by row (SAS's UN(i,j)
#' order); `cs`: the common covariance and the residual variance (SAS's CS
#' and Residual); `csh`/`ar1h`: variances then rho; `ar1`: variance, rho;
#' `toep`: variance and the m - 1 lag covariances; `toeph`/`adh`: variances
#' then the m - 1 correlations; `sp_exp`: variance and the range theta
#' (correlation exp(-d / theta)).
#' @noRd
h_natural_from_cov <- function(type, V) {
  if (type == "sp_exp") {
    return(c(variance = unname(V[["variance"]]), range = -1 / log(unname(V[["rho"]]))))
  }
  m <- nrow(V)
  lev <- rownames(V)
  if (is.null(lev)) lev <- seq_len(m)
  s2 <- diag(V)
  R <- stats::cov2cor(V)
  lagcor <- function(l) R[cbind(seq_len(m - l) + l, seq_len(m - l))]
  switch(type,
    us = {
      idx <- which(lower.tri(V, diag = TRUE) & TRUE, arr.ind = TRUE)
      idx <- idx[order(idx[, 1L], idx[, 2L]), , drop = FALSE]
      stats::setNames(V[idx], sprintf("cov(%s,%s)", lev[idx[, 1L]], lev[idx[, 2L]]))
    },
    cs = c(covariance = V[2L, 1L], residual = V[1L, 1L] - V[2L, 1L]),
    ar1 = c(variance = V[1L, 1L], rho = R[2L, 1L]),
    csh = c(stats::setNames(s2, sprintf("var(%s)", lev)), rho = R[2L, 1L]),
    ar1h = c(stats::setNames(s2, sprintf("var(%s)", lev)), rho = R[2L, 1L]),
    toep = c(variance = V[1L, 1L],
             stats::setNames(vapply(seq_len(m - 1L), function(l) V[l + 1L, 1L], 0),
                             sprintf("cov(lag %d)", seq_len(m - 1L)))),
    toeph = c(stats::setNames(s2, sprintf("var(%s)", lev)),
              stats::setNames(vapply(seq_len(m - 1L), function(l) R[l + 1L, 1L], 0),
                              sprintf("rho(lag %d)", seq_len(m - 1L)))),
    adh = c(stats::setNames(s2, sprintf("var(%s)", lev)),
            stats::setNames(lagcor(1L), sprintf("rho(%s,%s)", lev[-1L], lev[-m])))
  )
}

#' One group's covariance matrix (or the sp_exp pair) from SAS-type
#' parameters; the inverse of h_natural_from_cov()
#' @noRd
h_cov_from_natural <- function(type, phi, m) {
  if (type == "sp_exp") return(c(variance = phi[[1L]], rho = exp(-1 / phi[[2L]])))
  lag <- abs(outer(seq_len(m), seq_len(m), "-"))
  sdm <- function(v) sqrt(outer(v, v))
  switch(type,
    us = {
      V <- matrix(0, m, m)
      idx <- which(lower.tri(V, diag = TRUE), arr.ind = TRUE)
      idx <- idx[order(idx[, 1L], idx[, 2L]), , drop = FALSE]
      V[idx] <- phi
      V[idx[, 2:1, drop = FALSE]] <- phi
      V
    },
    cs = matrix(phi[1L], m, m) + diag(phi[2L], m),
    ar1 = phi[1L] * phi[2L]^lag,
    csh = sdm(phi[seq_len(m)]) * ifelse(lag == 0, 1, phi[m + 1L]),
    ar1h = sdm(phi[seq_len(m)]) * phi[m + 1L]^lag,
    toep = matrix(phi[lag + 1L], m, m),
    toeph = sdm(phi[seq_len(m)]) * matrix(c(1, phi[m + seq_len(m - 1L)])[lag + 1L], m, m),
    adh = {
      rho <- phi[m + seq_len(m - 1L)]
      C <- diag(m)
      for (j in seq_len(m)) for (i in seq_len(m)) {
        if (i > j) C[i, j] <- C[j, i] <- prod(rho[j:(i - 1L)])
      }
      sdm(phi[seq_len(m)]) * C
    }
  )
}

#' Assemble the "lmmr" fit of a residual-structure model
#' @noRd
h_build_rcov_fit <- function(design, res, REML, call, control) {
  X <- design$X
  p <- ncol(X)
  lay <- design$cov
  beta <- stats::setNames(as.numeric(res$beta), colnames(X))
  vc <- matrix(res$vcov_beta, p, p, dimnames = list(colnames(X), colnames(X)))
  covs <- h_group_covs(lay, res)
  natural <- lapply(covs, function(V) h_natural_from_cov(lay$type, V))
  terms <- if (is.null(design$re)) list() else design$re$terms
  re_cov <- lapply(seq_along(terms), function(t) {
    k <- ncol(terms[[t]]$Z)
    matrix(res$re_cov[[t]], k, k, dimnames = list(terms[[t]]$cnms, terms[[t]]$cnms))
  })
  n_cov <- length(unlist(natural)) +
    sum(vapply(re_cov, function(G) nrow(G) * (nrow(G) + 1) / 2, numeric(1)))
  fit <- structure(list(
    call = call,
    formula = design$formula,
    fixed_formula = design$fixed_formula,
    REML = REML,
    beta = beta,
    dropped = design$dropped,
    vcov = vc,
    sigma = 1,
    theta = numeric(0),
    rcov_theta = as.numeric(res$theta),
    objective = as.numeric(res$objective),
    cov_struct = list(type = lay$type, call = design$cov_term$call, covs = covs,
                      natural = natural, m = lay$m, grouped = lay$grouped,
                      visit_levels = lay$visit_levels, group_levels = lay$group_levels,
                      n_par = n_cov),
    re_cov = re_cov,
    re_terms_rcov = lapply(terms, function(t) t[c("group", "cnms", "n_levels")]),
    layout = lay,
    design_re = design$re,
    X = X,
    y = as.numeric(design$y),
    weights = rep(1, length(design$y)),
    has_weights = FALSE,
    offset = as.numeric(design$offset),
    fitted = as.numeric(res$fitted) + design$offset,
    frame = design$frame,
    design_info = design[intersect(names(design),
      c("fixed_terms", "xlevels", "contrasts", "X_full_colnames", "fixed_formula", "dropped"))],
    na_action = design$na_action,
    rcov_engine = res$engine,
    optinfo = list(converged = isTRUE(res$converged), gradient = res$gradient,
                   n_eval = res$n_eval, n_iter = res$n_iter, message = res$message),
    singular = FALSE,
    n = length(design$y), p = p, q = 0,
    control = control
  ), class = c("lmmr_rcov", "lmmr"))
  if (!fit$optinfo$converged) {
    h_warn(sprintf("The optimiser did not converge (%s) after %d evaluations; the estimates may be inaccurate.",
                   res$message, as.integer(res$n_eval)), "convergence")
  }
  # a random-effect variance at zero (relative to the residual variances)
  scale <- mean(vapply(covs, function(V) if (lay$type == "sp_exp") V[["variance"]] else
    mean(diag(V)), 0))
  fit$singular <- any(vapply(re_cov, function(G) {
    ev <- eigen(G, symmetric = TRUE, only.values = TRUE)$values
    min(ev) < 1e-6 * scale
  }, TRUE))
  if (fit$singular) {
    h_inform("boundary (singular) fit: a random-effect variance is estimated as (nearly) zero or its covariance matrix is singular; see ?is_singular",
             "singular")
  }
  fit
}

# ---------------------------------------------------------------------------
# Kenward-Roger and Satterthwaite ingredients
# ---------------------------------------------------------------------------

#' Covariance parameters of a residual-structure fit in SAS's
#' parametrisation (structure per group, then each random-effect term's
#' covariance, lower triangle by column)
#' @noRd
h_rcov_phi <- function(fit) {
  cs <- fit$cov_struct
  phi <- unlist(lapply(seq_along(cs$natural), function(g) {
    v <- cs$natural[[g]]
    if (cs$grouped) names(v) <- paste0(cs$group_levels[g], ":", names(v))
    v
  }))
  for (t in seq_along(fit$re_cov)) {
    G <- fit$re_cov[[t]]
    idx <- which(lower.tri(G, diag = TRUE), arr.ind = TRUE)
    v <- G[idx]
    grp <- fit$re_terms_rcov[[t]]$group
    names(v) <- ifelse(idx[, 1L] == idx[, 2L],
                       sprintf("%s:var(%s)", grp, rownames(G)[idx[, 1L]]),
                       sprintf("%s:cov(%s,%s)", grp, rownames(G)[idx[, 1L]], colnames(G)[idx[, 2L]]))
    phi <- c(phi, v)
  }
  phi
}

#' First and second derivatives of one group's matrix with respect to its
#' SAS-type parameters (central differences on the small m x m map; the
#' maps are polynomials or exponentials, so h ~ 1e-4 relative is accurate to
#' ~1e-8)
#' @noRd
h_group_derivs <- function(type, phi, m) {
  k <- length(phi)
  f <- function(x) h_cov_from_natural(type, x, m)
  h <- 1e-4 * pmax(abs(phi), 1e-2)
  d1 <- lapply(seq_len(k), function(j) {
    e <- replace(numeric(k), j, h[j])
    (f(phi + e) - f(phi - e)) / (2 * h[j])
  })
  f0 <- f(phi)
  d2 <- vector("list", k * k)
  # UN, CS and TOEP are linear in SAS's parameters: no second derivatives
  if (type %in% c("us", "cs", "toep")) return(list(d1 = d1, d2 = d2))
  for (i in seq_len(k)) for (j in seq_len(i)) {
    ei <- replace(numeric(k), i, h[i])
    ej <- replace(numeric(k), j, h[j])
    v <- if (i == j) (f(phi + ei) - 2 * f0 + f(phi - ei)) / h[i]^2 else
      (f(phi + ei + ej) - f(phi + ei - ej) - f(phi - ei + ej) + f(phi - ei - ej)) / (4 * h[i] * h[j])
    if (max(abs(v)) < 1e-7 * max(abs(f0))) v <- NULL # linear in these parameters
    d2[(j - 1) * k + i] <- list(v)
    d2[(i - 1) * k + j] <- list(v)
  }
  list(d1 = d1, d2 = d2)
}

#' Blocks of identical marginal covariance: list of (V, dV (list over all
#' parameters, NULL for zero), d2V (list k*k, NULL for zero), X array
#' nb x N x p, residual matrix nb x N)
#' @noRd
h_rcov_blocks <- function(fit, derivs = TRUE) {
  lay <- fit$layout
  cs <- fit$cov_struct
  o <- lay$order
  X <- fit$X[o, , drop = FALSE]
  res <- (fit$y - fit$fitted)[o]
  p <- ncol(X)
  phi <- h_rcov_phi(fit)
  k <- length(phi)
  npg <- length(cs$natural[[1L]])
  terms <- if (is.null(fit$design_re)) list() else fit$design_re$terms
  nre <- vapply(fit$re_cov, function(G) nrow(G) * (nrow(G) + 1) / 2, numeric(1))
  re_off <- npg * lay$n_groups + c(0, cumsum(nre))
  gder <- if (derivs && cs$type != "sp_exp") lapply(seq_len(lay$n_groups), function(g) {
    h_group_derivs(cs$type, cs$natural[[g]], lay$m)
  })
  ss <- lay$subj_start
  Zs <- lapply(terms, function(t) t$Z[o, , drop = FALSE])
  codes_s <- lapply(terms, function(t) as.integer(t$codes)[o])
  # residual block of one subject and its derivatives
  subj_R <- function(s, rows) {
    g <- lay$subj_group[s] + 1L
    off <- (g - 1L) * npg
    if (cs$type == "sp_exp") {
      C <- lay$coords_sorted[rows, , drop = FALSE]
      D <- as.matrix(stats::dist(C))
      s2 <- cs$natural[[g]][[1L]]
      th <- cs$natural[[g]][[2L]]
      Ex <- exp(-D / th)
      d1 <- list(Ex, s2 * Ex * D / th^2)
      d2 <- list(NULL, Ex * D / th^2, Ex * D / th^2, s2 * Ex * (D^2 / th^4 - 2 * D / th^3))
    } else {
      idx <- lay$visit_code[rows] + 1L
      d1 <- if (derivs) lapply(gder[[g]]$d1, function(M) M[idx, idx, drop = FALSE])
      d2 <- if (derivs) lapply(gder[[g]]$d2, function(M) if (!is.null(M)) M[idx, idx, drop = FALSE])
      s2 <- NULL
      Ex <- NULL
    }
    V <- if (cs$type == "sp_exp") s2 * Ex else cs$covs[[g]][idx, idx, drop = FALSE]
    list(V = V, d1 = d1, d2 = d2, off = off)
  }
  make_block <- function(subjects) {
    rows <- (ss[subjects[1L]] + 1L):ss[subjects[length(subjects)] + 1L]
    nb <- length(rows)
    V <- matrix(0, nb, nb)
    dV <- vector("list", k)
    d2V <- vector("list", k * k)
    for (s in subjects) {
      r_s <- (ss[s] + 1L):ss[s + 1L]
      loc <- r_s - rows[1L] + 1L
      Rs <- subj_R(s, r_s)
      V[loc, loc] <- Rs$V
      if (!derivs) next
      for (j in seq_len(npg)) {
        if (is.null(dV[[Rs$off + j]])) dV[[Rs$off + j]] <- matrix(0, nb, nb)
        dV[[Rs$off + j]][loc, loc] <- Rs$d1[[j]]
        for (i in seq_len(npg)) {
          M <- Rs$d2[[(j - 1L) * npg + i]]
          if (is.null(M)) next
          pos <- (Rs$off + j - 1L) * k + Rs$off + i
          if (is.null(d2V[[pos]])) d2V[[pos]] <- matrix(0, nb, nb)
          d2V[[pos]][loc, loc] <- M
        }
      }
    }
    for (t in seq_along(terms)) {
      Zt <- Zs[[t]][rows, , drop = FALSE]
      cd <- codes_s[[t]][rows]
      S <- outer(cd, cd, "==") * 1
      G <- fit$re_cov[[t]]
      V <- V + (Zt %*% G %*% t(Zt)) * S
      if (!derivs) next
      idx <- which(lower.tri(G, diag = TRUE), arr.ind = TRUE)
      for (q in seq_len(nrow(idx))) {
        a <- idx[q, 1L]
        b <- idx[q, 2L]
        D <- if (a == b) tcrossprod(Zt[, a]) else
          tcrossprod(Zt[, a], Zt[, b]) + tcrossprod(Zt[, b], Zt[, a])
        dV[[re_off[t] + q]] <- D * S
      }
    }
    list(V = V, dV = dV, d2V = d2V, rows = rows, nb = nb)
  }
  nsub <- length(lay$subj_ids)
  blocks <- list()
  if (!length(terms) && cs$type != "sp_exp") {
    pat <- lay$subj_pattern
    runs <- split(seq_len(nsub), factor(pat, levels = unique(pat)))
    for (subj in runs) {
      b <- make_block(subj[1L])
      rows <- (ss[subj[1L]] + 1L):ss[subj[length(subj)] + 1L]
      b$N <- length(subj)
      b$rows <- rows
      b$X <- array(X[rows, , drop = FALSE], c(b$nb, b$N, p))
      b$r <- matrix(res[rows], b$nb, b$N)
      blocks[[length(blocks) + 1L]] <- b
    }
  } else {
    cstart <- lay$cluster_start
    for (c in seq_len(length(cstart) - 1L)) {
      subj <- (cstart[c] + 1L):cstart[c + 1L]
      b <- make_block(subj)
      b$N <- 1L
      b$X <- array(X[b$rows, , drop = FALSE], c(b$nb, 1L, p))
      b$r <- matrix(res[b$rows], b$nb, 1L)
      blocks[[length(blocks) + 1L]] <- b
    }
  }
  list(blocks = blocks, phi = phi, k = k, p = p)
}

#' Satterthwaite and Kenward-Roger ingredients of a residual-structure fit
#' (computed in R; the reference implementation of `rs_rcov_model_inference()`,
#' kept for the tests)
#'
#' Observed information of the REML (ML) criterion in SAS's parametrisation
#' (`W = 2 H^-1`, H the Hessian of -2 log L), `P_r = X'V^-1 V_r V^-1 X`,
#' `Q_rs = X'V^-1 V_r V^-1 V_s V^-1 X`, `R_rs = X'V^-1 V_rs V^-1 X`, summed
#' over blocks of identical covariance via the tensor `sum_i U_i (x) U_i` of
#' `U_i = V^-1 X_i` (so each block class costs the same whatever its size).
#' @param linear drop the second-derivative term R (SAS's KR(LINEAR)).
#' @noRd
h_rcov_inference_parts_r <- function(object, method = "satterthwaite", linear = FALSE) {
  h_require_reml_for_kr(object, method %in% c("kenward-roger", "both"))
  nb_max <- max(diff(object$layout$subj_start[object$layout$cluster_start + 1L]))
  if (length(object$beta)^2 * nb_max^2 > 5e7) {
    h_abort(sprintf("Small-sample inference is not available yet for clusters this large (%d observations in one cluster with %d fixed effects); use ddf = \"none\".",
                    nb_max, length(object$beta)), "too_large")
  }
  bl <- h_rcov_blocks(object)
  k <- bl$k
  p <- bl$p
  Phi <- object$vcov
  vphi <- as.vector(Phi)
  Pm <- matrix(0, p * p, k)
  trPhiQ <- numeric(k * k)
  trPhiR <- numeric(k * k)
  trVV <- matrix(0, k, k)
  trVd2 <- numeric(k * k)
  eVVe <- numeric(k * k)
  ed2e <- numeric(k * k)
  gm <- matrix(0, p, k)
  # per block: V^-1, the tensor T2 = sum_i U_i (x) U_i (p^2 x nb^2) and
  # K_rs = dV_r V^-1 dV_s (nb^2 x k^2, only for nonzero pairs)
  block_parts <- function(b) {
    nb <- b$nb
    N <- b$N
    Vi <- solve(b$V)
    U <- array(Vi %*% matrix(b$X, nb, N * p), c(nb, N, p))
    Umat <- matrix(aperm(U, c(2L, 1L, 3L)), N, nb * p)
    T2 <- matrix(aperm(array(crossprod(Umat), c(nb, p, nb, p)), c(2L, 4L, 1L, 3L)),
                 p * p, nb * nb)
    nz <- which(!vapply(b$dV, is.null, TRUE))
    dV <- lapply(seq_len(k), function(j) if (is.null(b$dV[[j]])) matrix(0, nb, nb) else b$dV[[j]])
    Kq <- matrix(0, nb * nb, length(nz)^2)
    dVnz <- do.call(cbind, dV[nz])
    for (a in seq_along(nz)) {
      A <- dV[[nz[a]]] %*% Vi
      # column (s, r) of the nonzero pairs, s fastest
      Kq[, (a - 1L) * length(nz) + seq_along(nz)] <- matrix(A %*% dVnz, nb * nb, length(nz))
    }
    # K_rs for r = nz[a] (outer), s = nz[b] (inner) is dV_r V^-1 dV_s:
    # pair index in the k x k layout (column s, row r): (s - 1) k + r
    pairs <- as.vector(outer(nz, (nz - 1L) * k, "+"))
    pairs <- as.vector(t(matrix(pairs, length(nz))))
    list(Vi = Vi, U = U, Umat = Umat, T2 = T2, nz = nz, dV = dV, Kq = Kq, pairs = pairs)
  }
  for (b in bl$blocks) {
    nb <- b$nb
    N <- b$N
    bp <- block_parts(b)
    E <- bp$Vi %*% b$r
    Fm <- matrix(aperm(array(crossprod(bp$Umat, t(E)), c(nb, p, nb)), c(2L, 1L, 3L)),
                 p, nb * nb)
    E2 <- as.vector(tcrossprod(E))
    nz <- bp$nz
    Kmat <- matrix(vapply(bp$dV, as.vector, numeric(nb * nb)), nb * nb, k)
    Pm[, nz] <- Pm[, nz] + bp$T2 %*% Kmat[, nz, drop = FALSE]
    gm[, nz] <- gm[, nz] + Fm %*% Kmat[, nz, drop = FALSE]
    B <- lapply(bp$dV, function(D) bp$Vi %*% D)
    Bv <- matrix(vapply(B, as.vector, numeric(nb * nb)), nb * nb, k)
    Btv <- matrix(vapply(B, function(M) as.vector(t(M)), numeric(nb * nb)), nb * nb, k)
    trVV <- trVV + N * crossprod(Bv, Btv)
    tb <- drop(crossprod(bp$T2, vphi))
    trPhiQ[bp$pairs] <- trPhiQ[bp$pairs] + drop(crossprod(tb, bp$Kq))
    eVVe[bp$pairs] <- eVVe[bp$pairs] + drop(crossprod(E2, bp$Kq))
    for (q in which(!vapply(b$d2V, is.null, TRUE))) {
      D2 <- as.vector(b$d2V[[q]])
      trVd2[q] <- trVd2[q] + N * sum(as.vector(bp$Vi) * D2)
      ed2e[q] <- ed2e[q] + sum(E2 * D2)
      trPhiR[q] <- trPhiR[q] + sum(tb * D2)
    }
  }
  P <- lapply(seq_len(k), function(r) matrix(Pm[, r], p, p))
  J <- vapply(P, function(Pr) as.vector(Phi %*% Pr %*% Phi), numeric(p * p))
  J <- matrix(J, p * p, k)
  trPPPP <- crossprod(J, Pm)
  gPg <- crossprod(gm, Phi %*% gm)
  tq <- matrix(trPhiQ, k, k)
  tq <- (tq + t(tq)) / 2
  H <- if (isTRUE(object$REML)) {
    -(trVV - 2 * tq + trPPPP) + (matrix(trVd2, k, k) - matrix(trPhiR, k, k)) +
      2 * (matrix(eVVe, k, k) - gPg) - matrix(ed2e, k, k)
  } else {
    -trVV + matrix(trVd2, k, k) + 2 * (matrix(eVVe, k, k) - gPg) - matrix(ed2e, k, k)
  }
  H <- (H + t(H)) / 2
  W <- tryCatch(2 * solve(H), error = function(e) {
    h_abort("The observed information of the covariance parameters is singular (a boundary or unidentified fit); small-sample degrees of freedom are not available.",
            "singular_information")
  })
  dimnames(W) <- list(names(bl$phi), names(bl$phi))
  out <- list()
  if (method %in% c("satterthwaite", "both")) {
    out$satterthwaite <- list(vcov_beta = Phi, vcov_varpar = W, hessian = H,
                              jacobian = lapply(seq_len(k), function(r) matrix(J[, r], p, p)))
  }
  if (method %in% c("kenward-roger", "both")) {
    # second pass: sum_rs W_rs Q_rs and sum_rs W_rs R_rs
    vw <- as.vector(W)
    QW <- numeric(p * p)
    RW <- numeric(p * p)
    for (b in bl$blocks) {
      bp <- block_parts(b)
      QW <- QW + drop(bp$T2 %*% (bp$Kq %*% vw[bp$pairs]))
      if (!linear) {
        qs <- which(!vapply(b$d2V, is.null, TRUE))
        if (length(qs)) {
          D2w <- Reduce(`+`, Map(function(q) vw[q] * as.vector(b$d2V[[q]]), qs))
          RW <- RW + drop(bp$T2 %*% D2w)
        }
      }
    }
    PWP <- matrix(0, p, p)
    for (r in seq_len(k)) PWP <- PWP + P[[r]] %*% Phi %*% matrix(Pm %*% W[, r], p, p)
    S <- matrix(QW, p, p) - PWP - matrix(RW, p, p) / 4
    Phi_adj <- Phi + 2 * Phi %*% S %*% Phi
    Phi_adj <- (Phi_adj + t(Phi_adj)) / 2
    dimnames(Phi_adj) <- dimnames(Phi)
    out$kenward_roger <- list(phi = Phi, phi_adj = Phi_adj, w = W, p_list = P,
                              info = H / 2, linear = linear)
  }
  out
}

#' Satterthwaite and Kenward-Roger ingredients of a residual-structure fit
#'
#' Observed information of the REML (ML) criterion in SAS's parametrisation
#' (`W = 2 H^-1`), the `P_r` matrices, the Jacobian of `vcov(beta)` and the
#' Kenward-Roger adjusted covariance, computed in Rust cluster by cluster
#' (`rs_rcov_model_inference()` on the fit's kept model; the same quantities as
#' `h_rcov_inference_parts_r()`).
#' @param theta unconstrained parameters (default: the fit's).
#' @param linear drop the second-derivative term (SAS's KR(LINEAR)).
#' @noRd
h_rcov_inference_parts <- function(object, method = "satterthwaite", linear = FALSE,
                                   theta = object$rcov_theta) {
  h_require_reml_for_kr(object, method %in% c("kenward-roger", "both"))
  terms <- if (is.null(object$design_re)) list() else object$design_re$terms
  ptr <- h_rcov_engine_ptr(h_rcov_fit_engine(object), object$X, object$y - object$offset,
                           object$layout, terms)
  kr <- method %in% c("kenward-roger", "both")
  res <- h_check_rust_result(rs_rcov_model_inference(
    ptr, theta = as.numeric(theta), reml = isTRUE(object$REML), kr = kr, linear = linear))
  p <- length(object$beta)
  k <- length(res$phi)
  nm <- names(h_rcov_phi(object))
  Phi <- res$vcov_beta
  dimnames(Phi) <- dimnames(object$vcov)
  H <- res$hessian
  if (is.null(res$w)) {
    h_abort("The observed information of the covariance parameters is singular (a boundary or unidentified fit); small-sample degrees of freedom are not available.",
            "singular_information")
  }
  W <- res$w
  dimnames(W) <- list(nm, nm)
  P <- lapply(seq_len(k), function(r) matrix(res$p_list[(r - 1) * p * p + seq_len(p * p)], p, p))
  J <- lapply(seq_len(k), function(r) matrix(res$jacobian[(r - 1) * p * p + seq_len(p * p)], p, p))
  out <- list()
  if (method %in% c("satterthwaite", "both")) {
    out$satterthwaite <- list(vcov_beta = Phi, vcov_varpar = W, hessian = H, jacobian = J)
  }
  if (kr) {
    Phi_adj <- res$vcov_adj
    dimnames(Phi_adj) <- dimnames(Phi)
    out$kenward_roger <- list(phi = Phi, phi_adj = Phi_adj, w = W, p_list = P,
                              info = H / 2, linear = linear)
  }
  out
}

# ---------------------------------------------------------------------------
# Fits at given covariance parameters, refits
# ---------------------------------------------------------------------------

#' Partial autocorrelations from autocorrelations rho_1..rho_k
#' (Durbin-Levinson; the inverse of the kernel's map)
#' @noRd
h_acf_to_pacf <- function(rho) {
  k <- length(rho)
  if (k == 0L) return(numeric(0))
  pacf <- numeric(k)
  a <- numeric(0)
  for (j in seq_len(k)) {
    num <- rho[j] - sum(a * rev(rho[seq_len(j - 1L)]))
    den <- 1 - sum(a * rho[seq_len(j - 1L)])
    pj <- num / den
    a <- c(a - pj * rev(a), pj)
    pacf[j] <- pj
  }
  pacf
}

#' Unconstrained kernel parameters of one group from its matrix (or the
#' sp_exp pair)
#' @noRd
h_theta_group <- function(type, V) {
  if (type == "sp_exp") {
    rho <- unname(V[["rho"]])
    return(c(log(unname(V[["variance"]])), log(rho / (1 - rho))))
  }
  m <- nrow(V)
  R <- stats::cov2cor(V)
  cs_t <- function(r) log((1 + (m - 1) * r) / (1 - r))
  switch(type,
    us = {
      L <- t(chol(V))
      unlist(lapply(seq_len(m), function(j) c(log(L[j, j]), L[seq_len(m) > j, j])))
    },
    cs = c(log(V[1L, 1L]), cs_t(R[2L, 1L])),
    csh = c(0.5 * log(diag(V)), cs_t(R[2L, 1L])),
    ar1 = c(log(V[1L, 1L]), atanh(R[2L, 1L])),
    ar1h = c(0.5 * log(diag(V)), atanh(R[2L, 1L])),
    toep = c(log(V[1L, 1L]), atanh(h_acf_to_pacf(R[-1L, 1L]))),
    toeph = c(0.5 * log(diag(V)), atanh(h_acf_to_pacf(R[-1L, 1L]))),
    adh = c(0.5 * log(diag(V)), atanh(R[cbind(2:m, 1:(m - 1L))]))
  )
}

#' Unconstrained parameters of a residual-structure fit from covariance
#' parameters in SAS's parametrisation (the order of `h_rcov_phi()`)
#' @noRd
h_rcov_theta_from_phi <- function(fit, phi) {
  cs <- fit$cov_struct
  npg <- length(cs$natural[[1L]])
  ng <- length(cs$natural)
  if (length(phi) != length(h_rcov_phi(fit))) {
    h_abort(sprintf("`phi` must have %d covariance parameters.", length(h_rcov_phi(fit))), "argument")
  }
  phi <- unname(as.numeric(phi))
  th <- unlist(lapply(seq_len(ng), function(g) {
    V <- h_cov_from_natural(cs$type, phi[(g - 1L) * npg + seq_len(npg)], cs$m)
    h_theta_group(cs$type, V)
  }))
  off <- npg * ng
  for (G in fit$re_cov) {
    k <- nrow(G)
    idx <- which(lower.tri(G, diag = TRUE))
    Gn <- matrix(0, k, k)
    Gn[idx] <- phi[off + seq_along(idx)]
    Gn[upper.tri(Gn)] <- t(Gn)[upper.tri(Gn)]
    L <- t(chol(Gn))
    th <- c(th, L[idx])
    off <- off + length(idx)
  }
  th
}

#' The design of a residual-structure fit, rebuilt from the fit's plain data
#' @noRd
h_rcov_design_of <- function(fit, y = fit$y) {
  c(list(X = fit$X, y = y, offset = fit$offset, cov = fit$layout, re = fit$design_re,
         formula = fit$formula, fixed_formula = fit$fixed_formula,
         dropped = fit$dropped, frame = fit$frame, na_action = fit$na_action,
         cov_term = list(call = fit$cov_struct$call)),
    fit$design_info[setdiff(names(fit$design_info), c("fixed_formula", "dropped"))])
}

#' A residual-structure fit at given covariance parameters (no optimisation)
#'
#' `phi` in SAS's parametrisation (as `h_rcov_phi()`); the returned fit has
#' the GLS fixed effects, criterion and inference at those parameters
#' (used to evaluate Kenward-Roger at another program's estimates).
#' @noRd
h_rcov_fit_at <- function(fit, phi) {
  theta <- h_rcov_theta_from_phi(fit, phi)
  design <- h_rcov_design_of(fit)
  res <- h_fit_rcov_design(design, REML = fit$REML, control = fit$control,
                           theta = theta, optimize = FALSE, engine = h_rcov_fit_engine(fit))
  out <- h_build_rcov_fit(design, res, REML = fit$REML, call = fit$call, control = fit$control)
  out$formula_input <- fit$formula_input
  out
}
