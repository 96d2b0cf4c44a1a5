# split_within_between() and contextual().

ctx_data <- function(seed = 11, J = 60, m = 8) {
  set.seed(seed)
  cl <- rep(seq_len(J), each = m)
  x <- rnorm(J, 0, 1)[cl] + rnorm(J * m)
  d <- data.frame(cl = factor(cl), x = x)
  d <- split_within_between(d, "x", "cl")
  d$y <- 1 + 0.5 * d$x_within + 2.0 * d$x_between + rnorm(J, 0, 0.7)[cl] +
    rnorm(J * m)
  d
}

test_that("split_within_between matches a by-hand ave() computation", {
  d <- lmmr::sleepstudy
  d$x <- d$Days^2 + seq_len(nrow(d)) %% 7
  s <- split_within_between(d, c("x", "Days"), "Subject")
  expect_equal(s$x_between, ave(d$x, d$Subject))
  expect_equal(s$x_within, d$x - ave(d$x, d$Subject))
  expect_equal(s$Days_between, ave(d$Days, d$Subject))
  expect_equal(names(s), c(names(d), "x_between", "x_within",
                           "Days_between", "Days_within"))
  # missing values: cluster means ignore NA x
  d$x[c(1, 15)] <- NA
  s <- split_within_between(d, "x", "Subject", suffix = c("_cm", "_cwc"))
  expect_equal(s$x_cm, ave(d$x, d$Subject, FUN = function(v) mean(v, na.rm = TRUE)))
  expect_true(is.na(s$x_cwc[1]) && !is.na(s$x_cm[1]))
  expect_error(split_within_between(d, "nope", "Subject"), class = "lmmr_error_argument")
  expect_error(split_within_between(d, "Subject", "Subject"), class = "lmmr_error_argument")
})

test_that("contextual recovers known within (0.5) and between (2.0) slopes", {
  d <- ctx_data()
  fit <- suppressMessages(lmm(y ~ x_within + x_between + (1 | cl), d))
  ce <- contextual(fit, "x")
  expect_s3_class(ce, "lmm_contextual")
  expect_equal(rownames(ce), c("within", "between", "contextual"))
  expect_true(ce["within", "lower"] < 0.5 && 0.5 < ce["within", "upper"])
  expect_true(ce["between", "lower"] < 2.0 && 2.0 < ce["between", "upper"])
  expect_true(ce["contextual", "lower"] < 1.5 && 1.5 < ce["contextual", "upper"])
  expect_equal(attr(ce, "parametrisation"), "mean + deviation")
  expect_equal(attr(ce, "cluster"), "cl")
  b <- fixef(fit)
  V <- vcov(fit)
  expect_equal(ce["contextual", "estimate"], unname(b["x_between"] - b["x_within"]))
  expect_equal(ce["contextual", "std_error"],
               sqrt(V["x_between", "x_between"] + V["x_within", "x_within"] -
                      2 * V["x_between", "x_within"]))
  expect_true(all(ce$p_value < 1e-6))
  expect_output(print(ce), "contextual = between - within")
})

test_that("mean + raw x parametrisation gives the same effects", {
  d <- ctx_data()
  f1 <- suppressMessages(lmm(y ~ x_within + x_between + (1 | cl), d))
  f2 <- suppressMessages(lmm(y ~ x + x_between + (1 | cl), d))
  c1 <- contextual(f1, "x")
  c2 <- contextual(f2, "x")
  expect_equal(attr(c2, "parametrisation"), "mean + raw x")
  expect_equal(c2$estimate, c1$estimate, tolerance = 1e-6)
  expect_equal(c2$std_error, c1$std_error, tolerance = 1e-5)
})

test_that("contextual errors are classed", {
  d <- ctx_data()
  d$z <- rep(rnorm(60), each = 8)  # a cluster-level variable
  d <- split_within_between(d, "z", "cl")
  fz <- suppressMessages(lmm(y ~ z_within + z_between + (1 | cl), d))
  expect_error(contextual(fz, "z"), class = "lmmr_error_no_within_variation")
  fz2 <- suppressMessages(lmm(y ~ x + (1 | cl), d))
  expect_error(contextual(fz2, "x"), class = "lmmr_error_contextual_terms")
  expect_error(contextual(lm(y ~ x, d), "x"), class = "lmmr_error_argument")
  fit <- suppressMessages(lmm(y ~ x_within + x_between + (1 | cl), d))
  expect_error(contextual(fit, c("x", "z")), class = "lmmr_error_argument")
})

test_that("contrasts, SEs and Satterthwaite df equal lmerTest::contest", {
  skip_if_not_installed("lmerTest")
  d <- ctx_data()
  fit <- suppressMessages(lmm(y ~ x_within + x_between + (1 | cl), d))
  ce <- contextual(fit, "x")
  skip_if(grepl("^none", attr(ce, "df_method")), "contest() not available")
  ref <- suppressMessages(lmerTest::lmer(y ~ x_within + x_between + (1 | cl), d))
  rc <- lmerTest::contest(ref, rbind(c(0, 1, 0), c(0, 0, 1), c(0, -1, 1)),
                          joint = FALSE)
  # lmerTest 3.1-3: within 0.4565, df 419; between 2.0648, df 58;
  # contextual 1.6083, df 78.09
  expect_equal(ce$estimate, rc$Estimate, tolerance = 1e-5)
  expect_equal(ce$std_error, rc[["Std. Error"]], tolerance = 1e-4)
  expect_equal(ce$df, rc$df, tolerance = 1e-3)
  expect_equal(ce$p_value, rc[["Pr(>|t|)"]], tolerance = 1e-3)
})
