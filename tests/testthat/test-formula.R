# Formula parsing: bars, fixed part, expansion of || and /.

bar_strings <- function(bars) {
  vapply(bars, function(b) h_deparse(h_bar_call(b)), "")
}

lme4_bar_strings <- function(formula) {
  vapply(lme4::findbars(formula), h_deparse, "")
}

parse_cases <- list(
  y ~ (1 | g),
  y ~ x + (x | g),
  y ~ x + (1 + x | g),
  y ~ (0 + x | g),
  y ~ (-1 + x | g),
  y ~ (x || g),
  y ~ (0 + x || g),
  y ~ (x + z * w || g),
  y ~ (f || g),
  y ~ (1 | a / b),
  y ~ (1 | a / b / c),
  y ~ (x || a / b),
  y ~ (x | a / b),
  y ~ (1 | a:b),
  y ~ x + (1 | a) + (1 | b),
  y ~ x + (1 | g) + (0 + x | g),
  y ~ (0 + f | g) + (f | h),
  y ~ x1 + (x2 | ff),
  y ~ (x1 + x2) | ff,
  y ~ x + offset(o) + (1 | g),
  y ~ (I(x^2) | g) + (poly(x, 2) | h) + (scale(x) | k),
  y ~ x * z + (1 | g),
  y ~ 0 + x + (1 | g),
  y ~ -1 + x + (1 | g)
)

test_that("h_find_bars(expand = TRUE) agrees with lme4::findbars()", {
  skip_if_not_installed("lme4")
  for (f in parse_cases) {
    expect_identical(bar_strings(h_find_bars(f, expand = TRUE)), lme4_bar_strings(f), info = h_deparse(f))
  }
})

test_that("h_no_bars() agrees with lme4::nobars()", {
  skip_if_not_installed("lme4")
  for (f in parse_cases) {
    expect_identical(h_deparse(h_no_bars(f)), h_deparse(lme4::nobars(f)), info = h_deparse(f))
  }
})

test_that("a trailing '- 1' after a bar removes the fixed intercept", {
  # lme4::nobars() drops the '- 1' here (fixed part y ~ 1); we keep it.
  expect_identical(h_deparse(h_no_bars(y ~ (1 | g) - 1)), "y ~ -1")
  expect_identical(bar_strings(h_find_bars(y ~ (1 | g) - 1)), "1 | g")
})

test_that("h_find_bars() returns lhs, group and the double flag", {
  bars <- h_find_bars(y ~ x + (x || g) + (1 | h))
  expect_length(bars, 2L)
  expect_identical(bars[[1]]$lhs, quote(x))
  expect_identical(bars[[1]]$group, quote(g))
  expect_true(bars[[1]]$double)
  expect_identical(bars[[2]]$lhs, 1)
  expect_identical(bars[[2]]$group, quote(h))
  expect_false(bars[[2]]$double)
})

test_that("h_find_bars() returns an empty list without random terms", {
  expect_identical(h_find_bars(y ~ x + z), list())
})

test_that("|| expands into an intercept term and one term per lhs term", {
  expect_identical(
    bar_strings(h_find_bars(y ~ (x + z || g), expand = TRUE)),
    c("1 | g", "0 + x | g", "0 + z | g")
  )
  expect_identical(bar_strings(h_find_bars(y ~ (0 + x || g), expand = TRUE)), "0 + x | g")
  expect_identical(bar_strings(h_find_bars(y ~ (1 || g), expand = TRUE)), "1 | g")
})

test_that("/ expands into nested grouping factors in lme4's order", {
  expect_identical(bar_strings(h_find_bars(y ~ (1 | a / b), expand = TRUE)), c("1 | b:a", "1 | a"))
  expect_identical(
    bar_strings(h_find_bars(y ~ (1 | a / b / c), expand = TRUE)),
    c("1 | c:(b:a)", "1 | b:a", "1 | a")
  )
  expect_identical(bar_strings(h_find_bars(y ~ (x | a / b), expand = TRUE)), c("x | b:a", "x | a"))
})

test_that("h_no_bars() keeps the response, offsets and the intercept handling", {
  expect_identical(h_deparse(h_no_bars(y ~ (1 | g))), "y ~ 1")
  expect_identical(h_deparse(h_no_bars(y ~ 0 + (1 | g))), "y ~ 0")
  expect_identical(h_deparse(h_no_bars(y ~ x + offset(o) + (1 | g))), "y ~ x + offset(o)")
  expect_identical(h_deparse(h_no_bars(log(y) ~ x * z + (x | g) + (1 | h))), "log(y) ~ x * z")
  expect_identical(h_deparse(h_no_bars(y ~ (x1 + x2) | ff)), "y ~ 1")
})

test_that("h_no_bars() keeps the formula environment", {
  env <- new.env()
  f <- y ~ x + (1 | g)
  environment(f) <- env
  expect_identical(environment(h_no_bars(f)), env)
})

test_that("h_expanded_formula() expands || and / and keeps the rest", {
  expect_identical(
    h_deparse(h_expanded_formula(Reaction ~ Days + (Days || Subject))),
    "Reaction ~ Days + ((1 | Subject) + (0 + Days | Subject))"
  )
  expect_identical(
    h_deparse(h_expanded_formula(y ~ x + (1 | a / b))),
    "y ~ x + ((1 | b:a) + (1 | a))"
  )
  expect_identical(
    h_deparse(h_expanded_formula(y ~ x + offset(o) + (x | g))),
    "y ~ x + offset(o) + (x | g)"
  )
})

test_that("h_expanded_formula() is stable (expanding twice changes nothing)", {
  f <- h_expanded_formula(y ~ x + (x || a / b))
  expect_identical(h_deparse(h_expanded_formula(f)), h_deparse(f))
  expect_identical(
    bar_strings(h_find_bars(f)),
    bar_strings(h_find_bars(y ~ x + (x || a / b), expand = TRUE))
  )
})

test_that("h_expanded_formula() bars agree with lme4 after expansion", {
  skip_if_not_installed("lme4")
  for (f in parse_cases) {
    expect_identical(
      bar_strings(h_find_bars(h_expanded_formula(f))),
      lme4_bar_strings(f),
      info = h_deparse(f)
    )
  }
})

test_that("h_frame_formula() contains all variables", {
  f <- h_frame_formula(y ~ x + (z | a / b) + offset(o))
  expect_setequal(all.vars(f), c("y", "x", "z", "a", "b", "o"))
  expect_false(any(grepl("|", h_deparse(f), fixed = TRUE)))
})

test_that("malformed grouping factors are errors of kind 'formula'", {
  expect_error(h_find_bars(y ~ (1 | a * b)), class = "lmmr_error_formula")
  expect_error(h_find_bars(y ~ (1 | a + b)), class = "lmmr_error_formula")
  expect_error(h_find_bars(y ~ (1 | factor(a))), class = "lmmr_error_formula")
  expect_error(h_find_bars(y ~ (1 | 2)), class = "lmmr_error_formula")
  expect_error(h_find_bars(y ~ x2 | ff + x1), class = "lmmr_error_formula")
})

test_that("bars must be added with '+'", {
  expect_error(h_find_bars(y ~ x * (1 | g)), class = "lmmr_error_formula")
  expect_error(h_find_bars(y ~ log((1 | g))), class = "lmmr_error_formula")
  expect_error(h_no_bars(y ~ x:(1 | g)), class = "lmmr_error_formula")
  expect_error(h_find_bars(y ~ (1 | (a | b))), class = "lmmr_error_formula")
})

test_that("precedence is as in lme4", {
  bars <- h_find_bars(y ~ x1 + (x2 | ff))
  expect_identical(bars[[1]]$lhs, quote(x2))
  bars <- h_find_bars(y ~ (x1 + x2) | ff)
  expect_identical(bars[[1]]$lhs, quote((x1 + x2)))
  expect_identical(bars[[1]]$group, quote(ff))
})

test_that("h_as_formula() accepts strings and rejects other objects", {
  expect_s3_class(h_as_formula("y ~ x + (1 | g)"), "formula")
  expect_error(h_as_formula(1), class = "lmmr_error_formula")
})
