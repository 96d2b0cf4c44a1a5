//! Small dense helpers on top of faer.

use faer::linalg::matmul::matmul;
#[cfg(test)]
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::{Accum, Mat, MatRef, Par, Side};
use lmmr_core::LmmError as InferenceError;

/// `a * b`.
pub fn mm(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut c = Mat::<f64>::zeros(a.nrows(), b.ncols());
    if a.ncols() == b.nrows() {
        matmul(c.as_mut(), Accum::Replace, a, b, 1.0, Par::Seq);
    }
    c
}

/// `a' * b`.
pub fn tmm(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    mm(a.transpose(), b)
}

/// Trace of `a * b` for square conformable matrices.
pub fn tr_ab(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> f64 {
    let mut s = 0.0;
    for i in 0..a.nrows() {
        for j in 0..a.ncols() {
            s += a[(i, j)] * b[(j, i)];
        }
    }
    s
}

/// Trace of a square matrix.
#[cfg(test)]
pub fn trace(a: MatRef<'_, f64>) -> f64 {
    (0..a.nrows().min(a.ncols())).map(|i| a[(i, i)]).sum()
}

/// Symmetrise in place: `(a + a') / 2`.
pub fn symmetrise(a: &mut Mat<f64>) {
    let n = a.nrows();
    for j in 0..n {
        for i in (j + 1)..n {
            let m = 0.5 * (a[(i, j)] + a[(j, i)]);
            a[(i, j)] = m;
            a[(j, i)] = m;
        }
    }
}

/// Cholesky factor (lower) of a symmetric positive definite matrix.
#[cfg(test)]
pub struct Chol {
    l: Mat<f64>,
}

#[cfg(test)]
impl Chol {
    pub fn new(a: MatRef<'_, f64>, what: &str) -> Result<Chol, InferenceError> {
        let n = a.nrows();
        if n != a.ncols() {
            return Err(InferenceError::InvalidInput(format!(
                "{what} is not square"
            )));
        }
        if (0..n).any(|j| (0..n).any(|i| !a[(i, j)].is_finite())) {
            return Err(InferenceError::NonFinite(format!(
                "{what} has non-finite entries"
            )));
        }
        if n == 0 {
            return Ok(Chol {
                l: Mat::zeros(0, 0),
            });
        }
        let llt = a
            .llt(Side::Lower)
            .map_err(|_| InferenceError::NotPositiveDefinite(what.to_string()))?;
        Ok(Chol {
            l: llt.L().to_owned(),
        })
    }

    /// `L^-1 b` (forward substitution, blocked by faer).
    pub fn half_solve(&self, b: MatRef<'_, f64>) -> Mat<f64> {
        let mut x = b.to_owned();
        if self.l.nrows() > 0 && x.ncols() > 0 {
            solve_lower_triangular_in_place(self.l.as_ref(), x.as_mut(), Par::Seq);
        }
        x
    }

    /// Solve `A x = b`.
    pub fn solve(&self, b: MatRef<'_, f64>) -> Mat<f64> {
        let mut x = self.half_solve(b);
        if self.l.nrows() > 0 && x.ncols() > 0 {
            solve_upper_triangular_in_place(self.l.transpose(), x.as_mut(), Par::Seq);
        }
        x
    }

    /// Inverse of `A`.
    pub fn inverse(&self) -> Mat<f64> {
        let n = self.l.nrows();
        let mut inv = self.solve(Mat::<f64>::identity(n, n).as_ref());
        symmetrise(&mut inv);
        inv
    }
}

/// Inverse of a symmetric matrix through its eigen decomposition. Eigenvalues
/// whose absolute value is at most `tol` times the largest one are dropped
/// (Moore-Penrose pseudo-inverse). Returns the inverse and the smallest
/// absolute eigenvalue.
pub fn sym_pinv(a: MatRef<'_, f64>, rel_tol: f64) -> Result<(Mat<f64>, f64), InferenceError> {
    let n = a.nrows();
    if n == 0 {
        return Ok((Mat::zeros(0, 0), f64::INFINITY));
    }
    if (0..n).any(|j| (0..n).any(|i| !a[(i, j)].is_finite())) {
        return Err(InferenceError::NonFinite(
            "matrix to invert has non-finite entries".into(),
        ));
    }
    let evd = a
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| InferenceError::NonFinite("eigen decomposition failed".into()))?;
    let u = evd.U();
    let s = evd.S();
    let vals: Vec<f64> = (0..n).map(|i| s[i]).collect();
    let max_abs = vals.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    let min_abs = vals.iter().fold(f64::INFINITY, |m, v| m.min(v.abs()));
    let mut out = Mat::<f64>::zeros(n, n);
    for (k, &ev) in vals.iter().enumerate() {
        if ev.abs() <= rel_tol * max_abs || ev == 0.0 {
            continue;
        }
        for j in 0..n {
            let ujk = u[(j, k)] / ev;
            for i in 0..n {
                out[(i, j)] += u[(i, k)] * ujk;
            }
        }
    }
    symmetrise(&mut out);
    Ok((out, min_abs))
}
