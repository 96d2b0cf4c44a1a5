library(testthat)
library(lmmr)

test_check("lmmr")
