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
mod optim;
mod precondition;
mod solve;

#[cfg(test)]
mod reference;

pub use blocks::MAX_REST_COLUMNS;
pub use error::LmmError;
pub use input::{check_weights, FitInput, ReTermInput};

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

/// A prepared model: validated input, cross-product blocks and workspace.
struct Prepared {
    blocks: Blocks,
    ws: Workspace,
}

impl Prepared {
    fn new(input: &FitInput) -> Result<Prepared, LmmError> {
        input::validate(input)?;
        let blocks = Blocks::build(input)?;
        let ws = Workspace::new(&blocks);
        Ok(Prepared { blocks, ws })
    }

    fn eval(&mut self, theta: &[f64], reml: bool) -> Result<factor::Criterion, LmmError> {
        if theta.iter().any(|t| !t.is_finite()) {
            return Err(LmmError::NonFinite("theta is not finite".into()));
        }
        self.ws.set_theta(&self.blocks, theta);
        evaluate(&self.blocks, &mut self.ws, reml)
    }
}

/// Profiled REML criterion or ML deviance at a fixed `theta`.
pub fn evaluate_criterion(input: &FitInput, theta: &[f64], reml: bool) -> Result<f64, LmmError> {
    input::validate(input)?;
    input::check_theta(input, theta)?;
    let pre = precondition::precondition(input)?;
    let transformed = FitInput {
        x: &pre.q,
        y: &pre.y,
        ..input.clone()
    };
    let mut prep = Prepared::new(&transformed)?;
    Ok(prep.eval(theta, reml)?.value + criterion_shift(input, &pre, reml))
}

/// What the transformation in `precondition` subtracts from the criterion:
/// `log |R|^2` (REML only) and the response scale.
fn criterion_shift(input: &FitInput, pre: &precondition::Preconditioned, reml: bool) -> f64 {
    let n_obs = input::n_effective(input);
    let dof = if reml { n_obs - input.p } else { n_obs } as f64;
    let scale_term = dof * 2.0 * pre.scale.ln();
    if reml {
        pre.log_det_r2 + scale_term
    } else {
        scale_term
    }
}

/// Fits the model: optimises the profiled criterion over theta (unless
/// `control.optimize` is false) and returns the estimates at the optimum.
pub fn fit_lmm(input: &FitInput, control: &FitControl) -> Result<FitOutput, LmmError> {
    input::validate(input)?;
    // Fit the transformed problem (see `precondition`); map results back below.
    let original = input;
    let pre = precondition::precondition(input)?;
    let transformed = FitInput {
        x: &pre.q,
        y: &pre.y,
        ..input.clone()
    };
    let input = &transformed;
    let mut prep = Prepared::new(input)?;
    let lower = input::lower_bounds(input);
    let reml = control.reml;
    let start = match &control.theta_start {
        Some(t) => {
            input::check_theta(input, t)?;
            t.clone()
        }
        None if control.optimize => usable_default_start(&mut prep, input, reml)?,
        None => input::default_start(input),
    };
    let mut budget = budget::Budget::new(control.max_time);
    let mut time_budget_spent = false;
    let opt = if control.optimize {
        let result = {
            let mut raw = |th: &[f64]| prep.eval(th, reml).map(|c| c.value);
            let mut f = |th: &[f64]| budget.eval(&mut raw, th);
            optimise_with_restarts(&mut f, input, &start, &lower, control)
        };
        match result {
            Ok(best) => best,
            Err(LmmError::TimeBudget(msg)) => {
                time_budget_spent = true;
                stopped_at_best(&mut prep, reml, budget, &start, &lower, msg)?
            }
            // The criterion failed at a trial point far from where the
            // optimisation had got to (a numerically singular corner of the
            // parameter space): keep the best point reached, not converged,
            // rather than refusing a model whose criterion we can evaluate.
            // (A perfect fit is a property of the data: it stays an error.)
            Err(e) if budget.best.is_some() && at_trial_point(&e) => {
                let msg = format!(
                    "the criterion could not be evaluated at a trial point ({e}); stopped at the best point reached"
                );
                stopped_at_best(&mut prep, reml, budget, &start, &lower, msg)?
            }
            Err(e) => return Err(e),
        }
    } else {
        let mut n_eval = 0;
        let grad = optim::fd_gradient(
            &mut |th: &[f64]| prep.eval(th, reml).map(|c| c.value),
            &start,
            &mut n_eval,
        )?;
        optim::OptResult {
            at_bound: start.iter().zip(&lower).map(|(a, b)| a <= b).collect(),
            x: start,
            grad,
            n_eval,
            converged: true,
            message: "evaluated at theta_start without optimisation".into(),
        }
    };
    let crit = prep.eval(&opt.x, reml)?;
    let sol = solve::solve(input, &prep.blocks, &mut prep.ws, crit.pwrss, reml)?;
    let back = precondition::map_back(original, &pre, sol);
    let shift = criterion_shift(original, &pre, reml);
    Ok(FitOutput {
        theta: opt.x,
        lower,
        beta: back.beta,
        sigma: back.sigma,
        objective: crit.value + shift,
        ldl2: crit.ldl2,
        ldrx2: crit.ldrx2 + pre.log_det_r2,
        pwrss: crit.pwrss * pre.scale * pre.scale,
        vcov_beta: back.vcov_beta,
        b: back.b,
        cond_var: back.cond_var,
        fitted: back.fitted,
        gradient: opt.grad,
        at_bound: opt.at_bound,
        n_eval: opt.n_eval + 1,
        converged: opt.converged,
        message: opt.message,
        time_budget_spent,
    })
}

/// Minimises from `start`, then from the alternative starts of a boundary
/// fit (see `input::boundary_restarts` and `input::column_sign_flips`),
/// keeping the best.
fn optimise_with_restarts<F>(
    f: &mut F,
    input: &FitInput,
    start: &[f64],
    lower: &[f64],
    control: &FitControl,
) -> Result<optim::OptResult, LmmError>
where
    F: FnMut(&[f64]) -> Result<f64, LmmError>,
{
    let mut best = optim::minimize(&mut *f, start, lower, control.max_iter, control.tol)?;
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
            // a restart that runs into a numerically singular point is
            // abandoned; the fit from the first start stands
            let mut cand =
                match optim::minimize(&mut *f, &alt, lower, control.max_iter, control.tol) {
                    Ok(c) => c,
                    Err(e) if at_trial_point(&e) => continue,
                    Err(e) => return Err(e),
                };
            let cand_f = match f(&cand.x) {
                Ok(v) => v,
                Err(e) if at_trial_point(&e) => continue,
                Err(e) => return Err(e),
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

/// Is `e` a failure of the criterion at one trial point (a numerically
/// singular factorisation) rather than a property of the data? A perfect fit
/// (penalised residual sum of squares not positive: the random effects
/// reproduce the response) is the latter.
fn at_trial_point(e: &LmmError) -> bool {
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
fn usable_default_start(
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
fn stopped_at_best(
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
