//! R-free numerics of `lmmr`: profiled (RE)ML fitting of linear mixed models
//! with lme4's parameterisation (Bates et al. 2015), using a blocked
//! factorisation.
//!
//! Model: `y = X beta + Z b + e`, `b = Lambda u`, `u ~ N(0, sigma^2 I)`,
//! `e ~ N(0, sigma^2 W^{-1})`. The random-effects columns on the grouping
//! factor with the most columns are handled level by level (block diagonal);
//! all other random-effects columns are kept in a dense block together with
//! `X` and `y`. Crossed designs with several large factors therefore need a
//! dense matrix of the size of the smaller factors' columns; more than
//! [`MAX_REST_COLUMNS`] such columns is refused with [`LmmError::TooLarge`].

#![allow(clippy::needless_range_loop)] // index loops are clearer in dense numerics

mod blocks;
mod error;
mod factor;
mod input;
mod model;
mod optim;
mod precondition;
mod rcov;
mod solve;

#[cfg(test)]
mod reference;

pub use blocks::MAX_REST_COLUMNS;
pub use error::LmmError;
pub use input::{FitInput, ReTermInput};
pub use model::{Design, Evaluation, Model, ReTerm};
pub use rcov::{
    fit_rcov, rcov_criterion, rcov_criterion_gradient, CovType, RcovControl, RcovInput, RcovOutput,
    RcovTerm,
};

use blocks::Blocks;
use factor::{evaluate, Workspace};

/// Options of [`fit_lmm`].
#[derive(Debug, Clone, PartialEq)]
pub struct FitControl {
    /// REML (true) or ML (false).
    pub reml: bool,
    /// Maximum number of optimiser iterations (Newton steps).
    pub max_iter: usize,
    /// Relative tolerance on the predicted decrease of a Newton step.
    pub tol: f64,
    /// Starting value; lme4's default (1 on diagonals, 0 elsewhere) if `None`.
    pub theta_start: Option<Vec<f64>>,
    /// If false, only evaluate at `theta_start` (or the default start).
    pub optimize: bool,
    /// Number of observations when the rows of the input are pseudo-rows
    /// that reproduce the data's cross-products (a fit from sufficient
    /// statistics); `None`: the number of input rows.
    pub n_obs: Option<usize>,
    /// `sum(log(w))` of the data's prior weights in that case (the
    /// pseudo-rows have unit weights).
    pub log_w_sum: Option<f64>,
}

impl Default for FitControl {
    fn default() -> Self {
        FitControl {
            reml: true,
            max_iter: 200,
            tol: 1e-12,
            theta_start: None,
            optimize: true,
            n_obs: None,
            log_w_sum: None,
        }
    }
}

/// Result of [`fit_lmm`].
#[derive(Debug, Clone, PartialEq)]
pub struct FitOutput {
    pub theta: Vec<f64>,
    pub lower: Vec<f64>,
    pub beta: Vec<f64>,
    pub sigma: f64,
    /// REML criterion or ML deviance at `theta`.
    pub objective: f64,
    /// log |L|^2.
    pub ldl2: f64,
    /// log |R_X|^2.
    pub ldrx2: f64,
    /// Penalised weighted residual sum of squares.
    pub pwrss: f64,
    /// `p x p` column-major, scaled by sigma^2.
    pub vcov_beta: Vec<f64>,
    /// Random effects `Lambda u`, length q, term-major then level-major.
    pub b: Vec<f64>,
    /// Per term: `k*k*G`, column-major `k x k` blocks level after level.
    pub cond_var: Vec<Vec<f64>>,
    pub fitted: Vec<f64>,
    /// Finite-difference gradient of the objective at `theta`.
    pub gradient: Vec<f64>,
    pub at_bound: Vec<bool>,
    pub n_eval: usize,
    pub converged: bool,
    pub message: String,
}

/// Asks whether the user wants to stop (e.g. R's pending Ctrl-C); called by
/// the criterion evaluations at most every [`INTERRUPT_EVERY`].
pub type InterruptCheck = fn() -> bool;

/// Minimum time between two interrupt checks.
const INTERRUPT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Cross-product blocks and workspace of a (preconditioned) model: what every
/// evaluation of the criterion needs.
pub(crate) struct Prepared {
    pub(crate) blocks: Blocks,
    pub(crate) ws: Workspace,
    interrupt: Option<InterruptCheck>,
    pub(crate) last_check: std::time::Instant,
}

impl Prepared {
    /// `input` must have been validated.
    pub(crate) fn new(input: &FitInput) -> Result<Prepared, LmmError> {
        let blocks = Blocks::build(input)?;
        let ws = Workspace::new(&blocks);
        Ok(Prepared {
            blocks,
            ws,
            interrupt: None,
            last_check: std::time::Instant::now(),
        })
    }

    pub(crate) fn set_interrupt(&mut self, check: Option<InterruptCheck>) {
        self.interrupt = check;
    }

    fn check_interrupt(&mut self) -> Result<(), LmmError> {
        if let Some(check) = self.interrupt {
            if self.last_check.elapsed() >= INTERRUPT_EVERY {
                self.last_check = std::time::Instant::now();
                if check() {
                    return Err(LmmError::Interrupted);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn eval(
        &mut self,
        theta: &[f64],
        reml: bool,
    ) -> Result<factor::Criterion, LmmError> {
        if theta.iter().any(|t| !t.is_finite()) {
            return Err(LmmError::NonFinite("theta is not finite".into()));
        }
        self.check_interrupt()?;
        self.ws.set_theta(&self.blocks, theta);
        evaluate(&self.blocks, &mut self.ws, reml)
    }
}

/// Profiled REML criterion or ML deviance at a fixed `theta`.
pub fn evaluate_criterion(input: &FitInput, theta: &[f64], reml: bool) -> Result<f64, LmmError> {
    input::validate(input)?;
    input::check_theta(input, theta)?;
    Model::new(Design::from_input(input))?.criterion(theta, reml)
}

/// What the transformation in `precondition` subtracts from the criterion:
/// `log |R|^2` (REML only) and the response scale.
pub(crate) fn criterion_shift(
    n: usize,
    p: usize,
    pre: &precondition::Preconditioned,
    reml: bool,
) -> f64 {
    let dof = if reml { n - p } else { n } as f64;
    let scale_term = dof * 2.0 * pre.scale.ln();
    if reml {
        pre.log_det_r2 + scale_term
    } else {
        scale_term
    }
}

/// Fits the model: optimises the profiled criterion over theta (unless
/// `control.optimize` is false) and returns the estimates at the optimum.
/// A thin wrapper: builds a [`Model`] and fits it.
pub fn fit_lmm(input: &FitInput, control: &FitControl) -> Result<FitOutput, LmmError> {
    input::validate(input)?;
    Model::new(Design::from_input(input))?.fit(control)
}

/// Minimises the profiled criterion over theta from `start` (with restarts
/// from the boundary and from mirrored columns). `input` is the
/// (preconditioned) design `prep` was built from. The one place where the
/// optimiser is called.
pub(crate) fn optimize_theta(
    prep: &mut Prepared,
    input: &FitInput,
    start: &[f64],
    lower: &[f64],
    control: &FitControl,
) -> Result<optim::OptResult, LmmError> {
    let reml = control.reml;
    let mut f = |th: &[f64]| prep.eval(th, reml).map(|c| c.value);
    let mut best = optim::minimize(&mut f, start, lower, control.max_iter, control.tol)?;
    let mut best_f = f(&best.x)?;
    // Escape boundary points whose mirror image (see
    // `input::column_sign_flips`) has a descent direction.
    // A fit that ends on the boundary may sit in a local minimum of a
    // multimodal profile: try a few other starts once, keep the best.
    let on_boundary = best.x.iter().zip(lower).any(|(x, l)| *l == 0.0 && x <= l);
    let mut extra = if on_boundary {
        input::boundary_restarts(&best.x, lower, start)
    } else {
        Vec::new()
    };
    for _round in 0..4 {
        let mut improved = false;
        let mut alts = input::column_sign_flips(input, &best.x);
        alts.append(&mut extra);
        for alt in alts {
            let mut cand = optim::minimize(&mut f, &alt, lower, control.max_iter, control.tol)?;
            let cand_f = f(&cand.x)?;
            if cand_f < best_f - 1e-10 * (1.0 + best_f.abs()) {
                cand.n_eval += best.n_eval;
                best = cand;
                best_f = cand_f;
                improved = true;
                break;
            }
            best.n_eval += cand.n_eval;
        }
        if !improved {
            break;
        }
    }
    Ok(best)
}
