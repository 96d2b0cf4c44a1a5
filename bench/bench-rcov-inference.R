# Kenward-Roger and Satterthwaite for residual-structure fits with random
# effects: 20 sites x n_per_site subjects x m visits,
# y ~ arm * visit + (1 | site) + us(visit | subject) (and ar1h, toeph).
# Times summary() with Satterthwaite and Kenward-Roger (Rust kernels) and,
# unless SKIP_R=1, the previous implementation in R on the same fit.
# Usage: Rscript bench/bench-rcov-inference.R [n_per_site] [m] [structures]
suppressPackageStartupMessages(library(lmmr))
args <- commandArgs(trailingOnly = TRUE)
n_per <- if (length(args) >= 1) as.integer(args[1]) else 25L
m <- if (length(args) >= 2) as.integer(args[2]) else 4L
types <- if (length(args) >= 3) strsplit(args[3], ",")[[1]] else c("us", "ar1h", "toeph")
set.seed(20)
n_site <- 20L
d <- expand.grid(visit = seq_len(m), subj = seq_len(n_per), site = seq_len(n_site))
d$id <- factor(sprintf("s%02d_%03d", d$site, d$subj))
d$site <- factor(d$site)
d$arm <- factor(ifelse(d$subj %% 2 == 0, "trt", "pbo"))
d$visit <- factor(d$visit)
S <- 10 * 0.6^abs(outer(seq_len(m), seq_len(m), "-")) * outer(sqrt(seq_len(m)), sqrt(seq_len(m)))
e <- t(chol(S)) %*% matrix(rnorm(m * n_per * n_site), m)
d$y <- 5 + 0.5 * (d$arm == "trt") * as.integer(d$visit) + rnorm(n_site, sd = 2)[d$site] + as.vector(e)
d <- d[stats::runif(nrow(d)) > 0.1, ]
cat(sprintf("%d sites x %d subjects x %d visits: %d rows\n", n_site, n_per, m, nrow(d)))
for (ty in types) {
  f <- stats::as.formula(sprintf("y ~ arm * visit + (1 | site) + %s(visit | id)", ty))
  t_fit <- system.time(fit <- lmm(f, data = d))[["elapsed"]]
  t_sat <- system.time(s1 <- summary(fit))[["elapsed"]]
  t_kr <- system.time(s2 <- summary(fit, ddf = "Kenward-Roger"))[["elapsed"]]
  t_r <- NA
  if (!nzchar(Sys.getenv("SKIP_R"))) {
    t_r <- system.time(old <- lmmr:::h_rcov_inference_parts_r(fit, "both"))[["elapsed"]]
    new <- lmmr:::h_rcov_inference_parts(fit, "both")
    cat(sprintf("  R reference %.2f s (Satterthwaite + KR); max rel. difference of the adjusted vcov %.1e\n", t_r,
                max(abs(new$kenward_roger$phi_adj - old$kenward_roger$phi_adj)) / max(abs(old$kenward_roger$phi_adj))))
  }
  cat(sprintf("%-6s k = %2d: fit %6.2f s, Satterthwaite %6.2f s, KR %6.2f s; KR df[2] %.6f, SE[2] %.8f, Satt df[2] %.6f\n",
              ty, length(lmmr:::h_rcov_phi(fit)), t_fit, t_sat, t_kr,
              coef(s2)[2, "df"], coef(s2)[2, "Std. Error"], coef(s1)[2, "df"]))
}
