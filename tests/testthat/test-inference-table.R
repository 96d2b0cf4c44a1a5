# Table-driven live comparison of anova.lmmr() F tests (types 1, 2 and 3,
# Satterthwaite and Kenward-Roger) with lmerTest 3.1-3
# (anova(lmerTest::lmer(...), type =, ddf =)) and pbkrtest 0.5.2 (KRmodcomp
# between nested lmer fits), over split-plots with 2, 3 and 6 whole-plot
# error df (balanced and unbalanced, with and without fixed blocks),
# pbkrtest::beets, a crossed design, random slopes and missing cells; the
# balanced designs also against the classical error-strata F tests
# (stats::aov() with Error()).

# Tolerances: lmerTest and pbkrtest evaluate the tests at lme4's optimum,
# lmmr at its own; the two optima agree to ~1e-6 relative in theta, which
# moves DenDF and F by at most ~2e-5 relative (largest for random slopes).
# Hence 1e-4 relative on DenDF and F and 1e-4 absolute on p.
tab_tol <- 1e-4

# Split-plot: whole-plot factor A (a levels) in r blocks, subplot factor B
# (b levels); `drop` subplot observations removed at random (unbalanced).
tab_splitplot <- function(a, r, b, seed, drop = 0, sd_wp = 1.5) {
  set.seed(seed)
  d <- expand.grid(B = factor(seq_len(b)), A = factor(seq_len(a)),
                   block = factor(seq_len(r)))
  wp <- interaction(d$block, d$A)
  d$y <- 10 + 0.5 * as.integer(d$A) + 0.3 * as.integer(d$B) +
    0.4 * as.integer(d$block) + stats::rnorm(nlevels(wp), sd = sd_wp)[wp] +
    stats::rnorm(nrow(d), sd = 0.7)
  if (drop > 0) d <- d[-sample(nrow(d), drop), ]
  d
}

# name = list(lmer formula, data, aov formula of the error strata or NULL,
# balanced = whether the design is balanced (default: an aov formula given))
tab_designs <- function() {
  with_block <- y ~ block + A * B + (1 | block:A)
  aov_block <- y ~ block + A * B + Error(block:A)
  no_block <- y ~ A * B + (1 | block:A)
  aov_no_block <- y ~ A * B + Error(block:A)
  # whole-plot error df: (r - 1)(a - 1) with fixed blocks, a (r - 1) without
  out <- list(
    sp2_block = list(with_block, tab_splitplot(2, 3, 3, 1), aov_block),
    sp3_block = list(with_block, tab_splitplot(2, 4, 3, 1), aov_block),
    sp6_block = list(with_block, tab_splitplot(3, 4, 3, 1), aov_block),
    # the whole-plot variance is estimated as zero (a singular fit)
    sp2_block_singular = list(with_block, tab_splitplot(2, 3, 3, 106, sd_wp = 1),
                              NULL, balanced = TRUE),
    sp2_block_unbal = list(with_block, tab_splitplot(2, 3, 3, 1, drop = 3), NULL),
    sp3_block_unbal = list(with_block, tab_splitplot(2, 4, 3, 1, drop = 3), NULL),
    sp6_block_unbal = list(with_block, tab_splitplot(3, 4, 3, 1, drop = 3), NULL),
    # a large whole-plot variance: rounding leaves the 0/0 of the KR
    # approximation at ~1e-13 rather than ~1e-15
    sp2 = list(no_block, tab_splitplot(2, 2, 3, 304, sd_wp = 1), aov_no_block),
    sp3 = list(no_block, tab_splitplot(3, 2, 3, 1), aov_no_block),
    sp6 = list(no_block, tab_splitplot(2, 4, 3, 1), aov_no_block),
    sp2_unbal = list(no_block, tab_splitplot(2, 2, 3, 1, drop = 3), NULL),
    sp3_unbal = list(no_block, tab_splitplot(3, 2, 3, 1, drop = 3), NULL),
    sp6_unbal = list(no_block, tab_splitplot(2, 4, 3, 1, drop = 3), NULL),
    beets_add = list(sugpct ~ block + sow + harvest + (1 | block:harvest),
                     pbkrtest::beets,
                     sugpct ~ block + sow + harvest + Error(block:harvest)),
    beets_int = list(sugpct ~ block + sow * harvest + (1 | block:harvest),
                     pbkrtest::beets,
                     sugpct ~ block + sow * harvest + Error(block:harvest))
  )
  set.seed(7)
  dc <- expand.grid(a = factor(1:6), b = factor(1:5), rep = 1:2)
  dc$f <- factor(sample(c("u", "v", "w"), nrow(dc), TRUE))
  dc$h <- factor(rep(c("p", "q"), length.out = nrow(dc)))
  dc$y <- stats::rnorm(6)[dc$a] + stats::rnorm(5, sd = 0.8)[dc$b] +
    0.4 * (dc$f == "v") + stats::rnorm(nrow(dc))
  out$crossed <- list(y ~ f * h + (1 | a) + (1 | b), dc, NULL)
  set.seed(8)
  ds <- data.frame(g = factor(rep(1:8, each = 10)), x = rep(seq(0, 1.8, by = 0.2), 8))
  ds$f <- factor(sample(c("c1", "c2", "c3"), nrow(ds), TRUE))
  u0 <- stats::rnorm(8)
  u1 <- stats::rnorm(8, sd = 0.7)
  ds$y <- 1 + u0[ds$g] + (0.5 + u1[ds$g]) * ds$x + 0.3 * (ds$f == "c2") +
    stats::rnorm(nrow(ds), sd = 0.5)
  out$slopes <- list(y ~ f * x + (x | g), ds, NULL)
  # unbalanced, with the empty cell A = 3, B = 3
  set.seed(9)
  dm <- expand.grid(A = factor(1:3), B = factor(1:3), s = factor(1:6))
  dm$y <- stats::rnorm(6)[dm$s] + 0.2 * as.integer(dm$A) + stats::rnorm(nrow(dm))
  dm <- dm[!(dm$A == "3" & dm$B == "3"), ]
  dm <- dm[-c(2, 11, 17), ]
  out$missing_cells <- list(y ~ A * B + (1 | s), dm, NULL)
  out
}

# The classical F tests of a balanced design, one row per term, from the
# error strata of stats::aov(); DenDF is the residual df of the term's
# stratum.
tab_strata_f <- function(formula, data) {
  # aov() warns that the error model y ~ block:A is singular (it spans the
  # intercept); the strata are still the right ones
  s <- summary(suppressWarnings(stats::aov(formula, data = data)))
  rows <- lapply(s, function(st) {
    st <- st[[1]]
    terms <- trimws(rownames(st))
    res <- terms == "Residuals"
    data.frame(term = terms[!res], NumDF = st$Df[!res],
               DenDF = st$Df[res], F = st[["F value"]][!res],
               p = st[["Pr(>F)"]][!res])
  })
  out <- do.call(rbind, rows)
  rownames(out) <- out$term
  out
}

tab_fits <- local({
  cache <- NULL
  function() {
    if (is.null(cache)) {
      ds <- tab_designs()
      cache <<- lapply(ds, function(d) {
        list(fit = suppressMessages(lmm(d[[1]], data = d[[2]])),
             ref = suppressMessages(lmerTest::lmer(d[[1]], data = d[[2]])),
             aov = d[[3]], data = d[[2]],
             balanced = if (is.null(d$balanced)) !is.null(d[[3]]) else d$balanced)
      })
    }
    cache
  }
})

test_that("anova F tests match lmerTest/pbkrtest over the design table (types 1-3, both ddf)", {
  skip_if_not_installed("lmerTest")
  skip_if_not_installed("pbkrtest")
  fits <- tab_fits()
  n_rows <- 0
  for (nm in names(fits)) {
    b <- fits[[nm]]
    balanced <- b$balanced
    for (type in 1:3) {
      for (ddf in c("Satterthwaite", "Kenward-Roger")) {
        own <- suppressMessages(anova(b$fit, type = type, ddf = ddf))
        ref <- suppressMessages(anova(b$ref, type = type, ddf = ddf))
        expect_setequal(rownames(own), rownames(ref))
        ref <- ref[rownames(own), ]
        for (i in seq_len(nrow(own))) {
          lab <- sprintf("%s, type %d, %s, %s", nm, type, ddf, rownames(own)[i])
          # In a balanced design whose error stratum has 2 df, pbkrtest's KR
          # DenDF is the rounding noise of a 0/0 (it gives 2.0033 where the
          # exact df, and the error-strata df, are 2, e.g. for A, type 3, in
          # sp2_block_singular); lmmr computes that ratio without the
          # cancellation. Such rows are held to 5e-3 against pbkrtest and
          # to the exact df, 2.
          noisy <- balanced && ddf == "Kenward-Roger" && abs(ref$DenDF[i] - 2) < 0.01
          if (noisy) expect_equal(own$DenDF[i], 2, tolerance = 1e-8, label = lab)
          tol_den <- if (noisy) 5e-3 else tab_tol
          tol_p <- if (noisy) 1e-3 else tab_tol
          expect_equal(own$NumDF[i], ref$NumDF[i], label = lab)
          expect_lt(abs(own$DenDF[i] / ref$DenDF[i] - 1), tol_den, label = lab)
          expect_lt(abs(own[["F value"]][i] / ref[["F value"]][i] - 1), tab_tol, label = lab)
          expect_lt(abs(own[["Pr(>F)"]][i] - ref[["Pr(>F)"]][i]), tol_p, label = lab)
          n_rows <- n_rows + 1
        }
      }
    }
  }
  expect_gt(n_rows, 300)
})

test_that("balanced designs: F tests equal the classical error-strata F tests", {
  skip_if_not_installed("lmerTest")
  skip_if_not_installed("pbkrtest")
  fits <- tab_fits()
  for (nm in names(fits)) {
    b <- fits[[nm]]
    if (is.null(b$aov)) next
    cl <- tab_strata_f(b$aov, b$data)
    for (type in 1:3) {
      for (ddf in c("Satterthwaite", "Kenward-Roger")) {
        own <- suppressMessages(anova(b$fit, type = type, ddf = ddf))
        expect_setequal(rownames(own), rownames(cl))
        ref <- cl[rownames(own), ]
        lab <- sprintf("%s, type %d, %s", nm, type, ddf)
        expect_equal(own$NumDF, ref$NumDF, label = lab)
        # lmmr's optimum vs the exact REML (= ANOVA) estimates: 1e-4
        expect_lt(max(abs(own$DenDF / ref$DenDF - 1)), tab_tol, label = lab)
        expect_lt(max(abs(own[["F value"]] / ref$F - 1)), tab_tol, label = lab)
        expect_lt(max(abs(own[["Pr(>F)"]] - ref$p)), tab_tol, label = lab)
      }
    }
  }
})

test_that("beets: block and harvest F tests as pbkrtest's KRmodcomp and the error strata", {
  skip_if_not_installed("lmerTest")
  skip_if_not_installed("pbkrtest")
  fits <- tab_fits()
  for (nm in c("beets_add", "beets_int")) {
    for (type in 1:3) {
      for (ddf in c("Satterthwaite", "Kenward-Roger")) {
        a <- suppressMessages(anova(fits[[nm]]$fit, type = type, ddf = ddf))
        lab <- sprintf("%s, type %d, %s", nm, type, ddf)
        # pbkrtest 0.5.2: KRmodcomp(lmer(sugpct ~ block + sow + harvest +
        # (1 | block:harvest), beets), <the fit without block / harvest>),
        # equal to summary(aov(sugpct ~ block + sow + harvest +
        # Error(block:harvest), beets)): block F 2.5789 on (2, 2) df,
        # p 0.2794; harvest F 15.2105 on (1, 2) df, p 0.0599
        expect_equal(a["block", "NumDF"], 2, label = lab)
        expect_equal(a["block", "DenDF"], 2, tolerance = tab_tol, label = lab)
        expect_lt(abs(a["block", "F value"] - 2.5789), 1e-4, label = lab)
        expect_lt(abs(a["block", "Pr(>F)"] - 0.2794), 1e-4, label = lab)
        expect_equal(a["harvest", "NumDF"], 1, label = lab)
        expect_equal(a["harvest", "DenDF"], 2, tolerance = tab_tol, label = lab)
        expect_lt(abs(a["harvest", "F value"] - 15.2105), 1e-4, label = lab)
        expect_lt(abs(a["harvest", "Pr(>F)"] - 0.0599), 1e-4, label = lab)
      }
    }
  }
})

test_that("Kenward-Roger F tests equal KRmodcomp() between nested lmer fits", {
  skip_if_not_installed("lmerTest")
  skip_if_not_installed("pbkrtest")
  fits <- tab_fits()
  # design, term dropped, anova type whose row is that model comparison
  rows <- list(c("beets_add", "block", "2"), c("beets_add", "harvest", "2"),
               c("beets_add", "sow", "3"), c("beets_int", "sow:harvest", "3"),
               c("sp2_block_unbal", "A:B", "3"), c("sp6_unbal", "A:B", "2"),
               c("crossed", "f:h", "3"), c("slopes", "f:x", "3"),
               c("missing_cells", "A:B", "3"))
  for (r in rows) {
    b <- fits[[r[1]]]
    small <- suppressMessages(lme4::lmer(
      stats::update(stats::formula(b$ref), paste(". ~ . -", r[2])), data = b$data))
    kr <- pbkrtest::KRmodcomp(b$ref, small)$test["Ftest", ]
    own <- suppressMessages(anova(b$fit, type = as.integer(r[3]), ddf = "Kenward-Roger"))[r[2], ]
    lab <- paste(r[1:2], collapse = ", ")
    expect_equal(own$NumDF, kr$ndf, label = lab)
    expect_lt(abs(own$DenDF / kr$ddf - 1), tab_tol, label = lab)
    expect_lt(abs(own[["F value"]] / kr$stat - 1), tab_tol, label = lab)
    expect_lt(abs(own[["Pr(>F)"]] - kr$p.value), tab_tol, label = lab)
  }
})

test_that("anova() of an intercept-only model returns 0 rows, as lmerTest", {
  cols <- c("Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)")
  set.seed(3)
  d <- data.frame(g = factor(rep(1:8, each = 5)))
  d$y <- stats::rnorm(8)[d$g] + stats::rnorm(40)
  fit1 <- lmm(y ~ 1 + (1 | g), data = d)
  for (type in 1:3) {
    for (ddf in c("Satterthwaite", "Kenward-Roger")) {
      lab <- sprintf("y ~ 1 + (1 | g), type %d, %s", type, ddf)
      # lmerTest 3.1-3: anova(lmer(y ~ 1 + (1 | g)), type =, ddf =) is a
      # 0-row "anova" data frame with these six columns
      a <- anova(fit1, type = type, ddf = ddf)
      expect_s3_class(a, c("anova", "data.frame"))
      expect_equal(nrow(a), 0, label = lab)
      expect_named(a, cols)
    }
  }
})

test_that("anova() of a model without fixed effects returns 0 rows, as lmerTest", {
  cols <- c("Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)")
  set.seed(3)
  d <- data.frame(g = factor(rep(1:8, each = 5)))
  d$y <- stats::rnorm(8)[d$g] + stats::rnorm(40)
  # lmerTest 3.1-3: anova(lmer(y ~ 0 + (1 | g)), type =, ddf =) is a 0-row
  # "anova" data frame with the six columns
  fit0 <- suppressMessages(lmm(y ~ 0 + (1 | g), data = d))
  for (type in 1:3) {
    for (ddf in c("Satterthwaite", "Kenward-Roger")) {
      lab <- sprintf("y ~ 0 + (1 | g), type %d, %s", type, ddf)
      # (types 1 and 2 failed with "'a' must have dims > 0" before)
      a <- anova(fit0, type = type, ddf = ddf)
      expect_equal(nrow(a), 0, label = lab)
      expect_named(a, cols)
    }
  }
})

test_that("the KR ratio (1 - A2/q) / (1 - c2 B) is computed without cancellation", {
  naive <- function(A1, A2, q) {
    B <- (A1 + 6 * A2) / (2 * q)
    g <- ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    c2 <- (q - g) / (3 * q + 2 * (1 - g))
    (1 - A2 / q) / (1 - c2 * B)
  }
  # away from the 0/0 point: the same number as Kenward & Roger's formula
  set.seed(11)
  for (i in 1:20) {
    q <- sample(2:5, 1)
    A2 <- stats::runif(1, 0.1, 3)
    A1 <- stats::runif(1, 0.1, q * A2)
    expect_equal(lmmr:::h_kr_e_over_v1(A1, A2, q), naive(A1, A2, q), tolerance = 1e-10)
  }
  # q = 1 (A1 = A2) and exact tests (A1 = q A2): 1, also at A2 = q (a 2-df
  # stratum), where the naive quotient is rounding noise (A1, A2 as computed
  # for A in the design sp2 above and block in beets_add)
  expect_identical(lmmr:::h_kr_e_over_v1(1.0000000000000606, 1.0000000000000608, 1), 1)
  expect_gt(abs(naive(1.0000000000000606, 1.0000000000000608, 1) - 1), 1e-3)
  expect_identical(lmmr:::h_kr_e_over_v1(3.9999999999999982, 1.9999999999999993, 2), 1)
  expect_gt(abs(naive(3.9999999999999982, 1.9999999999999993, 2) - 1), 1)
})
