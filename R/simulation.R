# Simulation-based inference: one parametric-bootstrap engine (simulate a
# response, refit, keep a statistic) behind the parametric bootstrap LRT
# (anova(fit0, fit1, test = "PB")), bootstrap_lmm() (lme4's bootMer()),
# confint(method = "boot") and the bootstrap ICC interval.
#
# Every refit goes through h_refit_response() (one response) or its batched
# form h_refit_batch() (a matrix of responses in one Rust call, only the
# estimates); the loop (batches of simulated responses drawn in the main
# process, refits in parallel, progress bar, failures and non-convergence
# counted) is h_sim_apply().

# ---------------------------------------------------------------------------
# Refits

#' Everything a refit to a new response needs, prepared once per loop
#'
#' @param fit an `"lmmr"` fit.
#' @param REML REML (`TRUE`) or ML (`FALSE`) refits.
#' @return A list (`fit`, `design`, `control`, `REML`).
#' @noRd
h_refit_prepare <- function(fit, REML = fit$REML) {
  control <- fit$control
  if (is.null(control)) control <- lmm_control()
  # warm start from the fit's estimates, as lme4's refit(), without the
  # extra restarts of a first fit (a refit whose optimum cannot be confirmed
  # is still restarted)
  control$restarts <- FALSE
  fit$control <- control
  prep <- list(fit = fit, design = h_design_from_fit(fit, fit$y), control = control,
               REML = isTRUE(REML), engine = h_fit_engine(fit),
               theta0 = as.numeric(fit$theta))
  prep$metric <- h_refit_metric(prep)
  prep$batch <- !is.null(prep$metric)
  prep
}

#' Starting metric of batched refits (see h_refit_batch()): the Hessian of
#' the criterion at the fit's theta for the fit's own response, computed
#' once per loop, so every refit (whatever its batch, worker or number of
#' cores) starts from the same point with the same metric
#' @return a k x k matrix, or NULL when the batched path does not apply
#'   (option `lmmr.refit_batch = FALSE`, terms whose variance the data
#'   cannot identify, no covariance parameters) or the metric cannot be
#'   computed; the one-at-a-time path is then used.
#' @noRd
h_refit_metric <- function(prep) {
  if (!isTRUE(getOption("lmmr.refit_batch", TRUE))) return(NULL)
  design <- prep$design
  if (!length(prep$theta0) || length(h_unidentifiable_terms(design))) return(NULL)
  ptr <- h_engine_ptr(prep$engine, as.numeric(design$y - design$offset),
                      function() design)
  res <- rs_model_refit_metric(ptr, prep$theta0, prep$REML)
  if (!is.null(res$error_kind)) return(NULL)
  res$metric
}

#' Refit the prepared model to every column of `Y` in one Rust call
#'
#' The batched form of h_refit_response(): same start (the fit's theta),
#' same control, only the estimates (criterion, theta, beta, sigma), no
#' random effects or fitted values. Each refit first takes a light path
#' (quasi-Newton from the metric of h_refit_metric(), end point confirmed by
#' the optimiser's own check); a refit it cannot confirm is redone by the
#' full path of a one-at-a-time refit, so non-convergence is still reported.
#' @param Y n x m matrix of responses on the rows of the fit (offset
#'   included).
#' @return list: `objective`, `sigma`, `converged`, `light`, `n_eval`,
#'   `n_grad`, `error` (NA or the message of a failed refit), vectors of
#'   length m; `theta` (k x m) and `beta` (p x m).
#' @noRd
h_refit_batch <- function(prep, Y) {
  design <- prep$design
  engine <- prep$engine
  if (is.null(engine$ptr) || !rs_model_is_live(engine$ptr)) {
    h_engine_build(engine, design)
  }
  ys <- Y - as.numeric(design$offset)
  storage.mode(ys) <- "double"
  control <- prep$control
  res <- rs_model_refit_many(engine$ptr, ys, prep$theta0, prep$metric, prep$REML,
                             max_iter = control$max_iter, tol = control$tol,
                             max_time = if (is.null(control$max_time)) Inf else control$max_time)
  # the model now holds the last simulated response
  engine$resp <- NULL
  h_check_rust_result(res)
}

#' The result of a batch statistic for h_sim_apply(): `val` (m x n_out)
#' with attributes `converged` and `errors` (per refit), from one or more
#' h_refit_batch() results
#' @noRd
h_batch_result <- function(val, ...) {
  rs <- list(...)
  err <- rep(NA_character_, nrow(val))
  conv <- rep(TRUE, nrow(val))
  for (r in rs) {
    failed <- !is.na(r$error)
    err[failed & is.na(err)] <- r$error[failed & is.na(err)]
    conv <- conv & r$converged
  }
  val[!is.na(err), ] <- NA_real_
  structure(val, converged = conv | !is.na(err), errors = err)
}

#' The one function through which every simulation refit goes
#'
#' Refits the prepared model to the response `y` (on the rows of the fit,
#' offset included). With `full = FALSE` only the estimates are computed (the
#' list returned by the Rust kernel: `theta`, `beta`, `sigma`, `objective`,
#' `converged`, ...); with `full = TRUE` an `"lmmr"` fit as [refit()] returns
#' it (for user statistics). The refits use the fit's model kept in Rust
#' (only the response changes; forked workers get their own copy).
#' @noRd
h_refit_response <- function(prep, y, full = FALSE) {
  # the fit itself has said which variances cannot be identified; its
  # refits would say it again every time
  quiet <- function(w) invokeRestart("muffleWarning")
  if (full) {
    return(withCallingHandlers(
      suppressMessages(refit.lmmr(prep$fit, y, REML = prep$REML, theta = prep$theta0)),
      lmmr_warning_not_identifiable = quiet))
  }
  design <- prep$design
  design$y <- y
  withCallingHandlers(h_fit_design(design, REML = prep$REML, control = prep$control,
                                   theta = prep$theta0, engine = prep$engine),
                      lmmr_warning_not_identifiable = quiet)
}

# ---------------------------------------------------------------------------
# The loop

#' Number of cores for simulation loops
#' @noRd
h_check_ncores <- function(ncores) {
  if (is.null(ncores)) ncores <- 1L
  if (!is.numeric(ncores) || length(ncores) != 1L || !is.finite(ncores) ||
      ncores < 1 || ncores != round(ncores)) {
    h_abort(sprintf("`ncores` must be a single whole number >= 1; got %s.",
                    paste(deparse(ncores), collapse = " ")), "argument")
  }
  ncores <- as.integer(ncores)
  if (ncores > 1L && .Platform$OS.type == "windows") {
    h_warn("`ncores` > 1 uses forked processes, which Windows does not have; running on one core.",
           "ncores")
    ncores <- 1L
  }
  ncores
}

#' @noRd
h_check_nsim <- function(nsim, lower = 1) {
  if (!is.numeric(nsim) || length(nsim) != 1L || !is.finite(nsim) ||
      nsim < lower || nsim != round(nsim)) {
    h_abort(sprintf("`nsim` must be a single whole number >= %d; got %s.",
                    as.integer(lower), paste(deparse(nsim), collapse = " ")),
            "argument")
  }
  as.integer(nsim)
}

#' Set the seed for a simulation loop as [stats::simulate()] does
#'
#' @return The random number state to store (the seed with its RNG kind,
#'   or `.Random.seed`), with attribute `"old"` the caller's state when a
#'   seed was set; give it to h_restore_seed() on exit.
#' @noRd
h_sim_seed <- function(seed) {
  if (!exists(".Random.seed", envir = .GlobalEnv, inherits = FALSE)) {
    stats::runif(1)
  }
  if (is.null(seed)) return(get(".Random.seed", envir = .GlobalEnv))
  old_seed <- get(".Random.seed", envir = .GlobalEnv)
  set.seed(seed)
  structure(seed, kind = as.list(RNGkind()), old = old_seed)
}

#' Restore the caller's random number stream after a seeded loop
#' @noRd
h_restore_seed <- function(state) {
  old <- attr(state, "old")
  if (!is.null(old)) assign(".Random.seed", old, envir = .GlobalEnv)
  invisible(NULL)
}

#' The stored form of a state from h_sim_seed()
#' @noRd
h_seed_value <- function(state) {
  attr(state, "old") <- NULL
  state
}

#' `nb` simulated responses from `fit` (an n x nb matrix on the rows of the
#' fit), drawn from the global random number stream
#'
#' Parametric: unconditional ([simulate.lmmr()], new random effects), or
#' conditional on the BLUPs with `use.u = TRUE`. Semiparametric (lme4's
#' `type = "semiparametric"`, only with `use.u = TRUE`): fitted values plus
#' residuals resampled with replacement.
#' @noRd
h_sim_responses <- function(fit, nb, use.u = FALSE, type = "parametric") {
  if (type == "semiparametric") {
    mu <- fit$fitted
    r <- fit$y - fit$fitted
    return(vapply(seq_len(nb), function(i) mu + sample(r, replace = TRUE),
                  numeric(fit$n)))
  }
  Y <- as.matrix(simulate.lmmr(fit, nsim = nb, use.u = use.u))
  if (nrow(Y) != fit$n && !is.null(fit$na_action)) {
    Y <- Y[-as.integer(fit$na_action), , drop = FALSE]
  }
  dimnames(Y) <- NULL
  Y
}

#' Should a simulation loop show a progress bar?
#' @noRd
h_progress_default <- function() {
  isTRUE(getOption("lmmr.progress", interactive()))
}

#' Apply a statistic to refits of simulated responses
#'
#' The responses are drawn in the main process, batch after batch, from one
#' random number stream, so the results do not depend on `ncores`; the
#' refits of a batch (deterministic) run in parallel on `ncores` forked
#' processes. A refit that fails gives a row of `NA`; `fun` may flag a refit
#' whose optimiser did not converge with attribute `"converged"` `FALSE`.
#'
#' @param sim_fit the fit to simulate from.
#' @param nsim number of simulations.
#' @param fun function of a response vector returning a numeric vector of
#'   length `n_out`.
#' @param progress show a cli progress bar (shown by cli only after about two
#'   seconds).
#' @param fun_batch `NULL` or the batched form of `fun`: a function of an
#'   n x m matrix of responses returning an m x n_out matrix with attributes
#'   `converged` and `errors` (per column; see h_batch_result()). It is
#'   called once per batch (once per worker with several cores); a batch
#'   that fails as a whole is redone column by column with `fun`.
#' @return An nsim x n_out matrix with attributes `n_failed`,
#'   `n_nonconverged` and `errors` (the distinct error messages).
#' @noRd
h_sim_apply <- function(sim_fit, nsim, fun, n_out, ncores = 1L,
                        progress = h_progress_default(), use.u = FALSE,
                        type = "parametric", label = "Parametric bootstrap",
                        fun_batch = NULL) {
  out <- matrix(NA_real_, nsim, n_out)
  conv <- rep(TRUE, nsim)
  errors <- character(0)
  one <- function(y) {
    val <- tryCatch(fun(y),
                    # Ctrl-C inside Rust stops the loop, not just one refit
                    lmmr_error_interrupted = function(e) stop(e),
                    error = function(e) {
                      structure(rep(NA_real_, n_out), error = conditionMessage(e))
                    })
    if (length(val) != n_out) {
      val <- structure(rep(NA_real_, n_out),
                       error = sprintf("the statistic returned %d values instead of %d",
                                       length(val), n_out))
    }
    val
  }
  batch <- h_sim_batch(nsim, sim_fit$n, ncores, batched = !is.null(fun_batch))
  bar <- NULL
  if (isTRUE(progress) && requireNamespace("cli", quietly = TRUE)) {
    bar <- cli::cli_progress_bar(label, total = nsim, .envir = environment())
  }
  done <- 0L
  while (done < nsim) {
    nb <- min(batch, nsim - done)
    Y <- h_sim_responses(sim_fit, nb, use.u = use.u, type = type)
    if (!is.null(fun_batch)) {
      h_sim_apply_batch(Y, fun_batch, one, n_out, ncores, done, function(rows, val, cv, err) {
        out[rows, ] <<- val
        conv[rows] <<- cv
        errors <<- c(errors, err)
      })
      done <- done + nb
      if (!is.null(bar)) cli::cli_progress_update(id = bar, set = done)
      next
    }
    res <- if (ncores > 1L) {
      parallel::mclapply(seq_len(nb), function(i) one(Y[, i]),
                         mc.cores = ncores, mc.preschedule = TRUE)
    } else {
      lapply(seq_len(nb), function(i) one(Y[, i]))
    }
    for (i in seq_len(nb)) {
      r <- res[[i]]
      if (inherits(r, "try-error")) {
        r <- structure(rep(NA_real_, n_out), error = as.character(r))
      }
      if (!is.null(attr(r, "error"))) errors <- c(errors, attr(r, "error"))
      if (isFALSE(attr(r, "converged"))) conv[done + i] <- FALSE
      out[done + i, ] <- as.numeric(r)
    }
    done <- done + nb
    if (!is.null(bar)) cli::cli_progress_update(id = bar, set = done)
  }
  if (!is.null(bar)) cli::cli_progress_done(id = bar)
  n_failed <- sum(!stats::complete.cases(out))
  structure(out, n_failed = n_failed, n_nonconverged = sum(!conv),
            errors = unique(errors))
}

#' One batch of h_sim_apply() through its batched statistic: the columns of
#' `Y` split into one block per core, each block one call of `fun_batch`
#' (a block that fails as a whole is redone column by column with `one`);
#' `store(rows, values, converged, errors)` keeps the results of rows
#' `done + 1, ...`.
#' @noRd
h_sim_apply_batch <- function(Y, fun_batch, one, n_out, ncores, done, store) {
  nb <- ncol(Y)
  blocks <- if (ncores > 1L && nb > 1L) {
    split(seq_len(nb), cut(seq_len(nb), min(ncores, nb), labels = FALSE))
  } else {
    list(seq_len(nb))
  }
  run <- function(idx) {
    val <- tryCatch(fun_batch(Y[, idx, drop = FALSE]),
                    lmmr_error_interrupted = function(e) stop(e),
                    error = function(e) NULL)
    if (is.null(val) || !identical(dim(val), c(length(idx), as.integer(n_out)))) {
      rs <- lapply(idx, function(i) one(Y[, i]))
      val <- matrix(vapply(rs, as.numeric, numeric(n_out)), ncol = n_out, byrow = TRUE)
      attr(val, "converged") <- !vapply(rs, function(r) isFALSE(attr(r, "converged")), logical(1))
      attr(val, "errors") <- vapply(rs, function(r) {
        e <- attr(r, "error")
        if (is.null(e)) NA_character_ else as.character(e)[1L]
      }, character(1))
    }
    val
  }
  res <- if (length(blocks) > 1L) {
    parallel::mclapply(blocks, run, mc.cores = ncores, mc.preschedule = TRUE)
  } else {
    lapply(blocks, run)
  }
  for (b in seq_along(blocks)) {
    idx <- blocks[[b]]
    r <- res[[b]]
    if (inherits(r, "try-error")) {
      if (grepl("Interrupted", as.character(r))) stop(as.character(r), call. = FALSE)
      store(done + idx, NA_real_, TRUE, as.character(r))
      next
    }
    err <- attr(r, "errors")
    store(done + idx, matrix(as.numeric(r), nrow = length(idx)),
          attr(r, "converged"), err[!is.na(err)])
  }
  invisible(NULL)
}

#' Number of responses simulated (and kept in memory) per batch: about a
#' hundredth of the loop on one core (at least 50) and a tenth with several
#' (each batch forks the workers once), at most 2^23 numbers (64 MB). With
#' `batched` refits (a fraction of a millisecond each) a worker gets at least
#' 250 of them per fork, so that forking does not cost more than it saves.
#' The batch size does not change the results (one random number stream).
#' @noRd
h_sim_batch <- function(nsim, n, ncores, batched = FALSE) {
  want <- if (ncores > 1L) max(ncores * if (batched) 250L else 25L, ceiling(nsim / 10)) else
    max(50L, ceiling(nsim / 100))
  as.integer(max(1L, min(nsim, want, floor(2^23 / max(1, n)))))
}

#' Warn about failed and non-converged refits of a simulation loop
#' @noRd
h_sim_report <- function(res, nsim) {
  nf <- attr(res, "n_failed")
  nc <- attr(res, "n_nonconverged")
  if (isTRUE(nf > 0)) {
    msg <- attr(res, "errors")
    h_warn(sprintf("%d of %d bootstrap refits failed%s.", nf, nsim,
                   if (length(msg)) paste0(" (", paste(utils::head(msg, 3), collapse = "; "), ")") else ""),
           "bootstrap_failed")
  }
  if (isTRUE(nc > 0)) {
    h_warn(sprintf("The optimiser did not converge in %d of %d bootstrap refits; their values are kept.",
                   nc, nsim), "convergence")
  }
  invisible(res)
}

# ---------------------------------------------------------------------------
# Parametric bootstrap likelihood-ratio test

#' Parametric bootstrap LRT between consecutive fits of an anova() table
#'
#' As `pbkrtest::PBmodcomp()`: every fit is (re)fitted by ML; for each pair
#' of consecutive fits (sorted by number of parameters) `nsim` responses are
#' simulated from the smaller ML fit, both models are refitted by ML to each,
#' and the p-value is `(1 + #{LRT* > LRT}) / (1 + #{LRT* > 0})` (simulated
#' statistics that are not positive are left out, as pbkrtest does).
#' @noRd
h_anova_pb <- function(fits, names, nsim = 1000, seed = NULL, ncores = 1L,
                       progress = h_progress_default()) {
  nsim <- h_check_nsim(nsim)
  ncores <- h_check_ncores(ncores)
  is_lm <- vapply(fits, h_is_lm, logical(1))
  if (any(is_lm)) {
    h_abort("test = \"PB\" compares fits made by lmm(); for a test of a single variance component against a linear model use exact_rlrt() or exact_lrt().",
            "argument")
  }
  for (f in fits) {
    h_check_lmm(f, "...")
    if (inherits(f, "lmmr_db")) h_rows_in_database("anova(test = \"PB\")")
    if (inherits(f, "lmmr_rcov")) h_rcov_unsupported("anova(test = \"PB\")")
  }
  h_check_same_data(fits)
  reml <- vapply(fits, function(f) isTRUE(f$REML), logical(1))
  if (any(reml)) {
    h_inform("refitting model(s) with ML (instead of REML) for the parametric bootstrap test, as pbkrtest::PBmodcomp", "refit")
    fits[reml] <- lapply(fits[reml], function(f) {
      ml <- suppressMessages(refit.lmmr(f, f$y, REML = FALSE))
      ml$call$REML <- FALSE
      ml$formula_input <- f$formula_input
      ml
    })
  }
  tab <- h_anova_lrt(fits, names, refit = FALSE)
  ord <- order(vapply(fits, h_npar, numeric(1)))
  rng_state <- h_sim_seed(seed)
  on.exit(h_restore_seed(rng_state), add = TRUE)
  pb <- rep(NA_real_, length(fits))
  details <- vector("list", length(fits))
  for (i in seq_along(ord)[-1]) {
    if (is.na(tab$Df[i]) || tab$Df[i] <= 0) next
    small <- fits[[ord[i - 1L]]]
    large <- fits[[ord[i]]]
    ref <- h_pb_refdist(small, large, nsim, ncores = ncores, progress = progress)
    tobs <- tab$Chisq[i]
    ok <- ref[is.finite(ref)]
    refpos <- ok[ok > 0]
    n_extreme <- sum(tobs < refpos)
    pb[i] <- (1 + n_extreme) / (1 + length(refpos))
    details[[i]] <- list(ref = as.numeric(ref), nsim = nsim, npos = length(refpos),
                         n_extreme = n_extreme)
  }
  tab[["Pr(PB)"]] <- pb
  attr(tab, "heading") <- c(attr(tab, "heading"), sprintf(
    "Pr(PB): parametric bootstrap with %d simulations from the smaller (ML) fit, ML refits; (1 + #{LRT* > LRT}) / (1 + #{LRT* > 0}), as pbkrtest::PBmodcomp",
    nsim))
  attr(tab, "pb") <- details
  attr(tab, "seed") <- h_seed_value(rng_state)
  tab
}

#' Reference distribution of the LRT: responses simulated from the small
#' ML fit, both models refitted by ML
#' @return nsim vector of LRT statistics (NA for failed refits), with the
#'   attributes of h_sim_apply()
#' @noRd
h_pb_refdist <- function(small, large, nsim, ncores = 1L,
                         progress = h_progress_default()) {
  ps <- h_refit_prepare(small, REML = FALSE)
  pl <- h_refit_prepare(large, REML = FALSE)
  fun <- function(y) {
    rs <- h_refit_response(ps, y)
    rl <- h_refit_response(pl, y)
    structure(rs$objective - rl$objective,
              converged = isTRUE(rs$converged) && isTRUE(rl$converged))
  }
  fun_batch <- if (ps$batch && pl$batch) function(Y) {
    rs <- h_refit_batch(ps, Y)
    rl <- h_refit_batch(pl, Y)
    h_batch_result(matrix(rs$objective - rl$objective, ncol = 1L), rs, rl)
  }
  res <- h_sim_apply(small, nsim, fun, 1L, ncores = ncores, progress = progress,
                     label = "Parametric bootstrap LRT", fun_batch = fun_batch)
  h_sim_report(res, nsim)
  structure(res[, 1L], n_failed = attr(res, "n_failed"),
            n_nonconverged = attr(res, "n_nonconverged"))
}

# ---------------------------------------------------------------------------
# bootstrap_lmm(): lme4's bootMer()

#' Parametric bootstrap of a statistic of a linear mixed model
#'
#' The analogue of `lme4::bootMer()`: `nsim` responses are simulated from
#' the fit, the model is refitted to each (same REML/ML setting) and the
#' statistic `FUN` is computed on each refit. The simulated responses are
#' drawn in the main process from one random number stream and only the
#' refits run in parallel, so with a `seed` the result is the same whatever
#' `ncores`.
#'
#' Refits that fail give a row of `NA` in `t` (counted, with a warning);
#' refits whose optimiser did not converge are kept and counted (with a
#' warning). A progress bar (package cli, if installed) appears for loops
#' longer than about two seconds when `progress` is `TRUE`; the loop can be
#' interrupted (Ctrl-C / Esc).
#'
#' With the default statistic (`FUN = NULL`) the refits of a batch of
#' simulated responses are made in one call to the Rust core, which returns
#' only the estimates (no random effects or fitted values); each starts at
#' the fit's estimates and its optimum is confirmed by the optimiser's
#' end-point check, or else it is redone by the full fit of [refit()].
#' `options(lmmr.refit_batch = FALSE)` makes every refit a full fit (the
#' results agree to about 1e-8).
#'
#' @param fit an `"lmmr"` fit.
#' @param FUN a function of an `"lmmr"` fit returning a numeric vector (the
#'   same length for every fit); `NULL` (default) for the parameters
#'   `confint(method = "boot")` uses: standard deviations and correlations
#'   of the random effects (`.sig01`, ...), the residual standard deviation
#'   (`.sigma`) and the fixed effects, named as lme4 names them (these are
#'   computed from the estimates alone, without building a fit object, so
#'   they are faster than an equivalent `FUN`).
#' @param nsim number of bootstrap samples.
#' @param seed `NULL` or an integer for [set.seed()]; as with [simulate()]
#'   the caller's random number stream is restored afterwards.
#' @param use.u `FALSE` (default): new random effects are drawn for each
#'   sample; `TRUE`: the random effects are fixed at their conditional
#'   modes (BLUPs) and only residuals are simulated, as lme4.
#' @param type `"parametric"` (default) or `"semiparametric"` (fitted values
#'   plus residuals resampled with replacement; only with `use.u = TRUE`, as
#'   lme4).
#' @param ncores number of processes for the refits (forked, so not on
#'   Windows); default `getOption("lmmr.cores", 1)`.
#' @param progress show a progress bar; default
#'   `getOption("lmmr.progress", interactive())`.
#' @return An object of class `c("lmmr_boot", "boot")`, a list as
#'   `lme4::bootMer()` returns: `t0` (the statistic on the fit), `t` (an
#'   `nsim` x `length(t0)` matrix, one row per sample), `R` (`nsim`),
#'   `sim`, `seed` (the random number state used), `statistic`, `call`,
#'   `mle` (`beta`, `theta`, `sigma` of the fit), with attributes
#'   `"bootFail"` (number of failed refits) and `"n_nonconverged"`. It
#'   works with [boot::boot.ci()] and has `print()` and [confint()]
#'   methods ([confint.lmmr_boot()]).
#' @seealso [confint.lmmr()] with `method = "boot"`, [anova.lmmr()] with
#'   `test = "PB"`.
#' @examples
#' fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
#' b <- bootstrap_lmm(fit, nsim = 50, seed = 1)
#' b
#' confint(b)
#' # a statistic of the refitted model
#' b2 <- bootstrap_lmm(fit, FUN = function(f) fixef(f)["Days"], nsim = 10,
#'                     seed = 1)
#' b2$t
#' @export
bootstrap_lmm <- function(fit, FUN = NULL, nsim = 1, seed = NULL, use.u = FALSE,
                          type = c("parametric", "semiparametric"),
                          ncores = getOption("lmmr.cores", 1L),
                          progress = h_progress_default()) {
  h_check_lmm(fit, "fit")
  # simulated responses need the rows (pseudo-rows reproducing the
  # aggregates would give wrong refits)
  if (inherits(fit, "lmmr_db")) h_rows_in_database("bootstrap_lmm()")
  if (inherits(fit, "lmmr_rcov")) h_rcov_unsupported("bootstrap_lmm()")
  nsim <- h_check_nsim(nsim)
  ncores <- h_check_ncores(ncores)
  h_check_flag(use.u, "use.u")
  h_check_flag(progress, "progress")
  type <- h_match_arg(type, c("parametric", "semiparametric"), "type")
  if (type == "semiparametric" && !use.u) {
    h_abort("Semiparametric bootstrapping resamples the residuals around the fitted values with the BLUPs; it needs use.u = TRUE (as lme4).",
            "argument")
  }
  mc <- match.call()
  prep <- h_refit_prepare(fit)
  if (is.null(FUN)) {
    t0 <- h_boot_params(fit)
    fun <- function(y) {
      r <- h_refit_response(prep, y)
      structure(h_boot_params_raw(fit, r), converged = isTRUE(r$converged))
    }
    fun_batch <- if (prep$batch) function(Y) {
      r <- h_refit_batch(prep, Y)
      h_batch_result(h_boot_params_batch(fit, r), r)
    }
    statistic <- h_boot_params
  } else {
    if (!is.function(FUN)) h_abort("`FUN` must be a function of a fit, or NULL.", "argument")
    t0 <- FUN(fit)
    if (!is.numeric(t0) || !length(t0)) {
      h_abort("`FUN` must return a numeric vector (for bootstrap_lmm(), as for lme4's bootMer()).",
              "argument")
    }
    fun <- function(y) {
      conv <- TRUE
      f <- withCallingHandlers(h_refit_response(prep, y, full = TRUE),
                               lmmr_warning_convergence = function(w) {
                                 conv <<- FALSE
                                 invokeRestart("muffleWarning")
                               })
      structure(as.numeric(FUN(f)), converged = conv)
    }
    fun_batch <- NULL
    statistic <- FUN
  }
  rng_state <- h_sim_seed(seed)
  on.exit(h_restore_seed(rng_state), add = TRUE)
  res <- h_sim_apply(fit, nsim, fun, length(t0), ncores = ncores,
                     progress = progress, use.u = use.u, type = type,
                     label = "Bootstrap", fun_batch = fun_batch)
  h_sim_report(res, nsim)
  tt <- res[, , drop = FALSE]
  attributes(tt) <- list(dim = dim(res), dimnames = list(NULL, names(t0)))
  structure(list(
    t0 = t0, t = tt, R = nsim, seed = h_seed_value(rng_state), statistic = statistic,
    sim = type, call = mc, ran.gen = "simulate(<lmmr>, 1, *)",
    mle = list(beta = fit$beta, theta = fit$theta, sigma = fit$sigma)
  ), class = c("lmmr_boot", "boot"), bootFail = attr(res, "n_failed"),
  n_nonconverged = attr(res, "n_nonconverged"))
}

#' match.arg() with a classed error
#' @noRd
h_match_arg <- function(x, choices, name) {
  if (identical(x, choices)) return(choices[1])
  if (!is.character(x) || length(x) != 1L || is.na(x) || !(x %in% choices)) {
    h_abort(sprintf("`%s` must be one of %s; got %s.", name,
                    paste0('"', choices, '"', collapse = ", "),
                    paste(deparse(x), collapse = " ")), "argument")
  }
  x
}

#' Names of the bootstrap parameters, as lme4's confint(method = "boot")
#' @noRd
h_boot_param_names <- function(fit) {
  layout <- h_prof_layout(fit$re_terms)
  c(sprintf(".sig%02d", seq_along(layout$term)), ".sigma", names(fit$beta))
}

#' Standard deviations and correlations of the random effects, residual
#' standard deviation and fixed effects of a fit (lme4's order and names)
#' @noRd
h_boot_params <- function(fit) {
  h_boot_params_raw(fit, list(theta = fit$theta, sigma = fit$sigma,
                              beta = fit$beta))
}

#' The same from the estimates a refit returns (theta, sigma, beta); a
#' correlation with a zero standard deviation is 0, as lme4 (whose
#' `Cv_to_Sv()` converts the undefined value to 0)
#' @noRd
h_boot_params_raw <- function(fit, res) {
  layout <- h_prof_layout(fit$re_terms)
  sigma <- as.numeric(res$sigma)
  phi <- h_prof_theta_to_phi(as.numeric(res$theta), layout)
  vals <- c(ifelse(layout$is_sd, phi * sigma, phi), sigma, as.numeric(res$beta))
  stats::setNames(vals, h_boot_param_names(fit))
}

#' The same for the refits of h_refit_batch(), computed for all refits at
#' once: an m x n_out matrix (rows of failed refits are filled by
#' h_batch_result())
#' @noRd
h_boot_params_batch <- function(fit, r) {
  layout <- h_prof_layout(fit$re_terms)
  m <- length(r$sigma)
  theta <- matrix(r$theta, ncol = m)
  phi <- matrix(0, length(layout$term), m)
  pos <- 0L
  for (t in seq_len(layout$n_terms)) {
    sel <- which(layout$term == t)
    k <- layout$k[sel[1L]]
    # L[[i]][[l]]: entry (i, l) of each refit's relative factor Lambda
    L <- lapply(seq_len(k), function(i) vector("list", k))
    for (a in seq_along(sel)) {
      L[[layout$i[sel[a]]]][[layout$j[sel[a]]]] <- theta[pos + a, ]
    }
    pos <- pos + length(sel)
    cross <- function(i, j) {
      v <- 0
      for (l in seq_len(min(i, j))) v <- v + L[[i]][[l]] * L[[j]][[l]]
      v
    }
    sds <- lapply(seq_len(k), function(i) sqrt(cross(i, i)))
    for (s in sel) {
      i <- layout$i[s]
      j <- layout$j[s]
      phi[s, ] <- if (i == j) sds[[i]] else {
        den <- sds[[i]] * sds[[j]]
        ifelse(den > 0, cross(i, j) / den, 0)
      }
    }
  }
  sigma <- as.numeric(r$sigma)
  # standard deviations on the response scale, correlations as they are
  sd_rows <- which(layout$is_sd)
  phi[sd_rows, ] <- phi[sd_rows, , drop = FALSE] * rep(sigma, each = length(sd_rows))
  out <- t(rbind(phi, sigma, matrix(r$beta, ncol = m)))
  dimnames(out) <- list(NULL, h_boot_param_names(fit))
  out
}

#' @export
print.lmmr_boot <- function(x, digits = getOption("digits"), ...) {
  cat("PARAMETRIC BOOTSTRAP (lmmr)\n\nCall:\n")
  print(x$call)
  t <- x$t
  ok <- stats::complete.cases(t)
  cat(sprintf("\n%d samples (%s); %d failed refits\n\n", x$R, x$sim,
              as.integer(attr(x, "bootFail") %||% 0L)))
  tab <- data.frame(original = x$t0,
                    bias = colMeans(t[ok, , drop = FALSE]) - x$t0,
                    `std. error` = apply(t[ok, , drop = FALSE], 2, stats::sd),
                    check.names = FALSE, row.names = names(x$t0))
  print(tab, digits = digits)
  invisible(x)
}

#' Bootstrap confidence intervals from a bootstrap_lmm() result
#'
#' The intervals of `boot::boot.ci()` as lme4's `confint()` for `bootMer`
#' results computes them: `"perc"` (percentile, with boot's interpolation
#' of order statistics on the normal quantile scale), `"basic"` (`2 * t0`
#' minus the percentile limits) and `"norm"` (normal approximation with
#' bootstrap bias correction: `t0 - bias -/+ z * sd(t)`). Non-finite
#' bootstrap values are left out per parameter; a parameter whose bootstrap
#' values are all equal gets `NA` limits.
#'
#' @param object a [bootstrap_lmm()] result.
#' @param parm names or indices of the statistics (default all).
#' @param level confidence level.
#' @param type `"perc"` (default), `"basic"` or `"norm"`.
#' @param ... unused (a warning names anything passed here).
#' @return A matrix with one row per statistic and columns for the lower and
#'   upper limits (named as `"2.5 %"`, `"97.5 %"`).
#' @examples
#' fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
#' b <- bootstrap_lmm(fit, nsim = 50, seed = 2)
#' confint(b, type = "norm")
#' @export
confint.lmmr_boot <- function(object, parm, level = 0.95,
                              type = c("perc", "basic", "norm"), ...) {
  h_check_dots(..., .fn = "confint")
  type <- h_match_arg(type, c("perc", "basic", "norm"), "type")
  h_check_level(level, "level")
  nms <- names(object$t0)
  idx <- if (missing(parm)) seq_along(object$t0) else h_boot_parm(parm, nms)
  a <- (1 - level) / 2
  extreme <- FALSE
  out <- t(vapply(idx, function(i) {
    ci <- h_boot_interval(object$t0[[i]], object$t[, i], level, type)
    if (isTRUE(attr(ci, "extreme"))) extreme <<- TRUE
    as.numeric(ci)
  }, numeric(2)))
  if (extreme) {
    h_warn("Extreme order statistics used as endpoints of a bootstrap interval; use more simulations (`nsim`).",
           "bootstrap_extreme")
  }
  dimnames(out) <- list(nms[idx], sprintf("%s %%", format(100 * c(a, 1 - a), trim = TRUE,
                                                          scientific = FALSE, digits = 3)))
  out
}

#' Indices of the requested parameters (names, indices, or lme4's
#' "theta_" / "beta_" for all variance / fixed-effect parameters)
#' @noRd
h_boot_parm <- function(parm, nms) {
  if (is.numeric(parm)) {
    if (any(!is.finite(parm)) || any(parm < 1 | parm > length(nms))) {
      h_abort(sprintf("`parm` indices must be between 1 and %d.", length(nms)), "argument")
    }
    return(as.integer(parm))
  }
  if (!is.character(parm)) h_abort("`parm` must be parameter names or indices.", "argument")
  is_var <- grepl("^\\.sig", nms)
  out <- integer(0)
  for (p in parm) {
    out <- c(out, if (identical(p, "theta_")) which(is_var) else
      if (identical(p, "beta_")) which(!is_var) else match(p, nms))
  }
  if (anyNA(out)) {
    h_abort(sprintf("Unknown parameter(s) in `parm`: %s (available: %s).",
                    paste(parm[is.na(match(parm, c(nms, "theta_", "beta_")))], collapse = ", "),
                    paste(nms, collapse = ", ")), "argument")
  }
  out
}

#' One bootstrap interval (boot::boot.ci conventions)
#' @noRd
h_boot_interval <- function(t0, t, level, type) {
  t <- t[is.finite(t)]
  if (!length(t) || !is.finite(t0)) return(c(NA_real_, NA_real_))
  if (diff(range(t)) < min(1e-8, abs(mean(t)) / 1e6)) return(c(NA_real_, NA_real_))
  switch(type,
    perc = h_norm_inter(t, c((1 - level) / 2, (1 + level) / 2)),
    basic = {
      q <- h_norm_inter(t, c((1 + level) / 2, (1 - level) / 2))
      structure(2 * t0 - as.numeric(q), extreme = attr(q, "extreme"))
    },
    norm = {
      bias <- mean(t) - t0
      merr <- stats::sd(t) * stats::qnorm((1 + level) / 2)
      c(t0 - bias - merr, t0 - bias + merr)
    })
}

#' Quantiles of bootstrap values as boot's percentile intervals take them:
#' the order statistic of rank (R + 1) alpha, interpolated between
#' neighbouring order statistics on the normal quantile scale when that rank
#' is not a whole number (the extremes when it falls outside 1..R; then
#' attribute "extreme" is TRUE)
#' @noRd
h_norm_inter <- function(t, alpha) {
  R <- length(t)
  ts <- sort(t)
  rk <- (R + 1) * alpha
  out <- vapply(seq_along(alpha), function(a) {
    k <- trunc(rk[a])
    if (k == rk[a]) return(ts[k])
    if (k <= 0) return(ts[1L])
    if (k >= R) return(ts[R])
    z <- stats::qnorm(c(alpha[a], k / (R + 1), (k + 1) / (R + 1)))
    ts[k] + (z[1] - z[2]) / (z[3] - z[2]) * (ts[k + 1L] - ts[k])
  }, numeric(1))
  structure(out, extreme = !all(rk > 1 & rk < R))
}

#' confint(method = "boot"): parametric bootstrap intervals for the
#' variance parameters and fixed effects, as lme4's
#' confint(method = "boot")
#' @noRd
h_confint_boot <- function(object, parm = NULL, level = 0.95, nsim = 500,
                           type = "perc", boot.type = NULL, seed = NULL,
                           use.u = FALSE, ncores = getOption("lmmr.cores", 1L),
                           progress = h_progress_default(), FUN = NULL, ...) {
  h_check_dots(..., .fn = "confint")
  if (!is.null(boot.type)) type <- boot.type
  type <- h_match_arg(type, c("perc", "basic", "norm"), "type")
  h_check_level(level, "level")
  b <- bootstrap_lmm(object, FUN = FUN, nsim = nsim, seed = seed, use.u = use.u,
                     ncores = ncores, progress = progress)
  if (all(is.na(b$t))) h_abort("All bootstrap refits failed.", "bootstrap_failed")
  if (is.null(parm)) confint.lmmr_boot(b, level = level, type = type) else
    confint.lmmr_boot(b, parm = parm, level = level, type = type)
}

# ---------------------------------------------------------------------------
# anova(fit0, fit1, test = "PB", nsim = )

#' Further arguments anova() takes for simulation tests
#' @noRd
h_anova_sim_args <- function() c("test", "nsim", "seed", "ncores", "progress")

#' anova(fit0, fit1, ..., test = ): "Chisq" (the usual LRT) or "PB"
#' @noRd
h_anova_test <- function(fits, names, dots) {
  test <- h_match_arg(dots$test, c("Chisq", "PB"), "test")
  if (test == "Chisq") {
    given <- intersect(names(dots), c("nsim", "seed", "ncores", "progress"))
    if (length(given)) {
      h_warn(sprintf("anova(test = \"Chisq\") does not simulate; %s ignored.",
                     paste0("`", given, "`", collapse = ", ")), "unused_argument")
    }
    return(h_anova_lrt(fits, names, refit = if (is.null(dots$refit)) TRUE else dots$refit))
  }
  if (isFALSE(dots$refit)) {
    h_abort("test = \"PB\" compares ML fits (as pbkrtest); `refit = FALSE` cannot be used with it.",
            "argument")
  }
  h_anova_pb(fits, names, nsim = if (is.null(dots$nsim)) 1000 else dots$nsim,
             seed = dots$seed,
             ncores = if (is.null(dots$ncores)) getOption("lmmr.cores", 1L) else dots$ncores,
             progress = if (is.null(dots$progress)) h_progress_default() else dots$progress)
}

#' Simulation arguments given to anova() of a single fit are an error
#' @noRd
h_anova_sim_single <- function(dots) {
  given <- intersect(names(dots), h_anova_sim_args())
  if (length(given)) {
    h_abort(sprintf("%s only apply to comparisons of several fits (anova(fit0, fit1, ...)).",
                    paste0("`", given, "`", collapse = ", ")), "argument")
  }
  invisible(NULL)
}
