# Repeated measures with an unstructured residual covariance:
# lmmr::lmm(y ~ arm * visit + us(visit | id)) against
# nlme::gls(correlation = corSymm, weights = varIdent), side by side in one
# process, plus Kenward-Roger on the lmmr fit.
#   Rscript bench/bench-covstruct.R [n_subjects] [n_visits] [dropout] [mcar]
# Defaults: 10000 subjects x 10 visits, 10% monotone dropout per visit after
# the first (so a handful of visit patterns, as in a trial); `mcar` > 0 also
# deletes that fraction of the remaining visits at random (many patterns).
# SKIP_NLME=1 skips the nlme fit.
suppressPackageStartupMessages({ library(lmmr); library(nlme) })
# elapsed and CPU (user + system) seconds: the machine may be shared
tm <- function(expr) {
  t <- system.time(expr)
  c(elapsed = t[["elapsed"]], cpu = t[["user.self"]] + t[["sys.self"]])
}
args <- commandArgs(trailingOnly = TRUE)
n_subj <- if (length(args) >= 1) as.integer(args[1]) else 10000L
m <- if (length(args) >= 2) as.integer(args[2]) else 10L
dropout <- if (length(args) >= 3) as.numeric(args[3]) else 0.1
mcar <- if (length(args) >= 4) as.numeric(args[4]) else 0
set.seed(42)
ar <- 0.6^abs(outer(seq_len(m), seq_len(m), "-"))
sds <- seq(1, 2, length.out = m)
V <- ar * outer(sds, sds)
L <- t(chol(V))
d <- data.frame(id = factor(rep(seq_len(n_subj), each = m)),
                visit = factor(rep(sprintf("V%02d", seq_len(m)), n_subj)),
                visitn = rep(seq_len(m), n_subj),
                arm = factor(rep(sample(c("PBO", "TRT"), n_subj, TRUE), each = m)))
d$y <- as.vector(L %*% matrix(rnorm(n_subj * m), m)) + 0.2 * d$visitn +
  0.3 * (d$arm == "TRT") * d$visitn
last <- pmin(m, 1L + stats::rgeom(n_subj, dropout))
d <- d[d$visitn <= rep(last, each = m), ]
if (mcar > 0) d <- d[d$visitn == 1 | stats::runif(nrow(d)) > mcar, ]
cat(sprintf("%d subjects, %d visits, %d rows, %d visit patterns, %d covariance parameters\n",
            n_subj, m, nrow(d),
            length(unique(tapply(d$visitn, droplevels(d$id), paste, collapse = ","))),
            m * (m + 1) / 2))

t_lmmr <- tm(fit <- lmm(y ~ arm * visit + us(visit | id), data = d))
cat(sprintf("lmmr fit:            %8.2f s elapsed, %8.2f s CPU  (-2 REML logLik %.6f, %d BFGS iterations)\n",
            t_lmmr[1], t_lmmr[2], deviance(fit), fit$optinfo$n_iter))
t_kr <- tm(s_kr <- summary(fit, ddf = "Kenward-Roger"))
cat(sprintf("lmmr Kenward-Roger:  %8.2f s elapsed, %8.2f s CPU  (df of armTRT:visitV%02d %.2f)\n",
            t_kr[1], t_kr[2], m, coef(s_kr)[nrow(coef(s_kr)), "df"]))
t_sat <- tm(s_sat <- summary(fit))
cat(sprintf("lmmr Satterthwaite:  %8.2f s elapsed, %8.2f s CPU\n", t_sat[1], t_sat[2]))

if (!identical(Sys.getenv("SKIP_NLME"), "1")) {
  t_nlme <- tm(g <- gls(y ~ arm * visit, data = d,
                         correlation = corSymm(form = ~ visitn | id),
                         weights = varIdent(form = ~ 1 | visit),
                         method = "REML"))
  cat(sprintf("nlme::gls fit:       %8.2f s elapsed, %8.2f s CPU  (-2 REML logLik %.6f)\n",
              t_nlme[1], t_nlme[2], -2 * as.numeric(logLik(g))))
  cat(sprintf("criterion difference (lmmr - nlme): %.2e; max |beta difference| %.2e\n",
              deviance(fit) + 2 * as.numeric(logLik(g)), max(abs(fixef(fit) - coef(g)))))
  cat(sprintf("speed ratio nlme / lmmr (fit): %.0fx elapsed, %.0fx CPU\n",
              t_nlme[1] / t_lmmr[1], t_nlme[2] / t_lmmr[2]))
}
