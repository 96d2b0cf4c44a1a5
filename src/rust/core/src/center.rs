//! Removes the weighted least-squares fit of `y` on `X` before the
//! cross-products are formed. The penalised residual sum of squares is the
//! last pivot of the augmented Cholesky factor, i.e. `y'Wy` minus the part
//! explained by `[Z X]`; when `y` has a large mean relative to its spread
//! (e.g. a Box-Cox transformed response) that difference loses all its
//! digits. Because `X` is in the model, replacing `y` by `y - X beta0` only
//! shifts the fixed-effect estimates by `beta0` and leaves theta, the
//! criterion and the random effects unchanged.

use crate::factor::chol_small;
use crate::input::FitInput;

fn weight(input: &FitInput, i: usize) -> f64 {
    if input.weights.is_empty() {
        1.0
    } else {
        input.weights[i]
    }
}

/// One weighted least-squares correction: solves `X'WX d = X'W r`.
fn wls_step(input: &FitInput, r: &[f64]) -> Option<Vec<f64>> {
    let (n, p) = (input.n, input.p);
    let mut xtx = vec![0.0; p * p];
    let mut xtr = vec![0.0; p];
    let wr: Vec<f64> = (0..n).map(|i| weight(input, i) * r[i]).collect();
    for j in 0..p {
        let xj = &input.x[j * n..(j + 1) * n];
        xtr[j] = xj.iter().zip(&wr).map(|(a, b)| a * b).sum();
        for k in 0..=j {
            let xk = &input.x[k * n..(k + 1) * n];
            let s: f64 = if input.weights.is_empty() {
                xj.iter().zip(xk).map(|(a, b)| a * b).sum()
            } else {
                (0..n).map(|i| input.weights[i] * xj[i] * xk[i]).sum()
            };
            xtx[k * p + j] = s;
            xtx[j * p + k] = s;
        }
    }
    if !chol_small(&mut xtx, p) {
        return None;
    }
    // forward then backward substitution with the lower factor
    let mut d = xtr;
    for j in 0..p {
        let mut v = d[j];
        for l in 0..j {
            v -= xtx[l * p + j] * d[l];
        }
        d[j] = v / xtx[j * p + j];
    }
    for j in (0..p).rev() {
        let mut v = d[j];
        for l in (j + 1)..p {
            v -= xtx[j * p + l] * d[l];
        }
        d[j] = v / xtx[j * p + j];
    }
    if d.iter().all(|v| v.is_finite()) {
        Some(d)
    } else {
        None
    }
}

/// Returns `(y - X beta0, beta0)`, with `beta0` from weighted least squares
/// plus one step of iterative refinement. When `X'WX` is not positive
/// definite (rank-deficient X), returns `y` unchanged and `beta0 = 0` so the
/// factorisation reports the problem itself.
pub(crate) fn residualize(input: &FitInput) -> (Vec<f64>, Vec<f64>) {
    let (n, p) = (input.n, input.p);
    let mut r = input.y.to_vec();
    let mut beta0 = vec![0.0; p];
    for _ in 0..2 {
        let Some(d) = wls_step(input, &r) else {
            return (input.y.to_vec(), vec![0.0; p]);
        };
        for j in 0..p {
            beta0[j] += d[j];
            let xj = &input.x[j * n..(j + 1) * n];
            for (ri, xi) in r.iter_mut().zip(xj) {
                *ri -= d[j] * xi;
            }
        }
    }
    (r, beta0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residuals_are_orthogonal_to_x() {
        let n = 50;
        let x: Vec<f64> = (0..n)
            .map(|_| 1.0)
            .chain((0..n).map(|i| i as f64 / 7.0))
            .collect();
        let y: Vec<f64> = (0..n)
            .map(|i| 1e6 + 3.0 * (i as f64 / 7.0) + ((i * 37 % 11) as f64) * 1e-6)
            .collect();
        let input = FitInput {
            n,
            p: 2,
            x: &x,
            y: &y,
            weights: &[],
            terms: vec![],
        };
        let (r, b) = residualize(&input);
        assert!((b[0] - 1e6).abs() < 1e-3 && (b[1] - 3.0).abs() < 1e-6);
        let dot: f64 = r.iter().zip(&x[n..]).map(|(a, b)| a * b).sum();
        assert!(dot.abs() < 1e-9);
        assert!(r.iter().all(|v| v.abs() < 1e-4));
    }
}
