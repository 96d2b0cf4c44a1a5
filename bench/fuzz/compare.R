# Outcome counts of fuzz runs side by side, from their CSVs:
#   Rscript bench/fuzz/compare.R before=b1.csv,b2.csv after=a1.csv,a2.csv
# Prints the counts by outcome, the silent-worse cases, the refusals by
# message and the cases where lmm took more than 5 s while lme4 took less
# than 3 s.
args <- commandArgs(TRUE)
runs <- lapply(strsplit(sub("^[^=]*=", "", args), ","), function(f) do.call(rbind, lapply(f, read.csv)))
names(runs) <- sub("=.*", "", args)
lev <- c("both_fit", "lmm_better", "lmm_worse_warned", "lmm_worse_silent", "lmm_refuses",
         "both_refuse", "lme4_refuses", "different_model", "hang", "crash", "unclassed_error",
         "lmm_nonfinite")
tab <- sapply(runs, function(r) table(factor(r$outcome, levels = lev)))
print(rbind(tab, cases = sapply(runs, nrow)))
for (nm in names(runs)) {
  r <- runs[[nm]]
  cat(sprintf("\n== %s: lmm %.0f s, lme4 %.0f s in all\n", nm, sum(r$lmm_time), sum(r$lme4_time)))
  s <- r[r$outcome == "lmm_worse_silent", c("case", "formula", "rel_diff", "rel_diff_dense")]
  if (nrow(s)) { cat("silent worse:\n"); print(s, row.names = FALSE) }
  ref <- r[r$outcome == "lmm_refuses", ]
  if (nrow(ref)) {
    key <- substr(sub("^[^:]*: ", "", ref$lmm_message), 1, 60)
    cat("refusals where lme4 fits, by message:\n"); print(sort(table(key), decreasing = TRUE))
  }
  slow <- r[r$lmm_time > 5 & r$lme4_time < 3, c("case", "outcome", "formula", "n", "lmm_time", "lme4_time")]
  cat(sprintf("lmm > 5 s where lme4 < 3 s: %d cases\n", nrow(slow)))
  if (nrow(slow)) print(slow[order(-slow$lmm_time), ], row.names = FALSE)
  cat(sprintf("lmm > 2 s and > 3x lme4: %d cases; time budget spent: %d\n",
              sum(r$lmm_time > 2 & r$lmm_time > 3 * r$lme4_time), sum(r$lmm_time_budget)))
}
