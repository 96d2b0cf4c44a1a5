#!/usr/bin/env bash
# Full test suite: cargo fmt/clippy/test on the Rust crates, roxygen docs in
# sync, R CMD build (vignettes) and R CMD check --as-cran (testthat suite).
# Prints a final line "N passed, M failed" and exits non-zero on any test
# failure or any R CMD check ERROR/WARNING.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export LMMR_TARGET_DIR="${LMMR_TARGET_DIR:-$ROOT/src/rust/target}"
export CARGO_TARGET_DIR="$LMMR_TARGET_DIR"
export NOT_CRAN=true
# No network here: skip CRAN-incoming remote lookups and the clock check.
export _R_CHECK_CRAN_INCOMING_REMOTE_=false _R_CHECK_SYSTEM_CLOCK_=0
LOG=$(mktemp -d)
failed=0; passed=0; status=0

echo "== cargo fmt / clippy / test"
(cd src/rust && cargo fmt --all --check) || { echo "cargo fmt: FAILED"; failed=$((failed + 1)); }
(cd src/rust && cargo clippy --release --all-targets -- -D warnings) || { echo "cargo clippy: FAILED"; failed=$((failed + 1)); }
(cd src/rust && cargo test --release -p lmmr-core -p lmmr-inference 2>&1) | tee "$LOG/cargo.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
cp=$(grep -E '^test result:' "$LOG/cargo.txt" | sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed.*/\1/' | awk '{s+=$1} END {print s+0}')
cf=$(grep -E '^test result:' "$LOG/cargo.txt" | sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed.*/\2/' | awk '{s+=$1} END {print s+0}')
passed=$((passed + ${cp:-0})); failed=$((failed + ${cf:-0}))

echo "== roxygen2 documentation in sync"
Rscript tools/roxygenise.R >/dev/null 2>&1
if ! git diff --quiet -- man NAMESPACE 2>/dev/null; then
  echo "man/ or NAMESPACE out of date with roxygen comments:"; git diff --stat -- man NAMESPACE
  failed=$((failed + 1))
fi

echo "== PostgreSQL test server (Unix socket only)"
PG_DIR=$(mktemp -d /tmp/lmmr-pg.XXXXXX)
if tools/pg-test-server.sh start "$PG_DIR" >/dev/null; then
  export LMMR_TEST_PG_SOCKET="$PG_DIR" LMMR_TEST_PG_USER=postgres
  trap 'tools/pg-test-server.sh stop "$PG_DIR"' EXIT
  echo "started on $PG_DIR"
else
  echo "could not start PostgreSQL: the database tests run on SQLite only"
fi

echo "== R CMD build"
rm -f lmmr_*.tar.gz
R CMD build . 2>&1 | tail -20
tarball=$(ls lmmr_*.tar.gz 2>/dev/null | head -1)
if [ -z "$tarball" ]; then
  echo "R CMD build failed"; status=1; failed=$((failed + 1))
else
  echo "== R CMD check --as-cran"
  R CMD check --as-cran --no-manual "$tarball" 2>&1 | tee "$LOG/check.txt"
  tout=$(ls lmmr.Rcheck/tests/testthat.Rout* 2>/dev/null | head -1)
  if [ -n "$tout" ]; then
    line=$(grep -E '\[ FAIL [0-9]+ \| WARN [0-9]+ \| SKIP [0-9]+ \| PASS [0-9]+ \]' "$tout" | tail -1)
    tp=$(echo "$line" | sed -E 's/.*PASS ([0-9]+).*/\1/'); tf=$(echo "$line" | sed -E 's/.*FAIL ([0-9]+).*/\1/')
    passed=$((passed + ${tp:-0})); failed=$((failed + ${tf:-0}))
    [ -z "$line" ] && { echo "no testthat summary found"; failed=$((failed + 1)); }
    case "$tout" in *.fail) tail -60 "$tout";; esac
  else
    echo "testthat did not run"; failed=$((failed + 1))
  fi
  if grep -qE '^Status: .*(ERROR|WARNING)' "$LOG/check.txt" || ! grep -q '^Status:' "$LOG/check.txt"; then
    echo "R CMD check reported ERROR or WARNING (or did not finish)"; status=1
  fi
fi
[ "$failed" -gt 0 ] && status=1
echo "$passed passed, $failed failed"
exit $status
