# Generates data/sleepstudy.rda
# A copy of lme4::sleepstudy (Belenky et al. 2003, J Sleep Res 12:1-12),
# shipped so that vignettes can use it without lme4 installed.
# Run from the package root: Rscript data-raw/sleepstudy.R

stopifnot(requireNamespace("lme4", quietly = TRUE))
utils::data("sleepstudy", package = "lme4", envir = environment())
sleepstudy <- data.frame(
  Reaction = as.numeric(sleepstudy$Reaction),
  Days = as.numeric(sleepstudy$Days),
  Subject = factor(sleepstudy$Subject, levels = levels(sleepstudy$Subject))
)

save(sleepstudy, file = "data/sleepstudy.rda", compress = "xz", version = 2)
