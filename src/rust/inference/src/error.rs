//! Error type of the inference crate.

/// Errors reported by the inference computations. No public entry point
/// panics on bad data; it returns one of these instead.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum InferenceError {
    /// Inconsistent input arrays (lengths, codes, non-finite values, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A matrix that must be positive definite is not.
    #[error("matrix not positive definite: {0}")]
    NotPositiveDefinite(String),
    /// A computation produced NaN or infinite values.
    #[error("non-finite value: {0}")]
    NonFinite(String),
    /// The method needs a REML fit.
    #[error("{0}")]
    RemlRequired(String),
}

impl InferenceError {
    /// Short machine-readable tag, used by the R glue for condition classes.
    pub fn kind(&self) -> &'static str {
        match self {
            InferenceError::InvalidInput(_) => "invalid_input",
            InferenceError::NotPositiveDefinite(_) => "not_positive_definite",
            InferenceError::NonFinite(_) => "non_finite",
            InferenceError::RemlRequired(_) => "reml_required",
        }
    }
}
