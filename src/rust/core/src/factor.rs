//! Blocked factorisation of the penalised system at a given theta and the
//! profiled criteria (ML deviance, REML criterion).

use crate::blocks::Blocks;
use crate::chunk::{Chunk, MAX_UNION};
use crate::error::LmmError;
use crate::scatter::Scatter;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
use faer::{Accum, Mat, MatMut, MatRef, Par};

/// Dense size above which faer's blocked Cholesky is used.
const FAER_CHOL_MIN: usize = 48;
/// Dense size above which the Cholesky runs on several threads.
const FAER_PAR_MIN: usize = 384;

/// Quantities of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Criterion {
    /// log |L|^2 (random-effects part of the factor).
    pub ldl2: f64,
    /// log |R_X|^2.
    pub ldrx2: f64,
    /// Penalised weighted residual sum of squares.
    pub pwrss: f64,
    /// ML deviance or REML criterion (as requested).
    pub value: f64,
}

/// Preallocated buffers for repeated evaluations.
pub(crate) struct Workspace {
    /// Lambda_t for each term, k x k column-major, at `lam_off[t]`.
    pub lam: Vec<f64>,
    pub lam_off: Vec<usize>,
    /// Dense Lambda of one primary level block (k1 x k1).
    pub lam1: Vec<f64>,
    /// Dense system / its lower Cholesky factor after `evaluate` (d x d).
    pub s: Vec<f64>,
    /// Per-level scratch.
    pub m: Vec<f64>,
    pub t: Vec<f64>,
    pub c: Vec<f64>,
    pub idx: Vec<usize>,
    /// Diagonal of the X part of the dense system before factorisation.
    xdiag: Vec<f64>,
    stack: MemBuffer,
    /// Groups of levels for the stacked updates.
    pub chunk: Chunk,
    /// Column-oriented updates where the levels touch scattered columns.
    pub scatter: Option<Scatter>,
    /// The gradient's dense inverse and the inverse of its factor, kept
    /// between evaluations (allocated at the first gradient).
    pub kd: faer::Mat<f64>,
    pub linv: faer::Mat<f64>,
    /// One grouping factor (no rest block): the last evaluation's `C_j`
    /// stacked, `(k1 g1) x (p + 1)`, and its `L_j`, `g1` blocks of
    /// `k1 x k1` (see [`evaluate`]); read by the gradient.
    pub stacked_c: Vec<f64>,
    pub stacked_l: Vec<f64>,
}

impl Workspace {
    /// Buffers for `bl`, with the column-oriented updates (where they apply)
    /// shared out between `threads` threads (0: all cores; the results do
    /// not depend on it).
    pub fn with_threads(bl: &Blocks, threads: usize) -> Workspace {
        let mut ws = Workspace::new(bl);
        ws.scatter = Scatter::plan(bl, crate::pass::resolve_threads(threads));
        ws
    }

    /// Releases the gradient's kept inverse buffers where they are large
    /// (before the solution, which forms its own inverse of the rest block:
    /// the peak memory of a fit with a large dense block stays at about
    /// four copies of it).
    pub fn release_large_buffers(&mut self) {
        if self.kd.nrows() > 2048 {
            self.kd = faer::Mat::zeros(0, 0);
            self.linv = faer::Mat::zeros(0, 0);
        }
    }

    /// Buffers for `bl` with the grouped updates only.
    pub fn new(bl: &Blocks) -> Workspace {
        let mut lam_off = Vec::with_capacity(bl.terms.len());
        let mut tot = 0;
        for t in &bl.terms {
            lam_off.push(tot);
            tot += t.k * t.k;
        }
        let d = bl.d();
        let mcols = bl.max_level_cols + bl.p + 1;
        let req = cholesky_in_place_scratch::<f64>(d, Par::rayon(0), Default::default());
        Workspace {
            lam: vec![0.0; tot],
            lam_off,
            lam1: vec![0.0; bl.k1 * bl.k1],
            s: vec![0.0; d * d],
            m: vec![0.0; bl.k1 * bl.k1],
            t: vec![0.0; bl.k1 * bl.k1.max(mcols)],
            c: vec![0.0; bl.k1 * mcols],
            idx: vec![0; mcols],
            xdiag: vec![0.0; bl.p],
            stack: MemBuffer::new(req),
            chunk: Chunk::new(bl.k1, d),
            scatter: None,
            kd: faer::Mat::zeros(0, 0),
            linv: faer::Mat::zeros(0, 0),
            stacked_c: Vec::new(),
            stacked_l: Vec::new(),
        }
    }

    /// Fills the Lambda_t blocks from theta (term after term, lower triangle
    /// column-major).
    pub fn set_theta(&mut self, bl: &Blocks, theta: &[f64]) {
        let mut pos = 0;
        for (t, ti) in bl.terms.iter().enumerate() {
            let k = ti.k;
            let lt = &mut self.lam[self.lam_off[t]..self.lam_off[t] + k * k];
            lt.iter_mut().for_each(|v| *v = 0.0);
            for c in 0..k {
                for r in c..k {
                    lt[c * k + r] = theta[pos];
                    pos += 1;
                }
            }
        }
        let k1 = bl.k1;
        self.lam1.iter_mut().for_each(|v| *v = 0.0);
        for &t in &bl.prim_terms {
            let ti = &bl.terms[t];
            let off = ti.prim_offset.unwrap_or(0);
            let k = ti.k;
            for c in 0..k {
                for r in c..k {
                    self.lam1[(off + c) * k1 + off + r] = self.lam[self.lam_off[t] + c * k + r];
                }
            }
        }
    }
}

/// In-place Cholesky of a small dense column-major `k x k` matrix (lower
/// triangle used and overwritten). Returns `false` if not positive definite.
pub(crate) fn chol_small(a: &mut [f64], k: usize) -> bool {
    chol_small_index(a, k).is_none()
}

/// Computes, for primary level `j`, the factor `L_j` (into `ws.m`) and
/// `C_j = L_j^{-1} [Lambda1' A1r Lambda_r, Lambda1' A1X, Lambda1' A1y]` (into
/// `ws.c`, k1 x m, with the target rows of the dense system in `ws.idx`).
/// Returns `(m, log|L_j|^2)`.
pub(crate) fn level_block(
    bl: &Blocks,
    ws: &mut Workspace,
    j: usize,
) -> Result<(usize, f64), LmmError> {
    let k1 = bl.k1;
    let p = bl.p;
    let kk = k1 * k1;
    let a = &bl.a11[j * kk..(j + 1) * kk];
    let r0 = bl.r_ptr[j];
    let nc = bl.r_ptr[j + 1] - r0;
    let m = nc + p + 1;
    let q2 = bl.q2;
    if k1 == 1 {
        let lam = ws.lam1[0];
        let l = (lam * lam * a[0] + 1.0).sqrt();
        ws.m[0] = l;
        let f = lam / l;
        for cc in 0..nc {
            let col = bl.r_cols[r0 + cc];
            let (t, ci) = bl.rest_col_term[col];
            let k = bl.terms[t].k;
            // (A1r Lambda_r)[col] = sum_{c' >= ci} A1r[col - ci + c'] Lambda_t[c', ci]
            let lt = &ws.lam[ws.lam_off[t]..ws.lam_off[t] + k * k];
            let mut v = 0.0;
            for c2 in ci..k {
                v += bl.r_dat[r0 + cc - ci + c2] * lt[ci * k + c2];
            }
            ws.c[cc] = f * v;
            ws.idx[cc] = col;
        }
        for c in 0..p {
            ws.c[nc + c] = f * bl.a1x[j * p + c];
            ws.idx[nc + c] = q2 + c;
        }
        ws.c[nc + p] = f * bl.a1y[j];
        ws.idx[nc + p] = q2 + p;
        return Ok((m, 2.0 * l.ln()));
    }
    // T = A11_j Lambda1 ; M = Lambda1' T + I
    let lam1 = &ws.lam1;
    for c in 0..k1 {
        for r in 0..k1 {
            let mut v = 0.0;
            for l in c..k1 {
                v += a[l * k1 + r] * lam1[c * k1 + l];
            }
            ws.t[c * k1 + r] = v;
        }
    }
    for c in 0..k1 {
        for r in c..k1 {
            let mut v = 0.0;
            for l in r..k1 {
                v += lam1[r * k1 + l] * ws.t[c * k1 + l];
            }
            ws.m[c * k1 + r] = v + if r == c { 1.0 } else { 0.0 };
        }
    }
    if !chol_small(&mut ws.m[..kk], k1) {
        return Err(LmmError::NotPositiveDefinite(format!(
            "random-effects block of level {j} (non-finite theta or data?)"
        )));
    }
    let mut ld = 0.0;
    for i in 0..k1 {
        ld += 2.0 * ws.m[i * k1 + i].ln();
    }
    // Raw right-hand block B = [A1r_j Lambda_r, A1X_j, A1y_j] into ws.t (k1 x m).
    for cc in 0..nc {
        let col = bl.r_cols[r0 + cc];
        let (t, ci) = bl.rest_col_term[col];
        let k = bl.terms[t].k;
        let lt = &ws.lam[ws.lam_off[t]..ws.lam_off[t] + k * k];
        let dst = &mut ws.t[cc * k1..(cc + 1) * k1];
        dst.fill(0.0);
        for c2 in ci..k {
            let src = (r0 + cc - ci + c2) * k1;
            crate::grad::axpy(dst, lt[ci * k + c2], &bl.r_dat[src..src + k1]);
        }
        ws.idx[cc] = col;
    }
    let xb = j * k1 * p;
    ws.t[nc * k1..(nc + p) * k1].copy_from_slice(&bl.a1x[xb..xb + k1 * p]);
    for c in 0..p {
        ws.idx[nc + c] = q2 + c;
    }
    ws.t[(nc + p) * k1..(nc + p + 1) * k1].copy_from_slice(&bl.a1y[j * k1..(j + 1) * k1]);
    ws.idx[nc + p] = q2 + p;
    // C = L^{-1} Lambda1' B
    if k1 <= SMALL_K {
        lambda_t_solve_small(
            &ws.lam1,
            &ws.m[..kk],
            k1,
            &ws.t[..k1 * m],
            &mut ws.c[..k1 * m],
        );
    } else {
        lambda_t_solve(
            &ws.lam1,
            &ws.m[..kk],
            k1,
            &ws.t[..k1 * m],
            &mut ws.c[..k1 * m],
        );
    }
    Ok((m, ld))
}

/// Largest level block size whose `L^{-1} Lambda' B` is formed by plain
/// loops: below it faer's setup per call costs more than the arithmetic
/// (a profile of a `(x | g)` fit spent most of its evaluations there).
const SMALL_K: usize = 4;

/// [`lambda_t_solve`] by loops, for `k <= SMALL_K`: per column of `b`,
/// `v = Lambda' b` (each entry summed from the diagonal down) and the
/// forward solve `L out = v`.
fn lambda_t_solve_small(lam: &[f64], l: &[f64], k: usize, b: &[f64], out: &mut [f64]) {
    for (bc, oc) in b.chunks_exact(k).zip(out.chunks_exact_mut(k)) {
        for r in 0..k {
            let mut v = 0.0;
            for q in r..k {
                v += lam[r * k + q] * bc[q];
            }
            oc[r] = v;
        }
        for r in 0..k {
            let mut v = oc[r];
            for q in 0..r {
                v -= l[q * k + r] * oc[q];
            }
            oc[r] = v / l[r * k + r];
        }
    }
}

/// `out = L^{-1} Lambda' b` for lower-triangular `k x k` `lam` and `l` and a
/// `k x m` block `b` (column-major).
pub(crate) fn lambda_t_solve(lam: &[f64], l: &[f64], k: usize, b: &[f64], out: &mut [f64]) {
    let m = b.len() / k.max(1);
    if m == 0 {
        return;
    }
    let lam = MatRef::from_column_major_slice(lam, k, k);
    let mut o = MatMut::from_column_major_slice_mut(out, k, m);
    tri_matmul(
        o.as_mut(),
        BlockStructure::Rectangular,
        Accum::Replace,
        lam.transpose(),
        BlockStructure::TriangularUpper,
        MatRef::from_column_major_slice(b, k, m),
        BlockStructure::Rectangular,
        1.0,
        Par::Seq,
    );
    solve_lower_triangular_in_place(MatRef::from_column_major_slice(l, k, k), o, Par::Seq);
}

/// Fills `ws.s` with `Lt' D Lt` (`Lt = blockdiag(Lambda_r, I)`) plus the
/// identity on the rest block. Full storage.
fn fill_dense(bl: &Blocks, ws: &mut Workspace) {
    let d = bl.d();
    let q2 = bl.q2;
    if q2 == 0 {
        ws.s.copy_from_slice(&bl.dense);
        return;
    }
    if bl.rest_all_k1 {
        // Diagonal Lambda_r: one pass over the lower triangle.
        for c in 0..d {
            let sc = if c < q2 {
                ws.lam[ws.lam_off[bl.rest_col_term[c].0]]
            } else {
                1.0
            };
            let src = &bl.dense[c * d..(c + 1) * d];
            let dst = &mut ws.s[c * d..(c + 1) * d];
            for r in c..q2 {
                dst[r] = src[r] * sc * ws.lam[ws.lam_off[bl.rest_col_term[r].0]];
            }
            for r in c.max(q2)..d {
                dst[r] = src[r] * sc;
            }
            if c < q2 {
                dst[c] += 1.0;
            }
        }
        return;
    }
    ws.s.copy_from_slice(&bl.dense);
    // Column pass: S[:, blk] = S[:, blk] Lambda_t (in increasing covariate order).
    let mut col = 0;
    while col < q2 {
        let (t, _) = bl.rest_col_term[col];
        let k = bl.terms[t].k;
        let lt = &ws.lam[ws.lam_off[t]..ws.lam_off[t] + k * k];
        if k == 1 {
            let l = lt[0];
            ws.s[col * d..(col + 1) * d]
                .iter_mut()
                .for_each(|v| *v *= l);
        } else {
            for c in 0..k {
                for r in 0..d {
                    let mut v = 0.0;
                    for c2 in c..k {
                        v += ws.s[(col + c2) * d + r] * lt[c * k + c2];
                    }
                    ws.s[(col + c) * d + r] = v;
                }
            }
        }
        col += k;
    }
    // Row pass: S[blk, :] = Lambda_t' S[blk, :].
    let mut row = 0;
    while row < q2 {
        let (t, _) = bl.rest_col_term[row];
        let k = bl.terms[t].k;
        let lt = &ws.lam[ws.lam_off[t]..ws.lam_off[t] + k * k];
        for cidx in 0..d {
            let colv = &mut ws.s[cidx * d..(cidx + 1) * d];
            for c in 0..k {
                let mut v = 0.0;
                for c2 in c..k {
                    v += lt[c * k + c2] * colv[row + c2];
                }
                colv[row + c] = v;
            }
        }
        row += k;
    }
    for i in 0..q2 {
        ws.s[i * d + i] += 1.0;
    }
}

/// Evaluates the factorisation at the theta already loaded into `ws`
/// (`set_theta`). On return `ws.s` holds the lower Cholesky factor of the
/// dense (rest, X, y) system.
pub(crate) fn evaluate(bl: &Blocks, ws: &mut Workspace, reml: bool) -> Result<Criterion, LmmError> {
    let d = bl.d();
    let q2 = bl.q2;
    let p = bl.p;
    fill_dense(bl, ws);
    let mut ldl2 = 0.0;
    let k1 = bl.k1;
    if let Some(mut sc) = ws.scatter.take() {
        let res = scatter_levels(bl, ws, &mut sc);
        ws.scatter = Some(sc);
        ldl2 = res?;
    } else if q2 == 0 {
        ldl2 = stacked_levels(bl, ws)?;
    } else {
        ws.chunk.clear();
        for j in 0..bl.g1 {
            let (m, ld) = level_block(bl, ws, j)?;
            ldl2 += ld;
            if !ws.chunk.accepts(&ws.idx[..m]) {
                flush_update(d, ws);
            }
            let kk = k1 * k1;
            ws.chunk.push(j, &ws.m[..kk], &ws.c[..k1 * m], &ws.idx[..m]);
        }
        flush_update(d, ws);
    }
    // Keep the diagonal of the X part to detect rank deficiency.
    for i in 0..p {
        ws.xdiag[i] = ws.s[(q2 + i) * d + q2 + i];
    }
    let ok = if d < FAER_CHOL_MIN {
        chol_small_index(&mut ws.s, d)
    } else {
        let stack = MemStack::new(&mut ws.stack);
        let mat = MatMut::from_column_major_slice_mut(&mut ws.s, d, d);
        let par = if d >= FAER_PAR_MIN {
            Par::rayon(0)
        } else {
            Par::Seq
        };
        match cholesky_in_place(mat, Default::default(), par, stack, Default::default()) {
            Ok(_) => None,
            Err(faer::linalg::cholesky::llt::factor::LltError::NonPositivePivot { index }) => {
                Some(index)
            }
        }
    };
    if let Some(index) = ok {
        return Err(pivot_error(index, q2, p));
    }
    let mut ld22 = 0.0;
    for i in 0..q2 {
        ld22 += 2.0 * ws.s[i * d + i].ln();
    }
    let mut ldrx2 = 0.0;
    for i in q2..q2 + p {
        let l = ws.s[i * d + i];
        // l^2 / S_ii = 1 - R^2 of this column on the previous ones.
        if l.is_nan() || l * l <= 1e-13 * ws.xdiag[i - q2] {
            return Err(pivot_error(i, q2, p));
        }
        ldrx2 += 2.0 * l.ln();
    }
    let ly = ws.s[(d - 1) * d + d - 1];
    let pwrss = ly * ly;
    let ldl2 = ldl2 + ld22;
    if !(ldl2.is_finite() && ldrx2.is_finite() && pwrss.is_finite()) {
        return Err(LmmError::NonFinite(
            "the factorisation produced non-finite values".into(),
        ));
    }
    if pwrss <= 0.0 {
        return Err(LmmError::NonFinite(
            "penalised residual sum of squares is zero (perfect fit)".into(),
        ));
    }
    let n = bl.n as f64;
    let value = if reml {
        let nmp = n - p as f64;
        ldl2 + ldrx2 - bl.ldw + nmp * (1.0 + (2.0 * std::f64::consts::PI * pwrss / nmp).ln())
    } else {
        ldl2 - bl.ldw + n * (1.0 + (2.0 * std::f64::consts::PI * pwrss / n).ln())
    };
    if !value.is_finite() {
        return Err(LmmError::NonFinite("criterion is not finite".into()));
    }
    Ok(Criterion {
        ldl2,
        ldrx2,
        pwrss,
        value,
    })
}

/// The levels' part of [`evaluate`] by columns (see [`Scatter`]): every
/// `L_j` and `C_j` into `sc`, then `S -= sum_j C_j' C_j`. Returns
/// `sum_j log|L_j|^2`.
fn scatter_levels(bl: &Blocks, ws: &mut Workspace, sc: &mut Scatter) -> Result<f64, LmmError> {
    let k1 = bl.k1;
    let kk = k1 * k1;
    let d = bl.d();
    let q2 = bl.q2;
    let p1 = bl.p + 1;
    let g1 = bl.g1;
    let mut ldl2 = 0.0;
    // X and y columns of every level, stacked: (k1 g1) x (p + 1).
    let rows = k1 * g1;
    let mut gxy = vec![0.0; rows * p1];
    for j in 0..g1 {
        let (m, ld) = level_block(bl, ws, j)?;
        ldl2 += ld;
        let o = k1 * sc.off[j];
        sc.c[o..o + k1 * m].copy_from_slice(&ws.c[..k1 * m]);
        sc.l[j * kk..(j + 1) * kk].copy_from_slice(&ws.m[..kk]);
        let nc = m - p1;
        for c in 0..p1 {
            gxy[c * rows + j * k1..c * rows + (j + 1) * k1]
                .copy_from_slice(&ws.c[(nc + c) * k1..(nc + c + 1) * k1]);
        }
    }
    sc.update_rest(bl, &mut ws.s);
    let sm = MatMut::from_column_major_slice_mut(&mut ws.s, d, d);
    let g = MatRef::from_column_major_slice(&gxy, rows, p1);
    sub_gram_lower(sm.submatrix_mut(q2, q2, p1, p1), g);
    Ok(ldl2)
}

/// The levels' part of [`evaluate`] for one grouping factor (no rest
/// block): every level updates the same `(X, y)` columns, so the levels'
/// `C_j` are stacked into `G` (`(k1 g1) x (p + 1)`, kept with the `L_j` in
/// the workspace for the gradient) and `S -= G'G` is one product. Returns
/// `sum_j log|L_j|^2`.
fn stacked_levels(bl: &Blocks, ws: &mut Workspace) -> Result<f64, LmmError> {
    let k1 = bl.k1;
    let kk = k1 * k1;
    let p1 = bl.p + 1;
    let g1 = bl.g1;
    let rows = k1 * g1;
    let mut g = std::mem::take(&mut ws.stacked_c);
    let mut ls = std::mem::take(&mut ws.stacked_l);
    g.resize(rows * p1, 0.0);
    ls.resize(g1 * kk, 0.0);
    let mut ldl2 = 0.0;
    if k1 == 1 {
        // level_block's scalar case, written straight into the stacks
        let (p, lam) = (bl.p, ws.lam1[0]);
        for j in 0..g1 {
            let l = (lam * lam * bl.a11[j] + 1.0).sqrt();
            ls[j] = l;
            let f = lam / l;
            for c in 0..p {
                g[c * rows + j] = f * bl.a1x[j * p + c];
            }
            g[p * rows + j] = f * bl.a1y[j];
            ldl2 += 2.0 * l.ln();
        }
    }
    for j in (0..g1).filter(|_| k1 > 1) {
        let (m, ld) = level_block(bl, ws, j)?;
        debug_assert_eq!(m, p1);
        ldl2 += ld;
        ls[j * kk..(j + 1) * kk].copy_from_slice(&ws.m[..kk]);
        for c in 0..p1 {
            g[c * rows + j * k1..c * rows + (j + 1) * k1]
                .copy_from_slice(&ws.c[c * k1..(c + 1) * k1]);
        }
    }
    let sm = MatMut::from_column_major_slice_mut(&mut ws.s, p1, p1);
    let gm = MatRef::from_column_major_slice(&g, rows, p1);
    sub_gram_lower(sm, gm);
    ws.stacked_c = g;
    ws.stacked_l = ls;
    Ok(ldl2)
}

/// The lower triangle of `dst -= G'G` (one product, sequential).
fn sub_gram_lower(dst: MatMut<f64>, g: MatRef<f64>) {
    tri_matmul(
        dst,
        BlockStructure::TriangularLower,
        Accum::Add,
        g.transpose(),
        BlockStructure::Rectangular,
        g,
        BlockStructure::Rectangular,
        -1.0,
        Par::Seq,
    );
}

/// `S^-1 = L^-T L^-1` (full storage) by a triangular inverse and a
/// triangular product.
pub(crate) fn schur_inverse(l22: MatRef<f64>, par: Par) -> Mat<f64> {
    let q2 = l22.nrows();
    let mut linv = Mat::<f64>::zeros(q2, q2);
    let mut sinv = Mat::<f64>::zeros(q2, q2);
    inverse_from_factor(l22, &mut linv, &mut sinv, par);
    sinv
}

/// `out = L^-T L^-1` (full storage) for lower-triangular `l`, with `linv`
/// (same size) as the buffer of `L^-1`.
pub(crate) fn inverse_from_factor(
    l: MatRef<f64>,
    linv: &mut Mat<f64>,
    out: &mut Mat<f64>,
    par: Par,
) {
    let n = l.nrows();
    invert_lower_triangular(linv.as_mut(), l, par);
    tri_matmul(
        out.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        linv.transpose(),
        BlockStructure::TriangularUpper,
        linv.as_ref(),
        BlockStructure::TriangularLower,
        1.0,
        par,
    );
    for c in 0..n {
        for r in (c + 1)..n {
            out[(c, r)] = out[(r, c)];
        }
    }
}

/// `S[idx, idx] -= C' C` for one level (lower triangle; idx increasing).
fn scalar_update(s: &mut [f64], d: usize, k1: usize, c: &[f64], idx: &[usize]) {
    let m = idx.len();
    for b in 0..m {
        let cb = &c[b * k1..(b + 1) * k1];
        if cb.iter().all(|v| *v == 0.0) {
            continue;
        }
        let base = idx[b] * d;
        for a in b..m {
            let ca = &c[a * k1..(a + 1) * k1];
            let mut v = 0.0;
            for r in 0..k1 {
                v += ca[r] * cb[r];
            }
            s[base + idx[a]] -= v;
        }
    }
}

/// Applies `S -= sum_j C_j' C_j` for the levels of the current group and
/// empties it.
fn flush_update(d: usize, ws: &mut Workspace) {
    let ch = &mut ws.chunk;
    if ch.is_empty() {
        return;
    }
    let k1 = ch.k1;
    if ch.levels.len() == 1 || ch.ucols.len() > MAX_UNION && ch.levels.len() <= 2 {
        for &(_, m, off) in &ch.levels {
            let c = &ch.lc[off * k1..(off + m) * k1];
            scalar_update(&mut ws.s, d, k1, c, &ch.li[off..off + m]);
        }
        ch.clear();
        return;
    }
    let nu = ch.sort_union(d);
    let rows = ch.rows;
    let cs = MatRef::from_column_major_slice(&ch.cs, rows, nu);
    let lo = ch.sorted[0];
    if ch.sorted[nu - 1] - lo + 1 == nu {
        let sm = MatMut::from_column_major_slice_mut(&mut ws.s, d, d);
        let dst = sm.submatrix_mut(lo, lo, nu, nu);
        sub_gram_lower(dst, cs);
    } else {
        ch.tmp.clear();
        ch.tmp.resize(nu * nu, 0.0);
        let t = MatMut::from_column_major_slice_mut(&mut ch.tmp, nu, nu);
        tri_matmul(
            t,
            BlockStructure::TriangularLower,
            Accum::Replace,
            cs.transpose(),
            BlockStructure::Rectangular,
            cs,
            BlockStructure::Rectangular,
            1.0,
            Par::Seq,
        );
        for b in 0..nu {
            let cb = ch.sorted[b];
            for a in b..nu {
                ws.s[cb * d + ch.sorted[a]] -= ch.tmp[b * nu + a];
            }
        }
    }
    ch.clear();
}

fn pivot_error(index: usize, q2: usize, p: usize) -> LmmError {
    if index < q2 {
        LmmError::NotPositiveDefinite(format!(
            "random-effects block not positive definite at column {index}"
        ))
    } else if index < q2 + p {
        LmmError::NotPositiveDefinite(format!(
            "fixed-effects model matrix is rank deficient (column {} is collinear with earlier \
             columns given the random effects)",
            index - q2 + 1
        ))
    } else {
        LmmError::NonFinite(
            "penalised residual sum of squares is not positive (perfect fit)".into(),
        )
    }
}

/// Small dense Cholesky returning the failing pivot index, if any.
fn chol_small_index(a: &mut [f64], k: usize) -> Option<usize> {
    for j in 0..k {
        let mut dj = a[j * k + j];
        for l in 0..j {
            dj -= a[l * k + j] * a[l * k + j];
        }
        if dj.is_nan() || dj <= 0.0 {
            return Some(j);
        }
        let ljj = dj.sqrt();
        a[j * k + j] = ljj;
        for i in (j + 1)..k {
            let mut v = a[j * k + i];
            for l in 0..j {
                v -= a[l * k + i] * a[l * k + j];
            }
            a[j * k + i] = v / ljj;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cholesky() {
        let mut a = vec![4.0, 2.0, 2.0, 5.0];
        assert!(chol_small(&mut a, 2));
        assert!((a[0] - 2.0).abs() < 1e-15);
        assert!((a[1] - 1.0).abs() < 1e-15);
        assert!((a[3] - 2.0).abs() < 1e-15);
        let mut b = vec![1.0, 2.0, 2.0, 1.0];
        assert!(!chol_small(&mut b, 2));
        let mut c = vec![1.0, 2.0, 2.0, 1.0];
        assert_eq!(chol_small_index(&mut c, 2), Some(1));
    }
}
