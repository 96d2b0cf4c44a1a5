# Time lmmr's small-sample inference (Satterthwaite and Kenward-Roger
# denominator df) against lmerTest/pbkrtest, and measure lmmr's time and
# peak memory for the inference step on large designs.
#
# Run: Rscript bench/bench-inference.R [--quick]
#   (environment variable LMMR_BENCH_REF_LIMIT: time limit in seconds of each
#   Part 1 child process; default 300, 120 with --quick)
#
# Part 1 (lmmr vs lmerTest/pbkrtest): each (design, ddf) case runs in a fresh
#   child Rscript process that times lmmr and the reference side by side
#   (same process, same data) and reports ratios lmmr / reference, plus the
#   agreement of the df (and of the Kenward-Roger adjusted standard errors).
#   The child is killed after a time limit (pbkrtest's Kenward-Roger builds
#   dense n x n matrices); a reference that does not finish is reported as
#   "> limit" (lmmr's times, measured first, are still reported).
# Part 2 (lmmr alone): Kenward-Roger and Satterthwaite on n = 50,000
#   (1,000 clusters, random intercept), on a crossed design with
#   n = 20,000 (200 subjects x 100 items) and on a partially crossed design
#   with q = 5,000 (4,000 subjects x 1,000 items, 20 items per subject,
#   n = 80,000; also in Part 1, where pbkrtest's Kenward-Roger fails) and on
#   two nested factors with q = 21,000 (1,000 schools x 20 classes x 5). Each case runs in a fresh child
#   process; the time of the inference step alone (summary(fit, ddf = ...)
#   after the fit) and its peak resident memory (VmHWM from
#   /proc/self/status, reset just before the step through
#   /proc/self/clear_refs) are reported.
#
# No timing assertions: the script only prints tables.

script_args <- commandArgs(trailingOnly = TRUE)
options(width = max(getOption("width"), 200))
quick <- "--quick" %in% script_args

# ---------------------------------------------------------------------------
# Helpers shared by the parent and the children
# ---------------------------------------------------------------------------

# VmHWM / VmRSS of this process in MB (NA where /proc is not available)
proc_mb <- function(field) {
  f <- "/proc/self/status"
  if (!file.exists(f)) return(NA_real_)
  line <- grep(paste0("^", field, ":"), readLines(f), value = TRUE)
  if (length(line) == 0L) return(NA_real_)
  as.numeric(gsub("[^0-9]", "", line)) / 1024
}

# Reset VmHWM to the current RSS (Linux >= 4.0); TRUE when it worked
reset_hwm <- function() {
  ok <- tryCatch({
    writeLines("5", "/proc/self/clear_refs")
    TRUE
  }, error = function(e) FALSE, warning = function(w) FALSE)
  ok && isTRUE(abs(proc_mb("VmHWM") - proc_mb("VmRSS")) < 1)
}

# Median elapsed time per evaluation of `expr`. Fast expressions are timed
# in batches of `inner` evaluations (so that one measurement takes >= ~50 ms,
# above the resolution of the clock); at least `min_reps` measurements, then
# more until `budget` seconds have been spent or `max_reps` reached. One gc()
# before the measurements (a full gc() costs ~0.2 s with lmerTest loaded).
time_it <- function(expr, min_reps = 3, max_reps = 30, budget = 2) {
  expr <- substitute(expr)
  env <- parent.frame()
  run <- function(k) {
    system.time(for (i in seq_len(k)) {
      suppressMessages(suppressWarnings(eval(expr, env)))
    }, gcFirst = FALSE)[["elapsed"]]
  }
  gc(FALSE)
  t1 <- run(1L)
  inner <- if (t1 >= 0.05) 1L else as.integer(min(1000, ceiling(0.05 / max(t1, 1e-3))))
  times <- if (inner == 1L) t1 else numeric(0)
  spent <- t1
  repeat {
    if (length(times) >= max_reps) break
    if (length(times) >= min_reps && spent >= budget) break
    t <- run(inner)
    spent <- spent + t
    times <- c(times, t / inner)
  }
  c(median = median(times), reps = length(times) * inner)
}

# Nested design: G clusters of m, random intercept, a cluster-level
# treatment and two individual-level covariates (ICC 0.2).
make_nested <- function(G, m, seed = 1) {
  set.seed(seed)
  n <- G * m
  cl <- rep(seq_len(G), each = m)
  treat <- rep(rep(c(0, 1), length.out = G), each = m)
  x1 <- rnorm(n)
  x2 <- rnorm(n)
  y <- 0.3 * treat + 0.5 * x1 - 0.2 * x2 + rnorm(G, sd = 0.5)[cl] + rnorm(n)
  data.frame(y = y, treat = factor(treat, labels = c("ctl", "trt")),
             x1 = x1, x2 = x2, cluster = factor(cl))
}
f_nested <- y ~ treat + x1 + x2 + (1 | cluster)

# Fully crossed design: S subjects x I items, (1 | subj) + (1 | item), an
# item-level condition and an observation-level covariate.
make_crossed <- function(S, I, seed = 1) {
  set.seed(seed)
  d <- expand.grid(subj = factor(seq_len(S)), item = factor(seq_len(I)))
  n <- nrow(d)
  d$cond <- factor(as.integer(d$item) %% 2, labels = c("A", "B"))
  d$x <- rnorm(n)
  d$y <- 0.2 * (d$cond == "B") + 0.3 * d$x + rnorm(S, sd = 0.7)[d$subj] +
    rnorm(I, sd = 0.5)[d$item] + rnorm(n)
  d
}
f_crossed <- y ~ cond + x + (1 | subj) + (1 | item)

# Partially crossed design: S subjects, each rating `per` of I items drawn at
# random (q = S + I random effects; the shape of issue 8's q = 5,000 case).
make_crossed_sparse <- function(S, I, per, seed = 1) {
  set.seed(seed)
  d <- data.frame(subj = factor(rep(seq_len(S), each = per)),
                  item = factor(unlist(lapply(seq_len(S), function(s) sample.int(I, per))),
                                levels = seq_len(I)))
  n <- nrow(d)
  d$cond <- factor(as.integer(d$item) %% 2, labels = c("A", "B"))
  d$x <- rnorm(n)
  d$y <- 0.2 * (d$cond == "B") + 0.3 * d$x + rnorm(S, sd = 0.7)[d$subj] +
    rnorm(I, sd = 0.5)[d$item] + rnorm(n)
  d
}

# Two nested factors with many levels: G schools x C classes x m pupils,
# (1 | school) + (1 | school:class) (q = G + G C).
make_nested2 <- function(G, C, m, seed = 2) {
  set.seed(seed)
  school <- rep(seq_len(G), each = C * m)
  cls <- rep(seq_len(G * C), each = m)
  n <- length(school)
  x <- rnorm(n)
  y <- 0.3 * x + rnorm(G, sd = 0.5)[school] + rnorm(G * C, sd = 0.4)[cls] + rnorm(n)
  data.frame(y = y, x = x, school = factor(school), class = factor(cls))
}

make_case <- function(case) {
  switch(case,
         nested2000 = list(data = make_nested(100, 20), formula = f_nested,
                           label = "nested 100 x 20, (1|cluster)"),
         crossed800 = list(data = make_crossed(40, 20), formula = f_crossed,
                           label = "crossed 40 x 20, (1|subj)+(1|item)"),
         nested50k = list(data = make_nested(1000, 50), formula = f_nested,
                          label = "nested 1000 x 50, (1|cluster)"),
         crossed20k = list(data = make_crossed(200, 100), formula = f_crossed,
                           label = "crossed 200 x 100, (1|subj)+(1|item)"),
         nested21k = list(data = make_nested2(1000, 20, 5),
                          formula = y ~ x + (1 | school) + (1 | school:class),
                          label = "nested 1000 schools x 20 classes x 5, q = 21000"),
         crossed5k = list(data = make_crossed_sparse(4000, 1000, 20), formula = f_crossed,
                          label = "crossed 4000 x 1000 (20 per subj), q = 5000"),
         stop("unknown case ", case))
}

# ---------------------------------------------------------------------------
# Child: lmmr vs lmerTest/pbkrtest on one (case, ddf)
# ---------------------------------------------------------------------------

child_compare <- function(case, ddf, out) {
  suppressPackageStartupMessages({
    library(lmmr)
    library(lmerTest)
  })
  if (ddf == "Kenward-Roger") stopifnot(requireNamespace("pbkrtest", quietly = TRUE))
  cs <- make_case(case)
  d <- cs$data
  f <- cs$formula
  mr <- if (quick) 1 else 3
  bud <- if (quick) 0.5 else 2
  res <- list(case = case, label = cs$label, n = nrow(d), ddf = ddf)

  # warm-up (byte compilation, namespace loading)
  invisible(summary(lmm(f, data = d), ddf = ddf))
  fr0 <- suppressMessages(lmerTest::lmer(f, data = d))
  invisible(summary(fr0, ddf = "Satterthwaite"))

  # lmmr first, saved before the reference runs (which may be killed)
  fit <- lmm(f, data = d)
  s1 <- summary(fit, ddf = ddf)
  res$lmmr_total <- time_it(summary(lmm(f, data = d), ddf = ddf), mr, 50, bud)
  res$lmmr_inf <- time_it(summary(fit, ddf = ddf), mr, 50, bud)
  res$lmmr_coef <- coef(s1)
  saveRDS(res, out)

  fr <- suppressMessages(lmerTest::lmer(f, data = d))
  s2 <- summary(fr, ddf = ddf)
  res$ref_coef <- coef(s2)
  saveRDS(res, out)
  res$ref_inf <- time_it(summary(fr, ddf = ddf), mr, 30, bud)
  saveRDS(res, out)
  res$ref_total <- time_it(summary(lmerTest::lmer(f, data = d), ddf = ddf), mr, 30, bud)
  saveRDS(res, out)
  invisible(res)
}

# ---------------------------------------------------------------------------
# Child: lmmr alone, time and peak memory of the inference step
# ---------------------------------------------------------------------------

child_memory <- function(case, ddf, out) {
  suppressPackageStartupMessages(library(lmmr))
  gc()
  rss_lib <- proc_mb("VmRSS")
  cs <- make_case(case)
  d <- cs$data
  f <- cs$formula
  gc()
  rss_data <- proc_mb("VmRSS")
  t_fit <- system.time(fit <- lmm(f, data = d))[["elapsed"]]
  gc()
  hwm_before <- proc_mb("VmHWM")   # process peak so far (data + fit)
  rss_before <- proc_mb("VmRSS")
  reset_ok <- reset_hwm()          # VmHWM := current RSS
  hwm_reset <- proc_mb("VmHWM")
  g0 <- gc(reset = TRUE)
  t_first <- system.time(s <- summary(fit, ddf = ddf))[["elapsed"]]
  hwm_after <- proc_mb("VmHWM")    # peak during the inference step
  g1 <- gc()
  # R heap: peak ("max used") during the step minus what was in use before it
  heap_used0 <- sum(g0[, 2])
  heap_max1 <- sum(g1[, 6])
  tt <- time_it(summary(fit, ddf = ddf), if (quick) 2 else 5, 20, if (quick) 0.5 else 2)
  res <- list(case = case, label = cs$label, n = nrow(d), ddf = ddf,
              t_fit = t_fit, t_first = t_first, t_inf = tt[["median"]],
              reps = tt[["reps"]], rss_lib = rss_lib, rss_data = rss_data,
              hwm_before = hwm_before, rss_before = rss_before,
              reset_ok = reset_ok, hwm_reset = hwm_reset, hwm_after = hwm_after,
              heap_peak = heap_max1 - heap_used0,
              df = coef(s)[, "df"])
  saveRDS(res, out)
  invisible(res)
}

# ---------------------------------------------------------------------------
# Child dispatch
# ---------------------------------------------------------------------------

if (length(script_args) >= 4L && script_args[1] %in% c("--child-compare", "--child-memory")) {
  fun <- if (script_args[1] == "--child-compare") child_compare else child_memory
  fun(script_args[2], script_args[3], script_args[4])
  quit(save = "no", status = 0)
}

# ---------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------

script_path <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1])
if (is.na(script_path) || !file.exists(script_path)) {
  stop("run this script with Rscript bench/bench-inference.R")
}
script_path <- normalizePath(script_path)
rscript <- file.path(R.home("bin"), "Rscript")
ref_limit <- as.numeric(Sys.getenv("LMMR_BENCH_REF_LIMIT", if (quick) "120" else "300"))  # s per child
tmp <- tempfile("bench-inference-")
dir.create(tmp)

run_child <- function(mode, case, ddf, timeout) {
  out <- file.path(tmp, paste0(mode, "-", case, "-", sub("-", "", ddf), ".rds"))
  log <- sub("\\.rds$", ".log", out)
  t0 <- Sys.time()
  status <- suppressWarnings(system2(
    rscript,
    c(shQuote(script_path), paste0("--child-", mode), case, shQuote(ddf), shQuote(out),
      if (quick) "--quick"),
    stdout = log, stderr = log, timeout = timeout,
    env = paste0("R_LIBS=", shQuote(paste(.libPaths(), collapse = ":")))
  ))
  wall <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
  res <- if (file.exists(out)) readRDS(out) else list()
  res$status <- status
  res$wall <- wall
  res$timed_out <- identical(as.integer(status), 124L)
  if (!identical(as.integer(status), 0L) && !res$timed_out) {
    cat(sprintf("  [child %s %s %s exited with status %s; log:]\n", mode, case, ddf, status))
    cat(paste0("  | ", tail(readLines(log), 20)), sep = "\n")
  }
  res
}

fmt_s <- function(x) ifelse(is.na(x), "NA", formatC(x, format = "g", digits = 3))

versions <- vapply(c("lmmr", "lme4", "lmerTest", "pbkrtest"), function(p) {
  tryCatch(as.character(utils::packageVersion(p)), error = function(e) "not installed")
}, character(1))
cat("bench-inference.R", if (quick) "(--quick)", "\n")
cat(sprintf("date: %s; R %s; cores: %s; load average: %s\n", format(Sys.time(), "%Y-%m-%d %H:%M"),
            getRversion(), parallel::detectCores(),
            tryCatch(paste(strsplit(readLines("/proc/loadavg"), " ")[[1]][1:3], collapse = " "),
                     error = function(e) "NA")))
cat(paste(names(versions), versions, collapse = ", "), "\n\n")
t_start <- Sys.time()

# ---- Part 1 ---------------------------------------------------------------
cat("Part 1: lmmr vs lmerTest (Satterthwaite) / lmerTest+pbkrtest (Kenward-Roger)\n")
cat(sprintf("  each case in a fresh child process, killed after %g s\n", ref_limit))
cat("  total = fit + summary(ddf); inference = summary(fit, ddf) on an existing fit\n")
cat("  (lmerTest::lmer() already computes the Satterthwaite ingredients during the\n")
cat("   fit, so its 'inference' time for Satterthwaite excludes them; compare totals)\n\n")
rows1 <- list()
for (case in c("nested2000", "crossed800", "crossed5k")) {
  for (ddf in c("Satterthwaite", "Kenward-Roger")) {
    r <- run_child("compare", case, ddf, ref_limit)
    lim <- sprintf("> %g s", ref_limit)
    get_t <- function(x) if (is.null(x)) NA_real_ else x[["median"]]
    lt <- get_t(r$lmmr_total); li <- get_t(r$lmmr_inf)
    rt <- get_t(r$ref_total); ri <- get_t(r$ref_inf)
    df_diff <- se_diff <- NA_real_
    if (!is.null(r$lmmr_coef) && !is.null(r$ref_coef)) {
      a <- r$lmmr_coef; b <- r$ref_coef[rownames(a), , drop = FALSE]
      df_diff <- max(abs(a[, "df"] - b[, "df"]) / abs(b[, "df"]))
      se_diff <- max(abs(a[, "Std. Error"] - b[, "Std. Error"]) / b[, "Std. Error"])
    }
    miss <- function(t) if (isTRUE(r$timed_out)) lim else "error"
    rows1[[length(rows1) + 1L]] <- data.frame(
      design = if (is.null(r$label)) case else r$label,
      n = if (is.null(r$n)) NA else r$n,
      ddf = ddf,
      lmmr_total_s = fmt_s(lt),
      ref_total_s = if (is.na(rt)) miss() else fmt_s(rt),
      ratio_total = if (is.na(rt)) "NA" else formatC(lt / rt, format = "g", digits = 3),
      lmmr_inf_s = fmt_s(li),
      ref_inf_s = if (is.na(ri)) miss() else fmt_s(ri),
      ratio_inf = if (is.na(ri)) "NA" else formatC(li / ri, format = "g", digits = 3),
      max_rel_df_diff = if (is.na(df_diff)) "NA" else formatC(df_diff, format = "e", digits = 1),
      max_rel_se_diff = if (is.na(se_diff)) "NA" else formatC(se_diff, format = "e", digits = 1),
      stringsAsFactors = FALSE)
  }
}
tab1 <- do.call(rbind, rows1)
print(tab1, row.names = FALSE, right = TRUE)
cat("\n  ratio = lmmr / reference (median of repeated runs); df/se diff = max over\n")
cat("  coefficients of |lmmr - reference| / |reference| (se: KR-adjusted for KR)\n\n")

# ---- Part 2 ---------------------------------------------------------------
cat("Part 2: lmmr alone, inference step on large designs (fresh child process each)\n")
cat("  inf_s = median time of summary(fit, ddf) after the fit (first call: first_s)\n")
cat("  rss_data = RSS after loading lmmr and making the data; hwm_fit = peak RSS\n")
cat("  before the inference step (data + fit); rss_pre = RSS just before it;\n")
cat("  hwm_inf = peak RSS during the inference step (VmHWM reset just before it);\n")
cat("  inf_extra = hwm_inf - rss_pre; beyond_data = hwm_inf - rss_data;\n")
cat("  heap = R heap peak increase during the step (gc max used); all in MB\n\n")
rows2 <- list()
res2 <- list()
for (case in c("nested50k", "crossed20k", "crossed5k", "nested21k")) {
  for (ddf in c("Kenward-Roger", "Satterthwaite")) {
    r <- run_child("memory", case, ddf, 600)
    res2[[paste(case, ddf)]] <- r
    if (is.null(r$t_inf)) {
      rows2[[length(rows2) + 1L]] <- data.frame(design = case, n = NA, ddf = ddf,
        fit_s = NA, first_s = NA, inf_s = if (isTRUE(r$timed_out)) "> 600 s" else "error",
        rss_data = NA, hwm_fit = NA, rss_pre = NA, hwm_inf = NA, inf_extra = NA,
        beyond_data = NA, heap = NA, stringsAsFactors = FALSE)
      next
    }
    rows2[[length(rows2) + 1L]] <- data.frame(
      design = r$label, n = r$n, ddf = ddf,
      fit_s = fmt_s(r$t_fit), first_s = fmt_s(r$t_first), inf_s = fmt_s(r$t_inf),
      rss_data = round(r$rss_data, 1), hwm_fit = round(r$hwm_before, 1),
      rss_pre = round(r$rss_before, 1),
      hwm_inf = if (r$reset_ok) round(r$hwm_after, 1) else NA,
      inf_extra = if (r$reset_ok) round(r$hwm_after - r$rss_before, 1) else NA,
      beyond_data = round(max(r$hwm_after, if (r$reset_ok) 0 else r$hwm_before) - r$rss_data, 1),
      heap = round(r$heap_peak, 1),
      stringsAsFactors = FALSE)
  }
}
tab2 <- do.call(rbind, rows2)
print(tab2, row.names = FALSE, right = TRUE)
if (!all(vapply(res2, function(r) isTRUE(r$reset_ok), logical(1)))) {
  cat("\n  note: VmHWM could not be reset; hwm_inf/inf_extra unavailable and beyond_data\n")
  cat("  is the whole-process peak (data + fit + inference) minus rss_data\n")
}
kr <- res2[["nested50k Kenward-Roger"]]
if (!is.null(kr$t_inf)) {
  mem <- if (isTRUE(kr$reset_ok)) kr$hwm_after - kr$rss_data else kr$hwm_before - kr$rss_data
  ok_t <- kr$t_inf < 1
  ok_m <- mem < 200
  cat(sprintf("\nTarget (KR, n = 50,000: inference < 1 s and < 200 MB beyond the data): time %s s (%s), memory %.1f MB (%s) -> %s\n",
              fmt_s(kr$t_inf), if (ok_t) "met" else "missed", mem,
              if (ok_m) "met" else "missed", if (ok_t && ok_m) "MET" else "MISSED"))
}
kr5 <- res2[["crossed5k Kenward-Roger"]]
if (!is.null(kr5$t_inf)) {
  cat(sprintf("Issue 8 (KR, crossed q = 5,000: well under 1 s, no dense q x q): time %s s (fit %s s, ratio %s), peak during the step %s MB\n",
              fmt_s(kr5$t_inf), fmt_s(kr5$t_fit), fmt_s(kr5$t_inf / kr5$t_fit),
              if (isTRUE(kr5$reset_ok)) round(kr5$hwm_after - kr5$rss_before, 1) else "NA"))
}
cat(sprintf("\nTotal elapsed: %.1f s\n", as.numeric(difftime(Sys.time(), t_start, units = "secs"))))
unlink(tmp, recursive = TRUE)
