//! Small-sample inference for linear mixed models fitted by lmmr.
//!
//! Given the design (fixed-effects matrix `X`, random-effects terms as level
//! codes plus per-observation covariates, prior weights) and the estimates
//! (`theta`, `sigma`), this crate computes
//!
//! * the pieces of Satterthwaite's method as lmerTest does it: the observed
//!   Hessian of the (REML or ML) deviance as a function of
//!   `varpar = (theta, sigma)`, the covariance of `varpar` (`2 H^-1`) and the
//!   Jacobian of `Cov(beta)` with respect to `varpar` — all analytically;
//! * the Kenward-Roger adjusted covariance of `beta` and the matrices needed
//!   for the Kenward-Roger denominator degrees of freedom (pbkrtest's linear
//!   covariance parametrisation and expected REML information).
//!
//! No `n x n` matrix is ever formed: with the marginal covariance
//! `Sigma = sigma^2 (W^-1 + Z Lambda Lambda' Z')` everything is written in the
//! random-effects space through `M = Z' Sigma^-1 Z`, `N = Z' Sigma^-1 X` and
//! `v = Z' P y` (Woodbury). When all terms share one grouping factor `M` is
//! block diagonal and the work is done per cluster.

mod error;
mod linalg;
mod qspace;

pub use error::InferenceError;
/// Dense matrix type of the results (re-exported so the glue needs no faer dependency).
pub use faer::Mat;
pub use qspace::{
    kenward_roger, satterthwaite, KenwardRoger, ModelInput, Satterthwaite, TermInput,
};
