//! Small-sample inference for linear mixed models fitted by lmmr.
//!
//! Works on the core's kept [`Model`](lmmr_core::Model) (its blocks, its
//! factorisation, its validation and its error type): [`QSpace::new`] asks
//! the model for the random-effects-space moments at `(theta, sigma)`
//! ([`lmmr_core::InferenceMoments`]) and this crate computes
//!
//! * the pieces of Satterthwaite's method as lmerTest does it: the observed
//!   Hessian of the (REML or ML) deviance as a function of
//!   `varpar = (theta, sigma)`, the covariance of `varpar` (`2 H^-1`) and the
//!   Jacobian of `Cov(beta)` with respect to `varpar` — all analytically;
//! * the Kenward-Roger adjusted covariance of `beta` and the matrices needed
//!   for the Kenward-Roger denominator degrees of freedom (pbkrtest's linear
//!   covariance parametrisation and expected REML information).
//!
//! No `n x n` matrix and, for crossed designs, no dense `q x q` matrix is
//! formed (see the core's `moments` module).

mod linalg;
mod qspace;
#[cfg(test)]
#[allow(dead_code)]
mod reference;
#[cfg(test)]
mod tests;

/// Dense matrix type of the results (re-exported so the glue needs no faer dependency).
pub use faer::Mat;
pub use lmmr_core::LmmError;
pub use qspace::{kenward_roger, satterthwaite, KenwardRoger, QSpace, Satterthwaite};
