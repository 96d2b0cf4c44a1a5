# Generates data/phaa_clinics.rda
#
# Simulated data: systolic blood pressure of about 960 patients treated in
# 30 primary-care clinics. Used in the course vignettes to illustrate the
# intraclass correlation, patient- and clinic-level covariates, random slopes
# and contextual (between- vs within-clinic) effects.
#
# Generating model (clinic j, patient i):
#   sbp_ij = 131 + 0.5 * (age_ij - agebar_j) + 1.5 * (agebar_j - 52)
#            - 5 * female_ij + 0.8 * (bmi_ij - 27) + (4 + v_j) * smoker_ij
#            - 3 * urban_j - 2 * z(staff_j) + u_j + e_ij
#   u_j ~ N(0, 12)          random clinic intercept (variance 12)
#   v_j ~ N(0, 1.5^2)       small clinic-specific smoking effect
#   e_ij: right-skewed (centred and scaled gamma, shape 6), SD 15
# agebar_j is the observed mean age of clinic j's patients, so the contextual
# effect of age is 1.5 - 0.5 = 1 mmHg per year of clinic mean age.
# Rural clinics serve older patients (clinic mean age about 2 years higher).
# Urban clinics have more staff. Patient ages are truncated to 18-90 and BMI
# to 16-50 by redrawing out-of-range values.
#
# The seed (111) was chosen once, off-line, so that the fitted lme4 (REML)
# models give the numbers used in the lesson (null ICC about 0.17-0.18,
# adjusted ICC about 0.10, a non-significant random smoking slope); the
# script itself is deterministic and does no searching.
#
# Run from the package root: Rscript data-raw/phaa_clinics.R

set.seed(111)

n_clinics <- 30

# Unequal clinic sizes from 20 to 44 patients, 960 patients in total.
clinic_n <- sample(round(seq(20, 44, length.out = n_clinics)))

# Clinic-level characteristics.
urban <- rbinom(n_clinics, 1, 0.5)
staff <- round(exp(rnorm(n_clinics, log(12) + 0.5 * urban, 0.4)))
clinic_age <- 52 + 2 * (1 - urban) + rnorm(n_clinics, 0, 3)
u_clinic <- rnorm(n_clinics, 0, sqrt(12))
v_smoke <- rnorm(n_clinics, 0, 1.5)

clinic <- rep(seq_len(n_clinics), clinic_n)
n <- length(clinic)

# Normal draws restricted to [lo, hi] by redrawing values out of range.
rnorm_bounded <- function(n, mean, sd, lo, hi) {
  mean <- rep_len(mean, n)
  x <- rnorm(n, mean, sd)
  out <- x < lo | x > hi
  while (any(out)) {
    x[out] <- rnorm(sum(out), mean[out], sd)
    out <- x < lo | x > hi
  }
  x
}

# Patient-level characteristics.
age <- round(rnorm_bounded(n, clinic_age[clinic], 13, 18, 90))
female <- rbinom(n, 1, 0.55)
bmi <- round(rnorm_bounded(n, 26 + 0.04 * (age - 50) + 0.8 * (1 - urban[clinic]),
                           4.8, 16, 50), 1)
smoker <- rbinom(n, 1, plogis(-1.5 + 0.4 * (1 - urban[clinic]) - 0.02 * (age - 50)))

# Outcome.
age_mean <- ave(age, clinic)
staff_z <- (staff - mean(staff)) / sd(staff)
shape <- 6
resid <- 15 * (rgamma(n, shape, 1) - shape) / sqrt(shape)
sbp <- 131 +
  0.5 * (age - age_mean) + 1.5 * (age_mean - 52) -
  5 * female + 0.8 * (bmi - 27) + (4 + v_smoke[clinic]) * smoker -
  3 * urban[clinic] - 2 * staff_z[clinic] + u_clinic[clinic] + resid

phaa_clinics <- data.frame(
  clinic_id = factor(sprintf("C%02d", clinic)),
  clinic_urban = factor(ifelse(urban[clinic] == 1, "urban", "rural"),
                        levels = c("rural", "urban")),
  clinic_size = as.numeric(staff[clinic]),
  age = as.numeric(age),
  female = as.integer(female),
  bmi = bmi,
  smoker = factor(ifelse(smoker == 1, "Yes", "No"), levels = c("No", "Yes")),
  sbp = round(sbp)
)

save(phaa_clinics, file = "data/phaa_clinics.rda", compress = "xz", version = 2)
