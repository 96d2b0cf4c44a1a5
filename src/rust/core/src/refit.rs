//! Batched refits of a kept model to many responses (parametric bootstrap,
//! PB tests): only the estimates and the criterion are computed, no random
//! effects, conditional variances or fitted values.
//!
//! Each refit starts at the original fit's theta (as lme4's `refit()`) and
//! first tries a light path: a projected quasi-Newton search whose metric
//! starts from the Hessian of the criterion at the original fit (computed
//! once per loop by [`Model::refit_metric`]), so a warm start near the
//! optimum needs a few steps instead of rebuilding curvature from the
//! identity. Its end point must pass the same tests as the optimiser's
//! end-point check (`optim::minimize`): a Hessian from finite differences of
//! the analytic gradient at the end point, no negative curvature on the free
//! parameters, a gradient pushing outwards on the active bounds and a
//! Newton decrement below the tolerance. A refit whose end point is not
//! confirmed, that fails, that sits where the full fit would try mirror
//! images or that grows without bound is redone by the full path
//! ([`Model::fit`] with the same control): every optimum the light path
//! reports has passed the check the full path applies to its own, and a
//! refit the full path cannot confirm is reported as not converged, as
//! before. (On a criterion with several local minima the two paths could
//! end in different ones; on the test designs they agree to the
//! optimiser's tolerance.)

use crate::error::LmmError;
use crate::input;
use crate::model::Model;
use crate::optim::{chol, chol_solve, fd_hessian, positive_part, project, sym_eigen};
use crate::FitControl;

/// The estimates of one refit.
#[derive(Debug, Clone, PartialEq)]
pub struct RefitEstimates {
    pub theta: Vec<f64>,
    pub beta: Vec<f64>,
    pub sigma: f64,
    /// REML criterion or ML deviance (user's scale).
    pub objective: f64,
    pub converged: bool,
    /// Confirmed by the light path (false: the full path was used).
    pub light: bool,
    pub n_eval: usize,
    pub n_grad: usize,
    pub message: String,
}

/// Largest number of quasi-Newton steps of the light path before it hands
/// over to the full path (at most the control's `max_iter`).
const LIGHT_MAX_STEPS: usize = 30;

/// Cholesky of the `free` sub-matrix of `h` and the solve of `h_FF d = -g_F`;
/// `None` if that sub-matrix is not positive definite. Components not in
/// `free` get `-g_i / max(h_ii, 1e-8)` (the projection puts them on their
/// bound). Returns `(d, 0.5 g_F' h_FF^{-1} g_F)`.
fn newton_step(h: &[f64], g: &[f64], free: &[bool]) -> Option<(Vec<f64>, f64)> {
    let m = g.len();
    let fi: Vec<usize> = (0..m).filter(|&i| free[i]).collect();
    let nf = fi.len();
    let mut l = vec![0.0; nf * nf];
    for (b, &j) in fi.iter().enumerate() {
        for (a, &i) in fi.iter().enumerate() {
            l[b * nf + a] = h[j * m + i];
        }
    }
    if !chol(&mut l, nf) {
        return None;
    }
    let mut z: Vec<f64> = fi.iter().map(|&i| -g[i]).collect();
    chol_solve(&l, nf, &mut z);
    let mut d = vec![0.0; m];
    let mut dec = 0.0;
    for (a, &i) in fi.iter().enumerate() {
        d[i] = z[a];
        dec -= 0.5 * g[i] * z[a];
    }
    for i in 0..m {
        if !free[i] {
            d[i] = -g[i] / h[i * m + i].max(1e-8);
        }
    }
    Some((d, dec))
}

/// The light path's counters and current point.
struct Light<'a> {
    model: &'a mut Model,
    reml: bool,
    n_eval: usize,
    n_grad: usize,
}

impl Light<'_> {
    fn f(&mut self, x: &[f64]) -> Result<f64, LmmError> {
        self.n_eval += 1;
        match self.model.prep.eval(x, self.reml) {
            Ok(c) if c.value.is_finite() => Ok(c.value),
            Ok(_) => Ok(f64::INFINITY),
            Err(e @ (LmmError::Interrupted | LmmError::TimeBudget(_))) => Err(e),
            Err(_) => Ok(f64::INFINITY),
        }
    }
    fn fg(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>), LmmError> {
        self.n_eval += 1;
        self.n_grad += 1;
        self.model
            .prep
            .eval_grad(x, self.reml)
            .map(|(c, g)| (c.value, g))
    }

    /// Armijo search along the projection arc `P(x + alpha d)`; the first
    /// trial with its gradient (it is usually accepted).
    #[allow(clippy::type_complexity)]
    fn arc(
        &mut self,
        x: &[f64],
        fx: f64,
        g: &[f64],
        d: &[f64],
        lb: &[f64],
    ) -> Result<Option<(Vec<f64>, f64, Vec<f64>)>, LmmError> {
        let mut alpha = 1.0;
        for it in 0..30 {
            let mut xn: Vec<f64> = x.iter().zip(d).map(|(a, b)| a + alpha * b).collect();
            project(&mut xn, lb);
            if xn == x {
                return Ok(None);
            }
            let slope: f64 = (0..x.len()).map(|i| g[i] * (xn[i] - x[i])).sum();
            let fnew = if it == 0 {
                match self.fg(&xn) {
                    Ok((fnew, gnew)) => {
                        if fnew.is_finite() && fnew <= fx + 1e-4 * slope.min(0.0) {
                            return Ok(Some((xn, fnew, gnew)));
                        }
                        fnew
                    }
                    Err(e @ (LmmError::Interrupted | LmmError::TimeBudget(_))) => return Err(e),
                    Err(_) => f64::INFINITY,
                }
            } else {
                self.f(&xn)?
            };
            if fnew.is_finite() && fnew <= fx + 1e-4 * slope.min(0.0) {
                return self.fg(&xn).map(|(f, g)| Some((xn, f, g)));
            }
            alpha *= if it == 0 && fnew.is_finite() && slope < 0.0 {
                // quadratic interpolation of the step length
                (-slope / (2.0 * (fnew - fx - slope))).clamp(0.1, 0.5)
            } else {
                0.5
            };
        }
        Ok(None)
    }

    /// Projected quasi-Newton search from `x0` with the starting metric
    /// `b0` (damped BFGS updates), at most `max_steps` steps. Returns the
    /// end point, or `None` when the search stalls or runs out of steps
    /// (the full path takes over).
    #[allow(clippy::type_complexity)]
    fn search(
        &mut self,
        x0: &[f64],
        lb: &[f64],
        b0: &[f64],
        tol: f64,
        max_steps: usize,
    ) -> Result<Option<(Vec<f64>, f64, Vec<f64>)>, LmmError> {
        let m = x0.len();
        let mut x = x0.to_vec();
        project(&mut x, lb);
        let (mut fx, mut g) = self.fg(&x)?;
        let mut bm = b0.to_vec();
        for _ in 0..max_steps {
            let pg = (0..m).fold(0.0f64, |a, i| {
                a.max((x[i] - (x[i] - g[i]).max(lb[i])).abs())
            });
            let eps = pg.min(1e-3);
            let free: Vec<bool> = (0..m)
                .map(|i| !(x[i] - lb[i] <= eps && g[i] > 0.0))
                .collect();
            let Some((d, dec)) = newton_step(&bm, &g, &free) else {
                return Ok(None);
            };
            let at_bounds = (0..m).all(|i| free[i] || x[i] == lb[i]);
            if dec <= tol * (1.0 + fx.abs()) && at_bounds {
                return Ok(Some((x, fx, g)));
            }
            let Some((xn, fnew, gnew)) = self.arc(&x, fx, &g, &d, lb)? else {
                return Ok(if dec <= 1e-8 * (1.0 + fx.abs()) {
                    Some((x, fx, g))
                } else {
                    None
                });
            };
            let s: Vec<f64> = xn.iter().zip(&x).map(|(a, b)| a - b).collect();
            let yv: Vec<f64> = gnew.iter().zip(&g).map(|(a, b)| a - b).collect();
            let change = fx - fnew;
            x = xn;
            fx = fnew;
            g = gnew;
            // no progress left to make (as the optimiser's search stops):
            // the end-point check decides
            if change <= 1e-15 * (1.0 + fx.abs()) && dec <= 1e-8 * (1.0 + fx.abs()) {
                return Ok(Some((x, fx, g)));
            }
            // damped BFGS update (Powell): the metric stays positive definite
            let sy: f64 = s.iter().zip(&yv).map(|(a, b)| a * b).sum();
            let bs: Vec<f64> = (0..m)
                .map(|r| (0..m).map(|c| bm[c * m + r] * s[c]).sum())
                .collect();
            let sbs: f64 = s.iter().zip(&bs).map(|(a, b)| a * b).sum();
            if sbs > 0.0 && sbs.is_finite() {
                let th = if sy >= 0.2 * sbs {
                    1.0
                } else {
                    0.8 * sbs / (sbs - sy)
                };
                let rv: Vec<f64> = (0..m).map(|i| th * yv[i] + (1.0 - th) * bs[i]).collect();
                let sr: f64 = s.iter().zip(&rv).map(|(a, b)| a * b).sum();
                if sr > 0.0 {
                    for c in 0..m {
                        for r in 0..m {
                            bm[c * m + r] += rv[r] * rv[c] / sr - bs[r] * bs[c] / sbs;
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// The optimiser's end-point check (as `optim::minimize`): snap onto
    /// bounds, Hessian by forward differences of the gradient, no negative
    /// curvature on the free parameters, Newton decrement at most `tol`.
    /// Returns the confirmed point with its criterion, gradient and the
    /// (projected) Newton step from it, or `None` (the full path takes
    /// over).
    #[allow(clippy::type_complexity)]
    fn confirm(
        &mut self,
        start: (Vec<f64>, f64, Vec<f64>),
        lb: &[f64],
        tol: f64,
    ) -> Result<Option<(Vec<f64>, f64, Vec<f64>, Vec<f64>)>, LmmError> {
        let (mut x, mut fx, mut g) = start;
        let m = x.len();
        for _round in 0..3 {
            let mut xs = x.clone();
            let mut snapped = false;
            for i in 0..m {
                if xs[i] > lb[i] && xs[i] - lb[i] < 1e-7 * (1.0 + lb[i].abs()) {
                    xs[i] = lb[i];
                    snapped = true;
                }
            }
            if snapped {
                let (fs, gs) = self.fg(&xs)?;
                if fs <= fx {
                    (x, fx, g) = (xs, fs, gs);
                }
            }
            if m == 0 {
                return Ok(Some((x.clone(), fx, g, x)));
            }
            let h = {
                let (reml, model) = (self.reml, &mut *self.model);
                let mut ng = 0;
                let h = fd_hessian(
                    |t: &[f64]| {
                        ng += 1;
                        model.prep.eval_grad(t, reml).map(|(_, gg)| gg)
                    },
                    &x,
                    &g,
                    false,
                );
                self.n_eval += ng;
                self.n_grad += ng;
                match h {
                    Ok(h) if h.iter().all(|v| v.is_finite()) => h,
                    Ok(_) => return Ok(None),
                    Err(e @ (LmmError::Interrupted | LmmError::TimeBudget(_))) => return Err(e),
                    Err(_) => return Ok(None),
                }
            };
            let gtol = 1e-9 * (1.0 + fx.abs());
            let free: Vec<bool> = (0..m).map(|i| x[i] > lb[i] || g[i] <= gtol).collect();
            let fi: Vec<usize> = (0..m).filter(|&i| free[i]).collect();
            let nf = fi.len();
            let mut hf = vec![0.0; nf * nf];
            for (b, &j) in fi.iter().enumerate() {
                for (a, &i) in fi.iter().enumerate() {
                    hf[b * nf + a] = h[j * m + i];
                }
            }
            let (ev, _) = sym_eigen(&hf, nf);
            let lmax = ev.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            let lmin = ev.iter().fold(f64::INFINITY, |a, v| a.min(*v));
            if nf > 0 && lmin < -1e-5 * lmax.max(1e-8) {
                return Ok(None);
            }
            let Some((d, dec)) = newton_step(&h, &g, &free) else {
                return Ok(None);
            };
            let mut xn: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + b).collect();
            project(&mut xn, lb);
            if dec <= tol * (1.0 + fx.abs()) {
                // confirmed; the caller takes the tiny Newton step (it buys
                // the last digits of theta where the criterion is flat)
                return Ok(Some((x, fx, g, xn)));
            }
            match self.arc(&x, fx, &g, &d, lb)? {
                Some((xn, fnew, gnew)) if fnew <= fx => (x, fx, g) = (xn, fnew, gnew),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }
}

impl Model {
    /// The starting metric of warm-started refits: the Hessian of the
    /// criterion at `theta` for the current response (differences of the
    /// analytic gradient: central in the interior, forward next to a
    /// bound), made positive definite. `k x k` column-major.
    pub fn refit_metric(&mut self, theta: &[f64], reml: bool) -> Result<Vec<f64>, LmmError> {
        input::check_theta(&self.design.input(), theta)?;
        let lower = self.lower();
        let m = theta.len();
        let central = theta
            .iter()
            .zip(&lower)
            .all(|(t, l)| *t - 1e-4 * t.abs().max(0.1) > *l);
        let (_, g0) = self.prep.eval_grad(theta, reml)?;
        let prep = &mut self.prep;
        let h = fd_hessian(
            |t: &[f64]| prep.eval_grad(t, reml).map(|(_, g)| g),
            theta,
            &g0,
            central,
        )?;
        if !h.iter().all(|v| v.is_finite()) {
            return Err(LmmError::NonFinite(
                "the Hessian at the fit's theta is not finite".into(),
            ));
        }
        Ok(positive_part(&h, m))
    }

    /// Refits the model to each column of `ys` (`n x n_resp`, column-major,
    /// offset subtracted), starting at `control.theta_start` with the
    /// starting metric `metric` (from [`Model::refit_metric`]); see the
    /// module documentation. Per response an estimate or the error of the
    /// full path; a user interrupt stops the whole batch. The model keeps
    /// the last response.
    pub fn refit_responses(
        &mut self,
        ys: &[f64],
        n_resp: usize,
        metric: &[f64],
        control: &FitControl,
    ) -> Result<Vec<Result<RefitEstimates, LmmError>>, LmmError> {
        let n = self.design.n;
        if ys.len() != n * n_resp {
            return Err(LmmError::InvalidInput(format!(
                "the responses have {} values, not n x {n_resp} = {}",
                ys.len(),
                n * n_resp
            )));
        }
        let k = self.n_theta();
        let theta0 = match &control.theta_start {
            Some(t) => {
                input::check_theta(&self.design.input(), t)?;
                t.clone()
            }
            None => {
                return Err(LmmError::InvalidInput(
                    "batched refits need a starting theta".into(),
                ))
            }
        };
        if metric.len() != k * k || !metric.iter().all(|v| v.is_finite()) {
            return Err(LmmError::InvalidInput(format!(
                "the refit metric must be a finite {k} x {k} matrix"
            )));
        }
        let tol = if control.tol > 0.0 && control.tol.is_finite() {
            control.tol
        } else {
            1e-12
        };
        let mut out = Vec::with_capacity(n_resp);
        for j in 0..n_resp {
            let y = &ys[j * n..(j + 1) * n];
            if let Err(e) = self.set_response(y) {
                out.push(Err(e));
                continue;
            }
            match self.refit_light(&theta0, metric, control, tol) {
                Ok(Some(r)) => {
                    out.push(Ok(r));
                    continue;
                }
                Ok(None) => {}
                Err(LmmError::Interrupted) => return Err(LmmError::Interrupted),
                Err(_) => {}
            }
            // the full path, exactly as a one-at-a-time refit
            match self.fit(control) {
                Ok(f) => out.push(Ok(RefitEstimates {
                    theta: f.theta,
                    beta: f.beta,
                    sigma: f.sigma,
                    objective: f.objective,
                    converged: f.converged,
                    light: false,
                    n_eval: f.n_eval,
                    n_grad: f.n_grad,
                    message: f.message,
                })),
                Err(LmmError::Interrupted) => return Err(LmmError::Interrupted),
                Err(e) => out.push(Err(e)),
            }
        }
        Ok(out)
    }

    /// One light refit of the current response; `None` when the light path
    /// cannot confirm its end point.
    fn refit_light(
        &mut self,
        theta0: &[f64],
        metric: &[f64],
        control: &FitControl,
        tol: f64,
    ) -> Result<Option<RefitEstimates>, LmmError> {
        let reml = control.reml;
        let max_steps = LIGHT_MAX_STEPS.min(control.max_iter);
        let lower = self.lower();
        self.prep.start_budget(control.max_time);
        let mut light = Light {
            model: self,
            reml,
            n_eval: 0,
            n_grad: 0,
        };
        let found = match light.search(theta0, &lower, metric, tol, max_steps) {
            Ok(Some(p)) => light.confirm(p, &lower, tol),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        let (n_eval, n_grad) = (light.n_eval, light.n_grad);
        self.prep.take_budget();
        let Some((x, fx, g, xn)) = found? else {
            return Ok(None);
        };
        // where the full fit would look further (mirror images of a zero
        // diagonal, unbounded growth), it decides
        let xmax = x.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let gtol = 1e-9 * (1.0 + fx.abs());
        if xmax > 1e6 || !input::column_sign_flips(&self.design.input(), &x, &g, gtol).is_empty() {
            return Ok(None);
        }
        // the Newton step from the confirmed point, kept if it is no worse
        let shift = crate::criterion_shift(self.prep.blocks.n, self.design.p, &self.pre, reml);
        let (x, e) = match (xn != x).then(|| self.evaluate(&xn, reml)) {
            Some(Ok(e)) if e.objective - shift <= fx => (xn, e),
            _ => {
                let e = self.evaluate(&x, reml)?;
                (x, e)
            }
        };
        Ok(Some(RefitEstimates {
            theta: x,
            beta: e.beta,
            sigma: e.sigma,
            objective: e.objective,
            converged: true,
            light: true,
            n_eval: n_eval + 2,
            n_grad,
            message: "converged".into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Design, ReTerm};

    pub(crate) fn sleepstudy(slope: bool) -> Design {
        let path = format!("{}/tests/data/sleepstudy.csv", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).unwrap();
        let mut y = Vec::new();
        let mut days = Vec::new();
        let mut subj: Vec<String> = Vec::new();
        for l in text.lines().skip(1).filter(|l| !l.is_empty()) {
            let f: Vec<&str> = l.split(',').collect();
            y.push(f[0].parse::<f64>().unwrap());
            days.push(f[1].parse::<f64>().unwrap());
            subj.push(f[2].trim_matches('"').to_string());
        }
        let mut lev = subj.clone();
        lev.sort();
        lev.dedup();
        let codes: Vec<i32> = subj
            .iter()
            .map(|s| lev.binary_search(s).unwrap() as i32)
            .collect();
        let n = y.len();
        let mut x = vec![1.0; n];
        x.extend_from_slice(&days);
        let (z, k) = if slope {
            (x.clone(), 2)
        } else {
            (vec![1.0; n], 1)
        };
        Design {
            n,
            p: 2,
            x,
            y,
            weights: Vec::new(),
            terms: vec![ReTerm {
                codes: codes.into(),
                n_levels: lev.len(),
                z: z.into(),
                k,
                factor_id: 0,
            }],
        }
    }

    struct Rng(u64);
    impl Rng {
        fn unif(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let u1 = self.unif().max(1e-300);
            let u2 = self.unif();
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
    }

    /// `m` responses simulated from sleepstudy-like parameters: intercept
    /// and Days random effects with sd `sd0`, `sd1` (correlation 0), residual
    /// sd 25.
    fn responses(d: &Design, m: usize, sd0: f64, sd1: f64, seed: u64) -> Vec<f64> {
        let mut r = Rng(seed);
        let g = d.terms[0].n_levels;
        let mut out = Vec::with_capacity(d.n * m);
        for _ in 0..m {
            let u: Vec<(f64, f64)> = (0..g)
                .map(|_| (sd0 * r.normal(), sd1 * r.normal()))
                .collect();
            for i in 0..d.n {
                let (a, b) = u[d.terms[0].codes[i] as usize];
                let days = d.x[d.n + i];
                out.push(251.4 + 10.5 * days + a + b * days + 25.0 * r.normal());
            }
        }
        out
    }

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / (1.0 + b.abs())
    }

    /// Batched refits against one-at-a-time full fits of the same
    /// responses; returns the number of light refits.
    fn compare(slope: bool, reml: bool, sd1: f64, m: usize, seed: u64) -> usize {
        let d = sleepstudy(slope);
        let mut model = Model::new(d.clone()).unwrap();
        let fit = model
            .fit(&FitControl {
                reml,
                ..FitControl::default()
            })
            .unwrap();
        let control = FitControl {
            reml,
            theta_start: Some(fit.theta.clone()),
            restarts: false,
            ..FitControl::default()
        };
        let metric = model.refit_metric(&fit.theta, reml).unwrap();
        let ys = responses(&d, m, 24.7, sd1, seed);
        let batch = model.refit_responses(&ys, m, &metric, &control).unwrap();
        let mut n_light = 0;
        for j in 0..m {
            let mut one = Model::new(d.clone()).unwrap();
            one.set_response(&ys[j * d.n..(j + 1) * d.n]).unwrap();
            let f = one.fit(&control).unwrap();
            let b = batch[j].as_ref().unwrap();
            n_light += b.light as usize;
            assert_eq!(b.converged, f.converged, "{j}: {}", f.message);
            assert!(
                rel(b.objective, f.objective) < 1e-10,
                "{j}: {} vs {}",
                b.objective,
                f.objective
            );
            // the better of the two optima is confirmed by both
            assert!(b.objective <= f.objective + 1e-9 * f.objective.abs());
            for (a, c) in b.theta.iter().zip(&f.theta) {
                assert!(
                    (a - c).abs() < 1e-5 * (1.0 + c.abs()),
                    "{j}: {:?} {:?}",
                    b.theta,
                    f.theta
                );
            }
            for (a, c) in b.beta.iter().zip(&f.beta) {
                assert!(rel(*a, *c) < 1e-6, "{j}: {:?} {:?}", b.beta, f.beta);
            }
            assert!(rel(b.sigma, f.sigma) < 1e-6);
        }
        n_light
    }

    #[test]
    fn batched_refits_equal_one_at_a_time_fits() {
        for reml in [false, true] {
            // interior optima: all refits take the light path
            assert!(compare(true, reml, 5.9, 30, 11) >= 25);
            assert_eq!(compare(false, reml, 0.0, 30, 12), 30);
            // a small slope variance: many refits end on the boundary
            compare(true, reml, 0.3, 30, 13);
        }
    }

    /// Crossed, weighted design: `(1 + x | g)` on 12 levels and `(1 | h)` on
    /// 5 crossed levels, responses from a seeded generator.
    fn crossed(seed: u64) -> (Design, Vec<f64>) {
        let mut r = Rng(seed);
        let n = 150;
        let xc: Vec<f64> = (0..n).map(|_| r.unif() * 4.0 - 2.0).collect();
        let g: Vec<i32> = (0..n).map(|i| (i % 12) as i32).collect();
        let h: Vec<i32> = (0..n).map(|_| (r.unif() * 5.0).min(4.0) as i32).collect();
        let weights: Vec<f64> = (0..n).map(|_| 0.5 + r.unif()).collect();
        let mut ys = Vec::new();
        for _ in 0..21 {
            let ug: Vec<(f64, f64)> = (0..12).map(|_| (r.normal(), 0.4 * r.normal())).collect();
            let uh: Vec<f64> = (0..5).map(|_| 0.5 * r.normal()).collect();
            for i in 0..n {
                let (a, b) = ug[g[i] as usize];
                ys.push(
                    1.0 + 0.5 * xc[i]
                        + a
                        + b * xc[i]
                        + uh[h[i] as usize]
                        + r.normal() / weights[i].sqrt(),
                );
            }
        }
        let mut x = vec![1.0; n];
        x.extend_from_slice(&xc);
        let d = Design {
            n,
            p: 2,
            x: x.clone(),
            y: ys[..n].to_vec(),
            weights,
            terms: vec![
                ReTerm {
                    codes: g.into(),
                    n_levels: 12,
                    z: x.into(),
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
        };
        (d, ys[n..].to_vec())
    }

    #[test]
    fn crossed_weighted_refits_equal_one_at_a_time_fits() {
        let (d, ys) = crossed(31);
        let m = ys.len() / d.n;
        for reml in [true, false] {
            let mut model = Model::new(d.clone()).unwrap();
            let fit = model
                .fit(&FitControl {
                    reml,
                    ..FitControl::default()
                })
                .unwrap();
            let control = FitControl {
                reml,
                theta_start: Some(fit.theta.clone()),
                restarts: false,
                ..FitControl::default()
            };
            let metric = model.refit_metric(&fit.theta, reml).unwrap();
            let batch = model.refit_responses(&ys, m, &metric, &control).unwrap();
            let mut n_light = 0;
            for j in 0..m {
                let mut one = Model::new(d.clone()).unwrap();
                one.set_response(&ys[j * d.n..(j + 1) * d.n]).unwrap();
                let f = one.fit(&control).unwrap();
                let b = batch[j].as_ref().unwrap();
                n_light += b.light as usize;
                assert_eq!(b.converged, f.converged);
                assert!(rel(b.objective, f.objective) < 1e-10, "{j}");
                for (a, c) in b.beta.iter().zip(&f.beta) {
                    assert!(rel(*a, *c) < 1e-6, "{j}: {:?} {:?}", b.beta, f.beta);
                }
            }
            assert!(n_light >= m / 2, "{n_light} of {m}");
        }
    }

    #[test]
    fn bad_input_and_bad_responses() {
        let d = sleepstudy(true);
        let mut model = Model::new(d.clone()).unwrap();
        let fit = model.fit(&FitControl::default()).unwrap();
        let control = FitControl {
            theta_start: Some(fit.theta.clone()),
            restarts: false,
            ..FitControl::default()
        };
        let metric = model.refit_metric(&fit.theta, true).unwrap();
        let mut ys = responses(&d, 3, 24.7, 5.9, 3);
        assert!(model
            .refit_responses(&ys[1..], 3, &metric, &control)
            .is_err());
        assert!(model
            .refit_responses(&ys, 3, &metric[1..], &control)
            .is_err());
        let no_start = FitControl {
            theta_start: None,
            ..control.clone()
        };
        assert!(model.refit_responses(&ys, 3, &metric, &no_start).is_err());
        ys[d.n + 5] = f64::NAN;
        let out = model.refit_responses(&ys, 3, &metric, &control).unwrap();
        assert!(out[0].is_ok() && out[1].is_err() && out[2].is_ok());
        // the metric is positive definite even at a boundary theta
        let h = model.refit_metric(&[1.0, 0.5, 0.0], true).unwrap();
        assert!(newton_step(&h, &[1.0, 1.0, 1.0], &[true; 3]).is_some());
    }

    #[test]
    fn failures_are_those_of_the_one_at_a_time_fit() {
        // random intercept; the second response is the group means exactly
        // (the random effects reproduce it: a perfect fit), the third has a
        // tiny within-group spread
        let d = sleepstudy(false);
        let mut model = Model::new(d.clone()).unwrap();
        let fit = model.fit(&FitControl::default()).unwrap();
        let control = FitControl {
            theta_start: Some(fit.theta.clone()),
            restarts: false,
            ..FitControl::default()
        };
        let metric = model.refit_metric(&fit.theta, true).unwrap();
        let mut ys = responses(&d, 3, 24.7, 0.0, 21);
        let codes = &d.terms[0].codes;
        for i in 0..d.n {
            let c = codes[i] as f64;
            ys[d.n + i] = 250.0 + 10.0 * c;
            ys[2 * d.n + i] = 250.0 + 10.0 * c + 1e-6 * ((i * 7) % 5) as f64;
        }
        let batch = model.refit_responses(&ys, 3, &metric, &control).unwrap();
        for j in 0..3 {
            let mut one = Model::new(d.clone()).unwrap();
            one.set_response(&ys[j * d.n..(j + 1) * d.n]).unwrap();
            match (one.fit(&control), &batch[j]) {
                (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind()),
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.converged, b.converged, "{j}: {}", a.message);
                    assert!(rel(a.objective, b.objective) < 1e-9);
                }
                (a, b) => panic!("{j}: {a:?} vs {b:?}"),
            }
        }
        assert!(batch[1].is_err());
        // with one iteration allowed the light path hands over to the full
        // path, which reports what it reached
        let one_step = FitControl {
            max_iter: 1,
            ..control.clone()
        };
        let ys = responses(&d, 4, 24.7, 0.0, 22);
        let out = model.refit_responses(&ys, 4, &metric, &one_step).unwrap();
        let mut n_full = 0;
        for (j, r) in out.iter().enumerate() {
            let r = r.as_ref().unwrap();
            if r.light {
                assert!(r.converged);
                continue;
            }
            n_full += 1;
            let mut one = Model::new(d.clone()).unwrap();
            one.set_response(&ys[j * d.n..(j + 1) * d.n]).unwrap();
            let f = one.fit(&one_step).unwrap();
            assert_eq!((r.converged, r.objective), (f.converged, f.objective));
        }
        assert!(n_full > 0);
    }

    #[test]
    #[ignore]
    fn timing() {
        for (slope, reml, sd1) in [
            (true, false, 5.9),
            (true, false, 0.0),
            (false, false, 0.0),
            (true, true, 5.9),
        ] {
            let d = sleepstudy(slope);
            let mut m = Model::new(d.clone()).unwrap();
            let c = FitControl {
                reml,
                ..FitControl::default()
            };
            let f = m.fit(&c).unwrap();
            let th = f.theta.clone();
            let reps = 5000;
            let t0 = std::time::Instant::now();
            for _ in 0..reps {
                m.prep.eval(&th, reml).unwrap();
            }
            let te = t0.elapsed().as_secs_f64() / reps as f64 * 1e6;
            let t0 = std::time::Instant::now();
            for _ in 0..reps {
                m.prep.eval_grad(&th, reml).unwrap();
            }
            let tg = t0.elapsed().as_secs_f64() / reps as f64 * 1e6;
            println!("slope {slope} reml {reml} sd1 {sd1}: eval {te:.2} us, eval_grad {tg:.2} us");
            let control = FitControl {
                reml,
                theta_start: Some(th.clone()),
                restarts: false,
                ..FitControl::default()
            };
            let nr = 1000;
            let ys = responses(&d, nr, 24.7, sd1, 5);
            let t0 = std::time::Instant::now();
            let (mut ne, mut ng) = (0, 0);
            for j in 0..nr {
                m.set_response(&ys[j * d.n..(j + 1) * d.n]).unwrap();
                let o = m.fit(&control).unwrap();
                ne += o.n_eval;
                ng += o.n_grad;
            }
            println!(
                "  one at a time: {:.1} us per refit, {} evals {} grads",
                t0.elapsed().as_secs_f64() / nr as f64 * 1e6,
                ne as f64 / nr as f64,
                ng as f64 / nr as f64
            );
            let metric = m.refit_metric(&th, reml).unwrap();
            let t0 = std::time::Instant::now();
            let out = m.refit_responses(&ys, nr, &metric, &control).unwrap();
            let el = t0.elapsed().as_secs_f64() / nr as f64 * 1e6;
            let ok: Vec<&RefitEstimates> = out.iter().map(|r| r.as_ref().unwrap()).collect();
            println!(
                "  batched: {el:.1} us per refit, {} evals {} grads, light {}",
                ok.iter().map(|r| r.n_eval).sum::<usize>() as f64 / nr as f64,
                ok.iter().map(|r| r.n_grad).sum::<usize>() as f64 / nr as f64,
                ok.iter().filter(|r| r.light).count()
            );
        }
    }
}
