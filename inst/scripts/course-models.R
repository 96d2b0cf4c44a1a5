# The package's main job: the course's lesson activity on the shipped data,
# with the lesson's questions answered in the printout. Run with `make demo`
# (or Rscript inst/scripts/course-models.R once lmmr is installed).
library(lmmr)

section <- function(title) cat("\n", strrep("=", 72), "\n", title, "\n",
                               strrep("=", 72), "\n", sep = "")
answer <- function(...) cat("\n>> ", sprintf(...), "\n", sep = "")

section("Sleep deprivation: random intercept, then random intercept and slope")
s0 <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
print(summary(s0))
s1 <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
print(summary(s1))

section("Prevention programme: 20 schools in 5 communities (null model)")
mp <- lmm(risk ~ 1 + (1 | community), data = prevention)
print(summary(mp))
print(icc(mp))

section("Lesson activity: blood pressure of 960 patients in 30 clinics")
cat("Q1. How much of the variation in blood pressure lies between clinics?\n")
m0 <- lmm(sbp ~ 1 + (1 | clinic_id), data = phaa_clinics)
print(icc(m0))
answer("ICC of the null model = %.3f: %.0f%% of the variance of SBP is between clinics.",
       icc(m0)$adjusted, 100 * icc(m0)$adjusted)

cat("\nQ2. What remains between clinics after patient and clinic covariates?\n")
m2 <- lmm(sbp ~ age + female + bmi + smoker + clinic_urban + scale(clinic_size) +
            (1 | clinic_id), data = phaa_clinics)
print(summary(m2))
print(icc(m2))
answer("Adjusted ICC = %.3f (was %.3f): covariates explain part of the between-clinic variance.",
       icc(m2)$adjusted, icc(m0)$adjusted)

cat("\nQ3. Is the random intercept needed?\n")
r <- ranova(m2)
print(r)
answer("LRT = %.1f, boundary-corrected p = %.2g: clinics differ beyond the covariates.",
       r$LRT[2], r[["Pr(>Chisq) mixture"]][2])

cat("\nQ4. Does the effect of smoking vary between clinics?\n")
m3 <- update(m2, . ~ . - (1 | clinic_id) + (1 + smoker | clinic_id))
a <- anova(m2, m3)
print(a)
answer("LRT = %.2f on %d df, p = %.2f: the random slope for smoking is not supported; keep m2.",
       a$Chisq[2], as.integer(a$Df[2]), a[["Pr(>Chisq)"]][2])

cat("\nQ5. Is age's effect the same within and between clinics (contextual effect)?\n")
pc <- split_within_between(phaa_clinics, "age", cluster = "clinic_id")
m4 <- lmm(sbp ~ age_within + age_between + female + bmi + smoker +
            clinic_urban + scale(clinic_size) + (1 | clinic_id), data = pc)
ce <- contextual(m4, "age")
print(ce)
answer("Within clinics %.2f mmHg per year of age, between clinics %.2f: contextual effect %.2f mmHg per year.",
       ce$estimate[1], ce$estimate[2], ce$estimate[3])

section("Vignettes (open with vignette(\"<name>\", package = \"lmmr\"))")
v <- utils::vignette(package = "lmmr")$results
if (NROW(v)) {
  for (i in seq_len(nrow(v))) cat(sprintf("  %-24s %s\n", v[i, "Item"], v[i, "Title"]))
} else {
  cat("  (no vignettes installed: install from the built tarball, as `make demo` does)\n")
}
