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
//!
//! The same kept [`Model`] (blocks and factorisation) provides the
//! random-effects-space moments that Satterthwaite and Kenward-Roger need
//! ([`Model::inference_moments`], module `moments`), so the inference crate
//! never rebuilds cross-products or forms a dense `q x q` matrix.

#![allow(clippy::needless_range_loop)] // index loops are clearer in dense numerics

mod blocks;
mod budget;
mod chunk;
mod columns;
mod error;
mod factor;
mod grad;
mod input;
mod model;
mod moments;
mod optim;
mod pass;
mod precondition;
mod rcov;
mod refit;
mod scatter;
mod solve;

#[cfg(test)]
mod reference;

pub use blocks::MAX_REST_COLUMNS;
pub use columns::{fill_columns, Component};
pub use error::LmmError;
pub use input::{check_weights, FitInput, ReTermInput};
pub use model::{Design, Evaluation, Model, ReTerm};
pub use moments::InferenceMoments;
pub use precondition::{binary_columns, cross_products, Kept, Values};
pub use rcov::{
    fit_rcov, rcov_criterion, rcov_criterion_gradient, rcov_inference, CovType, RcovControl,
    RcovInference, RcovInput, RcovModel, RcovOutput, RcovTerm,
};
pub use refit::RefitEstimates;

use blocks::Blocks;
use factor::{evaluate, Workspace};
use optim::{Objective, OptResult};

/// Options of [`fit_lmm`].
#[derive(Debug, Clone, PartialEq)]
pub struct FitControl {
    /// REML (true) or ML (false).
    pub reml: bool,
    /// Maximum number of quasi-Newton iterations per optimiser run.
    pub max_iter: usize,
    /// Relative tolerance on the decrease of the criterion predicted by a
    /// Newton step (with the finite-difference Hessian at the end point).
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
    /// Restart from other points (term zeroed, asymmetric and scaled starts,
    /// boundary restarts) to guard against local optima. Refits of a
    /// simulated response warm-started at the fit's estimates turn it off;
    /// a run whose optimum cannot be confirmed is restarted regardless.
    pub restarts: bool,
}

impl Default for FitControl {
    fn default() -> Self {
        FitControl {
            reml: true,
            max_iter: 1000,
            tol: 1e-12,
            theta_start: None,
            optimize: true,
            n_obs: None,
            log_w_sum: None,
            max_time: None,
            restarts: true,
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
    /// Analytic gradient of the objective at `theta`.
    pub gradient: Vec<f64>,
    pub at_bound: Vec<bool>,
    /// Criterion evaluations (each gradient evaluation includes one).
    pub n_eval: usize,
    /// Gradient evaluations.
    pub n_grad: usize,
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
    /// The theta (and REML flag) whose factorisation `ws` holds, its
    /// criterion and, once computed, its gradient: a gradient asked for at
    /// the point just evaluated (a line search accepting a trial point)
    /// reuses the factorisation. Cleared by [`Prepared::invalidate`].
    at: Option<At>,
}

struct At {
    theta: Vec<f64>,
    reml: bool,
    crit: factor::Criterion,
    grad: Option<Vec<f64>>,
}

impl Prepared {
    /// The blocks of `input` (validated) with its fixed-effects columns read
    /// from `xq` (the `x` of `input` is not used), built on `threads` threads
    /// (0: all cores; the blocks do not depend on it).
    pub(crate) fn new_view(
        input: &FitInput,
        xq: precondition::QView,
        threads: usize,
    ) -> Result<Prepared, LmmError> {
        let mut blocks = Blocks::build_view(input, xq, threads)?;
        // The response parts again, by the code that replaces them for a
        // new response: a kept model whose response is set back to the
        // original is then bit-identical to the fresh one (refit loops
        // leave no trace in later results; the fused pass sums in another
        // order).
        blocks.set_response_view(input, xq, threads)?;
        let ws = Workspace::with_threads(&blocks, threads);
        Ok(Prepared {
            blocks,
            ws,
            interrupt: None,
            last_check: std::time::Instant::now(),
            budget: None,
            at: None,
        })
    }

    /// Forgets which theta the workspace was factorised at: to be called
    /// whenever the blocks change or code outside [`Prepared::eval`] and
    /// [`Prepared::eval_grad`] works in the workspace.
    pub(crate) fn invalidate(&mut self) {
        self.at = None;
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
        let crit = match &self.at {
            Some(at) if at.reml == reml && at.theta == theta => at.crit,
            _ => {
                self.at = None;
                self.ws.set_theta(&self.blocks, theta);
                let crit = evaluate(&self.blocks, &mut self.ws, reml)?;
                self.at = Some(At {
                    theta: theta.to_vec(),
                    reml,
                    crit,
                    grad: None,
                });
                crit
            }
        };
        if let Some(b) = &mut self.budget {
            b.record(crit.value, theta);
        }
        Ok(crit)
    }

    /// Rough number of floating-point operations of one evaluation.
    fn eval_cost(&self) -> f64 {
        let bl = &self.blocks;
        let d = bl.d() as f64;
        let levels: f64 = (0..bl.g1)
            .map(|j| {
                let m = (bl.r_ptr[j + 1] - bl.r_ptr[j] + bl.p + 1) as f64;
                bl.k1 as f64 * m * m
            })
            .sum();
        d * d * d / 3.0 + levels
    }

    /// Criterion and its analytic gradient with respect to theta.
    pub(crate) fn eval_grad(
        &mut self,
        theta: &[f64],
        reml: bool,
    ) -> Result<(factor::Criterion, Vec<f64>), LmmError> {
        let crit = self.eval(theta, reml)?;
        if let Some(At { grad: Some(g), .. }) = &self.at {
            return Ok((crit, g.clone()));
        }
        let g = grad::gradient(&self.blocks, &mut self.ws, &crit, reml)?;
        if let Some(at) = &mut self.at {
            at.grad = Some(g.clone());
        }
        Ok((crit, g))
    }
}

/// Profiled REML criterion or ML deviance at a fixed `theta`.
pub fn evaluate_criterion(input: &FitInput, theta: &[f64], reml: bool) -> Result<f64, LmmError> {
    input::validate(input)?;
    input::check_theta(input, theta)?;
    Model::new(Design::from_input(input))?.criterion(theta, reml)
}

/// The profiled criterion of a prepared model as an optimiser objective, in
/// the coordinates `x = A theta` of [`input::ThetaMap`].
struct PreparedObjective<'a> {
    prep: &'a mut Prepared,
    reml: bool,
    map: input::ThetaMap,
    /// Checked runs start from the Hessian by differences (see
    /// [`optim::minimize`]) where an evaluation is expensive.
    initial_hessian: bool,
}

impl PreparedObjective<'_> {
    /// [`optim::minimize`] from `theta0`, with the result in theta.
    fn minimize(
        &mut self,
        theta0: &[f64],
        lower: &[f64],
        max_iter: usize,
        tol: f64,
        check: bool,
    ) -> Result<OptResult, LmmError> {
        let x0 = self.map.to_x(theta0);
        let lx = self.map.bounds_to_x(lower);
        let h0 = check && self.initial_hessian;
        let mut r = optim::minimize(self, &x0, &lx, max_iter, tol, check, h0)?;
        r.x = self.map.to_theta(&r.x);
        // entries numerically at their bound after the back-transformation
        for (v, l) in r.x.iter_mut().zip(lower) {
            if *v < *l {
                *v = *l;
            }
        }
        r.grad = self.map.grad_to_theta(&r.grad);
        Ok(r)
    }
}

impl Objective for PreparedObjective<'_> {
    fn value(&mut self, x: &[f64]) -> Result<f64, LmmError> {
        let theta = self.map.to_theta(x);
        self.prep.eval(&theta, self.reml).map(|c| c.value)
    }
    fn value_grad(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>), LmmError> {
        let theta = self.map.to_theta(x);
        let (c, g) = self.prep.eval_grad(&theta, self.reml)?;
        Ok((c.value, self.map.grad_to_x(&g)))
    }
}

/// How a restart of [`optimize_theta`] runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Restart {
    /// Quasi-Newton only, in the model's coordinates.
    Plain,
    /// Quasi-Newton only, in the per-entry scaled (diagonal) coordinates.
    DiagonalMap,
    /// With the end-point check.
    Checked,
}

/// Optimises theta from `start` over `theta >= lower`, with the restarts
/// that guard against local and mirror-image optima:
/// * a fit that ends on the boundary (or whose optimum could not be
///   confirmed) is restarted from a few other points (`boundary_restarts`);
/// * a zero diagonal with a non-zero column below it is restarted from its
///   mirror image (`column_sign_flips`), whose gradient differs in sign.
///
/// The best end point is kept; evaluations of all runs are counted.
pub(crate) fn optimize_theta(
    prep: &mut Prepared,
    input: &FitInput,
    start: &[f64],
    lower: &[f64],
    control: &FitControl,
) -> Result<OptResult, LmmError> {
    let mut obj = PreparedObjective {
        prep,
        reml: control.reml,
        map: input::ThetaMap::new(input, lower),
        initial_hessian: false,
    };
    // Where one evaluation costs more than ~1e8 flops (a dense block of the
    // later factors beyond ~700 columns, e.g. InstEval's lecturers) the
    // first run starts from the Hessian by differences: fewer, Newton-like
    // iterations. Not for cheap models: from lme4's start its first steps
    // can lead into a direction where the criterion is unbounded and past a
    // finite local optimum that unit steps find (harness cases 1460, 1199).
    obj.initial_hessian = obj.prep.eval_cost() > 1e8;
    let (max_iter, tol) = (control.max_iter, control.tol);
    let mut best = obj.minimize(start, lower, max_iter, tol, true)?;
    // The best confirmed optimum at finite theta: where the criterion turns
    // out to be unbounded elsewhere (a perfect fit as variances grow), this
    // local optimum is what lme4 returns, and what the user gets (warned).
    let finite = |r: &OptResult| r.converged && r.x.iter().all(|v| v.abs() <= 1e6);
    let mut best_finite = if finite(&best) {
        Some(best.clone())
    } else {
        None
    };
    // On or next to the boundary (a singular fit).
    let on_boundary = best
        .x
        .iter()
        .zip(lower)
        .any(|(x, l)| *l == 0.0 && *x <= 1e-4);
    // Small models get extra restarts (a term set to zero, an asymmetric
    // start, scaled starts) when they are cheap: at most about 1e9
    // floating-point operations for the first run's evaluations (each
    // gradient counted as four evaluations).
    let first_cost = obj.prep.eval_cost() * (best.n_eval + 4 * best.n_grad) as f64;
    let small = control.restarts && lower.len() <= 10 && first_cost <= 1e9;
    let trace = std::env::var_os("LMMR_OPTIM_TRACE").is_some();
    if trace {
        eprintln!(
            "[optim] first run: f = {:.10}, evals {}, grads {}, converged {}, {}",
            best.f, best.n_eval, best.n_grad, best.converged, best.message
        );
    }
    // The scaled restarts are full optimisations: only for small models,
    // where they cost milliseconds. `checked_runs` run with the end-point
    // check (which escapes saddle points on the way, as the first run does);
    // `secondary` holds restarts from their end points.
    let mut checked_runs: Vec<Vec<f64>> = Vec::new();
    let mut secondary: Vec<Vec<f64>> = Vec::new();
    let mut extra = if (control.restarts && on_boundary) || !best.converged || small {
        let mut r = input::boundary_restarts(&best.x, lower, start);
        if lower.len() > 8 && best.converged {
            r.truncate(1);
        }
        r
    } else {
        Vec::new()
    };
    if small {
        extra.extend(input::term_zero_restarts(input, &best.x));
        if input.terms.len() > 1 {
            extra.push(input::asymmetric_start(input, start));
        }
        // lme4's start with every off-diagonal entry at +0.5 and at -0.5:
        // from the uncorrelated start the search can stay near zero
        // correlations and end in a worse basin (harness cases 8018, 6743:
        // 1.1e-5 and 1.4e-3 above lme4, "converged"; from these starts
        // below lme4)
        if lower.iter().any(|l| !l.is_finite()) {
            for v in [0.5, -0.5] {
                checked_runs.push(
                    start
                        .iter()
                        .zip(lower)
                        .map(|(s, l)| if l.is_finite() { *s } else { v })
                        .collect(),
                );
            }
        }
    }
    // The default start in the optimiser's coordinates: each term's
    // orthonormalised covariates start at one residual sd of contribution,
    // not at one residual sd per unit of the covariate (a different basin
    // when a covariate is in the thousands). For small models, for any model
    // whose first run could not be confirmed, and for any model whose map is
    // far from the identity (a covariate scale beyond 10 or below 0.1, or
    // strongly correlated covariates, where the two starts differ by orders
    // of magnitude).
    let extreme = obj.map.extreme();
    if (small || !best.converged || extreme) && obj.map.differs_from_identity() {
        // first: where it finds the better basin, the mirror images of the
        // next round start from there
        extra.insert(0, obj.map.to_theta(start));
    }
    // Each restart gets at most three times the first run's iterations (at
    // least 100): a restart that wanders on a criterion flat to rounding
    // (a random slope on a covariate in the millions started at theta = 1,
    // harness case 960: 47,668 evaluations) is cut short; one that ends
    // better is continued with the full budget by the check below.
    let restart_iter = max_iter.min((3 * best.n_grad).max(100));
    // Small models whose map orthonormalises correlated covariates are also
    // restarted from lme4's start in the per-entry scaled coordinates (the
    // diagonal map), whose path can end in another basin (harness case
    // 1426, an uncentred `(x2 | g2)`: 523.098 against 522.729).
    let mut diag_runs: Vec<Vec<f64>> = Vec::new();
    let diag_map = if small && obj.map.is_triangular() {
        diag_runs.push(start.to_vec());
        Some(input::ThetaMap::new_diagonal(input))
    } else {
        None
    };
    for _round in 0..4 {
        let mut improved = false;
        let gtol = 1e-9 * (1.0 + best.f.abs());
        let mut alts: Vec<(Vec<f64>, Restart)> =
            input::column_sign_flips(input, &best.x, &best.grad, gtol)
                .into_iter()
                .map(|a| (a, Restart::Plain))
                .collect();
        alts.extend(extra.drain(..).map(|a| (a, Restart::Plain)));
        alts.extend(diag_runs.drain(..).map(|a| (a, Restart::DiagonalMap)));
        alts.extend(checked_runs.drain(..).map(|a| (a, Restart::Checked)));
        for (alt, kind) in alts {
            // The boundary reset of a point off the boundary is the point
            // itself: a plain run from the best point ends where it starts.
            if kind == Restart::Plain && alt == best.x {
                continue;
            }
            // A restart whose start cannot be evaluated is skipped.
            let res = match (kind, diag_map.as_ref()) {
                (Restart::DiagonalMap, Some(dm)) => {
                    let main = std::mem::replace(&mut obj.map, dm.clone());
                    let r = obj.minimize(&alt, lower, restart_iter, tol, false);
                    obj.map = main;
                    r
                }
                _ => obj.minimize(&alt, lower, restart_iter, tol, kind == Restart::Checked),
            };
            let Ok(mut cand) = res else {
                continue;
            };
            if trace {
                eprintln!(
                    "[optim] restart: f = {:.10}, evals {}, grads {}, converged {}",
                    cand.f, cand.n_eval, cand.n_grad, cand.converged
                );
            }
            let scale = 1.0 + best.f.abs();
            let better = cand.f < best.f - 1e-10 * scale
                || (!best.converged && cand.converged && cand.f <= best.f + 1e-10 * scale);
            if better {
                // Check (and continue from) the better end point.
                let (ne, ng) = (cand.n_eval, cand.n_grad);
                if let Ok(c) = obj.minimize(&cand.x, lower, max_iter, tol, true) {
                    cand = c;
                } else {
                    cand.converged = false;
                }
                cand.n_eval += ne;
                cand.n_grad += ng;
            }
            if better {
                if finite(&cand) && best_finite.as_ref().is_none_or(|b| cand.f < b.f) {
                    best_finite = Some(cand.clone());
                }
                cand.n_eval += best.n_eval;
                cand.n_grad += best.n_grad;
                best = cand;
                improved = true;
                // the remaining alternatives are still tried against the
                // new best point (the next round adds its mirror images)
                continue;
            }
            if kind == Restart::Checked && cand.converged {
                // the end point of a checked run from a correlated start:
                // its mirror images and its zero diagonals restarted at 1
                // (case 6743: from there lmm reaches below lme4's optimum)
                secondary.extend(input::column_sign_flips(input, &cand.x, &cand.grad, gtol));
                let reset = input::boundary_restarts(&cand.x, lower, start).swap_remove(0);
                if reset != cand.x {
                    secondary.push(reset);
                }
            }
            best.n_eval += cand.n_eval;
            best.n_grad += cand.n_grad;
        }
        if !improved && secondary.is_empty() {
            break;
        }
        extra.append(&mut secondary);
    }
    // theta beyond 1e6 (random-effect sd a million times the residual sd)
    // cannot be confirmed as an optimum: the criterion keeps decreasing as a
    // variance grows. When the penalised residual sum of squares vanishes
    // on the way, the random effects reproduce the response: a perfect fit,
    // reported as the error it is.
    let xmax = best.x.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    if xmax > 1e6 {
        if best.converged {
            best.converged = false;
            best.message = format!(
                "theta grows without bound (largest |theta| {xmax:.3e}): the criterion keeps \
                 decreasing as a variance grows, e.g. because the random effects can reproduce \
                 the response"
            );
        }
        // A perfect fit: the penalised residual sum of squares keeps
        // vanishing as theta grows (like 1 / theta^2), whereas when the
        // random effects only turn into fixed effects (e.g. a random
        // intercept on a response far from zero without a fixed intercept)
        // it tends to the positive residual sum of squares of that model.
        // Once it is at the rounding floor it no longer falls: then the
        // size relative to the start's decides (a ratio far below what a
        // response far from zero explains, 3e-12 in harness case 627).
        let r_end = obj.prep.eval(&best.x, control.reml).map(|c| c.pwrss);
        let far: Vec<f64> = best.x.iter().map(|t| 10.0 * t).collect();
        let r_far = obj.prep.eval(&far, control.reml).map(|c| c.pwrss);
        let r_start = obj.prep.eval(start, control.reml).map(|c| c.pwrss);
        if let (Ok(a), Ok(c)) = (r_end, r_start) {
            // where the criterion cannot even be evaluated at 10 theta the
            // factorisation has lost the residual: no trend to read
            let b = r_far.unwrap_or(0.0);
            if std::env::var_os("LMMR_OPTIM_TRACE").is_some() {
                eprintln!(
                    "[optim] unbounded theta: pwrss {a:.3e}, at 10 theta {b:.3e}, at start {c:.3e}"
                );
            }
            if (b < 0.05 * a && a < 1e-8 * c) || a < 1e-16 * c {
                if best_finite.is_none() && obj.initial_hessian {
                    // The Newton-like first steps may have left the basin
                    // of a local optimum at finite theta that unit steps
                    // from the start find (what lme4 returns; harness case
                    // 398 while the initial Hessian applied to every fit):
                    // one plain run from the start. (Without the initial
                    // Hessian that run would repeat the first.)
                    obj.initial_hessian = false;
                    if let Ok(r) = obj.minimize(start, lower, max_iter, tol, true) {
                        if finite(&r) {
                            best_finite = Some(r);
                        }
                    }
                }
                if let Some(mut local) = best_finite {
                    local.n_eval = best.n_eval;
                    local.n_grad = best.n_grad;
                    local.converged = false;
                    local.message = "a local optimum: from other starts the criterion decreases \
                        without bound as random-effect variances grow (the random effects can \
                        reproduce the response), so no global optimum exists"
                        .into();
                    return Ok(local);
                }
                return Err(LmmError::NonFinite(
                    "perfect fit: as the random-effect variances grow without bound the random \
                     effects reproduce the response (the penalised residual sum of squares \
                     vanishes, to below 1e-8 of its value at the start), so the residual \
                     variance is zero; or the response varies only in its last digits around a \
                     value far from zero (centre or rescale it)"
                        .into(),
                ));
            }
        }
    }
    Ok(best)
}

/// The preconditioned problem of a validated input and its prepared blocks
/// (for the one-off evaluations below; fits go through [`Model`]).
fn prepare_preconditioned(
    input: &FitInput,
) -> Result<(precondition::Preconditioned, Prepared), LmmError> {
    let pre = precondition::precondition(input)?;
    let transformed = FitInput {
        x: &[],
        y: &pre.y,
        ..input.clone()
    };
    let prep = Prepared::new_view(&transformed, pre.q_view(), 0)?;
    Ok((pre, prep))
}

/// Hessian of the profiled criterion with respect to theta, by central
/// differences of the analytic gradient (`k x k`, column-major).
pub fn evaluate_hessian(input: &FitInput, theta: &[f64], reml: bool) -> Result<Vec<f64>, LmmError> {
    input::validate(input)?;
    input::check_theta(input, theta)?;
    let (_, mut prep) = prepare_preconditioned(input)?;
    let (_, g0) = prep.eval_grad(theta, reml)?;
    optim::fd_hessian(
        |t: &[f64]| prep.eval_grad(t, reml).map(|(_, g)| g),
        theta,
        &g0,
        true,
    )
}

/// Mean seconds per criterion evaluation and per criterion + gradient on a
/// prepared model (for benchmarks; `examples/time_maximal.rs`).
#[doc(hidden)]
pub fn time_prepared(
    input: &FitInput,
    theta: &[f64],
    reml: bool,
    reps: usize,
) -> Result<(f64, f64), LmmError> {
    input::validate(input)?;
    let (_, mut prep) = prepare_preconditioned(input)?;
    let t0 = std::time::Instant::now();
    for _ in 0..reps {
        prep.invalidate();
        prep.eval(theta, reml)?;
    }
    let te = t0.elapsed().as_secs_f64() / reps as f64;
    let t0 = std::time::Instant::now();
    for _ in 0..reps {
        prep.invalidate();
        prep.eval_grad(theta, reml)?;
    }
    let tg = t0.elapsed().as_secs_f64() / reps as f64;
    Ok((te, tg))
}

/// Profiled criterion and its analytic gradient with respect to theta.
pub fn evaluate_gradient(
    input: &FitInput,
    theta: &[f64],
    reml: bool,
) -> Result<(f64, Vec<f64>), LmmError> {
    input::validate(input)?;
    input::check_theta(input, theta)?;
    let (pre, mut prep) = prepare_preconditioned(input)?;
    let (crit, g) = prep.eval_grad(theta, reml)?;
    Ok((
        crit.value + criterion_shift(input.n, input.p, &pre, reml),
        g,
    ))
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
        Ok(c) => {
            // Where an evaluation is expensive (the same threshold as the
            // initial Hessian by differences) and every term is scalar, the
            // variance components' moment estimates are tried as well; the
            // start with the lower criterion is kept (one evaluation more).
            if prep.eval_cost() > 1e8 {
                if let Some(m) = moment_start(&prep.blocks) {
                    if let Ok(cm) = prep.eval(&m, reml) {
                        if cm.value < c.value {
                            return Ok(m);
                        }
                    }
                }
            }
            return Ok(start);
        }
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

/// Moment estimates of the relative standard deviations of scalar terms
/// (every term `k = 1`), or `None`. For term `t` with level sums `a_l =
/// z_l'Wz_l` and `r_l = z_l'W r` of the least-squares residual `r` (the
/// preconditioned response), one-way analysis of variance on `t` alone:
/// `SSB = sum_l r_l^2 / a_l`, `sigma^2 = (r'Wr - SSB) / (n - p - G)`,
/// `sigma_t^2 = (SSB - (G - 1) sigma^2) / (A - sum_l a_l^2 / A)` with
/// `A = sum_l a_l`; theta_t = `sigma_t / sigma`, kept within `[0.01, 100]`.
/// In crossed designs each factor's sums carry part of the other factors'
/// variance: a start, not an estimate.
fn moment_start(bl: &blocks::Blocks) -> Option<Vec<f64>> {
    if bl.terms.iter().any(|t| t.k != 1) {
        return None;
    }
    let d = bl.d();
    let k1 = bl.k1;
    let kk = k1 * k1;
    let sst = bl.dense[d * d - 1];
    let mut theta = Vec::with_capacity(bl.terms.len());
    for ti in &bl.terms {
        let (mut ssb, mut a_sum, mut a2, mut g) = (0.0, 0.0, 0.0, 0usize);
        let mut add = |a: f64, r: f64| {
            if a > 0.0 {
                ssb += r * r / a;
                a_sum += a;
                a2 += a * a;
                g += 1;
            }
        };
        if let Some(o) = ti.prim_offset {
            for j in 0..bl.g1 {
                add(bl.a11[j * kk + o * k1 + o], bl.a1y[j * k1 + o]);
            }
        } else {
            let off = ti.rest_offset?;
            for l in 0..ti.n_levels {
                let c = off + l;
                add(bl.dense[c * d + c], bl.dense[(d - 1) * d + c]);
            }
        }
        let dof = bl.n as f64 - bl.p as f64 - g as f64;
        if g < 2 || dof <= 0.0 || a_sum <= 0.0 {
            return None;
        }
        let s2 = (sst - ssb) / dof;
        let denom = a_sum - a2 / a_sum;
        if !(s2 > 0.0 && denom > 0.0) {
            return None;
        }
        let sb2 = (ssb - (g - 1) as f64 * s2) / denom;
        let t = (sb2.max(0.0) / s2).sqrt().clamp(0.01, 100.0);
        if !t.is_finite() {
            return None;
        }
        theta.push(t);
    }
    Some(theta)
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
    let n_eval = budget.n_eval;
    let (f, x) = budget.best.unwrap_or_else(|| (f64::NAN, start.to_vec()));
    let grad = if x.len() <= 10 {
        prep.eval_grad(&x, reml)
            .map(|(_, g)| g)
            .unwrap_or_else(|_| vec![f64::NAN; x.len()])
    } else {
        vec![f64::NAN; x.len()]
    };
    Ok(optim::OptResult {
        at_bound: x.iter().zip(lower).map(|(a, b)| a <= b).collect(),
        x,
        f,
        grad,
        n_eval,
        n_grad: 0,
        converged: false,
        message: msg,
    })
}
