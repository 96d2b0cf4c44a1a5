# icc(), r2(), design_effect(), shrinkage() and the hand helpers.
# Reference numbers: performance 0.10.2 (insight 0.19.0) on lme4 1.1-31 fits,
# e.g. performance::icc(lme4::lmer(Reaction ~ Days + (1 | Subject),
# sleepstudy)) and performance::r2_nakagawa(<same fit>).

var_sleep <- function() lmmr::sleepstudy

var_fit <- function(formula, data, ...) suppressMessages(lmm(formula, data = data, ...))

test_that("hand examples: icc_from_variances and shrinkage_factor", {
  expect_equal(icc_from_variances(200, 800), 0.20)
  expect_equal(icc_from_variances(3, 12), 0.20)
  expect_equal(icc_from_variances(c(1, 3), c(3, 12)), c(0.25, 0.2))
  expect_equal(round(shrinkage_factor(5, 20, m = 100), 2), 0.96)
  expect_equal(shrinkage_factor(5, 20, m = 100), 5 / 5.2)
  expect_equal(shrinkage_factor(5, 20, m = 4), 0.50)
  expect_equal(shrinkage_factor(5, 20, m = c(4, 100)), c(0.5, 5 / 5.2))
  expect_error(icc_from_variances(-1, 2), class = "lmmr_error_argument")
  expect_error(icc_from_variances(0, 0), class = "lmmr_error_argument")
  expect_error(shrinkage_factor(5, 20, m = 0), class = "lmmr_error_argument")
})

test_that("icc and r2 reproduce performance 0.10.2 on sleepstudy (stored numbers)", {
  d <- var_sleep()
  f1 <- var_fit(Reaction ~ Days + (1 | Subject), d)
  i1 <- icc(f1)
  r1 <- r2(f1)
  expect_equal(i1$adjusted, 0.5893089171, tolerance = 1e-4)
  expect_equal(i1$unadjusted, 0.4243698156, tolerance = 1e-4)
  expect_equal(r1$marginal, 0.2798856367, tolerance = 1e-4)
  expect_equal(r1$conditional, 0.7042554524, tolerance = 1e-4)
  f2 <- var_fit(Reaction ~ Days + (Days | Subject), d)
  i2 <- icc(f2)
  r2v <- r2(f2)
  expect_equal(i2$adjusted, 0.7216602596, tolerance = 1e-4)
  expect_equal(i2$unadjusted, 0.5205688646, tolerance = 1e-4)
  expect_equal(r2v$marginal, 0.2786510582, tolerance = 1e-4)
  expect_equal(r2v$conditional, 0.7992199228, tolerance = 1e-4)
  # unadjusted ICC + marginal R2 = conditional R2
  expect_equal(i2$unadjusted + r2v$marginal, r2v$conditional)
})

test_that("icc and r2 equal performance (live) within 1e-4 on four models", {
  skip_if_not_installed("lme4")
  skip_if_not_installed("performance")
  set.seed(20)
  cr <- expand.grid(a = factor(1:15), b = factor(1:12), rep = 1:2)
  cr$x <- rnorm(nrow(cr))
  cr$y <- 1 + 0.8 * cr$x + rnorm(15, 0, 1)[cr$a] + rnorm(12, 0, 0.7)[cr$b] +
    (rnorm(15, 0, 0.4)[cr$a]) * cr$x + rnorm(nrow(cr))
  cases <- list(
    list(Reaction ~ Days + (1 | Subject), var_sleep()),
    list(Reaction ~ Days + (Days | Subject), var_sleep()),
    list(diameter ~ 1 + (1 | plate) + (1 | sample), lme4::Penicillin),
    list(strength ~ 1 + (1 | batch / cask), lme4::Pastes),
    list(y ~ x + (x | a) + (1 | b), cr)
  )
  for (cs in cases) {
    fit <- var_fit(cs[[1]], cs[[2]])
    ref <- suppressMessages(suppressWarnings(lme4::lmer(cs[[1]], cs[[2]])))
    pi <- suppressWarnings(performance::icc(ref))
    pr <- suppressWarnings(performance::r2_nakagawa(ref))
    ours <- icc(fit)
    ours_r2 <- r2(fit)
    lab <- deparse(cs[[1]])
    expect_equal(ours$adjusted, pi$ICC_adjusted, tolerance = 1e-4, label = lab)
    expect_equal(ours$unadjusted, pi$ICC_unadjusted, tolerance = 1e-4, label = lab)
    expect_equal(ours_r2$marginal, unname(pr$R2_marginal), tolerance = 1e-4,
                 label = lab)
    expect_equal(ours_r2$conditional, unname(pr$R2_conditional),
                 tolerance = 1e-4, label = lab)
  }
})

test_that("variance components are the documented formulas", {
  d <- var_sleep()
  fit <- var_fit(Reaction ~ Days + (Days | Subject), d)
  ic <- icc(fit)
  X <- cbind(1, d$Days)
  S <- fit$re_terms[[1]]$cov
  v_re <- mean(rowSums((X %*% S) * X))
  v_fix <- var(drop(X %*% fit$beta))
  expect_equal(ic$var_random, v_re)
  expect_equal(ic$var_fixed, v_fix)
  expect_equal(ic$var_residual, sigma(fit)^2)
  expect_equal(ic$adjusted, v_re / (v_re + sigma(fit)^2))
  expect_equal(ic$unadjusted, v_re / (v_fix + v_re + sigma(fit)^2))
  # several grouping factors are summed, and each has its share
  skip_if_not_installed("lme4")
  p <- var_fit(diameter ~ 1 + (1 | plate) + (1 | sample), lme4::Penicillin)
  ip <- icc(p)
  vc <- as.data.frame(VarCorr(p))
  expect_equal(ip$var_random, sum(vc$vcov[1:2]))
  expect_equal(sum(ip$components$icc_adjusted), ip$adjusted)
  expect_setequal(ip$components$group, c("plate", "sample"))
})

test_that("print methods read like sentences", {
  fit <- var_fit(Reaction ~ Days + (Days | Subject), var_sleep())
  expect_output(print(icc(fit)), "Adjusted ICC:   0.72")
  expect_output(print(icc(fit)), "72% of the variance not explained by the fixed effects lies between Subjects")
  expect_output(print(r2(fit)), "Marginal R2:    0.279")
  expect_output(print(design_effect(fit)), "independent ones")
})

test_that("parametric bootstrap interval for the ICC", {
  fit <- var_fit(Reaction ~ Days + (1 | Subject), var_sleep())
  a <- icc(fit, ci = 0.9, nsim = 30, seed = 5)
  b <- icc(fit, ci = 0.9, nsim = 30, seed = 5)
  expect_identical(a$ci, b$ci)
  expect_equal(dim(a$boot), c(30L, 2L))
  expect_true(a$ci["adjusted", "lower"] < a$adjusted &&
                a$adjusted < a$ci["adjusted", "upper"])
  expect_true(all(a$ci >= 0 & a$ci <= 1))
  expect_output(print(a), "90% parametric bootstrap interval \\(30 simulations\\)")
  expect_error(icc(fit, ci = 95), class = "lmmr_error_argument")
})

test_that("bad input gives classed conditions", {
  # other models go to performance (issue 9: never mask performance)
  if (requireNamespace("performance", quietly = TRUE)) {
    lmfit <- lm(Reaction ~ Days, var_sleep())
    expect_identical(suppressWarnings(icc(lmfit)),
                     suppressWarnings(performance::icc(lmfit)))
    expect_identical(r2(lmfit), performance::r2(lmfit))
  }
  fit <- var_fit(Reaction ~ Days + (1 | Subject), var_sleep())
  no_re <- fit
  no_re$re_terms <- list()
  expect_error(icc(no_re), class = "lmmr_error_no_random_effects")
  expect_error(r2(no_re), class = "lmmr_error_no_random_effects")
  expect_error(design_effect(no_re), class = "lmmr_error_no_random_effects")
  expect_error(design_effect(lm(Reaction ~ Days, var_sleep())),
               class = "lmmr_error_unsupported_model")
  # singular fit: warning of class lmmr_warning_singular
  d <- var_sleep()
  d$noise <- factor(rep(1:3, length.out = nrow(d)))
  sing <- var_fit(Reaction ~ Days + (1 | noise), d)
  if (isTRUE(sing$singular)) {
    expect_warning(icc(sing), class = "lmmr_warning_singular")
  }
  slopes_only <- var_fit(Reaction ~ Days + (0 + Days | Subject), var_sleep())
  expect_error(shrinkage(slopes_only), class = "lmmr_error_no_random_intercept")
})

test_that("design effect uses the size-weighted mean cluster size", {
  d <- var_sleep()
  fit <- var_fit(Reaction ~ Days + (1 | Subject), d)
  de <- design_effect(fit)
  ic <- icc(fit)
  expect_equal(de$m_bar, 10)
  expect_equal(de$deff, 1 + 9 * ic$adjusted)
  expect_equal(de$n_eff, 180 / de$deff)
  # unequal cluster sizes
  keep <- !(d$Subject %in% c("308", "309", "310") & d$Days > 3)
  du <- d[keep, ]
  fu <- var_fit(Reaction ~ Days + (1 | Subject), du)
  m <- as.numeric(table(droplevels(du$Subject)))
  deu <- design_effect(fu)
  expect_equal(deu$m_bar, sum(m^2) / sum(m))
  expect_equal(deu$m_mean, mean(m))
  expect_equal(deu$deff, 1 + (sum(m^2) / sum(m) - 1) * icc(fu)$adjusted)
  expect_equal(deu$n, nrow(du))
})

test_that("shrinkage: BLUP = reliability x raw cluster-mean deviation", {
  set.seed(3)
  J <- 25
  m <- 6
  g <- factor(rep(seq_len(J), each = m))
  y <- 10 + rnorm(J, 0, 2)[g] + rnorm(J * m, 0, 3)
  d <- data.frame(y, g)
  fit <- var_fit(y ~ 1 + (1 | g), d)
  s <- shrinkage(fit)
  expect_equal(nrow(s), J)
  expect_equal(s$blup, s$reliability * s$raw_deviation, tolerance = 1e-6)
  s2 <- VarCorr(fit)$g[1, 1]
  expect_equal(s$reliability, rep(shrinkage_factor(s2, sigma(fit)^2, m = 6), J))
  # balanced, no covariates: the raw deviation is ybar_j - ybar
  expect_equal(s$raw_deviation, as.numeric(tapply(y, g, mean)) - mean(y),
               tolerance = 1e-6)
  # with a covariate and unequal sizes the identity still holds for a single
  # random-intercept term
  fu <- var_fit(Reaction ~ Days + (1 | Subject),
                var_sleep()[-c(1:4, 50:52), ])
  su <- shrinkage(fu)
  expect_equal(su$blup, su$reliability * su$raw_deviation, tolerance = 1e-6)
  expect_true(all(diff(range(su$m)) > 0))
  expect_output(print(su), "reliability from")
})

test_that("shrinkage(): precise messages for terms with random slopes", {
  f1 <- var_fit(Reaction ~ Days + (Days | Subject), var_sleep())
  expect_error(shrinkage(f1),
               "\\(1 \\+ Days \\| Subject\\) has a random slope for Days besides its intercept",
               class = "lmmr_error_no_random_intercept")
  f0 <- var_fit(Reaction ~ Days + (0 + Days | Subject), var_sleep())
  expect_error(shrinkage(f0), "\\(0 \\+ Days \\| Subject\\) has a random slope for Days and no intercept",
               class = "lmmr_error_no_random_intercept")
  f2 <- var_fit(Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), var_sleep())
  expect_message(s <- shrinkage(f2), "skips terms with random slopes.*\\(0 \\+ Days \\| Subject\\)",
                 class = "lmmr_message_shrinkage_skipped")
  expect_equal(unique(s$group), "Subject")
  expect_equal(nrow(s), 18)
})
