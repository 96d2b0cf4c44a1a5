# Adversarial robustness tests: bad input gets a classed lmmr_error naming the
# problem, degenerate designs get precise messages, and awkward but valid
# inputs give lme4's numbers. (Cases that currently misbehave are reported to
# the maintainers rather than tested here.)

rob_data <- function(seed = 5) {
  set.seed(1)
  d <- data.frame(y = rnorm(60), x = rnorm(60), z = rnorm(60),
                  g = factor(rep(1:10, each = 6)), h = factor(rep(1:3, 20)))
  set.seed(seed)
  d$y <- d$y + rnorm(10)[d$g] + 0.5 * d$x
  d
}

rob_crit <- function(fit) {
  if (fit$REML) -2 * as.numeric(logLik(fit)) else deviance(fit)
}

rob_crit_lme4 <- function(ref) {
  if (lme4::isREML(ref)) lme4::REMLcrit(ref) else deviance(ref)
}

# criterion equal to lme4's or lower (1e-7 relative), fixed effects to 1e-5
rob_expect_lme4 <- function(formula, data, REML = TRUE, ...) {
  fit <- suppressMessages(lmm(formula, data = data, REML = REML, ...))
  ref <- suppressMessages(suppressWarnings(
    lme4::lmer(formula, data = data, REML = REML, ...)))
  crit_ref <- rob_crit_lme4(ref)
  expect_lte((rob_crit(fit) - crit_ref) / abs(crit_ref), 1e-7)
  if (abs(rob_crit(fit) - crit_ref) < 1e-6 * abs(crit_ref)) {
    expect_equal(fixef(fit), lme4::fixef(ref), tolerance = 1e-5)
  }
  invisible(list(fit = fit, ref = ref))
}

# ---------------------------------------------------------------------------
# Data problems

test_that("empty or exhausted data give lmmr_error_no_data", {
  d <- rob_data()
  expect_error(lmm(y ~ x + (1 | g), data = d[0, ]), class = "lmmr_error_no_data")
  d_na <- d
  d_na$y <- NA_real_
  expect_error(lmm(y ~ x + (1 | g), data = d_na), class = "lmmr_error_no_data")
  d_na <- d
  d_na$x <- NA_real_
  expect_error(lmm(y ~ x + (1 | g), data = d_na), class = "lmmr_error_no_data")
  expect_error(lmm(y ~ x + (1 | g), data = d, subset = x > 100),
               class = "lmmr_error_no_data")
})

test_that("too few rows or levels give lmmr_error_grouping", {
  d <- rob_data()
  expect_error(lmm(y ~ x + (1 | g), data = d[1, ]), class = "lmmr_error_grouping")
  expect_error(lmm(y ~ x + (1 | g), data = d[1:2, ]), class = "lmmr_error_grouping")
  expect_error(lmm(y ~ 1 + (1 | g), data = d[c(1, 7, 13), ]),
               class = "lmmr_error_grouping")
  d1 <- d
  d1$g <- factor(1)
  expect_error(lmm(y ~ x + (1 | g), data = d1), class = "lmmr_error_grouping")
  # one observation per level
  s <- data.frame(g = factor(1:50), x = rnorm(50), y = rnorm(50))
  expect_error(lmm(y ~ x + (1 | g), data = s), class = "lmmr_error_grouping")
})

test_that("non-finite values in response, covariates, weights and offsets", {
  d <- rob_data()
  d1 <- d
  d1$y[3] <- Inf
  expect_error(lmm(y ~ x + (1 | g), data = d1), class = "lmmr_error_response")
  d1 <- d
  d1$x[3] <- -Inf
  expect_error(lmm(y ~ x + (1 | g), data = d1), class = "lmmr_error_non_finite")
  w <- rep(1, 60)
  w[2] <- Inf
  expect_error(lmm(y ~ x + (1 | g), data = d, weights = w), class = "lmmr_error")
  w[2] <- -1
  expect_error(lmm(y ~ x + (1 | g), data = d, weights = w), class = "lmmr_error_argument")
  expect_error(lmm(y ~ x + (1 | g), data = d, weights = rep(0, 60)), class = "lmmr_error")
  expect_error(lmm(y ~ x + (1 | g), data = d, weights = rep("1", 60)),
               class = "lmmr_error_argument")
  expect_error(lmm(y ~ x + (1 | g), data = d, weights = rep(1, 59)),
               class = "lmmr_error_data")
  o <- rep(0, 60)
  o[2] <- Inf
  expect_error(lmm(y ~ x + (1 | g), data = d, offset = o), class = "lmmr_error_non_finite")
  expect_error(lmm(y ~ x + (1 | g), data = d, offset = rep(0, 59)),
               class = "lmmr_error_data")
  d1 <- d
  d1$o <- 0.1
  d1$o[3] <- Inf
  expect_error(lmm(y ~ x + offset(o) + (1 | g), data = d1),
               class = "lmmr_error_non_finite")
})

test_that("missing values are dropped like lme4 (na.omit) or refused (na.fail)", {
  d <- rob_data()
  for (col in c("y", "x", "g")) {
    d1 <- d
    d1[[col]][3] <- NA
    fit <- suppressMessages(lmm(y ~ x + (1 | g), data = d1))
    expect_equal(nobs(fit), 59L)
  }
  d1 <- d
  d1$y[3] <- NaN
  expect_equal(nobs(suppressMessages(lmm(y ~ x + (1 | g), data = d1))), 59L)
  w <- rep(1, 60)
  w[2] <- NA
  expect_equal(nobs(suppressMessages(lmm(y ~ x + (1 | g), data = d, weights = w))), 59L)
  o <- rep(0, 60)
  o[2] <- NA
  expect_equal(nobs(suppressMessages(lmm(y ~ x + (1 | g), data = d, offset = o))), 59L)
  d1 <- d
  d1$g[3] <- NA
  expect_error(lmm(y ~ x + (1 | g), data = d1, na.action = na.fail),
               class = "lmmr_error_data")
  d1 <- d
  d1$g <- addNA(d1$g)
  d1$g[3] <- NA
  expect_error(lmm(y ~ x + (1 | g), data = d1), class = "lmmr_error_data")
  d1 <- d
  d1$y[c(2, 5)] <- NA
  fit <- lmm(y ~ x + (1 | g), data = d1, na.action = na.exclude)
  expect_length(fitted(fit), 60L)
  expect_length(residuals(fit), 60L)
  expect_true(all(is.na(predict(fit, re.form = NA)[c(2, 5)])))
  expect_error(lmm(y ~ x + (1 | g), data = d, na.action = "na.foo"),
               class = "lmmr_error_argument")
  expect_error(lmm(y ~ x + (1 | g), data = d, na.action = 3),
               class = "lmmr_error_argument")
})

test_that("responses of the wrong type give lmmr_error_response", {
  d <- rob_data()
  bad <- list(
    character = as.character(d$y),
    date = as.Date("2020-01-01") + 1:60,
    complex = complex(real = d$y, imaginary = 1),
    factor = factor(d$y > 0),
    difftime = as.difftime(d$y, units = "secs")
  )
  for (nm in names(bad)) {
    d1 <- d
    d1$y <- bad[[nm]]
    expect_error(lmm(y ~ x + (1 | g), data = d1), class = "lmmr_error_response",
                 info = nm)
  }
  expect_error(lmm(cbind(y, x) ~ z + (1 | g), data = d), class = "lmmr_error_response")
  expect_error(lmm(~ x + (1 | g), data = d), class = "lmmr_error_response")
  # a logical response is 0/1, as in lme4 (issue 16)
  d1 <- d
  d1$y <- d$y > 0
  expect_s3_class(lmm(y ~ x + (1 | g), data = d1), "lmmr")
  d1 <- d
  d1$l <- as.list(d1$y)
  expect_error(lmm(l ~ x + (1 | g), data = d1), class = "lmmr_error_data")
  expect_error(lmm(y ~ l + (1 | g), data = d1), class = "lmmr_error_data")
})

test_that("an integer response is accepted and matches lme4", {
  skip_if_not_installed("lme4")
  d <- rob_data()
  set.seed(11)
  d$y <- rpois(60, 5) + as.integer(d$g)
  rob_expect_lme4(y ~ x + (1 | g), d)
})

test_that("grouping factors given as numbers, strings, logicals or dates", {
  skip_if_not_installed("lme4")
  d <- rob_data()
  d$gn <- as.numeric(d$g)
  d$gc <- paste0("a", d$g)
  d$gd <- as.Date("2020-01-01") + as.integer(d$g)
  ref <- rob_expect_lme4(y ~ x + (1 | g), d)$fit
  for (gv in c("gn", "gc", "gd")) {
    fo <- as.formula(sprintf("y ~ x + (1 | %s)", gv))
    fit <- lmm(fo, data = d)
    expect_equal(fixef(fit), fixef(ref), tolerance = 1e-8)
    expect_equal(sigma(fit), sigma(ref), tolerance = 1e-6)
  }
  # unused levels are dropped
  d$gu <- factor(d$g, levels = c(levels(d$g), "zz"))
  fit <- lmm(y ~ x + (1 | gu), data = d)
  expect_equal(nrow(ranef(fit)$gu), 10L)
  expect_equal(fixef(fit), fixef(ref), tolerance = 1e-8)
})

test_that("responses with a large mean or extreme scales", {
  skip_if_not_installed("lme4")
  d <- rob_data()
  d1 <- d
  d1$y <- d1$y * 1e150
  fit <- suppressMessages(lmm(y ~ x + (1 | g), data = d1))
  fit0 <- lmm(y ~ x + (1 | g), data = d)
  expect_equal(fixef(fit) / 1e150, fixef(fit0), tolerance = 1e-6)
  expect_equal(sigma(fit) / 1e150, sigma(fit0), tolerance = 1e-6)
  d1 <- d
  d1$y <- d1$y * 1e-150
  fit <- suppressMessages(lmm(y ~ x + (1 | g), data = d1))
  expect_equal(fixef(fit) * 1e150, fixef(fit0), tolerance = 1e-6)
  d1 <- d
  d1$y <- d1$y + 1e9
  rob_expect_lme4(y ~ x + (1 | g), d1)
  d1 <- d
  d1$y[1] <- 1e8
  rob_expect_lme4(y ~ x + (1 | g), d1)
  # covariates on extreme scales: a classed warning, estimates still right
  d1 <- d
  d1$x <- d1$x * 1e-100
  expect_warning(fit <- suppressMessages(lmm(y ~ x + (1 | g), data = d1)),
                 class = "lmmr_warning_scale")
  expect_equal(unname(fixef(fit) * c(1, 1e-100)), unname(fixef(fit0)), tolerance = 1e-6)
})

test_that("a response equal to its group means is a perfect fit error", {
  d <- rob_data()
  d1 <- d
  d1$y <- as.numeric(d1$g)
  expect_error(lmm(y ~ 1 + (1 | g), data = d1), class = "lmmr_error_non_finite",
               regexp = "perfect fit")
  d1$y <- 0
  expect_error(lmm(y ~ x + (1 | g), data = d1), class = "lmmr_error_non_finite",
               regexp = "perfect fit")
})

test_that("rank-deficient and saturated fixed effects", {
  skip_if_not_installed("lme4")
  d <- rob_data()
  d$x2 <- d$x
  expect_message(fit <- lmm(y ~ x + x2 + (1 | g), data = d), "rank deficient")
  expect_named(fixef(fit), c("(Intercept)", "x"))
  expect_true(is.na(fixef(fit, add.dropped = TRUE)[["x2"]]))
  ref <- suppressMessages(lme4::lmer(y ~ x + x2 + (1 | g), data = d))
  expect_equal(fixef(fit), lme4::fixef(ref), tolerance = 1e-6)
  expect_equal(dim(vcov(fit)), c(2L, 2L))
  expect_equal(nrow(confint(fit)), 2L)
  d12 <- d[1:12, ]
  d12$g <- factor(rep(1:3, 4))
  expect_error(suppressWarnings(lmm(y ~ factor(1:12) + (1 | g), data = d12)), class = "lmmr_error")
})

# ---------------------------------------------------------------------------
# Formulas

test_that("malformed formulas give lmmr_error_formula", {
  d <- rob_data()
  expect_error(lmm(y ~ x, data = d), class = "lmmr_error_formula")
  expect_error(lmm(y ~ 1, data = d), class = "lmmr_error_formula")
  expect_error(lmm(y ~ x + (1 | (1 | g)), data = d), class = "lmmr_error_formula")
  expect_error(lmm(y ~ x + (0 | g), data = d), class = "lmmr_error")
  expect_error(lmm(y ~ w + (1 | g), data = d), class = "lmmr_error_data")
  expect_error(lmm(y ~ x + (1 | gg), data = d), class = "lmmr_error_data")
  expect_error(lmm(y ~ x + (1 | interaction(g, h)), data = d), class = "lmmr_error")
  fit <- suppressMessages(lmm(y ~ x + (1 | g), data = d))
  expect_error(update(fit, . ~ . - (1 | g)), class = "lmmr_error_formula")
})

test_that("formula variants match lme4", {
  skip_if_not_installed("lme4")
  d <- rob_data()
  # `.` puts g among the fixed effects too: (1 | g) is not identifiable
  expect_warning(rob_expect_lme4(y ~ . + (1 | g), d[, c("y", "x", "g")]),
                 class = "lmmr_warning_not_identifiable")
  rob_expect_lme4(y ~ x - 1 + (1 | g), d)
  rob_expect_lme4(y ~ 0 + x + (1 | g), d)
  rob_expect_lme4(y ~ (1 | g), d)
  rob_expect_lme4(y ~ x + (1 | g) + (1 | g), d)
  rob_expect_lme4(y ~ x + (x || g), d)
  rob_expect_lme4(y ~ x + (1 | g:h), d)
  rob_expect_lme4(y ~ x + (1 | g/h), d)
  d$hn <- as.numeric(d$h)
  rob_expect_lme4(y ~ x + (1 | g/hn), d)
  rob_expect_lme4(y ~ scale(x) + poly(z, 2) + (1 | g), d)
  d$yp <- exp(d$y)
  rob_expect_lme4(log(yp) ~ I(x^2) + (1 | g), d)
  d$o <- factor(d$h, ordered = TRUE)
  rob_expect_lme4(y ~ o + (1 | g), d)
  d$hc <- as.character(d$h)
  rob_expect_lme4(y ~ hc + (1 | g), d)
  rob_expect_lme4(y ~ x + h + (1 | g), d, contrasts = list(h = "contr.sum"))
  # a model without fixed effects
  res <- rob_expect_lme4(y ~ 0 + (1 | g), d)
  expect_length(fixef(res$fit), 0L)
  expect_equal(sigma(res$fit), sigma(res$ref), tolerance = 1e-5)
  # lmm finds a lower criterion than lme4 here (lme4 stops on the boundary)
  rob_expect_lme4(y ~ x + (x:z | g), d)
  # a formula given as a string, variables from the calling environment
  fit <- suppressMessages(lmm("y ~ x + (1 | g)", data = d))
  expect_equal(fixef(fit), fixef(suppressMessages(lmm(y ~ x + (1 | g), data = d))))
  y <- d$y; x <- d$x; g <- d$g
  expect_equal(fixef(lmm(y ~ x + (1 | g))), fixef(lmm(y ~ x + (1 | g), data = d)))
})

test_that("non-syntactic names work through fitting, prediction and tests", {
  d <- rob_data()
  ref <- lmm(y ~ x + (1 | g), data = d)
  names(d)[names(d) == "x"] <- "my x"
  names(d)[names(d) == "g"] <- "my g"
  fit <- lmm(y ~ `my x` + (1 | `my g`), data = d)
  expect_equal(unname(fixef(fit)), unname(fixef(ref)))
  expect_named(ranef(fit), "my g")
  expect_equal(unname(predict(fit, newdata = d[1:2, ])), unname(fitted(ref)[1:2]),
               tolerance = 1e-8)
  expect_s3_class(anova(fit), "data.frame")
})

test_that("deep nesting, many crossed factors and a 6-dimensional term", {
  skip_if_not_installed("lme4")
  set.seed(2)
  n <- 300
  D <- data.frame(y = rnorm(n), a = factor(sample(1:3, n, TRUE)),
                  b = factor(sample(1:3, n, TRUE)), c = factor(sample(1:3, n, TRUE)),
                  e = factor(sample(1:3, n, TRUE)))
  D$y <- D$y + rnorm(3)[D$a] + 0.5 * rnorm(9)[as.integer(D$a:D$b)]
  rob_expect_lme4(y ~ 1 + (1 | a/b/c/e), D)
  set.seed(3)
  n <- 400
  D <- data.frame(y = rnorm(n))
  for (k in 1:10) D[[paste0("f", k)]] <- factor(sample(1:(3 + k), n, TRUE))
  for (k in c(3, 7, 10)) D$y <- D$y + rnorm(3 + k)[D[[paste0("f", k)]]]
  fo <- as.formula(paste("y ~ 1 +", paste0("(1|f", 1:10, ")", collapse = "+")))
  rob_expect_lme4(fo, D)
  set.seed(4)
  n <- 300
  D <- data.frame(g = factor(rep(1:20, each = 15)))
  for (k in 1:5) D[[paste0("x", k)]] <- rnorm(n)
  B <- matrix(rnorm(20 * 6), 20)
  D$y <- rowSums(cbind(1, as.matrix(D[, 2:6])) * B[D$g, ]) + rnorm(n)
  fit <- lmm(y ~ x1 + x2 + x3 + x4 + x5 + (x1 + x2 + x3 + x4 + x5 | g), data = D)
  expect_length(fit$theta, 21L)
  expect_true(all(is.finite(fixef(fit))))
})

test_that("singleton groups: a zero variance, as in lme4", {
  skip_if_not_installed("lme4")
  set.seed(2)
  g <- c(1:3000, sample(1:50, 300, TRUE))
  D <- data.frame(g = factor(g), x = rnorm(length(g)))
  D$y <- 0.3 * D$x + rnorm(nrow(D))
  res <- rob_expect_lme4(y ~ x + (1 | g), D)
  expect_true(is_singular(res$fit))
})

# ---------------------------------------------------------------------------
# Arguments of lmm() and lmm_control()

test_that("bad arguments of lmm() and lmm_control() give lmmr_error_argument", {
  d <- rob_data()
  for (reml in list(NA, "yes", c(TRUE, FALSE))) {
    expect_error(lmm(y ~ x + (1 | g), data = d, REML = reml), class = "lmmr_error_argument")
  }
  expect_error(lmm(y ~ x + (1 | g), data = d, control = list(max_iter = 5)),
               class = "lmmr_error_argument")
  expect_error(lmm_control(max_iter = 0), class = "lmmr_error_argument")
  expect_error(lmm_control(max_iter = NA), class = "lmmr_error_argument")
  expect_error(lmm_control(tol = -1), class = "lmmr_error_argument")
  expect_error(lmm_control(theta_start = NA_real_), class = "lmmr_error_argument")
  expect_error(lmm_control(theta_start = "a"), class = "lmmr_error_argument")
  expect_error(lmm(y ~ x + (1 | g), data = d, control = lmm_control(theta_start = c(1, 1))),
               class = "lmmr_error_argument")
  expect_error(lmm(y ~ x + (1 | g), data = d, control = lmm_control(theta_start = numeric(0))),
               class = "lmmr_error_argument")
  expect_error(lmm(y ~ x + (1 | g), data = d, control = lmm_control(theta_start = Inf)),
               class = "lmmr_error")
  expect_error(lmm(y ~ x + (1 | g), data = d, subset = zz > 0), class = "lmmr_error_data")
  expect_warning(suppressMessages(lmm(y ~ x + (x | g), data = d, control = lmm_control(max_iter = 1))),
                 class = "lmmr_warning_convergence")
})

test_that("theta_start with negative or zero diagonals reaches the optimum", {
  d <- rob_data()
  ref <- lmm(y ~ x + (x | g), data = d)
  for (th in list(c(-1, 0, 1), c(0, 0, 0))) {
    fit <- lmm(y ~ x + (x | g), data = d, control = lmm_control(theta_start = th))
    expect_equal(as.numeric(logLik(fit)), as.numeric(logLik(ref)), tolerance = 1e-8)
  }
  fit <- lmm(y ~ x + (1 | g), data = d, control = lmm_control(theta_start = -2))
  expect_gt(fit$theta[[1]], 0)
})

test_that("weights and offsets given as local vectors inside a function", {
  skip_if_not_installed("lme4")
  d <- rob_data()
  fit_it <- function(dd) {
    w <- rep(c(1, 2), length.out = nrow(dd))
    o <- rep(0.1, nrow(dd))
    lmm(y ~ x + (1 | g), data = dd, weights = w, offset = o)
  }
  fit <- fit_it(d)
  ref <- lme4::lmer(y ~ x + (1 | g), data = d, weights = rep(c(1, 2), 30),
                    offset = rep(0.1, 60))
  expect_equal(fixef(fit), lme4::fixef(ref), tolerance = 1e-5)
  expect_equal(rob_crit(fit), lme4::REMLcrit(ref), tolerance = 1e-8)
  d$ww <- runif(60) + 0.5
  expect_equal(fixef(lmm(y ~ x + (1 | g), data = d, weights = ww)),
               fixef(lmm(y ~ x + (1 | g), data = d, weights = "ww")))
  e <- list2env(as.list(d))
  expect_equal(fixef(lmm(y ~ x + (1 | g), data = e)), fixef(lmm(y ~ x + (1 | g), data = d)))
})

# ---------------------------------------------------------------------------
# Methods

test_that("predict() with bad or unusual newdata", {
  skip_if_not_installed("lme4")
  d <- rob_data()
  fit <- lmm(y ~ x + h + (1 | g), data = d)
  ref <- lme4::lmer(y ~ x + h + (1 | g), data = d)
  expect_error(predict(fit, newdata = d[, c("x", "g")]), class = "lmmr_error_data")
  expect_error(predict(fit, newdata = d[, c("x", "h")]), class = "lmmr_error_data")
  expect_length(predict(fit, newdata = d[1:3, c("x", "h")], re.form = NA), 3L)
  nd <- d[1:3, ]
  nd$g <- factor(c("1", "new", "2"))
  expect_error(predict(fit, newdata = nd), class = "lmmr_error_new_levels")
  expect_equal(predict(fit, newdata = nd, allow.new.levels = TRUE),
               predict(ref, newdata = nd, allow.new.levels = TRUE), tolerance = 1e-6)
  nd <- d[1:3, ]
  nd$h <- factor(c("1", "9", "2"))
  expect_error(predict(fit, newdata = nd), class = "lmmr_error_data")
  nd <- d[1:3, ]
  nd$x[2] <- NA
  expect_equal(predict(fit, newdata = nd), predict(ref, newdata = nd), tolerance = 1e-6)
  nd <- d[1:3, ]
  nd$g[2] <- NA
  expect_error(predict(fit, newdata = nd), class = "lmmr_error_data")
  expect_equal(predict(fit, newdata = nd, allow.new.levels = TRUE),
               predict(ref, newdata = nd, allow.new.levels = TRUE), tolerance = 1e-6)
  expect_error(predict(fit, re.form = ~ (1 | zz)), class = "lmmr_error_argument")
  expect_error(predict(fit, newdata = d, re.form = ~ (1 | zz)), class = "lmmr_error_argument")
  expect_error(predict(fit, re.form = "g"), class = "lmmr_error_argument")
  expect_error(predict(fit, newdata = as.list(d)), class = "lmmr_error_argument")
  expect_error(predict(fit, allow.new.levels = NA), class = "lmmr_error_argument")
  expect_length(predict(fit, newdata = d[0, ]), 0L)
  nd <- d[1:3, ]
  nd$g <- as.character(nd$g)
  nd$h <- as.character(nd$h)
  expect_equal(unname(predict(fit, newdata = nd)), unname(fitted(fit)[1:3]), tolerance = 1e-10)
  fit2 <- suppressMessages(lmm(y ~ x + (1 | g/h), data = d))
  nd <- d[1:3, ]
  nd$h <- factor(c("1", "2", "7"))
  expect_error(predict(fit2, newdata = nd), class = "lmmr_error_new_levels")
})

test_that("anova(), summary() and contest() argument checks", {
  d <- rob_data()
  fit <- lmm(y ~ x + h + (1 | g), data = d)
  expect_error(anova(fit, type = 4), class = "lmmr_error_argument")
  expect_error(anova(fit, ddf = "foo"), class = "lmmr_error_ddf")
  expect_error(summary(fit, ddf = "foo"), class = "lmmr_error_ddf")
  expect_error(summary(fit, ddf = NA), class = "lmmr_error_ddf")
  expect_error(summary(update(fit, REML = FALSE), ddf = "Kenward-Roger"),
               class = "lmmr_error_reml_required")
  expect_error(anova(fit, lmm(y ~ x + (1 | g), data = d[1:50, ])),
               class = "lmmr_error_data_mismatch")
  d$y2 <- d$y + 1
  expect_error(anova(fit, lmm(y2 ~ x + (1 | g), data = d)),
               class = "lmmr_error_data_mismatch")
  expect_error(contest(fit, c(0, 1, NA, 0)), class = "lmmr_error_contrast")
  expect_error(contest(fit, c(0, Inf, 0, 0)), class = "lmmr_error_contrast")
  expect_error(contest(fit, c(0, 1)), class = "lmmr_error_contrast")
  expect_error(contest(fit, "x"), class = "lmmr_error_contrast")
  L <- diag(4)[2:3, ]
  L[1, 1] <- NA
  expect_error(contest(fit, L), class = "lmmr_error_contrast")
  expect_error(contest(fit, diag(4)[, 1:3]), class = "lmmr_error_contrast")
})

test_that("Kenward-Roger and Satterthwaite on a singular fit match lmerTest", {
  skip_if_not_installed("lmerTest")
  d <- rob_data()
  d <- d[d$h != "3", ]
  fit <- suppressMessages(lmm(y ~ x + (1 | h), data = d))
  expect_true(is_singular(fit))
  ref <- suppressMessages(lmerTest::lmer(y ~ x + (1 | h), data = d))
  for (ddf in c("Satterthwaite", "Kenward-Roger")) {
    expect_equal(unname(coef(summary(fit, ddf = ddf))),
                 unname(coef(summary(ref, ddf = ddf))), tolerance = 1e-4, info = ddf)
  }
})

test_that("confint() argument checks", {
  d <- rob_data()
  fit <- lmm(y ~ x + h + (1 | g), data = d)
  for (lev in list(2, NA, -0.5, c(0.9, 0.95), "0.95", 1)) {
    expect_error(confint(fit, level = lev), class = "lmmr_error_argument")
  }
  expect_error(confint(fit, parm = "zz"), class = "lmmr_error_argument")
  expect_error(confint(fit, parm = 99), class = "lmmr_error_argument")
  expect_equal(rownames(confint(fit, parm = 2)), "x")
})

test_that("icc() and r2() on singular fits warn and stay at the boundary", {
  d <- rob_data()
  fit <- suppressMessages(lmm(y ~ x + (1 | h), data = d[d$h != "3", ]))
  expect_warning(ic <- icc(fit), class = "lmmr_warning")
  expect_true(all(unlist(ic[vapply(ic, is.numeric, logical(1))]) >= 0, na.rm = TRUE))
  expect_s3_class(r2(fit), "lmm_r2")
})

test_that("boxcox() refuses non-positive responses and bad lambda", {
  d <- rob_data()
  fit <- lmm(y ~ x + (1 | g), data = d)
  expect_error(boxcox(fit), class = "lmmr_error_nonpositive_response")
  d$yp <- exp(d$y)
  d$yp[1] <- 0
  expect_error(boxcox(lmm(yp ~ x + (1 | g), data = d)),
               class = "lmmr_error_nonpositive_response")
  d$yp <- exp(d$y)
  fit <- lmm(yp ~ x + (1 | g), data = d)
  for (lam in list(NA, 1, c(1, NA, 2), "a")) {
    expect_error(boxcox(fit, lambda = lam), class = "lmmr_error_argument")
  }
  expect_error(boxcox(lm(yp ~ x, data = d)), class = "lmmr_error")
})

test_that("simulate() and refit() argument checks", {
  d <- rob_data()
  fit <- lmm(y ~ x + h + (1 | g), data = d)
  for (ns in list(0, -1, NA, "a")) {
    expect_error(simulate(fit, nsim = ns), class = "lmmr_error_argument")
  }
  expect_identical(simulate(fit, nsim = 2, seed = 1), simulate(fit, nsim = 2, seed = 1))
  expect_error(simulate(fit, re.form = ~ (1 | zz)), class = "lmmr_error_argument")
  expect_error(refit(fit, 1:3), class = "lmmr_error_argument")
  expect_error(refit(fit, c(NA, d$y[-1])), class = "lmmr_error_non_finite")
  expect_error(refit(fit, "a"), class = "lmmr_error_argument")
  expect_equal(fixef(refit(fit, d$y)), fixef(fit), tolerance = 1e-8)
})

test_that("plot() argument checks", {
  d <- rob_data()
  fit <- lmm(y ~ x + (1 | g), data = d)
  grDevices::pdf(NULL)
  on.exit(grDevices::dev.off())
  expect_error(plot(fit, which = 9), class = "lmmr_error_argument")
  expect_error(plot(fit, which = "foo"), class = "lmmr_error_argument")
  expect_error(plot(fit, which = NA), class = "lmmr_error_argument")
})

test_that("a saved and restored fit supports the methods that need no data", {
  d <- rob_data()
  fit <- lmm(y ~ x + h + (x | g), data = d, weights = rep(1:2, 30))
  path <- tempfile(fileext = ".rds")
  saveRDS(fit, path)
  back <- readRDS(path)
  unlink(path)
  expect_equal(fixef(back), fixef(fit))
  expect_equal(as.numeric(logLik(back)), as.numeric(logLik(fit)))
  expect_equal(coef(summary(back, ddf = "Kenward-Roger")),
               coef(summary(fit, ddf = "Kenward-Roger")))
  expect_equal(anova(back), anova(fit))
  expect_equal(confint(back), confint(fit))
  expect_equal(predict(back, newdata = data.frame(x = 1, h = "2", g = "3")),
               predict(fit, newdata = data.frame(x = 1, h = "2", g = "3")))
  expect_equal(contest(back, c(0, 1, 0, 0)), contest(fit, c(0, 1, 0, 0)))
  expect_equal(simulate(back, seed = 3), simulate(fit, seed = 3))
  for (f in list(ranef, VarCorr, coef, fitted, residuals, vcov, sigma, nobs,
                 model.matrix, icc, r2, is_singular, ranef_std)) {
    expect_equal(f(back), f(fit))
  }
  expect_equal(as.data.frame(model.frame(back)), as.data.frame(model.frame(fit)),
               ignore_attr = TRUE)
})

test_that("fixed random designs match lme4 (REML and ML, weights)", {
  skip_if_not_installed("lme4")
  designs <- list(
    list(y ~ x1 + (1 | g1), TRUE), list(y ~ x1 + x2 + (x1 | g1), FALSE),
    list(y ~ 1 + (0 + x1 | g1), TRUE), list(y ~ x1 + (x1 | g1) + (1 | g2), TRUE),
    list(y ~ fc + (1 | g1:g2), FALSE), list(y ~ x1 + x3 + (1 | g1) + (1 | g2), FALSE),
    list(y ~ x2 + (fc | g1), TRUE)
  )
  for (i in seq_along(designs)) {
    set.seed(100 + i)
    n <- 120
    D <- data.frame(g1 = factor(sample(12, n, TRUE)), g2 = factor(sample(6, n, TRUE)),
                    x1 = rnorm(n), x2 = rnorm(n, 5, 3), x3 = rnorm(n),
                    fc = factor(sample(letters[1:3], n, TRUE)))
    D$y <- 2 + 0.5 * D$x1 + rnorm(12)[D$g1] + 0.4 * rnorm(12)[D$g1] * D$x1 +
      0.7 * rnorm(6)[D$g2] + rnorm(n)
    w <- if (i %% 2 == 0) runif(n, 0.5, 2) else NULL
    fit <- suppressMessages(lmm(designs[[i]][[1]], data = D, REML = designs[[i]][[2]],
                                weights = w))
    ref <- suppressMessages(suppressWarnings(lme4::lmer(
      designs[[i]][[1]], data = D, REML = designs[[i]][[2]], weights = w)))
    crit_ref <- rob_crit_lme4(ref)
    expect_lte((rob_crit(fit) - crit_ref) / abs(crit_ref), 1e-7)
    expect_equal(fixef(fit), lme4::fixef(ref), tolerance = 1e-4)
    expect_equal(as.data.frame(VarCorr(fit))$vcov,
                 as.data.frame(lme4::VarCorr(ref))$vcov, tolerance = 1e-3)
  }
})
