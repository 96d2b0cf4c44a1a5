# Crossed designs whose primary levels touch scattered levels of the second
# factor (ratings: each user rates a few of many items). These fits take the
# column-oriented updates of the Rust core (core/src/scatter.rs) in the
# evaluation, the gradient, the conditional variances and the inference
# moments; here they are compared with lme4 1.1-31 and lmerTest 3.1-3.

h_ratings <- function(n_user = 900, n_item = 400, per_user = 40, seed = 3) {
  set.seed(seed)
  pop <- 1 / seq_len(n_item)^0.8
  d <- do.call(rbind, lapply(seq_len(n_user), function(u) {
    m <- max(2L, rpois(1, per_user))
    data.frame(user = u, item = sample.int(n_item, m, prob = pop))
  }))
  d$x <- rnorm(nrow(d))
  d$rating <- 3 + 0.2 * d$x + rnorm(n_user, sd = 0.5)[d$user] +
    rnorm(n_item, sd = 0.4)[d$item] + rnorm(nrow(d), sd = 0.8)
  d$user <- factor(d$user)
  d$item <- factor(d$item)
  d
}

test_that("a scattered crossed fit equals lme4's (criterion, theta, beta, conditional variances)", {
  skip_if_not_installed("lme4")
  d <- h_ratings()
  f <- rating ~ x + (1 | user) + (1 | item)
  for (reml in c(TRUE, FALSE)) {
    a <- lmm(f, data = d, REML = reml)
    b <- lme4::lmer(f, data = d, REML = reml)
    # lmm's optimum is at least as good as lme4's
    expect_lte(-2 * as.numeric(logLik(a)), -2 * as.numeric(logLik(b)) + 1e-6)
    expect_equal(unname(a$theta), unname(lme4::getME(b, "theta")), tolerance = 1e-4)
    expect_equal(unname(fixef(a)), unname(lme4::fixef(b)), tolerance = 1e-6)
    ra <- ranef(a, condVar = TRUE)
    rb <- lme4::ranef(b, condVar = TRUE)
    for (g in c("user", "item")) {
      expect_equal(ra[[g]][[1]], rb[[g]][[1]], tolerance = 1e-4)
      expect_equal(as.numeric(attr(ra[[g]], "postVar")), as.numeric(attr(rb[[g]], "postVar")),
                   tolerance = 1e-4)
    }
  }
})

test_that("Satterthwaite and Kenward-Roger on the column-oriented path equal lmerTest's", {
  skip_if_not_installed("lmerTest")
  skip_if_not_installed("pbkrtest")
  # pbkrtest forms n x n matrices: a small design, with the column-oriented
  # path forced (LMMR_FORCE_SCATTER is read when the kept model is built)
  d <- h_ratings(n_user = 60, n_item = 40, per_user = 8, seed = 5)
  f <- rating ~ x + (1 | user) + (1 | item)
  old <- Sys.getenv("LMMR_FORCE_SCATTER", unset = NA)
  Sys.setenv(LMMR_FORCE_SCATTER = "1")
  on.exit(if (is.na(old)) Sys.unsetenv("LMMR_FORCE_SCATTER") else
    Sys.setenv(LMMR_FORCE_SCATTER = old))
  a <- lmm(f, data = d)
  b <- suppressMessages(lmerTest::lmer(f, data = d))
  expect_equal(unname(a$theta), unname(lme4::getME(b, "theta")), tolerance = 1e-4)
  for (ddf in c("Satterthwaite", "Kenward-Roger")) {
    ca <- coef(summary(a, ddf = ddf))
    cb <- coef(summary(b, ddf = ddf))
    expect_equal(unname(ca[, "Std. Error"]), unname(cb[, "Std. Error"]), tolerance = 1e-5)
    # lmerTest's Satterthwaite df rest on a numerical Hessian
    expect_equal(unname(ca[, "df"]), unname(cb[, "df"]), tolerance = 1e-3)
  }
  ra <- ranef(a, condVar = TRUE)
  rb <- lme4::ranef(b, condVar = TRUE)
  expect_equal(as.numeric(attr(ra$user, "postVar")), as.numeric(attr(rb$user, "postVar")),
               tolerance = 1e-4)
})

test_that("the column-oriented path gives the same fit whatever the number of threads", {
  d <- h_ratings(n_user = 300, n_item = 150, per_user = 12, seed = 9)
  f <- rating ~ x + (1 | user) + (1 | item)
  old <- Sys.getenv("LMMR_FORCE_SCATTER", unset = NA)
  Sys.setenv(LMMR_FORCE_SCATTER = "1")
  on.exit(if (is.na(old)) Sys.unsetenv("LMMR_FORCE_SCATTER") else
    Sys.setenv(LMMR_FORCE_SCATTER = old))
  a1 <- lmm(f, data = d, control = lmm_control(threads = 1))
  a3 <- lmm(f, data = d, control = lmm_control(threads = 3))
  expect_identical(a1$theta, a3$theta)
  expect_identical(fixef(a1), fixef(a3))
  expect_identical(as.numeric(logLik(a1)), as.numeric(logLik(a3)))
  Sys.unsetenv("LMMR_FORCE_SCATTER")
  # and the same estimates as the grouped path
  b <- lmm(f, data = d)
  expect_equal(a1$theta, b$theta, tolerance = 1e-6)
  expect_equal(as.numeric(logLik(a1)), as.numeric(logLik(b)), tolerance = 1e-10)
})
