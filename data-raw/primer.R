# Simulated data for the primer vignette (vignettes/primer.Rmd):
#  - primer_groups: 64 patients in 9 therapy groups (a SQUARE-test-like
#    design: a symptom score, age and treatment), one row per patient;
#  - primer_long: the same patients measured at 4 time points (months 0, 3,
#    6 and 9), long format, with some missed visits.
# Run from the package root: Rscript data-raw/primer.R
set.seed(20261201)
n_groups <- 9
sizes <- c(6, 7, 7, 7, 7, 7, 7, 8, 8)            # 64 patients
group <- factor(rep(sprintf("G%d", seq_len(n_groups)), sizes))
n <- length(group)
# treatment is assigned to whole groups (a cluster-randomised design)
trt_group <- c(0, 1, 0, 1, 0, 1, 0, 1, 1)
treatment <- factor(ifelse(trt_group[as.integer(group)] == 1, "therapy", "control"),
                    levels = c("control", "therapy"))
age <- round(rnorm(n, 45, 10) + rnorm(n_groups, 0, 4)[as.integer(group)])
u <- rnorm(n_groups, 0, 3)[as.integer(group)]  # group effect, tau = 3
score <- 30 - 4 * (treatment == "therapy") + 0.15 * (age - 45) + u + rnorm(n, 0, 5)
primer_groups <- data.frame(patient = factor(sprintf("P%02d", seq_len(n))),
                            group = group, treatment = treatment, age = age,
                            score = round(score, 1))

times <- c(0, 3, 6, 9)
long <- primer_groups[rep(seq_len(n), each = 4), c("patient", "group", "treatment", "age")]
long$month <- rep(times, n)
long$time <- factor(paste0("T", long$month), levels = paste0("T", times))
# patient effects: intercept and slope; AR(1)-like residuals over visits
pid <- as.integer(long$patient)
b0 <- rnorm(n, 0, 4)[pid]
b1 <- rnorm(n, 0, 0.25)[pid]
gid <- as.integer(long$group)
g0 <- rnorm(n_groups, 0, 2)[gid]
e <- as.vector(t(sapply(seq_len(n), function(i) {
  as.numeric(stats::arima.sim(list(ar = 0.5), n = 4, sd = 3 * sqrt(1 - 0.25)))
})))
therapy <- long$treatment == "therapy"
long$score <- round(32 + 0.15 * (long$age - 45) - 0.3 * long$month -
                      0.5 * therapy * long$month + b0 + b1 * long$month + g0 + e, 1)
# about 6% of the follow-up visits are missed
miss <- long$month > 0 & stats::runif(nrow(long)) < 0.06
primer_long <- long[!miss, ]
rownames(primer_long) <- NULL
save(primer_groups, file = "data/primer_groups.rda", compress = "xz")
save(primer_long, file = "data/primer_long.rda", compress = "xz")
