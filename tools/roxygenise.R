# Regenerate NAMESPACE and man/ from the roxygen comments without compiling
# the Rust library: source R/ and load data/ into one environment.
load_with_data <- function(path) {
  env <- roxygen2::load_source(path)
  for (f in list.files(file.path(path, "data"), pattern = "\\.rda$", full.names = TRUE)) {
    load(f, envir = env)
  }
  env
}
roxygen2::roxygenise(roclets = c("rd", "namespace"), load_code = load_with_data)
