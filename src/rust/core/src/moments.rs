//! Random-effects-space moments of a kept model for small-sample inference
//! (Satterthwaite, Kenward-Roger), from the model's cross-product blocks and
//! its factorisation: no rows are read again and no dense `q x q` matrix is
//! formed.
//!
//! Notation (unit residual variance): `C = Z'WZ`, `A = Lambda' C Lambda + I`
//! (the penalised system the fit factorises), `S0 = (W^-1 + Z D Z')^-1 =
//! W - W Z Lambda A^-1 Lambda' Z' W` with `D = Lambda Lambda'`, so
//! `M = Z' S0 Z = C - C Lambda A^-1 Lambda' C`, `N = Z' S0 X`,
//! `v = Z' P0 y` (`P0 = S0 - S0 X (X'S0X)^-1 X'S0`), `Phi0 = (X'S0X)^-1`.
//!
//! Every direction of `Sigma` that Satterthwaite and Kenward-Roger need is a
//! linear combination of the *basis* directions `Z E_i Z'` (one per
//! covariance element of a term, in theta order: `E_i` has ones at `(a, b)`
//! and `(b, a)` of the term's `k x k` block at every level) and of `Sigma`
//! itself, so the moments below, for the basis, are all they need:
//! `tr(E_i M)`, `N'E_i N`, `N'E_i v`, `v'E_i v`, `tr(E_i M E_j M)`,
//! `N'E_i M E_j N`, `v'E_i M E_j v`.
//!
//! `M B` for a block `B` of columns is `C B - C Lambda A^-1 Lambda' C B`:
//! `C` from the blocks (block diagonal over the primary levels, sparse
//! coupling, dense rest block), `A^-1` by the fit's blocked factor (per
//! level `L_j`, coupling `L_j^-1 A_1r,j`, and the dense rest factor `L22`,
//! BLAS-3 on panels). `tr(E_i M E_j M)` is accumulated panel by panel of
//! columns of `M` (all columns, `q` at most a panel at a time); a model with
//! one grouping factor (block diagonal `M`) is done level by level.

use crate::blocks::Blocks;
use crate::error::LmmError;
use crate::factor::{level_block, Criterion, Workspace};
use crate::precondition::{solve_upper, Preconditioned};
use crate::scatter::Scatter;
use crate::solve::dense_solution;
use faer::linalg::matmul::matmul;
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::{Accum, Mat, MatMut, MatRef, Par};

/// Widest block of columns `M` is applied to at once.
const PANEL_MAX: usize = 256;

/// Moments of the random-effects space at one theta (see the module
/// documentation), at unit residual variance, in the units of the user's `X`
/// and `y`. Basis element `i` is `basis[i] = (term, a, b)` with `a >= b`.
#[derive(Debug, Clone)]
pub struct InferenceMoments {
    /// Observations the criterion counts.
    pub n: usize,
    pub p: usize,
    /// Per term: `k` and `Lambda_t` (`k x k` lower triangular).
    pub lambda: Vec<Mat<f64>>,
    /// The basis, in theta order.
    pub basis: Vec<(usize, usize, usize)>,
    /// GLS estimate of beta at theta.
    pub beta: Vec<f64>,
    /// `X' S0 X`.
    pub xsx: Mat<f64>,
    /// `(X' S0 X)^-1`.
    pub phi: Mat<f64>,
    /// `y' P0 y`.
    pub ypy: f64,
    /// `tr(E_i M)`.
    pub tr_m: Vec<f64>,
    /// `N' E_i N` (`p x p`).
    pub nen: Vec<Mat<f64>>,
    /// `N' E_i v` (`p x 1`).
    pub nev: Vec<Mat<f64>>,
    /// `v' E_i v`.
    pub vev: Vec<f64>,
    /// `tr(E_i M E_j M)` (`nb x nb`).
    pub tr_mm: Mat<f64>,
    /// `N' E_i M E_j N` at `i * nb + j` (`p x p`).
    pub nmn: Vec<Mat<f64>>,
    /// `v' E_i M E_j v` (`nb x nb`).
    pub vmv: Mat<f64>,
}

/// The fit's blocked factor of `A` at one theta, kept for repeated solves.
struct Factor<'a> {
    bl: &'a Blocks,
    q1: usize,
    q: usize,
    /// Per term `Lambda_t`, `k x k` column-major.
    lam: Vec<Vec<f64>>,
    /// Per primary level `L_j`, `k1 x k1` column-major.
    lj: Vec<f64>,
    /// Per primary level `L_j^-1 A_1r,j`, `k1 x nc_j` at `k1 * r_ptr[j]`.
    cr: Vec<f64>,
    /// Dense rest factor `L22` (lower, `q2 x q2`).
    l22: Mat<f64>,
    par: Par,
}

fn l_solve(l: &[f64], k: usize, x: &mut [f64]) {
    for c in 0..k {
        let v = x[c] / l[c * k + c];
        x[c] = v;
        for r in (c + 1)..k {
            x[r] -= v * l[c * k + r];
        }
    }
}

fn lt_solve(l: &[f64], k: usize, x: &mut [f64]) {
    for r in (0..k).rev() {
        let mut v = x[r];
        for c in (r + 1)..k {
            v -= l[r * k + c] * x[c];
        }
        x[r] = v / l[r * k + r];
    }
}

impl<'a> Factor<'a> {
    /// `ws` must hold the factorisation at theta (`evaluate` was the last
    /// call on it).
    fn new(bl: &'a Blocks, ws: &mut Workspace) -> Result<Factor<'a>, LmmError> {
        let k1 = bl.k1;
        let kk = k1 * k1;
        let q1 = bl.g1 * k1;
        let q2 = bl.q2;
        let d = bl.d();
        let lam = bl
            .terms
            .iter()
            .enumerate()
            .map(|(t, ti)| ws.lam[ws.lam_off[t]..ws.lam_off[t] + ti.k * ti.k].to_vec())
            .collect();
        let mut l22 = Mat::<f64>::zeros(q2, q2);
        for c in 0..q2 {
            for r in c..q2 {
                l22[(r, c)] = ws.s[c * d + r];
            }
        }
        let mut lj = vec![0.0; bl.g1 * kk];
        let mut cr = vec![0.0; k1 * bl.r_cols.len()];
        for j in 0..bl.g1 {
            level_block(bl, ws, j)?;
            let r0 = bl.r_ptr[j];
            let nc = bl.r_ptr[j + 1] - r0;
            lj[j * kk..(j + 1) * kk].copy_from_slice(&ws.m[..kk]);
            cr[k1 * r0..k1 * (r0 + nc)].copy_from_slice(&ws.c[..k1 * nc]);
        }
        Ok(Factor {
            bl,
            q1,
            q: q1 + q2,
            lam,
            lj,
            cr,
            l22,
            par: if q2 >= 384 { Par::rayon(0) } else { Par::Seq },
        })
    }

    /// First row of level `l` of term `t` in the internal layout (primary
    /// levels' blocks, then the rest columns).
    fn start(&self, t: usize, l: usize) -> usize {
        let ti = &self.bl.terms[t];
        match ti.prim_offset {
            Some(o) => l * self.bl.k1 + o,
            None => self.q1 + ti.rest_offset.unwrap_or(0) + l * ti.k,
        }
    }

    /// `x <- Lambda' x` (`x` is `q x b` column-major).
    fn lt_apply(&self, x: &mut [f64], b: usize) {
        let q = self.q;
        for (t, ti) in self.bl.terms.iter().enumerate() {
            let k = ti.k;
            let lt = &self.lam[t];
            for l in 0..ti.n_levels {
                let s = self.start(t, l);
                for col in 0..b {
                    let xc = &mut x[col * q + s..col * q + s + k];
                    for r in 0..k {
                        let mut v = 0.0;
                        for c in r..k {
                            v += lt[r * k + c] * xc[c];
                        }
                        xc[r] = v;
                    }
                }
            }
        }
    }

    /// `x <- Lambda x`.
    fn l_apply(&self, x: &mut [f64], b: usize) {
        let q = self.q;
        for (t, ti) in self.bl.terms.iter().enumerate() {
            let k = ti.k;
            let lt = &self.lam[t];
            for l in 0..ti.n_levels {
                let s = self.start(t, l);
                for col in 0..b {
                    let xc = &mut x[col * q + s..col * q + s + k];
                    for r in (0..k).rev() {
                        let mut v = 0.0;
                        for c in 0..=r {
                            v += lt[c * k + r] * xc[c];
                        }
                        xc[r] = v;
                    }
                }
            }
        }
    }

    /// `x <- A^-1 x` with the blocked factor.
    fn solve_a(&self, x: &mut [f64], b: usize) {
        let bl = self.bl;
        let (q, q1, k1) = (self.q, self.q1, bl.k1);
        let kk = k1 * k1;
        for col in 0..b {
            let xc = &mut x[col * q..(col + 1) * q];
            let (x1, x2) = xc.split_at_mut(q1);
            for j in 0..bl.g1 {
                let y = &mut x1[j * k1..(j + 1) * k1];
                if y.iter().all(|v| *v == 0.0) {
                    continue;
                }
                l_solve(&self.lj[j * kk..(j + 1) * kk], k1, y);
                let r0 = bl.r_ptr[j];
                for cc in 0..bl.r_ptr[j + 1] - r0 {
                    let cv = &self.cr[(r0 + cc) * k1..(r0 + cc + 1) * k1];
                    let mut v = 0.0;
                    for a in 0..k1 {
                        v += cv[a] * y[a];
                    }
                    x2[bl.r_cols[r0 + cc]] -= v;
                }
            }
        }
        let q2 = bl.q2;
        if q2 > 0 {
            let xm = MatMut::from_column_major_slice_mut(x, q, b);
            let mut x2 = xm.submatrix_mut(q1, 0, q2, b);
            solve_lower_triangular_in_place(self.l22.as_ref(), x2.as_mut(), self.par);
            solve_upper_triangular_in_place(self.l22.transpose(), x2, self.par);
        }
        for col in 0..b {
            let xc = &mut x[col * q..(col + 1) * q];
            let (x1, x2) = xc.split_at_mut(q1);
            for j in 0..bl.g1 {
                let y = &mut x1[j * k1..(j + 1) * k1];
                let r0 = bl.r_ptr[j];
                for cc in 0..bl.r_ptr[j + 1] - r0 {
                    let xv = x2[bl.r_cols[r0 + cc]];
                    if xv == 0.0 {
                        continue;
                    }
                    let cv = &self.cr[(r0 + cc) * k1..(r0 + cc + 1) * k1];
                    for a in 0..k1 {
                        y[a] -= cv[a] * xv;
                    }
                }
                lt_solve(&self.lj[j * kk..(j + 1) * kk], k1, y);
            }
        }
    }

    /// `C x` (`C = Z'WZ` from the blocks).
    fn apply_c(&self, x: &[f64], b: usize) -> Vec<f64> {
        let bl = self.bl;
        let (q, q1, q2, k1) = (self.q, self.q1, bl.q2, bl.k1);
        let kk = k1 * k1;
        let mut out = vec![0.0; q * b];
        let rest_nonzero =
            (0..b).any(|col| x[col * q + q1..(col + 1) * q].iter().any(|v| *v != 0.0));
        for col in 0..b {
            let xc = &x[col * q..(col + 1) * q];
            let oc = &mut out[col * q..(col + 1) * q];
            let (o1, o2) = oc.split_at_mut(q1);
            for j in 0..bl.g1 {
                let x1 = &xc[j * k1..(j + 1) * k1];
                let y1 = &mut o1[j * k1..(j + 1) * k1];
                let r0 = bl.r_ptr[j];
                let nc = bl.r_ptr[j + 1] - r0;
                let rdat = &bl.r_dat[r0 * k1..(r0 + nc) * k1];
                if x1.iter().any(|v| *v != 0.0) {
                    let a11 = &bl.a11[j * kk..(j + 1) * kk];
                    for c in 0..k1 {
                        let xv = x1[c];
                        for r in 0..k1 {
                            y1[r] += a11[c * k1 + r] * xv;
                        }
                    }
                    for cc in 0..nc {
                        let rv = &rdat[cc * k1..(cc + 1) * k1];
                        let mut v = 0.0;
                        for a in 0..k1 {
                            v += rv[a] * x1[a];
                        }
                        o2[bl.r_cols[r0 + cc]] += v;
                    }
                }
                if rest_nonzero {
                    for cc in 0..nc {
                        let xv = xc[q1 + bl.r_cols[r0 + cc]];
                        if xv == 0.0 {
                            continue;
                        }
                        let rv = &rdat[cc * k1..(cc + 1) * k1];
                        for a in 0..k1 {
                            y1[a] += rv[a] * xv;
                        }
                    }
                }
            }
        }
        if rest_nonzero && q2 > 0 {
            let d = bl.d();
            let crr = MatRef::from_column_major_slice_with_stride(&bl.dense, q2, q2, d);
            let xr = MatRef::from_column_major_slice(x, q, b).submatrix(q1, 0, q2, b);
            let om = MatMut::from_column_major_slice_mut(&mut out, q, b);
            matmul(
                om.submatrix_mut(q1, 0, q2, b),
                Accum::Add,
                crr,
                xr,
                1.0,
                self.par,
            );
        }
        out
    }

    /// `g - C Lambda A^-1 Lambda' g`: for `g = C B` this is `M B`, for
    /// `g = Z'W X` it is `Z' S0 X`.
    fn resolve(&self, g: &[f64], b: usize) -> Vec<f64> {
        let mut x = g.to_vec();
        self.lt_apply(&mut x, b);
        self.solve_a(&mut x, b);
        self.l_apply(&mut x, b);
        let cx = self.apply_c(&x, b);
        g.iter().zip(cx).map(|(a, c)| a - c).collect()
    }

    /// `M B`.
    fn apply_m(&self, bm: &[f64], b: usize) -> Vec<f64> {
        self.resolve(&self.apply_c(bm, b), b)
    }

    /// `A' E_i B` for `q x m1` `a` and `q x m2` `bm` (column-major, leading
    /// dimension `ld`, whose row 0 is internal row `base`), over the levels
    /// `levels` of the basis element's term.
    #[allow(clippy::too_many_arguments)]
    fn e_inner(
        &self,
        (t, ea, eb): (usize, usize, usize),
        a: &[f64],
        m1: usize,
        bm: &[f64],
        m2: usize,
        ld: usize,
        base: usize,
        levels: std::ops::Range<usize>,
    ) -> Mat<f64> {
        let mut out = Mat::<f64>::zeros(m1, m2);
        for l in levels {
            let s = self.start(t, l) - base;
            for c2 in 0..m2 {
                let bb = bm[c2 * ld + s + eb];
                let ba = bm[c2 * ld + s + ea];
                for c1 in 0..m1 {
                    let mut v = a[c1 * ld + s + ea] * bb;
                    if ea != eb {
                        v += a[c1 * ld + s + eb] * ba;
                    }
                    out[(c1, c2)] += v;
                }
            }
        }
        out
    }

    /// `E_i B` for a `q x m` block.
    fn apply_e(&self, (t, ea, eb): (usize, usize, usize), bm: &[f64], m: usize, out: &mut [f64]) {
        let q = self.q;
        out.fill(0.0);
        for l in 0..self.bl.terms[t].n_levels {
            let s = self.start(t, l);
            for c in 0..m {
                out[c * q + s + ea] += bm[c * q + s + eb];
                if ea != eb {
                    out[c * q + s + eb] += bm[c * q + s + ea];
                }
            }
        }
    }
}

/// The moments at the theta for which `evaluate` was the last call on `ws`
/// (with criterion `crit`), mapped back to the user's `X` and `y` through the
/// preconditioning `pre`.
pub(crate) fn moments(
    bl: &Blocks,
    ws: &mut Workspace,
    pre: &Preconditioned,
    crit: &Criterion,
) -> Result<InferenceMoments, LmmError> {
    let (p, q2, d) = (bl.p, bl.q2, bl.d());
    let k1 = bl.k1;
    // Phi0 = (L_X L_X')^-1 from the X block of the dense factor.
    let mut lx = Mat::<f64>::zeros(p, p);
    for c in 0..p {
        for r in c..p {
            lx[(r, c)] = ws.s[(q2 + c) * d + q2 + r];
        }
    }
    let xsx_q = &lx * lx.transpose();
    let mut lxinv = Mat::<f64>::identity(p, p);
    if p > 0 {
        solve_lower_triangular_in_place(lx.as_ref(), lxinv.as_mut(), Par::Seq);
    }
    let phi_q = lxinv.transpose() * &lxinv;
    let sol = dense_solution(bl, ws);
    let beta_q = &sol[q2..q2 + p];

    let f = Factor::new(bl, ws)?;
    let (q, q1) = (f.q, f.q1);
    // [Z'WQ, Z'W y~] from the blocks, then Z'S0 of it.
    let mut g = vec![0.0; q * (p + 1)];
    for j in 0..bl.g1 {
        for c in 0..p {
            for a in 0..k1 {
                g[c * q + j * k1 + a] = bl.a1x[j * k1 * p + c * k1 + a];
            }
        }
        for a in 0..k1 {
            g[p * q + j * k1 + a] = bl.a1y[j * k1 + a];
        }
    }
    for c in 0..=p {
        for r in 0..q2 {
            g[c * q + q1 + r] = bl.dense[(q2 + c) * d + r];
        }
    }
    let zs = f.resolve(&g, p + 1);
    // Back to the user's units: X = Q R, y~ = (y - X beta0) / s.
    let (rr, s) = (&pre.r, pre.scale);
    let mut n_x = vec![0.0; q * p];
    for j in 0..p {
        for k in 0..=j {
            let rkj = rr[j * p + k];
            for i in 0..q {
                n_x[j * q + i] += zs[k * q + i] * rkj;
            }
        }
    }
    let mut v = vec![0.0; q];
    for i in 0..q {
        let mut val = zs[p * q + i];
        for c in 0..p {
            val -= zs[c * q + i] * beta_q[c];
        }
        v[i] = s * val;
    }
    let rm = Mat::<f64>::from_fn(p, p, |i, j| rr[j * p + i]);
    let xsx = rm.transpose() * &xsx_q * &rm;
    // R^-1 Phi0 R^-T column by column.
    let mut phi = Mat::<f64>::zeros(p, p);
    {
        let mut tmp = Mat::<f64>::zeros(p, p);
        for j in 0..p {
            let col: Vec<f64> = (0..p).map(|i| phi_q[(i, j)]).collect();
            let sc = solve_upper(rr, p, &col);
            for i in 0..p {
                tmp[(i, j)] = sc[i];
            }
        }
        for i in 0..p {
            let row: Vec<f64> = (0..p).map(|j| tmp[(i, j)]).collect();
            let sr = solve_upper(rr, p, &row);
            for j in 0..p {
                phi[(i, j)] = sr[j];
            }
        }
    }
    let bt = solve_upper(rr, p, beta_q);
    let beta: Vec<f64> = bt
        .iter()
        .zip(&pre.beta0)
        .map(|(a, b0)| b0 + s * a)
        .collect();
    let ypy = s * s * crit.pwrss;

    let mut basis = Vec::new();
    for (t, ti) in bl.terms.iter().enumerate() {
        for c in 0..ti.k {
            for r in c..ti.k {
                basis.push((t, r, c));
            }
        }
    }
    let nb = basis.len();
    let all = |t: usize| 0..bl.terms[t].n_levels;
    let nen: Vec<Mat<f64>> = basis
        .iter()
        .map(|&e| f.e_inner(e, &n_x, p, &n_x, p, q, 0, all(e.0)))
        .collect();
    let nev: Vec<Mat<f64>> = basis
        .iter()
        .map(|&e| f.e_inner(e, &n_x, p, &v, 1, q, 0, all(e.0)))
        .collect();
    let vev: Vec<f64> = basis
        .iter()
        .map(|&e| f.e_inner(e, &v, 1, &v, 1, q, 0, all(e.0))[(0, 0)])
        .collect();

    // N'E_i M E_j N and v'E_i M E_j v: M applied to [E_j N, E_j v], a few
    // basis elements at a time.
    let mut nmn = vec![Mat::<f64>::zeros(p, p); nb * nb];
    let mut vmv = Mat::<f64>::zeros(nb, nb);
    let mut nv = n_x.clone();
    nv.extend_from_slice(&v);
    let per = (PANEL_MAX / (p + 1)).max(1);
    let mut j0 = 0;
    while j0 < nb {
        let j1 = (j0 + per).min(nb);
        let w = (j1 - j0) * (p + 1);
        let mut bmat = vec![0.0; q * w];
        for j in j0..j1 {
            let off = (j - j0) * (p + 1) * q;
            f.apply_e(basis[j], &nv, p + 1, &mut bmat[off..off + (p + 1) * q]);
        }
        let mb = f.apply_m(&bmat, w);
        for j in j0..j1 {
            let off = (j - j0) * (p + 1) * q;
            let men = &mb[off..off + p * q];
            let mev = &mb[off + p * q..off + (p + 1) * q];
            for (i, &e) in basis.iter().enumerate() {
                nmn[i * nb + j] = f.e_inner(e, &n_x, p, men, p, q, 0, all(e.0));
                vmv[(i, j)] = f.e_inner(e, &v, 1, mev, 1, q, 0, all(e.0))[(0, 0)];
            }
        }
        j0 = j1;
    }

    // tr(E_i M) and tr(E_i M E_j M) through the Schur complement.
    let mut scat = ws.scatter.take();
    let tr = traces(&f, &basis, scat.as_mut());
    ws.scatter = scat;
    let (tr_m, tr_mm) = tr?;
    let lambda = bl
        .terms
        .iter()
        .enumerate()
        .map(|(t, ti)| Mat::<f64>::from_fn(ti.k, ti.k, |r, c| f.lam[t][c * ti.k + r]))
        .collect();
    let out = InferenceMoments {
        n: bl.n,
        p,
        lambda,
        basis,
        beta,
        xsx,
        phi,
        ypy,
        tr_m,
        nen,
        nev,
        vev,
        tr_mm,
        nmn,
        vmv,
    };
    let finite = out.ypy.is_finite()
        && out.beta.iter().all(|x| x.is_finite())
        && out.tr_m.iter().all(|x| x.is_finite())
        && (0..nb).all(|i| (0..nb).all(|j| out.tr_mm[(i, j)].is_finite()));
    if !finite {
        return Err(LmmError::NonFinite(
            "the inference moments are not finite".into(),
        ));
    }
    Ok(out)
}

/// The primary-level part of [`traces`] for one scalar primary term on a
/// design whose levels touch scattered rest columns (see [`Scatter`]), with
/// `M_rr` through `S^-1`: `Omega_11,jj = u_j S^-1[cols, cols] u_j'` by
/// columns of `S^-1`; the coupling rows `M_1r,j = -u_j S^-1[cols, :]
/// Lambda_r^-1` are never formed: with `H = sum_j u_j' u_j` (sparse, by
/// columns) and `P = S^-1 H`, the primary-rest traces are the diagonal
/// blocks of `Lambda_r^-T P S^-1 Lambda_r^-1` and `tr(E Omega_11 E
/// Omega_11) = <P, P'>`: one product instead of a pass over `S^-1` per level.
#[allow(clippy::too_many_arguments)]
fn scattered_primary(
    f: &Factor,
    basis: &[(usize, usize, usize)],
    i: usize,
    rest: &[usize],
    sc: &mut Scatter,
    sinv: &Mat<f64>,
    m0jj: &[f64],
    u1: &[f64],
    tr_m: &mut [f64],
    tr_mm: &mut Mat<f64>,
) {
    let bl = f.bl;
    let (q2, d) = (bl.q2, bl.d());
    // u_j into the scatter's level buffers (rest columns; X, y zero).
    sc.c.fill(0.0);
    for j in 0..bl.g1 {
        let r0 = bl.r_ptr[j];
        let nc = bl.r_ptr[j + 1] - r0;
        let o = sc.off[j];
        sc.c[o..o + nc].copy_from_slice(&u1[r0..r0 + nc]);
    }
    sc.gather_e(bl, false, |b| sinv.col_as_slice(b));
    let (mut t1, mut t2) = (0.0, 0.0);
    for j in 0..bl.g1 {
        let r0 = bl.r_ptr[j];
        let nc = bl.r_ptr[j + 1] - r0;
        let mut om = 0.0;
        for cc in 0..nc {
            om += sc.e[sc.csr_to_csc[r0 + cc]] * u1[r0 + cc];
        }
        let m0 = m0jj[j];
        t1 += m0 - om;
        t2 += m0 * m0 - 2.0 * m0 * om;
    }
    tr_m[i] += t1;
    tr_mm[(i, i)] += t2;
    // H = sum_j u_j' u_j (update_rest subtracts: start from zero, negate).
    let mut hbuf = vec![0.0; d * d];
    sc.update_rest(bl, &mut hbuf);
    let h = Mat::<f64>::from_fn(q2, q2, |r, c| {
        if r >= c {
            -hbuf[c * d + r]
        } else {
            -hbuf[r * d + c]
        }
    });
    drop(hbuf);
    let mut pm = Mat::<f64>::zeros(q2, q2);
    matmul(
        pm.as_mut(),
        Accum::Replace,
        sinv.as_ref(),
        h.as_ref(),
        1.0,
        f.par,
    );
    drop(h);
    let mut pp = 0.0;
    for c in 0..q2 {
        for r in 0..q2 {
            pp += pm[(r, c)] * pm[(c, r)];
        }
    }
    tr_mm[(i, i)] += pp;
    // P S^-1 = S^-1 H S^-1 (symmetric): entry (r, c) = P[r, :] . S^-1[:, c].
    let pt = pm.transpose().to_owned();
    drop(pm);
    let psp = |r: usize, c: usize| -> f64 {
        pt.col_as_slice(r)
            .iter()
            .zip(sinv.col_as_slice(c))
            .map(|(a, b)| a * b)
            .sum()
    };
    for &jr in rest {
        let (tj, aj, bj) = basis[jr];
        let k = bl.terms[tj].k;
        let lt = &f.lam[tj];
        let off = bl.terms[tj].rest_offset.unwrap_or(0);
        let (sj, nj) = sym_pairs(aj, bj);
        let mut v = 0.0;
        let mut blk = vec![0.0; k * k];
        for l in 0..bl.terms[tj].n_levels {
            let s0 = off + l * k;
            for c in 0..k {
                for r in 0..k {
                    blk[c * k + r] = psp(s0 + r, s0 + c);
                }
            }
            // Q = Lambda_t^-T B Lambda_t^-1: columns, then rows.
            for r in 0..k {
                for c in (0..k).rev() {
                    let mut x = blk[c * k + r];
                    for r2 in (c + 1)..k {
                        x -= blk[r2 * k + r] * lt[c * k + r2];
                    }
                    blk[c * k + r] = x / lt[c * k + c];
                }
            }
            for c in 0..k {
                for r in (0..k).rev() {
                    let mut x = blk[c * k + r];
                    for c2 in (r + 1)..k {
                        x -= lt[r * k + c2] * blk[c * k + c2];
                    }
                    blk[c * k + r] = x / lt[r * k + r];
                }
            }
            for &(c, dd) in &sj[..nj] {
                v += blk[dd * k + c];
            }
        }
        tr_mm[(i, jr)] += v;
        tr_mm[(jr, i)] += v;
    }
}

/// `W'`, `S^-1` and `M_rr` from `S^-1` (see `traces`): `T = Lambda_r^-T (I -
/// S^-1)`, `W' = -T`, `M_rr = T Lambda_r^-1`.
fn rest_via_sinv(f: &Factor, l22: MatRef<f64>) -> (Mat<f64>, Mat<f64>, Mat<f64>) {
    let bl = f.bl;
    let q2 = bl.q2;
    let sinv = crate::factor::schur_inverse(l22, f.par);
    let mut t = Mat::<f64>::from_fn(q2, q2, |r, c| {
        if r == c {
            1.0 - sinv[(r, c)]
        } else {
            -sinv[(r, c)]
        }
    });
    // Rows: T[B, :] = Lambda_t^-T T[B, :] per rest block B.
    let mut col = 0;
    while col < q2 {
        let (tt, _) = bl.rest_col_term[col];
        let k = bl.terms[tt].k;
        let lt = &f.lam[tt];
        for c in 0..q2 {
            let x = &mut t.col_as_slice_mut(c)[col..col + k];
            for r in (0..k).rev() {
                let mut v = x[r];
                for c2 in (r + 1)..k {
                    v -= lt[r * k + c2] * x[c2];
                }
                x[r] = v / lt[r * k + r];
            }
        }
        col += k;
    }
    let wt = Mat::<f64>::from_fn(q2, q2, |r, c| -t[(r, c)]);
    // Columns: M_rr[:, B] = T[:, B] Lambda_t^-1.
    let mut mrr = t;
    let mut col = 0;
    while col < q2 {
        let (tt, _) = bl.rest_col_term[col];
        let k = bl.terms[tt].k;
        let lt = &f.lam[tt];
        for r in 0..q2 {
            for c in (0..k).rev() {
                let mut v = mrr[(r, col + c)];
                for r2 in (c + 1)..k {
                    v -= mrr[(r, col + r2)] * lt[c * k + r2];
                }
                mrr[(r, col + c)] = v / lt[c * k + c];
            }
        }
        col += k;
    }
    (wt, sinv, mrr)
}

/// `W'`, `S^-1` and `M_rr` by triangular solves with the rest factor from
/// `M0_rr` (any Lambda_r, singular included).
fn rest_via_solves(f: &Factor, l22: MatRef<f64>, m0rr: Mat<f64>) -> (Mat<f64>, Mat<f64>, Mat<f64>) {
    let bl = f.bl;
    let q2 = bl.q2;
    let mut u2t = Mat::<f64>::zeros(q2, q2);
    for col in 0..q2 {
        let (t, ci) = bl.rest_col_term[col];
        let k = bl.terms[t].k;
        let lt = &f.lam[t];
        for r in 0..q2 {
            let mut v = 0.0;
            for c2 in ci..k {
                v += m0rr[(r, col - ci + c2)] * lt[ci * k + c2];
            }
            u2t[(col, r)] = -v;
        }
    }
    let mut z2 = u2t;
    let (mut wt, mut sinv) = (Mat::zeros(0, 0), Mat::zeros(0, 0));
    let mut mrr = m0rr;
    if q2 > 0 {
        solve_lower_triangular_in_place(l22, z2.as_mut(), f.par);
        // M_rr = M0_rr - Z2' Z2, in place.
        matmul(
            mrr.as_mut(),
            Accum::Add,
            z2.transpose(),
            z2.as_ref(),
            -1.0,
            f.par,
        );
        // W = L^-T Z2 = S^-1 U2', kept transposed (rows of W contiguous).
        solve_upper_triangular_in_place(l22.transpose(), z2.as_mut(), f.par);
        wt = z2.transpose().to_owned();
        drop(z2);
        sinv = crate::factor::schur_inverse(l22, f.par);
    }
    (wt, sinv, mrr)
}

/// `(a, b)` and, off the diagonal, `(b, a)`: the non-zero entries of a basis
/// element's `k x k` block.
fn sym_pairs(a: usize, b: usize) -> ([(usize, usize); 2], usize) {
    ([(a, b), (b, a)], if a == b { 1 } else { 2 })
}

/// `tr(E_i X E_j Y)` for one pair of level blocks, with `x(b, c)` the block
/// of `X` from `E_j`'s space to `E_i`'s and `y(d, a)` the block of `Y` back.
fn pair_trace(
    (ai, bi): (usize, usize),
    (aj, bj): (usize, usize),
    x: impl Fn(usize, usize) -> f64,
    y: impl Fn(usize, usize) -> f64,
) -> f64 {
    let (si, ni) = sym_pairs(ai, bi);
    let (sj, nj) = sym_pairs(aj, bj);
    let mut v = 0.0;
    for &(a, b) in &si[..ni] {
        for &(c, d) in &sj[..nj] {
            v += x(b, c) * y(d, a);
        }
    }
    v
}

/// `tr(E_i M)` and `tr(E_i M E_j M)` without a dense `q x q` matrix.
///
/// With `P_j = L_j^-1 Lambda_1' [C_11,j, C_1r,j]` per primary level, `C`'s
/// primary part eliminated gives `M0 = C - sum_j P_j' P_j` (block diagonal on
/// the primary levels, sparse coupling, dense rest block) and
/// `M = M0 - U S^-1 U'` with `U = -M0[:, rest] Lambda_r` and `S = L22 L22'`
/// the rest Schur complement the fit factorises: a block-diagonal matrix
/// plus a correction of rank `q2`. So the primary-primary traces need only
/// `G_i = U_1' E_i U_1` (`q2 x q2`, from the sparse `U_1`):
/// `tr(E_i Omega_11 E_j Omega_11) = tr(L^-1 G_i L^-T L^-1 G_j L^-T)`; the
/// coupling rows of `M` are formed one primary level at a time and the rest
/// block densely.
fn traces(
    f: &Factor,
    basis: &[(usize, usize, usize)],
    sc: Option<&mut Scatter>,
) -> Result<(Vec<f64>, Mat<f64>), LmmError> {
    traces_with(f, basis, true, sc)
}

/// [`traces`], with the shortcut through `S^-1` allowed or not.
fn traces_with(
    f: &Factor,
    basis: &[(usize, usize, usize)],
    allow_sinv: bool,
    sc: Option<&mut Scatter>,
) -> Result<(Vec<f64>, Mat<f64>), LmmError> {
    let bl = f.bl;
    let (k1, q2, d) = (bl.k1, bl.q2, bl.d());
    let kk = k1 * k1;
    let nb = basis.len();
    let is_prim = |t: usize| bl.terms[t].prim_offset.is_some();
    let prim: Vec<usize> = (0..nb).filter(|&i| is_prim(basis[i].0)).collect();
    let rest: Vec<usize> = (0..nb).filter(|&i| !is_prim(basis[i].0)).collect();
    let poff = |t: usize| bl.terms[t].prim_offset.unwrap_or(0);
    let roff = |t: usize| bl.terms[t].rest_offset.unwrap_or(0);
    // Lambda_1' applied to the k1 rows of a local block (columns of length k1).
    let lam1_t = |x: &mut [f64]| {
        let ncol = x.len() / k1.max(1);
        for &t in &bl.prim_terms {
            let (k, o, lt) = (bl.terms[t].k, poff(t), &f.lam[t]);
            for col in 0..ncol {
                let xc = &mut x[col * k1 + o..col * k1 + o + k];
                for r in 0..k {
                    let mut v = 0.0;
                    for c in r..k {
                        v += lt[r * k + c] * xc[c];
                    }
                    xc[r] = v;
                }
            }
        }
    };
    // With Lambda_r invertible, S = Lambda_r' M0_rr Lambda_r + I gives
    // M_rr = Lambda_r^-T (I - S^-1) Lambda_r^-1 and W = S^-1 U2' = -(I -
    // S^-1) Lambda_r^-1 from S^-1 alone (three q2^3 products fewer, and no
    // M0_rr). Used where every diagonal entry of Lambda_r' M0_rr Lambda_r
    // (S_cc - 1) is at least 1e-4, so that forming I - S^-1 loses at most
    // about 1e-12 relative.
    let l22 = f.l22.as_ref();
    let via_sinv = allow_sinv && q2 > 0 && {
        let mut diag = vec![0.0; q2];
        for c in 0..q2 {
            for r in c..q2 {
                let v = l22[(r, c)];
                diag[r] += v * v;
            }
        }
        // and every rest Lambda_t with a diagonal far from singular
        let lam_ok = bl.terms.iter().enumerate().all(|(t, ti)| {
            if ti.prim_offset.is_some() {
                return true;
            }
            let lt = &f.lam[t];
            let big = lt.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            (0..ti.k).all(|c| lt[c * ti.k + c].abs() >= 1e-6 * big && big > 0.0)
        });
        lam_ok && diag.iter().all(|s| s - 1.0 >= 1e-4)
    };
    // Per level: M0_jj, M0_1r,j, U1_j; the dense M0_rr.
    let mut m0jj = vec![0.0; bl.g1 * kk];
    let mut m01r = vec![0.0; bl.r_dat.len()];
    let mut u1 = vec![0.0; bl.r_dat.len()];
    let mut m0rr = if via_sinv {
        Mat::<f64>::zeros(0, 0)
    } else {
        Mat::<f64>::from_fn(q2, q2, |r, c| bl.dense[c * d + r])
    };
    let mut pa = vec![0.0; kk];
    let mut pb = Vec::new();
    for j in 0..bl.g1 {
        let lj = &f.lj[j * kk..(j + 1) * kk];
        let a11 = &bl.a11[j * kk..(j + 1) * kk];
        let r0 = bl.r_ptr[j];
        let nc = bl.r_ptr[j + 1] - r0;
        let rdat = &bl.r_dat[r0 * k1..(r0 + nc) * k1];
        let cols = &bl.r_cols[r0..r0 + nc];
        pa.copy_from_slice(a11);
        lam1_t(&mut pa);
        for col in 0..k1 {
            l_solve(lj, k1, &mut pa[col * k1..(col + 1) * k1]);
        }
        pb.clear();
        pb.extend_from_slice(rdat);
        lam1_t(&mut pb);
        for col in 0..nc {
            l_solve(lj, k1, &mut pb[col * k1..(col + 1) * k1]);
        }
        let mj = &mut m0jj[j * kk..(j + 1) * kk];
        for c in 0..k1 {
            for r in 0..k1 {
                let mut v = a11[c * k1 + r];
                for a in 0..k1 {
                    v -= pa[r * k1 + a] * pa[c * k1 + a];
                }
                mj[c * k1 + r] = v;
            }
        }
        let m1 = &mut m01r[r0 * k1..(r0 + nc) * k1];
        for cc in 0..nc {
            for r in 0..k1 {
                let mut v = rdat[cc * k1 + r];
                for a in 0..k1 {
                    v -= pa[r * k1 + a] * pb[cc * k1 + a];
                }
                m1[cc * k1 + r] = v;
            }
        }
        if !via_sinv {
            for c2 in 0..nc {
                for c1 in 0..nc {
                    let mut v = 0.0;
                    for a in 0..k1 {
                        v += pb[c1 * k1 + a] * pb[c2 * k1 + a];
                    }
                    m0rr[(cols[c1], cols[c2])] -= v;
                }
            }
        }
        // U1_j = -M0_1r,j Lambda_r (whole rest blocks).
        let uj = &mut u1[r0 * k1..(r0 + nc) * k1];
        for cc in 0..nc {
            let (t, ci) = bl.rest_col_term[cols[cc]];
            let k = bl.terms[t].k;
            let lt = &f.lam[t];
            for r in 0..k1 {
                let mut v = 0.0;
                for c2 in ci..k {
                    v += m1[(cc - ci + c2) * k1 + r] * lt[ci * k + c2];
                }
                uj[cc * k1 + r] = -v;
            }
        }
    }
    let mut tr_m = vec![0.0; nb];
    let mut tr_mm = Mat::<f64>::zeros(nb, nb);
    // Dense rest quantities: U2 = -M0_rr Lambda_r, Z2 = L^-1 U2',
    // W = S^-1 U2', Omega_22 = U2 S^-1 U2', S^-1.
    let (wt, sinv, mrr) = if via_sinv {
        rest_via_sinv(f, l22)
    } else {
        rest_via_solves(f, l22, m0rr)
    };
    // Rest-rest traces and tr(E_i M) of rest terms, from M_rr.
    for &i in &rest {
        let (ti, ai, bi) = basis[i];
        let ki = bl.terms[ti].k;
        for l in 0..bl.terms[ti].n_levels {
            let s = roff(ti) + l * ki;
            let (si, ni) = sym_pairs(ai, bi);
            for &(a, b) in &si[..ni] {
                tr_m[i] += mrr[(s + b, s + a)];
            }
        }
        for &j in &rest {
            let (tj, aj, bj) = basis[j];
            let kj = bl.terms[tj].k;
            let mut v = 0.0;
            for l in 0..bl.terms[ti].n_levels {
                let si = roff(ti) + l * ki;
                for l2 in 0..bl.terms[tj].n_levels {
                    let sj = roff(tj) + l2 * kj;
                    v += pair_trace(
                        (ai, bi),
                        (aj, bj),
                        |b, c| mrr[(si + b, sj + c)],
                        |dd, a| mrr[(sj + dd, si + a)],
                    );
                }
            }
            tr_mm[(i, j)] = v;
        }
    }
    if let (true, 1, Some(sc)) = (via_sinv, k1, sc) {
        if prim.len() == 1 {
            scattered_primary(
                f, basis, prim[0], &rest, sc, &sinv, &m0jj, &u1, &mut tr_m, &mut tr_mm,
            );
            return Ok((tr_m, tr_mm));
        }
    }
    // Per primary level: M_jj, the coupling row block M_1r,j (dense over
    // the rest columns), their traces, and G_i = U_1' E_i U_1.
    let mut g: Vec<Mat<f64>> = prim.iter().map(|_| Mat::zeros(q2, q2)).collect();
    let mut om11 = vec![0.0; kk];
    let mut m12 = vec![0.0; k1 * q2];
    let mut tmp = Vec::new();
    for j in 0..bl.g1 {
        let r0 = bl.r_ptr[j];
        let nc = bl.r_ptr[j + 1] - r0;
        let cols = &bl.r_cols[r0..r0 + nc];
        let uj = &u1[r0 * k1..(r0 + nc) * k1];
        let m0 = &m0jj[j * kk..(j + 1) * kk];
        // Omega_11,jj = U1_j S^-1[cols, cols] U1_j'.
        om11.fill(0.0);
        if nc > 0 {
            tmp.clear();
            tmp.resize(nc * k1, 0.0);
            for c2 in 0..nc {
                for c1 in 0..nc {
                    let sv = sinv[(cols[c1], cols[c2])];
                    for a in 0..k1 {
                        tmp[a * nc + c2] += sv * uj[c1 * k1 + a];
                    }
                }
            }
            for c in 0..k1 {
                for r in 0..k1 {
                    let mut v = 0.0;
                    for cc in 0..nc {
                        v += uj[cc * k1 + r] * tmp[c * nc + cc];
                    }
                    om11[c * k1 + r] = v;
                }
            }
        }
        // M_1r,j = M0_1r,j - U1_j W[cols, :].
        m12.fill(0.0);
        if q2 > 0 {
            // W' column by column (contiguous), not W row by row.
            for cc in 0..nc {
                let wc = wt.col_as_slice(cols[cc]);
                let u = &uj[cc * k1..(cc + 1) * k1];
                if k1 == 1 {
                    let u0 = u[0];
                    for (o, wv) in m12.iter_mut().zip(wc) {
                        *o -= u0 * wv;
                    }
                    continue;
                }
                for (col, wv) in wc.iter().enumerate() {
                    let o = &mut m12[col * k1..(col + 1) * k1];
                    for a in 0..k1 {
                        o[a] -= u[a] * wv;
                    }
                }
            }
            let m1 = &m01r[r0 * k1..(r0 + nc) * k1];
            for cc in 0..nc {
                for a in 0..k1 {
                    m12[cols[cc] * k1 + a] += m1[cc * k1 + a];
                }
            }
        }
        for (pi, &i) in prim.iter().enumerate() {
            let (ti, ai, bi) = basis[i];
            let oi = poff(ti);
            let (si, ni) = sym_pairs(ai, bi);
            for &(a, b) in &si[..ni] {
                tr_m[i] += m0[(oi + a) * k1 + oi + b] - om11[(oi + a) * k1 + oi + b];
            }
            for &jj in &prim {
                let (tj, aj, bj) = basis[jj];
                let oj = poff(tj);
                let at = |m: &[f64], r: usize, c: usize| m[c * k1 + r];
                let v = pair_trace(
                    (ai, bi),
                    (aj, bj),
                    |b, c| at(m0, oi + b, oj + c),
                    |dd, a| at(m0, oj + dd, oi + a),
                ) - pair_trace(
                    (ai, bi),
                    (aj, bj),
                    |b, c| at(m0, oi + b, oj + c),
                    |dd, a| at(&om11, oj + dd, oi + a),
                ) - pair_trace(
                    (ai, bi),
                    (aj, bj),
                    |b, c| at(&om11, oi + b, oj + c),
                    |dd, a| at(m0, oj + dd, oi + a),
                );
                tr_mm[(i, jj)] += v;
            }
            for &jr in &rest {
                let (tj, aj, bj) = basis[jr];
                let kj = bl.terms[tj].k;
                let mut v = 0.0;
                for l in 0..bl.terms[tj].n_levels {
                    let sj = roff(tj) + l * kj;
                    v += pair_trace(
                        (ai, bi),
                        (aj, bj),
                        |b, c| m12[(sj + c) * k1 + oi + b],
                        |dd, a| m12[(sj + dd) * k1 + oi + a],
                    );
                }
                tr_mm[(i, jr)] += v;
                tr_mm[(jr, i)] += v;
            }
            // G_i[cols, cols] += U1_j' E_i U1_j.
            let gi = &mut g[pi];
            for c2 in 0..nc {
                for c1 in 0..nc {
                    let mut v = 0.0;
                    for &(a, b) in &si[..ni] {
                        v += uj[c1 * k1 + oi + a] * uj[c2 * k1 + oi + b];
                    }
                    gi[(cols[c1], cols[c2])] += v;
                }
            }
        }
    }
    // tr(E_i Omega_11 E_j Omega_11) = <L^-1 G_i L^-T, L^-1 G_j L^-T>.
    if q2 > 0 {
        for gi in g.iter_mut() {
            solve_lower_triangular_in_place(l22, gi.as_mut(), f.par);
            let mut t = gi.transpose().to_owned();
            solve_lower_triangular_in_place(l22, t.as_mut(), f.par);
            *gi = t;
        }
        for (pi, &i) in prim.iter().enumerate() {
            for (pj, &j) in prim.iter().enumerate() {
                let (a, b) = (&g[pi], &g[pj]);
                let mut v = 0.0;
                for c in 0..q2 {
                    let (ac, bc) = (a.col_as_slice(c), b.col_as_slice(c));
                    for r in 0..q2 {
                        v += ac[r] * bc[r];
                    }
                }
                tr_mm[(i, j)] += v;
            }
        }
    }
    Ok((tr_m, tr_mm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factor::evaluate;
    use crate::input::{FitInput, ReTermInput};

    /// The traces through `S^-1` (with and without the column-oriented
    /// primary part) equal those by solves with the rest factor, on a
    /// crossed design with a correlated rest term.
    #[test]
    fn traces_through_the_inverse_equal_the_solves() {
        let mut s = 11u64;
        let mut unif = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let n = 900;
        let ca: Vec<i32> = (0..n).map(|_| (unif() * 40.0) as i32).collect();
        let cb: Vec<i32> = (0..n).map(|_| (unif() * 12.0) as i32).collect();
        let cc: Vec<i32> = (0..n).map(|_| (unif() * 5.0) as i32).collect();
        let xc: Vec<f64> = (0..n).map(|_| unif() - 0.5).collect();
        let mut x = vec![1.0; n];
        x.extend_from_slice(&xc);
        let z = x.clone();
        let ones = vec![1.0; n];
        let y: Vec<f64> = (0..n)
            .map(|i| xc[i] + unif() + cb[i] as f64 * 0.1)
            .collect();
        let input = FitInput {
            n,
            p: 2,
            x: &x,
            y: &y,
            weights: &[],
            terms: vec![
                ReTermInput {
                    codes: &ca,
                    n_levels: 40,
                    z: &ones,
                    k: 1,
                    factor_id: 0,
                },
                ReTermInput {
                    codes: &cb,
                    n_levels: 12,
                    z: &z,
                    k: 2,
                    factor_id: 1,
                },
                ReTermInput {
                    codes: &cc,
                    n_levels: 5,
                    z: &ones,
                    k: 1,
                    factor_id: 2,
                },
            ],
        };
        let bl = Blocks::build(&input).unwrap();
        let mut ws = Workspace::new(&bl);
        ws.set_theta(&bl, &[0.7, 0.9, -0.3, 0.5, 1.1]);
        evaluate(&bl, &mut ws, true).unwrap();
        let f = Factor::new(&bl, &mut ws).unwrap();
        let mut basis = Vec::new();
        for (t, ti) in bl.terms.iter().enumerate() {
            for c in 0..ti.k {
                for r in c..ti.k {
                    basis.push((t, r, c));
                }
            }
        }
        let (a1, b1) = traces_with(&f, &basis, true, None).unwrap();
        let (a2, b2) = traces_with(&f, &basis, false, None).unwrap();
        let mut sc = Scatter::build(&bl, 2);
        let (a3, b3) = traces_with(&f, &basis, true, Some(&mut sc)).unwrap();
        for (a, b) in [(&a1, &b1), (&a3, &b3)] {
            for (u, v) in a.iter().zip(&a2) {
                assert!((u - v).abs() <= 1e-10 * (1.0 + v.abs()), "{a:?} vs {a2:?}");
            }
            for i in 0..basis.len() {
                for j in 0..basis.len() {
                    let (u, v) = (b[(i, j)], b2[(i, j)]);
                    assert!(
                        (u - v).abs() <= 1e-10 * (1.0 + v.abs()),
                        "({i}, {j}): {u} vs {v}"
                    );
                }
            }
        }
    }
}
