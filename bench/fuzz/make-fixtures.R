# Writes the harness cases used by tests/testthat/test-fuzz-regressions.R to
# tests/testthat/fixtures/fuzz-cases.rds (only the columns each formula
# uses). Run from the repository root: Rscript bench/fuzz/make-fixtures.R
source("bench/fuzz/gen.R")
seed <- 1L
ids <- as.integer(commandArgs(TRUE))
cases <- lapply(ids, function(id) {
  cs <- fuzz_case(seed, id)
  vars <- all.vars(str2lang(cs$formula))
  keep <- intersect(c(vars, if (cs$weights) "w", if (cs$offset) "o"), names(cs$data))
  cs$data <- cs$data[, keep, drop = FALSE]
  cs[c("seed", "id", "formula", "REML", "weights", "offset", "note", "data")]
})
names(cases) <- paste0("case_", ids)
saveRDS(cases, "tests/testthat/fixtures/fuzz-cases.rds", version = 2)
cat("wrote", length(cases), "cases\n")
