# Model frame, fixed-effects design, checks and newdata.

mf_sim_data <- function(seed = 2) {
  set.seed(seed)
  n <- 100
  d <- data.frame(
    x = rnorm(n),
    z = runif(n),
    f = factor(sample(c("a", "b", "c"), n, TRUE)),
    g = factor(rep(sprintf("s%02d", 1:10), each = 10)),
    o = rnorm(n, sd = 0.1),
    w = runif(n, 0.5, 2)
  )
  d$y <- d$x + as.integer(d$g) / 3 + rnorm(n)
  d
}

design_q <- function(...) suppressWarnings(suppressMessages(h_model_design(...)))

test_that("h_model_design() returns the documented structure", {
  d <- mf_sim_data()
  des <- design_q(y ~ x + (1 | g), data = d)
  expect_named(
    des,
    c(
      "y", "X", "dropped", "X_full_colnames", "weights", "offset", "has_offset",
      "has_weights", "re", "frame", "fixed_formula", "fixed_terms", "xlevels", "contrasts",
      "formula", "na_action", "n", "n_obs"
    )
  )
  expect_identical(des$n, 100L)
  expect_equal(unname(des$y), d$y)
  expect_identical(colnames(des$X), c("(Intercept)", "x"))
  expect_identical(attr(des$X, "assign"), c(0L, 1L))
  expect_identical(des$dropped, character())
  expect_identical(des$weights, rep(1, 100))
  expect_identical(des$offset, rep(0, 100))
  expect_false(des$has_weights)
  expect_s3_class(des$frame, "data.frame")
  expect_s3_class(des$fixed_terms, "terms")
  expect_identical(h_deparse(des$fixed_formula), "y ~ x")
  expect_null(des$na_action)
})

test_that("X matches lme4::lFormula()", {
  skip_if_not_installed("lme4")
  d <- mf_sim_data()
  cases <- list(
    y ~ x + (1 | g),
    y ~ x * f + (1 | g),
    y ~ 0 + f + x + (1 | g),
    y ~ -1 + x + (x | g),
    y ~ f:x + (1 | g),
    y ~ poly(x, 2) + scale(z) + I(z^2) + (1 | g),
    y ~ x + offset(o) + (1 | g),
    y ~ (1 | g)
  )
  for (f in cases) {
    des <- design_q(f, data = d)
    lf <- suppressMessages(lme4::lFormula(f, data = d))
    expect_equal(des$X, lf$X, ignore_attr = TRUE, info = h_deparse(f))
    expect_identical(colnames(des$X), colnames(lf$X), info = h_deparse(f))
    expect_identical(attr(des$X, "assign"), attr(lf$X, "assign"), info = h_deparse(f))
    expect_equal(unname(des$y), unname(lf$fr[[1]]), info = h_deparse(f))
  }
})

test_that("X uses the contrasts argument as model.matrix() does", {
  skip_if_not_installed("lme4")
  d <- mf_sim_data()
  ctr <- list(f = "contr.sum")
  des <- design_q(y ~ f + (1 | g), data = d, contrasts = ctr)
  lf <- lme4::lFormula(y ~ f + (1 | g), data = d, contrasts = ctr)
  expect_equal(des$X, lf$X, ignore_attr = TRUE)
  expect_identical(colnames(des$X), colnames(lf$X))
  expect_identical(des$contrasts, list(f = "contr.sum"))
})

test_that("rank-deficient X drops aliased columns as lme4 with a message", {
  skip_if_not_installed("lme4")
  s <- lme4::sleepstudy
  s$Days2 <- 2 * s$Days
  expect_message(
    des <- h_model_design(Reaction ~ Days + Days2 + (1 | Subject), data = s),
    class = "lmmr_message_rank_deficient"
  )
  expect_message(
    h_model_design(Reaction ~ Days + Days2 + (1 | Subject), data = s),
    "rank deficient so dropping 1 column / coefficient \\(Days2\\)"
  )
  lf <- suppressMessages(lme4::lFormula(Reaction ~ Days + Days2 + (1 | Subject), data = s))
  expect_equal(des$X, lf$X, ignore_attr = TRUE)
  expect_identical(colnames(des$X), colnames(lf$X))
  expect_identical(attr(des$X, "assign"), attr(lf$X, "assign"))
  expect_identical(des$dropped, "Days2")
  expect_identical(des$X_full_colnames, c("(Intercept)", "Days", "Days2"))
})

test_that("rank deficiency from empty factor cells drops the aliased interaction columns", {
  skip_if_not_installed("lme4")
  d <- mf_sim_data()
  d$f2 <- factor(ifelse(d$f == "a", "p", sample(c("p", "q"), nrow(d), TRUE)))
  d$f3 <- interaction(d$f, d$f2)
  d$dup <- d$x
  f <- y ~ f * f2 + dup + x + (1 | g)
  des <- suppressMessages(h_model_design(f, data = d))
  lf <- suppressMessages(lme4::lFormula(f, data = d))
  expect_identical(colnames(des$X), colnames(lf$X))
  expect_identical(attr(des$X, "assign"), attr(lf$X, "assign"))
  expect_identical(des$dropped, names(attr(lf$X, "col.dropped")))
})

test_that("h_drop_rank_deficient() keeps full-rank matrices unchanged", {
  X <- cbind(1, 1:5)
  expect_silent(out <- h_drop_rank_deficient(X))
  expect_identical(out$X, X)
  expect_identical(out$dropped, character())
})

test_that("a missing data object is an error of kind 'data' naming it", {
  f <- y ~ x + (1 | g)
  expect_error(h_model_design(f, data = quote(ddd_does_not_exist)), class = "lmmr_error_data")
  expect_error(h_model_design(f, data = quote(ddd_does_not_exist)), "ddd_does_not_exist")
  expect_error(h_model_design(f, data = 42), class = "lmmr_error_data")
})

test_that("a missing variable is an error of kind 'data'", {
  d <- mf_sim_data()
  expect_error(h_model_design(y ~ nope + (1 | g), data = d), class = "lmmr_error_data")
  expect_error(h_model_design(y ~ x + (1 | nope_group), data = d), class = "lmmr_error_data")
})

test_that("bad responses are errors of kind 'response'", {
  d <- mf_sim_data()
  d$yf <- factor(d$y > 0)
  d$yc <- as.character(d$y)
  d$yl <- d$y > 0
  d$yi <- d$y
  d$yi[4] <- Inf
  expect_error(h_model_design(yf ~ x + (1 | g), data = d), class = "lmmr_error_response")
  expect_error(h_model_design(yc ~ x + (1 | g), data = d), class = "lmmr_error_response")
  # a logical response is 0/1, as in lme4 (issue 16)
  expect_identical(design_q(yl ~ x + (1 | g), data = d)$y, as.numeric(d$yl))
  expect_error(h_model_design(cbind(y, x) ~ z + (1 | g), data = d), class = "lmmr_error_response")
  expect_error(h_model_design(yi ~ x + (1 | g), data = d), class = "lmmr_error_response")
  expect_error(h_model_design(~ x + (1 | g), data = d), class = "lmmr_error_response")
})

test_that("Inf in X is an error of kind 'non_finite'", {
  d <- mf_sim_data()
  d$x[7] <- Inf
  expect_error(h_model_design(y ~ x + (1 | g), data = d), class = "lmmr_error_non_finite")
  d <- mf_sim_data()
  d$z[7] <- -Inf
  expect_error(h_model_design(y ~ x + (z | g), data = d), class = "lmmr_error_non_finite")
})

test_that("no rows left is an error of kind 'no_data'", {
  d <- mf_sim_data()
  d$x <- NA_real_
  expect_error(h_model_design(y ~ x + (1 | g), data = d), class = "lmmr_error_no_data")
  d <- mf_sim_data()
  expect_error(
    h_model_design(y ~ x + (1 | g), data = d, subset = quote(x > 100)),
    class = "lmmr_error_no_data"
  )
})

test_that("formula errors are of kind 'formula'", {
  d <- mf_sim_data()
  expect_error(h_model_design(y ~ x, data = d), class = "lmmr_error_formula")
  expect_error(h_model_design(y ~ x + (1 | g * f), data = d), class = "lmmr_error_formula")
  expect_error(h_model_design(y ~ x | g + z, data = d), class = "lmmr_error_formula")
})

test_that("bad weights are errors of kind 'argument'", {
  d <- mf_sim_data()
  expect_error(
    h_model_design(y ~ x + (1 | g), data = d, weights = -d$w),
    class = "lmmr_error_argument"
  )
  expect_error(
    h_model_design(y ~ x + (1 | g), data = d, weights = rep("a", 100)),
    class = "lmmr_error_argument"
  )
  expect_error(
    h_model_design(y ~ x + (1 | g), data = d, offset = rep("a", 100)),
    class = "lmmr_error_argument"
  )
})

test_that("NA weights drop the row as in lme4 (na.omit), or fail with na.fail", {
  d <- mf_sim_data()
  w <- d$w
  w[3] <- NA
  des <- design_q(y ~ x + (1 | g), data = d, weights = w)
  expect_identical(des$n, 99L)
  expect_equal(des$weights, d$w[-3])
  expect_error(
    h_model_design(y ~ x + (1 | g), data = d, weights = w, na.action = na.fail),
    class = "lmmr_error_data"
  )
})

test_that("subset and weights are evaluated in the data, then in env", {
  d <- mf_sim_data()
  des <- design_q(y ~ x + (1 | g), data = d, subset = quote(z > 0.3), weights = quote(w))
  keep <- d$z > 0.3
  expect_identical(des$n, sum(keep))
  expect_equal(des$weights, d$w[keep])
  expect_true(des$has_weights)
  local({
    ww <- rep(2, 100)
    env <- environment()
    des2 <- design_q(y ~ x + (1 | g), data = d, weights = quote(ww), env = env)
    expect_equal(des2$weights, rep(2, 100))
  })
  # values are accepted too
  des3 <- design_q(y ~ x + (1 | g), data = d, subset = d$z > 0.3, weights = d$w)
  expect_equal(des3$weights, d$w[keep])
})

test_that("subset and weights agree with lme4 (same rows, same weights)", {
  skip_if_not_installed("lme4")
  d <- mf_sim_data()
  des <- design_q(y ~ x + (1 | g), data = d, subset = quote(z > 0.3), weights = quote(w))
  lf <- lme4::lFormula(y ~ x + (1 | g), data = d, subset = z > 0.3, weights = w)
  expect_equal(des$X, lf$X, ignore_attr = TRUE)
  expect_equal(des$weights, unname(lf$fr[["(weights)"]]))
})

test_that("an evaluation error in subset or weights is of kind 'data'", {
  d <- mf_sim_data()
  expect_error(
    h_model_design(y ~ x + (1 | g), data = d, weights = quote(no_such_w)),
    class = "lmmr_error_data"
  )
})

test_that("offsets add formula offset() terms and the offset argument", {
  d <- mf_sim_data()
  des <- design_q(y ~ x + offset(o) + (1 | g), data = d, offset = quote(z))
  expect_equal(des$offset, d$o + d$z)
  des2 <- design_q(y ~ x + offset(2 * o) + (1 | g), data = d)
  expect_equal(des2$offset, 2 * d$o)
  expect_identical(colnames(des2$X), c("(Intercept)", "x"))
})

test_that("na.omit is the default and na.exclude is recorded", {
  d <- mf_sim_data()
  d$x[c(3, 10)] <- NA
  d$z[20] <- NA
  des <- design_q(y ~ x + (z | g), data = d)
  expect_identical(des$n, 97L)
  expect_s3_class(des$na_action, "omit")
  des2 <- design_q(y ~ x + (z | g), data = d, na.action = na.exclude)
  expect_s3_class(des2$na_action, "exclude")
  expect_identical(unname(as.integer(des2$na_action)), c(3L, 10L, 20L))
  expect_identical(attr(des2$frame, "na.action"), des2$na_action)
  des3 <- design_q(y ~ x + (z | g), data = d, na.action = "na.exclude")
  expect_s3_class(des3$na_action, "exclude")
  expect_error(
    h_model_design(y ~ x + (z | g), data = d, na.action = na.fail),
    class = "lmmr_error_data"
  )
})

test_that("missing values in a grouping variable drop the row", {
  d <- mf_sim_data()
  d$g[5] <- NA
  des <- design_q(y ~ x + (1 | g), data = d)
  expect_identical(des$n, 99L)
  expect_length(des$re$terms[[1]]$codes, 99L)
})

test_that("character columns become factors", {
  d <- mf_sim_data()
  d$fc <- as.character(d$f)
  d$gc <- as.character(d$g)
  des <- design_q(y ~ fc + (1 | gc), data = d)
  expect_identical(colnames(des$X), c("(Intercept)", "fcb", "fcc"))
  expect_identical(des$xlevels, list(fc = c("a", "b", "c")))
})

test_that("the stored formula is the expanded one", {
  d <- mf_sim_data()
  des <- design_q(y ~ x + (x || g), data = d)
  expect_identical(h_deparse(des$formula), "y ~ x + ((1 | g) + (0 + x | g))")
})

test_that("data may be omitted (variables from the formula environment)", {
  d <- mf_sim_data()
  y <- d$y
  x <- d$x
  g <- d$g
  des <- design_q(y ~ x + (1 | g))
  expect_identical(des$n, 100L)
})

test_that("h_newdata_X() rebuilds X (kept columns) and offsets on new data", {
  d <- mf_sim_data()
  des <- design_q(y ~ poly(x, 2) + f + offset(o) + (1 | g), data = d)
  nd <- d[c(4, 8, 15), c("x", "f", "o", "g")]
  nd$f <- as.character(nd$f)
  nx <- h_newdata_X(des, nd)
  expect_equal(nx$X, des$X[c(4, 8, 15), ], ignore_attr = TRUE)
  expect_identical(colnames(nx$X), colnames(des$X))
  expect_equal(nx$offset, d$o[c(4, 8, 15)])
})

test_that("h_newdata_X() drops the same columns as the fit", {
  d <- mf_sim_data()
  d$x2 <- 3 * d$x
  des <- suppressMessages(h_model_design(y ~ x + x2 + (1 | g), data = d))
  # the fitted object keeps only part of the design
  info <- des[c("fixed_terms", "xlevels", "contrasts", "X_full_colnames", "fixed_formula")]
  nx <- h_newdata_X(info, d[1:3, ])
  expect_identical(colnames(nx$X), c("(Intercept)", "x"))
  expect_identical(nx$offset, rep(0, 3))
})

test_that("h_newdata_X() works for an intercept-only fixed part", {
  d <- mf_sim_data()
  des <- design_q(y ~ (1 | g), data = d)
  nx <- h_newdata_X(des, d[1:4, "g", drop = FALSE])
  expect_identical(dim(nx$X), c(4L, 1L))
})

test_that("h_model_design_from_call() evaluates the call as lmm() would", {
  d <- mf_sim_data()
  fake_lmm <- function(formula, data = NULL, REML = TRUE, weights = NULL, subset,
                       na.action, offset = NULL, contrasts = NULL) {
    mc <- match.call(expand.dots = FALSE)
    h_model_design_from_call(mc, parent.frame())
  }
  des <- suppressMessages(fake_lmm(y ~ x + (1 | g), data = d, weights = w, subset = z > 0.2))
  expect_identical(des$n, sum(d$z > 0.2))
  expect_equal(des$weights, d$w[d$z > 0.2])
  expect_error(fake_lmm(y ~ x + (1 | g), data = ddd), class = "lmmr_error_data")
  expect_error(fake_lmm(y ~ x + (1 | g), data = ddd), "ddd")
  des2 <- suppressMessages(fake_lmm(y ~ x + (1 | g), data = d, na.action = na.exclude))
  expect_null(des2$na_action)
})

test_that("predictors on very different scales give lme4's warning", {
  d <- mf_sim_data()
  d$big <- d$x * 1e5
  expect_warning(
    h_model_design(y ~ big + (1 | g), data = d),
    class = "lmmr_warning_scale"
  )
})

test_that("weights and offset may name a column of the data", {
  d <- mf_sim_data()
  des <- design_q(y ~ x + (1 | g), data = d, weights = "w", offset = "o")
  expect_equal(des$weights, d$w)
  expect_equal(des$offset, d$o)
})

test_that("data may be a list", {
  d <- as.list(mf_sim_data())
  des <- design_q(y ~ x + (1 | g), data = d)
  expect_identical(des$n, 100L)
})

test_that("'.' in the fixed part expands to the data columns as lme4", {
  skip_if_not_installed("lme4")
  s <- lme4::sleepstudy
  des <- design_q(Reaction ~ . + (1 | Subject), data = s)
  lf <- lme4::lFormula(Reaction ~ . + (1 | Subject), data = s)
  expect_equal(des$X, lf$X, ignore_attr = TRUE)
  expect_identical(colnames(des$X), colnames(lf$X))
  expect_identical(dim(h_newdata_X(des, s[1:3, ])$X), c(3L, ncol(des$X)))
})

test_that("the frame's terms keep the formula environment", {
  d <- mf_sim_data()
  env <- new.env()
  f <- y ~ x + (1 | g)
  environment(f) <- env
  des <- design_q(f, data = d)
  expect_identical(environment(attr(des$frame, "terms")), env)
  expect_identical(environment(des$fixed_terms), env)
})

test_that("the fixed-effects matrix built in Rust is identical to model.matrix()", {
  set.seed(1)
  n <- 30
  d <- data.frame(y = rnorm(n), x = rnorm(n), z = rpois(n, 3),
                  f = factor(sample(letters[1:3], n, TRUE)), l = rnorm(n) > 0)
  d$`my x` <- rnorm(n)
  d$g <- factor(sample(c("a b", "c:d", "e"), n, TRUE))
  d$o <- factor(sample(1:3, n, TRUE), ordered = TRUE)
  d$h <- factor(sample(c("u", "v"), n, TRUE))
  contrasts(d$h) <- contr.sum(2)
  d$k <- factor(sample(c("p", "q", "r", "s"), n, TRUE))
  d$w <- sample(c(TRUE, FALSE), n, TRUE)
  d$s <- as.character(d$k)
  d$dt <- as.Date("2020-01-01") + seq_len(n)
  forms <- list(y ~ x, y ~ x + z, y ~ 0 + x + z, y ~ z, y ~ log(z + 1) + I(x^2),
                y ~ x + offset(z), y ~ x + f, y ~ f + x + g, y ~ g,
                y ~ `my x` + x, y ~ x:z, y ~ poly(x, 2),
                y ~ l, y ~ 1, y ~ scale(x), y ~ 0 + f, y ~ x + o, y ~ x + h, y ~ f * x,
                # interactions of factors and numerics, any order and coding
                y ~ f * g, y ~ f:g, y ~ 0 + f:x, y ~ x:f + z, y ~ f * x * z,
                y ~ f * g * h, y ~ o * x + k, y ~ k / x, y ~ x %in% f,
                y ~ poly(x, 3) * f, y ~ splines::ns(z, 3) + f:l, y ~ w * x,
                y ~ s + x:s, y ~ f + I(x > 0):g, y ~ 0 + f + g:h, y ~ 0 + x + f,
                y ~ 0 + x:f + g, y ~ 0 + l + f, y ~ dt + x)
  built <- logical(length(forms))
  for (i in seq_along(forms)) {
    fr <- model.frame(forms[[i]], d)
    fr <- lmmr:::h_factorize_characters(fr)
    tt <- attr(fr, "terms")
    ref <- model.matrix(tt, fr)
    rownames(ref) <- NULL
    fast <- lmmr:::h_columns_model_matrix(tt, fr, NULL)
    built[i] <- !is.null(fast)
    if (built[i]) expect_identical(fast, ref, label = deparse(forms[[i]]))
    expect_identical(lmmr:::h_fixed_matrix(tt, fr, NULL), ref)
  }
  # everything but the intercept-only formula and a Date variable is built
  # in Rust
  expect_identical(which(!built), match(c("y ~ 1", "y ~ dt + x"),
                                        vapply(forms, deparse, "")))
  # the contrasts argument: names, functions and matrices, as model.matrix()
  fr <- model.frame(y ~ f * x + g + o + h, d)
  tt <- attr(fr, "terms")
  for (ca in list(list(f = "contr.sum"), list(f = contr.helmert, o = "contr.treatment"),
                  list(g = matrix(c(1, 0, -1, 0.5, -1, 0.5), 3), h = "contr.treatment"))) {
    ref <- model.matrix(tt, fr, contrasts.arg = ca)
    rownames(ref) <- NULL
    fast <- lmmr:::h_columns_model_matrix(tt, fr, ca)
    expect_false(is.null(fast))
    expect_identical(fast, ref)
  }
  # a contrasts entry for a variable that is not there: model.matrix()'s
  # warning, from the full call
  expect_warning(lmmr:::h_fixed_matrix(tt, fr, list(nope = "contr.sum")), "nope")
  # options(contrasts =)
  old <- options(contrasts = c("contr.sum", "contr.poly"))
  on.exit(options(old))
  ref <- model.matrix(tt, fr)
  rownames(ref) <- NULL
  expect_identical(lmmr:::h_columns_model_matrix(tt, fr, NULL), ref)
})

test_that("model matrices filled in Rust: whatever the thread count, bad input is an error", {
  x <- c(1.5, -2, 3, 0.25)
  comps <- list(x, list(codes = c(1L, 3L, 2L, NA), table = c(0, 1, -0.5)))
  X <- lmmr:::rs_fill_columns(4, comps, list(integer(), 1L, c(1L, 2L)))
  expect_identical(dim(X), c(4L, 3L))
  expect_identical(X[, 1], rep(1, 4))
  expect_identical(X[, 2], x)
  expect_identical(X[1:3, 3], x[1:3] * c(0, -0.5, 1))
  expect_true(is.na(X[4, 3]))
  bad <- lmmr:::rs_fill_columns(4, comps, list(5L))
  expect_identical(bad$error_kind, "invalid_input")
  bad <- lmmr:::rs_fill_columns(4, list(1:3 + 0.5), list(1L))
  expect_identical(bad$error_kind, "invalid_input")
  bad <- lmmr:::rs_fill_columns(4, list("a"), list(1L))
  expect_identical(bad$error_kind, "invalid_input")
  bad <- lmmr:::rs_fill_columns(-1, comps, list(1L))
  expect_identical(bad$error_kind, "invalid_input")
})

test_that("fits with X built in Rust equal model.matrix()-based fits", {
  set.seed(2)
  # X is built in Rust from 50,000 rows on (model.matrix() below)
  n <- 50000
  d <- data.frame(x = rnorm(n), f = factor(sample(c("a", "b", "c"), n, TRUE)),
                  g = factor(sample(12, n, TRUE)))
  d$f2 <- d$f # aliased with f
  d$y <- d$x + as.integer(d$f) + rnorm(12)[d$g] + rnorm(n)
  for (f in list(y ~ x + f + f2 + (1 | g), y ~ x * f + f2:x + (1 | g))) {
    expect_message(built <- lmm(f, d), class = "lmmr_message_rank_deficient")
    # options(lmmr.rust_model_matrix = FALSE): model.matrix() builds X
    old <- options(lmmr.rust_model_matrix = FALSE)
    expect_message(ref <- lmm(f, d), class = "lmmr_message_rank_deficient")
    options(old)
    expect_identical(names(fixef(built)), names(fixef(ref)))
    expect_identical(built$dropped, ref$dropped)
    expect_identical(built$X, ref$X)
    expect_identical(built$objective, ref$objective)
    expect_identical(fixef(built), fixef(ref))
    expect_identical(model.matrix(built), model.matrix(ref))
  }
})

test_that("the model matrix's cross-products come from one pass in Rust", {
  set.seed(3)
  X <- cbind(1, matrix(rnorm(3 * 70000), ncol = 3) * c(1, 1e3, 1e-3))
  colnames(X) <- c("(Intercept)", "a", "b", "c")
  xs <- lmmr:::h_x_summaries(X)
  ref <- crossprod(X)
  # to rounding, relative to the columns' norms (sums of signed terms cancel)
  scale <- sqrt(outer(diag(ref), diag(ref)))
  expect_lt(max(abs(xs$xtx - ref) / scale), 1e-11)
  expect_identical(dimnames(xs$xtx), dimnames(ref))
  expect_lt(max(abs(xs$s1 - colSums(X)) / sqrt(nrow(X) * diag(ref))), 1e-11)
  expect_identical(names(xs$s1), colnames(X))
  # whatever the number of threads
  g1 <- lmmr:::rs_cross_products(X, threads = 1)
  expect_identical(lmmr:::rs_cross_products(X, threads = 2), g1)
  expect_identical(lmmr:::rs_cross_products(X, threads = 3), g1)
  expect_equal(g1$gram[5, 5], nrow(X))
  # which columns are dummies (0/1 only): the intercept here
  expect_identical(xs$binary, c(TRUE, FALSE, FALSE, FALSE))
  Xb <- cbind(X, d = rep(0:1, length.out = nrow(X)), z = 0, h = c(0.5, rep(1, nrow(X) - 1)))
  expect_identical(lmmr:::h_x_summaries(Xb)$binary, c(TRUE, FALSE, FALSE, FALSE, TRUE, TRUE, FALSE))
  expect_null(lmmr:::h_x_summaries(X[, 0, drop = FALSE]))
  # non-finite values are found and named
  d <- data.frame(y = rnorm(40), x = c(Inf, rnorm(39)), g = gl(8, 5))
  expect_error(lmm(y ~ x + (1 | g), d), class = "lmmr_error_non_finite")
  # a bad shape is an error list, not a crash
  bad <- lmmr:::rs_cross_products(structure(1:3 + 0.5, dim = c(3L, 1L)), threads = -1)
  expect_identical(bad$error_kind, "invalid_input")
})
