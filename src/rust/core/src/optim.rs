//! Bound-constrained minimisation of the profiled criterion: a projected
//! Newton method (Bertsekas' two-metric projection) with finite-difference
//! derivatives, a modified-eigenvalue Hessian and an Armijo line search along
//! the projection arc.

use crate::error::LmmError;

/// Result of a minimisation.
#[derive(Debug, Clone)]
pub(crate) struct OptResult {
    pub x: Vec<f64>,
    pub grad: Vec<f64>,
    pub at_bound: Vec<bool>,
    pub n_eval: usize,
    pub converged: bool,
    pub message: String,
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

fn project(x: &mut [f64], lb: &[f64]) {
    for (xi, &l) in x.iter_mut().zip(lb) {
        if *xi < l {
            *xi = l;
        }
    }
}

fn fd_step(x: f64) -> f64 {
    1e-4 * x.abs().max(1.0)
}

/// Central-difference gradient and a finite-difference Hessian (diagonal from
/// the central second difference, off-diagonals from forward differences).
fn fd_derivs<F>(
    f: &mut F,
    x: &[f64],
    fx: f64,
    n_eval: &mut usize,
) -> Result<(Vec<f64>, Vec<f64>), LmmError>
where
    F: FnMut(&[f64]) -> Result<f64, LmmError>,
{
    let m = x.len();
    let mut g = vec![0.0; m];
    let mut h = vec![0.0; m * m];
    let mut fp = vec![0.0; m];
    let mut xt = x.to_vec();
    for i in 0..m {
        let hi = fd_step(x[i]);
        xt[i] = x[i] + hi;
        let f1 = f(&xt)?;
        xt[i] = x[i] - hi;
        let f2 = f(&xt)?;
        xt[i] = x[i];
        *n_eval += 2;
        g[i] = (f1 - f2) / (2.0 * hi);
        h[i * m + i] = (f1 - 2.0 * fx + f2) / (hi * hi);
        fp[i] = f1;
    }
    for i in 0..m {
        for j in (i + 1)..m {
            let hi = fd_step(x[i]);
            let hj = fd_step(x[j]);
            xt[i] = x[i] + hi;
            xt[j] = x[j] + hj;
            let fij = f(&xt)?;
            *n_eval += 1;
            xt[i] = x[i];
            xt[j] = x[j];
            let v = (fij - fp[i] - fp[j] + fx) / (hi * hj);
            h[j * m + i] = v;
            h[i * m + j] = v;
        }
    }
    Ok((g, h))
}

/// Central-difference gradient only.
pub(crate) fn fd_gradient<F>(f: &mut F, x: &[f64], n_eval: &mut usize) -> Result<Vec<f64>, LmmError>
where
    F: FnMut(&[f64]) -> Result<f64, LmmError>,
{
    let mut g = vec![0.0; x.len()];
    let mut xt = x.to_vec();
    for i in 0..x.len() {
        let hi = fd_step(x[i]);
        xt[i] = x[i] + hi;
        let f1 = f(&xt)?;
        xt[i] = x[i] - hi;
        let f2 = f(&xt)?;
        xt[i] = x[i];
        *n_eval += 2;
        g[i] = (f1 - f2) / (2.0 * hi);
    }
    Ok(g)
}

/// Minimises `f` over `x >= lb` starting from `x0`.
pub(crate) fn minimize<F>(
    mut f: F,
    x0: &[f64],
    lb: &[f64],
    max_iter: usize,
    tol: f64,
) -> Result<OptResult, LmmError>
where
    F: FnMut(&[f64]) -> Result<f64, LmmError>,
{
    let m = x0.len();
    let mut x = x0.to_vec();
    project(&mut x, lb);
    let mut n_eval = 1;
    let mut fx = f(&x)?;
    let mut converged = false;
    let mut message = String::new();
    let mut g = vec![0.0; m];
    let mut g_at_x = false;
    let tol = if tol > 0.0 && tol.is_finite() {
        tol
    } else {
        1e-12
    };
    if m == 0 {
        converged = true;
    }
    let mut iter = 0;
    while !converged && iter < max_iter {
        iter += 1;
        let (gg, h) = fd_derivs(&mut f, &x, fx, &mut n_eval)?;
        g = gg;
        g_at_x = true;
        // Projected gradient and epsilon-active set.
        let mut pg = 0.0f64;
        for i in 0..m {
            let step = x[i] - (x[i] - g[i]).max(lb[i]);
            pg = pg.max(step.abs());
        }
        let eps = pg.min(1e-3);
        // A bound is binding only if the gradient pushes against it by more
        // than finite-difference noise. For a scalar variance the criterion
        // is even in theta, so at theta = 0 the gradient is zero up to
        // rounding and only the curvature tells whether 0 is a minimum or a
        // maximum; treating such a component as free lets the
        // negative-curvature step below leave the boundary.
        let g_noise = 1e-8 * (1.0 + fx.abs());
        let active: Vec<bool> = (0..m)
            .map(|i| x[i] - lb[i] <= eps && g[i] > g_noise)
            .collect();
        let free: Vec<usize> = (0..m).filter(|&i| !active[i]).collect();
        let nf = free.len();
        let mut hf = vec![0.0; nf * nf];
        for (a, &i) in free.iter().enumerate() {
            for (b, &j) in free.iter().enumerate() {
                hf[b * nf + a] = h[j * m + i];
            }
        }
        let (ev, evec) = sym_eigen(&hf, nf);
        let lmax = ev.iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
        let floor = (1e-10 * lmax).max(1e-12);
        let mut d = vec![0.0; m];
        for k in 0..nf {
            let vk = &evec[k * nf..(k + 1) * nf];
            let proj: f64 = vk.iter().zip(&free).map(|(v, &i)| v * g[i]).sum();
            let s = proj / ev[k].abs().max(floor);
            for (a, &i) in free.iter().enumerate() {
                d[i] -= s * vk[a];
            }
        }
        let dec: f64 = free.iter().map(|&i| -g[i] * d[i]).sum();
        for i in 0..m {
            if active[i] {
                let hii = h[i * m + i];
                d[i] = -g[i] / if hii > floor { hii } else { 1.0 };
            }
        }
        let (kmin, lmin) =
            ev.iter().enumerate().fold(
                (0, f64::INFINITY),
                |acc, (k, &v)| if v < acc.1 { (k, v) } else { acc },
            );
        let negative = nf > 0 && lmin < -1e-6 * lmax.max(1e-8);
        let small = dec <= tol * (1.0 + fx.abs());
        if small
            && !negative
            && active
                .iter()
                .zip(&x)
                .zip(lb)
                .all(|((&a, xi), l)| !a || xi == l)
        {
            // Converged; still take the (tiny) Newton step if it does not
            // increase the criterion, for a last digit of accuracy.
            let mut xn: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + b).collect();
            project(&mut xn, lb);
            if xn != x {
                n_eval += 1;
                if let Ok(fnew) = f(&xn) {
                    if fnew <= fx {
                        x = xn;
                        fx = fnew;
                        g_at_x = false;
                    }
                }
            }
            converged = true;
            break;
        }
        if small && negative {
            // Saddle point or maximum along a direction: move along the
            // eigenvector of the most negative curvature (feasible sign).
            // Both signs of the eigenvector are candidates. At a bound one of
            // them is (partly) cut off by the projection: take the one that
            // moves further, and only when both move alike the lower one.
            let vk = &evec[kmin * nf..(kmin + 1) * nf];
            let scale = x.iter().fold(0.0f64, |a, v| a.max(v.abs())).max(1.0) * 0.1;
            let mut cands = Vec::with_capacity(2);
            for sign in [1.0, -1.0] {
                let mut xn = x.clone();
                for (a, &i) in free.iter().enumerate() {
                    xn[i] += sign * scale * vk[a];
                }
                project(&mut xn, lb);
                let moved: f64 = xn.iter().zip(&x).map(|(a, b)| (a - b) * (a - b)).sum();
                cands.push((sign, moved.sqrt(), xn));
            }
            let (m0, m1) = (cands[0].1, cands[1].1);
            let best_sign = if (m0 - m1).abs() > 0.1 * m0.max(m1) {
                if m0 > m1 {
                    1.0
                } else {
                    -1.0
                }
            } else {
                n_eval += 2;
                let f0 = f(&cands[0].2).unwrap_or(f64::INFINITY);
                let f1 = f(&cands[1].2).unwrap_or(f64::INFINITY);
                if f0 <= f1 {
                    1.0
                } else {
                    -1.0
                }
            };
            d.iter_mut().for_each(|v| *v = 0.0);
            for (a, &i) in free.iter().enumerate() {
                d[i] = best_sign * scale * vk[a];
            }
        }
        // Armijo search along the projection arc.
        let mut alpha = 1.0;
        let mut accepted = None;
        for _ in 0..60 {
            let mut xn: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + alpha * b).collect();
            project(&mut xn, lb);
            let slope: f64 = (0..m).map(|i| g[i] * (xn[i] - x[i])).sum();
            n_eval += 1;
            let fnew = f(&xn).unwrap_or(f64::INFINITY);
            if fnew.is_finite() && fnew <= fx + 1e-4 * slope.min(0.0) {
                accepted = Some((xn, fnew));
                break;
            }
            alpha *= 0.5;
        }
        // Along directions of negative curvature the quadratic model is no
        // guide to the step length: extrapolate while the criterion keeps
        // decreasing (e.g. leaving a saddle at a variance of zero).
        if let (true, true, Some((xb, fb))) = (negative, alpha == 1.0, accepted.as_ref()) {
            let (mut xb, mut fb) = (xb.clone(), *fb);
            for _ in 0..40 {
                let a2 = alpha * 2.0;
                let mut xn: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + a2 * b).collect();
                project(&mut xn, lb);
                if xn == xb {
                    break;
                }
                n_eval += 1;
                match f(&xn) {
                    Ok(f2) if f2 < fb => {
                        xb = xn;
                        fb = f2;
                        alpha = a2;
                    }
                    _ => break,
                }
            }
            accepted = Some((xb, fb));
        }
        // A negative-curvature direction along which the gradient vanishes
        // (typically a variance parameter at zero, where the criterion is
        // even) is not explored by the modified Newton step: search it.
        if let (true, false, Some((xb, fb))) = (negative, small, accepted.as_ref()) {
            let vk = &evec[kmin * nf..(kmin + 1) * nf];
            let gv: f64 = vk.iter().zip(&free).map(|(v, &i)| v * g[i]).sum();
            if gv.abs() / (-lmin) < 1e-3 {
                let mut sign = if gv > 0.0 { -1.0 } else { 1.0 };
                for (a, &i) in free.iter().enumerate() {
                    if xb[i] <= lb[i] && sign * vk[a] < 0.0 {
                        sign = -sign;
                    }
                }
                let (mut xbest, mut fbest) = (xb.clone(), *fb);
                let mut t = 1e-3 * xb.iter().fold(1.0f64, |a, v| a.max(v.abs()));
                for _ in 0..40 {
                    let mut xn = xb.clone();
                    for (a, &i) in free.iter().enumerate() {
                        xn[i] += sign * t * vk[a];
                    }
                    project(&mut xn, lb);
                    n_eval += 1;
                    match f(&xn) {
                        Ok(f2) if f2 < fbest => {
                            xbest = xn;
                            fbest = f2;
                            t *= 2.0;
                        }
                        _ => break,
                    }
                }
                accepted = Some((xbest, fbest));
            }
        }
        match accepted {
            Some((xn, fnew)) => {
                let change = fx - fnew;
                let moved = xn != x;
                x = xn;
                fx = fnew;
                g_at_x = !moved;
                if moved && change <= 1e-15 * (1.0 + fx.abs()) && dec <= 1e-8 * (1.0 + fx.abs()) {
                    // At the noise level of the criterion.
                    converged = true;
                }
            }
            None => {
                if dec <= 1e-8 * (1.0 + fx.abs()) {
                    converged = true;
                } else {
                    message = "line search failed to reduce the criterion".into();
                    break;
                }
            }
        }
    }
    if !converged && message.is_empty() {
        message = format!("maximum number of iterations ({max_iter}) reached");
    }
    // Snap components that are numerically at a bound onto it.
    let mut xs = x.clone();
    let mut snapped = false;
    for i in 0..m {
        if xs[i] > lb[i] && xs[i] - lb[i] < 1e-7 {
            xs[i] = lb[i];
            snapped = true;
        }
    }
    if snapped {
        n_eval += 1;
        if let Ok(fs) = f(&xs) {
            if fs <= fx {
                x = xs;
                g_at_x = false;
            }
        }
    }
    if !g_at_x && m > 0 {
        g = fd_gradient(&mut f, &x, &mut n_eval)?;
    }
    let at_bound = x.iter().zip(lb).map(|(a, b)| a <= b).collect();
    if converged && message.is_empty() {
        message = "converged".into();
    }
    Ok(OptResult {
        x,
        grad: g,
        at_bound,
        n_eval,
        converged,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_2x2() {
        let a = [2.0, 1.0, 1.0, 2.0];
        let (ev, v) = sym_eigen(&a, 2);
        let mut e = ev.clone();
        e.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert!((e[0] - 1.0).abs() < 1e-12 && (e[1] - 3.0).abs() < 1e-12);
        // A v = lambda v
        for k in 0..2 {
            for r in 0..2 {
                let av = a[r] * v[k * 2] + a[2 + r] * v[k * 2 + 1];
                assert!((av - ev[k] * v[k * 2 + r]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn rosenbrock_interior() {
        let f = |x: &[f64]| -> Result<f64, LmmError> {
            Ok((1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2))
        };
        let r = minimize(
            f,
            &[-1.2, 1.0],
            &[f64::NEG_INFINITY, f64::NEG_INFINITY],
            200,
            1e-14,
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
        let f = |x: &[f64]| -> Result<f64, LmmError> {
            Ok((x[0] + 1.0).powi(2) + (x[1] - 2.0).powi(2))
        };
        let r = minimize(f, &[1.0, 0.0], &[0.0, f64::NEG_INFINITY], 100, 1e-12).unwrap();
        assert!(r.converged);
        assert_eq!(r.x[0], 0.0);
        assert!(r.at_bound[0] && !r.at_bound[1]);
        assert!((r.x[1] - 2.0).abs() < 1e-7, "{:?}", r);
        assert!(r.grad[0] > 1.9);
    }

    #[test]
    fn even_function_saddle_start() {
        // f(t) = -t^2 + t^4 has a maximum at 0 and minima at +-1/sqrt(2).
        let f = |x: &[f64]| -> Result<f64, LmmError> { Ok(-x[0].powi(2) + x[0].powi(4)) };
        let r = minimize(f, &[0.0], &[0.0], 100, 1e-12).unwrap();
        assert!(r.converged, "{}", r.message);
        assert!((r.x[0] - 0.5f64.sqrt()).abs() < 1e-6, "{:?}", r.x);
    }

    #[test]
    fn iteration_cap_reported() {
        let f = |x: &[f64]| -> Result<f64, LmmError> {
            Ok((1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2))
        };
        let r = minimize(
            f,
            &[-1.2, 1.0],
            &[f64::NEG_INFINITY, f64::NEG_INFINITY],
            2,
            1e-14,
        )
        .unwrap();
        assert!(!r.converged);
        assert!(r.message.contains("maximum number of iterations"));
    }
}
