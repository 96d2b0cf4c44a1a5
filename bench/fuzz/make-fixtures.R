# Writes the harness cases used by tests/testthat/test-fuzz-regressions.R to
# tests/testthat/fixtures/fuzz-cases.rds (only the columns each formula
# uses). Run from the repository root with case ids, `id` for seed 1 or
# `seed:id`: Rscript bench/fuzz/make-fixtures.R 465 664 2:171
source("bench/fuzz/gen.R")
ids <- commandArgs(TRUE)
cases <- lapply(ids, function(s) {
  sid <- as.integer(strsplit(s, ":", fixed = TRUE)[[1L]])
  if (length(sid) == 1L) sid <- c(1L, sid)
  cs <- fuzz_case(sid[1L], sid[2L])
  vars <- all.vars(str2lang(cs$formula))
  keep <- intersect(c(vars, if (cs$weights) "w", if (cs$offset) "o"), names(cs$data))
  cs$data <- cs$data[, keep, drop = FALSE]
  cs[c("seed", "id", "formula", "REML", "weights", "offset", "note", "data")]
})
names(cases) <- ifelse(grepl(":", ids), paste0("case_", sub(":", "_", ids)), paste0("case_", ids))
saveRDS(cases, "tests/testthat/fixtures/fuzz-cases.rds", version = 2)
cat("wrote", length(cases), "cases\n")
