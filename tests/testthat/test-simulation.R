# Parametric bootstrap engine: anova(test = "PB"), bootstrap_lmm(),
# confint(method = "boot"). References: pbkrtest 0.5.2 (PBmodcomp and its
# reference distribution), lme4 1.1-31 (refit, bootMer's confint).

# lme4 refits with tight optimiser tolerances, so that differences measure
# lmmr, not lme4's default stopping rule
tight_lme4 <- function() {
  lme4::lmerControl(optCtrl = list(ftol_abs = 1e-14, xtol_abs = 1e-12, maxeval = 1e5))
}

test_that("PB test: LRT statistics on the same simulated responses equal lme4 refits (variance components, two at once)", {
  skip_if_not_installed("lme4")
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  fit0 <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  nsim <- 30
  tab <- suppressMessages(anova(fit0, fit, test = "PB", nsim = nsim, seed = 11))
  ref <- attr(tab, "pb")[[2]]$ref
  # the responses the engine used: simulated from the ML null fit, one stream
  fit0_ml <- refit(fit0, fit0$y, REML = FALSE)
  Y <- simulate(fit0_ml, nsim = nsim, seed = 11)
  m <- lme4::lmer(Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy, REML = FALSE)
  m0 <- lme4::lmer(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy, REML = FALSE)
  dev_lme4 <- t(vapply(Y, function(y) {
    suppressMessages(suppressWarnings({
      l <- lme4::refit(m, y, control = tight_lme4())
      s <- lme4::refit(m0, y, control = tight_lme4())
    }))
    c(deviance(l), deviance(s))
  }, numeric(2)))
  dev_own <- t(vapply(Y, function(y) {
    suppressMessages(c(deviance(refit(fit, y, REML = FALSE)), deviance(refit(fit0_ml, y))))
  }, numeric(2)))
  # the engine's statistics are those of refit()
  expect_equal(ref, unname(dev_own[, 2] - dev_own[, 1]), tolerance = 1e-10)
  # lmmr's optimum is never worse than lme4's (tight tolerances) ...
  expect_true(all(dev_own <= dev_lme4 + 1e-7))
  # ... and the statistics agree to 1e-6 except where lme4 stops above the
  # optimum near the boundary (measured, lme4 1.1-31: 29 of 30, max |diff|
  # 3.3e-6 in simulation 19 where lme4's deviance of the large model is
  # 4.3e-6 above lmmr's; over 100 simulations max |diff| 6.2e-7)
  ref_lme4 <- dev_lme4[, 2] - dev_lme4[, 1]
  at_opt <- rowSums(abs(dev_own - dev_lme4) > 1e-7) == 0
  expect_gte(mean(at_opt), 0.9)
  expect_lt(max(abs(ref - ref_lme4)[at_opt]), 1e-6)
  # the observed statistic and the columns of the ML comparison
  expect_equal(tab$Chisq[2], 2 * (as.numeric(logLik(m)) - as.numeric(logLik(m0))),
               tolerance = 1e-6)
  expect_true("Pr(PB)" %in% names(tab))
})

test_that("PB p-value is pbkrtest's: PBmodcomp() with our reference distribution", {
  skip_if_not_installed("pbkrtest")
  skip_if_not_installed("lme4")
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  fit0 <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  tab <- suppressMessages(anova(fit0, fit, test = "PB", nsim = 40, seed = 3))
  ref <- attr(tab, "pb")[[2]]$ref
  m <- lme4::lmer(Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy)
  m0 <- lme4::lmer(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy)
  pb <- pbkrtest::PBmodcomp(m, m0, ref = ref)
  expect_equal(tab[["Pr(PB)"]][2], pb$test["PBtest", "p.value"])
  expect_equal(tab$Chisq[2], pb$test["LRT", "stat"], tolerance = 1e-6)
  # a reference distribution with values <= 0 (left out, as pbkrtest)
  ref2 <- c(ref[1:10], 0, 0, -1e-9, 100)
  p_own <- (1 + sum(ref2[ref2 > 0] > tab$Chisq[2])) / (1 + sum(ref2 > 0))
  expect_equal(pbkrtest::PBmodcomp(m, m0, ref = ref2)$test["PBtest", "p.value"], p_own)
})

test_that("PB test of fixed effects: LRT statistics equal lme4 ML refits", {
  skip_if_not_installed("lme4")
  fit1 <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy, REML = FALSE)
  fit0 <- lmm(Reaction ~ 1 + (1 | Subject), data = sleepstudy, REML = FALSE)
  tab <- anova(fit0, fit1, test = "PB", nsim = 20, seed = 5)
  ref <- attr(tab, "pb")[[2]]$ref
  Y <- simulate(fit0, nsim = 20, seed = 5)
  m1 <- lme4::lmer(Reaction ~ Days + (1 | Subject), data = lme4::sleepstudy, REML = FALSE)
  m0 <- lme4::lmer(Reaction ~ 1 + (1 | Subject), data = lme4::sleepstudy, REML = FALSE)
  ref_lme4 <- vapply(Y, function(y) {
    2 * (as.numeric(logLik(lme4::refit(m1, y, control = tight_lme4()))) -
           as.numeric(logLik(lme4::refit(m0, y, control = tight_lme4()))))
  }, numeric(1))
  expect_lt(max(abs(ref - ref_lme4)), 1e-6)
  # the strong Days effect: no simulated statistic reaches the observed one
  expect_equal(tab[["Pr(PB)"]][2], 1 / (1 + sum(ref > 0)))
})

test_that("PB test: reproducible with a seed whatever the number of cores; the caller's stream is kept", {
  skip_on_os("windows")
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy, REML = FALSE)
  fit0 <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy, REML = FALSE)
  a <- anova(fit0, fit, test = "PB", nsim = 60, seed = 1)
  b <- anova(fit0, fit, test = "PB", nsim = 60, seed = 1, ncores = 2)
  # the same responses and the same refits; the batched refits' starting
  # metric (a finite-difference Hessian on the kept model) is recomputed per
  # call and can differ in its last digits once the model has held other
  # responses, so the statistics agree to rounding, the p-values exactly
  expect_equal(attr(a, "pb")[[2]]$ref, attr(b, "pb")[[2]]$ref, tolerance = 1e-10)
  expect_identical(a[["Pr(PB)"]], b[["Pr(PB)"]])
  set.seed(99)
  u1 <- runif(1)
  set.seed(99)
  invisible(anova(fit0, fit, test = "PB", nsim = 5, seed = 2))
  expect_identical(runif(1), u1)
  # without a seed: set.seed() before the call makes it reproducible
  set.seed(4)
  c1 <- attr(anova(fit0, fit, test = "PB", nsim = 5), "pb")[[2]]$ref
  set.seed(4)
  c2 <- attr(anova(fit0, fit, test = "PB", nsim = 5, ncores = 2), "pb")[[2]]$ref
  expect_identical(c1, c2)
})

test_that("PB test with three fits: one bootstrap per consecutive pair", {
  f0 <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy, REML = FALSE)
  f1 <- lmm(Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), data = sleepstudy,
            REML = FALSE)
  f2 <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy, REML = FALSE)
  tab <- anova(f0, f1, f2, test = "PB", nsim = 10, seed = 1)
  expect_equal(nrow(tab), 3L)
  expect_true(is.na(tab[["Pr(PB)"]][1]))
  expect_true(all(tab[["Pr(PB)"]][2:3] > 0 & tab[["Pr(PB)"]][2:3] <= 1))
  expect_equal(tab[, 1:8], anova(f0, f1, f2)[, 1:8], ignore_attr = TRUE)
  expect_length(attr(tab, "pb")[[3]]$ref, 10L)
  # a progress bar (cli) does not change the result
  skip_if_not_installed("cli")
  withr_opt <- options(cli.progress_show_after = 0)
  on.exit(options(withr_opt))
  tab2 <- suppressMessages(anova(f0, f1, f2, test = "PB", nsim = 10, seed = 1, progress = TRUE))
  expect_identical(tab2[["Pr(PB)"]], tab[["Pr(PB)"]])
})

test_that("PB test: bad arguments are classed errors", {
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  fit0 <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  expect_error(anova(fit0, fit, test = "KR"), class = "lmmr_error_argument")
  expect_error(anova(fit0, fit, test = "PB", nsim = 0), class = "lmmr_error_argument")
  expect_error(anova(fit0, fit, test = "PB", nsim = 2.5), class = "lmmr_error_argument")
  expect_error(anova(fit0, fit, test = "PB", nsim = 2, ncores = 0), class = "lmmr_error_argument")
  expect_error(anova(fit, test = "PB"), class = "lmmr_error_argument")
  expect_error(anova(fit, nsim = 10), class = "lmmr_error_argument")
  expect_error(anova(fit0, fit, test = "PB", refit = FALSE), class = "lmmr_error_argument")
  expect_error(anova(fit0, lm(Reaction ~ Days, data = sleepstudy), test = "PB"),
               class = "lmmr_error_argument")
  expect_warning(anova(fit0, fit, test = "Chisq", nsim = 10),
                 class = "lmmr_warning_unused_argument")
  expect_equal(suppressMessages(anova(fit0, fit, test = "Chisq")),
               suppressMessages(anova(fit0, fit)))
})

test_that("bootstrap_lmm(): ML refits on the same responses equal lme4's refits", {
  skip_if_not_installed("lme4")
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy, REML = FALSE)
  b <- bootstrap_lmm(fit, nsim = 20, seed = 8)
  expect_s3_class(b, c("lmmr_boot", "boot"))
  expect_equal(b$R, 20L)
  expect_equal(dim(b$t), c(20L, 6L))
  expect_equal(names(b$t0), c(".sig01", ".sig02", ".sig03", ".sigma", "(Intercept)", "Days"))
  m <- lme4::lmer(Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy, REML = FALSE)
  # lme4's confint(method = "boot") statistic: sd/cor scale, sigma, fixef
  # (names as confint(m, method = "Wald"))
  expect_equal(names(b$t0), rownames(confint(m, method = "Wald")))
  lme4_par <- function(x) {
    vc <- as.data.frame(lme4::VarCorr(x))
    c(vc$sdcor[c(1, 3, 2, 4)], lme4::fixef(x))
  }
  expect_equal(unname(b$t0), unname(lme4_par(m)), tolerance = 1e-5)
  Y <- simulate(fit, nsim = 20, seed = 8)
  t_lme4 <- t(vapply(Y, function(y) {
    suppressMessages(suppressWarnings(lme4_par(lme4::refit(m, y, control = tight_lme4()))))
  }, numeric(6)))
  expect_equal(unname(b$t), unname(t_lme4), tolerance = 1e-4)
})

test_that("bootstrap_lmm(): REML refits are true REML fits (lme4 1.1-31's refit() of REML fits is not)", {
  skip_if_not_installed("lme4")
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  b <- bootstrap_lmm(fit, nsim = 5, seed = 9)
  Y <- simulate(fit, nsim = 5, seed = 9)
  d <- lme4::sleepstudy
  for (i in 1:5) {
    d$y <- Y[[i]]
    m <- suppressWarnings(suppressMessages(lme4::lmer(
      y ~ Days + (Days | Subject), data = d, control = tight_lme4())))
    vc <- as.data.frame(lme4::VarCorr(m))
    expect_equal(unname(b$t[i, ]), c(vc$sdcor[c(1, 3, 2, 4)], unname(lme4::fixef(m))),
                 tolerance = 1e-4)
  }
  # lme4 1.1-31: refit() of a REML fit sets the REML denominator to 1 (not
  # p = 2), so bootMer()/confint(method = "boot") on REML fits differ
  mr <- lme4::lmer(Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy)
  expect_equal(suppressMessages(lme4::refit(mr, Y[[1]]))@resp$REML, 1L)
})

test_that("confint() of a bootstrap equals lme4's confint.bootMer (boot.ci) on the same values", {
  skip_if_not_installed("lme4")
  skip_if_not_installed("boot")
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy, REML = FALSE)
  b <- bootstrap_lmm(fit, nsim = 60, seed = 21)
  bm <- structure(list(t0 = b$t0, t = b$t, R = b$R), class = c("bootMer", "boot"))
  for (ty in c("perc", "basic", "norm")) {
    ref <- lme4:::confint.bootMer(bm, type = ty, level = 0.9)
    expect_equal(confint(b, type = ty, level = 0.9), ref, tolerance = 1e-12)
  }
  # boot::boot.ci works on the result (class "boot")
  ci <- boot::boot.ci(b, index = 2, type = "perc")
  expect_equal(unname(ci$percent[4:5]), unname(confint(b)[2, ]))
  # a rank (R + 1) alpha that is a whole number: the order statistic itself
  b2 <- b
  b2$t <- b$t[1:39, ]
  b2$R <- 39
  bm2 <- structure(list(t0 = b2$t0, t = b2$t, R = 39), class = c("bootMer", "boot"))
  # (both warn that extreme order statistics are used)
  suppressWarnings(expect_equal(confint(b2), lme4:::confint.bootMer(bm2), tolerance = 1e-12))
})

test_that("confint(method = \"boot\"): lme4's names, types, parm, level", {
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  ci <- confint(fit, method = "boot", nsim = 40, seed = 1)
  expect_equal(rownames(ci), c(".sig01", ".sig02", ".sig03", ".sigma", "(Intercept)", "Days"))
  expect_equal(colnames(ci), c("2.5 %", "97.5 %"))
  b <- bootstrap_lmm(fit, nsim = 40, seed = 1)
  expect_equal(ci, confint(b))
  expect_equal(confint(fit, method = "boot", nsim = 40, seed = 1, type = "norm"),
               confint(b, type = "norm"))
  expect_equal(confint(fit, method = "boot", nsim = 40, seed = 1, boot.type = "basic"),
               confint(b, type = "basic"))
  expect_equal(confint(fit, parm = "Days", method = "boot", nsim = 40, seed = 1,
                       level = 0.8), confint(b, parm = "Days", level = 0.8))
  expect_equal(rownames(confint(b, parm = "theta_")), c(".sig01", ".sig02", ".sig03", ".sigma"))
  expect_equal(rownames(confint(b, parm = "beta_")), c("(Intercept)", "Days"))
  expect_true(all(ci[, 1] < b$t0 & b$t0 < ci[, 2]))
  expect_error(confint(fit, method = "boot", nsim = 5, type = "bca"), class = "lmmr_error_argument")
  expect_error(confint(b, parm = "nope"), class = "lmmr_error_argument")
  expect_warning(confint(fit, method = "boot", nsim = 20, seed = 1, foo = 1, level = 0.5),
                 class = "lmmr_warning_unused_argument")
  expect_warning(confint(fit, method = "boot", nsim = 20, seed = 1, ddf = "Satterthwaite",
                         level = 0.5), class = "lmmr_warning_unused_argument")
  # few simulations: extreme order statistics, with a warning
  expect_warning(confint(fit, method = "boot", nsim = 10, seed = 1),
                 class = "lmmr_warning_bootstrap_extreme")
})

test_that("bootstrap parameters: a correlation with a zero standard deviation is 0, as lme4", {
  skip_if_not_installed("lme4")
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  # lme4 1.1-31: Cv_to_Sv(c(0, 0, 1), n = 2, s = 2) is c(0, 0, 2, 2) (with a warning)
  own <- h_boot_params_raw(fit, list(theta = c(0, 0, 1), sigma = 2, beta = fit$beta))
  expect_equal(unname(own[1:4]), c(0, 0, 2, 2))
  own2 <- h_boot_params_raw(fit, list(theta = c(1, 0.5, 0), sigma = 2, beta = fit$beta))
  ref2 <- suppressWarnings(lme4:::Cv_to_Sv(c(1, 0.5, 0), n = 2, s = 2))
  expect_equal(unname(own2[1:4]), as.numeric(ref2))
})

test_that("bootstrap_lmm(): user statistics, use.u, semiparametric, failures, cores", {
  fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  b <- bootstrap_lmm(fit, FUN = function(f) c(slope = fixef(f)[["Days"]], s = sigma(f)),
                     nsim = 8, seed = 2)
  expect_equal(colnames(b$t), c("slope", "s"))
  expect_equal(b$t0, c(slope = fixef(fit)[["Days"]], s = sigma(fit)))
  # the default statistic and a user one agree on the same responses (the
  # default one comes from the batched refits, the user one from refit():
  # the same optimum to the optimiser's tolerance)
  bd <- bootstrap_lmm(fit, nsim = 8, seed = 2)
  expect_equal(unname(b$t[, "slope"]), unname(bd$t[, "Days"]), tolerance = 1e-8)
  expect_equal(unname(b$t[, "s"]), unname(bd$t[, ".sigma"]), tolerance = 1e-8)
  # conditional on the BLUPs: the fixed effects vary less
  bu <- bootstrap_lmm(fit, nsim = 30, seed = 3, use.u = TRUE)
  bn <- bootstrap_lmm(fit, nsim = 30, seed = 3)
  expect_lt(sd(bu$t[, "(Intercept)"]), sd(bn$t[, "(Intercept)"]))
  bs <- bootstrap_lmm(fit, nsim = 5, seed = 3, use.u = TRUE, type = "semiparametric")
  expect_equal(dim(bs$t), c(5L, 4L))
  expect_error(bootstrap_lmm(fit, nsim = 5, type = "semiparametric"), class = "lmmr_error_argument")
  # a statistic that fails on some refits: NA rows and a warning
  k <- 0
  bad <- function(f) {
    k <<- k + 1
    if (k %% 2 == 0) stop("boom")
    fixef(f)
  }
  expect_warning(bf <- bootstrap_lmm(fit, FUN = bad, nsim = 4, seed = 1),
                 class = "lmmr_warning_bootstrap_failed")
  expect_equal(attr(bf, "bootFail"), 2L)
  expect_equal(sum(!complete.cases(bf$t)), 2L)
  expect_error(bootstrap_lmm(fit, FUN = function(f) "a"), class = "lmmr_error_argument")
  expect_error(bootstrap_lmm(fit, nsim = -1), class = "lmmr_error_argument")
  expect_error(bootstrap_lmm(sleepstudy), class = "lmmr_error_argument")
  skip_on_os("windows")
  expect_identical(bootstrap_lmm(fit, nsim = 30, seed = 4, ncores = 2)$t,
                   bootstrap_lmm(fit, nsim = 30, seed = 4)$t)
  expect_output(print(bn), "PARAMETRIC BOOTSTRAP")
})

test_that("bootstrap refits do not repeat the fit's warning about a variance that cannot be identified", {
  set.seed(2)
  d <- data.frame(f = gl(12, 10))
  d$g <- factor(as.integer(d$f) %% 4)
  d$x <- rnorm(120)
  d$y <- rnorm(120) + as.integer(d$f) / 3 + d$x * rnorm(4)[d$g]
  fit <- suppressWarnings(suppressMessages(lmm(y ~ f + x + (1 | g) + (0 + x | g), data = d)))
  expect_no_warning(b <- bootstrap_lmm(fit, nsim = 4, seed = 1))
  expect_equal(unname(b$t[, ".sig01"]), rep(0, 4))
  expect_no_warning(bootstrap_lmm(fit, FUN = fixef, nsim = 2, seed = 1))
})

test_that("the ICC bootstrap interval runs on the bootstrap engine", {
  fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  res <- icc(fit, ci = 0.9, nsim = 25, seed = 6)
  b <- bootstrap_lmm(fit, FUN = function(f) {
    v <- icc(f)
    c(adjusted = v$adjusted, unadjusted = v$unadjusted)
  }, nsim = 25, seed = 6)
  expect_equal(unname(res$boot), unname(b$t), tolerance = 1e-12)
})

test_that("batched refits (one Rust call per batch) equal one-at-a-time refits", {
  with_batch <- function(on, expr) {
    old <- options(lmmr.refit_batch = on)
    on.exit(options(old))
    expr
  }
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy, REML = FALSE)
  fit0 <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy, REML = FALSE)
  # PB test: responses from the null fit, so many large-model refits end on
  # the boundary (slope variance 0)
  pb_new <- with_batch(TRUE, anova(fit0, fit, test = "PB", nsim = 60, seed = 5))
  pb_old <- with_batch(FALSE, anova(fit0, fit, test = "PB", nsim = 60, seed = 5))
  expect_equal(attr(pb_new, "pb")[[2]]$ref, attr(pb_old, "pb")[[2]]$ref, tolerance = 1e-8)
  expect_identical(pb_new[["Pr(PB)"]], pb_old[["Pr(PB)"]])
  # bootstrap of the REML fit and of a fit with an offset and weights
  fr <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  b_new <- with_batch(TRUE, bootstrap_lmm(fr, nsim = 40, seed = 6))
  b_old <- with_batch(FALSE, bootstrap_lmm(fr, nsim = 40, seed = 6))
  expect_equal(b_new$t, b_old$t, tolerance = 1e-8)
  d <- sleepstudy
  d$w <- rep(c(1, 2, 0.5), length.out = nrow(d))
  fo <- lmm(Reaction ~ Days + offset(Days / 2) + (1 | Subject), data = d, weights = w)
  expect_equal(with_batch(TRUE, bootstrap_lmm(fo, nsim = 20, seed = 7))$t,
               with_batch(FALSE, bootstrap_lmm(fo, nsim = 20, seed = 7))$t,
               tolerance = 1e-8)
  # the batch kernel itself against refit(), column by column
  prep <- lmmr:::h_refit_prepare(fit, REML = FALSE)
  expect_true(prep$batch)
  Y <- as.matrix(simulate(fit0, nsim = 25, seed = 8))
  r <- lmmr:::h_refit_batch(prep, Y)
  expect_gte(mean(r$light), 0.8) # most refits are confirmed by the light path
  for (i in seq_len(ncol(Y))) {
    f <- refit(fit, Y[, i], REML = FALSE, theta = fit$theta)
    expect_equal(r$objective[i], deviance(f), tolerance = 1e-10)
    expect_equal(r$theta[, i], unname(f$theta), tolerance = 1e-5)
    expect_equal(r$beta[, i], unname(fixef(f)), tolerance = 1e-8)
    expect_equal(r$sigma[i], sigma(f), tolerance = 1e-8)
    expect_equal(r$converged[i], isTRUE(f$optinfo$converged))
  }
  # a refit that fails is one NA, not a failed batch
  Y[3, 2] <- NaN
  r2 <- lmmr:::h_refit_batch(prep, Y[, 1:3])
  expect_true(is.na(r2$error[1]) && !is.na(r2$error[2]) && is.na(r2$error[3]))
  expect_true(is.nan(r2$objective[2]))
  expect_equal(r2$objective[c(1, 3)], r$objective[c(1, 3)])
  # the option turns the batched path off
  expect_false(with_batch(FALSE, lmmr:::h_refit_prepare(fit))$batch)
})

test_that("simulation loops on a database fit say that they need the rows", {
  skip_if_not_installed("RSQLite")
  skip_if_not_installed("dbplyr")
  con <- DBI::dbConnect(RSQLite::SQLite(), ":memory:")
  on.exit(DBI::dbDisconnect(con))
  DBI::dbWriteTable(con, "sleep", as.data.frame(sleepstudy))
  tab <- dplyr::tbl(con, "sleep")
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = tab)
  fit0 <- lmm(Reaction ~ Days + (1 | Subject), data = tab)
  expect_error(bootstrap_lmm(fit, nsim = 2), class = "lmmr_error_rows_in_database")
  expect_error(confint(fit, method = "boot", nsim = 2), class = "lmmr_error_rows_in_database")
  expect_error(suppressMessages(anova(fit0, fit, test = "PB", nsim = 2)),
               class = "lmmr_error_rows_in_database")
})

test_that("simulation loops on a fit with a residual covariance structure are not available yet", {
  d <- utils::read.csv(test_path("fixtures", "fev_data.csv"), stringsAsFactors = TRUE)
  d <- d[!is.na(d$FEV1), ]
  fit <- lmm(FEV1 ~ ARMCD + AVISIT + ar1(AVISIT | USUBJID), data = d)
  expect_error(bootstrap_lmm(fit, nsim = 2), class = "lmmr_error_not_implemented")
})
