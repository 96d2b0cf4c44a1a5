//! A model built once from its data and kept: the owned design, its
//! preconditioning (see `precondition`), the cross-product blocks and the
//! factorisation workspace. Everything that refits (a new response, other
//! theta, REML or ML) goes through one [`Model`] instead of rebuilding the
//! blocks from the rows.

use crate::error::LmmError;
use crate::input::{self, FitInput, ReTermInput};
use crate::precondition::{self, Preconditioned, Values};
use crate::{at_trial_point, criterion_shift, optim, optimize_theta, solve};
use crate::{stopped_at_best, usable_default_start};
use crate::{FitControl, FitOutput, InferenceMoments, InterruptCheck, Prepared};

/// One random-effects term `(z | factor)`, owned (see [`ReTermInput`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReTerm {
    /// 0-based level codes of the grouping factor, length `n`.
    pub codes: Values<i32>,
    pub n_levels: usize,
    /// `n x k` model matrix of the term, column-major.
    pub z: Values<f64>,
    pub k: usize,
    pub factor_id: usize,
}

/// A linear mixed model's data, owned (see [`FitInput`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    pub n: usize,
    pub p: usize,
    /// `n x p` column-major.
    pub x: Vec<f64>,
    /// Response (offset already subtracted), length `n`.
    pub y: Vec<f64>,
    /// Prior weights, length `n`, or empty for all ones.
    pub weights: Vec<f64>,
    pub terms: Vec<ReTerm>,
}

impl Design {
    /// Copies a borrowed input.
    pub fn from_input(input: &FitInput) -> Design {
        Design {
            n: input.n,
            p: input.p,
            x: input.x.to_vec(),
            y: input.y.to_vec(),
            weights: input.weights.to_vec(),
            terms: input
                .terms
                .iter()
                .map(|t| ReTerm {
                    codes: t.codes.to_vec().into(),
                    n_levels: t.n_levels,
                    z: t.z.to_vec().into(),
                    k: t.k,
                    factor_id: t.factor_id,
                })
                .collect(),
        }
    }

    /// A borrowed view.
    pub fn input(&self) -> FitInput<'_> {
        FitInput {
            n: self.n,
            p: self.p,
            x: &self.x,
            y: &self.y,
            weights: &self.weights,
            terms: self
                .terms
                .iter()
                .map(|t| ReTermInput {
                    codes: &t.codes,
                    n_levels: t.n_levels,
                    z: &t.z,
                    k: t.k,
                    factor_id: t.factor_id,
                })
                .collect(),
        }
    }
}

/// The criterion and the fixed-effects solution at one theta, without the
/// random effects, conditional variances and fitted values (what profiles
/// need).
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// REML criterion or ML deviance (user's scale).
    pub objective: f64,
    /// log |L|^2.
    pub ldl2: f64,
    /// log |R_X|^2 (user's scale).
    pub ldrx2: f64,
    /// Penalised weighted residual sum of squares (user's scale).
    pub pwrss: f64,
    /// Profiled residual standard deviation.
    pub sigma: f64,
    pub beta: Vec<f64>,
}

/// A model prepared once: see the module documentation.
pub struct Model {
    pub(crate) design: Design,
    pub(crate) pre: Preconditioned,
    pub(crate) prep: Prepared,
    /// Threads of the passes over the rows (0: all cores).
    pub(crate) threads: usize,
}

/// The preconditioned problem the blocks are built from: the scaled
/// residual for `y`; its `x` is empty, `Q` (for `X`) is read through
/// `pre.q_view()`.
fn transformed<'a>(design: &'a Design, pre: &'a Preconditioned) -> FitInput<'a> {
    FitInput {
        x: &[],
        y: &pre.y,
        ..design.input()
    }
}

impl Model {
    /// Validates the design, preconditions it and builds the blocks, using
    /// all cores.
    pub fn new(design: Design) -> Result<Model, LmmError> {
        Self::with_threads(design, 0)
    }

    /// As [`Model::new`], with the passes over the rows (here and in
    /// [`Model::set_response`]) on `threads` threads (0: all cores). The
    /// results do not depend on `threads`.
    pub fn with_threads(design: Design, threads: usize) -> Result<Model, LmmError> {
        // X's finiteness is checked by the build's first pass over it
        input::validate_parts(&design.input(), false)?;
        // the model keeps X (and reads Q = X R^-1 from it)
        let mut design = design;
        let x = std::mem::take(&mut design.x);
        Self::build(design, x.into(), threads)
    }

    /// As [`Model::with_threads`] from borrowed data: the model keeps its own
    /// copy of `X`, and the rest (see [`Model::from_kept`] to share the
    /// caller's).
    pub fn from_input(input: &FitInput, threads: usize) -> Result<Model, LmmError> {
        let design = Design {
            x: Vec::new(),
            ..Design::from_input(&FitInput {
                x: &[],
                ..input.clone()
            })
        };
        Self::from_kept(design, input.x.to_vec().into(), threads)
    }

    /// As [`Model::with_threads`], with `X` given as `x` (`design.x` is not
    /// read; it may be empty). With kept values (e.g. R's model matrix, and
    /// in `design` R's level codes and random-effect columns, whose owner
    /// keeps them alive and unchanged while the model lives) the model holds
    /// no copy of them: when `X` is well conditioned it needs no `n x p`
    /// buffer of its own (it forms `Q = X R^-1` where it reads it).
    pub fn from_kept(
        mut design: Design,
        x: Values<f64>,
        threads: usize,
    ) -> Result<Model, LmmError> {
        design.x = Vec::new();
        // X's finiteness is checked by the build's first pass over it
        input::validate_parts(
            &FitInput {
                x: &x,
                ..design.input()
            },
            false,
        )?;
        Self::build(design, x, threads)
    }

    fn build(design: Design, x: Values<f64>, threads: usize) -> Result<Model, LmmError> {
        Self::build_store(design, x, threads, precondition::SMALL_Q)
    }

    /// [`Model::build`], storing `Q` when `n p <= store` (tests use 0).
    fn build_store(
        mut design: Design,
        x: Values<f64>,
        threads: usize,
        store: usize,
    ) -> Result<Model, LmmError> {
        let pre = precondition::precondition_kept_store(x, &design.input(), threads, store)?;
        // from here on the response is read only as its transformed
        // residual (`pre.y`)
        design.y = Vec::new();
        let prep = Prepared::new_view(&transformed(&design, &pre), pre.q_view(), threads)?;
        Ok(Model {
            design,
            pre,
            prep,
            threads,
        })
    }

    /// The data the model was built from. Its `x` and `y` are empty: the
    /// model keeps `X` as the caller's kept matrix or `Q` (see
    /// `precondition`) and the response only as its transformed residual.
    pub fn design(&self) -> &Design {
        &self.design
    }

    /// Number of covariance parameters.
    pub fn n_theta(&self) -> usize {
        input::total_theta(&self.design.input())
    }

    /// Lower bounds of theta.
    pub fn lower(&self) -> Vec<f64> {
        input::lower_bounds(&self.design.input())
    }

    /// Installs (or removes) a check for user interrupts, polled by the
    /// criterion evaluations.
    pub fn set_interrupt(&mut self, check: Option<InterruptCheck>) {
        self.prep.set_interrupt(check);
    }

    /// Replaces the response, recomputing only what depends on it (the
    /// response part of the preconditioning and of the blocks). On error the
    /// model is unchanged.
    pub fn set_response(&mut self, y: &[f64]) -> Result<(), LmmError> {
        let (n, p) = (self.design.n, self.design.p);
        if y.len() != n {
            return Err(LmmError::InvalidInput(format!(
                "y has length {} but n = {n}",
                y.len()
            )));
        }
        if !y.iter().all(|v| v.is_finite()) {
            return Err(LmmError::InvalidInput(
                "y contains non-finite values".into(),
            ));
        }
        let resp = precondition::response_part_fused(
            self.pre.q_view(),
            &self.pre.r,
            n,
            p,
            y,
            &self.design.weights,
        )?;
        let old_y = std::mem::replace(&mut self.pre.y, resp.y);
        let tr = transformed(&self.design, &self.pre);
        self.prep.invalidate();
        let res = self
            .prep
            .blocks
            .set_response_view(&tr, self.pre.q_view(), self.threads);
        if let Err(e) = res {
            self.pre.y = old_y;
            return Err(e);
        }
        self.pre.beta0 = resp.beta0;
        self.pre.scale = resp.scale;
        Ok(())
    }

    /// Number of observations and `sum(log(w))` of the data when the rows
    /// of the design are pseudo-rows reproducing its cross-products (a fit
    /// from sufficient statistics); `None` restores the design's own.
    pub fn set_counts(
        &mut self,
        n_obs: Option<usize>,
        log_w_sum: Option<f64>,
    ) -> Result<(), LmmError> {
        let n = n_obs.unwrap_or_else(|| input::n_effective(&self.design.input()));
        if n <= self.design.p {
            return Err(LmmError::InvalidInput(format!(
                "n ({n}) must be larger than p ({})",
                self.design.p
            )));
        }
        self.prep.invalidate();
        self.prep.blocks.n = n;
        self.prep.blocks.ldw = match log_w_sum {
            Some(l) => l,
            // zero weights drop the observation's contribution
            None => self
                .design
                .weights
                .iter()
                .filter(|w| **w > 0.0)
                .map(|w| w.ln())
                .sum(),
        };
        Ok(())
    }

    /// For a model built from pseudo-rows (database aggregates): the data's
    /// number of observations and sum(log(w)), as [`Model::set_counts`].
    pub fn set_observations(&mut self, n_obs: usize, log_w_sum: f64) -> Result<(), LmmError> {
        if !log_w_sum.is_finite() {
            return Err(LmmError::InvalidInput("sum(log(w)) must be finite".into()));
        }
        self.set_counts(Some(n_obs), Some(log_w_sum))
    }

    /// Number of observations the criterion counts (see [`Model::set_counts`]).
    fn n_obs(&self) -> usize {
        self.prep.blocks.n
    }

    fn check_theta(&self, theta: &[f64]) -> Result<(), LmmError> {
        input::check_theta(&self.design.input(), theta)
    }

    /// Profiled REML criterion or ML deviance at `theta` (user's scale).
    pub fn criterion(&mut self, theta: &[f64], reml: bool) -> Result<f64, LmmError> {
        self.check_theta(theta)?;
        let shift = criterion_shift(self.n_obs(), self.design.p, &self.pre, reml);
        Ok(self.prep.eval(theta, reml)?.value + shift)
    }

    /// Criterion, its parts, sigma and beta at `theta`: one factorisation
    /// and a back substitution.
    pub fn evaluate(&mut self, theta: &[f64], reml: bool) -> Result<Evaluation, LmmError> {
        self.check_theta(theta)?;
        let (n, p) = (self.n_obs(), self.design.p);
        let crit = self.prep.eval(theta, reml)?;
        let x = solve::dense_solution(&self.prep.blocks, &self.prep.ws);
        let s = self.pre.scale;
        let bt = precondition::solve_upper(&self.pre.r, p, &x[self.prep.blocks.q2..]);
        let beta: Vec<f64> = bt
            .iter()
            .zip(&self.pre.beta0)
            .map(|(a, b0)| b0 + s * a)
            .collect();
        let dof = if reml { n - p } else { n } as f64;
        let pwrss = crit.pwrss * s * s;
        let sigma = (pwrss / dof).sqrt();
        if !(sigma.is_finite() && beta.iter().all(|v| v.is_finite())) {
            return Err(LmmError::NonFinite(
                "solution contains non-finite values".into(),
            ));
        }
        Ok(Evaluation {
            objective: crit.value + criterion_shift(n, p, &self.pre, reml),
            ldl2: crit.ldl2,
            ldrx2: crit.ldrx2 + self.pre.log_det_r2,
            pwrss,
            sigma,
            beta,
        })
    }

    /// Moments of the random-effects space at `theta` for Satterthwaite and
    /// Kenward-Roger (see [`InferenceMoments`]), from the kept blocks and the
    /// factorisation at `theta`.
    pub fn inference_moments(&mut self, theta: &[f64]) -> Result<InferenceMoments, LmmError> {
        self.check_theta(theta)?;
        let crit = self.prep.eval(theta, true)?;
        let out = crate::moments::moments(&self.prep.blocks, &mut self.prep.ws, &self.pre, &crit);
        self.prep.invalidate();
        out
    }

    /// Fits the model (optimises over theta unless `control.optimize` is
    /// false) and returns the estimates, random effects, conditional
    /// variances and fitted values at the optimum.
    /// `control.n_obs` / `control.log_w_sum`, when given, are set on the
    /// model as by [`Model::set_counts`] (and kept).
    pub fn fit(&mut self, control: &FitControl) -> Result<FitOutput, LmmError> {
        if control.n_obs.is_some() || control.log_w_sum.is_some() {
            self.set_counts(control.n_obs, control.log_w_sum)?;
        }
        let n_obs = self.n_obs();
        let Model {
            design,
            pre,
            prep,
            threads,
        } = self;
        let original = design.input();
        let input = transformed(design, pre);
        let lower = input::lower_bounds(&input);
        let start = match &control.theta_start {
            Some(t) => {
                input::check_theta(&input, t)?;
                t.clone()
            }
            None if control.optimize => usable_default_start(prep, &input, control.reml)?,
            None => input::default_start(&input),
        };
        let reml = control.reml;
        let mut time_budget_spent = false;
        let opt = if control.optimize {
            // the budget and the record of the best point live in the
            // criterion evaluations (`Prepared::eval`), whatever the optimiser
            prep.start_budget(control.max_time);
            let result = optimize_theta(prep, &input, &start, &lower, control);
            let budget = prep.take_budget();
            match result {
                Ok(best) => best,
                Err(LmmError::TimeBudget(msg)) => {
                    time_budget_spent = true;
                    stopped_at_best(prep, reml, budget, &start, &lower, msg)?
                }
                // The criterion failed at a trial point far from where the
                // optimisation had got to (a numerically singular corner of
                // the parameter space): keep the best point reached, not
                // converged, rather than refusing a model whose criterion we
                // can evaluate. (A perfect fit is a property of the data: it
                // stays an error.)
                Err(e) if budget.best.is_some() && at_trial_point(&e) => {
                    let msg = format!(
                        "the criterion could not be evaluated at a trial point ({e}); stopped at the best point reached"
                    );
                    stopped_at_best(prep, reml, budget, &start, &lower, msg)?
                }
                Err(e) => return Err(e),
            }
        } else {
            let (crit, grad) = prep.eval_grad(&start, reml)?;
            optim::OptResult {
                at_bound: start.iter().zip(&lower).map(|(a, b)| a <= b).collect(),
                x: start,
                f: crit.value,
                grad,
                n_eval: 1,
                n_grad: 1,
                converged: true,
                message: "evaluated at theta_start without optimisation".into(),
            }
        };
        let mut crit = prep.eval(&opt.x, reml)?;
        prep.ws.release_large_buffers();
        let rb = pre.rb();
        let back = solve::Back {
            xq: pre.q_view(),
            scale: pre.scale,
            rb: &rb,
            threads: *threads,
        };
        let sol = solve::solve(&input, &prep.blocks, &mut prep.ws, crit.pwrss, reml, &back);
        prep.invalidate();
        let mut sol = sol?;
        let shift = criterion_shift(n_obs, original.p, pre, reml);
        let mut opt = opt;
        // The criterion from the cross-products against the penalised
        // residual sum of squares recomputed from the rows: where they
        // disagree the cross-products have cancelled (a response far from
        // the span of X but near that of Z Lambda), the optimiser may have
        // followed rounding error, and the rows' value is the accurate one.
        let nn = if reml {
            n_obs.saturating_sub(original.p)
        } else {
            n_obs
        } as f64;
        let ratio = sol.pwrss_rows / crit.pwrss;
        if ratio.is_finite() && ratio > 0.0 && nn > 0.0 {
            let drift = nn * ratio.ln();
            if drift.abs() > 1e-7 * (crit.value + shift).abs().max(1.0) {
                crit.value += drift;
                crit.pwrss = sol.pwrss_rows;
                sol.sigma *= ratio.sqrt();
                sol.vcov_beta.iter_mut().for_each(|v| *v *= ratio);
                sol.cond_var
                    .iter_mut()
                    .for_each(|cv| cv.iter_mut().for_each(|v| *v *= ratio));
                opt.converged = false;
                opt.message = format!(
                    "the criterion lost accuracy at the end point (the cross-products give a penalised \
                     residual sum of squares {:.1e} relative off the rows' value, a criterion error of \
                     {:.2e}): the response is far from the span of the fixed effects, e.g. far from zero \
                     without an intercept; centre or rescale the response, or add an intercept",
                    (ratio - 1.0).abs(),
                    drift.abs()
                );
            }
        }
        let back = precondition::map_back(original.p, pre, sol);
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
            n_grad: opt.n_grad,
            converged: opt.converged,
            message: opt.message,
            time_budget_spent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded design: intercept + covariate fixed, `(1 + x | g)` on 12 levels
    /// and `(1 | h)` on 5 crossed levels, optional weights.
    fn design(seed: u64, weighted: bool) -> Design {
        let mut s = seed;
        let mut unif = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let n = 150;
        let xc: Vec<f64> = (0..n).map(|_| unif() * 4.0 - 2.0).collect();
        let g: Vec<i32> = (0..n).map(|i| (i % 12) as i32).collect();
        let h: Vec<i32> = (0..n).map(|_| (unif() * 5.0).min(4.0) as i32).collect();
        let y: Vec<f64> = (0..n)
            .map(|i| {
                1.0 + 0.5 * xc[i]
                    + (g[i] as f64 * 1.3).sin() * (1.0 + 0.3 * xc[i])
                    + 0.4 * (h[i] as f64).cos()
                    + (unif() - 0.5) * 1.5
            })
            .collect();
        let mut x = vec![1.0; n];
        x.extend_from_slice(&xc);
        let mut z1 = vec![1.0; n];
        z1.extend_from_slice(&xc);
        let weights = if weighted {
            (0..n).map(|_| 0.5 + unif()).collect()
        } else {
            Vec::new()
        };
        Design {
            n,
            p: 2,
            x,
            y,
            weights,
            terms: vec![
                ReTerm {
                    codes: g.into(),
                    n_levels: 12,
                    z: z1.into(),
                    k: 2,
                    factor_id: 0,
                },
                ReTerm {
                    codes: h.into(),
                    n_levels: 5,
                    z: vec![1.0; n].into(),
                    k: 1,
                    factor_id: 1,
                },
            ],
        }
    }

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
    }

    fn assert_same_fit(a: &FitOutput, b: &FitOutput) {
        let tol = 1e-8;
        assert!(
            close(&a.theta, &b.theta, 1e-6),
            "{:?} {:?}",
            a.theta,
            b.theta
        );
        assert!(close(&[a.objective], &[b.objective], tol));
        assert!(close(&a.beta, &b.beta, 1e-6));
        assert!(close(&[a.sigma], &[b.sigma], 1e-6));
        assert!(close(&a.b, &b.b, 1e-5));
        assert!(close(&a.fitted, &b.fitted, 1e-6));
        assert!(close(&a.vcov_beta, &b.vcov_beta, 1e-5));
    }

    #[test]
    fn set_response_then_fit_equals_a_fresh_model() {
        for weighted in [false, true] {
            let d1 = design(7, weighted);
            let mut d2 = d1.clone();
            d2.y = design(99, weighted).y;
            let mut kept = Model::new(d1.clone()).unwrap();
            for reml in [true, false] {
                let control = FitControl {
                    reml,
                    ..FitControl::default()
                };
                let first = kept.fit(&control).unwrap();
                kept.set_response(&d2.y).unwrap();
                // the blocks themselves agree with a fresh build
                let other = Model::new(d2.clone()).unwrap();
                assert!(close(&kept.prep.blocks.a1y, &other.prep.blocks.a1y, 1e-12));
                assert!(close(
                    &kept.prep.blocks.dense,
                    &other.prep.blocks.dense,
                    1e-12
                ));
                let refit = kept.fit(&control).unwrap();
                let fresh = Model::new(d2.clone()).unwrap().fit(&control).unwrap();
                assert_same_fit(&refit, &fresh);
                // and back again
                kept.set_response(&d1.y).unwrap();
                assert_same_fit(&kept.fit(&control).unwrap(), &first);
            }
        }
    }

    #[test]
    fn the_kept_x_path_agrees_with_a_stored_q_and_the_thread_count() {
        use crate::precondition::QStore;
        // 200,000 rows: several slabs in every pass; weights with zeros
        let n = 200_000;
        let mut st = 5u64;
        let mut unif = move || {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            (st >> 11) as f64 / (1u64 << 53) as f64
        };
        let p = 4;
        let mut x = vec![1.0; n];
        for j in 1..p {
            x.extend((0..n).map(|_| unif() * j as f64 + 0.2 * j as f64));
        }
        let g: Vec<i32> = (0..n).map(|_| (unif() * 500.0).min(499.0) as i32).collect();
        let re: Vec<f64> = (0..500).map(|_| unif() - 0.5).collect();
        let y: Vec<f64> = (0..n)
            .map(|i| 2.0 + x[n + i] - 0.5 * x[3 * n + i] + re[g[i] as usize] + unif())
            .collect();
        for weights in [Vec::new(), (0..n).map(|i| (i % 4) as f64 * 0.5).collect()] {
            let d = Design {
                n,
                p,
                x: x.clone(),
                y: y.clone(),
                weights,
                terms: vec![ReTerm {
                    codes: g.clone().into(),
                    n_levels: 500,
                    z: vec![1.0; n].into(),
                    k: 1,
                    factor_id: 0,
                }],
            };
            let control = FitControl::default();
            let implicit =
                |threads| Model::build_store(d.clone(), d.x.clone().into(), threads, 0).unwrap();
            let mut one = implicit(1);
            assert!(matches!(one.pre.q, QStore::Implicit(_)));
            let a = one.fit(&control).unwrap();
            let b = implicit(3).fit(&control).unwrap();
            assert!(a.objective == b.objective && a.beta == b.beta && a.fitted == b.fitted);
            // a Q this small is stored by default: the same numbers
            let mut stored = Model::with_threads(d.clone(), 2).unwrap();
            assert!(matches!(stored.pre.q, QStore::Dense(_)));
            let s = stored.fit(&control).unwrap();
            assert!(a.objective == s.objective && a.beta == s.beta && a.fitted == s.fitted);
            // the same problem with Q stored (Gram-Schmidt, as the one-off
            // evaluations build it)
            let mut dense = Model::with_threads(d.clone(), 2).unwrap();
            let pre = precondition::precondition(&d.input()).unwrap();
            assert!(matches!(pre.q, QStore::Dense(_)));
            dense.prep =
                Prepared::new_view(&transformed(&dense.design, &pre), pre.q_view(), 2).unwrap();
            dense.pre = pre;
            let c = dense.fit(&control).unwrap();
            assert_same_fit(&a, &c);
            // fitted values are X beta + Z b
            for i in (0..n).step_by(997) {
                let f: f64 =
                    (0..p).map(|c| x[c * n + i] * a.beta[c]).sum::<f64>() + a.b[g[i] as usize];
                assert!((f - a.fitted[i]).abs() <= 1e-9 * (1.0 + f.abs()));
            }
        }
    }

    #[test]
    fn fit_lmm_is_the_model_fit() {
        let d = design(3, true);
        let control = FitControl::default();
        let a = crate::fit_lmm(&d.input(), &control).unwrap();
        let b = Model::new(d.clone()).unwrap().fit(&control).unwrap();
        assert_eq!(a, b);
        // from borrowed data, on any number of threads: the same numbers
        for threads in [1, 2, 3] {
            let c = Model::from_input(&d.input(), threads)
                .unwrap()
                .fit(&control)
                .unwrap();
            assert_eq!(c, b);
        }
    }

    #[test]
    fn light_evaluation_matches_the_fit() {
        let d = design(11, false);
        let mut m = Model::new(d).unwrap();
        for reml in [true, false] {
            let control = FitControl {
                reml,
                ..FitControl::default()
            };
            let f = m.fit(&control).unwrap();
            let e = m.evaluate(&f.theta, reml).unwrap();
            assert!(close(&[e.objective], &[f.objective], 1e-12));
            assert!(close(
                &[e.ldl2, e.ldrx2, e.pwrss],
                &[f.ldl2, f.ldrx2, f.pwrss],
                1e-12
            ));
            assert!(close(&[e.sigma], &[f.sigma], 1e-12));
            assert!(close(&e.beta, &f.beta, 1e-10));
            let c = m.criterion(&f.theta, reml).unwrap();
            assert!(close(&[c], &[f.objective], 1e-12));
            // away from the optimum the criterion is larger
            let th: Vec<f64> = f.theta.iter().map(|t| t * 1.5 + 0.1).collect();
            assert!(m.criterion(&th, reml).unwrap() > f.objective);
            assert!(m.criterion(&[1.0], reml).is_err());
        }
    }

    #[test]
    fn bad_responses_leave_the_model_unchanged() {
        let d = design(5, false);
        let mut m = Model::new(d.clone()).unwrap();
        let before = m.fit(&FitControl::default()).unwrap();
        assert!(m.set_response(&d.y[..10]).is_err());
        let mut nan = d.y.clone();
        nan[3] = f64::NAN;
        assert!(m.set_response(&nan).is_err());
        // a response that X reproduces exactly
        let exact: Vec<f64> = d.x[d.n..].iter().map(|x| 2.0 + 3.0 * x).collect();
        assert_eq!(m.set_response(&exact).unwrap_err().kind(), "non_finite");
        assert_eq!(m.fit(&FitControl::default()).unwrap(), before);
    }

    #[test]
    fn a_non_finite_x_is_an_input_error() {
        let huge = {
            // finite, but its squares overflow: not an error
            let mut d = design(5, false);
            for v in &mut d.x[d.n..] {
                *v *= 1e160;
            }
            d
        };
        if let Err(e) = Model::new(huge) {
            assert!(!e.to_string().contains("non-finite"), "{e}");
        }
        for (row, value, weighted) in [
            (3, f64::NAN, false),
            (7, f64::INFINITY, false),
            (0, f64::NEG_INFINITY, true),
        ] {
            let mut d = design(5, weighted);
            if weighted {
                // a zero weight does not hide it
                d.weights[row] = 0.0;
            }
            d.x[d.n + row] = value;
            for m in [
                Model::new(d.clone()),
                Model::from_input(&d.input(), 2),
                Model::build_store(d.clone(), d.x.clone().into(), 1, 0),
            ] {
                match m {
                    Err(e) => {
                        assert_eq!(e.kind(), "invalid_input");
                        assert!(e.to_string().contains("x contains non-finite values"));
                    }
                    Ok(_) => panic!("a non-finite x was accepted"),
                }
            }
        }
    }

    #[test]
    fn n_obs_counts_positive_weights_and_the_override_replaces_it() {
        // zero weights: the criterion's n is the number of positive weights
        let mut d = design(13, true);
        for i in (0..d.n).step_by(9) {
            d.weights[i] = 0.0;
        }
        let n_pos = d.weights.iter().filter(|w| **w > 0.0).count();
        let lws: f64 = d.weights.iter().filter(|w| **w > 0.0).map(|w| w.ln()).sum();
        let mut m = Model::new(d.clone()).unwrap();
        assert_eq!(m.n_obs(), n_pos);
        assert_eq!(m.prep.blocks.n, n_pos);
        let control = FitControl::default();
        let plain = m.fit(&control).unwrap();
        // stating the same n and sum(log w) explicitly changes nothing
        let mut m2 = Model::new(d.clone()).unwrap();
        m2.set_observations(n_pos, lws).unwrap();
        assert_same_fit(&m2.fit(&control).unwrap(), &plain);
        // a pseudo-row override replaces it, and a new response still uses
        // every row (the override is not a row count)
        m2.set_observations(n_pos + 50, lws).unwrap();
        let over = m2.fit(&control).unwrap();
        assert!((over.objective - plain.objective).abs() > 1e-6);
        let y2 = design(17, true).y;
        m2.set_response(&y2).unwrap();
        let refit = m2.fit(&control).unwrap();
        let mut d3 = d.clone();
        d3.y = y2;
        let mut fresh = Model::new(d3).unwrap();
        fresh.set_observations(n_pos + 50, lws).unwrap();
        assert_same_fit(&refit, &fresh.fit(&control).unwrap());
    }

    #[test]
    fn a_spent_budget_keeps_the_model_usable() {
        let mut m = Model::new(design(5, false)).unwrap();
        let spent = FitControl {
            max_time: Some(0.0),
            ..FitControl::default()
        };
        let out = m.fit(&spent).unwrap();
        assert!(out.time_budget_spent && !out.converged);
        // the budget ends with the fit: later evaluations and fits are free
        assert!(m.criterion(&out.theta, true).is_ok());
        let free = m.fit(&FitControl::default()).unwrap();
        assert!(free.converged && !free.time_budget_spent);
        assert!(free.objective <= out.objective);
    }

    #[test]
    fn interrupts_stop_the_fit() {
        fn always() -> bool {
            true
        }
        let mut m = Model::new(design(5, false)).unwrap();
        m.prep.last_check = std::time::Instant::now() - std::time::Duration::from_secs(1);
        m.set_interrupt(Some(always));
        let e = m.fit(&FitControl::default()).unwrap_err();
        assert_eq!(e, LmmError::Interrupted);
        m.set_interrupt(None);
        assert!(m.fit(&FitControl::default()).is_ok());
    }
}
