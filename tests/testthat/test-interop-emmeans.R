# emmeans on lmm fits against emmeans 1.8.4 on the same lmerTest::lmer() fit
# (which uses pbkrtest 0.5.2 for Kenward-Roger and lmerTest 3.1-3 for
# Satterthwaite).

skip_if_not_installed("emmeans")
skip_if_not_installed("lmerTest")
skip_if_not_installed("pbkrtest")

modes <- c("kenward-roger", "satterthwaite", "asymptotic")

test_that("emmeans() and ref_grid() match lmer fits for every df method", {
  m <- interop_fits("clinics")
  for (mode in modes) {
    expect_same_table(emmeans::emmeans(m$fit, ~ clinic_urban * smoker, lmer.df = mode),
                      emmeans::emmeans(m$ref, ~ clinic_urban * smoker, lmer.df = mode))
  }
  expect_same_table(summary(emmeans::ref_grid(m$fit)), summary(emmeans::ref_grid(m$ref)))
  expect_same_table(suppressMessages(emmeans::emmeans(m$fit, ~ smoker, submodel = ~ smoker)),
                    suppressMessages(emmeans::emmeans(m$ref, ~ smoker, submodel = ~ smoker)))
  expect_same_table(suppressMessages(emmeans::emmeans(m$fit, ~ smoker, submodel = "minimal")),
                    suppressMessages(emmeans::emmeans(m$ref, ~ smoker, submodel = "minimal")))
  em <- suppressMessages(emmeans::emmeans(m$fit, ~ smoker))
  expect_match(paste(capture.output(print(em)), collapse = "\n"), "kenward-roger")
})

test_that("pairs() with every adjustment, contrast(), emtrends(), joint_tests() match", {
  m <- interop_fits("clinics")
  adjustments <- c("tukey", "scheffe", "sidak", "bonferroni", "dunnettx", "mvt",
                   "holm", "hochberg", "hommel", "BH", "BY", "fdr", "none")
  for (mode in modes) {
    e1 <- emmeans::emmeans(m$fit, ~ clinic_urban * smoker, lmer.df = mode)
    e2 <- emmeans::emmeans(m$ref, ~ clinic_urban * smoker, lmer.df = mode)
    for (adj in adjustments) {
      set.seed(1) # mvt integrates numerically
      a <- summary(pairs(e1, adjust = adj), infer = TRUE)
      set.seed(1)
      b <- summary(pairs(e2, adjust = adj), infer = TRUE)
      expect_same_table(a, b, tol = if (adj == "mvt") 1e-3 else 1e-6)
    }
    cc <- list(urban_vs_rural = c(-0.5, 0.5, -0.5, 0.5), interaction = c(1, -1, -1, 1))
    expect_same_table(emmeans::contrast(e1, cc), emmeans::contrast(e2, cc))
    expect_same_table(
      emmeans::contrast(emmeans::emmeans(m$fit, ~ smoker | clinic_urban, lmer.df = mode),
                        "trt.vs.ctrl"),
      emmeans::contrast(emmeans::emmeans(m$ref, ~ smoker | clinic_urban, lmer.df = mode),
                        "trt.vs.ctrl"))
    expect_same_table(emmeans::emtrends(m$fit, ~ smoker, var = "age", lmer.df = mode),
                      emmeans::emtrends(m$ref, ~ smoker, var = "age", lmer.df = mode))
    expect_same_table(emmeans::joint_tests(m$fit, lmer.df = mode),
                      emmeans::joint_tests(m$ref, lmer.df = mode))
  }
})

test_that("the categorical-time model and a singular fit match", {
  m <- interop_fits("visits")
  e1 <- emmeans::emmeans(m$fit, ~ time)
  e2 <- emmeans::emmeans(m$ref, ~ time)
  expect_same_table(e1, e2)
  expect_same_table(summary(pairs(e1), infer = TRUE), summary(pairs(e2), infer = TRUE))
  expect_same_table(emmeans::contrast(e1, "poly"), emmeans::contrast(e2, "poly"))
  expect_same_table(emmeans::contrast(e1, "consec", adjust = "bonferroni"),
                    emmeans::contrast(e2, "consec", adjust = "bonferroni"))
  s <- interop_fits("dye2")
  for (mode in modes) {
    expect_same_table(emmeans::emmeans(s$fit, ~ 1, lmer.df = mode),
                      emmeans::emmeans(s$ref, ~ 1, lmer.df = mode))
  }
})

test_that("emm_options(lmer.df =) and a user covariance are honoured", {
  m <- interop_fits("clinics")
  old <- emmeans::emm_options(lmer.df = "satterthwaite")
  on.exit(emmeans::emm_options(old))
  e1 <- suppressMessages(emmeans::emmeans(m$fit, ~ smoker))
  expect_same_table(e1, suppressMessages(emmeans::emmeans(m$ref, ~ smoker)))
  expect_identical(attr(e1@dffun, "mesg"), "satterthwaite")
  emmeans::emm_options(lmer.df = "kenward-roger")
  V <- vcov(m$fit) * 2
  expect_message(e2 <- emmeans::emmeans(m$fit, ~ smoker, vcov. = V), "Kenward-Roger")
  expect_identical(attr(e2@dffun, "mesg"), "satterthwaite")
  expect_error(emmeans::emmeans(m$fit, ~ smoker, lmer.df = "bogus"),
               class = "lmmr_error_argument")
})

test_that("the Kenward-Roger ingredients are computed once per grid", {
  m <- interop_fits("visits")
  calls <- 0
  trace_env <- environment(lmm)
  orig <- get("h_inference_parts", envir = trace_env)
  counting <- function(...) {
    calls <<- calls + 1
    orig(...)
  }
  unlockBinding("h_inference_parts", trace_env)
  assign("h_inference_parts", counting, envir = trace_env)
  on.exit({
    assign("h_inference_parts", orig, envir = trace_env)
    lockBinding("h_inference_parts", trace_env)
  })
  e <- emmeans::emmeans(m$fit, ~ time)
  s <- summary(pairs(e))
  expect_identical(nrow(s), 10L)
  expect_identical(calls, 1)
})

test_that("ML fits, aliased columns, transformed responses, offsets and weights", {
  d <- phaa_clinics
  d$sbp[c(3, 50, 200)] <- NA
  d$g3 <- factor(rep(c("a", "b", "c"), length.out = nrow(d)))
  d$dup <- d$clinic_urban
  d$off <- d$age / 10
  both <- function(f, ..., REML = TRUE, weights = NULL) {
    dd <- d
    dd$w <- weights
    args <- list(f, data = dd, REML = REML)
    if (!is.null(weights)) args$weights <- dd$w
    list(fit = suppressMessages(do.call(lmm, args)),
         ref = suppressMessages(do.call(lmerTest::lmer, args)))
  }
  ml <- both(sbp ~ clinic_urban * smoker + age + (1 | clinic_id), REML = FALSE)
  for (mode in modes) {
    expect_same_table(suppressMessages(emmeans::emmeans(ml$fit, ~ smoker, lmer.df = mode)),
                      suppressMessages(emmeans::emmeans(ml$ref, ~ smoker, lmer.df = mode)))
  }
  al <- both(sbp ~ clinic_urban + dup + smoker + (1 | clinic_id))
  expect_same_table(suppressMessages(emmeans::emmeans(al$fit, ~ smoker)),
                    suppressMessages(emmeans::emmeans(al$ref, ~ smoker)))
  lg <- both(log(sbp) ~ clinic_urban + smoker + g3 + (1 | clinic_id))
  expect_same_table(emmeans::emmeans(lg$fit, ~ g3, type = "response"),
                    emmeans::emmeans(lg$ref, ~ g3, type = "response"))
  of <- both(sbp ~ smoker + offset(off) + (1 | clinic_id))
  expect_same_table(emmeans::emmeans(of$fit, ~ smoker), emmeans::emmeans(of$ref, ~ smoker))
  # pbkrtest 0.5.2 ignores prior weights in Kenward-Roger, so only
  # Satterthwaite is compared for a weighted fit
  wt <- both(sbp ~ smoker + (1 | clinic_id), weights = phaa_clinics$clinic_size)
  # (the two optima agree to 1e-11 in the REML criterion but only to 5e-8 in
  # theta here, which moves the df by about 1e-6)
  expect_same_table(emmeans::emmeans(wt$fit, ~ smoker, lmer.df = "satterthwaite"),
                    emmeans::emmeans(wt$ref, ~ smoker, lmer.df = "satterthwaite"),
                    tol = 1e-5)
})
