# Generates data/prevention.rda
# Risk scores of 20 schools (4 per community) in 5 communities; a small
# worked example of a two-level random-intercept model.
# Run from the package root: Rscript data-raw/prevention.R

scores <- list(
  A = c(42, 47, 39, 44),
  B = c(31, 28, 35, 30),
  C = c(55, 58, 51, 60),
  D = c(38, 41, 36, 33),
  E = c(48, 52, 45, 51)
)

prevention <- data.frame(
  community = factor(rep(names(scores), lengths(scores)), levels = names(scores)),
  school = factor(unlist(lapply(lengths(scores), seq_len))),
  risk = as.numeric(unlist(scores, use.names = FALSE))
)
rownames(prevention) <- NULL

save(prevention, file = "data/prevention.rda", compress = "xz", version = 2)
