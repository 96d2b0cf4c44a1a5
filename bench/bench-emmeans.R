# emmeans on lmm() fits vs emmeans on lmerTest::lmer() fits (pbkrtest for
# Kenward-Roger, lmerTest for Satterthwaite): time of emmeans() + pairs()
# with each df method, same data, same process, median of repeated runs.
# lmmr computes the df ingredients once per grid; emmeans disables KR for
# lmer fits above pbkrtest.limit = 3000 rows (raised here for the
# comparison), and lmmr needs no limit.
#   Rscript bench/bench-emmeans.R [--quick]
suppressPackageStartupMessages({
  library(lmmr); library(lmerTest); library(emmeans)
})
quick <- "--quick" %in% commandArgs(TRUE)
reps <- if (quick) 3 else 5
med_time <- function(expr) {
  f <- function() eval(expr, parent.frame(3))
  stats::median(vapply(seq_len(reps), function(i) system.time(f())[["elapsed"]], numeric(1)))
}
sim <- function(n_groups, m, seed = 1) {
  set.seed(seed)
  g <- factor(rep(seq_len(n_groups), each = m))
  trt <- factor(sample(c("A", "B", "C", "D"), n_groups * m, replace = TRUE))
  x <- rnorm(n_groups * m)
  y <- 1 + as.numeric(trt) * 0.3 + 0.5 * x + rnorm(n_groups)[g] + rnorm(n_groups * m)
  data.frame(y, trt, x, g)
}
cases <- list(
  list(name = "phaa_clinics (960 rows)", data = phaa_clinics,
       f = sbp ~ clinic_urban * smoker + age + (1 | clinic_id), spec = ~ clinic_urban * smoker),
  list(name = "simulated 3000 rows, 100 groups", data = sim(100, 30),
       f = y ~ trt + x + (1 | g), spec = ~ trt),
  list(name = "simulated 20000 rows, 400 groups", data = sim(400, 50),
       f = y ~ trt + x + (1 | g), spec = ~ trt, lmmr_only = quick)
)
emm_options(pbkrtest.limit = 1e6, lmerTest.limit = 1e6)
rows <- list()
for (cs in cases) {
  fit <- lmm(cs$f, data = cs$data)
  ref <- lmer(cs$f, data = cs$data)
  for (mode in c("kenward-roger", "satterthwaite")) {
    t_lmmr <- med_time(quote(summary(pairs(emmeans(fit, cs$spec, lmer.df = mode)))))
    t_ref <- if (isTRUE(cs$lmmr_only)) NA_real_ else
      med_time(quote(summary(pairs(emmeans(ref, cs$spec, lmer.df = mode)))))
    rows[[length(rows) + 1L]] <- data.frame(data = cs$name, df = mode, lmmr_s = t_lmmr,
                                            lmer_s = t_ref, ratio = t_lmmr / t_ref)
  }
}
print(do.call(rbind, rows), digits = 3, row.names = FALSE)
