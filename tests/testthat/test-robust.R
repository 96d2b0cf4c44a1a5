# Cluster-robust covariance CR0-CR3 and Satterthwaite (Bell-McCaffrey) df.
# References: clubSandwich 0.5.8 vcovCR() / coef_test(test =
# "Satterthwaite") on the equivalent lme4 1.1-31 lmer fit.

nested_data <- function() {
  set.seed(1)
  d <- data.frame(school = factor(rep(1:12, times = sample(8:15, 12, TRUE))))
  d$class <- factor(paste(d$school, sample(1:3, nrow(d), TRUE)))
  d$x <- rnorm(nrow(d))
  d$z <- rbinom(nrow(d), 1, 0.5)
  d$y <- 1 + 0.5 * d$x + rnorm(12)[d$school] + rnorm(nlevels(d$class))[d$class] +
    rnorm(nrow(d))
  d
}

test_that("vcov(type = CR*) and summary(vcov = ) equal clubSandwich on sleepstudy", {
  skip_if_not_installed("clubSandwich")
  skip_if_not_installed("lme4")
  fit <- lmm(Reaction ~ Days + (Days | Subject), data = sleepstudy)
  m <- lme4::lmer(Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy)
  for (ty in c("CR0", "CR1", "CR1p", "CR1S", "CR2", "CR3")) {
    ref <- as.matrix(clubSandwich::vcovCR(m, type = ty))
    # measured: relative difference < 2e-13 for every type
    expect_equal(vcov(fit, type = ty), ref, tolerance = 1e-6, ignore_attr = TRUE)
    ct <- clubSandwich::coef_test(m, vcov = ty, test = "Satterthwaite")
    co <- coef(summary(fit, vcov = ty))
    expect_equal(unname(co[, "Std. Error"]), ct$SE, tolerance = 1e-6)
    expect_equal(unname(co[, "df"]), ct$df_Satt, tolerance = 1e-6)
    expect_equal(unname(co[, "Pr(>|t|)"]), ct$p_Satt, tolerance = 1e-6)
  }
  expect_equal(colnames(coef(summary(fit, vcov = "CR2"))),
               c("Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"))
  # model-based covariance unchanged
  expect_identical(vcov(fit), fit$vcov)
})

test_that("CR2 with two nested grouping factors and an unbalanced design equals clubSandwich", {
  skip_if_not_installed("clubSandwich")
  skip_if_not_installed("lme4")
  d <- nested_data()
  fit <- lmm(y ~ x * z + (1 | school) + (1 | class), data = d)
  m <- lme4::lmer(y ~ x * z + (1 | school) + (1 | class), data = d)
  for (ty in c("CR0", "CR1", "CR2", "CR3")) {
    # measured: relative differences 1.2e-8 (vcov) and 1e-9 (df), from the
    # estimates of the two fits
    expect_equal(vcov(fit, type = ty), as.matrix(clubSandwich::vcovCR(m, type = ty)),
                 tolerance = 1e-6, ignore_attr = TRUE)
    ct <- clubSandwich::coef_test(m, vcov = ty, test = "Satterthwaite")
    expect_equal(unname(coef(summary(fit, vcov = ty))[, "df"]), ct$df_Satt, tolerance = 1e-6)
  }
  # the default cluster is the grouping factor with the fewest levels
  expect_equal(vcov(fit, type = "CR2"), vcov(fit, type = "CR2", cluster = "school"))
  expect_equal(vcov(fit, type = "CR2"), vcov(fit, type = "CR2", cluster = d$school))
  # a random-intercept model clustered on schools, explicit cluster
  f1 <- lmm(y ~ x + (1 | school), data = d)
  m1 <- lme4::lmer(y ~ x + (1 | school), data = d)
  expect_equal(vcov(f1, type = "CR2", cluster = d$school),
               as.matrix(clubSandwich::vcovCR(m1, type = "CR2", cluster = d$school)),
               tolerance = 1e-6, ignore_attr = TRUE)
})

test_that("CR2 with prior weights equals a dense computation", {
  d <- nested_data()
  d$w <- runif(nrow(d), 0.5, 2)
  fit <- lmm(y ~ x + (1 | school), data = d, weights = w)
  # dense reference: V = Z G Z' + diag(1/w) (relative to sigma^2)
  X <- model.matrix(fit)
  Z <- model.matrix(fit, type = "random")
  V <- Z %*% (VarCorr(fit)$school[1, 1] / sigma(fit)^2 * diag(ncol(Z))) %*% t(Z) +
    diag(1 / d$w)
  W <- solve(V)
  M <- solve(t(X) %*% W %*% X)
  e <- d$y - drop(X %*% fixef(fit))
  meat <- matrix(0, 2, 2)
  for (g in levels(d$school)) {
    r <- which(d$school == g)
    Vj <- V[r, r]
    Rj <- chol(Vj)
    Gj <- Rj %*% (Vj - X[r, ] %*% M %*% t(X[r, ])) %*% t(Rj)
    ev <- eigen(Gj, symmetric = TRUE)
    Aj <- t(Rj) %*% ev$vectors %*% diag(1 / sqrt(ev$values)) %*% t(ev$vectors) %*% Rj
    u <- t(X[r, ]) %*% W[r, r] %*% Aj %*% e[r]
    meat <- meat + u %*% t(u)
  }
  expect_equal(vcov(fit, type = "CR2"), M %*% meat %*% M, tolerance = 1e-8,
               ignore_attr = TRUE)
})

test_that("cluster-robust covariance: bad input is a classed error; printing", {
  d <- nested_data()
  fit <- lmm(y ~ x + (1 | school) + (1 | class), data = d)
  # clusters that split a grouping factor: not nested
  expect_error(vcov(fit, type = "CR2", cluster = d$z), class = "lmmr_error_argument")
  expect_error(vcov(fit, type = "CR2", cluster = rep(1, nrow(d))), class = "lmmr_error_argument")
  expect_error(vcov(fit, type = "CR2", cluster = d$school[-1]), class = "lmmr_error_argument")
  expect_error(vcov(fit, type = "CR2", cluster = "nope"), class = "lmmr_error_argument")
  expect_error(vcov(fit, type = "HC3"), class = "lmmr_error_argument")
  expect_error(summary(fit, vcov = "CR9"), class = "lmmr_error_argument")
  crossed <- lmm(Reaction ~ Days + (1 | Subject) + (1 | Days), data = sleepstudy)
  expect_error(vcov(crossed, type = "CR2"), class = "lmmr_error_argument")
  expect_output(print(summary(fit, vcov = "CR2")), "cluster-robust CR2 standard errors, 12 clusters")
  expect_equal(vcov(summary(fit, vcov = "CR2")), vcov(fit, type = "CR2"))
  expect_warning(summary(fit, vcov = "CR2", ddf = "Kenward-Roger"),
                 class = "lmmr_warning_unused_argument")
})
