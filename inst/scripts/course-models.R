# The package's main job: fit the course models on the shipped data and print
# the results. Run with `make demo` (or Rscript inst/scripts/course-models.R
# once lmmr is installed).
library(lmmr)

section <- function(title) cat("\n", strrep("=", 72), "\n", title, "\n",
                               strrep("=", 72), "\n", sep = "")

section("Sleep deprivation: random intercept, then random intercept and slope")
m0 <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
print(summary(m0))
m1 <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
print(summary(m1))

section("Prevention programme: 20 schools in 5 communities (null model)")
mp <- lmm(risk ~ 1 + (1 | community), data = prevention)
print(summary(mp))
print(ranef(mp))

if (exists("phaa_clinics")) {
  section("Blood pressure in 30 clinics: the lesson's models")
  c0 <- lmm(sbp ~ 1 + (1 | clinic_id), data = phaa_clinics)
  print(summary(c0))
  c1 <- lmm(sbp ~ age + female + bmi + smoker + clinic_urban + scale(clinic_size) +
              (1 | clinic_id), data = phaa_clinics)
  print(summary(c1))
  c2 <- lmm(sbp ~ age + female + bmi + smoker + clinic_urban + scale(clinic_size) +
              (1 + smoker | clinic_id), data = phaa_clinics)
  print(VarCorr(c2))
}
