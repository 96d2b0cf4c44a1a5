# Two commands that work on a fresh Debian machine (see README):
#   make demo   install dependencies, build lmmr, fit the course models
#   make test   install dependencies, run the whole test suite
export LMMR_TARGET_DIR ?= $(CURDIR)/src/rust/target

.PHONY: deps install demo test bench

deps:
	bash tools/install-deps.sh

install: deps
	R CMD INSTALL --no-test-load .

demo: install
	Rscript inst/scripts/course-models.R

test: deps
	bash tools/run-tests.sh

bench: install
	Rscript bench/bench-fit.R
