# Fuzz harness: random cases fitted by lmmr::lmm() and lme4::lmer().
#
#   Rscript bench/fuzz/fuzz.R --seed 1 --n 1000 --out results.csv
#   Rscript bench/fuzz/fuzz.R --seed 1 --case 123          # replay one case
#   ... --cache DIR   keeps lme4's result of each case in DIR and reuses it
#                     (lme4 is deterministic: a second run, e.g. of another
#                     lmmr, then costs only lmm's fits)
#
# See bench/fuzz/README.md. One long-lived process loads both packages; every
# fit runs in a fork of it (parallel::mcparallel), killed after --timeout
# seconds. Only one child runs at a time (2 processes in all).

h_args <- function(argv) {
  out <- list(seed = 1L, n = 100L, out = NULL, case = NULL, timeout = 20,
              budget = Inf, from = 1L, quiet = FALSE, cache = NULL)
  i <- 1L
  while (i <= length(argv)) {
    key <- sub("^--", "", argv[i])
    if (key == "quiet") {
      out$quiet <- TRUE
      i <- i + 1L
      next
    }
    if (!key %in% names(out) || i == length(argv)) stop("unknown or incomplete argument: ", argv[i])
    val <- argv[i + 1L]
    out[[key]] <- switch(key, out = , cache = val,
                         case = as.integer(strsplit(val, ",")[[1L]]),
                         timeout = , budget = as.numeric(val),
                         as.integer(val))
    i <- i + 2L
  }
  out
}

h_script_dir <- function() {
  f <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
  if (length(f)) dirname(normalizePath(f[1L])) else "bench/fuzz"
}

suppressPackageStartupMessages({
  library(parallel)
  library(lme4)
  library(lmmr)
})
source(file.path(h_script_dir(), "gen.R"))
# the dense referee, shared with the regression tests
source(file.path(h_script_dir(), "..", "..", "tests", "testthat", "helper-dense-criterion.R"))

# Run `expr` in a fork; list(value =, status = "ok" / "timeout" / "crash", time =).
h_in_child <- function(expr, timeout) {
  t0 <- Sys.time()
  job <- mcparallel(expr, silent = TRUE)
  repeat {
    res <- mccollect(job, wait = FALSE, timeout = 0.05)
    el <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
    if (!is.null(res)) {
      val <- res[[1L]]
      if (is.null(val) || inherits(val, "try-error")) {
        return(list(value = NULL, status = "crash", time = el,
                    msg = if (inherits(val, "try-error")) as.character(val) else "child died"))
      }
      return(list(value = val, status = "ok", time = el))
    }
    if (el > timeout) {
      tools::pskill(job$pid, tools::SIGKILL)
      suppressWarnings(mccollect(job, wait = TRUE))
      return(list(value = NULL, status = "timeout", time = el))
    }
  }
}

# Terms whose value depends on all rows (scale(), poly()) evaluated on the
# whole data, as lmm's model frame evaluates them, so that dropping the
# zero-weight rows for lme4 leaves the same model (recomputing scale() on the
# remaining rows changes the columns, and with `||` or REML the criterion).
h_materialise <- function(cs) {
  d <- cs$data
  f <- cs$formula
  for (v in unique(regmatches(f, gregexpr("scale\\(x[0-9]\\)", f))[[1L]])) {
    nm <- paste0(".s_", gsub("\\W", "", v))
    val <- tryCatch(as.numeric(eval(parse(text = v)[[1L]], d)), error = function(e) NULL)
    if (is.null(val)) next
    d[[nm]] <- val
    f <- gsub(v, nm, f, fixed = TRUE)
  }
  for (v in unique(regmatches(f, gregexpr("poly\\(x[0-9], [0-9]\\)", f))[[1L]])) {
    m <- tryCatch(eval(parse(text = v)[[1L]], d), error = function(e) NULL)
    if (is.null(m)) next
    nms <- paste0(".p_", gsub("\\W", "", v), "_", seq_len(ncol(m)))
    for (j in seq_len(ncol(m))) d[[nms[j]]] <- as.numeric(m[, j])
    f <- gsub(v, paste0("(", paste(nms, collapse = " + "), ")"), f, fixed = TRUE)
  }
  cs$data <- d
  cs$formula <- f
  cs
}

# Fit one case with one package; runs inside the child. For lme4 the
# result carries what the dense referee needs (n <= 1500).
h_fit_one <- function(cs, fun) {
  d <- cs$data
  if (fun == "lme4::lmer" && cs$weights && any(d$w == 0, na.rm = TRUE)) {
    # lme4 1.1-31 keeps zero-weight rows in its criterion (log(0) gives a REML
    # criterion of Inf and an optimiser that never moves); the reference for
    # "drop the observation's contribution" is the fit without those rows
    cs <- h_materialise(cs)
    d <- cs$data
    d <- d[is.na(d$w) | d$w != 0, , drop = FALSE]
  }
  warns <- character()
  wclass <- character()
  t0 <- Sys.time()
  fit <- tryCatch(
    withCallingHandlers(
      suppressMessages(eval(parse(text = fuzz_call_text(cs, fun))[[1L]], list(d = d), globalenv())),
      warning = function(w) {
        warns <<- c(warns, conditionMessage(w))
        wclass <<- c(wclass, class(w)[1L])
        invokeRestart("muffleWarning")
      }
    ),
    error = function(e) e
  )
  tm <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
  if (inherits(fit, "error")) {
    return(list(ok = FALSE, err_class = class(fit)[1L], msg = conditionMessage(fit),
                warns = warns, wclass = wclass, time = tm))
  }
  crit <- tryCatch(-2 * as.numeric(logLik(fit)), error = function(e) NA_real_)
  conv <- if (fun == "lmmr::lmm") isTRUE(fit$optinfo$converged) else NA
  lmm <- fun == "lmmr::lmm"
  parts <- if (!lmm && is.finite(crit) && nrow(d) <= 1500) {
    tryCatch(dense_parts(fit), error = function(e) NULL)
  }
  list(ok = TRUE, crit = crit, converged = conv, warns = warns, wclass = wclass, time = tm,
       theta = if (lmm) fit$theta else lme4::getME(fit, "theta"), parts = parts,
       npar = length(if (lmm) fit$theta else lme4::getME(fit, "theta")),
       p = if (lmm) length(fit$beta) else ncol(lme4::getME(fit, "X")),
       time_budget = lmm && isTRUE(fit$optinfo$time_budget_spent))
}

# Outcome of one case.
h_classify <- function(a, b) {
  # a: lmm result (from h_in_child), b: lme4 result
  if (a$status == "timeout") return("hang")
  if (a$status == "crash") return("crash")
  la <- a$value
  lme4_ok <- b$status == "ok" && isTRUE(b$value$ok) && is.finite(b$value$crit)
  if (!la$ok) {
    if (!grepl("^lmmr_error", la$err_class)) return("unclassed_error")
    return(if (lme4_ok) "lmm_refuses" else "both_refuse")
  }
  if (!lme4_ok) return("lme4_refuses")
  if (!is.finite(la$crit)) return("lmm_nonfinite")
  # the two packages read the formula as different models (e.g. lme4 1.1-31
  # keeps the intercept of `y ~ (1 | g) - 1`): criteria are not comparable
  if (la$p != b$value$p || la$npar != b$value$npar) return("different_model")
  rel <- (la$crit - b$value$crit) / max(1, abs(b$value$crit))
  # the dense referee decides where it was computed: both packages'
  # criteria evaluated by one independent computation at both estimates
  rl <- b$value$ref_lmm
  r4 <- b$value$ref_lme4
  if (isTRUE(is.finite(rl) && is.finite(r4))) rel <- (rl - r4) / max(1, abs(r4))
  warned <- any(grepl("^lmmr_warning_", la$wclass) & !grepl("scale", la$wclass))
  if (rel > 1e-6) {
    return(if (warned || !isTRUE(la$converged)) "lmm_worse_warned" else "lmm_worse_silent")
  }
  if (rel < -1e-6) return("lmm_better")
  "both_fit"
}

h_row <- function(cs, a, b, outcome, args) {
  av <- a$value
  bv <- b$value
  num <- function(x) if (is.null(x)) NA_real_ else x
  chr <- function(x) if (is.null(x) || !length(x)) "" else gsub("[\r\n]+", " ", paste(x, collapse = " | "))
  lc <- num(if (isTRUE(av$ok)) av$crit)
  bc <- num(if (isTRUE(bv$ok)) bv$crit)
  data.frame(
    seed = cs$seed, case = cs$id, outcome = outcome, formula = cs$formula,
    REML = cs$REML, weights = cs$weights, offset = cs$offset, n = nrow(cs$data),
    note = cs$note, lmm_crit = lc, lme4_crit = bc,
    rel_diff = (lc - bc) / max(1, abs(bc)),
    lmm_crit_dense = num(bv$ref_lmm), lme4_crit_dense = num(bv$ref_lme4),
    rel_diff_dense = (num(bv$ref_lmm) - num(bv$ref_lme4)) / max(1, abs(num(bv$ref_lme4))),
    lmm_converged = if (isTRUE(av$ok)) av$converged else NA,
    lmm_warnings = chr(av$wclass), lmm_error_class = chr(av$err_class),
    lmm_message = chr(c(av$msg, a$msg)), lme4_status = b$status,
    lme4_message = chr(c(bv$msg, if (length(bv$warns)) bv$warns)),
    lmm_time = round(a$time, 3), lme4_time = round(b$time, 3),
    npar = num(if (isTRUE(av$ok)) av$npar else if (isTRUE(bv$ok)) bv$npar),
    p_lmm = num(if (isTRUE(av$ok)) av$p), p_lme4 = num(if (isTRUE(bv$ok)) bv$p),
    lmm_time_budget = isTRUE(av$time_budget),
    replay = sprintf("Rscript bench/fuzz/fuzz.R --seed %d --case %d", cs$seed, cs$id),
    stringsAsFactors = FALSE
  )
}

# The dense referee's criterion at both estimates (into b's value as
# ref_lmm, ref_lme4), where the reported criteria differ by more than 1e-7.
h_referee <- function(a, b) {
  if (a$status != "ok" || !isTRUE(a$value$ok) || b$status != "ok" || !isTRUE(b$value$ok)) return(b)
  bv <- b$value
  th <- a$value$theta
  th4 <- bv$theta
  bv$ref_lmm <- bv$ref_lme4 <- NA_real_
  if (!is.null(bv$parts) && isTRUE(abs(a$value$crit - bv$crit) > 1e-7 * max(1, abs(bv$crit))) &&
      length(th4) == length(th) && !anyDuplicated(names(th4)) && setequal(names(th4), names(th))) {
    ref <- tryCatch(c(dense_criterion(bv$parts, th[names(th4)]), dense_criterion(bv$parts, th4)),
                    error = function(e) c(NA_real_, NA_real_))
    bv$ref_lmm <- ref[1L]
    bv$ref_lme4 <- ref[2L]
  }
  b$value <- bv
  b
}

h_run_case <- function(seed, id, args) {
  cs <- tryCatch(fuzz_case(seed, id), error = function(e) NULL)
  if (is.null(cs)) stop("case generation failed for case ", id)
  a <- h_in_child(h_fit_one(cs, "lmmr::lmm"), args$timeout)
  cf <- if (!is.null(args$cache)) file.path(args$cache, sprintf("lme4-%d-%d.rds", seed, id))
  if (!is.null(cf) && file.exists(cf)) {
    b <- readRDS(cf)
  } else {
    b <- h_in_child(h_fit_one(cs, "lme4::lmer"), args$timeout)
    if (!is.null(cf)) saveRDS(b, cf)
  }
  b <- h_referee(a, b)
  list(cs = cs, row = h_row(cs, a, b, h_classify(a, b), args))
}

h_replay <- function(seed, ids, args) {
  for (id in ids) {
    r <- h_run_case(seed, id, args)
    cs <- r$cs
    cat(sprintf("== seed %d, case %d: %s\n", seed, id, r$row$outcome))
    cat("# regenerate the data alone:\n")
    cat(sprintf("source(\"bench/fuzz/gen.R\"); cs <- fuzz_case(%d, %d); d <- cs$data\n", seed, id))
    cat(fuzz_call_text(cs, "lmmr::lmm"), "\n", fuzz_call_text(cs, "lme4::lmer"), "\n", sep = "")
    if (nzchar(cs$note)) cat("# note:", cs$note, "\n")
    print(t(r$row[, c("n", "lmm_crit", "lme4_crit", "rel_diff", "rel_diff_dense", "lmm_converged", "lmm_warnings",
                     "lmm_error_class", "lmm_message", "lme4_status", "lme4_message",
                     "lmm_time", "lme4_time")]), quote = FALSE)
  }
}

h_main <- function() {
  args <- h_args(commandArgs(TRUE))
  if (!is.null(args$cache)) dir.create(args$cache, showWarnings = FALSE, recursive = TRUE)
  if (!is.null(args$case)) return(invisible(h_replay(args$seed, args$case, args)))
  t0 <- Sys.time()
  rows <- list()
  ids <- seq.int(args$from, length.out = args$n)
  for (id in ids) {
    if (as.numeric(difftime(Sys.time(), t0, units = "secs")) > args$budget) {
      message(sprintf("time budget reached after %d cases", length(rows)))
      break
    }
    r <- h_run_case(args$seed, id, args)$row
    rows[[length(rows) + 1L]] <- r
    if (!args$quiet && !r$outcome %in% c("both_fit", "both_refuse", "lme4_refuses", "lmm_better",
                                         "different_model")) {
      message(sprintf("case %d: %s  %s  %s", id, r$outcome, r$formula,
                      substr(r$lmm_message, 1, 120)))
    }
    if (!is.null(args$out) && length(rows) %% 50L == 0L) {
      utils::write.csv(do.call(rbind, rows), args$out, row.names = FALSE)
    }
  }
  res <- do.call(rbind, rows)
  if (!is.null(args$out)) utils::write.csv(res, args$out, row.names = FALSE)
  el <- as.numeric(difftime(Sys.time(), t0, units = "mins"))
  cat(sprintf("seed %d: %d cases in %.1f min (lmm %.0f s, lme4 %.0f s)\n", args$seed, nrow(res),
              el, sum(res$lmm_time), sum(res$lme4_time)))
  lev <- c("both_fit", "lmm_better", "lmm_worse_warned", "lmm_worse_silent", "lmm_refuses",
           "both_refuse", "lme4_refuses", "different_model", "hang", "crash", "unclassed_error",
           "lmm_nonfinite")
  print(table(outcome = factor(res$outcome, levels = lev)))
  invisible(res)
}

h_main()
