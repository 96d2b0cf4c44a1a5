# Fits on database tables: a table of N rows with 10^4 groups and 10
# covariates, random intercept and slope, in SQLite and (when available) a
# PostgreSQL server, against the in-memory fit of the same rows.
#
#   Rscript bench/bench-db.R [N] [pg_socket_dir]
#
# N defaults to 1e6. The table is generated inside the database (the rows
# never pass through R); the in-memory comparison collects the rows, so run
# it only for N up to a few million. Reports fit time, SQL round trips, rows
# transferred, R's peak memory during the fit and the agreement with the
# in-memory fit.
suppressMessages({
  library(lmmr)
  library(DBI)
})
args <- commandArgs(trailingOnly = TRUE)
N <- if (length(args) >= 1) as.numeric(args[1]) else 1e6
pg_sock <- if (length(args) >= 2) args[2] else Sys.getenv("LMMR_TEST_PG_SOCKET")
G <- 1e4
p <- 10
compare_in_memory <- N <= 3e6

make_groups <- function() {
  set.seed(1)
  data.frame(g = sprintf("g%05d", seq_len(G)), u = rnorm(G, 0, 2), v = rnorm(G, 0, 0.5))
}

# uniform(-1, 1) from the engine's random integers; normal-ish noise as the
# sum of three uniforms
fill_sql <- function(engine) {
  unif <- if (engine == "sqlite") "((random() % 1000000) / 1000000.0)" else "(2 * random() - 1)"
  xs <- paste(sprintf("%s AS x%d", unif, seq_len(p)), collapse = ", ")
  beta <- paste(sprintf("%.1f * x%d", seq_len(p) / 2, seq_len(p)), collapse = " + ")
  noise <- paste(rep(unif, 3), collapse = " + ")
  src <- if (engine == "sqlite") {
    "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < %d) SELECT i FROM r"
  } else "SELECT generate_series(1, %d) AS i"
  sprintf(paste(
    "CREATE TABLE big AS SELECT g, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10,",
    "  10 + %s + u + v * x1 + e AS y FROM (",
    "  SELECT s.i, grp.g, grp.u, grp.v, %s, %s AS e",
    "  FROM (%s) s JOIN grp ON grp.id = (s.i %% %d)) t"),
    beta, xs, noise, sprintf(src, as.integer(N)), as.integer(G))
}

setup <- function(con, engine) {
  grp <- make_groups()
  grp$id <- (seq_len(G)) %% G
  if (dbExistsTable(con, "big")) dbRemoveTable(con, "big")
  if (dbExistsTable(con, "grp")) dbRemoveTable(con, "grp")
  dbWriteTable(con, "grp", grp)
  t0 <- proc.time()[[3]]
  dbExecute(con, fill_sql(engine))
  proc.time()[[3]] - t0
}

fit_db <- function(con) {
  tb <- suppressWarnings(dplyr::tbl(con, "big"))
  f <- as.formula(paste("y ~", paste0("x", seq_len(p), collapse = " + "), "+ (x1 | g)"))
  invisible(gc(reset = TRUE))
  t0 <- proc.time()[[3]]
  fit <- lmm(f, data = tb)
  el <- proc.time()[[3]] - t0
  mem <- gc()
  peak <- sum(mem[, ncol(mem)])  # "max used" (Mb) of Ncells and Vcells
  list(fit = fit, time = el, peak_mb = peak, formula = f)
}

report <- function(engine, con) {
  gen <- setup(con, engine)
  r <- fit_db(con)
  cat(sprintf("\n%s: N = %.0f rows, %d groups, %d covariates, (x1 | g)\n", engine, N, G, p))
  cat(sprintf("  table generated in the database in %.1f s\n", gen))
  cat(sprintf("  lmm() on the table: %.2f s, %d SQL round trips, %d rows transferred (%d cells), R peak memory %.0f MB\n",
              r$time, r$fit$db$round_trips, r$fit$db$rows_transferred, r$fit$db$n_cells, r$peak_mb))
  if (compare_in_memory) {
    d <- dbGetQuery(con, "SELECT * FROM big")
    t0 <- proc.time()[[3]]
    m <- lmm(r$formula, data = d)
    t_mem <- proc.time()[[3]] - t0
    cat(sprintf("  in-memory lmm() of the same rows: %.2f s (fit only; collecting took longer)\n", t_mem))
    cat(sprintf("  agreement: criterion %.1e relative, fixed effects %.1e, theta %.1e, sigma %.1e\n",
                abs(r$fit$objective - m$objective) / abs(m$objective),
                max(abs(fixef(r$fit) - fixef(m)) / pmax(1, abs(fixef(m)))),
                max(abs(r$fit$theta - m$theta)), abs(sigma(r$fit) / sigma(m) - 1)))
  }
}

con <- dbConnect(RSQLite::SQLite(), tempfile(fileext = ".sqlite"))
report("sqlite", con)
dbDisconnect(con)
if (nzchar(pg_sock) && requireNamespace("RPostgreSQL", quietly = TRUE)) {
  con <- dbConnect(RPostgreSQL::PostgreSQL(), host = pg_sock, dbname = "postgres",
                   user = "postgres")
  report("postgres", con)
  dbRemoveTable(con, "big")
  dbRemoveTable(con, "grp")
  dbDisconnect(con)
}
