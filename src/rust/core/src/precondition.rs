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
    /// `Q` (`n x p`, orthonormal in the `W` metric), stored or formed from
    /// the kept `X`.
    pub q: QStore,
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

/// Values a model reads but does not own: a caller's (e.g. R's vectors,
/// which the caller keeps alive and unchanged for as long as the model
/// lives), or a `Vec`.
pub trait Kept<T>: Send + Sync {
    /// The values (a matrix column-major).
    fn values(&self) -> &[T];
}

impl<T: Send + Sync> Kept<T> for Vec<T> {
    fn values(&self) -> &[T] {
        self
    }
}

/// Values held by a model: its own, or kept (see [`Kept`]). Reads as a
/// slice.
#[derive(Clone)]
pub enum Values<T: 'static> {
    Owned(Vec<T>),
    Kept(std::sync::Arc<dyn Kept<T>>),
}

impl<T> std::ops::Deref for Values<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Values::Owned(v) => v,
            Values::Kept(k) => k.values(),
        }
    }
}

impl<T> From<Vec<T>> for Values<T> {
    fn from(v: Vec<T>) -> Values<T> {
        Values::Owned(v)
    }
}

impl<T: PartialEq> PartialEq for Values<T> {
    fn eq(&self, other: &Values<T>) -> bool {
        **self == **other
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Values<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// Where the model reads `Q` from.
pub(crate) enum QStore {
    /// `Q` itself (`n x p`, column-major): the Gram-Schmidt path.
    Dense(Vec<f64>),
    /// `X`, with `Q = X R^-1` formed chunk by chunk where it is read: the
    /// fast path, which needs no `n x p` buffer beyond `X`.
    Implicit(Values<f64>),
}

/// A borrowed [`QStore`] (with `R` for the implicit form).
#[derive(Clone, Copy)]
pub(crate) enum QView<'a> {
    Dense(&'a [f64]),
    Implicit { x: &'a [f64], r: &'a [f64] },
}

/// Rows of a tile of [`q_rows`]: its `p` columns stay in registers and the
/// first-level cache while the triangular solve sweeps them.
const Q_TILE: usize = 16;

/// `Q`'s rows `start..start + len` formed from `X`'s (`out`: column-major,
/// `len x p`): `q_j = (x_j - sum_{k<j} r_kj q_k) * (1 / r_jj)`, each value by
/// the same operations in the same order wherever it is formed (the wide
/// version below differs only in how many rows one instruction handles).
#[allow(clippy::too_many_arguments)]
fn q_rows(x: &[f64], n: usize, p: usize, r: &[f64], start: usize, len: usize, out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above)
            unsafe { q_rows_avx512(x, n, p, r, start, len, out) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX (checked just above)
            unsafe { q_rows_avx(x, n, p, r, start, len, out) };
            return;
        }
    }
    q_rows_body(x, n, p, r, start, len, out);
}

/// [`q_rows`] compiled for AVX-512 (as [`q_rows_avx`]: no fused
/// multiply-add, bit-identical).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn q_rows_avx512(
    x: &[f64],
    n: usize,
    p: usize,
    r: &[f64],
    start: usize,
    len: usize,
    out: &mut [f64],
) {
    q_rows_body(x, n, p, r, start, len, out);
}

/// [`q_rows`] compiled for AVX: separate multiplications and subtractions
/// (no fused multiply-add), so every value is bit-identical to the baseline
/// version's.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[allow(clippy::too_many_arguments)]
unsafe fn q_rows_avx(
    x: &[f64],
    n: usize,
    p: usize,
    r: &[f64],
    start: usize,
    len: usize,
    out: &mut [f64],
) {
    q_rows_body(x, n, p, r, start, len, out);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn q_rows_body(
    x: &[f64],
    n: usize,
    p: usize,
    r: &[f64],
    start: usize,
    len: usize,
    out: &mut [f64],
) {
    // the chunk's columns first (long sequential reads), then the solve on
    // them in place, a tile of rows at a time
    for j in 0..p {
        out[j * len..(j + 1) * len].copy_from_slice(&x[j * n + start..j * n + start + len]);
    }
    let mut t0 = 0;
    while t0 < len {
        let tl = Q_TILE.min(len - t0);
        for j in 0..p {
            let mut v = [0.0f64; Q_TILE];
            v[..tl].copy_from_slice(&out[j * len + t0..j * len + t0 + tl]);
            for k in 0..j {
                let rkj = r[j * p + k];
                let qk = &out[k * len + t0..k * len + t0 + tl];
                if tl == Q_TILE {
                    for (a, b) in v.iter_mut().zip(qk) {
                        *a -= rkj * b;
                    }
                } else {
                    for (a, b) in v[..tl].iter_mut().zip(qk) {
                        *a -= rkj * b;
                    }
                }
            }
            // a multiplication: divisions would dominate the pass
            let inv = 1.0 / r[j * p + j];
            for a in v[..tl].iter_mut() {
                *a *= inv;
            }
            out[j * len + t0..j * len + t0 + tl].copy_from_slice(&v[..tl]);
        }
        t0 += tl;
    }
}

/// Reads `Q` a chunk of rows at a time, whether it is stored or formed.
pub(crate) struct QRows<'a> {
    view: QView<'a>,
    n: usize,
    p: usize,
    start: usize,
    len: usize,
    buf: Vec<f64>,
}

impl<'a> QRows<'a> {
    /// For chunks of at most `max_len` rows.
    pub(crate) fn new(view: QView<'a>, n: usize, p: usize, max_len: usize) -> QRows<'a> {
        let buf = match view {
            QView::Dense(_) => Vec::new(),
            QView::Implicit { .. } => vec![0.0; max_len * p],
        };
        QRows {
            view,
            n,
            p,
            start: 0,
            len: 0,
            buf,
        }
    }

    /// Makes rows `start..start + len` the current chunk.
    pub(crate) fn load(&mut self, start: usize, len: usize) {
        self.start = start;
        self.len = len;
        if let QView::Implicit { x, r } = self.view {
            q_rows(
                x,
                self.n,
                self.p,
                r,
                start,
                len,
                &mut self.buf[..len * self.p],
            );
        }
    }

    /// Column `c` of the current chunk.
    pub(crate) fn col(&self, c: usize) -> &[f64] {
        match self.view {
            QView::Dense(q) => &q[c * self.n + self.start..c * self.n + self.start + self.len],
            QView::Implicit { .. } => &self.buf[c * self.len..(c + 1) * self.len],
        }
    }
}

impl Preconditioned {
    /// `Q` for reading by [`QRows`].
    pub(crate) fn q_view(&self) -> QView<'_> {
        match &self.q {
            QStore::Dense(q) => QView::Dense(q),
            QStore::Implicit(x) => QView::Implicit { x, r: &self.r },
        }
    }

    /// `R beta0`, with the scale: how `solve` maps fitted values back.
    pub(crate) fn rb(&self) -> Vec<f64> {
        let p = self.beta0.len();
        (0..p)
            .map(|k| (k..p).map(|j| self.r[j * p + k] * self.beta0[j]).sum())
            .collect()
    }

    /// `Q` as one `n x p` matrix (tests).
    #[cfg(test)]
    pub(crate) fn q_full(&self, n: usize, p: usize) -> Vec<f64> {
        let mut rows = QRows::new(self.q_view(), n, p, n);
        rows.load(0, n);
        (0..p).flat_map(|c| rows.col(c).to_vec()).collect()
    }
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
    orthonormalise_owned(input.x.to_vec(), input.n, input.p, input.weights)
}

/// [`orthonormalise`] in place on an owned copy of `X`.
fn orthonormalise_owned(
    mut q: Vec<f64>,
    n: usize,
    p: usize,
    w: &[f64],
) -> Result<(Vec<f64>, Vec<f64>), LmmError> {
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
    let resp = response_part_fused(QView::Dense(&q), &r, input.n, p, input.y, input.weights)?;
    let log_det_r2 = (0..p).map(|j| 2.0 * r[j * p + j].ln()).sum();
    Ok(Preconditioned {
        beta0: resp.beta0,
        q: QStore::Dense(q),
        r,
        y: resp.y,
        scale: resp.scale,
        log_det_r2,
    })
}

/// Smallest diagonal entry of the Cholesky factor of the column-scaled
/// `X'WX` for which [`precondition_kept_store`] takes its fast path (about
/// `cond(X) <= 1e3`, where `Q = X R^-1` is orthonormal to ~1e-10); below it
/// the Gram-Schmidt path is used.
const FAST_MIN_PIVOT: f64 = 1e-3;

/// [`precondition_kept_store`] with the default [`SMALL_Q`].
#[cfg(test)]
pub(crate) fn precondition_kept(
    kept: Values<f64>,
    input: &FitInput,
    threads: usize,
) -> Result<Preconditioned, LmmError> {
    precondition_kept_store(kept, input, threads, SMALL_Q)
}

/// As [`precondition`], keeping `X` (`kept`, column-major `n x p`; the `x`
/// of `input` is not used) instead of a copy of it. When `X` is well
/// conditioned, `R` comes from the Cholesky factor of `X'WX` (one pass over
/// the rows), the residual of `y` is formed in a second pass and one step of
/// iterative refinement (a third, light pass) makes it orthogonal to `Q`:
/// three passes instead of the `~2 p^2` column passes of Gram-Schmidt, and
/// `Q = X R^-1` is not stored but formed chunk by chunk where it is read (no
/// `n x p` buffer beyond `X`), unless `n p <= store` (the model passes
/// [`SMALL_Q`]; tests 0): then it is formed once and stored, and `kept` is
/// released. Otherwise Gram-Schmidt on a copy, as [`precondition`], and
/// `kept` is released. The passes run on `threads` threads (0: all cores)
/// and do not depend on it.
pub(crate) fn precondition_kept_store(
    kept: Values<f64>,
    input: &FitInput,
    threads: usize,
    store: usize,
) -> Result<Preconditioned, LmmError> {
    let (n, p) = (input.n, input.p);
    let w = input.weights;
    let xs: &[f64] = &kept;
    if xs.len() != n * p {
        return Err(LmmError::InvalidInput(format!(
            "x has length {} but n * p = {}",
            xs.len(),
            n * p
        )));
    }
    let fast = if p > 0 {
        let g = gram(xs, input.y, w, n, p, threads)?;
        // a non-finite value of X makes its column's sum of squares
        // non-finite (weights are finite): only then is X scanned
        let m = p + 1;
        if (0..p).any(|j| !g[j * m + j].is_finite()) && !crate::input::all_finite(xs) {
            return Err(crate::input::non_finite_x());
        }
        fast_factor(&g, p)
    } else {
        None
    };
    let Some((r, beta_ne)) = fast else {
        let (q, r) = orthonormalise_owned(xs.to_vec(), n, p, w)?;
        drop(kept);
        let resp = response_part_fused(QView::Dense(&q), &r, n, p, input.y, w)?;
        let log_det_r2 = (0..p).map(|j| 2.0 * r[j * p + j].ln()).sum();
        return Ok(Preconditioned {
            beta0: resp.beta0,
            q: QStore::Dense(q),
            r,
            y: resp.y,
            scale: resp.scale,
            log_det_r2,
        });
    };
    // a small Q is formed once and stored: the passes below and the
    // model's then read it instead of forming it again (the same numbers)
    let stored = (n * p <= store).then(|| {
        let mut q = vec![0.0; n * p];
        let mut rows = QRows::new(QView::Implicit { x: xs, r: &r }, n, p, TRANSFORM_CHUNK);
        let mut start = 0;
        while start < n {
            let len = TRANSFORM_CHUNK.min(n - start);
            rows.load(start, len);
            for c in 0..p {
                q[c * n + start..c * n + start + len].copy_from_slice(rows.col(c));
            }
            start += len;
        }
        q
    });
    let view = match &stored {
        Some(q) => QView::Dense(q),
        None => QView::Implicit { x: xs, r: &r },
    };
    let mut res = vec![0.0; n];
    let g2 = transform_pass(xs, view, &mut res, input.y, w, n, p, &beta_ne, threads)?;
    // refinement: c = (Q'WQ)^-1 Q'W res, res -= Q c, beta0 += R^-1 c
    let m = p + 1;
    let qtq: Vec<f64> = (0..p * p).map(|i| g2[(i / p) * m + i % p]).collect();
    let qtr: Vec<f64> = (0..p).map(|c| g2[c * m + p]).collect();
    let c = spd_solve(&qtq, p, &qtr).unwrap_or(qtr);
    let res_max = refine_pass(view, &mut res, w, n, p, &c, threads)?;
    let dc = solve_upper(&r, p, &c);
    let beta0: Vec<f64> = beta_ne.iter().zip(&dc).map(|(a, b)| a + b).collect();
    let max_abs = |v: &[f64]| {
        v.iter()
            .enumerate()
            .filter(|(i, _)| crate::input::contributes(w, *i))
            .fold(0.0f64, |m, (_, x)| m.max(x.abs()))
    };
    let y_max = max_abs(input.y);
    let scale = res_max;
    if !(scale.is_finite() && scale > 1e-13 * y_max && scale > 0.0) {
        return Err(perfect_fit());
    }
    for v in &mut res {
        *v /= scale;
    }
    let log_det_r2 = (0..p).map(|j| 2.0 * r[j * p + j].ln()).sum();
    Ok(Preconditioned {
        q: match stored {
            Some(q) => QStore::Dense(q),
            None => QStore::Implicit(kept),
        },
        r,
        y: res,
        beta0,
        scale,
        log_det_r2,
    })
}

fn perfect_fit() -> LmmError {
    LmmError::NonFinite(
        "perfect fit: the fixed effects reproduce the response exactly (e.g. a constant response), so the residual variance is zero and there is nothing left for a mixed model to estimate".into(),
    )
}

/// `[X 1]'[X 1]` (`(p + 1) x (p + 1)`, full, column-major) of the
/// column-major `n x p` matrix `x`: `X'X`, the column sums and `n`, in one
/// deterministic multithreaded pass on `threads` threads (0: all cores).
/// What R's checks of a model matrix (finiteness, rank screen, scales) read.
pub fn cross_products(x: &[f64], n: usize, p: usize, threads: usize) -> Result<Vec<f64>, LmmError> {
    if x.len() != n * p {
        return Err(LmmError::InvalidInput(format!(
            "x has length {} but n * p = {}",
            x.len(),
            n * p
        )));
    }
    if n == 0 {
        return Ok(vec![0.0; (p + 1) * (p + 1)]);
    }
    gram(x, &[], &[], n, p, threads)
}

/// For each column of the column-major `n x p` matrix `x`: whether every
/// value is 0 or 1 (a dummy variable; R's scale check leaves those out).
/// A column stops being read at its first other value.
pub fn binary_columns(x: &[f64], n: usize, p: usize) -> Vec<bool> {
    (0..p)
        .map(|c| {
            x.get(c * n..(c + 1) * n)
                .is_some_and(|col| col.iter().all(|v| *v == 0.0 || *v == 1.0))
        })
        .collect()
}

/// `[A b]' W [A b]` (`(p + 1) x (p + 1)`, full) of column-major `a` (`n x p`)
/// and `b` (a column of ones where `b` is empty), in one deterministic
/// multithreaded pass.
fn gram(
    a: &[f64],
    b: &[f64],
    w: &[f64],
    n: usize,
    p: usize,
    threads: usize,
) -> Result<Vec<f64>, LmmError> {
    use crate::pass::{add_into, reduce_slabs, resolve_threads, slab_rows, CHUNK};
    use faer::linalg::matmul::matmul;
    use faer::{Accum, MatMut, MatRef, Par};
    let m = p + 1;
    let slab = slab_rows(m * m);
    let make = |s: usize| -> Result<Vec<f64>, LmmError> {
        let (lo, hi) = (s * slab, ((s + 1) * slab).min(n));
        let chunk = CHUNK.min(hi - lo);
        let mut acc = vec![0.0; m * m];
        let mut xa = vec![0.0; chunk * m];
        let mut wxa = vec![0.0; chunk * m];
        let ones = if b.is_empty() {
            vec![1.0; chunk]
        } else {
            Vec::new()
        };
        let mut start = lo;
        while start < hi {
            let len = chunk.min(hi - start);
            for c in 0..m {
                let src = if c < p {
                    &a[c * n + start..c * n + start + len]
                } else if b.is_empty() {
                    &ones[..len]
                } else {
                    &b[start..start + len]
                };
                xa[c * len..(c + 1) * len].copy_from_slice(src);
                if w.is_empty() {
                    wxa[c * len..(c + 1) * len].copy_from_slice(src);
                } else {
                    for r in 0..len {
                        wxa[c * len + r] = w[start + r] * src[r];
                    }
                }
            }
            let xm = MatRef::from_column_major_slice(&xa[..len * m], len, m);
            let wm = MatRef::from_column_major_slice(&wxa[..len * m], len, m);
            let am = MatMut::from_column_major_slice_mut(&mut acc, m, m);
            matmul(am, Accum::Add, xm.transpose(), wm, 1.0, Par::Seq);
            start += len;
        }
        Ok(acc)
    };
    let add = |x: &mut Vec<f64>, y: Vec<f64>| add_into(x, &y);
    reduce_slabs(n.div_ceil(slab), resolve_threads(threads), &make, &add)
}

/// From `[X y]' W [X y]` (`g`, `(p + 1) x (p + 1)`): `R` (upper, `X'WX =
/// R'R`) and the least-squares coefficients, or `None` when the column-scaled
/// Cholesky factor has a pivot below [`FAST_MIN_PIVOT`] (or a column is
/// zero or not finite).
fn fast_factor(g: &[f64], p: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    let m = p + 1;
    let d: Vec<f64> = (0..p).map(|j| g[j * m + j].sqrt()).collect();
    if d.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return None;
    }
    // lower Cholesky factor of the scaled matrix, column-major
    let mut l = vec![0.0; p * p];
    for j in 0..p {
        let mut s = g[j * m + j] / (d[j] * d[j]);
        for k in 0..j {
            s -= l[k * p + j] * l[k * p + j];
        }
        if !(s.is_finite() && s > 0.0) {
            return None;
        }
        let ljj = s.sqrt();
        if ljj < FAST_MIN_PIVOT {
            return None;
        }
        l[j * p + j] = ljj;
        for i in (j + 1)..p {
            let mut v = g[j * m + i] / (d[i] * d[j]);
            for k in 0..j {
                v -= l[k * p + i] * l[k * p + j];
            }
            l[j * p + i] = v / ljj;
        }
    }
    // R = L' D: R[k, j] = L[j, k] d_j
    let mut r = vec![0.0; p * p];
    for j in 0..p {
        for k in 0..=j {
            r[j * p + k] = l[k * p + j] * d[j];
        }
    }
    // R'R beta = X'Wy
    let xty: Vec<f64> = (0..p).map(|c| g[c * m + p]).collect();
    let u = solve_lower_t(&r, p, &xty);
    let beta = solve_upper(&r, p, &u);
    if beta.iter().all(|v| v.is_finite()) {
        Some((r, beta))
    } else {
        None
    }
}

/// Solves `R' u = c` for upper-triangular `R` (column-major `p x p`).
fn solve_lower_t(r: &[f64], p: usize, c: &[f64]) -> Vec<f64> {
    let mut u = c.to_vec();
    for j in 0..p {
        let mut v = u[j];
        for k in 0..j {
            v -= r[j * p + k] * u[k];
        }
        u[j] = v / r[j * p + j];
    }
    u
}

/// Solves `A x = b` for a small symmetric positive definite `A` (column-major
/// `p x p`) by Cholesky; `None` if it is not positive definite.
fn spd_solve(a: &[f64], p: usize, b: &[f64]) -> Option<Vec<f64>> {
    let mut l = vec![0.0; p * p];
    for j in 0..p {
        let mut s = a[j * p + j];
        for k in 0..j {
            s -= l[k * p + j] * l[k * p + j];
        }
        if !(s.is_finite() && s > 0.0) {
            return None;
        }
        let ljj = s.sqrt();
        l[j * p + j] = ljj;
        for i in (j + 1)..p {
            let mut v = a[j * p + i];
            for k in 0..j {
                v -= l[k * p + i] * l[k * p + j];
            }
            l[j * p + i] = v / ljj;
        }
    }
    // L z = b, then L' x = z
    let mut z = b.to_vec();
    for i in 0..p {
        let mut v = z[i];
        for k in 0..i {
            v -= l[k * p + i] * z[k];
        }
        z[i] = v / l[i * p + i];
    }
    for i in (0..p).rev() {
        let mut v = z[i];
        for k in (i + 1)..p {
            v -= l[i * p + k] * z[k];
        }
        z[i] = v / l[i * p + i];
    }
    Some(z)
}

/// The refinement `res -= Q c` (`Q` read through `q`), returning
/// the largest `|res_i|` of the observations with a positive weight. Each
/// row's value depends only on that row, so the slabs run on `threads`
/// threads with the same numbers whatever their number.
#[allow(clippy::too_many_arguments)]
fn refine_pass(
    q: QView,
    res: &mut [f64],
    w: &[f64],
    n: usize,
    p: usize,
    c: &[f64],
    threads: usize,
) -> Result<f64, LmmError> {
    use crate::pass::{reduce_slabs_rows, resolve_threads, slab_rows};
    let make = |_s: usize, lo: usize, rs_all: &mut [f64]| -> Result<f64, LmmError> {
        let rows = rs_all.len();
        let mut qr = QRows::new(q, n, p, TRANSFORM_CHUNK.min(rows));
        let mut m = 0.0f64;
        let mut start = 0;
        while start < rows {
            let len = TRANSFORM_CHUNK.min(rows - start);
            qr.load(lo + start, len);
            let rs = &mut rs_all[start..start + len];
            for (k, ck) in c.iter().enumerate() {
                for (a, b) in rs.iter_mut().zip(qr.col(k)) {
                    *a -= ck * b;
                }
            }
            for (t, v) in rs.iter().enumerate() {
                if crate::input::contributes(w, lo + start + t) {
                    m = m.max(v.abs());
                }
            }
            start += len;
        }
        Ok(m)
    };
    let add = |a: &mut f64, b: f64| *a = a.max(b);
    reduce_slabs_rows(res, slab_rows(1), resolve_threads(threads), &make, &add)
}

/// Largest `n p` for which the fast path stores `Q` (32 MB): below it
/// forming `Q` in every pass costs more than keeping it.
pub(crate) const SMALL_Q: usize = 1 << 22;

/// Rows per chunk of [`transform_pass`] and of the passes that form `Q` from
/// `X`: the `p + 1` columns of a chunk stay in the first-level caches while
/// the triangular solve sweeps them.
const TRANSFORM_CHUNK: usize = 512;

/// One pass over the rows: `res = y - X beta`, and `[Q res]' W [Q res]`
/// with `Q` read through `q` (stored, or formed from `X` by chunks). Deterministic and
/// multithreaded as [`gram`] (each slab owns its rows of `res`).
#[allow(clippy::too_many_arguments)]
fn transform_pass(
    x: &[f64],
    q: QView,
    res: &mut [f64],
    y: &[f64],
    w: &[f64],
    n: usize,
    p: usize,
    beta: &[f64],
    threads: usize,
) -> Result<Vec<f64>, LmmError> {
    use crate::pass::{add_into, reduce_slabs_rows, resolve_threads, slab_rows};
    use faer::linalg::matmul::matmul;
    use faer::{Accum, MatMut, MatRef, Par};
    let m = p + 1;
    let make = |_s: usize, lo: usize, rs_all: &mut [f64]| -> Result<Vec<f64>, LmmError> {
        let rows = rs_all.len();
        let chunk = TRANSFORM_CHUNK.min(rows);
        let mut acc = vec![0.0; m * m];
        let mut xa = vec![0.0; chunk * m];
        let mut wxa = vec![0.0; chunk * m];
        let mut qr = QRows::new(q, n, p, chunk);
        let mut start = 0;
        while start < rows {
            let len = chunk.min(rows - start);
            let rs = &mut rs_all[start..start + len];
            rs.copy_from_slice(&y[lo + start..lo + start + len]);
            for c in 0..p {
                let xc = &x[c * n + lo + start..c * n + lo + start + len];
                for (a, b) in rs.iter_mut().zip(xc) {
                    *a -= beta[c] * b;
                }
            }
            qr.load(lo + start, len);
            for c in 0..m {
                let src: &[f64] = if c < p { qr.col(c) } else { rs };
                xa[c * len..(c + 1) * len].copy_from_slice(src);
                if w.is_empty() {
                    wxa[c * len..(c + 1) * len].copy_from_slice(src);
                } else {
                    for t in 0..len {
                        wxa[c * len + t] = w[lo + start + t] * src[t];
                    }
                }
            }
            let xm = MatRef::from_column_major_slice(&xa[..len * m], len, m);
            let wm = MatRef::from_column_major_slice(&wxa[..len * m], len, m);
            let am = MatMut::from_column_major_slice_mut(&mut acc, m, m);
            matmul(am, Accum::Add, xm.transpose(), wm, 1.0, Par::Seq);
            start += len;
        }
        Ok(acc)
    };
    let add = |x: &mut Vec<f64>, y: Vec<f64>| add_into(x, &y);
    reduce_slabs_rows(res, slab_rows(m * m), resolve_threads(threads), &make, &add)
}

/// The part of the preconditioning that depends on the response.
pub(crate) struct ResponsePart {
    pub y: Vec<f64>,
    pub beta0: Vec<f64>,
    pub scale: f64,
}

/// As [`response_part`] in three passes over the rows instead of `4 p`
/// column sweeps: `c = Q'W y`; `res = y - Q c` together with `d = Q'W res`;
/// `res -= Q d` (classical Gram-Schmidt with one re-orthogonalisation, as
/// accurate as the modified one for an orthonormal `Q`). Used for a new
/// response of a kept model.
pub(crate) fn response_part_fused(
    q: QView,
    r: &[f64],
    n: usize,
    p: usize,
    y: &[f64],
    w: &[f64],
) -> Result<ResponsePart, LmmError> {
    const C: usize = 2048;
    let wy: Vec<f64>;
    let yw: &[f64] = if w.is_empty() {
        y
    } else {
        wy = y.iter().zip(w).map(|(a, b)| a * b).collect();
        &wy
    };
    let mut rows = QRows::new(q, n, p, C);
    // c = Q'W y, each a sum over the rows in their order
    let mut c = vec![0.0; p];
    let mut start = 0;
    while start < n {
        let len = C.min(n - start);
        rows.load(start, len);
        for (j, cj) in c.iter_mut().enumerate() {
            *cj = rows
                .col(j)
                .iter()
                .zip(&yw[start..start + len])
                .fold(*cj, |s, (a, b)| s + a * b);
        }
        start += len;
    }
    // res = y - Q c and d = Q'W res, chunk by chunk
    let mut res = y.to_vec();
    let mut d = vec![0.0; p];
    let mut start = 0;
    while start < n {
        let len = C.min(n - start);
        rows.load(start, len);
        let rs = &mut res[start..start + len];
        for j in 0..p {
            for (a, b) in rs.iter_mut().zip(rows.col(j)) {
                *a -= c[j] * b;
            }
        }
        for j in 0..p {
            let qj = rows.col(j);
            d[j] += if w.is_empty() {
                qj.iter().zip(rs.iter()).map(|(a, b)| a * b).sum::<f64>()
            } else {
                qj.iter()
                    .zip(rs.iter())
                    .zip(&w[start..start + len])
                    .map(|((a, b), v)| a * b * v)
                    .sum::<f64>()
            };
        }
        start += len;
    }
    // res -= Q d
    let mut start = 0;
    while start < n {
        let len = C.min(n - start);
        rows.load(start, len);
        let rs = &mut res[start..start + len];
        for j in 0..p {
            for (a, b) in rs.iter_mut().zip(rows.col(j)) {
                *a -= d[j] * b;
            }
        }
        start += len;
    }
    let coef: Vec<f64> = c.iter().zip(&d).map(|(a, b)| a + b).collect();
    finish_response(res, coef, r, p, y, w)
}

#[cfg(test)]
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
    finish_response(res, coef, r, p, y, w)
}

/// Scales the residual `res` of `y` (coefficients `coef` on `Q`) by its
/// largest absolute value, refusing a perfect fit.
fn finish_response(
    mut res: Vec<f64>,
    coef: Vec<f64>,
    r: &[f64],
    p: usize,
    y: &[f64],
    w: &[f64],
) -> Result<ResponsePart, LmmError> {
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
        return Err(perfect_fit());
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
/// `b = s b~`, `sigma = s sigma~`; the fitted values (`X beta0 + s fitted~`,
/// with `X beta0 = Q (R beta0)`) come mapped back from `solve` (see
/// [`Preconditioned::back`]).
pub(crate) fn map_back(p: usize, pre: &Preconditioned, sol: Solution) -> Solution {
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
    // the fitted values are mapped back by the pass that forms them
    let fitted = sol.fitted;
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
                let q = pre.q_full(n, 3);
                let d = wdot(&q[a * n..(a + 1) * n], &q[b * n..(b + 1) * n], &w);
                assert!((d - if a == b { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        for j in 0..3 {
            for i in 0..n {
                let q = pre.q_full(n, 3);
                let xr: f64 = (0..3).map(|k| q[k * n + i] * pre.r[j * 3 + k]).sum();
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

    #[test]
    fn the_fast_path_agrees_with_gram_schmidt() {
        let n = 200_000; // several slabs
        let mut st = 9u64;
        let mut unif = move || {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            (st >> 11) as f64 / (1u64 << 53) as f64
        };
        let p = 4;
        let mut x = vec![1.0; n];
        for j in 1..p {
            for _ in 0..n {
                x.push(unif() * j as f64 + 0.3 * j as f64);
            }
        }
        let y: Vec<f64> = (0..n)
            .map(|i| 5.0 + x[n + i] - 2.0 * x[3 * n + i] + unif())
            .collect();
        for w in [
            vec![],
            (0..n).map(|i| (i % 3) as f64 * 0.5).collect::<Vec<f64>>(),
        ] {
            let inp = input(&x, &y, &w, n, p);
            let old = precondition(&inp).unwrap();
            assert!(fast_factor(&gram(&x, &y, &w, n, p, 1).unwrap(), p).is_some());
            let new = precondition_kept_store(x.clone().into(), &inp, 2, 0).unwrap();
            assert!(matches!(new.q, QStore::Implicit(_)));
            let again = precondition_kept_store(x.clone().into(), &inp, 1, 0).unwrap();
            let (new_q, again_q) = (new.q_full(n, p), again.q_full(n, p));
            assert!(new_q == again_q && new.y == again.y && new.r == again.r);
            let three = precondition_kept_store(x.clone().into(), &inp, 3, 0).unwrap();
            // stored (the default for a Q this small): the same numbers
            let small = precondition_kept(x.clone().into(), &inp, 2).unwrap();
            assert!(matches!(small.q, QStore::Dense(_)));
            assert!(new_q == small.q_full(n, p) && new.y == small.y && new.beta0 == small.beta0);
            assert!(new_q == three.q_full(n, p) && new.y == three.y && new.beta0 == three.beta0);
            let close = |a: &[f64], b: &[f64], tol: f64| {
                a.iter()
                    .zip(b)
                    .all(|(u, v)| (u - v).abs() <= tol * (1.0 + v.abs()))
            };
            assert!(close(&new.beta0, &old.beta0, 1e-12));
            assert!(close(&new.r, &old.r, 1e-10));
            assert!(close(&new_q, &old.q_full(n, p), 1e-9));
            assert!(close(&new.y, &old.y, 1e-9));
            assert!((new.scale - old.scale).abs() <= 1e-12 * old.scale);
            assert!((new.log_det_r2 - old.log_det_r2).abs() <= 1e-10 * old.log_det_r2.abs());
        }
        // badly conditioned columns take the Gram-Schmidt path
        let mut xb = vec![1.0; n];
        xb.extend((0..n).map(|i| 1e6 + (i % 7) as f64));
        let g = gram(&xb, &y, &[], n, 2, 1).unwrap();
        assert!(fast_factor(&g, 2).is_none());
        // exact fits are still errors on the fast path
        let exact: Vec<f64> = (0..n).map(|i| 2.0 + 3.0 * x[n + i]).collect();
        assert!(matches!(
            precondition_kept(x.clone().into(), &input(&x, &exact, &[], n, p), 1),
            Err(LmmError::NonFinite(_))
        ));
    }

    #[test]
    fn the_fused_response_part_agrees() {
        let n = 5000;
        let x: Vec<f64> = (0..n)
            .map(|_| 1.0)
            .chain((0..n).map(|i| (i as f64 / 97.0).sin()))
            .chain((0..n).map(|i| ((i * 7 % 13) as f64) / 13.0))
            .collect();
        let y: Vec<f64> = (0..n).map(|i| 1e3 + (i as f64).cos() + x[n + i]).collect();
        for w in [
            vec![],
            (0..n).map(|i| (i % 4) as f64 * 0.5).collect::<Vec<f64>>(),
        ] {
            let pre = precondition(&input(&x, &y, &w, n, 3)).unwrap();
            let q = pre.q_full(n, 3);
            let a = response_part(&q, &pre.r, n, 3, &y, &w).unwrap();
            let b = response_part_fused(QView::Dense(&q), &pre.r, n, 3, &y, &w).unwrap();
            assert!((a.scale - b.scale).abs() <= 1e-12 * a.scale);
            for (u, v) in a.y.iter().zip(&b.y) {
                assert!((u - v).abs() <= 1e-10);
            }
            for (u, v) in a.beta0.iter().zip(&b.beta0) {
                assert!((u - v).abs() <= 1e-10 * (1.0 + v.abs()));
            }
        }
        let exact: Vec<f64> = (0..n).map(|i| 2.0 + 3.0 * x[n + i]).collect();
        let pre = precondition(&input(&x, &y, &[], n, 3)).unwrap();
        assert!(response_part_fused(pre.q_view(), &pre.r, n, 3, &exact, &[]).is_err());
    }
}
