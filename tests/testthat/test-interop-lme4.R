# Generic sharing with lme4 1.1-31, lmerTest 3.1-3 and performance 0.10.2:
# lmmr's methods on their generics, and lmmr's functions of the same names
# handing over to them for lmer fits.

skip_if_not_installed("lmerTest")

test_that("lme4::getME() and isSingular() work on lmm fits", {
  m <- interop_fits("sleep")
  for (nm in c("X", "y", "mu", "offset", "beta", "fixef", "theta", "lower", "sigma",
               "N", "n", "p", "q", "is_REML", "REML", "cnms", "Gp", "l_i", "q_i",
               "n_rtrms", "n_rfacs", "k", "flist")) {
    expect_equal(lme4::getME(m$fit, nm), lme4::getME(m$ref, nm), tolerance = 1e-4,
                 ignore_attr = TRUE, label = nm)
  }
  expect_equal(as.vector(lme4::getME(m$fit, "b")), as.vector(lme4::getME(m$ref, "b")),
               tolerance = 1e-4)
  for (nm in c("Z", "Zt", "Lambda", "Lambdat")) {
    expect_equal(as.matrix(lme4::getME(m$fit, nm)), as.matrix(lme4::getME(m$ref, nm)),
                 tolerance = 1e-4, ignore_attr = TRUE, label = nm)
  }
  both <- lme4::getME(m$fit, c("theta", "sigma"))
  expect_named(both, c("theta", "sigma"))
  expect_error(lme4::getME(m$fit, "L"), class = "lmmr_error_argument")
  expect_false(lme4::isSingular(m$fit))
  s <- interop_fits("dye2")
  expect_true(lme4::isSingular(s$fit))
  expect_identical(lme4::isSingular(s$fit), lme4::isSingular(s$ref))
  expect_identical(is_singular(s$ref), lme4::isSingular(s$ref))
  expect_true(lme4::isLMM(m$fit))
  expect_false(lme4::isGLMM(m$fit))
  expect_false(lme4::isNLMM(m$fit))
  expect_true(lme4::isREML(m$fit))
})

test_that("lme4::refit() and lmerTest::contest() work on lmm fits", {
  m <- interop_fits("clinics")
  y2 <- m$data$sbp * 2 + 1
  # for y2 = 2 y + 1 the exact answer is 2 beta + (1, 0, ...); lme4's refit
  # (its stored optimizer settings) lands within 1e-4 of it
  exact <- 2 * fixef(m$fit) + c(1, 0, 0, 0, 0)
  expect_equal(fixef(lme4::refit(m$fit, y2)), exact, tolerance = 1e-7)
  expect_equal(fixef(lme4::refit(m$fit, y2)), lme4::fixef(lme4::refit(m$ref, y2)),
               tolerance = 1e-4)
  expect_equal(fixef(lme4::refit(m$fit)), fixef(m$fit))
  L <- c(0, 0, 0, 1, 0)
  expect_same_table(lmerTest::contest(m$fit, L), lmerTest::contest(m$ref, L))
  expect_same_table(lmerTest::contest(m$fit, L, joint = FALSE, level = 0.9),
                    lmerTest::contest(m$ref, L, joint = FALSE, level = 0.9))
  Ls <- list(age = L, smoker = c(0, 0, 1, 0, 0))
  for (ddf in c("Satterthwaite", "Kenward-Roger")) {
    expect_same_table(lmerTest::contest(m$fit, Ls, ddf = ddf),
                      lmerTest::contest(m$ref, Ls, ddf = ddf))
    expect_same_table(lmerTest::contest(m$fit, Ls, joint = FALSE, ddf = ddf),
                      lmerTest::contest(m$ref, Ls, joint = FALSE, ddf = ddf))
    expect_same_table(lmerTest::contest(m$fit, Ls, joint = FALSE, confint = FALSE, ddf = ddf),
                      lmerTest::contest(m$ref, Ls, joint = FALSE, confint = FALSE, ddf = ddf))
    expect_same_table(lmerTest::contest(m$fit, diag(5)[2:3, ], rhs = 1, ddf = ddf),
                      lmerTest::contest(m$ref, diag(5)[2:3, ], rhs = 1, ddf = ddf))
  }
  a <- lmerTest::contest(m$fit, Ls, collect = FALSE)
  b <- lmerTest::contest(m$ref, Ls, collect = FALSE)
  expect_identical(names(a), names(b))
  expect_same_table(a$smoker, b$smoker)
  expect_error(lmerTest::contest(m$fit, L, ddf = "lme4"), class = "lmmr_error_ddf")
})

test_that("lmmr's icc(), r2(), contest(), ranova(), refit() hand lmer fits to their packages", {
  skip_if_not_installed("performance")
  m <- interop_fits("sleep")
  expect_identical(icc(m$ref), performance::icc(m$ref))
  expect_identical(r2(m$ref), performance::r2(m$ref))
  L <- c(0, 1)
  expect_identical(contest(m$ref, L), lmerTest::contest(m$ref, L))
  expect_identical(contest(m$ref, L, joint = FALSE, ddf = "Kenward-Roger"),
                   lmerTest::contest(m$ref, L, joint = FALSE, ddf = "Kenward-Roger"))
  y2 <- m$data$Reaction / 10
  expect_identical(fixef(refit(m$ref, y2)), lme4::fixef(lme4::refit(m$ref, y2)))
  fit_here <- lmerTest::lmer(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
  expect_identical(ranova(fit_here), lmerTest::ranova(fit_here))
  expect_equal(unclass(call_global(performance::r2, m$fit)), unclass(performance::r2(m$ref)),
               tolerance = 1e-4, ignore_attr = TRUE)
})

test_that("attaching lmmr after lme4, lmerTest and performance breaks no lme4 code", {
  skip_if_not_installed("performance")
  skip_on_cran()
  script <- function() {
    suppressPackageStartupMessages({
      library(lme4)
      library(lmerTest)
      library(performance)
      library(lmmr)
    })
    fit <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
    y2 <- sleepstudy$Reaction * 2
    masked <- intersect(getNamespaceExports("lmmr"),
                        c(ls("package:lme4"), ls("package:lmerTest"),
                          ls("package:performance"), ls("package:Matrix")))
    list(
      masked = sort(masked),
      attached = search()[2:5],
      icc = list(icc(fit), performance::icc(fit)),
      r2 = list(r2(fit), performance::r2(fit)),
      contest = list(contest(fit, c(0, 1)), lmerTest::contest(fit, c(0, 1))),
      contest1 = list(contest(fit, c(0, 1), joint = FALSE),
                      lmerTest::contest(fit, c(0, 1), joint = FALSE)),
      ranova = list(ranova(fit), lmerTest::ranova(fit)),
      refit = list(fixef(refit(fit, y2)), lme4::fixef(lme4::refit(fit, y2))),
      fixef = list(fixef(fit), lme4::fixef(fit)),
      ranef = list(ranef(fit), lme4::ranef(fit)),
      VarCorr = list(as.data.frame(VarCorr(fit)), as.data.frame(lme4::VarCorr(fit))),
      summary = list(coef(summary(fit)), coef(lmerTest:::summary.lmerModLmerTest(fit))),
      anova = list(anova(fit), lmerTest:::anova.lmerModLmerTest(fit)),
      isSingular = isSingular(fit)
    )
  }
  res <- if (requireNamespace("callr", quietly = TRUE)) {
    callr::r(script, libpath = .libPaths())
  } else {
    # a separate R process without callr
    f_script <- tempfile(fileext = ".R")
    f_out <- tempfile(fileext = ".rds")
    writeLines(c(paste("script <-", paste(deparse(script), collapse = "\n")),
                 sprintf("saveRDS(script(), %s)", deparse(f_out))), f_script)
    system2(file.path(R.home("bin"), "Rscript"), f_script,
            env = paste0("R_LIBS=", paste(.libPaths(), collapse = .Platform$path.sep)))
    readRDS(f_out)
  }
  expect_identical(res$attached, c("package:lmmr", "package:performance",
                                   "package:lmerTest", "package:lme4"))
  # every name lmmr shares with those packages gives their answer
  expect_setequal(res$masked, c("contest", "fixef", "icc", "ranef", "ranova", "refit",
                                "r2", "VarCorr"))
  for (nm in setdiff(names(res), c("masked", "attached", "isSingular"))) {
    expect_identical(res[[nm]][[1]], res[[nm]][[2]], label = nm)
  }
  expect_false(res$isSingular)
})

test_that("lmerTest::step() on an lmm fit eliminates as lmerTest does", {
  d <- phaa_clinics
  d$g3 <- factor(rep(c("a", "b", "c"), length.out = nrow(d)))
  d$noise <- factor(rep(1:8, length.out = nrow(d)))
  # lmerTest's step() refits in frames from which only global data are seen
  assign("interop_step_data", d, envir = globalenv())
  on.exit(rm("interop_step_data", envir = globalenv()))
  f <- sbp ~ clinic_urban * smoker + age + g3 + (1 | clinic_id) + (1 | noise)
  environment(f) <- globalenv()
  fit <- suppressMessages(eval(quote(lmm(f, data = interop_step_data)),
                               list(f = f), globalenv()))
  ref <- suppressMessages(eval(quote(lmerTest::lmer(f, data = interop_step_data)),
                               list(f = f), globalenv()))
  s <- suppressMessages(lmerTest::step(fit))
  sr <- suppressMessages(lmerTest::step(ref))
  expect_s3_class(s, "step_list")
  expect_identical(rownames(s$random), rownames(sr$random))
  expect_same_table(s$random, sr$random, tol = 1e-4)
  expect_identical(rownames(s$fixed), rownames(sr$fixed))
  expect_same_table(s$fixed, sr$fixed, tol = 1e-5)
  expect_identical(deparse(formula(lmerTest::get_model(s))),
                   deparse(formula(lmerTest::get_model(sr))))
  expect_output(print(s), "Model found")
  k <- suppressMessages(lmerTest::step(fit, reduce.random = FALSE, keep = "g3"))
  expect_true("g3" %in% attr(terms(lmerTest::get_model(k)), "term.labels"))
})
