//! Analytic gradient of the profiled criterion with respect to theta,
//! computed from the cross-product blocks and the factorisation that
//! [`evaluate`](crate::factor::evaluate) leaves in the workspace.
//!
//! With `A` the weighted cross-products of `[Z X]`, `T = blockdiag(Lambda, I)`
//! and `M = T' A T + blockdiag(I_q, 0)`, the criterion is
//! `log|M_P| + dof * log(r2) + const`, where `P` is the Z part (ML,
//! `dof = n`) or the Z and X parts (REML, `dof = n - p`) and `r2` the
//! penalised weighted residual sum of squares. For a theta entry at
//! position `(r, c)` of `Lambda_t` (so `dLambda` has ones at
//! `((t, l, r), (t, l, c))` for every level `l`):
//!
//! * `d log|M_P| = tr(K dM_P) = 2 tr(K T' A dT) = 2 sum_l F[(t,l,c), (t,l,r)]`
//!   with `K = M_P^{-1}` and `F = K T' A`. Only the diagonal blocks of `F`
//!   are needed, hence only the *selected inverse* of `M_P` on the block
//!   pattern of `A`: per primary level its diagonal block and its coupling
//!   to the dense part, and the dense (rest, X) inverse.
//! * `d r2 = -2 rho' W Z dLambda u` (envelope theorem: `r2` is the minimum of
//!   the penalised sum of squares over `u` and `beta`), with
//!   `Z' W rho = Z'Wy - Z'WZ b - Z'WX beta` formed from the blocks.
//!
//! For primary level `j` (factor `L_j`, `C_j = L_j^{-1} Lambda_1' B_j`,
//! `B_j = [A_1r,j Lambda_r, A_1X,j]`) and the dense inverse `K_D`:
//! `E_j = C_j K_D[idx, idx]`, `K_jD = -L_j^{-T} E_j`,
//! `K_jj = L_j^{-T} (I + E_j C_j') L_j^{-1}`; so
//! `F_jj = K_jj Lambda_1' A_11,j - L_j^{-T} E_j B_j'`, and a rest block `R`
//! receives `-sum_j E_j[:, R]' L_j^{-1} Lambda_1' A_1R,j` plus its dense part
//! `K_D[R, :] (T_D' A_D)[:, R]`.
//!
//! `E_j` comes from stacked products over groups of levels, or, for designs
//! whose levels touch scattered rest columns, from the evaluation's kept
//! `C_j` gathered by columns of `K_D` (see [`crate::scatter`]).

use crate::blocks::Blocks;
use crate::chunk::{Chunk, MAX_UNION};
use crate::error::LmmError;
use crate::factor::{lambda_t_solve, level_block, Criterion, Workspace};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};

/// Forward solve `L x = b` in place (`L` lower, `k x k` column-major).
pub(crate) fn lower_solve(l: &[f64], k: usize, b: &mut [f64]) {
    for c in 0..k {
        let v = b[c] / l[c * k + c];
        b[c] = v;
        axpy(&mut b[c + 1..k], -v, &l[c * k + c + 1..(c + 1) * k]);
    }
}

/// `y += a x`.
#[inline]
pub(crate) fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// Back solve `L' x = b` in place.
fn upper_t_solve(l: &[f64], k: usize, b: &mut [f64]) {
    for r in (0..k).rev() {
        let mut v = b[r];
        for c in (r + 1)..k {
            v -= l[r * k + c] * b[c];
        }
        b[r] = v / l[r * k + r];
    }
}

/// What the per-level part of the gradient reads.
struct Ctx<'a> {
    bl: &'a Blocks,
    /// Lambda (`lam`, `lam_off`, `lam1`) at the evaluated theta.
    ws: &'a Workspace,
    /// `[u2; beta]`.
    x: &'a [f64],
    b_rest: &'a [f64],
    reml: bool,
}

/// The per-level sums of the gradient and their scratch buffers.
struct LevelAcc {
    /// Per term: sum over levels of the diagonal blocks of F (k x k).
    f_term: Vec<Vec<f64>>,
    /// Per term: sum over levels of (Z'W rho)_(l,r) u_(l,c), k x k (r + c k).
    ru_term: Vec<Vec<f64>>,
    f_prim: Vec<f64>,
    /// Z_r' W rho, accumulated: - sum_j A_1r,j' b_j first.
    zr_rest: Vec<f64>,
    u1: Vec<f64>,
    b1: Vec<f64>,
    zr1: Vec<f64>,
    gmat: Vec<f64>,
    bmat: Vec<f64>,
    w1: Vec<f64>,
    y: Vec<f64>,
    zz: Vec<f64>,
}

impl LevelAcc {
    fn new(bl: &Blocks) -> LevelAcc {
        let k1 = bl.k1;
        let kk = k1 * k1;
        LevelAcc {
            f_term: bl.terms.iter().map(|t| vec![0.0; t.k * t.k]).collect(),
            ru_term: bl.terms.iter().map(|t| vec![0.0; t.k * t.k]).collect(),
            f_prim: vec![0.0; kk],
            zr_rest: vec![0.0; bl.q2],
            u1: vec![0.0; k1],
            b1: vec![0.0; k1],
            zr1: vec![0.0; k1],
            gmat: Vec::new(),
            bmat: Vec::new(),
            w1: vec![0.0; kk],
            y: vec![0.0; kk],
            zz: vec![0.0; kk],
        }
    }

    /// [`LevelAcc::add_level`] for every level of one scalar grouping factor
    /// (`k1 == 1`, no other factor), reading `C_j` from the stacked `g`
    /// (`g1 x (p + 1)`) and `E_j` from `eg` (`g1 x mm`) in place: the same
    /// operations in the same order, without gathering each level's numbers
    /// into buffers (a dozen one-number copies per level were most of its
    /// time).
    fn add_scalar_levels(&mut self, cx: &Ctx, g: &[f64], eg: &[f64], mm: usize) {
        let bl = cx.bl;
        let (g1, p) = (bl.g1, bl.p);
        let m = p + 1;
        let beta = &cx.x[..p];
        let lam = cx.ws.lam1[0];
        let prim = bl.prim_terms[0];
        let (mut f_prim, mut ru) = (self.f_prim[0], self.ru_term[prim][0]);
        for j in 0..g1 {
            let cj = |c: usize| g[c * g1 + j];
            let lj = cx.ws.stacked_l[j];
            // u1_j = L_j^{-T} (c_y - C_j x)
            let mut u1 = cj(m - 1);
            for (c, bc) in beta.iter().enumerate() {
                u1 += -bc * cj(c);
            }
            u1 /= lj;
            let b1 = 0.0 + lam * u1;
            // Z_1j' W rho
            let a11 = bl.a11[j];
            let a1x = &bl.a1x[j * p..(j + 1) * p];
            let mut zr1 = bl.a1y[j];
            zr1 += -b1 * a11;
            for (bc, a) in beta.iter().zip(a1x) {
                zr1 += -bc * a;
            }
            ru += zr1 * u1;
            // W1 = 1 + E C[:, :mm]'; F_jj = (W1 Y - E B') / L_j
            let w1 = 1.0 + (0..mm).map(|c| eg[c * g1 + j] * cj(c)).sum::<f64>();
            let y = (0.0 + lam * a11) / lj;
            let eb: f64 = (0..mm).map(|c| eg[c * g1 + j] * a1x[c]).sum();
            f_prim += (w1 * y - eb) / lj;
        }
        self.f_prim[0] = f_prim;
        self.ru_term[prim][0] = ru;
    }

    /// Adds primary level `j`: its factor `lj`, `C_j` (`cj`, k1 x m), its
    /// columns `idx` in the dense system and `E_j = C_j[:, :mm] K_D[idx,
    /// idx]` (`e`, k1 x mm).
    fn add_level(&mut self, cx: &Ctx, j: usize, lj: &[f64], cj: &[f64], idx: &[usize], e: &[f64]) {
        let bl = cx.bl;
        let (k1, p, q2) = (bl.k1, bl.p, bl.q2);
        let kk = k1 * k1;
        let m = idx.len();
        let nc = m - p - 1;
        let mm = nc + if cx.reml { p } else { 0 };
        let x = cx.x;
        let beta = &x[q2..q2 + p];
        let lam1 = &cx.ws.lam1[..];
        let LevelAcc {
            f_term,
            ru_term,
            f_prim,
            zr_rest,
            u1,
            b1,
            zr1,
            gmat,
            bmat,
            w1,
            y,
            zz,
        } = self;
        // u1_j = L_j^{-T} (c_y - C_j x[idx]).
        u1.copy_from_slice(&cj[(m - 1) * k1..m * k1]);
        for cc in 0..m - 1 {
            axpy(u1, -x[idx[cc]], &cj[cc * k1..(cc + 1) * k1]);
        }
        upper_t_solve(lj, k1, u1);
        for r in 0..k1 {
            let mut v = 0.0;
            for c in 0..=r {
                v += lam1[c * k1 + r] * u1[c];
            }
            b1[r] = v;
        }
        // Raw coupling and X blocks of level j.
        let r0 = bl.r_ptr[j];
        let a11 = &bl.a11[j * kk..(j + 1) * kk];
        let rdat = &bl.r_dat[r0 * k1..(r0 + nc) * k1];
        let a1x = &bl.a1x[j * k1 * p..(j + 1) * k1 * p];
        // Z_1j' W rho.
        zr1.copy_from_slice(&bl.a1y[j * k1..(j + 1) * k1]);
        for c in 0..k1 {
            axpy(zr1, -b1[c], &a11[c * k1..(c + 1) * k1]);
        }
        for cc in 0..nc {
            axpy(zr1, -cx.b_rest[idx[cc]], &rdat[cc * k1..(cc + 1) * k1]);
        }
        for c in 0..p {
            axpy(zr1, -beta[c], &a1x[c * k1..(c + 1) * k1]);
        }
        for cc in 0..nc {
            let mut v = 0.0;
            for a in 0..k1 {
                v += rdat[cc * k1 + a] * b1[a];
            }
            zr_rest[idx[cc]] -= v;
        }
        for &t in &bl.prim_terms {
            let ti = &bl.terms[t];
            let o = ti.prim_offset.unwrap_or(0);
            let k = ti.k;
            let ru = &mut ru_term[t];
            for c in 0..k {
                for r in c..k {
                    ru[c * k + r] += zr1[o + r] * u1[o + c];
                }
            }
        }
        // W1 = I + E C[:, :mm]'.
        w1.fill(0.0);
        for a in 0..k1 {
            w1[a * k1 + a] = 1.0;
        }
        if k1 == 1 && q2 == 0 {
            // One scalar grouping factor: the products below are dot
            // products (no matmul calls per level). The other designs keep
            // faer's products: a change of their summation order changed
            // the path of ill-conditioned harness cases (414, 975).
            w1[0] += e[..mm]
                .iter()
                .zip(&cj[..mm])
                .map(|(a, b)| a * b)
                .sum::<f64>();
        } else if mm > 0 {
            matmul(
                MatMut::from_column_major_slice_mut(w1, k1, k1),
                Accum::Add,
                MatRef::from_column_major_slice(e, k1, mm),
                MatRef::from_column_major_slice(&cj[..k1 * mm], k1, mm).transpose(),
                1.0,
                Par::Seq,
            );
        }
        // B_j[:, :mm] (k1 x mm): rest columns times Lambda_r, then X columns.
        bmat.clear();
        bmat.resize(k1 * mm, 0.0);
        for cc in 0..nc {
            let colr = idx[cc];
            let (t, ci) = bl.rest_col_term[colr];
            let k = bl.terms[t].k;
            let lt = &cx.ws.lam[cx.ws.lam_off[t]..cx.ws.lam_off[t] + k * k];
            let dst = &mut bmat[cc * k1..(cc + 1) * k1];
            for c2 in ci..k {
                let src = (cc - ci + c2) * k1;
                axpy(dst, lt[ci * k + c2], &rdat[src..src + k1]);
            }
        }
        if cx.reml {
            bmat[nc * k1..(nc + p) * k1].copy_from_slice(a1x);
        }
        // Y = L^{-1} Lambda_1' A_11,j.
        for c in 0..k1 {
            for r in 0..k1 {
                let mut v = 0.0;
                for l in r..k1 {
                    v += lam1[r * k1 + l] * a11[c * k1 + l];
                }
                y[c * k1 + r] = v;
            }
            lower_solve(lj, k1, &mut y[c * k1..(c + 1) * k1]);
        }
        // Z = W1 Y - E B'; F_jj = L^{-T} Z.
        if k1 == 1 && q2 == 0 {
            let eb: f64 = e[..mm].iter().zip(&bmat[..mm]).map(|(a, b)| a * b).sum();
            let z = (w1[0] * y[0] - eb) / lj[0];
            f_prim[0] += z;
        } else {
            matmul(
                MatMut::from_column_major_slice_mut(zz, k1, k1),
                Accum::Replace,
                MatRef::from_column_major_slice(w1, k1, k1),
                MatRef::from_column_major_slice(y, k1, k1),
                1.0,
                Par::Seq,
            );
            if mm > 0 {
                matmul(
                    MatMut::from_column_major_slice_mut(zz, k1, k1),
                    Accum::Add,
                    MatRef::from_column_major_slice(e, k1, mm),
                    MatRef::from_column_major_slice(bmat, k1, mm).transpose(),
                    -1.0,
                    Par::Seq,
                );
            }
            for c in 0..k1 {
                upper_t_solve(lj, k1, &mut zz[c * k1..(c + 1) * k1]);
            }
            for (fp, z) in f_prim.iter_mut().zip(zz.iter()) {
                *fp += z;
            }
        }
        // Rest blocks coupled to level j: -E[:, R]' G[:, R], G = L^{-1} Lambda_1' A_1R,j.
        if nc > 0 {
            gmat.clear();
            gmat.resize(k1 * nc, 0.0);
            lambda_t_solve(lam1, lj, k1, rdat, gmat);
            let mut cc = 0;
            while cc < nc {
                let (t, _) = bl.rest_col_term[idx[cc]];
                let k = bl.terms[t].k;
                let ft = &mut f_term[t];
                for b in 0..k {
                    for a in 0..k {
                        let mut v = 0.0;
                        for r in 0..k1 {
                            v += e[(cc + a) * k1 + r] * gmat[(cc + b) * k1 + r];
                        }
                        ft[b * k + a] -= v;
                    }
                }
                cc += k;
            }
        }
    }
}

/// Gradient of the criterion at the theta for which `evaluate` was the last
/// call on `ws` (so `ws.s` holds the dense factor and `ws.lam` Lambda).
pub(crate) fn gradient(
    bl: &Blocks,
    ws: &mut Workspace,
    crit: &Criterion,
    reml: bool,
) -> Result<Vec<f64>, LmmError> {
    let d = bl.d();
    let q2 = bl.q2;
    let p = bl.p;
    let k1 = bl.k1;
    let dd = q2 + if reml { p } else { 0 };
    let mdim = q2 + p;

    // [u2; beta] by back substitution in the dense factor.
    let mut x = vec![0.0; mdim];
    for i in (0..mdim).rev() {
        let col = &ws.s[i * d..(i + 1) * d];
        let mut v = ws.s[i * d + d - 1];
        for k in (i + 1)..mdim {
            v -= col[k] * x[k];
        }
        x[i] = v / col[i];
    }
    let beta = &x[q2..mdim];

    // K_D = (L_dd L_dd')^{-1}, the leading dd block of the dense factor.
    if ws.kd.nrows() != dd {
        ws.kd = Mat::<f64>::zeros(dd, dd);
        ws.linv = Mat::<f64>::zeros(dd, dd);
    }
    let mut kd = std::mem::replace(&mut ws.kd, Mat::zeros(0, 0));
    if dd > 0 {
        let par = if dd >= 384 { Par::rayon(0) } else { Par::Seq };
        let sm = MatRef::from_column_major_slice(&ws.s, d, d);
        crate::factor::inverse_from_factor(sm.submatrix(0, 0, dd, dd), &mut ws.linv, &mut kd, par);
    }

    // Rest random effects b_r = Lambda_r u2 (internal rest layout).
    let mut b_rest = vec![0.0; q2];
    let mut col = 0;
    while col < q2 {
        let (t, _) = bl.rest_col_term[col];
        let k = bl.terms[t].k;
        let lt = &ws.lam[ws.lam_off[t]..ws.lam_off[t] + k * k];
        for r in 0..k {
            let mut v = 0.0;
            for c in 0..=r {
                v += lt[c * k + r] * x[col + c];
            }
            b_rest[r + col] = v;
        }
        col += k;
    }

    let nt = bl.terms.len();
    let mut acc = LevelAcc::new(bl);
    let kk = k1 * k1;
    let mut e = Vec::new();
    if let Some(mut sc) = ws.scatter.take() {
        // Column-oriented: the evaluation's C_j and L_j, E by columns of K_D.
        let cx = Ctx {
            bl,
            ws,
            x: &x,
            b_rest: &b_rest,
            reml,
        };
        sc.gather_e(bl, reml, |b| kd.col_as_slice(b));
        let mut idx = Vec::new();
        for j in 0..bl.g1 {
            let r0 = bl.r_ptr[j];
            let nc = bl.r_ptr[j + 1] - r0;
            let m = nc + p + 1;
            let mm = nc + if reml { p } else { 0 };
            idx.clear();
            idx.extend((0..m).map(|a| crate::scatter::level_col(bl, j, a)));
            let cj = &sc.c[k1 * sc.off[j]..k1 * sc.off[j + 1]];
            e.clear();
            e.resize(k1 * mm, 0.0);
            for cc in 0..nc {
                let t = sc.csr_to_csc[r0 + cc];
                e[cc * k1..(cc + 1) * k1].copy_from_slice(&sc.e[t * k1..(t + 1) * k1]);
            }
            if k1 == 1 && mm > nc {
                // e[c] = sum_a K[idx_a, X_c] c_a for all X columns at once:
                // by the exact symmetry of K, row idx_a of its X columns is
                // a contiguous piece of column idx_a; every sum keeps its
                // order (a = 0, 1, ...) and its first value
                let ex = &mut e[nc..mm];
                ex.fill(std::iter::empty::<f64>().sum());
                for (&i, v) in idx[..mm].iter().zip(cj) {
                    let krow = &kd.col_as_slice(i)[q2..q2 + ex.len()];
                    for (acc, k) in ex.iter_mut().zip(krow) {
                        *acc += k * v;
                    }
                }
            }
            for c in nc..mm {
                if k1 == 1 {
                    continue;
                }
                let kb = kd.col_as_slice(q2 + c - nc);
                let eb = &mut e[c * k1..(c + 1) * k1];
                for a in 0..mm {
                    axpy(eb, kb[idx[a]], &cj[a * k1..(a + 1) * k1]);
                }
            }
            acc.add_level(&cx, j, &sc.l[j * kk..(j + 1) * kk], cj, &idx, &e);
        }
        ws.scatter = Some(sc);
    } else if q2 == 0 {
        // One grouping factor: the evaluation's stacked C_j and L_j, and
        // E = G[:, :mm] K_D for all levels by one product.
        let rows = k1 * bl.g1;
        let p1 = p + 1;
        let mm = if reml { p } else { 0 };
        let g = &ws.stacked_c;
        let mut eg = vec![0.0; rows * mm];
        if mm > 0 {
            matmul(
                MatMut::from_column_major_slice_mut(&mut eg, rows, mm),
                Accum::Replace,
                MatRef::from_column_major_slice(&g[..rows * mm], rows, mm),
                kd.as_ref(),
                1.0,
                Par::Seq,
            );
        }
        let cx = Ctx {
            bl,
            ws,
            x: &x,
            b_rest: &b_rest,
            reml,
        };
        if k1 == 1 {
            acc.add_scalar_levels(&cx, g, &eg, mm);
        } else {
            let idx: Vec<usize> = (0..p1).collect();
            let mut cj = vec![0.0; k1 * p1];
            e.resize(k1 * mm, 0.0);
            for j in 0..bl.g1 {
                let o = j * k1;
                for c in 0..p1 {
                    cj[c * k1..(c + 1) * k1].copy_from_slice(&g[c * rows + o..c * rows + o + k1]);
                }
                for c in 0..mm {
                    e[c * k1..(c + 1) * k1].copy_from_slice(&eg[c * rows + o..c * rows + o + k1]);
                }
                acc.add_level(&cx, j, &ws.stacked_l[j * kk..(j + 1) * kk], &cj, &idx, &e);
            }
        }
    } else {
        let mut chunk = std::mem::replace(&mut ws.chunk, Chunk::new(0, 0));
        chunk.clear();
        let mut kg = Vec::new();
        let mut ec = Vec::new();
        let mut next = 0;
        let mut pending = false;
        while next < bl.g1 || !chunk.is_empty() {
            if next < bl.g1 {
                let (m, _) = level_block(bl, ws, next)?;
                if chunk.accepts(&ws.idx[..m]) {
                    chunk.push(next, &ws.m[..kk], &ws.c[..k1 * m], &ws.idx[..m]);
                    next += 1;
                    continue;
                }
                pending = true;
            }
            // E_j = C_j K_D[idx, idx] for the whole group by one product.
            let nu = chunk.sort_union(dd);
            let rows = chunk.rows;
            let stacked = chunk.levels.len() > 1 && nu > 0 && nu <= MAX_UNION;
            if stacked {
                kg.clear();
                kg.resize(nu * nu, 0.0);
                for (b, &cb) in chunk.sorted.iter().enumerate() {
                    for (a, &ca) in chunk.sorted.iter().enumerate() {
                        kg[b * nu + a] = kd[(ca, cb)];
                    }
                }
                ec.clear();
                ec.resize(rows * nu, 0.0);
                matmul(
                    MatMut::from_column_major_slice_mut(&mut ec, rows, nu),
                    Accum::Replace,
                    MatRef::from_column_major_slice(&chunk.cs, rows, nu),
                    MatRef::from_column_major_slice(&kg, nu, nu),
                    1.0,
                    Par::Seq,
                );
            }
            let cx = Ctx {
                bl,
                ws,
                x: &x,
                b_rest: &b_rest,
                reml,
            };
            for (li, &(j, m, off)) in chunk.levels.iter().enumerate() {
                let nc = m - p - 1;
                let mm = nc + if reml { p } else { 0 };
                let lj = &chunk.lm[li * kk..(li + 1) * kk];
                let cj = &chunk.lc[off * k1..(off + m) * k1];
                let idx = &chunk.li[off..off + m];
                // E = C[:, :mm] K_D[idx, idx] (k1 x mm).
                e.clear();
                e.resize(k1 * mm, 0.0);
                if stacked {
                    for b in 0..mm {
                        let src = chunk.spos[idx[b]] * rows + li * k1;
                        e[b * k1..(b + 1) * k1].copy_from_slice(&ec[src..src + k1]);
                    }
                } else {
                    for b in 0..mm {
                        let kb = idx[b];
                        let eb = &mut e[b * k1..(b + 1) * k1];
                        for a in 0..mm {
                            let kab = kd[(idx[a], kb)];
                            if kab == 0.0 {
                                continue;
                            }
                            axpy(eb, kab, &cj[a * k1..(a + 1) * k1]);
                        }
                    }
                }
                acc.add_level(&cx, j, lj, cj, idx, &e);
            }
            chunk.clear();
            if pending {
                let m = ws
                    .idx
                    .len()
                    .min(bl.r_ptr[next + 1] - bl.r_ptr[next] + p + 1);
                chunk.push(next, &ws.m[..kk], &ws.c[..k1 * m], &ws.idx[..m]);
                next += 1;
                pending = false;
            }
        }
        ws.chunk = chunk;
    }
    let LevelAcc {
        mut f_term,
        mut ru_term,
        f_prim,
        mut zr_rest,
        ..
    } = acc;
    for &t in &bl.prim_terms {
        let ti = &bl.terms[t];
        let o = ti.prim_offset.unwrap_or(0);
        let k = ti.k;
        for c in 0..k {
            for r in 0..k {
                f_term[t][c * k + r] = f_prim[(o + c) * k1 + o + r];
            }
        }
    }

    // Rest blocks: Z_r' W rho and the dense part K_D[R, :] (T_D' A_D)[:, R].
    let a = MatRef::from_column_major_slice(&bl.dense, d, d);
    let mut at = vec![0.0; dd];
    // Lambda_r's diagonal where every rest term is scalar.
    let lam_diag: Vec<f64> = if bl.rest_all_k1 {
        (0..q2)
            .map(|m| ws.lam[ws.lam_off[bl.rest_col_term[m].0]])
            .collect()
    } else {
        Vec::new()
    };
    let mut col = 0;
    while col < q2 {
        let (t, _) = bl.rest_col_term[col];
        let k = bl.terms[t].k;
        for c in 0..k {
            let cr = col + c;
            let acol = &bl.dense[cr * d..cr * d + q2];
            let mut v = a[(q2 + p, cr)];
            for (u, w) in acol.iter().zip(&b_rest) {
                v -= u * w;
            }
            for c2 in 0..p {
                v -= a[(q2 + c2, cr)] * beta[c2];
            }
            zr_rest[cr] += v;
        }
        {
            let ru = &mut ru_term[t];
            for c in 0..k {
                for r in c..k {
                    ru[c * k + r] += zr_rest[col + r] * x[col + c];
                }
            }
        }
        for b in 0..k {
            let cb = col + b;
            // at = (T_D' A_D)[:dd, cb]
            let acol = &bl.dense[cb * d..cb * d + dd];
            let mut m = 0;
            if bl.rest_all_k1 {
                for (m, (o, av)) in at[..q2].iter_mut().zip(acol).enumerate() {
                    *o = lam_diag[m] * av;
                }
                m = q2;
            }
            while m < q2 {
                let (t2, _) = bl.rest_col_term[m];
                let k2 = bl.terms[t2].k;
                let l2 = &ws.lam[ws.lam_off[t2]..ws.lam_off[t2] + k2 * k2];
                for r in 0..k2 {
                    let mut v = 0.0;
                    for c2 in r..k2 {
                        v += l2[r * k2 + c2] * a[(m + c2, cb)];
                    }
                    at[m + r] = v;
                }
                m += k2;
            }
            for r in q2..dd {
                at[r] = a[(r, cb)];
            }
            let ft = &mut f_term[t];
            for aa in 0..k {
                let ra = col + aa;
                let v: f64 = kd.col_as_slice(ra)[..dd]
                    .iter()
                    .zip(&at)
                    .map(|(u, w)| u * w)
                    .sum();
                ft[b * k + aa] += v;
            }
        }
        col += k;
    }

    ws.kd = kd;
    // Assemble: 2 F[c, r] + dof * (-2 sum_l rho_(l,r) u_(l,c)) / r2.
    let n = bl.n as f64;
    let dof = if reml { n - p as f64 } else { n };
    let r2 = crit.pwrss;
    let mut g = Vec::new();
    for t in 0..nt {
        let k = bl.terms[t].k;
        for c in 0..k {
            for r in c..k {
                let ld = 2.0 * f_term[t][r * k + c];
                let dr2 = -2.0 * ru_term[t][c * k + r];
                g.push(ld + dof * dr2 / r2);
            }
        }
    }
    if g.iter().any(|v| !v.is_finite()) {
        return Err(LmmError::NonFinite("gradient is not finite".into()));
    }
    Ok(g)
}
