#!/usr/bin/env bash
# Install R and every R package lmmr needs from Debian (CRAN is not reachable).
set -euo pipefail
pkgs="r-base-dev r-cran-testthat r-cran-lme4 r-cran-lmertest r-cran-pbkrtest
  r-cran-performance r-cran-roxygen2 r-cran-knitr r-cran-rmarkdown pandoc qpdf
  r-cran-nlme r-cran-emmeans r-cran-estimability r-cran-generics r-cran-broom
  r-cran-broom.mixed r-cran-insight r-cran-parameters r-cran-car
  r-cran-multcomp r-cran-lattice r-cran-clubsandwich r-cran-rlrsim
  r-cran-geepack r-cran-cli r-cran-dbi r-cran-rsqlite r-cran-dbplyr r-cran-dplyr
  r-cran-rpostgresql postgresql"
missing=""
for p in $pkgs; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y --no-install-recommends $missing
fi
command -v cargo >/dev/null || { echo "cargo (Rust) is required" >&2; exit 1; }
