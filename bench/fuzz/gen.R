# Random but plausible linear-mixed-model cases for the fuzz harness.
#
# fuzz_case(seed, id) returns list(id, seed, data, formula, REML, weights,
# offset, note): everything is drawn from a private RNG stream seeded with
# (seed, id), so a case is regenerated exactly, alone, by
#   source("bench/fuzz/gen.R"); cs <- fuzz_case(seed, id)
# whatever ran before it.

fuzz_pick <- function(x, size = 1L, prob = NULL) {
  x[sample.int(length(x), size, prob = prob)]
}

# Data frame with the variables the formulas may use.
fuzz_data <- function(n) {
  n1 <- max(2L, min(n %/% 2L, fuzz_pick(c(2L, 3L, 5L, 8L, 15L, 30L, 60L, 150L, 500L),
                                        prob = c(1, 2, 3, 3, 3, 2, 2, 1, 0.5))))
  n2 <- max(2L, min(n %/% 2L, fuzz_pick(c(2L, 3L, 4L, 6L, 10L, 25L, 80L))))
  g1 <- sample.int(n1, n, replace = TRUE)
  g1[seq_len(min(n, n1))] <- seq_len(min(n, n1))
  d <- data.frame(g1 = factor(g1))
  d$g2 <- factor(sample.int(n2, n, replace = TRUE))
  # g3 is nested in g1 (labels reused across g1, so (1 | g1/g3) is needed)
  d$g3 <- factor(sample.int(fuzz_pick(2:4), n, replace = TRUE))
  # a grouping factor stored as Date, and one as character
  nd <- max(2L, min(n - 1L, fuzz_pick(c(3L, 10L, n %/% 3L, n %/% 2L))))
  d$gd <- as.Date("2020-01-01") + sample.int(nd, n, replace = TRUE)
  d$gc <- sample(paste0("s", seq_len(max(2L, n2 + 1L))), n, replace = TRUE)
  d$g <- if (runif(1) < 0.5) d$g1 else factor(sample.int(max(2L, n %/% 4L), n, replace = TRUE))
  scale_of <- function() fuzz_pick(c(1, 1, 1, 1, 1e-4, 1e4, 1e6), 1L)
  for (v in c("x1", "x2", "x3", "x4", "z1")) d[[v]] <- rnorm(n) * scale_of() + fuzz_pick(c(0, 0, 5, 1e3))
  d$x5 <- sample.int(fuzz_pick(c(2L, 3L, 6L)), n, replace = TRUE)
  d$xpos <- exp(rnorm(n))
  d$xconst <- 3
  d$xdup <- d$x1
  d$xg <- rnorm(n1)[g1] # constant within g1 (collinear with g1 as fixed effect)
  d$f1 <- factor(sample(c("a", "b", "c"), n, replace = TRUE))
  d$xb <- runif(n) < 0.5
  d
}

# Response: fixed effects + random intercepts and slopes on g1 and g2 + noise.
fuzz_response <- function(d) {
  n <- nrow(d)
  sc <- function(x) if (sd(x) > 0) (x - mean(x)) / sd(x) else x * 0
  eta <- 1 + 0.5 * sc(d$x1) - 0.3 * sc(d$x2) + 0.2 * sc(d$x3) + 0.4 * (d$f1 == "b")
  s1 <- fuzz_pick(c(0, 0.1, 1, 3))
  s2 <- fuzz_pick(c(0, 0.3, 1))
  ss <- fuzz_pick(c(0, 0.2, 1))
  b1 <- rnorm(nlevels(d$g1), sd = s1)
  bs <- rnorm(nlevels(d$g1), sd = ss)
  b2 <- rnorm(nlevels(d$g2), sd = s2)
  y <- eta + b1[d$g1] + bs[d$g1] * sc(d$z1) + b2[d$g2] + rnorm(n, sd = fuzz_pick(c(0.1, 1, 2)))
  y * fuzz_pick(c(1, 1, 1, 1e-5, 1e5)) + fuzz_pick(c(0, 0, 100, 1e6))
}

fuzz_fixed_terms <- c("x1", "x2", "x3", "x4", "x5", "z1", "f1", "x1:x2", "x3:x4",
                      "I(x1^2)", "poly(x2, 2)", "scale(x3)", "log(xpos)", "xconst",
                      "xdup", "xb", "xg", "f1:x1")
fuzz_lhs <- c("1", "1", "1", "x1", "z1", "x2", "1 + x1", "0 + x1", "0 + z1", "x1 + z1",
              "x1 + z1 + x2 + 0", "f1", "0 + f1", "x3", "scale(x1)", "log(xpos)")
fuzz_groups <- c("g1", "g1", "g1", "g2", "g2", "g1/g3", "g1:g3", "gd", "gc", "x5", "g")

fuzz_formula <- function() {
  nf <- fuzz_pick(0:4, prob = c(1, 3, 3, 2, 1))
  fx <- if (nf) unique(fuzz_pick(fuzz_fixed_terms, nf)) else character()
  if (runif(1) < 0.05) fx <- c(fx, "g1")
  nr <- fuzz_pick(1:3, prob = c(5, 3, 1))
  re <- character(nr)
  for (i in seq_len(nr)) {
    bar <- if (runif(1) < 0.2) "||" else "|"
    re[i] <- sprintf("(%s %s %s)", fuzz_pick(fuzz_lhs), bar, fuzz_pick(fuzz_groups))
  }
  icpt <- fuzz_pick(c("", "", "", "0 + ", "- 1"))
  lhs <- fuzz_pick(c("y", "y", "y", "y", "y", "y", "y", "y", "y", "yint", "ym", "yl"))
  rhs <- c(fx, re)
  if (runif(1) < 0.05) rhs <- c(rhs, "offset(o)")
  rhs <- paste(rhs, collapse = " + ")
  f <- if (icpt == "0 + ") paste(lhs, "~ 0 +", rhs)
       else if (icpt == "- 1") paste(lhs, "~", rhs, "- 1")
       else paste(lhs, "~", rhs)
  f
}

fuzz_case <- function(seed, id) {
  old <- if (exists(".Random.seed", globalenv())) get(".Random.seed", globalenv())
  on.exit(if (!is.null(old)) assign(".Random.seed", old, globalenv()))
  set.seed(seed * 1000003 + id, kind = "Mersenne-Twister", normal.kind = "Inversion",
           sample.kind = "Rejection")
  n <- fuzz_pick(c(6L, 10L, 20L, 40L, 80L, 150L, 300L, 600L, 1500L, 3000L, 5000L),
                 prob = c(1, 2, 3, 4, 4, 4, 3, 2, 1, 0.5, 0.25))
  d <- fuzz_data(n)
  d$y <- fuzz_response(d)
  d$yint <- round(d$y)
  d$ym <- matrix(d$y)
  d$yl <- d$y > stats::median(d$y)
  d$o <- rnorm(n)
  note <- character()
  # missing and non-finite values, constant and duplicated columns
  if (runif(1) < 0.2) {
    v <- fuzz_pick(c("x1", "x2", "z1", "y", "g1", "g2"))
    d[[v]][sample.int(n, max(1L, n %/% 20L))] <- NA
    note <- c(note, sprintf("NA in %s", v))
  }
  if (runif(1) < 0.03) {
    v <- fuzz_pick(c("x1", "x2", "y"))
    d[[v]][sample.int(n, 1L)] <- Inf
    note <- c(note, sprintf("Inf in %s", v))
  }
  if (runif(1) < 0.05) {
    d$x2 <- d$x1 * 2 + 1
    note <- c(note, "x2 collinear with x1")
  }
  weights <- FALSE
  if (runif(1) < 0.2) {
    w <- fuzz_pick(list(rexp(n), sample.int(3L, n, replace = TRUE), runif(n, 0.5, 2)))[[1L]]
    if (runif(1) < 0.4) {
      w[sample.int(n, max(1L, n %/% 10L))] <- 0
      note <- c(note, "zero weights")
    }
    d$w <- w
    weights <- TRUE
  }
  offset <- runif(1) < 0.05
  f <- fuzz_formula()
  list(id = id, seed = seed, data = d, formula = f, REML = runif(1) < 0.5,
       weights = weights, offset = offset, note = paste(note, collapse = "; "))
}

# The call (as text) that fits a case; `fun` is "lmmr::lmm" or "lme4::lmer".
fuzz_call_text <- function(cs, fun) {
  sprintf("%s(%s, data = d, REML = %s%s%s)", fun, cs$formula, cs$REML,
          if (cs$weights) ", weights = w" else "",
          if (cs$offset) ", offset = o" else "")
}
