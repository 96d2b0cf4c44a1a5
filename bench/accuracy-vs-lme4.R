# Accuracy of lmm() against lme4::lmer() (bobyqa) on the core-engine acceptance
# cases, REML and ML: relative differences (|a - b| / max(|b|, 1)); crit_rel is
# (ours - lme4) / |lme4| (negative: ours lower). Run: Rscript bench/accuracy-vs-lme4.R
suppressMessages({library(lmmr); library(lme4)})
set.seed(42)
d <- data.frame(g = factor(rep(1:15, each = 8)), x = rnorm(120), z = runif(120))
d$y <- 1 + 0.5 * d$x + rnorm(15)[d$g] + rnorm(120); d$w <- runif(120, 0.3, 3)
dna <- d; dna$y[c(3, 50)] <- NA; dna$x[7] <- NA
dr <- d; dr$x2 <- 2 * dr$x
cases <- list(
  list("Dyestuff", Yield ~ 1 + (1 | Batch), Dyestuff, NULL),
  list("Dyestuff2", Yield ~ 1 + (1 | Batch), Dyestuff2, NULL),
  list("sleep (Days|S)", Reaction ~ Days + (Days | Subject), sleepstudy, NULL),
  list("sleep (Days||S)", Reaction ~ Days + (Days || Subject), sleepstudy, NULL),
  list("sleep (1|S)+(0+Days|S)", Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), sleepstudy, NULL),
  list("Penicillin", diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin, NULL),
  list("Pastes", strength ~ 1 + (1 | batch/cask), Pastes, NULL),
  list("cake", angle ~ recipe * temperature + (1 | recipe:replicate), cake, NULL),
  list("sim weights", y ~ x + (x | g), d, d$w),
  list("sim offset", y ~ x + offset(2 * z) + (1 | g), d, NULL),
  list("sim NAs", y ~ x + (1 | g), dna, NULL),
  list("sim rank-deficient", y ~ x + x2 + (1 | g), dr, NULL))
out <- NULL
for (cs in cases) for (reml in c(TRUE, FALSE)) {
  f <- suppressMessages(do.call(lmm, list(cs[[2]], data = cs[[3]], REML = reml, weights = cs[[4]])))
  m <- suppressMessages(suppressWarnings(do.call(lmer, list(cs[[2]], data = cs[[3]], REML = reml, weights = cs[[4]], control = lmerControl(optimizer = "bobyqa")))))
  cr <- if (reml) REMLcrit(m) else deviance(m); c1 <- if (reml) f$objective else deviance(f)
  vc <- as.data.frame(VarCorr(f))$vcov; vr <- as.data.frame(lme4::VarCorr(m))$vcov
  re <- unlist(lapply(ranef(f), as.matrix)); rr <- unlist(lapply(lme4::ranef(m), as.matrix))
  pv <- unlist(lapply(ranef(f), function(x) attr(x, "postVar"))); pr <- unlist(lapply(lme4::ranef(m, condVar = TRUE), function(x) attr(x, "postVar")))
  rel <- function(a, b) max(abs(a - b) / pmax(abs(b), 1))
  out <- rbind(out, data.frame(case = cs[[1]], REML = reml, crit_rel = (c1 - cr) / abs(cr),
    fixef = rel(fixef(f), lme4::fixef(m)), se = rel(sqrt(diag(vcov(f))), sqrt(diag(as.matrix(vcov(m))))),
    varcomp = rel(vc, vr), blup = rel(re, rr), condvar = rel(pv, pr)))
}
print(out, digits = 2)
cat("max:", sapply(out[, -(1:2)], function(v) max(v)), "\n")
