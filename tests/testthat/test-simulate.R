# simulate.lmmr() and refit().

sim_fit <- function(f = Reaction ~ Days + (Days | Subject), ...) {
  suppressMessages(lmm(f, data = lmmr::sleepstudy, ...))
}

test_that("simulate returns a data frame of nsim columns, reproducible with seed", {
  fit <- sim_fit()
  s <- simulate(fit, nsim = 3, seed = 1)
  expect_s3_class(s, "data.frame")
  expect_equal(dim(s), c(180L, 3L))
  expect_equal(names(s), c("sim_1", "sim_2", "sim_3"))
  expect_identical(s, simulate(fit, nsim = 3, seed = 1))
  expect_false(identical(s, simulate(fit, nsim = 3, seed = 2)))
  expect_equal(attr(s, "seed")[1], 1)
  # the seed does not change the global RNG stream
  set.seed(9); a <- runif(1)
  set.seed(9); invisible(simulate(fit, seed = 3)); b <- runif(1)
  expect_equal(a, b)
})

test_that("unconditional simulation has the model's marginal moments", {
  fit <- sim_fit(Reaction ~ Days + (1 | Subject))
  s <- as.matrix(simulate(fit, nsim = 2000, seed = 10))
  mu <- drop(model.matrix(fit) %*% fixef(fit))
  expect_equal(rowMeans(s), mu, tolerance = 0.02, ignore_attr = TRUE)
  s2b <- VarCorr(fit)$Subject[1, 1]
  expect_equal(mean(apply(s, 1, var)), s2b + sigma(fit)^2, tolerance = 0.05)
  # two observations of the same subject covary by sigma_b^2
  expect_equal(mean((s[1, ] - mu[1]) * (s[2, ] - mu[2])), s2b, tolerance = 0.15)
  # conditional simulation: centred on the fitted values, residual variance only
  sc <- as.matrix(simulate(fit, nsim = 2000, seed = 11, re.form = NULL))
  expect_equal(rowMeans(sc), fitted(fit), tolerance = 0.02, ignore_attr = TRUE)
  expect_equal(mean(apply(sc, 1, var)), sigma(fit)^2, tolerance = 0.05)
  expect_error(simulate(fit, re.form = ~ (1 | nope)), class = "lmmr_error_argument")
})

test_that("refit reproduces the fit and agrees with fitting the new response", {
  fit <- sim_fit()
  same <- refit(fit, lmmr::sleepstudy$Reaction)
  expect_equal(fixef(same), fixef(fit))
  expect_equal(same$theta, fit$theta)
  expect_equal(sigma(same), sigma(fit))
  y <- simulate(fit, seed = 4)
  r <- refit(fit, y)
  d <- lmmr::sleepstudy
  d$Reaction <- y$sim_1
  direct <- suppressMessages(lmm(Reaction ~ Days + (Days | Subject), data = d))
  expect_equal(fixef(r), fixef(direct), tolerance = 1e-8)
  expect_equal(r$theta, direct$theta, tolerance = 1e-6)
  expect_equal(as.numeric(logLik(r)), as.numeric(logLik(direct)), tolerance = 1e-10)
  expect_equal(unname(r$y), y$sim_1)
  ml <- refit(fit, y$sim_1, REML = FALSE)
  expect_false(ml$REML)
  expect_equal(as.numeric(logLik(ml)),
               as.numeric(logLik(update(direct, REML = FALSE))), tolerance = 1e-8)
})

test_that("refit works with a transformed response, weights, subset and na.exclude", {
  d <- lmmr::sleepstudy
  d$w <- rep(c(1, 3), length.out = nrow(d))
  d$Reaction[5] <- NA
  fit <- suppressMessages(lmm(log(Reaction) ~ Days + (1 | Subject), d,
                              weights = w, subset = Days > 0,
                              na.action = na.exclude))
  used <- !is.na(d$Reaction) & d$Days > 0
  newy <- log(d$Reaction[used]) + 0.1
  r <- refit(fit, newy)
  expect_equal(fixef(r)[["(Intercept)"]], fixef(fit)[["(Intercept)"]] + 0.1,
               tolerance = 1e-6)
  expect_equal(fixef(r)[["Days"]], fixef(fit)[["Days"]], tolerance = 1e-6)
  expect_equal(r$weights, fit$weights)
  expect_length(residuals(r), sum(d$Days > 0))
  expect_error(refit(fit, 1:3), class = "lmmr_error_argument")
  expect_error(refit(fit, c(NA, newy[-1])), class = "lmmr_error_non_finite")
  expect_error(refit(fit, simulate(fit, nsim = 2)), class = "lmmr_error_argument")
})

test_that("simulate(): nsim must be a positive whole number (classed error)", {
  fit <- lmm(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  for (bad in list(2.5, -1, 0, NA, NA_real_, Inf, c(1, 2), "2")) {
    expect_error(simulate(fit, nsim = bad), class = "lmmr_error_argument")
  }
  expect_equal(ncol(simulate(fit, nsim = 2, seed = 1)), 2)
  expect_equal(ncol(simulate(fit, nsim = 3L, seed = 1)), 3)
})

test_that("simulate(newdata =) simulates for the rows of newdata, as lme4", {
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  nd <- rbind(sleepstudy, sleepstudy)
  s <- simulate(fit, nsim = 2, seed = 1, newdata = nd)
  expect_equal(dim(s), c(360L, 2L))
  # conditional simulation on newdata equals predictions plus noise
  s0 <- simulate(fit, nsim = 1, seed = 2, newdata = nd, re.form = NULL)
  r <- s0$sim_1 - predict(fit, newdata = nd)
  expect_lt(abs(sd(r) / sigma(fit) - 1), 0.15)
  expect_identical(simulate(fit, seed = 3, use.u = TRUE), simulate(fit, seed = 3, re.form = NULL))
  # new levels need allow.new.levels; each new level gets its own draw
  nn <- data.frame(Days = rep(0, 4), Subject = c("a", "a", "b", "b"))
  expect_error(simulate(fit, newdata = nn), class = "lmmr_error_new_levels")
  sn <- simulate(fit, nsim = 200, seed = 4, newdata = nn, allow.new.levels = TRUE)
  m <- as.matrix(sn)
  # rows of one new subject share their random intercept: correlated by
  # about the ICC at Days = 0, 612 / (612 + 655) = 0.48
  expect_gt(cor(m[1, ], m[2, ]), 0.3)
  expect_lt(abs(cor(m[1, ], m[3, ])), 0.2)
  skip_if_not_installed("lme4")
  ref <- lme4::lmer(Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy)
  expect_equal(dim(simulate(ref, newdata = nd)), c(360L, 1L))
})

test_that("simulate() on an na.exclude fit is padded with NA, as lme4", {
  d <- sleepstudy
  d$Reaction[c(3, 5)] <- NA
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = d, na.action = na.exclude)
  s <- simulate(fit, seed = 1)
  expect_equal(nrow(s), 180)
  expect_equal(which(is.na(s$sim_1)), c(3L, 5L))
  fit_omit <- lmm(Reaction ~ Days + (Days | Subject), data = d)
  expect_equal(nrow(simulate(fit_omit, seed = 1)), 178)
})

test_that("refit() takes a full-length response on an na.omit fit, as lme4", {
  d <- sleepstudy
  d$Reaction[c(3, 5)] <- NA
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = d)
  rf <- refit(fit, sleepstudy$Reaction)
  expect_equal(fixef(rf), fixef(fit), tolerance = 1e-6)
  expect_error(refit(fit, sleepstudy$Reaction[1:100]), class = "lmmr_error_argument")
  skip_if_not_installed("lme4")
  ref <- lme4::lmer(Reaction ~ Days + (Days | Subject), data = d)
  expect_equal(unname(fixef(rf)), unname(lme4::fixef(lme4::refit(ref, sleepstudy$Reaction))),
               tolerance = 1e-5)
})
