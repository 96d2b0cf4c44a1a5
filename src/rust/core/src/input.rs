//! Public input types and their validation.

use crate::error::LmmError;

/// One random-effects term `(z | factor)`.
#[derive(Debug, Clone)]
pub struct ReTermInput<'a> {
    /// 0-based level codes of the grouping factor, length `n`.
    pub codes: &'a [i32],
    /// Number of levels of the grouping factor.
    pub n_levels: usize,
    /// `n x k` model matrix of the term, column-major.
    pub z: &'a [f64],
    /// Number of covariates of the term.
    pub k: usize,
    /// Terms with the same `factor_id` share one grouping factor.
    pub factor_id: usize,
}

/// A linear mixed model's data.
#[derive(Debug, Clone)]
pub struct FitInput<'a> {
    /// Number of observations.
    pub n: usize,
    /// Number of fixed-effects columns.
    pub p: usize,
    /// `n x p` fixed-effects model matrix, column-major.
    pub x: &'a [f64],
    /// Response, length `n`.
    pub y: &'a [f64],
    /// Prior weights, length `n` (finite, >= 0, see [`check_weights`]); an
    /// empty slice means all ones. A zero weight drops the observation's
    /// contribution to the criterion (its row still gets a fitted value).
    pub weights: &'a [f64],
    /// Random-effects terms, in the order that defines `theta` and `b`.
    pub terms: Vec<ReTermInput<'a>>,
}

/// Number of covariance parameters of a term with `k` covariates.
pub(crate) fn n_theta(k: usize) -> usize {
    k * (k + 1) / 2
}

/// The error for an `x` with a non-finite value.
pub(crate) fn non_finite_x() -> LmmError {
    LmmError::InvalidInput("x contains non-finite values".into())
}

pub(crate) fn all_finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// The one rule for prior weights, shared by the R side (which calls it
/// through `rs_check_weights` before building anything) and [`validate`]:
/// every weight finite and non-negative, at least one positive. A zero weight
/// drops the observation's contribution, as in `lm()`. Returns the number of
/// observations with a positive weight.
pub fn check_weights(w: &[f64]) -> Result<usize, LmmError> {
    if w.iter().any(|v| !v.is_finite()) {
        return Err(LmmError::BadArgument("NA/NaN/Inf in the weights".into()));
    }
    if w.iter().any(|v| *v < 0.0) {
        return Err(LmmError::BadArgument(
            "negative weights are not allowed".into(),
        ));
    }
    let n_pos = w.iter().filter(|v| **v > 0.0).count();
    if !w.is_empty() && n_pos == 0 {
        return Err(LmmError::BadArgument(
            "all weights are zero: no observation contributes to the fit".into(),
        ));
    }
    Ok(n_pos)
}

/// Number of observations that contribute to the criterion (positive
/// weight). `input` must have been validated.
pub(crate) fn n_effective(input: &FitInput) -> usize {
    if input.weights.is_empty() {
        input.n
    } else {
        input.weights.iter().filter(|v| **v > 0.0).count()
    }
}

/// Is row `i` one that contributes (positive weight)?
pub(crate) fn contributes(weights: &[f64], i: usize) -> bool {
    weights.is_empty() || weights[i] > 0.0
}

/// Checks lengths, codes, finiteness and shared factors. Returns nothing on
/// success; every later stage may rely on these invariants.
pub(crate) fn validate(input: &FitInput) -> Result<(), LmmError> {
    validate_parts(input, true)
}

/// [`validate`], leaving out the scan of `x` for non-finite values when
/// `check_x` is false (the model's first pass over `X` detects them, see
/// `precondition::precondition_kept_store`).
pub(crate) fn validate_parts(input: &FitInput, check_x: bool) -> Result<(), LmmError> {
    let n = input.n;
    let p = input.p;
    let bad = |m: String| Err(LmmError::InvalidInput(m));
    if n == 0 {
        return bad("n must be positive".into());
    }
    let np = n.checked_mul(p);
    if np != Some(input.x.len()) {
        return bad(format!(
            "x has length {} but n * p = {n} * {p}",
            input.x.len()
        ));
    }
    if input.y.len() != n {
        return bad(format!("y has length {} but n = {n}", input.y.len()));
    }
    if !input.weights.is_empty() && input.weights.len() != n {
        return bad(format!(
            "weights has length {} but n = {n}",
            input.weights.len()
        ));
    }
    if check_x && !all_finite(input.x) {
        return Err(non_finite_x());
    }
    if !all_finite(input.y) {
        return bad("y contains non-finite values".into());
    }
    let n_eff = if input.weights.is_empty() {
        n
    } else {
        check_weights(input.weights)?
    };
    if n_eff <= p {
        return bad(format!(
            "the number of observations{} ({n_eff}) must be larger than the number of fixed-effect coefficients ({p}): the residual variance is not identifiable",
            if n_eff < n { " with a positive weight" } else { "" }
        ));
    }
    if input.terms.is_empty() {
        return bad("at least one random-effects term is required".into());
    }
    for (t, term) in input.terms.iter().enumerate() {
        if term.k == 0 {
            return bad(format!("term {t}: k must be at least 1"));
        }
        if term.n_levels == 0 {
            return bad(format!("term {t}: n_levels must be at least 1"));
        }
        if term.n_levels > i32::MAX as usize {
            return bad(format!("term {t}: too many levels"));
        }
        if term.codes.len() != n {
            return bad(format!(
                "term {t}: codes has length {} but n = {n}",
                term.codes.len()
            ));
        }
        if term.k.checked_mul(n) != Some(term.z.len()) {
            return bad(format!(
                "term {t}: z has length {} but n * k = {n} * {}",
                term.z.len(),
                term.k
            ));
        }
        let nl = term.n_levels as i64;
        if let Some(c) = term.codes.iter().find(|&&c| c < 0 || (c as i64) >= nl) {
            return bad(format!(
                "term {t}: level code {c} outside 0..{}",
                term.n_levels
            ));
        }
        if !all_finite(term.z) {
            return bad(format!("term {t}: z contains non-finite values"));
        }
        // Terms sharing a factor must agree on it.
        if let Some(s) = input.terms[..t]
            .iter()
            .position(|o| o.factor_id == term.factor_id)
        {
            let other = &input.terms[s];
            if other.n_levels != term.n_levels || other.codes != term.codes {
                return bad(format!(
                    "terms {s} and {t} share factor_id {} but their codes differ",
                    term.factor_id
                ));
            }
        }
    }
    Ok(())
}

/// Total number of covariance parameters.
pub(crate) fn total_theta(input: &FitInput) -> usize {
    input.terms.iter().map(|t| n_theta(t.k)).sum()
}

/// Lower bounds of theta: 0 for diagonal entries of each Lambda_t, -inf else.
pub(crate) fn lower_bounds(input: &FitInput) -> Vec<f64> {
    let mut lb = Vec::with_capacity(total_theta(input));
    for t in &input.terms {
        for c in 0..t.k {
            for r in c..t.k {
                lb.push(if r == c { 0.0 } else { f64::NEG_INFINITY });
            }
        }
    }
    lb
}

/// The optimiser's coordinates `x = A theta`, a linear map that is block
/// diagonal over the terms. For a term with covariates `z_1..z_k` (the
/// columns of Z_t before expansion by levels) and their second moments
/// `M = Z_t' Z_t / n` over the contributing rows, `A` maps every column of
/// Lambda_t by the lower-triangular `T` with `T' T = M`: then
/// `Z_t Lambda_t = (Z_t T^-1)(T Lambda_t)` and the columns of `Z_t T^-1` are
/// orthonormal, so in `x` every direction acts on the same scale, also when
/// a covariate is in the millions or two covariates are nearly collinear
/// (an uncentred slope next to an intercept, or `x2 = 2 x1 + 1`, where a
/// random intercept is a difference of two huge entries of theta). `T` is
/// lower triangular, so `T Lambda_t` is again lower triangular with the
/// diagonal's sign kept: the bounds `diag >= 0` stay bounds on `x`. Where
/// `M` is singular to working precision (exactly collinear or zero columns)
/// or the bounds are not the standard ones, `T` is the diagonal of root mean
/// squares (zero or non-finite ones replaced by 1).
#[derive(Clone)]
pub(crate) struct ThetaMap {
    /// Per term: offset of its entries in theta, k, `T` (k x k,
    /// column-major, lower triangular).
    blocks: Vec<(usize, usize, Vec<f64>)>,
}

impl ThetaMap {
    pub(crate) fn new(input: &FitInput, lower: &[f64]) -> ThetaMap {
        let standard = lower == lower_bounds(input).as_slice();
        Self::build(input, standard)
    }

    /// The diagonal map of root mean squares (per-entry scaling).
    pub(crate) fn new_diagonal(input: &FitInput) -> ThetaMap {
        Self::build(input, false)
    }

    /// True when some term's `T` has an off-diagonal entry.
    pub(crate) fn is_triangular(&self) -> bool {
        self.blocks
            .iter()
            .any(|(_, k, t)| (0..*k).any(|c| ((c + 1)..*k).any(|r| t[c * k + r] != 0.0)))
    }

    fn build(input: &FitInput, standard: bool) -> ThetaMap {
        let mut blocks = Vec::with_capacity(input.terms.len());
        let mut off = 0;
        for t in &input.terms {
            let k = t.k;
            let n = input.n;
            let mut m = vec![0.0; k * k];
            let mut cnt = 0usize;
            for i in 0..n {
                if !contributes(input.weights, i) {
                    continue;
                }
                cnt += 1;
                for c in 0..k {
                    let zc = t.z[c * n + i];
                    for r in c..k {
                        m[c * k + r] += t.z[r * n + i] * zc;
                    }
                }
            }
            let cnt = cnt.max(1) as f64;
            for c in 0..k {
                for r in c..k {
                    m[c * k + r] /= cnt;
                    m[r * k + c] = m[c * k + r];
                }
            }
            let tri = if standard && k > 1 {
                reverse_cholesky(&m, k)
            } else {
                None
            };
            let tm = tri.unwrap_or_else(|| {
                let mut d = vec![0.0; k * k];
                for r in 0..k {
                    let s = m[r * k + r].sqrt();
                    d[r * k + r] = if s.is_finite() && s > 0.0 {
                        s.clamp(1e-8, 1e8)
                    } else {
                        1.0
                    };
                }
                d
            });
            blocks.push((off, k, tm));
            off += n_theta(k);
        }
        ThetaMap { blocks }
    }

    /// `x = A theta`.
    pub(crate) fn to_x(&self, theta: &[f64]) -> Vec<f64> {
        let mut x = theta.to_vec();
        self.each_column(
            |t, k, c, th, xs| {
                for r in c..k {
                    xs[r - c] = (c..=r).map(|l| t[l * k + r] * th[l - c]).sum();
                }
            },
            theta,
            &mut x,
        );
        x
    }

    /// `theta = A^-1 x` (forward substitution per column).
    pub(crate) fn to_theta(&self, x: &[f64]) -> Vec<f64> {
        let mut th = x.to_vec();
        self.each_column(
            |t, k, c, xs, out| {
                for r in c..k {
                    let s: f64 = (c..r).map(|l| t[l * k + r] * out[l - c]).sum();
                    out[r - c] = (xs[r - c] - s) / t[r * k + r];
                }
            },
            x,
            &mut th,
        );
        th
    }

    /// The gradient in `x` from the gradient in theta: `A^-T g`.
    pub(crate) fn grad_to_x(&self, g: &[f64]) -> Vec<f64> {
        let mut out = g.to_vec();
        self.each_column(
            |t, k, c, gs, o| {
                for r in (c..k).rev() {
                    let s: f64 = ((r + 1)..k).map(|l| t[r * k + l] * o[l - c]).sum();
                    o[r - c] = (gs[r - c] - s) / t[r * k + r];
                }
            },
            g,
            &mut out,
        );
        out
    }

    /// The gradient in theta from the gradient in `x`: `A' g`.
    pub(crate) fn grad_to_theta(&self, g: &[f64]) -> Vec<f64> {
        let mut out = g.to_vec();
        self.each_column(
            |t, k, c, gs, o| {
                for r in c..k {
                    o[r - c] = (r..k).map(|l| t[r * k + l] * gs[l - c]).sum();
                }
            },
            g,
            &mut out,
        );
        out
    }

    /// The bounds in `x`: a diagonal bound `b` becomes `T_cc b`, an
    /// unbounded entry stays unbounded.
    pub(crate) fn bounds_to_x(&self, lower: &[f64]) -> Vec<f64> {
        let mut out = lower.to_vec();
        for (off, k, t) in &self.blocks {
            let mut j = *off;
            for c in 0..*k {
                for r in c..*k {
                    if lower[j].is_finite() {
                        // finite bounds only on the diagonal, or T diagonal
                        out[j] = lower[j] * t[r * k + r];
                    }
                    j += 1;
                }
            }
        }
        out
    }

    /// True when some term's map is far from the identity: a covariate
    /// scale beyond 10 or below 0.1, or strongly correlated covariates.
    pub(crate) fn extreme(&self) -> bool {
        self.blocks.iter().any(|(_, k, t)| {
            (0..*k).any(|c| {
                (c..*k).any(|r| {
                    let v = t[c * k + r];
                    if r == c {
                        v.log10().abs() > 1.0
                    } else {
                        v.abs() > 10.0 * t[r * k + r].min(t[c * k + c])
                    }
                })
            })
        })
    }

    /// False when `A` is within 0.5 of the identity everywhere (its
    /// default start is lme4's).
    pub(crate) fn differs_from_identity(&self) -> bool {
        self.blocks.iter().any(|(_, k, t)| {
            (0..*k).any(|c| {
                (c..*k).any(|r| {
                    let id = if r == c { 1.0 } else { 0.0 };
                    (t[c * k + r] - id).abs() > 0.5
                })
            })
        })
    }

    /// Applies `f(T, k, c, input column c, output column c)` to the
    /// entries `c..k` of every column `c` of every term.
    fn each_column<F>(&self, mut f: F, input: &[f64], out: &mut [f64])
    where
        F: FnMut(&[f64], usize, usize, &[f64], &mut [f64]),
    {
        for (off, k, t) in &self.blocks {
            let mut j = *off;
            for c in 0..*k {
                let len = k - c;
                f(t, *k, c, &input[j..j + len], &mut out[j..j + len]);
                j += len;
            }
        }
    }
}

/// Lower-triangular `T` with `T' T = m` (k x k, column-major), or `None`
/// where `m` is not positive definite to working precision (a pivot below
/// 1e-13 of its diagonal entry) or `T`'s diagonal is beyond 1e-8..1e8.
fn reverse_cholesky(m: &[f64], k: usize) -> Option<Vec<f64>> {
    // T' T = m with T lower triangular is the Cholesky factorisation of m in
    // reverse order: with P the reversal, P m P = L L', T = P L' P.
    let mut a = vec![0.0; k * k];
    for c in 0..k {
        for r in 0..k {
            a[c * k + r] = m[(k - 1 - c) * k + (k - 1 - r)];
        }
    }
    for j in 0..k {
        let orig = a[j * k + j];
        let mut d = orig;
        for l in 0..j {
            d -= a[l * k + j] * a[l * k + j];
        }
        if !(orig.is_finite() && orig > 0.0 && d > 1e-13 * orig) {
            return None;
        }
        let dj = d.sqrt();
        a[j * k + j] = dj;
        for i in (j + 1)..k {
            let mut s = a[j * k + i];
            for l in 0..j {
                s -= a[l * k + i] * a[l * k + j];
            }
            a[j * k + i] = s / dj;
        }
        for i in 0..j {
            a[j * k + i] = 0.0;
        }
    }
    // T[r, c] = L'[k-1-r, k-1-c] = L[k-1-c, k-1-r]
    let mut t = vec![0.0; k * k];
    for c in 0..k {
        for r in c..k {
            t[c * k + r] = a[(k - 1 - r) * k + (k - 1 - c)];
        }
    }
    if (0..k).all(|r| {
        let v = t[r * k + r];
        v.is_finite() && (1e-8..=1e8).contains(&v)
    }) {
        Some(t)
    } else {
        None
    }
}

/// lme4's default start: 1 on the diagonals, 0 elsewhere.
pub(crate) fn default_start(input: &FitInput) -> Vec<f64> {
    lower_bounds(input)
        .into_iter()
        .map(|b| if b == 0.0 { 1.0 } else { 0.0 })
        .collect()
}

pub(crate) fn check_theta(input: &FitInput, theta: &[f64]) -> Result<(), LmmError> {
    let m = total_theta(input);
    if theta.len() != m {
        return Err(LmmError::InvalidInput(format!(
            "theta has length {} but the model has {m} covariance parameters",
            theta.len()
        )));
    }
    if !all_finite(theta) {
        return Err(LmmError::InvalidInput(
            "theta contains non-finite values".into(),
        ));
    }
    Ok(())
}

/// Where a diagonal entry of some Lambda_t is zero, the sign of the rest of
/// its column is arbitrary (Lambda Lambda' does not change), but the
/// gradient with respect to that diagonal entry flips with it. A boundary
/// point can therefore look optimal while its mirror image has a descent
/// direction: at the mirror image the gradient with respect to the zero
/// diagonal entry changes sign, so a positive gradient there (a bound that
/// looks binding) becomes a descent direction. Returns the mirror images of
/// `theta` for the columns with a non-zero off-diagonal part whose diagonal
/// gradient `grad` exceeds `gtol`.
pub(crate) fn column_sign_flips(
    input: &FitInput,
    theta: &[f64],
    grad: &[f64],
    gtol: f64,
) -> Vec<Vec<f64>> {
    let mut out = Vec::new();
    let mut offset = 0;
    for t in &input.terms {
        let k = t.k;
        let mut col_start = offset;
        for c in 0..k {
            let len = k - c;
            let below = (col_start + 1)..(col_start + len);
            if theta[col_start] == 0.0
                && grad[col_start] > gtol
                && theta[below.clone()].iter().any(|v| *v != 0.0)
            {
                let mut flipped = theta.to_vec();
                for i in below {
                    flipped[i] = -flipped[i];
                }
                out.push(flipped);
            }
            col_start += len;
        }
        offset += n_theta(k);
    }
    out
}

/// Alternative starting points for a fit that ended on the boundary: the
/// end point with its zero diagonal entries reset to 1, and the original
/// start scaled down and up (the profiled criterion can have several local
/// minima, some of them on the boundary).
pub(crate) fn boundary_restarts(theta: &[f64], lower: &[f64], start: &[f64]) -> Vec<Vec<f64>> {
    let reset: Vec<f64> = theta
        .iter()
        .zip(lower)
        .map(|(t, l)| if *l == 0.0 && *t <= 1e-4 { 1.0 } else { *t })
        .collect();
    let mut out = vec![reset];
    for factor in [0.3, 3.0] {
        out.push(start.iter().map(|t| t * factor).collect());
    }
    out
}

/// The default start with each term's factor scaled by a different amount
/// (0.5 for the first term up to 1.5 for the last). Identical terms (e.g.
/// `(z | g) + (z | g)`) keep identical values along a quasi-Newton path from
/// a symmetric start, which can confine the search to a worse optimum.
pub(crate) fn asymmetric_start(input: &FitInput, start: &[f64]) -> Vec<f64> {
    let nt = input.terms.len();
    let mut out = start.to_vec();
    let mut offset = 0;
    for (t, term) in input.terms.iter().enumerate() {
        let len = n_theta(term.k);
        let f = if nt > 1 {
            0.5 + t as f64 / (nt - 1) as f64
        } else {
            0.5
        };
        out[offset..offset + len].iter_mut().for_each(|v| *v *= f);
        offset += len;
    }
    out
}

/// Alternative starting points for small models: the end point with one
/// term's relative covariance factor set to zero, one point per term. The
/// profiled criterion can have an interior local minimum next to a lower
/// one where a variance is zero (the criterion is even in a scalar theta, so
/// a descent from the default start need not reach zero).
pub(crate) fn term_zero_restarts(input: &FitInput, theta: &[f64]) -> Vec<Vec<f64>> {
    let mut out = Vec::new();
    let mut offset = 0;
    for t in &input.terms {
        let len = n_theta(t.k);
        if theta[offset..offset + len].iter().any(|v| *v != 0.0) {
            let mut z = theta.to_vec();
            z[offset..offset + len].iter_mut().for_each(|v| *v = 0.0);
            out.push(z);
        }
        offset += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn theta_map_orthonormalises_and_round_trips() {
        // one term (1 + x + w | g), x uncentred (mean 100), w = 2 x + noise
        let n = 40;
        let codes: Vec<i32> = (0..n).map(|i| (i % 4) as i32).collect();
        let xs: Vec<f64> = (0..n).map(|i| 100.0 + (i as f64 * 0.7).sin()).collect();
        let ws: Vec<f64> = xs
            .iter()
            .enumerate()
            .map(|(i, v)| 2.0 * v + 0.01 * (i as f64).cos())
            .collect();
        let mut z = vec![1.0; n];
        z.extend(&xs);
        z.extend(&ws);
        let ones = vec![1.0; n];
        let y: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let input = FitInput {
            n,
            p: 1,
            x: &ones,
            y: &y,
            weights: &[],
            terms: vec![ReTermInput {
                codes: &codes,
                n_levels: 4,
                z: &z,
                k: 3,
                factor_id: 0,
            }],
        };
        let lower = lower_bounds(&input);
        let map = ThetaMap::new(&input, &lower);
        let t = &map.blocks[0].2;
        // T lower triangular, positive diagonal, T'T = M = Z'Z / n
        for c in 0..3 {
            assert!(t[c * 3 + c] > 0.0);
            for r in 0..c {
                assert_eq!(t[c * 3 + r], 0.0);
            }
        }
        for a in 0..3 {
            for b in 0..3 {
                let tt: f64 = (0..3).map(|l| t[a * 3 + l] * t[b * 3 + l]).sum();
                let m: f64 = (0..n).map(|i| z[a * n + i] * z[b * n + i]).sum::<f64>() / n as f64;
                assert!(
                    (tt - m).abs() <= 1e-9 * m.abs().max(1.0),
                    "{a} {b}: {tt} vs {m}"
                );
            }
        }
        assert!(map.extreme() && map.differs_from_identity());
        let theta = [0.7, -0.2, 0.05, 1.3, 0.4, 0.9];
        let x = map.to_x(&theta);
        let back = map.to_theta(&x);
        for (a, b) in theta.iter().zip(&back) {
            assert!((a - b).abs() < 1e-9, "{theta:?} vs {back:?}");
        }
        // gradients: A^-T then A' is the identity, and g_x . x = g . theta
        let g = [0.3, -1.1, 0.6, 0.2, -0.4, 2.0];
        let gx = map.grad_to_x(&g);
        let gb = map.grad_to_theta(&gx);
        for (a, b) in g.iter().zip(&gb) {
            assert!((a - b).abs() < 1e-9, "{g:?} vs {gb:?}");
        }
        let lhs: f64 = gx.iter().zip(&x).map(|(a, b)| a * b).sum();
        let rhs: f64 = g.iter().zip(&theta).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-9 * rhs.abs().max(1.0));
        // bounds: the diagonals stay bounded at 0, the rest unbounded
        assert_eq!(map.bounds_to_x(&lower), lower);
        // exactly collinear columns: the diagonal map of root mean squares
        let mut z2 = vec![1.0; n];
        z2.extend(&xs);
        z2.extend(xs.iter().map(|v| 2.0 * v));
        let input2 = FitInput {
            terms: vec![ReTermInput {
                codes: &codes,
                n_levels: 4,
                z: &z2,
                k: 3,
                factor_id: 0,
            }],
            ..input.clone()
        };
        let map2 = ThetaMap::new(&input2, &lower);
        let t2 = &map2.blocks[0].2;
        assert_eq!(t2[1], 0.0);
        assert_eq!(t2[2], 0.0);
        assert!((t2[8] - 2.0 * t2[4]).abs() < 1e-9 * t2[8]);
    }

    #[test]
    fn sign_flips_mirror_columns_with_a_zero_diagonal() {
        let codes = [0, 1, 0, 1];
        let z = [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 2.0, 3.0];
        let x = [1.0; 4];
        let y = [1.0, 2.0, 3.0, 4.0];
        let input = FitInput {
            n: 4,
            p: 1,
            x: &x,
            y: &y,
            weights: &[],
            terms: vec![ReTermInput {
                codes: &codes,
                n_levels: 2,
                z: &z,
                k: 2,
                factor_id: 0,
            }],
        };
        let g = [1.0, 0.0, 0.0];
        assert_eq!(
            column_sign_flips(&input, &[0.0, -0.5, 0.2], &g, 1e-9),
            vec![vec![0.0, 0.5, 0.2]]
        );
        // No flip where the diagonal gradient does not push against the bound.
        assert!(column_sign_flips(&input, &[0.0, -0.5, 0.2], &[0.0; 3], 1e-9).is_empty());
        assert!(column_sign_flips(&input, &[0.3, -0.5, 0.0], &g, 1e-9).is_empty());
        assert!(column_sign_flips(&input, &[0.0, 0.0, 0.2], &g, 1e-9).is_empty());
    }

    fn base<'a>(codes: &'a [i32], z: &'a [f64], x: &'a [f64], y: &'a [f64]) -> FitInput<'a> {
        FitInput {
            n: 4,
            p: 1,
            x,
            y,
            weights: &[],
            terms: vec![ReTermInput {
                codes,
                n_levels: 2,
                z,
                k: 1,
                factor_id: 0,
            }],
        }
    }

    #[test]
    fn accepts_valid_and_rejects_bad() {
        let codes = [0, 0, 1, 1];
        let z = [1.0; 4];
        let x = [1.0; 4];
        let y = [1.0, 2.0, 3.0, 4.0];
        assert!(validate(&base(&codes, &z, &x, &y)).is_ok());

        let bad_codes = [0, 0, 2, 1];
        let e = validate(&base(&bad_codes, &z, &x, &y)).unwrap_err();
        assert_eq!(e.kind(), "invalid_input");

        let ynan = [1.0, f64::NAN, 3.0, 4.0];
        assert!(validate(&base(&codes, &z, &x, &ynan)).is_err());

        let short = [1.0; 3];
        assert!(validate(&base(&codes, &z, &short, &y)).is_err());

        let mut inp = base(&codes, &z, &x, &y);
        let w = [1.0, 0.0, 1.0, 1.0];
        inp.weights = &w;
        assert!(validate(&inp).is_ok());
        assert_eq!(n_effective(&inp), 3);
        let w = [1.0, -1.0, 1.0, 1.0];
        inp.weights = &w;
        assert_eq!(validate(&inp).unwrap_err().kind(), "argument");
        let w = [1.0, f64::NAN, 1.0, 1.0];
        inp.weights = &w;
        assert_eq!(validate(&inp).unwrap_err().kind(), "argument");
        let w = [0.0; 4];
        inp.weights = &w;
        assert_eq!(validate(&inp).unwrap_err().kind(), "argument");
        let w = [0.0, 0.0, 0.0, 1.0];
        inp.weights = &w;
        assert!(validate(&inp).is_err()); // one observation, one coefficient

        let mut inp = base(&codes, &z, &x, &y);
        inp.terms[0].k = 0;
        assert!(validate(&inp).is_err());

        let mut inp = base(&codes, &z, &x, &y);
        inp.p = 4;
        assert!(validate(&inp).is_err());

        // shared factor with different codes
        let codes2 = [1, 0, 1, 1];
        let mut inp = base(&codes, &z, &x, &y);
        inp.terms.push(ReTermInput {
            codes: &codes2,
            n_levels: 2,
            z: &z,
            k: 1,
            factor_id: 0,
        });
        assert!(validate(&inp).is_err());
    }

    #[test]
    fn bounds_and_start() {
        let codes = [0, 0, 1, 1];
        let z = [1.0; 8];
        let x = [1.0; 4];
        let y = [1.0, 2.0, 3.0, 4.0];
        let mut inp = base(&codes, &z, &x, &y);
        inp.terms[0].k = 2;
        let lb = lower_bounds(&inp);
        assert_eq!(lb, vec![0.0, f64::NEG_INFINITY, 0.0]);
        assert_eq!(default_start(&inp), vec![1.0, 0.0, 1.0]);
        assert!(check_theta(&inp, &[1.0, 0.0]).is_err());
        assert!(check_theta(&inp, &[1.0, 0.0, 1.0]).is_ok());
    }
}
