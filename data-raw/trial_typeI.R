# Generates data/trial_typeI.rda
#
# Type-I error of a cluster-randomised comparison analysed with and without
# the clustering. Each replication simulates 10 schools x 30 pupils; treatment
# is assigned by school (5 treated, 5 control); the outcome is a test score
# with mean 50, between-school variance 25 and within-school variance 75
# (ICC = 0.25) and NO treatment effect. Two analyses per replication:
#   p_lm    : two-sided p-value of the treatment t test from lm(score ~ treat)
#   p_mixed : two-sided p-value of the treatment t test from a random-intercept
#             model, lmerTest::lmer(score ~ treat + (1 | school)) (REML,
#             Satterthwaite degrees of freedom)
# The results were produced with lme4/lmerTest; the same simulation can be
# re-run with lmmr::lmm() in place of lmerTest::lmer().
#
# Run from the package root: Rscript data-raw/trial_typeI.R  (about 1-2 min)

stopifnot(requireNamespace("lmerTest", quietly = TRUE))

set.seed(20240601)

n_rep <- 1000
n_school <- 10
n_pupil <- 30
tau2 <- 25      # between-school variance
sigma2 <- 75    # within-school variance; ICC = 25 / (25 + 75) = 0.25

school <- factor(rep(seq_len(n_school), each = n_pupil))
ctl <- lme4::lmerControl(check.conv.singular = "ignore")

one_rep <- function() {
  treat_school <- sample(rep(0:1, each = n_school / 2))
  dat <- data.frame(
    school = school,
    treat = treat_school[as.integer(school)]
  )
  dat$score <- 50 + rnorm(n_school, 0, sqrt(tau2))[as.integer(school)] +
    rnorm(nrow(dat), 0, sqrt(sigma2))
  p_lm <- coef(summary(lm(score ~ treat, data = dat)))["treat", "Pr(>|t|)"]
  fit <- lmerTest::lmer(score ~ treat + (1 | school), data = dat, control = ctl)
  p_mixed <- coef(summary(fit, ddf = "Satterthwaite"))["treat", "Pr(>|t|)"]
  c(p_lm = p_lm, p_mixed = p_mixed)
}

res <- t(replicate(n_rep, one_rep()))

trial_typeI <- data.frame(
  rep = seq_len(n_rep),
  p_lm = unname(res[, "p_lm"]),
  p_mixed = unname(res[, "p_mixed"])
)

save(trial_typeI, file = "data/trial_typeI.rda", compress = "xz", version = 2)
