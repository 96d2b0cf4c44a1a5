# Two commands that work on a fresh Debian machine (see README):
#   make demo   install dependencies, build lmmr with its vignettes, run the lesson
#   make test   install dependencies, run the whole test suite
export LMMR_TARGET_DIR ?= $(CURDIR)/src/rust/target

.PHONY: deps install install-with-vignettes demo test bench

deps:
	bash tools/install-deps.sh

install: deps
	R CMD INSTALL --no-test-load .

# The package built with its vignettes, so vignette() and browseVignettes()
# work after `make demo`.
install-with-vignettes: deps
	rm -f lmmr_*.tar.gz
	R CMD build .
	R CMD INSTALL lmmr_*.tar.gz

demo: install-with-vignettes
	Rscript inst/scripts/course-models.R

test: deps
	bash tools/run-tests.sh

bench: install
	Rscript bench/bench-fit.R
