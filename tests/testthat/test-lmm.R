# Core engine: estimates against lme4 1.1-31 (lmer, REML and ML).

test_that("Dyestuff matches lme4 (REML and ML) and the reference values", {
  skip_if_not_installed("lme4")
  data("Dyestuff", package = "lme4", envir = environment())
  for (reml in c(TRUE, FALSE)) expect_matches_lme4(Yield ~ 1 + (1 | Batch), Dyestuff, REML = reml)
  fit <- lmm(Yield ~ 1 + (1 | Batch), Dyestuff)
  # lme4@32b5bfd tests/testthat/test-lmer.R: REMLcrit 319.654276842342
  expect_lte(-2 * as.numeric(logLik(fit)), 319.654276842342 + 1e-7)
  expect_equal(unname(fit$theta), 0.8483237982, tolerance = 1e-5)
  expect_false(is_singular(fit))
})

test_that("Dyestuff2 is a boundary (singular) fit as in lme4", {
  skip_if_not_installed("lme4")
  data("Dyestuff2", package = "lme4", envir = environment())
  expect_message(fit <- lmm(Yield ~ 1 + (1 | Batch), Dyestuff2),
                 class = "lmmr_message_singular")
  expect_true(is_singular(fit))
  expect_equal(unname(fit$theta), 0, tolerance = 1e-6)
  # lme4@32b5bfd tests/testthat/test-lmer.R: fixef 5.6656, SE 0.67838803150
  expect_equal(unname(fixef(fit)), 5.6656, tolerance = 1e-6)
  expect_equal(unname(sqrt(diag(vcov(fit)))), 0.67838803150, tolerance = 1e-5)
  for (reml in c(TRUE, FALSE)) expect_matches_lme4(Yield ~ 1 + (1 | Batch), Dyestuff2, REML = reml)
})

test_that("sleepstudy random-slope structures match lme4", {
  skip_if_not_installed("lme4")
  ss <- lme4::sleepstudy
  for (reml in c(TRUE, FALSE)) {
    expect_matches_lme4(Reaction ~ Days + (Days | Subject), ss, REML = reml)
    expect_matches_lme4(Reaction ~ Days + (Days || Subject), ss, REML = reml)
    expect_matches_lme4(Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), ss, REML = reml)
  }
  fit <- lmm(Reaction ~ Days + (Days | Subject), ss)
  # lme4@32b5bfd tests/testthat/test-ranef.R (lme4.0 values): postVar[,,1]
  expect_equal(attr(ranef(fit)$Subject, "postVar")[, , 1],
               matrix(c(145.71273, -21.440414, -21.44041, 5.310927), 2, 2),
               tolerance = 2e-4)
})

test_that("crossed (Penicillin), nested (Pastes) and cake designs match lme4", {
  skip_if_not_installed("lme4")
  for (reml in c(TRUE, FALSE)) {
    expect_matches_lme4(diameter ~ 1 + (1 | plate) + (1 | sample), lme4::Penicillin, REML = reml)
    expect_matches_lme4(strength ~ 1 + (1 | batch/cask), lme4::Pastes, REML = reml)
    expect_matches_lme4(angle ~ recipe * temperature + (1 | recipe:replicate), lme4::cake,
                        REML = reml)
  }
})

test_that("prior weights, offsets, NAs and a rank-deficient X match lme4", {
  skip_if_not_installed("lme4")
  set.seed(42)
  d <- data.frame(g = factor(rep(1:15, each = 8)), x = rnorm(120), z = runif(120))
  d$y <- 1 + 0.5 * d$x + rnorm(15)[d$g] + rnorm(120)
  d$w <- runif(120, 0.3, 3)
  for (reml in c(TRUE, FALSE)) {
    expect_matches_lme4(y ~ x + (1 | g), d, REML = reml, weights = d$w)
    expect_matches_lme4(y ~ x + (x | g), d, REML = reml, weights = d$w)
    expect_matches_lme4(y ~ x + offset(2 * z) + (1 | g), d, REML = reml)
    # constant weights rescale theta: the optimiser must not stop at the
    # mirror image of a boundary point (lme4 1.1-31 theta 0.483, 0.0076, 0.115)
    expect_matches_lme4(Reaction ~ Days + (Days | Subject), sleepstudy, REML = reml,
                        weights = rep(4, 180))
  }
  dna <- d
  dna$y[c(3, 50)] <- NA
  dna$x[7] <- NA
  expect_matches_lme4(y ~ x + (1 | g), dna)
  dr <- d
  dr$x2 <- 2 * dr$x
  expect_message(fit <- lmm(y ~ x + x2 + (1 | g), dr), class = "lmmr_message_rank_deficient")
  ref <- suppressMessages(lme4::lmer(y ~ x + x2 + (1 | g), dr))
  expect_equal(fixef(fit), lme4::fixef(ref), tolerance = 1e-5)
  expect_equal(names(fixef(fit, add.dropped = TRUE)), c("(Intercept)", "x", "x2"))
  expect_equal(lme4::REMLcrit(ref), -2 * as.numeric(logLik(fit)), tolerance = 1e-7)
})

test_that("the offset argument equals an offset() term", {
  set.seed(3)
  d <- data.frame(g = factor(rep(1:10, each = 6)), x = rnorm(60))
  d$y <- 2 + d$x + rnorm(10)[d$g] + rnorm(60)
  f1 <- lmm(y ~ x + offset(3 * x) + (1 | g), d)
  f2 <- lmm(y ~ x + (1 | g), d, offset = 3 * d$x)
  f3 <- lmm(y ~ x + (1 | g), d)
  expect_equal(fixef(f1), fixef(f2))
  expect_equal(unname(fixef(f1)["x"]), unname(fixef(f3)["x"]) - 3, tolerance = 1e-6)
  expect_equal(predict(f1), predict(f3), tolerance = 1e-6)
})

test_that("na.exclude pads fitted values and residuals", {
  d <- sleepstudy
  d$Reaction[c(2, 10)] <- NA
  fit <- lmm(Reaction ~ Days + (1 | Subject), d, na.action = na.exclude)
  expect_length(fitted(fit), 180)
  expect_length(residuals(fit), 180)
  expect_true(is.na(residuals(fit)[2]))
  expect_equal(nobs(fit), 178)
  fit2 <- lmm(Reaction ~ Days + (1 | Subject), d)
  expect_length(fitted(fit2), 178)
})

test_that("likelihood methods follow lme4's conventions", {
  skip_if_not_installed("lme4")
  ss <- lme4::sleepstudy
  fit <- lmm(Reaction ~ Days + (Days | Subject), ss)
  ref <- lme4::lmer(Reaction ~ Days + (Days | Subject), ss)
  expect_equal(as.numeric(logLik(fit)), as.numeric(logLik(ref)), tolerance = 1e-7)
  expect_equal(attr(logLik(fit), "df"), attr(logLik(ref), "df"))
  expect_equal(AIC(fit), AIC(ref), tolerance = 1e-7)
  expect_equal(BIC(fit), BIC(ref), tolerance = 1e-7)
  expect_equal(deviance(fit, REML = FALSE), deviance(ref, REML = FALSE), tolerance = 1e-7)
  expect_equal(nobs(fit), 180L)
  expect_equal(sigma(fit), sigma(ref), tolerance = 1e-5)
  expect_equal(coef(fit)$Subject, coef(ref)$Subject, tolerance = 1e-4, ignore_attr = TRUE)
  expect_equal(confint(fit), confint(ref, method = "Wald", parm = "beta_"), tolerance = 1e-5,
               ignore_attr = TRUE)
  expect_equal(unname(model.matrix(fit)), unname(model.matrix(ref)), ignore_attr = TRUE)
  expect_equal(unname(model.matrix(fit, type = "random")),
               unname(as.matrix(lme4::getME(ref, "Z"))))
  fml <- update(fit, REML = FALSE)
  expect_false(fml$REML)
  expect_equal(deviance(fml), deviance(lme4::refitML(ref)), tolerance = 1e-7)
})

test_that("predict handles newdata, re.form and new levels", {
  skip_if_not_installed("lme4")
  ss <- lme4::sleepstudy
  fit <- lmm(Reaction ~ Days + (Days | Subject), ss)
  ref <- lme4::lmer(Reaction ~ Days + (Days | Subject), ss)
  nd <- data.frame(Days = c(0, 5, 9), Subject = factor(c("308", "309", "372")))
  expect_equal(predict(fit, nd), predict(ref, nd), tolerance = 1e-5, ignore_attr = TRUE)
  expect_equal(predict(fit, nd, re.form = NA), predict(ref, nd, re.form = NA),
               tolerance = 1e-5, ignore_attr = TRUE)
  expect_equal(predict(fit, re.form = NA), predict(ref, re.form = NA),
               tolerance = 1e-5, ignore_attr = TRUE)
  nd2 <- data.frame(Days = 1, Subject = "999")
  expect_error(predict(fit, nd2), class = "lmmr_error_new_levels")
  expect_equal(predict(fit, nd2, allow.new.levels = TRUE),
               predict(ref, nd2, allow.new.levels = TRUE), tolerance = 1e-5,
               ignore_attr = TRUE)
})

test_that("fits survive saveRDS()/readRDS()", {
  fit <- lmm(Reaction ~ Days + (Days | Subject), sleepstudy)
  f <- tempfile(fileext = ".rds")
  saveRDS(fit, f)
  fit2 <- readRDS(f)
  expect_equal(fixef(fit2), fixef(fit))
  expect_equal(predict(fit2, sleepstudy[1:3, ]), predict(fit, sleepstudy[1:3, ]))
  expect_equal(VarCorr(fit2), VarCorr(fit))
})

test_that("bad arguments give classed errors", {
  expect_error(lmm(Reaction ~ Days + (1 | Subject), sleepstudy, REML = "yes"),
               class = "lmmr_error_argument")
  expect_error(lmm(Reaction ~ Days + (1 | Subject), sleepstudy, control = list()),
               class = "lmmr_error_argument")
  expect_error(lmm_control(max_iter = -1), class = "lmmr_error_argument")
  expect_error(summary(lmm(Reaction ~ Days + (1 | Subject), sleepstudy), ddf = "KR"),
               class = "lmmr_error_ddf")
})

test_that("bad input through lmm() gives classed errors naming the problem", {
  ss <- sleepstudy
  expect_error(lmm(Reaction ~ Days + (1 | Subject), data = no_such_data),
               class = "lmmr_error_data")
  expect_error(lmm(Reaction ~ Dayz + (1 | Subject), data = ss), class = "lmmr_error_data")
  bad <- ss
  bad$Reaction <- as.character(bad$Reaction)
  expect_error(lmm(Reaction ~ Days + (1 | Subject), data = bad), class = "lmmr_error_response")
  bad <- ss
  bad$Reaction <- cbind(ss$Reaction, ss$Reaction)
  expect_error(lmm(Reaction ~ Days + (1 | Subject), data = bad), class = "lmmr_error_response")
  bad <- ss
  bad$Reaction[bad$Reaction > 400] <- Inf
  expect_error(lmm(Reaction ~ Days + (1 | Subject), data = bad), class = "lmmr_error_response")
  bad <- ss
  bad$Days[5] <- Inf
  expect_error(lmm(Reaction ~ Days + (1 | Subject), data = bad), class = "lmmr_error_non_finite")
  bad <- ss
  bad$Days <- NA
  expect_error(lmm(Reaction ~ Days + (1 | Subject), data = bad), class = "lmmr_error_no_data")
  expect_error(lmm(Reaction ~ Days + (1 | Subject), data = ss[ss$Subject == "308", ]),
               class = "lmmr_error_grouping")
  one <- ss
  one$obs <- factor(seq_len(nrow(one)))
  expect_error(lmm(Reaction ~ Days + (1 | obs), data = one), class = "lmmr_error_grouping")
  expect_error(lmm(Reaction ~ 1 + Days + (1 + Days | Subject), data = ss,
                   subset = Days == 1 | Days == 9), class = "lmmr_error_too_many_re")
  expect_error(lmm(Reaction ~ Days + (1 | Subject * Days), data = ss), class = "lmmr_error_formula")
  expect_error(lmm(Reaction ~ Days | Subject + Days, data = ss), class = "lmmr_error_formula")
  expect_error(lmm(Reaction ~ Days, data = ss), class = "lmmr_error_formula")
  expect_error(lmm(Reaction ~ Days + (1 | Subject), data = ss, weights = rep(-1, 180)),
               class = "lmmr_error_argument")
  expect_error(lmm("Reaction ~ Days", data = ss), class = "lmmr_error")
})

test_that("printed output keeps the lme4 layout", {
  fit <- lmm(Reaction ~ Days + (Days | Subject), sleepstudy)
  expect_snapshot(print(fit))
  expect_snapshot(print(summary(fit, ddf = "none")))
  expect_snapshot(print(VarCorr(fit)))
})

test_that("a response with a large mean and tiny spread is fitted accurately", {
  skip_if_not_installed("lme4")
  # (Reaction^-2 - 1) / -2 is about 0.5 +/- 1e-6: the residual sum of squares
  # must not be computed as a difference of large cross-products
  d <- lme4::sleepstudy
  d$z <- (d$Reaction^-2 - 1) / -2
  res <- expect_matches_lme4(z ~ Days + (Days | Subject), d, REML = FALSE)
  expect_true(res$fit$optinfo$converged)
})

test_that("confint() uses t quantiles with the requested df", {
  skip_if_not_installed("lmerTest")
  fit <- lmm(Reaction ~ Days + (Days | Subject), sleepstudy)
  ref <- lmerTest::lmer(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
  co <- summary(ref)$coefficients
  ci_ref <- cbind(co[, 1] - qt(0.975, co[, "df"]) * co[, 2],
                  co[, 1] + qt(0.975, co[, "df"]) * co[, 2])
  expect_equal(confint(fit, ddf = "Satterthwaite"), ci_ref, tolerance = 1e-5,
               ignore_attr = TRUE)
  expect_error(confint(fit, ddf = "sat"), class = "lmmr_error_ddf")
  expect_error(confint(update(fit, REML = FALSE), ddf = "Kenward-Roger"),
               class = "lmmr_error_reml_required")
})

test_that("the optimiser does not stop at a false zero-variance optimum", {
  skip_if_not_installed("lme4")
  # Small crossed / uncorrelated designs where a Newton step lands on theta = 0,
  # a saddle of the profiled criterion (found by adversarial testing).
  set.seed(18)
  n <- 30
  d <- data.frame(a = factor(sample(5, n, TRUE)), b = factor(sample(4, n, TRUE)))
  d$y <- rnorm(5)[d$a] + 0.5 * rnorm(4)[d$b] + rnorm(n)
  res <- expect_matches_lme4(y ~ 1 + (1 | a) + (1 | b), d)
  expect_false(is_singular(res$fit))
  set.seed(79)
  n <- sample(20:60, 1)
  d <- data.frame(a = factor(sample(5, n, TRUE)), b = factor(sample(4, n, TRUE)),
                  x = rnorm(n, 5, 3))
  d$y <- rnorm(5)[d$a] + 0.5 * rnorm(4)[d$b] + 0.3 * d$x * rnorm(5)[d$a] + rnorm(n)
  fit <- suppressMessages(lmm(y ~ x + (x || a), d, REML = FALSE))
  ref <- suppressMessages(lme4::lmer(y ~ x + (x || a), d, REML = FALSE))
  expect_lte(deviance(fit), deviance(ref) + 1e-7 * deviance(ref))
})

test_that("extreme response scales and uncentred covariates keep their digits", {
  set.seed(1)
  d <- data.frame(x = rnorm(60), g = factor(rep(1:10, each = 6)))
  d$y <- 1 + 0.5 * d$x + rnorm(10)[d$g] + rnorm(60)
  f0 <- lmm(y ~ x + (1 | g), d)
  for (s in c(1e300, 1e-300)) {
    ds <- d
    ds$y <- d$y * s
    fs <- lmm(y ~ x + (1 | g), ds)
    expect_equal(unname(fixef(fs) / s), unname(fixef(f0)), tolerance = 1e-8)
    expect_equal(unname(fs$theta), unname(f0$theta), tolerance = 1e-6)
    expect_equal(sigma(fs) / s, sigma(f0), tolerance = 1e-8)
  }
  # a covariate far from zero: same criterion as the centred model (the
  # intercept shift leaves log|R_X| unchanged)
  dc <- d
  dc$x <- d$x + 1e6
  fc <- suppressWarnings(lmm(y ~ x + (1 | g), dc))
  expect_equal(-2 * as.numeric(logLik(fc)), -2 * as.numeric(logLik(f0)), tolerance = 1e-9)
  expect_equal(unname(fixef(fc)[2]), unname(fixef(f0)[2]), tolerance = 1e-7)
  dk <- d
  dk$y <- 3
  expect_error(lmm(y ~ x + (1 | g), dk), class = "lmmr_error_non_finite", regexp = "perfect fit")
})

test_that("update() works for fits made inside a function", {
  set.seed(1)
  d <- data.frame(y = rnorm(60), x = rnorm(60), g = factor(rep(1:10, each = 6)))
  d$y <- d$y + rnorm(10)[d$g]
  fit_it <- function(dd) {
    w <- rep(1:2, 30)
    lmm(y ~ x + (1 | g), data = dd, weights = w)
  }
  f <- fit_it(d)
  f_ml <- update(f, REML = FALSE)
  expect_false(f_ml$REML)
  expect_equal(f_ml$weights, rep(1:2, 30))
  f_ri <- update(lmm(Reaction ~ Days + (Days | Subject), sleepstudy),
                 . ~ . - (Days | Subject) + (1 | Subject))
  expect_equal(length(f_ri$theta), 1L)
  expect_error(lmm_control(max_iter = 1e10), class = "lmmr_error_argument")
  d$cx <- complex(real = d$x, imaginary = 1)
  expect_error(lmm(y ~ cx + (1 | g), d), class = "lmmr_error_data")
})

test_that("a variance the data cannot identify is set to zero with a warning", {
  # g is a coarsening of the fixed factor f: rank [X Z] = rank X, the REML
  # criterion is flat in the variance of (1 | g)
  set.seed(2)
  d <- data.frame(f = gl(12, 10))
  d$g <- factor(as.integer(d$f) %% 4)
  d$x <- rnorm(120)
  d$y <- rnorm(120) + as.integer(d$f) / 3
  expect_warning(fit <- suppressMessages(lmm(y ~ f + x + (1 | g), data = d)),
                 class = "lmmr_warning_not_identifiable")
  expect_equal(unname(fit$theta), 0)
  expect_true(fit$optinfo$converged)
  expect_equal(ranef(fit)$g[[1]], rep(0, 4))
  # same criterion and fixed effects as the model without the term
  ref_lm <- lm(y ~ f + x, data = d)
  expect_equal(unname(fixef(fit)), unname(coef(ref_lm)), tolerance = 1e-8)
  expect_equal(as.numeric(logLik(fit)), as.numeric(logLik(ref_lm, REML = TRUE)),
               tolerance = 1e-8)
  # the identifiable term next to it is still estimated
  d$y2 <- d$y + d$x * rnorm(4)[d$g]
  expect_warning(fit2 <- suppressMessages(lmm(y2 ~ f + x + (1 | g) + (0 + x | g), data = d)),
                 "\\(1 \\| g\\)", class = "lmmr_warning_not_identifiable")
  expect_equal(unname(fit2$theta[1]), 0)
  expect_gt(fit2$theta[2], 0)
  skip_if_not_installed("lme4")
  ref <- suppressMessages(lme4::lmer(y2 ~ f + x + (1 | g) + (0 + x | g), data = d))
  expect_lte(fit2$objective, lme4::REMLcrit(ref) + 1e-6)
})
