#' Blood pressure of patients in 30 primary-care clinics (simulated)
#'
#' Simulated data on systolic blood pressure of 960 adult patients treated
#' in 30 primary-care clinics (20 to 44 patients per clinic). The data are
#' used in the course vignettes to illustrate the intraclass correlation,
#' patient- and clinic-level covariates, random slopes and contextual
#' (between- versus within-clinic) effects.
#'
#' The data are **simulated**; they do not describe real patients or
#' clinics. For patient \eqn{i} in clinic \eqn{j} the generating model is
#' \deqn{sbp_{ij} = 131 + 0.5 (age_{ij} - \bar{a}_j) + 1.5 (\bar{a}_j - 52)
#'   - 5\,female_{ij} + 0.8 (bmi_{ij} - 27) + (4 + v_j)\,smoker_{ij}
#'   - 3\,urban_j - 2\,z_j + u_j + e_{ij},}{sbp = 131 + 0.5 (age - abar) +
#'   1.5 (abar - 52) - 5 female + 0.8 (bmi - 27) + (4 + v) smoker - 3 urban -
#'   2 z + u + e,}
#' where \eqn{\bar{a}_j}{abar} is the mean age of the clinic's patients,
#' \eqn{z_j}{z} the standardised `clinic_size`, \eqn{u_j \sim N(0, 12)}{u ~
#' N(0, 12)} a random clinic intercept, \eqn{v_j \sim N(0, 1.5^2)}{v ~ N(0,
#' 1.5^2)} a small clinic-specific smoking effect and \eqn{e_{ij}}{e} a
#' right-skewed patient-level error (a centred gamma variable) with standard
#' deviation 15. Age therefore has a within-clinic effect of 0.5 mmHg per
#' year and a between-clinic effect of 1.5 mmHg per year of clinic mean age
#' (a contextual effect of 1 mmHg per year). Rural clinics serve somewhat
#' older patients and urban clinics have more staff. `sbp` is rounded to
#' whole mmHg.
#'
#' Fitted with `lme4::lmer()` (REML), the null model
#' `sbp ~ 1 + (1 | clinic_id)` gives a between-clinic variance of about 63,
#' a residual variance of about 305 and an ICC of about 0.17; adding the
#' patient covariates and the clinic covariates (`clinic_urban`,
#' `scale(clinic_size)`) lowers the (adjusted) ICC to about 0.095; a random
#' slope for `smoker` is not supported (REML likelihood-ratio
#' \eqn{\chi^2 \approx 1.3}{chi-square about 1.3}, 2 df, p = 0.52).
#'
#' @format A data frame with 960 rows and 8 columns:
#' \describe{
#'   \item{clinic_id}{Clinic identifier, a factor with 30 levels `"C01"` to
#'     `"C30"`.}
#'   \item{clinic_urban}{Location of the clinic, a factor with levels
#'     `"rural"` and `"urban"` (clinic level).}
#'   \item{clinic_size}{Number of clinical staff of the clinic, numeric
#'     (clinic level; 8 to 47).}
#'   \item{age}{Age of the patient in whole years (18 to 90).}
#'   \item{female}{Sex of the patient, integer: 1 = female, 0 = male.}
#'   \item{bmi}{Body mass index in kg/m\eqn{^2}{^2}, one decimal (16 to 50).}
#'   \item{smoker}{Current smoker, a factor with levels `"No"` and `"Yes"`.}
#'   \item{sbp}{Systolic blood pressure in mmHg (whole numbers).}
#' }
#' @source Simulated by `data-raw/phaa_clinics.R` in the package sources
#'   (fixed seed).
#' @seealso [prevention], [sleepstudy]
#' @examples
#' head(phaa_clinics)
#' table(phaa_clinics$clinic_id)
#' # clinic-mean and within-clinic age for a contextual-effect model
#' phaa_clinics$age_mean <- ave(phaa_clinics$age, phaa_clinics$clinic_id)
#' phaa_clinics$age_within <- phaa_clinics$age - phaa_clinics$age_mean
"phaa_clinics"

#' Risk scores of 20 schools in 5 communities
#'
#' A small textbook example of two-level data: a risk score for each of
#' four schools in each of five communities. With so few observations the
#' random-intercept model can be worked through by hand.
#'
#' Fitted with REML, `risk ~ 1 + (1 | community)` gives a between-community
#' variance of 93.37, a within-community (residual) variance of 11.33, an
#' ICC of 0.892, an intercept of 43.2 (SE 4.386, 4 df) and predicted
#' community effects (BLUPs) of -0.19, -11.84, 12.42, -6.02 and 5.63 for
#' communities A to E.
#'
#' @format A data frame with 20 rows and 3 columns:
#' \describe{
#'   \item{community}{Community, a factor with levels `"A"` to `"E"`.}
#'   \item{school}{School within community, a factor with levels `"1"` to
#'     `"4"` (the same label denotes different schools in different
#'     communities).}
#'   \item{risk}{Risk score of the school, numeric.}
#' }
#' @source Constructed teaching example; see `data-raw/prevention.R` in the
#'   package sources.
#' @seealso [phaa_clinics]
#' @examples
#' head(prevention)
#' tapply(prevention$risk, prevention$community, mean)
"prevention"

#' Reaction times in a sleep deprivation study
#'
#' Average reaction time per day for 18 subjects in a sleep deprivation
#' study. On day 0 the subjects had their normal amount of sleep; from that
#' night on they were restricted to 3 hours of sleep per night. The
#' observations are the average reaction times on a series of tests given
#' each day. This is an identical copy of `sleepstudy` from the \pkg{lme4}
#' package, included so that examples and vignettes can run without
#' \pkg{lme4}.
#'
#' @format A data frame with 180 rows and 3 columns:
#' \describe{
#'   \item{Reaction}{Average reaction time (ms).}
#'   \item{Days}{Number of days of sleep deprivation (0 to 9), numeric.}
#'   \item{Subject}{Subject identifier, a factor with 18 levels.}
#' }
#' @source Copied from `lme4::sleepstudy` (lme4 1.1-31) by
#'   `data-raw/sleepstudy.R`. The data are from the study described in
#'   Belenky, G., Wesensten, N. J., Thorne, D. R., Thomas, M. L., Sing,
#'   H. C., Redmond, D. P., Russo, M. B. and Balkin, T. J. (2003). Patterns
#'   of performance degradation and restoration during sleep restriction and
#'   subsequent recovery: a sleep dose-response study. *Journal of Sleep
#'   Research*, 12, 1--12.
#' @examples
#' head(sleepstudy)
#' xtabs(~ Subject, sleepstudy)
"sleepstudy"

#' Type-I error of a cluster-randomised trial analysis (simulation results)
#'
#' Precomputed results of a simulation comparing an analysis that ignores
#' clustering with a mixed-model analysis. In each of 1000 replications 10
#' schools with 30 pupils each were simulated; treatment was assigned by
#' school (5 treated, 5 control); scores had mean 50, between-school
#' variance 25 and within-school variance 75 (ICC = 0.25) and there was
#' **no** treatment effect. The treatment effect was then tested with the
#' ordinary t test of `lm(score ~ treat)` and with the t test of a
#' random-intercept model `lmerTest::lmer(score ~ treat + (1 | school))`
#' (REML, Satterthwaite degrees of freedom). A test rejects at the 5% level
#' when its p-value is below 0.05; `lm()` rejects in about half of the
#' replications, the mixed model in close to 5%.
#'
#' The results were produced by `data-raw/trial_typeI.R` (seeded) with
#' \pkg{lme4} and \pkg{lmerTest}; the script can be re-run with
#' `lmmr::lmm()` in place of `lmerTest::lmer()`.
#'
#' @format A data frame with 1000 rows and 3 columns:
#' \describe{
#'   \item{rep}{Replication number, integer 1 to 1000.}
#'   \item{p_lm}{Two-sided p-value for treatment from `lm()`, ignoring the
#'     schools.}
#'   \item{p_mixed}{Two-sided p-value for treatment from the random-intercept
#'     model (lmerTest, Satterthwaite).}
#' }
#' @source Simulated by `data-raw/trial_typeI.R` in the package sources.
#' @examples
#' head(trial_typeI)
#' # empirical type-I error rates
#' colMeans(trial_typeI[c("p_lm", "p_mixed")] < 0.05)
"trial_typeI"

#' Patients in nine therapy groups (simulated, for the primer)
#'
#' Simulated data in the shape of a small clinical study in which 64
#' patients are treated in 9 therapy groups (6 to 8 patients each) and the
#' groups are randomised to a therapy or a control condition. Used in the
#' primer vignette (`vignette("primer", package = "lmmr")`) to compare a
#' grouping variable entered as fixed effects with a random intercept.
#'
#' The generating model is
#' \deqn{score_{ij} = 30 - 4\,therapy_j + 0.15 (age_{ij} - 45) + u_j + e_{ij}}{score = 30 - 4 therapy + 0.15 (age - 45) + u + e}
#' with \eqn{u_j \sim N(0, 3^2)}{u ~ N(0, 9)} and \eqn{e_{ij} \sim N(0, 5^2)}{e ~ N(0, 25)}; the groups
#' differ a little in mean age. The data are simulated (`data-raw/primer.R`,
#' seed 20261201); they describe no real patients.
#'
#' @format A data frame with 64 rows and 5 columns:
#' \describe{
#'   \item{patient}{Patient identifier, a factor (`"P01"` to `"P64"`).}
#'   \item{group}{Therapy group, a factor with 9 levels `"G1"` to `"G9"`.}
#'   \item{treatment}{Condition of the group, a factor with levels
#'     `"control"` and `"therapy"`.}
#'   \item{age}{Age in years.}
#'   \item{score}{Symptom score (higher is worse).}
#' }
#' @source Simulated; see `data-raw/primer.R`.
#' @examples
#' fit <- lmm(score ~ treatment + age + (1 | group), data = primer_groups)
#' summary(fit)
"primer_groups"

#' The primer's patients followed over four visits (simulated)
#'
#' The 64 patients of [primer_groups] measured at months 0, 3, 6 and 9
#' (visits `T0`, `T3`, `T6`, `T9`), in long format; about 6% of the
#' follow-up visits are missing. Used in the longitudinal and
#' covariance-structure sections of the primer vignette.
#'
#' The generating model has a patient-specific intercept (sd 4) and slope
#' over months (sd 0.25), a group intercept (sd 2), a decline of 0.3 points
#' per month in the control groups and of 0.8 points per month under
#' therapy, and within-patient residuals that follow an AR(1) process over
#' the visits (correlation 0.5, sd 3). Simulated by `data-raw/primer.R`
#' (seed 20261201).
#'
#' @format A data frame with 247 rows and 7 columns:
#' \describe{
#'   \item{patient}{Patient identifier, a factor with 64 levels.}
#'   \item{group}{Therapy group, a factor with 9 levels.}
#'   \item{treatment}{`"control"` or `"therapy"` (group level).}
#'   \item{age}{Age in years at baseline.}
#'   \item{month}{Months since baseline: 0, 3, 6 or 9.}
#'   \item{time}{The visit as a factor: `"T0"`, `"T3"`, `"T6"`, `"T9"`.}
#'   \item{score}{Symptom score.}
#' }
#' @source Simulated; see `data-raw/primer.R`.
#' @examples
#' fit <- lmm(score ~ treatment * month + (month | patient), data = primer_long)
#' fixef(fit)
"primer_long"
