//! Bound-constrained minimisation of the profiled criterion on its analytic
//! gradient: a projected BFGS method (Bertsekas' two-metric projection with a
//! quasi-Newton metric on the free variables and an Armijo search along the
//! projection arc), followed by an honest check of the end point with a
//! Hessian from finite differences of the analytic gradient: the gradient on
//! the free parameters, the sign of the gradient on the bound faces and the
//! curvature. Where the check finds a descent or negative-curvature
//! direction the search continues from there; what it cannot confirm is
//! reported as not converged.

use crate::error::LmmError;

/// What the optimiser minimises: the criterion, with and without gradient.
pub(crate) trait Objective {
    fn value(&mut self, x: &[f64]) -> Result<f64, LmmError>;
    fn value_grad(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>), LmmError>;
}

/// Result of a minimisation.
#[derive(Debug, Clone)]
pub(crate) struct OptResult {
    pub x: Vec<f64>,
    pub f: f64,
    pub grad: Vec<f64>,
    pub at_bound: Vec<bool>,
    /// Criterion evaluations (each gradient call includes one).
    pub n_eval: usize,
    /// Gradient evaluations.
    pub n_grad: usize,
    pub converged: bool,
    pub message: String,
}

/// Counts calls to an objective.
pub(crate) struct Counted<'a, O: Objective> {
    pub obj: &'a mut O,
    pub n_eval: usize,
    pub n_grad: usize,
    /// The point of the last criterion-only call: a gradient asked for
    /// there reuses its factorisation (no new evaluation is counted).
    pub last_f: Option<Vec<f64>>,
    /// The last few points with their criterion and gradient (a run
    /// starting where the previous computation ended repeats nothing).
    pub recent: Vec<(Vec<f64>, f64, Vec<f64>)>,
}

/// Whether every evaluation is printed (`LMMR_EVAL_TRACE` set).
fn eval_trace() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("LMMR_EVAL_TRACE").is_some())
}

/// Points kept in [`Counted::recent`].
const RECENT: usize = 4;

impl<'a, O: Objective> Counted<'a, O> {
    pub(crate) fn new(obj: &'a mut O) -> Counted<'a, O> {
        Counted {
            obj,
            n_eval: 0,
            n_grad: 0,
            last_f: None,
            recent: Vec::new(),
        }
    }

    fn f(&mut self, x: &[f64]) -> f64 {
        if let Some((_, f, _)) = self.recent.iter().find(|r| r.0 == x) {
            return *f;
        }
        self.last_f = Some(x.to_vec());
        self.n_eval += 1;
        if eval_trace() {
            eprintln!("[eval] f x = {x:?}");
        }
        match self.obj.value(x) {
            Ok(v) if v.is_finite() => v,
            _ => f64::INFINITY,
        }
    }
    fn fg(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>), LmmError> {
        if let Some((_, f, g)) = self.recent.iter().find(|r| r.0 == x) {
            return Ok((*f, g.clone()));
        }
        if self.last_f.as_deref() != Some(x) {
            self.n_eval += 1;
        }
        self.last_f = None;
        self.n_grad += 1;
        let r = self.obj.value_grad(x);
        if eval_trace() {
            if let Ok((f, g)) = &r {
                eprintln!("[eval] fg x = {x:?} f = {f:.10} g = {g:?}");
            }
        }
        if let Ok((f, g)) = &r {
            if self.recent.len() == RECENT {
                self.recent.remove(0);
            }
            self.recent.push((x.to_vec(), *f, g.clone()));
        }
        r
    }
}

/// Symmetric eigen-decomposition by cyclic Jacobi rotations. `a` is `m x m`
/// column-major (full). Returns (eigenvalues, eigenvectors column-major).
pub(crate) fn sym_eigen(a: &[f64], m: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; m * m];
    for i in 0..m {
        v[i * m + i] = 1.0;
    }
    for _sweep in 0..100 {
        let mut off = 0.0;
        let mut tot = 0.0;
        for c in 0..m {
            for r in 0..m {
                let x = a[c * m + r] * a[c * m + r];
                tot += x;
                if r != c {
                    off += x;
                }
            }
        }
        if off <= 1e-30 * tot || off == 0.0 {
            break;
        }
        for pi in 0..m {
            for qi in (pi + 1)..m {
                let apq = a[qi * m + pi];
                if apq == 0.0 {
                    continue;
                }
                let app = a[pi * m + pi];
                let aqq = a[qi * m + qi];
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A <- J' A J with J rotating columns p, q.
                for k in 0..m {
                    let akp = a[pi * m + k];
                    let akq = a[qi * m + k];
                    a[pi * m + k] = c * akp - s * akq;
                    a[qi * m + k] = s * akp + c * akq;
                }
                for k in 0..m {
                    let apk = a[k * m + pi];
                    let aqk = a[k * m + qi];
                    a[k * m + pi] = c * apk - s * aqk;
                    a[k * m + qi] = s * apk + c * aqk;
                }
                for k in 0..m {
                    let vkp = v[pi * m + k];
                    let vkq = v[qi * m + k];
                    v[pi * m + k] = c * vkp - s * vkq;
                    v[qi * m + k] = s * vkp + c * vkq;
                }
            }
        }
    }
    let ev = (0..m).map(|i| a[i * m + i]).collect();
    (ev, v)
}

/// A point with its criterion and gradient.
type Point = (Vec<f64>, f64, Vec<f64>);
/// End of a quasi-Newton run: point, criterion, gradient, success, message.
type Run = (Vec<f64>, f64, Vec<f64>, bool, String);

pub(crate) fn project(x: &mut [f64], lb: &[f64]) {
    for (xi, &l) in x.iter_mut().zip(lb) {
        if *xi < l {
            *xi = l;
        }
    }
}

/// In-place Cholesky of a dense `m x m` column-major matrix (lower triangle).
pub(crate) fn chol(a: &mut [f64], m: usize) -> bool {
    for j in 0..m {
        let mut dj = a[j * m + j];
        for l in 0..j {
            dj -= a[l * m + j] * a[l * m + j];
        }
        if !(dj > 0.0 && dj.is_finite()) {
            return false;
        }
        let ljj = dj.sqrt();
        a[j * m + j] = ljj;
        for i in (j + 1)..m {
            let mut v = a[j * m + i];
            for l in 0..j {
                v -= a[l * m + i] * a[l * m + j];
            }
            a[j * m + i] = v / ljj;
        }
    }
    true
}

/// Solves `(L L') x = b` in place.
pub(crate) fn chol_solve(l: &[f64], m: usize, b: &mut [f64]) {
    for r in 0..m {
        let mut v = b[r];
        for c in 0..r {
            v -= l[c * m + r] * b[c];
        }
        b[r] = v / l[r * m + r];
    }
    for r in (0..m).rev() {
        let mut v = b[r];
        for c in (r + 1)..m {
            v -= l[r * m + c] * b[c];
        }
        b[r] = v / l[r * m + r];
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Newton-type direction on the free variables for a symmetric matrix `h`
/// (`m x m`): `d_F = -h_FF^{-1} g_F`, the eigenvalues of `h_FF` replaced by
/// their absolute values with a floor when `h_FF` is not positive definite.
/// Variables not in `free` get `d_i = -g_i / max(h_ii, floor)` (they are
/// pushed onto their bound by the projection). Returns `(d, predicted
/// decrease on the free variables)`.
fn newton_direction(h: &[f64], g: &[f64], free: &[bool]) -> (Vec<f64>, f64) {
    let m = g.len();
    let fi: Vec<usize> = (0..m).filter(|&i| free[i]).collect();
    let nf = fi.len();
    let mut hf = vec![0.0; nf * nf];
    for (b, &j) in fi.iter().enumerate() {
        for (a, &i) in fi.iter().enumerate() {
            hf[b * nf + a] = h[j * m + i];
        }
    }
    let mut d = vec![0.0; m];
    let mut l = hf.clone();
    if chol(&mut l, nf) {
        let mut rhs: Vec<f64> = fi.iter().map(|&i| -g[i]).collect();
        chol_solve(&l, nf, &mut rhs);
        for (a, &i) in fi.iter().enumerate() {
            d[i] = rhs[a];
        }
    } else {
        let (ev, evec) = sym_eigen(&hf, nf);
        let lmax = ev.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let floor = (1e-8 * lmax).max(1e-12);
        for k in 0..nf {
            let vk = &evec[k * nf..(k + 1) * nf];
            let proj: f64 = vk.iter().zip(&fi).map(|(v, &i)| v * g[i]).sum();
            let s = proj / ev[k].abs().max(floor);
            for (a, &i) in fi.iter().enumerate() {
                d[i] -= s * vk[a];
            }
        }
    }
    let dec = -0.5 * fi.iter().map(|&i| g[i] * d[i]).sum::<f64>();
    let diag_floor = 1e-8;
    for i in 0..m {
        if !free[i] {
            d[i] = -g[i] / h[i * m + i].max(diag_floor);
        }
    }
    (d, dec)
}

/// Armijo search along the projection arc `P(x + alpha d)`. The first trial
/// (alpha = 1) is evaluated with its gradient since it is usually accepted.
/// Returns the accepted point with its criterion and gradient.
fn arc_search<O: Objective>(
    obj: &mut Counted<O>,
    x: &[f64],
    fx: f64,
    g: &[f64],
    d: &[f64],
    lb: &[f64],
) -> Result<Option<Point>, LmmError> {
    arc_search_from(obj, x, fx, g, d, lb, 1.0).map(|r| r.map(|(p, _)| p))
}

/// [`arc_search`] with the first trial at `alpha0` (at most 1); also
/// returns the accepted step length.
fn arc_search_from<O: Objective>(
    obj: &mut Counted<O>,
    x: &[f64],
    fx: f64,
    g: &[f64],
    d: &[f64],
    lb: &[f64],
    alpha0: f64,
) -> Result<Option<(Point, f64)>, LmmError> {
    // The first trial moves no coordinate by more than 10 (1 + max |x|): a
    // badly scaled quasi-Newton step (1e7 where the criterion is flat)
    // would otherwise cost tens of halvings, each an evaluation.
    let xmax = x.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let dmax = d.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let cap = 10.0 * (1.0 + xmax);
    let mut alpha = if dmax > cap { cap / dmax } else { 1.0 }.min(alpha0);
    for it in 0..50 {
        let mut xn: Vec<f64> = x.iter().zip(d).map(|(a, b)| a + alpha * b).collect();
        project(&mut xn, lb);
        if xn == x {
            return Ok(None);
        }
        let slope: f64 = (0..x.len()).map(|i| g[i] * (xn[i] - x[i])).sum();
        // The gradient only at an accepted point (it reuses the point's
        // factorisation): where a gradient costs more than the criterion
        // (a large dense block) a rejected trial costs only its criterion.
        let fnew = obj.f(&xn);
        if fnew.is_finite() && fnew <= fx + 1e-4 * slope.min(0.0) {
            if let Ok((fnew, gnew)) = obj.fg(&xn) {
                return Ok(Some(((xn, fnew, gnew), alpha)));
            }
        } else if it == 0 && fnew.is_finite() && slope < 0.0 {
            // Quadratic interpolation of the first step length.
            let a = -slope / (2.0 * (fnew - fx - slope));
            alpha *= a.clamp(0.1, 0.5);
            continue;
        }
        alpha *= 0.5;
    }
    Ok(None)
}

/// Projected BFGS from `x0` over `x >= lb`. `b0` is an optional starting
/// Hessian approximation (`m x m`).
fn bfgs<O: Objective>(
    obj: &mut Counted<O>,
    x0: &[f64],
    lb: &[f64],
    b0: Option<&[f64]>,
    budget: &mut usize,
    tol: f64,
) -> Result<Run, LmmError> {
    let m = x0.len();
    let mut x = x0.to_vec();
    project(&mut x, lb);
    let (mut fx, mut g) = obj.fg(&x)?;
    if m == 0 {
        return Ok((x, fx, g, true, "converged".into()));
    }
    let mut bm = vec![0.0; m * m];
    let mut scaled = b0.is_some();
    match b0 {
        Some(b) => bm.copy_from_slice(b),
        None => (0..m).for_each(|i| bm[i * m + i] = 1.0),
    }
    let mut resets = 0;
    let mut alpha0 = 1.0;
    while *budget > 0 {
        *budget -= 1;
        // Epsilon-active set (Bertsekas): near the bound with the gradient
        // pushing against it.
        let pg = (0..m).fold(0.0f64, |a, i| {
            a.max((x[i] - (x[i] - g[i]).max(lb[i])).abs())
        });
        let eps = pg.min(1e-3);
        let free: Vec<bool> = (0..m)
            .map(|i| !(x[i] - lb[i] <= eps && g[i] > 0.0))
            .collect();
        let (mut d, dec) = newton_direction(&bm, &g, &free);
        let at_bounds = (0..m).all(|i| free[i] || x[i] == lb[i]);
        if dec <= tol * (1.0 + fx.abs()) && at_bounds {
            return Ok((x, fx, g, true, "converged".into()));
        }
        if !scaled {
            // First step with the identity: at most one unit in theta.
            let dmax = d.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            if dmax > 1.0 {
                d.iter_mut().for_each(|v| *v /= dmax);
            }
        }
        let step = arc_search_from(obj, &x, fx, &g, &d, lb, alpha0)?;
        let Some(((xn, fnew, gnew), acc)) = step else {
            alpha0 = 1.0;
            if dec <= 1e-8 * (1.0 + fx.abs()) {
                return Ok((x, fx, g, true, "converged".into()));
            }
            if resets < 2 {
                // Restart the metric from a scaled identity.
                resets += 1;
                bm.iter_mut().for_each(|v| *v = 0.0);
                let sc = (0..m).fold(0.0f64, |a, i| a.max(g[i].abs())).max(1e-8);
                (0..m).for_each(|i| bm[i * m + i] = sc);
                scaled = true;
                continue;
            }
            return Ok((
                x,
                fx,
                g,
                false,
                "line search failed to reduce the criterion".into(),
            ));
        };
        // Where the last search cut the step far back, the next one starts
        // near that length (the metric adapts slowly when the steps it
        // proposes are orders of magnitude too long: each halving is an
        // evaluation; harness case 444: 22 per iteration).
        alpha0 = if acc < 0.25 { 4.0 * acc } else { 1.0 };
        let s: Vec<f64> = xn.iter().zip(&x).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = gnew.iter().zip(&g).map(|(a, b)| a - b).collect();
        let change = fx - fnew;
        x = xn;
        fx = fnew;
        g = gnew;
        if x.iter().any(|v| v.abs() > RUNAWAY) {
            // The criterion keeps decreasing as a coordinate grows without
            // bound: no optimum this way, and each further iteration costs
            // line-search evaluations on a criterion flat to rounding.
            return Ok((x, fx, g, false, RUNAWAY_MESSAGE.into()));
        }
        let sy = dot(&s, &yv);
        if !scaled && sy > 0.0 {
            let yy = dot(&yv, &yv);
            let sc = yy / sy;
            bm.iter_mut().for_each(|v| *v = 0.0);
            (0..m).for_each(|i| bm[i * m + i] = sc);
            scaled = true;
        }
        // Damped BFGS update (Powell) keeps the metric positive definite.
        let bs: Vec<f64> = (0..m)
            .map(|r| (0..m).map(|c| bm[c * m + r] * s[c]).sum())
            .collect();
        let sbs = dot(&s, &bs);
        if sbs > 0.0 && sbs.is_finite() {
            let theta = if sy >= 0.2 * sbs {
                1.0
            } else {
                0.8 * sbs / (sbs - sy)
            };
            let rv: Vec<f64> = (0..m)
                .map(|i| theta * yv[i] + (1.0 - theta) * bs[i])
                .collect();
            let sr = dot(&s, &rv);
            if sr > 0.0 {
                for c in 0..m {
                    for r in 0..m {
                        bm[c * m + r] += rv[r] * rv[c] / sr - bs[r] * bs[c] / sbs;
                    }
                }
            }
        }
        if change <= 1e-15 * (1.0 + fx.abs()) && dec <= 1e-8 * (1.0 + fx.abs()) {
            return Ok((x, fx, g, true, "converged".into()));
        }
    }
    Ok((x, fx, g, false, CAP_MESSAGE.into()))
}

const CAP_MESSAGE: &str = "maximum number of iterations reached";

/// A quasi-Newton run stops once a coordinate passes this size.
const RUNAWAY: f64 = 1e8;
const RUNAWAY_MESSAGE: &str = "the quasi-Newton search stopped where a coordinate passed 1e8";

/// Largest number of parameters whose first quasi-Newton metric is the
/// Hessian by differences at the start.
const INITIAL_HESSIAN_MAX: usize = 12;

/// Hessian by differences of the analytic gradient (symmetrised):
/// central differences if `central`, else forward differences (steps into
/// the feasible side of a bound).
pub(crate) fn fd_hessian<F>(
    mut grad: F,
    x: &[f64],
    g0: &[f64],
    central: bool,
) -> Result<Vec<f64>, LmmError>
where
    F: FnMut(&[f64]) -> Result<Vec<f64>, LmmError>,
{
    let m = x.len();
    let mut h = vec![0.0; m * m];
    let mut xt = x.to_vec();
    for i in 0..m {
        let hi = if central { 1e-4 } else { 1e-6 } * x[i].abs().max(0.1);
        xt[i] = x[i] + hi;
        let gp = grad(&xt)?;
        let (gm, den) = if central {
            xt[i] = x[i] - hi;
            (grad(&xt)?, 2.0 * hi)
        } else {
            (g0.to_vec(), hi)
        };
        xt[i] = x[i];
        for r in 0..m {
            h[i * m + r] = (gp[r] - gm[r]) / den;
        }
    }
    for c in 0..m {
        for r in (c + 1)..m {
            let v = 0.5 * (h[c * m + r] + h[r * m + c]);
            h[c * m + r] = v;
            h[r * m + c] = v;
        }
    }
    Ok(h)
}

/// Searches `x + t v` (projected) for a decrease, for growing `t`: steps
/// doubling from `1e-3` of the scale of `x` while they keep decreasing the
/// criterion; until the first decrease, steps growing fourfold up to `1e3`
/// of the scale (where the curvature is small, the decrease of a small
/// step is below rounding and shows only further out: harness case 3504).
fn curvature_escape<O: Objective>(
    obj: &mut Counted<O>,
    x: &[f64],
    fx: f64,
    v: &[f64],
    lb: &[f64],
) -> Option<(Vec<f64>, f64)> {
    let scale = x.iter().fold(0.0f64, |a, b| a.max(b.abs())).max(0.1);
    let mut best: Option<(Vec<f64>, f64)> = None;
    for sign in [1.0, -1.0] {
        let mut t = 1e-3 * scale;
        let mut fbest = fx;
        let mut found = false;
        let mut last: Option<Vec<f64>> = None;
        for _ in 0..40 {
            let mut xn: Vec<f64> = x.iter().zip(v).map(|(a, b)| a + sign * t * b).collect();
            project(&mut xn, lb);
            if last.as_ref() == Some(&xn) || xn == x {
                // the projection pins the step: nothing further this way
                break;
            }
            let fnew = obj.f(&xn);
            last = Some(xn.clone());
            if fnew < fbest - 1e-12 * (1.0 + fx.abs()) {
                fbest = fnew;
                found = true;
                if best.as_ref().is_none_or(|b| fnew < b.1) {
                    best = Some((xn, fnew));
                }
                t *= 2.0;
            } else if found || t > 1e3 * scale || !fnew.is_finite() {
                break;
            } else {
                t *= 4.0;
            }
        }
    }
    best
}

/// Minimises the objective over `x >= lb` from `x0`, then checks the end
/// point (see the module documentation) and continues from wherever the
/// check finds a way down.
///
/// With `check = false` only the quasi-Newton search runs (for restarts
/// whose end point is only kept, and then checked, if it is better).
pub(crate) fn minimize<O: Objective>(
    obj: &mut O,
    x0: &[f64],
    lb: &[f64],
    max_iter: usize,
    tol: f64,
    check: bool,
    initial_hessian: bool,
) -> Result<OptResult, LmmError> {
    let m = x0.len();
    let tol = if tol > 0.0 && tol.is_finite() {
        tol
    } else {
        1e-12
    };
    let mut obj = Counted::new(obj);
    // One iteration budget for all quasi-Newton runs of this minimisation.
    let mut budget = max_iter;
    // For a few parameters the first metric is the (positive part of the)
    // Hessian by differences of the gradient at the start, m gradients: the
    // first steps are then Newton steps rather than unit steps along the
    // gradient, which overshoot onto a bound where the scales differ.
    let b0 = if initial_hessian && m > 0 && m <= INITIAL_HESSIAN_MAX {
        let mut xs = x0.to_vec();
        project(&mut xs, lb);
        match obj.fg(&xs) {
            Ok((_, g0)) => fd_hessian(|t: &[f64]| obj.fg(t).map(|(_, gg)| gg), &xs, &g0, false)
                .ok()
                .filter(|h| h.iter().all(|v| v.is_finite()))
                .map(|h| positive_part(&h, m)),
            Err(_) => None,
        }
    } else {
        None
    };
    let (mut x, mut fx, mut g, mut ok, mut message) =
        bfgs(&mut obj, x0, lb, b0.as_deref(), &mut budget, tol)?;
    let mut confirmed = false;
    let rounds = if check { 6 } else { 0 };
    if !check {
        confirmed = ok;
    }
    for _round in 0..rounds {
        // Snap components that are numerically at a bound onto it.
        let mut xs = x.clone();
        let mut snapped = false;
        for i in 0..m {
            if xs[i] > lb[i] && xs[i] - lb[i] < 1e-7 * (1.0 + lb[i].abs()) {
                xs[i] = lb[i];
                snapped = true;
            }
        }
        if snapped {
            if let Ok((fs, gs)) = obj.fg(&xs) {
                if fs <= fx {
                    x = xs;
                    fx = fs;
                    g = gs;
                }
            }
        }
        if m == 0 {
            confirmed = true;
            break;
        }
        let h = match fd_hessian(|t: &[f64]| obj.fg(t).map(|(_, gg)| gg), &x, &g, false) {
            Ok(h) if h.iter().all(|v| v.is_finite()) => h,
            _ => {
                message = "the Hessian could not be evaluated at the end point".into();
                break;
            }
        };
        // Free: interior, or on the bound without a gradient pushing
        // against it (curvature decides there).
        let gtol = 1e-9 * (1.0 + fx.abs());
        let free: Vec<bool> = (0..m).map(|i| x[i] > lb[i] || g[i] <= gtol).collect();
        let fi: Vec<usize> = (0..m).filter(|&i| free[i]).collect();
        let nf = fi.len();
        // The curvature test runs on the Hessian scaled to a unit diagonal
        // (D^-1/2 H D^-1/2, D = |diag H|): parameters on very different
        // scales (a slope on a covariate in the millions next to an
        // intercept) must not hide each other's negative curvature behind
        // one relative threshold.
        let dsc: Vec<f64> = fi
            .iter()
            .map(|&i| 1.0 / h[i * m + i].abs().max(1e-300).sqrt())
            .collect();
        let mut hf = vec![0.0; nf * nf];
        for (b, &j) in fi.iter().enumerate() {
            for (a, &i) in fi.iter().enumerate() {
                hf[b * nf + a] = h[j * m + i] * dsc[a] * dsc[b];
            }
        }
        let (ev, evec) = sym_eigen(&hf, nf);
        let lmax = ev.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        if std::env::var_os("LMMR_OPTIM_TRACE").is_some() {
            eprintln!(
                "[optim] check: f = {fx:.12}, x = {x:?}, g = {g:?}, free = {free:?}, scaled eigen = {ev:?}"
            );
        }
        let mut moved = false;
        // Every direction of negative curvature, most negative first (where
        // two are about equal the smallest may be a noise-level one while
        // the other leads down: harness case 3504).
        let thr = -1e-5 * lmax.max(1e-8);
        let mut negs: Vec<usize> = (0..nf).filter(|&k| ev[k] < thr).collect();
        negs.sort_by(|&a, &b| ev[a].total_cmp(&ev[b]));
        for kk in negs {
            // back to the original coordinates, largest component 1
            let mut v = vec![0.0; m];
            for (a, &i) in fi.iter().enumerate() {
                v[i] = evec[kk * nf + a] * dsc[a];
            }
            let vmax = v.iter().fold(0.0f64, |a, b| a.max(b.abs()));
            if vmax > 0.0 && vmax.is_finite() {
                v.iter_mut().for_each(|e| *e /= vmax);
            }
            if let Some((xn, fnew)) = curvature_escape(&mut obj, &x, fx, &v, lb) {
                let _ = fnew;
                if budget == 0 {
                    break;
                }
                let r = bfgs(&mut obj, &xn, lb, None, &mut budget, tol)?;
                (x, fx, g, ok, message) = r;
                moved = true;
                break;
            }
        }
        if moved {
            continue;
        }
        let (d, dec) = newton_direction(&h, &g, &free);
        if dec <= tol * (1.0 + fx.abs()) {
            // Confirmed; the (tiny) Newton step still buys the last digits
            // of theta where the criterion is flat.
            let mut xn: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + b).collect();
            project(&mut xn, lb);
            // a coordinate on its bound stays there for a rounding-level step
            for i in 0..m {
                if x[i] == lb[i] && xn[i] - lb[i] < 1e-10 {
                    xn[i] = lb[i];
                }
            }
            if xn != x {
                if let Ok((fnew, gnew)) = obj.fg(&xn) {
                    if fnew <= fx {
                        x = xn;
                        fx = fnew;
                        g = gnew;
                    }
                }
            }
            confirmed = true;
            break;
        }
        match arc_search(&mut obj, &x, fx, &g, &d, lb)? {
            Some(_) | None if budget == 0 => {
                message = format!("maximum number of iterations ({max_iter}) reached");
                break;
            }
            Some((xn, fnew, gnew)) if fnew < fx - tol * (1.0 + fx.abs()) => {
                // A way down: continue the quasi-Newton search from there,
                // with the finite-difference Hessian as its metric.
                let _ = (fnew, gnew);
                let hp = positive_part(&h, m);
                let r = bfgs(&mut obj, &xn, lb, Some(&hp), &mut budget, tol)?;
                (x, fx, g, ok, message) = r;
            }
            Some((xn, fnew, gnew)) => {
                // Only noise-level progress is left: a minimum within
                // rounding if the Newton step did not promise much more.
                if fnew <= fx {
                    x = xn;
                    fx = fnew;
                    g = gnew;
                }
                confirmed = dec <= 1e-6 * (1.0 + fx.abs());
                if !confirmed {
                    message = format!(
                        "the end point could not be confirmed as a minimum (predicted decrease {dec:.3e})"
                    );
                }
                break;
            }
            None => {
                // The Newton step on the Hessian cannot reduce the
                // criterion: a minimum within rounding.
                confirmed = dec <= 1e-6 * (1.0 + fx.abs());
                if !confirmed {
                    message = format!(
                        "the end point could not be confirmed as a minimum (predicted decrease {dec:.3e})"
                    );
                }
                break;
            }
        }
    }
    let converged = confirmed;
    if converged {
        message = if ok || message.is_empty() {
            "converged".into()
        } else {
            format!("converged (optimum confirmed after: {message})")
        };
    } else if message == CAP_MESSAGE {
        message = format!("maximum number of iterations ({max_iter}) reached");
    } else if message.is_empty() || message == "converged" {
        message = "the optimum could not be confirmed".into();
    }
    let xmax = x.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    if !converged && xmax > 1e6 {
        message = format!(
            "{message}; theta grows without bound (largest |theta| {xmax:.3e}): the criterion keeps \
             decreasing as a variance grows, e.g. because the random effects can reproduce the response"
        );
    }
    let at_bound = x.iter().zip(lb).map(|(a, b)| a <= b).collect();
    Ok(OptResult {
        x,
        f: fx,
        grad: g,
        at_bound,
        n_eval: obj.n_eval,
        n_grad: obj.n_grad,
        converged,
        message,
    })
}

/// The matrix with its eigenvalues replaced by their absolute values
/// (floored), a positive definite metric for BFGS.
pub(crate) fn positive_part(h: &[f64], m: usize) -> Vec<f64> {
    let (ev, v) = sym_eigen(h, m);
    let lmax = ev.iter().fold(0.0f64, |a, e| a.max(e.abs()));
    let floor = (1e-8 * lmax).max(1e-10);
    let mut out = vec![0.0; m * m];
    for k in 0..m {
        let e = ev[k].abs().max(floor);
        let vk = &v[k * m..(k + 1) * m];
        for c in 0..m {
            for r in 0..m {
                out[c * m + r] += e * vk[r] * vk[c];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fun<F: Fn(&[f64]) -> (f64, Vec<f64>)>(F);
    impl<F: Fn(&[f64]) -> (f64, Vec<f64>)> Objective for Fun<F> {
        fn value(&mut self, x: &[f64]) -> Result<f64, LmmError> {
            Ok((self.0)(x).0)
        }
        fn value_grad(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>), LmmError> {
            Ok((self.0)(x))
        }
    }

    #[test]
    fn eigen_2x2() {
        let a = [2.0, 1.0, 1.0, 2.0];
        let (ev, v) = sym_eigen(&a, 2);
        let mut e = ev.clone();
        e.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert!((e[0] - 1.0).abs() < 1e-12 && (e[1] - 3.0).abs() < 1e-12);
        for k in 0..2 {
            for r in 0..2 {
                let av = a[r] * v[k * 2] + a[2 + r] * v[k * 2 + 1];
                assert!((av - ev[k] * v[k * 2 + r]).abs() < 1e-12);
            }
        }
    }

    fn rosen(x: &[f64]) -> (f64, Vec<f64>) {
        let f = (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
        let g = vec![
            -2.0 * (1.0 - x[0]) - 400.0 * x[0] * (x[1] - x[0] * x[0]),
            200.0 * (x[1] - x[0] * x[0]),
        ];
        (f, g)
    }

    #[test]
    fn rosenbrock_interior() {
        let ninf = f64::NEG_INFINITY;
        let r = minimize(
            &mut Fun(rosen),
            &[-1.2, 1.0],
            &[ninf, ninf],
            200,
            1e-14,
            true,
            false,
        )
        .unwrap();
        assert!(r.converged, "{}", r.message);
        assert!(
            (r.x[0] - 1.0).abs() < 1e-5 && (r.x[1] - 1.0).abs() < 1e-5,
            "{:?}",
            r.x
        );
    }

    #[test]
    fn bound_active() {
        // minimum of (x+1)^2 + (y-2)^2 over x >= 0: x = 0, y = 2.
        let f = |x: &[f64]| {
            (
                (x[0] + 1.0).powi(2) + (x[1] - 2.0).powi(2),
                vec![2.0 * (x[0] + 1.0), 2.0 * (x[1] - 2.0)],
            )
        };
        let r = minimize(
            &mut Fun(f),
            &[1.0, 0.0],
            &[0.0, f64::NEG_INFINITY],
            100,
            1e-12,
            true,
            false,
        )
        .unwrap();
        assert!(r.converged, "{}", r.message);
        assert_eq!(r.x[0], 0.0);
        assert!(r.at_bound[0] && !r.at_bound[1]);
        assert!((r.x[1] - 2.0).abs() < 1e-7, "{:?}", r);
        assert!(r.grad[0] > 1.9);
    }

    #[test]
    fn even_function_saddle_start() {
        // f(t) = -t^2 + t^4 has a maximum at 0 and minima at +-1/sqrt(2):
        // the gradient vanishes at the start, only the curvature check
        // finds the way down.
        let f = |x: &[f64]| {
            (
                -x[0].powi(2) + x[0].powi(4),
                vec![-2.0 * x[0] + 4.0 * x[0].powi(3)],
            )
        };
        let r = minimize(&mut Fun(f), &[0.0], &[0.0], 100, 1e-12, true, false).unwrap();
        assert!(r.converged, "{}", r.message);
        assert!((r.x[0] - 0.5f64.sqrt()).abs() < 1e-6, "{:?}", r.x);
    }

    #[test]
    fn negative_curvature_next_to_a_steep_coordinate() {
        // f = -x^2 + x^4 + 1e14 y^2 on x, y >= 0 from the origin, where the
        // gradient vanishes: the negative curvature in x (-2) must not hide
        // behind the curvature of y (2e14) in the end-point check (harness
        // case seed 2 / 416: an intercept next to a slope on a covariate in
        // the millions).
        let f = |x: &[f64]| {
            (
                -x[0].powi(2) + x[0].powi(4) + 1e14 * x[1].powi(2),
                vec![-2.0 * x[0] + 4.0 * x[0].powi(3), 2e14 * x[1]],
            )
        };
        let r = minimize(
            &mut Fun(f),
            &[0.0, 0.0],
            &[0.0, 0.0],
            100,
            1e-12,
            true,
            false,
        )
        .unwrap();
        assert!(r.converged, "{}", r.message);
        assert!((r.x[0] - 0.5f64.sqrt()).abs() < 1e-6, "{:?}", r.x);
        assert!(r.x[1].abs() < 1e-9, "{:?}", r.x);
    }

    #[test]
    fn saddle_in_two_dimensions() {
        // f = x^2 - y^2 + y^4 / 4, start on the saddle's stable manifold.
        let f = |x: &[f64]| {
            (
                x[0].powi(2) - x[1].powi(2) + x[1].powi(4) / 4.0,
                vec![2.0 * x[0], -2.0 * x[1] + x[1].powi(3)],
            )
        };
        let ninf = f64::NEG_INFINITY;
        let r = minimize(
            &mut Fun(f),
            &[1.0, 0.0],
            &[ninf, ninf],
            100,
            1e-12,
            true,
            false,
        )
        .unwrap();
        assert!(r.converged, "{}", r.message);
        assert!((r.x[1].abs() - 2f64.sqrt()).abs() < 1e-6, "{:?}", r.x);
    }

    #[test]
    fn iteration_cap_is_continued_by_the_check() {
        // Two BFGS iterations are not enough; the check continues and
        // either confirms the optimum or says it could not.
        let ninf = f64::NEG_INFINITY;
        let r = minimize(
            &mut Fun(rosen),
            &[-1.2, 1.0],
            &[ninf, ninf],
            2,
            1e-14,
            true,
            false,
        )
        .unwrap();
        if r.converged {
            assert!((r.x[0] - 1.0).abs() < 1e-5, "{:?}", r);
        } else {
            assert!(!r.message.is_empty());
        }
    }

    #[test]
    fn quadratic_with_many_parameters() {
        // Ill-conditioned convex quadratic in 40 dimensions with bounds.
        let m = 40;
        let f = move |x: &[f64]| {
            let mut v = 0.0;
            let mut g = vec![0.0; m];
            for i in 0..m {
                let a = 10f64.powf(i as f64 / 13.0);
                let c = if i % 3 == 0 { -1.0 } else { 1.0 };
                v += 0.5 * a * (x[i] - c).powi(2);
                g[i] = a * (x[i] - c);
            }
            (v, g)
        };
        let lb: Vec<f64> = (0..m)
            .map(|i| if i % 2 == 0 { 0.0 } else { f64::NEG_INFINITY })
            .collect();
        let r = minimize(&mut Fun(f), &vec![0.5; m], &lb, 500, 1e-14, true, false).unwrap();
        assert!(r.converged, "{}", r.message);
        for i in 0..m {
            let c: f64 = if i % 3 == 0 { -1.0 } else { 1.0 };
            let want = c.max(lb[i]);
            assert!((r.x[i] - want).abs() < 1e-5, "{i}: {} vs {want}", r.x[i]);
        }
    }
}
