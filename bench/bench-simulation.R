# Time lmmr's simulation-based inference against the references, side by
# side in one R process on sleepstudy:
#
#   1. parametric bootstrap LRT, (Days | Subject) vs (1 | Subject), nsim
#      simulations: anova(fit0, fit1, test = "PB") vs pbkrtest::PBmodcomp();
#   2. bootstrap intervals, confint(method = "boot", nsim = nsim) on
#      Reaction ~ Days + (Days | Subject): lmmr vs lme4's
#      confint(method = "boot").
#
# Both on one core (ncores = 1 / no cluster), progress bars off; lmmr's
# times are the median of 3 runs. Prints the
# times, the ratios lmmr / reference (targets: 0.02) and the agreement of the
# results (the p-values and intervals come from different random numbers, so
# they agree only within Monte Carlo error). Then lmmr's one-refit-per-call
# path (options(lmmr.refit_batch = FALSE), for the speed-up of the batched
# refits on the same machine) and lmmr alone with ncores = 2.
#
# Run: Rscript bench/bench-simulation.R [nsim]   (default nsim = 1000;
#      the references take about a minute each for nsim = 1000)
# No timing assertions: the script only prints tables.

args <- commandArgs(trailingOnly = TRUE)
nsim <- if (length(args)) as.integer(args[1]) else 1000L
options(width = 150, lmmr.progress = FALSE)
suppressPackageStartupMessages({
  library(lmmr)
  library(lme4)
  library(pbkrtest)
})

# elapsed and CPU seconds (CPU: user + system, children included, which is
# steadier than elapsed time on a loaded machine)
# lmmr's runs (about a second) are repeated `reps` times and the median kept:
# one short run is easily descheduled on a shared machine, while the
# references' minute-long runs average the load out
timing <- list()
timed <- function(label, expr, reps = 1L) {
  env <- parent.frame()
  ex <- substitute(expr)
  ts <- vapply(seq_len(reps), function(i) {
    t <- system.time(eval(ex, env))
    c(elapsed = t[["elapsed"]],
      cpu = sum(t[c("user.self", "sys.self", "user.child", "sys.child")], na.rm = TRUE))
  }, numeric(2))
  timing[[label]] <<- c(elapsed = stats::median(ts[1, ]), cpu = stats::median(ts[2, ]))
  invisible(NULL)
}
reps_own <- 3L

data("sleepstudy", package = "lme4")

# warm up both packages
invisible(lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy))
invisible(lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy))

# --- 1. parametric bootstrap LRT ------------------------------------------
fit1 <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy, REML = FALSE)
fit0 <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy, REML = FALSE)
m1 <- lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, REML = FALSE)
m0 <- lmer(Reaction ~ Days + (1 | Subject), data = sleepstudy, REML = FALSE)

timed("pb_own", pb_own <- anova(fit0, fit1, test = "PB", nsim = nsim, seed = 1), reps = reps_own)
timed("pb_ref", pb_ref <- suppressMessages(suppressWarnings(
  PBmodcomp(m1, m0, nsim = nsim, seed = 1))))
p_own <- pb_own[["Pr(PB)"]][2]
p_ref <- pb_ref$test["PBtest", "p.value"]

# --- 2. bootstrap confidence intervals --------------------------------------
fr <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
mr <- lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy)
timed("ci_own", ci_own <- suppressWarnings(confint(fr, method = "boot", nsim = nsim, seed = 1)), reps = reps_own)
timed("ci_ref", ci_ref <- suppressMessages(suppressWarnings(
  confint(mr, method = "boot", nsim = nsim, seed = 1))))

cat(sprintf("\nnsim = %d, one core\n\n", nsim))
tm <- function(label, what) timing[[label]][[what]]
tab <- data.frame(
  task = c("PB test (Days | Subject) vs (1 | Subject)", "confint(method = \"boot\")"),
  reference = c("pbkrtest::PBmodcomp", "lme4 confint(method = \"boot\")"),
  lmmr_elapsed = round(c(tm("pb_own", "elapsed"), tm("ci_own", "elapsed")), 2),
  ref_elapsed = round(c(tm("pb_ref", "elapsed"), tm("ci_ref", "elapsed")), 2),
  ratio_elapsed = signif(c(tm("pb_own", "elapsed") / tm("pb_ref", "elapsed"),
                           tm("ci_own", "elapsed") / tm("ci_ref", "elapsed")), 3),
  lmmr_cpu = round(c(tm("pb_own", "cpu"), tm("ci_own", "cpu")), 2),
  ref_cpu = round(c(tm("pb_ref", "cpu"), tm("ci_ref", "cpu")), 2),
  ratio_cpu = signif(c(tm("pb_own", "cpu") / tm("pb_ref", "cpu"),
                       tm("ci_own", "cpu") / tm("ci_ref", "cpu")), 3),
  target = 0.02
)
print(tab, row.names = FALSE)

cat(sprintf("\nPB p-value: lmmr %.4f, pbkrtest %.4f (Monte Carlo s.e. of each about %.4f)\n",
            p_own, p_ref, sqrt(p_ref * (1 - p_ref) / nsim) + 1 / nsim))
cat("\nBootstrap 95% intervals (different random numbers; lme4 1.1-31 refits REML fits with REML denominator 1):\n")
print(cbind(lmmr = round(ci_own, 3), lme4 = round(ci_ref, 3)))

# --- lmmr's one-at-a-time refits (before the batched refits) ----------------
old_opt <- options(lmmr.refit_batch = FALSE)
timed("pb_one", pb_one <- anova(fit0, fit1, test = "PB", nsim = nsim, seed = 1), reps = reps_own)
timed("ci_one", ci_one <- suppressWarnings(confint(fr, method = "boot", nsim = nsim, seed = 1)), reps = reps_own)
options(old_opt)
cat(sprintf("\nlmmr one refit per call (options(lmmr.refit_batch = FALSE)): PB %.2f s elapsed / %.2f s CPU (ratio %.3g / %.3g), confint %.2f / %.2f s (ratio %.3g / %.3g)\n",
            tm("pb_one", "elapsed"), tm("pb_one", "cpu"),
            tm("pb_one", "elapsed") / tm("pb_ref", "elapsed"), tm("pb_one", "cpu") / tm("pb_ref", "cpu"),
            tm("ci_one", "elapsed"), tm("ci_one", "cpu"),
            tm("ci_one", "elapsed") / tm("ci_ref", "elapsed"), tm("ci_one", "cpu") / tm("ci_ref", "cpu")))
cat(sprintf("batched vs one at a time: max |LRT* difference| %.2g, max |interval difference| %.2g\n",
            max(abs(attr(pb_own, "pb")[[2]]$ref - attr(pb_one, "pb")[[2]]$ref)),
            max(abs(ci_own - ci_one))))

# --- lmmr on two cores -------------------------------------------------------
if (.Platform$OS.type != "windows") {
  timed("pb2", pb2 <- anova(fit0, fit1, test = "PB", nsim = nsim, seed = 1, ncores = 2))
  timed("ci2", ci2 <- suppressWarnings(confint(fr, method = "boot", nsim = nsim, seed = 1,
                                               ncores = 2)))
  cat(sprintf("\nlmmr with ncores = 2: PB %.2f s elapsed (ratio %.3g), confint %.2f s (ratio %.3g); results identical to one core: %s, %s\n",
              tm("pb2", "elapsed"), tm("pb2", "elapsed") / tm("pb_ref", "elapsed"),
              tm("ci2", "elapsed"), tm("ci2", "elapsed") / tm("ci_ref", "elapsed"),
              identical(pb2[["Pr(PB)"]], pb_own[["Pr(PB)"]]), identical(ci2, ci_own)))
}
cat(sprintf("\nload average at the end: %s\n",
            tryCatch(paste(readLines("/proc/loadavg"), collapse = " "), error = function(e) "NA")))
