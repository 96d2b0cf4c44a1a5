//! Puts the fixed-effects design and the response on a footing where the
//! cross-product algebra keeps its digits, and maps the results back.
//!
//! * `X = Q R` with `Q` orthonormal in the `W` metric (modified Gram-Schmidt,
//!   applied twice): the fit uses `Q`, so `X'X` is never formed from
//!   uncentred or badly scaled columns. Since `X` and `Q` span the same space
//!   the profiled criterion changes only by the constant `log |R|^2` (REML).
//! * The response is replaced by its residual from the least-squares fit on
//!   `X`, divided by its largest absolute value `s`. The penalised residual
//!   sum of squares is then no longer a difference of large cross-products
//!   (a response with a large mean and a tiny spread keeps its digits) and
//!   squares neither overflow nor underflow (responses of 1e300 or 1e-300).
//!   The criterion changes by the constant `(n - p) log s^2` (REML) or
//!   `n log s^2` (ML); beta, b, sigma, fitted values scale by `s`.

use crate::error::LmmError;
use crate::input::FitInput;
use crate::solve::Solution;

/// The transformed problem and what is needed to map results back.
pub(crate) struct Preconditioned {
    /// `n x p` column-major, orthonormal in the `W` metric.
    pub q: Vec<f64>,
    /// `p x p` column-major upper-triangular factor, `X = Q R`.
    pub r: Vec<f64>,
    /// `(y - X beta0) / s`.
    pub y: Vec<f64>,
    /// Least-squares coefficients of `y` on `X` (original units).
    pub beta0: Vec<f64>,
    /// The response scale `s`.
    pub scale: f64,
    /// `log |R|^2`.
    pub log_det_r2: f64,
}

fn wdot(a: &[f64], b: &[f64], w: &[f64]) -> f64 {
    if w.is_empty() {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    } else {
        a.iter().zip(b).zip(w).map(|((x, y), v)| x * y * v).sum()
    }
}

/// Modified Gram-Schmidt with re-orthogonalisation in the `W` metric.
fn orthonormalise(input: &FitInput) -> Result<(Vec<f64>, Vec<f64>), LmmError> {
    let (n, p) = (input.n, input.p);
    let w = input.weights;
    let mut q = input.x.to_vec();
    let mut r = vec![0.0; p * p];
    for j in 0..p {
        let norm0 = wdot(&q[j * n..(j + 1) * n], &q[j * n..(j + 1) * n], w).sqrt();
        for _pass in 0..2 {
            for k in 0..j {
                let (qk, qj) = q.split_at_mut(j * n);
                let qk = &qk[k * n..(k + 1) * n];
                let qj = &mut qj[..n];
                let c = wdot(qk, qj, w);
                r[j * p + k] += c;
                for (a, b) in qj.iter_mut().zip(qk) {
                    *a -= c * b;
                }
            }
        }
        let norm = wdot(&q[j * n..(j + 1) * n], &q[j * n..(j + 1) * n], w).sqrt();
        if !(norm.is_finite() && norm > 1e-10 * norm0 && norm > 0.0) {
            return Err(LmmError::NotPositiveDefinite(format!(
                "the fixed-effects design is rank deficient: column {} is (nearly) a linear combination of the previous columns",
                j + 1
            )));
        }
        r[j * p + j] = norm;
        for a in &mut q[j * n..(j + 1) * n] {
            *a /= norm;
        }
    }
    Ok((q, r))
}

/// Solves `R x = c` for upper-triangular `R` (column-major `p x p`).
pub(crate) fn solve_upper(r: &[f64], p: usize, c: &[f64]) -> Vec<f64> {
    let mut x = c.to_vec();
    for j in (0..p).rev() {
        let mut v = x[j];
        for k in (j + 1)..p {
            v -= r[k * p + j] * x[k];
        }
        x[j] = v / r[j * p + j];
    }
    x
}

/// Builds the transformed problem; errors on a rank-deficient X or a
/// response that X reproduces exactly (nothing left to model).
pub(crate) fn precondition(input: &FitInput) -> Result<Preconditioned, LmmError> {
    let p = input.p;
    let (q, r) = orthonormalise(input)?;
    let resp = response_part(&q, &r, input.n, p, input.y, input.weights)?;
    let log_det_r2 = (0..p).map(|j| 2.0 * r[j * p + j].ln()).sum();
    Ok(Preconditioned {
        beta0: resp.beta0,
        q,
        r,
        y: resp.y,
        scale: resp.scale,
        log_det_r2,
    })
}

/// The part of the preconditioning that depends on the response.
pub(crate) struct ResponsePart {
    pub y: Vec<f64>,
    pub beta0: Vec<f64>,
    pub scale: f64,
}

/// Residualises `y` on the orthonormal `q` (two passes) and scales it; see
/// the module documentation.
pub(crate) fn response_part(
    q: &[f64],
    r: &[f64],
    n: usize,
    p: usize,
    y: &[f64],
    w: &[f64],
) -> Result<ResponsePart, LmmError> {
    let mut res = y.to_vec();
    let mut coef = vec![0.0; p];
    for _pass in 0..2 {
        for j in 0..p {
            let qj = &q[j * n..(j + 1) * n];
            let c = wdot(qj, &res, w);
            coef[j] += c;
            for (a, b) in res.iter_mut().zip(qj) {
                *a -= c * b;
            }
        }
    }
    // only observations with a positive weight count (a zero weight drops
    // the observation's contribution)
    let max_abs = |v: &[f64]| {
        v.iter()
            .enumerate()
            .filter(|(i, _)| crate::input::contributes(w, *i))
            .fold(0.0f64, |m, (_, x)| m.max(x.abs()))
    };
    let y_max = max_abs(y);
    let scale = max_abs(&res);
    if !(scale.is_finite() && scale > 1e-13 * y_max && scale > 0.0) {
        return Err(LmmError::NonFinite(
            "perfect fit: the fixed effects reproduce the response exactly (e.g. a constant response), so the residual variance is zero and there is nothing left for a mixed model to estimate".into(),
        ));
    }
    for v in &mut res {
        *v /= scale;
    }
    Ok(ResponsePart {
        y: res,
        beta0: solve_upper(r, p, &coef),
        scale,
    })
}

/// Maps a solution of the transformed problem back to the original units:
/// `beta = beta0 + s R^-1 beta~`, `Cov(beta) = s^2 R^-1 Cov(beta~) R^-T`,
/// `b = s b~`, `sigma = s sigma~`, fitted `= X beta0 + s fitted~` (with
/// `X beta0 = Q (R beta0)`, so `X` itself need not be kept).
pub(crate) fn map_back(n: usize, p: usize, pre: &Preconditioned, sol: Solution) -> Solution {
    let s = pre.scale;
    let bt = solve_upper(&pre.r, p, &sol.beta);
    let beta: Vec<f64> = bt
        .iter()
        .zip(&pre.beta0)
        .map(|(a, b0)| b0 + s * a)
        .collect();
    // R^-1 V R^-T, column by column: first M = R^-1 V, then (R^-1 M')'
    let mut m = vec![0.0; p * p];
    for j in 0..p {
        let col = solve_upper(&pre.r, p, &sol.vcov_beta[j * p..(j + 1) * p]);
        m[j * p..(j + 1) * p].copy_from_slice(&col);
    }
    let mut vcov = vec![0.0; p * p];
    for i in 0..p {
        let row: Vec<f64> = (0..p).map(|j| m[j * p + i]).collect();
        let col = solve_upper(&pre.r, p, &row);
        for j in 0..p {
            vcov[j * p + i] = s * s * col[j];
        }
    }
    let mut fitted: Vec<f64> = sol.fitted.iter().map(|f| s * f).collect();
    for k in 0..p {
        let c: f64 = (k..p).map(|j| pre.r[j * p + k] * pre.beta0[j]).sum();
        let qk = &pre.q[k * n..(k + 1) * n];
        for (f, q) in fitted.iter_mut().zip(qk) {
            *f += c * q;
        }
    }
    Solution {
        beta,
        sigma: s * sol.sigma,
        vcov_beta: vcov,
        b: sol.b.iter().map(|v| s * v).collect(),
        cond_var: sol
            .cond_var
            .iter()
            .map(|cv| cv.iter().map(|v| s * s * v).collect())
            .collect(),
        fitted,
        pwrss_rows: s * s * sol.pwrss_rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(x: &'a [f64], y: &'a [f64], w: &'a [f64], n: usize, p: usize) -> FitInput<'a> {
        FitInput {
            n,
            p,
            x,
            y,
            weights: w,
            terms: vec![],
        }
    }

    #[test]
    fn q_is_orthonormal_and_reproduces_x() {
        let n = 40;
        let x: Vec<f64> = (0..n)
            .map(|_| 1.0)
            .chain((0..n).map(|i| 1e6 + i as f64))
            .chain((0..n).map(|i| ((i * 7 % 5) as f64).powi(2)))
            .collect();
        let y: Vec<f64> = (0..n).map(|i| (i as f64).sin()).collect();
        let w: Vec<f64> = (0..n).map(|i| 0.5 + (i % 3) as f64).collect();
        let pre = precondition(&input(&x, &y, &w, n, 3)).unwrap();
        for a in 0..3 {
            for b in 0..3 {
                let d = wdot(&pre.q[a * n..(a + 1) * n], &pre.q[b * n..(b + 1) * n], &w);
                assert!((d - if a == b { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        for j in 0..3 {
            for i in 0..n {
                let xr: f64 = (0..3).map(|k| pre.q[k * n + i] * pre.r[j * 3 + k]).sum();
                assert!((xr - x[j * n + i]).abs() <= 1e-9 * x[j * n + i].abs().max(1.0));
            }
        }
    }

    #[test]
    fn residual_is_scaled_and_orthogonal() {
        let n = 50;
        let x: Vec<f64> = (0..n)
            .map(|_| 1.0)
            .chain((0..n).map(|i| i as f64 / 7.0))
            .collect();
        let y: Vec<f64> = (0..n)
            .map(|i| 1e6 + 3.0 * (i as f64 / 7.0) + ((i * 37 % 11) as f64) * 1e-6)
            .collect();
        let pre = precondition(&input(&x, &y, &[], n, 2)).unwrap();
        assert!((pre.beta0[0] - 1e6).abs() < 1e-3 && (pre.beta0[1] - 3.0).abs() < 1e-6);
        let m = pre.y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!((m - 1.0).abs() < 1e-12);
        let dot: f64 = pre.y.iter().zip(&x[n..]).map(|(a, b)| a * b).sum();
        assert!(dot.abs() < 1e-8);
    }

    #[test]
    fn exact_fits_and_aliased_columns_are_errors() {
        let n = 10;
        let x: Vec<f64> = (0..n).map(|_| 1.0).collect();
        let y = vec![3.0; n];
        assert!(matches!(
            precondition(&input(&x, &y, &[], n, 1)),
            Err(LmmError::NonFinite(_))
        ));
        let x2: Vec<f64> = (0..n).map(|_| 1.0).chain((0..n).map(|_| 2.0)).collect();
        let y2: Vec<f64> = (0..n).map(|i| i as f64).collect();
        assert!(matches!(
            precondition(&input(&x2, &y2, &[], n, 2)),
            Err(LmmError::NotPositiveDefinite(_))
        ));
    }
}
