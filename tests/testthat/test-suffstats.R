# Fits on database tables (R/suffstats.R) against the in-memory fit of the
# same rows, on SQLite (embedded) and, when the test command started one
# (LMMR_TEST_PG_SOCKET, see tools/run-tests.sh), a PostgreSQL server on a
# local socket.

db_backends <- function() {
  out <- list()
  if (requireNamespace("RSQLite", quietly = TRUE) &&
      requireNamespace("dbplyr", quietly = TRUE)) {
    out$sqlite <- function() DBI::dbConnect(RSQLite::SQLite(), ":memory:")
  }
  sock <- Sys.getenv("LMMR_TEST_PG_SOCKET")
  if (nzchar(sock) && requireNamespace("RPostgreSQL", quietly = TRUE)) {
    out$postgres <- function() {
      DBI::dbConnect(RPostgreSQL::PostgreSQL(), host = sock, dbname = "postgres",
                     user = Sys.getenv("LMMR_TEST_PG_USER", "postgres"))
    }
  }
  out
}

db_data <- function() {
  set.seed(42)
  d <- as.data.frame(sleepstudy)
  d$Subject <- as.character(d$Subject)
  d$w <- rep(c(1, 2, 0.5), 60)
  d$arm <- ifelse(match(d$Subject, unique(d$Subject)) %% 2 == 0, "a", "b")
  d$site <- paste0("s", (match(d$Subject, unique(d$Subject)) - 1) %/% 6)
  d$rater <- paste0("r", sample(1:7, 180, replace = TRUE))
  d$x <- rnorm(180, 1e4, 2)   # large mean, small spread
  d
}

expect_db_equal <- function(f_db, f_mem) {
  expect_lt(abs(f_db$objective - f_mem$objective) / abs(f_mem$objective), 1e-8)
  expect_equal(fixef(f_db), fixef(f_mem), tolerance = 1e-6)
  expect_equal(unname(f_db$theta), unname(f_mem$theta), tolerance = 1e-5)
  expect_equal(sigma(f_db), sigma(f_mem), tolerance = 1e-6)
  expect_equal(vcov(f_db), vcov(f_mem), tolerance = 1e-6)
  re_db <- ranef(f_db)
  re_mem <- ranef(f_mem)
  for (g in names(re_mem)) {
    expect_equal(as.matrix(re_db[[g]]), as.matrix(re_mem[[g]]), tolerance = 1e-5,
                 ignore_attr = TRUE)
    expect_equal(attr(re_db[[g]], "postVar"), attr(re_mem[[g]], "postVar"), tolerance = 1e-5)
  }
}

test_that("database fits equal the in-memory fits of the same rows", {
  backends <- db_backends()
  skip_if(!length(backends), "no database backend available")
  d <- db_data()
  forms <- list(
    Reaction ~ Days + (Days | Subject),
    Reaction ~ Days * arm + (1 | Subject),
    Reaction ~ log(Days + 1) + I(Days^2) + (Days || Subject),
    Reaction ~ Days + x + (1 | site / Subject),
    Reaction ~ Days + (1 | Subject) + (1 | rater),
    Reaction ~ factor(Days) + (1 | Subject)
  )
  for (b in names(backends)) {
    con <- backends[[b]]()
    DBI::dbWriteTable(con, "lmmr_sleep", d, overwrite = TRUE)
    tb <- suppressWarnings(dplyr::tbl(con, "lmmr_sleep"))
    for (f in forms) {
      for (reml in c(TRUE, FALSE)) {
        f_db <- suppressMessages(lmm(f, data = tb, REML = reml))
        f_mem <- suppressMessages(lmm(f, data = d, REML = reml))
        expect_s3_class(f_db, "lmmr_db")
        expect_db_equal(f_db, f_mem)
        expect_equal(nobs(f_db), 180)
      }
    }
    # weights and the user's contrasts
    f_db <- lmm(Reaction ~ Days * arm + (Days | Subject), data = tb, weights = w,
                contrasts = list(arm = "contr.sum"))
    f_mem <- lmm(Reaction ~ Days * arm + (Days | Subject), data = d, weights = w,
                 contrasts = list(arm = "contr.sum"))
    expect_db_equal(f_db, f_mem)
    expect_equal(as.numeric(logLik(f_db)), as.numeric(logLik(f_mem)), tolerance = 1e-8)
    expect_equal(AIC(f_db), AIC(f_mem), tolerance = 1e-8)
    # the rows stay in the database: no row is changed
    expect_equal(DBI::dbGetQuery(con, "SELECT COUNT(*) AS n FROM lmmr_sleep")$n, 180)
    DBI::dbRemoveTable(con, "lmmr_sleep")
    DBI::dbDisconnect(con)
  }
})

test_that("zero weights: the database fit equals the in-memory fit (one n_obs: rows with a positive weight)", {
  backends <- db_backends()
  skip_if(!length(backends), "no database backend available")
  d <- db_data()
  d$w[c(2, 50, 51, 120)] <- 0
  con <- backends[[1]]()
  on.exit(DBI::dbDisconnect(con))
  DBI::dbWriteTable(con, "lmmr_sleep0", d, overwrite = TRUE)
  tb <- suppressWarnings(dplyr::tbl(con, "lmmr_sleep0"))
  for (reml in c(TRUE, FALSE)) {
    f_db <- lmm(Reaction ~ Days + (Days | Subject), data = tb, weights = w, REML = reml)
    f_mem <- lmm(Reaction ~ Days + (Days | Subject), data = d, weights = w, REML = reml)
    expect_db_equal(f_db, f_mem)
    expect_equal(as.numeric(logLik(f_db)), as.numeric(logLik(f_mem)), tolerance = 1e-8)
    expect_identical(attr(logLik(f_db), "nobs"), 176L)
    expect_identical(attr(logLik(f_mem), "nobs"), 176L)
  }
})

test_that("inference on database fits equals the in-memory inference", {
  backends <- db_backends()
  skip_if(!length(backends), "no database backend available")
  d <- db_data()
  con <- backends[[1]]()
  on.exit(DBI::dbDisconnect(con))
  DBI::dbWriteTable(con, "lmmr_sleep", d, overwrite = TRUE)
  tb <- dplyr::tbl(con, "lmmr_sleep")
  f <- Reaction ~ Days * arm + (Days | Subject)
  f_db <- lmm(f, data = tb)
  f_mem <- lmm(f, data = d)
  for (ddf in c("Satterthwaite", "Kenward-Roger")) {
    expect_equal(coef(summary(f_db, ddf = ddf)), coef(summary(f_mem, ddf = ddf)),
                 tolerance = 1e-5)
    for (type in 1:3) {
      expect_equal(as.data.frame(anova(f_db, type = type, ddf = ddf)),
                   as.data.frame(anova(f_mem, type = type, ddf = ddf)), tolerance = 1e-5)
    }
  }
  L <- matrix(c(0, 1, 0, 1), 1)
  expect_equal(contest(f_db, L), contest(f_mem, L), tolerance = 1e-5)
  expect_equal(icc(f_db)$adjusted, icc(f_mem)$adjusted, tolerance = 1e-6)
  expect_equal(r2(f_db)$marginal, r2(f_mem)$marginal, tolerance = 1e-6)
  expect_equal(r2(f_db)$conditional, r2(f_mem)$conditional, tolerance = 1e-6)
  expect_equal(as.data.frame(VarCorr(f_db)), as.data.frame(VarCorr(f_mem)), tolerance = 1e-6)
  expect_equal(confint(f_db), confint(f_mem), tolerance = 1e-6)
  expect_equal(confint(f_db, method = "profile"), confint(f_mem, method = "profile"),
               tolerance = 1e-4)
  # likelihood-ratio tests between database fits
  f0_db <- lmm(Reaction ~ Days * arm + (1 | Subject), data = tb)
  f0_mem <- lmm(Reaction ~ Days * arm + (1 | Subject), data = d)
  a_db <- anova(f0_db, f_db)
  a_mem <- anova(f0_mem, f_mem)
  expect_equal(a_db$Chisq, a_mem$Chisq, tolerance = 1e-6)
  expect_equal(a_db[["Pr(>Chisq)"]], a_mem[["Pr(>Chisq)"]], tolerance = 1e-6)
  r_db <- ranova(f_db)
  r_mem <- ranova(f_mem)
  expect_equal(r_db$LRT, r_mem$LRT, tolerance = 1e-5)
  # predictions for new data work; methods that need rows say so
  nd <- data.frame(Days = 0:2, arm = "a", Subject = "308")
  expect_equal(predict(f_db, newdata = nd), predict(f_mem, newdata = nd), tolerance = 1e-6)
  expect_error(fitted(f_db), class = "lmmr_error_rows_in_database")
  expect_error(residuals(f_db), class = "lmmr_error_rows_in_database")
  expect_error(predict(f_db), class = "lmmr_error_rows_in_database")
  expect_error(simulate(f_db), class = "lmmr_error_rows_in_database")
  expect_output(print(summary(f_db)), "database aggregates")
  # the transfer does not depend on the number of rows
  expect_lt(f_db$db$rows_transferred, 60)
})

test_that("database fits: missing values, bad input", {
  backends <- db_backends()
  skip_if(!length(backends), "no database backend available")
  d <- db_data()
  d$Reaction[c(3, 50)] <- NA
  d$one <- "only"
  d$txt <- "a"
  con <- backends[[1]]()
  on.exit(DBI::dbDisconnect(con))
  DBI::dbWriteTable(con, "lmmr_na", d, overwrite = TRUE)
  tb <- dplyr::tbl(con, "lmmr_na")
  f_db <- lmm(Reaction ~ Days + (1 | Subject), data = tb)
  f_mem <- lmm(Reaction ~ Days + (1 | Subject), data = d)
  expect_equal(nobs(f_db), 178)
  expect_db_equal(f_db, f_mem)
  expect_error(lmm(Reaction ~ Days + (1 | Subject), data = tb, na.action = na.fail),
               class = "lmmr_error_na")
  expect_error(lmm(Reaction ~ nope + (1 | Subject), data = tb), class = "lmmr_error_data")
  expect_error(lmm(txt ~ Days + (1 | Subject), data = tb), class = "lmmr_error_data")
  expect_error(lmm(Reaction ~ Days + (1 | one), data = tb), class = "lmmr_error_grouping")
  expect_error(lmm(Reaction ~ poly(Days, 2) + (1 | Subject), data = tb),
               class = "lmmr_error_sql_unsupported")
  expect_error(lmm(Reaction ~ scale(Days) + (1 | Subject), data = tb),
               class = "lmmr_error_sql_unsupported")
  expect_error(lmm(Reaction ~ Days + (1 | Subject), data = dplyr::tbl(con, "lmmr_na"),
                   subset = Days > 2), class = "lmmr_error_argument")
  expect_error(dplyr::tbl(con, "no_such_table"))
  expect_equal(DBI::dbGetQuery(con, "SELECT COUNT(*) AS n FROM lmmr_na")$n, 180)
})

test_that("the generated SQL stays within ANSI aggregates", {
  skip_if_not_installed("dbplyr")
  d <- db_data()
  sims <- list(postgres = dbplyr::simulate_postgres(), mssql = dbplyr::simulate_mssql(),
               spark = if (exists("simulate_spark_sql", asNamespace("dbplyr")))
                 dbplyr::simulate_spark_sql())
  for (sim in Filter(Negate(is.null), sims)) {
    lz <- dbplyr::tbl_lazy(d, con = sim)
    lz <- dplyr::mutate(lz, lmmr_w = 1, lmmr_c1 = Days - 4.5,
                        lmmr_c2 = dplyr::case_when(arm == "a" ~ 1, TRUE ~ 0))
    sql <- h_db_aggregate_sql(lz, c("Subject", "site"),
                              c(.g1_2 = "lmmr_w * lmmr_c1 * lmmr_c2"))
    expect_match(sql, "GROUP BY")
    expect_match(sql, "SUM(lmmr_w * lmmr_c1 * lmmr_c2)", fixed = TRUE)
    expect_match(sql, "COUNT(*)", fixed = TRUE)
    expect_match(sql, "CASE WHEN")
    # nothing but SELECT, arithmetic, CASE, SUM/COUNT and GROUP BY
    expect_false(grepl("WINDOW|OVER\\(|PARTITION", sql))
  }
})
