//! Error type shared by the whole crate.

/// Errors reported by the numerics. None of the public entry points panic on
/// bad data; they return one of these instead.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum LmmError {
    /// The input arrays are inconsistent (lengths, codes, non-finite values...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A matrix that must be positive definite is not (e.g. rank-deficient X).
    #[error("matrix not positive definite: {0}")]
    NotPositiveDefinite(String),
    /// A computation produced NaN or infinite values.
    #[error("non-finite value: {0}")]
    NonFinite(String),
    /// The problem is too large for the dense part of the algorithm.
    #[error("problem too large: {0}")]
    TooLarge(String),
    /// The user interrupted a computation (Ctrl-C in R).
    #[error("interrupted by the user")]
    Interrupted,
    /// A user-supplied argument breaks its rule (e.g. negative weights); the
    /// message is meant for the user as is.
    #[error("{0}")]
    BadArgument(String),
    /// The optimisation's time budget was spent (handled inside the fit,
    /// which then stops at the best point reached).
    #[error("time budget spent: {0}")]
    TimeBudget(String),
}

impl LmmError {
    /// Short machine-readable tag, used by the R glue for condition classes.
    pub fn kind(&self) -> &'static str {
        match self {
            LmmError::InvalidInput(_) => "invalid_input",
            LmmError::NotPositiveDefinite(_) => "not_positive_definite",
            LmmError::NonFinite(_) => "non_finite",
            LmmError::TooLarge(_) => "too_large",
            LmmError::Interrupted => "interrupted",
            LmmError::BadArgument(_) => "argument",
            LmmError::TimeBudget(_) => "time_budget",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_messages() {
        let e = LmmError::InvalidInput("bad".into());
        assert_eq!(e.kind(), "invalid_input");
        assert_eq!(e.to_string(), "invalid input: bad");
        assert_eq!(
            LmmError::NotPositiveDefinite(String::new()).kind(),
            "not_positive_definite"
        );
        assert_eq!(LmmError::NonFinite(String::new()).kind(), "non_finite");
        assert_eq!(LmmError::TooLarge(String::new()).kind(), "too_large");
        assert_eq!(LmmError::Interrupted.kind(), "interrupted");
        assert_eq!(LmmError::BadArgument("w".into()).to_string(), "w");
    }
}
