# Random-effects terms: factors, per-term model matrices, order, checks, newdata.

design_quiet <- function(formula, data, ...) {
  suppressWarnings(suppressMessages(h_model_design(formula, data = data, ...)))
}

lformula_quiet <- function(formula, data, ...) {
  suppressWarnings(suppressMessages(lme4::lFormula(formula, data = data, ...)))
}

# Compare our random-effects structure with lme4::lFormula().
expect_re_like_lme4 <- function(formula, data) {
  d <- design_quiet(formula, data)
  lf <- lformula_quiet(formula, data)
  info <- h_deparse(formula)
  cnms <- lapply(d$re$terms, `[[`, "cnms")
  names(cnms) <- vapply(d$re$terms, `[[`, "", "group")
  expect_identical(cnms, lf$reTrms$cnms, info = info)
  fl <- h_re_flist(d$re)
  expect_identical(names(fl), names(lf$reTrms$flist), info = info)
  expect_identical(lapply(fl, levels), lapply(lf$reTrms$flist, levels), info = info)
  expect_identical(attr(fl, "assign"), attr(lf$reTrms$flist, "assign"), info = info)
  expect_identical(
    vapply(d$re$terms, `[[`, 0L, "n_levels"),
    unname(as.integer(lf$reTrms$nl)),
    info = info
  )
  Z_ref <- t(as.matrix(lf$reTrms$Zt))
  Z <- h_re_dense_Z(d$re)
  expect_identical(dim(Z), dim(Z_ref), info = info)
  expect_equal(unname(Z), unname(Z_ref), tolerance = 1e-12, info = info)
  expect_identical(colnames(Z), rownames(lf$reTrms$Zt), info = info)
  expect_identical(d$re$q, nrow(lf$reTrms$Zt), info = info)
  expect_identical(
    vapply(d$re$terms, `[[`, "", "term_name"),
    names(lf$reTrms$Ztlist),
    info = info
  )
  invisible(d)
}

sim_data <- function(seed = 1) {
  set.seed(seed)
  n <- 120
  d <- data.frame(
    x = rnorm(n),
    z = runif(n),
    f = factor(sample(c("lo", "mid", "hi"), n, TRUE), levels = c("lo", "mid", "hi")),
    g = factor(rep(sprintf("g%02d", 1:12), each = 10)),
    h = rep(1:8, length.out = n),
    a = factor(rep(c("A", "B", "C"), each = 40)),
    b = factor(rep(rep(1:4, each = 10), 3)),
    o = rnorm(n, sd = 0.1)
  )
  d$y <- d$x + as.integer(d$g) / 5 + rnorm(n)
  d
}

test_that("random-effects structure matches lme4 on the classic data sets", {
  skip_if_not_installed("lme4")
  sleepstudy <- lme4::sleepstudy
  expect_re_like_lme4(Reaction ~ Days + (Days | Subject), sleepstudy)
  expect_re_like_lme4(Reaction ~ Days + (1 | Subject), sleepstudy)
  expect_re_like_lme4(Reaction ~ Days + (1 + Days | Subject), sleepstudy)
  expect_re_like_lme4(Reaction ~ Days + (0 + Days | Subject), sleepstudy)
  expect_re_like_lme4(Reaction ~ Days + (-1 + Days | Subject), sleepstudy)
  expect_re_like_lme4(Reaction ~ Days + (Days || Subject), sleepstudy)
  expect_re_like_lme4(Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), sleepstudy)
  expect_re_like_lme4(diameter ~ (1 | plate) + (1 | sample), lme4::Penicillin)
  expect_re_like_lme4(diameter ~ (1 | sample) + (1 | plate), lme4::Penicillin)
  expect_re_like_lme4(strength ~ (1 | batch / cask), lme4::Pastes)
  expect_re_like_lme4(strength ~ (1 | batch) + (1 | batch:cask), lme4::Pastes)
  expect_re_like_lme4(angle ~ recipe * temperature + (1 | recipe:replicate), lme4::cake)
  expect_re_like_lme4(angle ~ temp + (1 | replicate / recipe), lme4::cake)
})

test_that("random-effects structure matches lme4 for slopes, factors and functions", {
  skip_if_not_installed("lme4")
  d <- sim_data()
  expect_re_like_lme4(y ~ x + (x | g), d)
  expect_re_like_lme4(y ~ x + (x || g), d)
  expect_re_like_lme4(y ~ x + (x + z || g), d)
  expect_re_like_lme4(y ~ x + (0 + f | g), d)
  expect_re_like_lme4(y ~ x + (f | g), d)
  expect_re_like_lme4(y ~ x + (f || g), d)
  expect_re_like_lme4(y ~ x + (I(x^2) | g), d)
  expect_re_like_lme4(y ~ poly(x, 2) + (poly(x, 2) | g), d)
  expect_re_like_lme4(y ~ x + (scale(z) | g), d)
  expect_re_like_lme4(y ~ x + (x | g) + (1 | h), d)
  expect_re_like_lme4(y ~ x + (1 | h) + (x | g), d)
  expect_re_like_lme4(y ~ x + (1 | a / b), d)
  expect_re_like_lme4(y ~ x + (x | a / b), d)
  expect_re_like_lme4(y ~ x + (1 | a:b), d)
  expect_re_like_lme4(y ~ x + (1 | g) + (1 | a) + (1 | h) + (0 + x | g), d)
  expect_re_like_lme4(y ~ x + offset(o) + (1 | g), d)
  expect_re_like_lme4(y ~ 0 + x + (x | g), d)
})

test_that("terms are ordered by decreasing number of levels, ties reversed as lme4", {
  expect_identical(h_re_order(c(18L, 18L)), 1:2)
  expect_identical(h_re_order(c(30L, 10L)), 1:2)
  expect_identical(h_re_order(c(10L, 30L)), 2:1)
  expect_identical(h_re_order(c(5L, 5L, 30L)), c(3L, 2L, 1L))
})

test_that("terms record group, factor, codes, n_levels, Z, cnms, lhs and factor_id", {
  d <- sim_data()
  des <- design_quiet(y ~ x + (1 | g) + (0 + x | g) + (1 | a), d)
  terms <- des$re$terms
  expect_length(terms, 3L)
  expect_identical(vapply(terms, `[[`, "", "group"), c("g", "g", "a"))
  expect_identical(vapply(terms, `[[`, 0L, "factor_id"), c(0L, 0L, 1L))
  t1 <- terms[[1]]
  expect_s3_class(t1$factor, "factor")
  expect_identical(t1$codes, as.integer(d$g) - 1L)
  expect_identical(t1$n_levels, 12L)
  expect_identical(t1$levels, levels(d$g))
  expect_identical(dim(t1$Z), c(nrow(d), 1L))
  expect_identical(t1$cnms, "(Intercept)")
  expect_identical(terms[[2]]$cnms, "x")
  expect_equal(terms[[2]]$Z[, 1], d$x)
  expect_s3_class(t1$lhs, "formula")
  expect_identical(h_deparse(terms[[2]]$lhs), "~0 + x")
  expect_identical(des$re$q, 12L + 12L + 3L)
})

test_that("numeric grouping variables become factors with unused levels dropped", {
  d <- sim_data()
  d$g <- factor(d$g, levels = c(levels(d$g), "unused"))
  des <- design_quiet(y ~ x + (1 | g) + (1 | h), d)
  groups <- vapply(des$re$terms, `[[`, "", "group")
  expect_false("unused" %in% des$re$terms[[which(groups == "g")]]$levels)
  th <- des$re$terms[[which(groups == "h")]]
  expect_identical(th$levels, as.character(1:8))
})

test_that("interaction levels look like lme4's ('1:A')", {
  d <- sim_data()
  des <- design_quiet(y ~ x + (1 | b:a), d)
  expect_identical(des$re$terms[[1]]$levels[1:3], c("1:A", "1:B", "1:C"))
  expect_identical(des$re$terms[[1]]$group, "b:a")
})

test_that("h_interaction() orders levels by the first then the second factor", {
  f <- h_interaction(factor(c("b", "a", "b", "a")), factor(c("2", "2", "1", "1")))
  expect_identical(levels(f), c("a:1", "a:2", "b:1", "b:2"))
  expect_identical(as.character(f), c("b:2", "a:2", "b:1", "a:1"))
})

test_that("grouping factors with one level are errors of kind 'grouping'", {
  d <- sim_data()
  d$one <- "only"
  expect_error(design_quiet(y ~ x + (1 | one), d), class = "lmmr_error_grouping")
})

test_that("grouping factors with as many levels as observations are errors", {
  d <- sim_data()
  d$id <- seq_len(nrow(d))
  expect_error(design_quiet(y ~ x + (1 | id), d), class = "lmmr_error_grouping")
  expect_error(design_quiet(y ~ x + (1 | id), d), "must be < number of observations")
})

test_that("too many random effects is an error of kind 'too_many_re'", {
  d <- sim_data()[1:30, ]
  d$g2 <- factor(rep(1:10, each = 3))
  expect_error(design_quiet(y ~ x + (x + z | g2), d), class = "lmmr_error_too_many_re")
})

test_that("Inf in the random-effects model matrix is an error of kind 'non_finite'", {
  d <- sim_data()
  d$z[3] <- Inf
  expect_error(design_quiet(y ~ x + (z | g), d), class = "lmmr_error_non_finite")
})

test_that("a model without random terms is an error of kind 'formula'", {
  expect_error(h_re_terms(list(), data.frame(y = 1)), class = "lmmr_error_formula")
})

test_that("h_newdata_re() maps groups to the original levels and rebuilds Z", {
  d <- sim_data()
  des <- design_quiet(y ~ x + (poly(x, 2) | g) + (1 | b:a), d)
  nd <- d[c(5, 17, 99), ]
  re <- h_newdata_re(des$re, nd)
  expect_length(re, 2L)
  expect_identical(re[[1]]$codes, des$re$terms[[1]]$codes[c(5, 17, 99)])
  expect_identical(re[[2]]$codes, des$re$terms[[2]]$codes[c(5, 17, 99)])
  # poly() is evaluated with the coefficients of the fit (predvars)
  expect_equal(re[[1]]$Z, des$re$terms[[1]]$Z[c(5, 17, 99), ], ignore_attr = TRUE)
  expect_identical(colnames(re[[1]]$Z), des$re$terms[[1]]$cnms)
})

test_that("h_newdata_re() rebuilds scale() and factor slopes consistently", {
  d <- sim_data()
  des <- design_quiet(y ~ x + (scale(z) | g) + (0 + f | a), d)
  nd <- d[c(2, 50), ]
  nd$f <- as.character(nd$f)
  re <- h_newdata_re(des$re$terms, nd)
  groups <- vapply(des$re$terms, `[[`, "", "group")
  for (i in seq_along(re)) {
    expect_equal(re[[i]]$Z, des$re$terms[[i]]$Z[c(2, 50), , drop = FALSE], ignore_attr = TRUE)
  }
})

test_that("new levels are errors of kind 'new_levels' unless allowed", {
  d <- sim_data()
  des <- design_quiet(y ~ x + (1 | g), d)
  nd <- data.frame(x = c(0, 1), g = c("g01", "zzz"))
  expect_error(h_newdata_re(des$re, nd), class = "lmmr_error_new_levels")
  expect_error(h_newdata_re(des$re, nd), "zzz")
  re <- h_newdata_re(des$re, nd, allow_new_levels = TRUE)
  expect_identical(re[[1]]$codes, c(0L, NA))
})

test_that("NA grouping values in new data are errors unless new levels are allowed", {
  d <- sim_data()
  des <- design_quiet(y ~ x + (1 | g), d)
  nd <- data.frame(x = c(0, 1), g = c("g01", NA))
  expect_error(h_newdata_re(des$re, nd), "NAs are not allowed in prediction data")
  re <- h_newdata_re(des$re, nd, allow_new_levels = TRUE)
  expect_identical(re[[1]]$codes, c(0L, NA))
})

test_that("h_newdata_re() works with terms stored under $info (fitted object layout)", {
  d <- sim_data()
  des <- design_quiet(y ~ x + (x | g), d)
  t <- des$re$terms[[1]]
  stored <- list(
    group = t$group, cnms = t$cnms, levels = t$levels, lhs = t$lhs,
    info = t[setdiff(names(t), c("factor", "codes", "Z"))]
  )
  re <- h_newdata_re(list(stored), d[1:4, ])
  expect_identical(re[[1]]$codes, t$codes[1:4])
  expect_equal(re[[1]]$Z, t$Z[1:4, ], ignore_attr = TRUE)
})

test_that("h_term_dense_Z() uses level-major then covariate columns", {
  Z <- cbind(1, c(10, 20, 30))
  out <- h_term_dense_Z(c(1L, 0L, 1L), Z, 2L)
  expect_identical(dim(out), c(3L, 4L))
  expect_equal(out[1, ], c(0, 0, 1, 10))
  expect_equal(out[2, ], c(1, 20, 0, 0))
})

test_that("three-level nesting (1 | a/b/c) matches lme4", {
  skip_if_not_installed("lme4")
  set.seed(3)
  d <- data.frame(y = rnorm(96), a = gl(2, 48), b = gl(4, 12, 96), c = gl(3, 4, 96), x = rnorm(96))
  des <- expect_re_like_lme4(y ~ x + (1 | a / b / c), d)
  expect_identical(
    vapply(des$re$terms, `[[`, "", "group"),
    c("c:(b:a)", "b:a", "a")
  )
})

test_that("newdata designs reproduce lme4's predictions (poly(), nesting)", {
  skip_if_not_installed("lme4")
  predict_with <- function(des, m, nd) {
    eta <- drop(h_newdata_X(des, nd)$X %*% lme4::fixef(m))
    re <- h_newdata_re(des$re, nd)
    rl <- lme4::ranef(m)
    for (i in seq_along(re)) {
      t <- des$re$terms[[i]]
      b <- as.matrix(rl[[t$group]])[, t$cnms, drop = FALSE]
      eta <- eta + rowSums(re[[i]]$Z * b[re[[i]]$codes + 1L, , drop = FALSE])
    }
    eta
  }
  f <- Reaction ~ poly(Days, 2) + (poly(Days, 2) | Subject)
  s <- lme4::sleepstudy
  m <- suppressWarnings(lme4::lmer(f, s))
  des <- design_quiet(f, s)
  nd <- data.frame(Days = c(0.5, 10, 3), Subject = c("308", "309", "372"))
  expect_equal(unname(predict_with(des, m, nd)), unname(predict(m, nd)), tolerance = 1e-10)

  f2 <- strength ~ (1 | batch / cask)
  m2 <- lme4::lmer(f2, lme4::Pastes)
  des2 <- design_quiet(f2, lme4::Pastes)
  nd2 <- lme4::Pastes[c(1, 17, 60), ]
  expect_equal(unname(predict_with(des2, m2, nd2)), unname(predict(m2, nd2)), tolerance = 1e-10)
})
