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
mod budget;
mod error;
mod factor;
mod input;
mod model;
mod optim;
mod precondition;
mod solve;

#[cfg(test)]
mod reference;

pub use blocks::MAX_REST_COLUMNS;
pub use error::LmmError;
pub use input::{check_weights, FitInput, ReTermInput};
pub use model::{Design, Evaluation, Model, ReTerm};

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
    /// Time budget of the optimisation in seconds (`None`: no budget). When
    /// it is spent the fit stops at the best point reached, reported as not
    /// converged with `time_budget_spent = true`.
    pub max_time: Option<f64>,
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
            max_time: None,
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
    /// The optimisation stopped because its time budget was spent.
    pub time_budget_spent: bool,
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
    /// Time budget and best point of the optimisation under way (see
    /// [`Prepared::eval`]); `None` outside an optimisation.
    budget: Option<budget::Budget>,
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
            budget: None,
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

    /// Starts the time budget (and the record of the best point) of an
    /// optimisation: `max_time` seconds, `None` for no limit.
    pub(crate) fn start_budget(&mut self, max_time: Option<f64>) {
        self.budget = Some(budget::Budget::new(max_time));
    }

    /// Ends the optimisation's budget and returns it (with the best point).
    pub(crate) fn take_budget(&mut self) -> budget::Budget {
        self.budget
            .take()
            .unwrap_or_else(|| budget::Budget::new(None))
    }

    /// The criterion at `theta`. Every evaluation the optimiser makes goes
    /// through here: it polls for interrupts and, during an optimisation,
    /// refuses with [`LmmError::TimeBudget`] once the budget is spent and
    /// records the best point (so that whatever optimiser is used, a fit
    /// that runs out of time or fails at a trial point can stop there).
    pub(crate) fn eval(
        &mut self,
        theta: &[f64],
        reml: bool,
    ) -> Result<factor::Criterion, LmmError> {
        if theta.iter().any(|t| !t.is_finite()) {
            return Err(LmmError::NonFinite("theta is not finite".into()));
        }
        self.check_interrupt()?;
        if let Some(b) = &self.budget {
            b.check()?;
        }
        self.ws.set_theta(&self.blocks, theta);
        let crit = evaluate(&self.blocks, &mut self.ws, reml)?;
        if let Some(b) = &mut self.budget {
            b.record(crit.value, theta);
        }
        Ok(crit)
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
            let r = optim::minimize(&mut f, &alt, lower, control.max_iter, control.tol);
            let Some(mut cand) = unless_trial_point(r)? else {
                continue;
            };
            let Some(cand_f) = unless_trial_point(f(&cand.x))? else {
                continue;
            };
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

/// A restart that fails at a trial point (see [`at_trial_point`]) is
/// abandoned (`None`): the fit from the first start stands. Other errors
/// (a spent time budget, an interrupt) propagate.
fn unless_trial_point<T>(r: Result<T, LmmError>) -> Result<Option<T>, LmmError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if at_trial_point(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Is `e` a failure of the criterion at one trial point (a numerically
/// singular factorisation) rather than a property of the data? A perfect fit
/// (penalised residual sum of squares not positive: the random effects
/// reproduce the response) is the latter.
pub(crate) fn at_trial_point(e: &LmmError) -> bool {
    match e {
        LmmError::NotPositiveDefinite(_) => true,
        LmmError::NonFinite(m) => !m.contains("perfect fit"),
        _ => false,
    }
}

/// lme4's default start (1 on the diagonals), or, when the criterion cannot
/// be evaluated there, the first of that start scaled by 10^-1, ..., 10^-10
/// at which it can: a random-effect covariate on a large scale (say 1e5)
/// makes theta = 1 a numerically singular point (the random effects absorb
/// the fixed-effect columns to machine precision) although smaller values
/// are fine. The error at the default start is returned if none works.
pub(crate) fn usable_default_start(
    prep: &mut Prepared,
    input: &FitInput,
    reml: bool,
) -> Result<Vec<f64>, LmmError> {
    let start = input::default_start(input);
    let first = match prep.eval(&start, reml) {
        Ok(_) => return Ok(start),
        Err(e @ (LmmError::NotPositiveDefinite(_) | LmmError::NonFinite(_))) => e,
        Err(e) => return Err(e),
    };
    for k in 1..=10 {
        let scale = 10f64.powi(-k);
        let cand: Vec<f64> = start.iter().map(|t| t * scale).collect();
        if prep.eval(&cand, reml).is_ok() {
            return Ok(cand);
        }
    }
    Err(first)
}

/// The result of an optimisation whose time budget was spent: the best
/// point evaluated (the start if none), not converged. The gradient is
/// computed only for a few parameters (it costs one evaluation each).
pub(crate) fn stopped_at_best(
    prep: &mut Prepared,
    reml: bool,
    budget: budget::Budget,
    start: &[f64],
    lower: &[f64],
    msg: String,
) -> Result<optim::OptResult, LmmError> {
    let mut n_eval = budget.n_eval;
    let x = budget
        .best
        .map(|(_, x)| x)
        .unwrap_or_else(|| start.to_vec());
    let grad = if x.len() <= 10 {
        optim::fd_gradient(
            &mut |th: &[f64]| prep.eval(th, reml).map(|c| c.value),
            &x,
            &mut n_eval,
        )
        .unwrap_or_else(|_| vec![f64::NAN; x.len()])
    } else {
        vec![f64::NAN; x.len()]
    };
    Ok(optim::OptResult {
        at_bound: x.iter().zip(lower).map(|(a, b)| a <= b).collect(),
        x,
        grad,
        n_eval,
        converged: false,
        message: msg,
    })
}
