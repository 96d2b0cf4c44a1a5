# Time lmm() against lme4::lmer() side by side, in one R process, and print
# the ratio lmm/lmer for each case. Run: Rscript bench/bench-fit.R [--quick]
suppressPackageStartupMessages({
  library(lmmr)
  library(lme4)
})
quick <- "--quick" %in% commandArgs(trailingOnly = TRUE)

time_it <- function(expr, reps) {
  expr <- substitute(expr)
  env <- parent.frame()
  times <- vapply(seq_len(reps), function(i) {
    gc(FALSE)
    system.time(suppressMessages(suppressWarnings(eval(expr, env))))[["elapsed"]]
  }, numeric(1))
  median(times)
}

bench_case <- function(label, formula, data, reps) {
  t_lmm <- time_it(lmm(formula, data = data), reps)
  t_lmer <- time_it(lmer(formula, data = data), reps)
  f1 <- suppressMessages(lmm(formula, data = data))
  f2 <- suppressMessages(lmer(formula, data = data))
  rel_crit <- (-2 * as.numeric(logLik(f1)) - REMLcrit(f2)) / abs(REMLcrit(f2))
  data.frame(case = label, n = nrow(data), lmm_s = t_lmm, lmer_s = t_lmer,
             ratio = t_lmm / t_lmer,
             max_abs_fixef_diff = max(abs(fixef(f1) - lme4::fixef(f2))),
             rel_crit_diff = rel_crit)
}

make_big <- function(n, p, G, seed = 1) {
  set.seed(seed)
  X <- matrix(rnorm(n * (p - 1)), n, p - 1)
  colnames(X) <- paste0("x", seq_len(p - 1))
  g <- sample.int(G, n, replace = TRUE)
  y <- drop(X %*% seq(0.1, 1, length.out = p - 1)) + rnorm(G)[g] + rnorm(n)
  d <- data.frame(y = y, X, g = factor(g))
  d
}

results <- list()
results[[1]] <- bench_case("sleepstudy (Days|Subject)", Reaction ~ Days + (Days | Subject),
                           lme4::sleepstudy, reps = 20)
results[[2]] <- bench_case("InstEval y ~ service + (1|s) + (1|d)",
                           y ~ service + (1 | s) + (1 | d), lme4::InstEval,
                           reps = if (quick) 1 else 3)
big <- make_big(if (quick) 1e5 else 1e6, 10, if (quick) 1e3 else 1e4)
fbig <- as.formula(paste("y ~", paste(paste0("x", 1:9), collapse = " + "), "+ (1 | g)"))
results[[3]] <- bench_case(sprintf("%g rows, 10 fixed, %d groups", nrow(big), nlevels(big$g)),
                           fbig, big, reps = if (quick) 1 else 3)
res <- do.call(rbind, results)
print(res, digits = 3, row.names = FALSE)
cat(sprintf("\n%s: %s\n", res$case, ifelse(res$ratio < 0.5, "ratio < 0.5 (target met)",
                                          "ratio >= 0.5 (target missed)")), sep = "")
