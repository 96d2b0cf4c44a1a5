# residuals.lmmr() at several levels, ranef_std() and plot.lmmr().

diag_fit <- function() suppressMessages(lmm(Reaction ~ Days + (Days | Subject),
                                            data = lmmr::sleepstudy))

test_that("conditional and marginal residuals", {
  fit <- diag_fit()
  d <- lmmr::sleepstudy
  r1 <- residuals(fit)
  expect_equal(unname(r1), d$Reaction - unname(fitted(fit)))
  expect_equal(residuals(fit, level = "conditional"), r1)
  expect_equal(residuals(fit, level = "Subject"), r1)
  r0 <- residuals(fit, level = 0)
  expect_equal(unname(r0), d$Reaction - drop(model.matrix(fit) %*% fixef(fit)))
  expect_equal(residuals(fit, level = "marginal"), r0)
  expect_equal(unname(r0), unname(d$Reaction - predict(fit, re.form = NA)))
  expect_equal(residuals(fit, scaled = TRUE), r1 / sigma(fit))
  expect_equal(residuals(fit, type = "pearson"), r1)
  expect_error(residuals(fit, level = 2), class = "lmmr_error_argument")
  expect_error(residuals(fit, level = "nope"), class = "lmmr_error_argument")
})

test_that("residuals match lme4 (conditional) and keep weights / na.exclude behaviour", {
  skip_if_not_installed("lme4")
  d <- lmmr::sleepstudy
  d$w <- rep(c(1, 2), length.out = nrow(d))
  d$Reaction[c(3, 50)] <- NA
  fit <- suppressMessages(lmm(Reaction ~ Days + (Days | Subject), d,
                              weights = w, na.action = na.exclude))
  ref <- suppressMessages(lme4::lmer(Reaction ~ Days + (Days | Subject), d,
                                     weights = w, na.action = na.exclude))
  r <- residuals(fit, type = "pearson")
  expect_length(r, nrow(d))
  expect_true(all(is.na(r[c(3, 50)])))
  expect_equal(unname(r), unname(residuals(ref, type = "pearson")), tolerance = 1e-4)
  expect_equal(unname(residuals(fit)), unname(residuals(ref)), tolerance = 1e-4)
  expect_length(residuals(fit, level = 0), nrow(d))
})

test_that("partial levels: condition on one grouping factor only", {
  skip_if_not_installed("lme4")
  fit <- suppressMessages(lmm(diameter ~ 1 + (1 | plate) + (1 | sample),
                              lme4::Penicillin))
  r_plate <- residuals(fit, level = "plate")
  by_hand <- lme4::Penicillin$diameter - fixef(fit)[[1]] -
    ranef(fit)$plate[as.character(lme4::Penicillin$plate), 1]
  expect_equal(unname(r_plate), by_hand)
  expect_equal(unname(residuals(fit, level = c("plate", "sample"))),
               unname(residuals(fit)))
})

test_that("ranef_std: diagnostic and conditional standardisation", {
  fit <- diag_fit()
  rs <- ranef_std(fit)
  expect_equal(nrow(rs), 36L)
  expect_equal(unique(rs$term), c("(Intercept)", "Days"))
  re <- ranef(fit)$Subject
  a <- rs[rs$term == "(Intercept)", ]
  expect_equal(a$blup, re[["(Intercept)"]])
  pv <- attr(ranef(fit, condVar = TRUE)$Subject, "postVar")
  expect_equal(a$cond_sd, sqrt(pv[1, 1, ]))
  S <- VarCorr(fit)$Subject
  expect_equal(a$std, a$blup / sqrt(S[1, 1] - pv[1, 1, ]))
  rc <- ranef_std(fit, type = "conditional")
  expect_equal(rc$std, rc$blup / rc$cond_sd)
  # under the model the diagnostic values are ~ N(0, 1)
  expect_equal(sd(a$std), 1, tolerance = 0.3)
  expect_error(ranef_std(lm(Reaction ~ Days, lmmr::sleepstudy)), class = "lmmr_error")
})

test_that("every diagnostic plot draws (null device) and to a PNG", {
  fit <- diag_fit()
  pdf(NULL)
  on.exit(dev.off(), add = TRUE)
  expect_invisible(plot(fit, ask = FALSE))
  for (w in 1:5) expect_invisible(plot(fit, which = w, ask = FALSE))
  expect_invisible(plot(fit, which = c("caterpillar", "scale_location"), ask = FALSE))
  skip_if_not_installed("lme4")
  p <- suppressMessages(lmm(diameter ~ 1 + (1 | plate) + (1 | sample), lme4::Penicillin))
  expect_invisible(plot(p, which = 1:2, ask = FALSE))
  expect_error(plot(fit, which = 7), class = "lmmr_error_argument")
  expect_error(plot(fit, which = "pie"), class = "lmmr_error_argument")
})

test_that("plots can be written to a PNG file", {
  skip_if_not(capabilities("png"))
  fit <- diag_fit()
  f <- tempfile(fileext = ".png")
  png(f, width = 900, height = 600)
  plot(fit, which = "caterpillar", ask = FALSE)
  dev.off()
  expect_gt(file.size(f), 1000)
})
