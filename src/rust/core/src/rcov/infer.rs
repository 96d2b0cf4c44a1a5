//! Satterthwaite and Kenward-Roger ingredients of a residual-structure fit,
//! computed on the same per-cluster kernels as the criterion.
//!
//! The covariance parameters are SAS's (PROC MIXED) parametrisation: per
//! group the structure's natural parameters (variances, covariances,
//! correlations; see `natural_maps`), then each random-effect term's
//! covariance entries (lower triangle by column). In these parameters UN,
//! CS, TOEP and the random-effect covariances are linear, so their second
//! derivatives vanish, as in SAS.
//!
//! With `P_r = X'V^-1 V_r V^-1 X`, `Q_rs = X'V^-1 V_r V^-1 V_s V^-1 X`,
//! `R_rs = X'V^-1 V_rs V^-1 X`, `Phi = (X'V^-1X)^-1`, `e = V^-1 (y - X beta)`
//! the observed Hessian of -2 log L(REML) is
//! `H_rs = -tr(V^-1V_rV^-1V_s) + 2 tr(Phi Q_rs) - tr(Phi P_r Phi P_s)
//!        + tr(V^-1 V_rs) - tr(Phi R_rs) + 2 (e'V_rV^-1V_s e - g_r'Phi g_s)
//!        - e'V_rs e` (g_r = X'V^-1V_r e; ML drops the Phi terms), `W = 2 H^-1`,
//! and Kenward-Roger's adjusted covariance is
//! `Phi + 2 Phi (sum_rs W_rs (Q_rs - P_r Phi P_s - R_rs / 4)) Phi`.
//!
//! Blocks: a cluster (rows of one top-level unit: `V_c` dense, its
//! derivatives sparse), or, without random effects, all subjects with one
//! visit pattern and group, which share `V`: their data enter only through
//! the second moments `S_uv = sum_i W_i[, u] W_i[, v]'` of `W_i = [X_i y_i]`,
//! so a pattern costs the same whatever its number of subjects.

use super::{
    backward_solve, chol_in_place, distance, evaluate, forward_solve, new_work, validate, CovType,
    Layout, RcovInput, Work,
};
use crate::LmmError;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::linalg::matmul::matmul as faer_matmul;
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::{Accum, Mat, MatMut, MatRef, Par};

/// Largest number of doubles kept for the derivative matrices of one block.
const BLOCK_BUDGET: usize = 40_000_000;

/// Result of [`rcov_inference`].
#[derive(Clone, Debug)]
pub struct RcovInference {
    /// Number of covariance parameters.
    pub k: usize,
    /// Number of fixed effects.
    pub p: usize,
    /// Covariance parameters (SAS's parametrisation).
    pub phi: Vec<f64>,
    /// (X'V^-1X)^-1, column-major p x p.
    pub vcov_beta: Vec<f64>,
    /// Observed Hessian of the criterion (-2 log L) in `phi`, k x k.
    pub hessian: Vec<f64>,
    /// `2 H^-1` (asymptotic covariance of `phi`); `None` if H is singular.
    pub w: Option<Vec<f64>>,
    /// `P_r`, k matrices p x p after each other.
    pub p_list: Vec<f64>,
    /// `d Phi / d phi_r = -Phi P_r Phi`'s negative, i.e. `Phi P_r Phi`.
    pub jacobian: Vec<f64>,
    /// Kenward-Roger adjusted covariance of beta (if asked for and W exists).
    pub vcov_adj: Option<Vec<f64>>,
}

/// Derivative maps of one group's m x m matrix in its natural parameters.
struct GroupMaps {
    /// npg first derivatives (m x m each).
    d1: Vec<Vec<f64>>,
    /// npg x npg second derivatives (None: identically zero).
    d2: Vec<Option<Vec<f64>>>,
    /// Pairs (a, b) with a nonzero second derivative.
    pairs: Vec<(usize, usize)>,
    /// Natural parameters.
    phi: Vec<f64>,
    /// sp_exp: variance and range.
    sp: (f64, f64),
}

fn correlation_parts(v: &[f64], m: usize) -> (Vec<f64>, Vec<f64>) {
    let sd: Vec<f64> = (0..m).map(|i| v[i + i * m].sqrt()).collect();
    let mut r = vec![0.0; m * m];
    for j in 0..m {
        for i in 0..m {
            r[i + j * m] = v[i + j * m] / (sd[i] * sd[j]);
        }
    }
    (sd, r)
}

/// Natural parameters of one group's matrix and the derivative maps.
fn natural_maps(ct: CovType, m: usize, v: &[f64]) -> GroupMaps {
    let mm = m * m;
    let npg = ct.n_par(m);
    let mut d1 = vec![vec![0.0; mm]; npg];
    let mut d2: Vec<Option<Vec<f64>>> = vec![None; npg * npg];
    let mut phi = Vec::with_capacity(npg);
    let lag = |i: usize, j: usize| i.abs_diff(j);
    match ct {
        CovType::SpExp => {
            let var = v[0];
            let rho = v[1];
            let range = -1.0 / rho.ln();
            return GroupMaps {
                d1: Vec::new(),
                d2: Vec::new(),
                pairs: vec![(0, 1), (1, 0), (1, 1)],
                phi: vec![var, range],
                sp: (var, range),
            };
        }
        CovType::Us => {
            let mut r = 0;
            for i in 0..m {
                for j in 0..=i {
                    phi.push(v[i + j * m]);
                    d1[r][i + j * m] = 1.0;
                    d1[r][j + i * m] = 1.0;
                    r += 1;
                }
            }
        }
        CovType::Cs => {
            phi.push(v[1]);
            phi.push(v[0] - v[1]);
            for q in 0..mm {
                d1[0][q] = 1.0;
            }
            for i in 0..m {
                d1[1][i + i * m] = 1.0;
            }
        }
        CovType::Toep => {
            for l in 0..m {
                phi.push(v[l]);
            }
            for j in 0..m {
                for i in 0..m {
                    d1[lag(i, j)][i + j * m] = 1.0;
                }
            }
        }
        CovType::Ar1 => {
            let s2 = v[0];
            let rho = v[1] / v[0];
            phi.push(s2);
            phi.push(rho);
            let mut g01 = vec![0.0; mm];
            let mut g11 = vec![0.0; mm];
            for j in 0..m {
                for i in 0..m {
                    let l = lag(i, j) as i32;
                    let q = i + j * m;
                    d1[0][q] = rho.powi(l);
                    if l >= 1 {
                        d1[1][q] = s2 * l as f64 * rho.powi(l - 1);
                        g01[q] = l as f64 * rho.powi(l - 1);
                    }
                    if l >= 2 {
                        g11[q] = s2 * (l * (l - 1)) as f64 * rho.powi(l - 2);
                    }
                }
            }
            d2[1] = Some(g01.clone());
            d2[2] = Some(g01);
            if m > 2 {
                d2[3] = Some(g11);
            }
        }
        CovType::Csh | CovType::Ar1h | CovType::Toeph | CovType::Adh => {
            let (sd, r) = correlation_parts(v, m);
            let nrho = npg - m;
            for i in 0..m {
                phi.push(sd[i] * sd[i]);
            }
            match ct {
                CovType::Csh | CovType::Ar1h => phi.push(if m > 1 { r[1] } else { 0.0 }),
                CovType::Toeph => {
                    for l in 1..m {
                        phi.push(r[l]);
                    }
                }
                _ => {
                    for l in 0..m - 1 {
                        phi.push(r[(l + 1) + l * m]);
                    }
                }
            }
            let rho = &phi[m..].to_vec();
            // correlation, its first and second derivatives in the rho's
            let mut c = vec![0.0; mm];
            let mut dc = vec![vec![0.0; mm]; nrho];
            let mut d2c: Vec<Option<Vec<f64>>> = vec![None; nrho * nrho];
            for j in 0..m {
                for i in 0..m {
                    let q = i + j * m;
                    let l = lag(i, j);
                    if l == 0 {
                        c[q] = 1.0;
                        continue;
                    }
                    match ct {
                        CovType::Csh => {
                            c[q] = rho[0];
                            dc[0][q] = 1.0;
                        }
                        CovType::Ar1h => {
                            let li = l as i32;
                            c[q] = rho[0].powi(li);
                            dc[0][q] = l as f64 * rho[0].powi(li - 1);
                            if l >= 2 {
                                d2c[0].get_or_insert_with(|| vec![0.0; mm])[q] =
                                    (l * (l - 1)) as f64 * rho[0].powi(li - 2);
                            }
                        }
                        CovType::Toeph => {
                            c[q] = rho[l - 1];
                            dc[l - 1][q] = 1.0;
                        }
                        _ => {
                            let (lo, hi) = (i.min(j), i.max(j));
                            c[q] = (lo..hi).map(|k| rho[k]).product();
                            for a in lo..hi {
                                dc[a][q] = (lo..hi).filter(|&k| k != a).map(|k| rho[k]).product();
                                for b in lo..hi {
                                    if b == a {
                                        continue;
                                    }
                                    let val: f64 = (lo..hi)
                                        .filter(|&k| k != a && k != b)
                                        .map(|k| rho[k])
                                        .product();
                                    d2c[a * nrho + b].get_or_insert_with(|| vec![0.0; mm])[q] = val;
                                }
                            }
                        }
                    }
                }
            }
            // s_ij = sqrt(v_i v_j): exponent of v_a is e_a = ([i==a] + [j==a]) / 2
            let e = |a: usize, i: usize, j: usize| 0.5 * ((i == a) as i32 + (j == a) as i32) as f64;
            let vv = &phi[..m];
            for a in 0..m {
                for j in 0..m {
                    for i in 0..m {
                        let q = i + j * m;
                        let s = sd[i] * sd[j];
                        d1[a][q] = e(a, i, j) * s / vv[a] * c[q];
                    }
                }
            }
            for k in 0..nrho {
                for q in 0..mm {
                    let (i, j) = (q % m, q / m);
                    d1[m + k][q] = sd[i] * sd[j] * dc[k][q];
                }
            }
            for a in 0..m {
                for b in 0..m {
                    let mut mat = vec![0.0; mm];
                    let mut any = false;
                    for q in 0..mm {
                        let (i, j) = (q % m, q / m);
                        let s = sd[i] * sd[j];
                        let (ea, eb) = (e(a, i, j), e(b, i, j));
                        let mut val = ea * eb * s / (vv[a] * vv[b]);
                        if a == b {
                            val -= ea * s / (vv[a] * vv[a]);
                        }
                        let val = val * c[q];
                        if val != 0.0 {
                            any = true;
                        }
                        mat[q] = val;
                    }
                    if any {
                        d2[a * npg + b] = Some(mat);
                    }
                }
                for k in 0..nrho {
                    let mut mat = vec![0.0; mm];
                    let mut any = false;
                    for q in 0..mm {
                        let (i, j) = (q % m, q / m);
                        let val = e(a, i, j) * sd[i] * sd[j] / vv[a] * dc[k][q];
                        if val != 0.0 {
                            any = true;
                        }
                        mat[q] = val;
                    }
                    if any {
                        d2[a * npg + m + k] = Some(mat.clone());
                        d2[(m + k) * npg + a] = Some(mat);
                    }
                }
            }
            for k in 0..nrho {
                for l in 0..nrho {
                    if let Some(g) = &d2c[k * nrho + l] {
                        let mut mat = vec![0.0; mm];
                        for q in 0..mm {
                            let (i, j) = (q % m, q / m);
                            mat[q] = sd[i] * sd[j] * g[q];
                        }
                        d2[(m + k) * npg + m + l] = Some(mat);
                    }
                }
            }
        }
    }
    let mut pairs = Vec::new();
    for a in 0..npg {
        for b in 0..npg {
            if d2[a * npg + b].is_some() {
                pairs.push((a, b));
            }
        }
    }
    GroupMaps {
        d1,
        d2,
        pairs,
        phi,
        sp: (0.0, 0.0),
    }
}

/// sp_exp: first (a) and second (a, b) derivatives of `var exp(-d / range)`.
fn sp_d1(gm: &GroupMaps, a: usize, d: f64) -> f64 {
    let (var, th) = gm.sp;
    let ex = (-d / th).exp();
    if a == 0 {
        ex
    } else {
        var * ex * d / (th * th)
    }
}

fn sp_d2(gm: &GroupMaps, a: usize, b: usize, d: f64) -> f64 {
    let (var, th) = gm.sp;
    let ex = (-d / th).exp();
    match (a, b) {
        (0, 0) => 0.0,
        (1, 1) => var * ex * (d * d / th.powi(4) - 2.0 * d / th.powi(3)),
        _ => ex * d / (th * th),
    }
}

/// Accumulators over blocks.
struct Acc {
    k: usize,
    p: usize,
    tr_vv: Vec<f64>,
    tr_vd2: Vec<f64>,
    e_vve: Vec<f64>,
    e_d2e: Vec<f64>,
    tr_phi_q: Vec<f64>,
    tr_phi_r: Vec<f64>,
    pm: Vec<f64>,
    gm: Vec<f64>,
    qw: Vec<f64>,
    rw: Vec<f64>,
}

/// One block: rows (global, consecutive from r0), its subjects
/// (subject, local offset, size), multiplicity and data.
struct Block {
    r0: usize,
    nb: usize,
    subjects: Vec<(usize, usize, usize)>,
    /// Aggregated moments (p+1)^2 blocks of nb x nb, with the count.
    agg: Option<(Vec<f64>, f64)>,
}

/// Sparse derivative of V in a block: (row, col, value), both triangles.
type Sparse = Vec<(usize, usize, f64)>;

struct Ctx<'a> {
    inp: &'a RcovInput<'a>,
    lay: &'a Layout,
    maps: Vec<GroupMaps>,
    k: usize,
    npg: usize,
    phi_b: Vec<f64>,
    beta: Vec<f64>,
    reml: bool,
    w: Option<Vec<f64>>,
    linear: bool,
}

impl Ctx<'_> {
    fn visit_d1(&self, g: usize, a: usize, ra: usize, rb: usize) -> f64 {
        let gm = &self.maps[g];
        if self.inp.cov_type.uses_visits() {
            let m = self.inp.m;
            gm.d1[a][self.inp.visit[ra] + self.inp.visit[rb] * m]
        } else {
            sp_d1(gm, a, distance(self.inp, ra, rb))
        }
    }

    fn visit_d2(&self, g: usize, a: usize, b: usize, ra: usize, rb: usize) -> f64 {
        let gm = &self.maps[g];
        if self.inp.cov_type.uses_visits() {
            let m = self.inp.m;
            match &gm.d2[a * self.npg + b] {
                Some(mat) => mat[self.inp.visit[ra] + self.inp.visit[rb] * m],
                None => 0.0,
            }
        } else {
            sp_d2(gm, a, b, distance(self.inp, ra, rb))
        }
    }

    /// V of the block (dense nb x nb) from the fitted matrices in `ws`.
    fn block_v(&self, ws: &Work, blk: &Block) -> Vec<f64> {
        let inp = self.inp;
        let nb = blk.nb;
        let m = inp.m;
        let mut v = vec![0.0; nb * nb];
        for &(s, lo, mi) in &blk.subjects {
            let g = inp.subj_group[s];
            let a0 = inp.subj_start[s];
            for b in 0..mi {
                for a in 0..mi {
                    let (ra, rb) = (a0 + a, a0 + b);
                    v[(lo + a) + (lo + b) * nb] = if inp.cov_type.uses_visits() {
                        ws.vg[g * self.lay.mm + inp.visit[ra] + inp.visit[rb] * m]
                    } else {
                        ws.vg[g * 2] * ws.vg[g * 2 + 1].powf(distance(inp, ra, rb))
                    };
                }
            }
        }
        if blk.agg.is_none() {
            for (t, term) in inp.terms.iter().enumerate() {
                let k = term.k;
                let gc = &ws.g_cov[t];
                for b in 0..nb {
                    let rb = blk.r0 + b;
                    for a in 0..nb {
                        let ra = blk.r0 + a;
                        if term.codes[ra] != term.codes[rb] {
                            continue;
                        }
                        let mut val = 0.0;
                        for j in 0..k {
                            let zb = term.z[rb + j * inp.n];
                            for i in 0..k {
                                val += term.z[ra + i * inp.n] * gc[i + j * k] * zb;
                            }
                        }
                        v[a + b * nb] += val;
                    }
                }
            }
        }
        v
    }

    /// `V^-1 V_r` for a random-effect parameter r (term t, entry (i, j) of
    /// its covariance) from its low-rank form `V_r = sum_l z_li z_lj' (+ sym)`
    /// over the term's levels l in the block: O(nb^2) instead of O(nb^3).
    /// None for a structure parameter.
    fn re_derivative_product(&self, blk: &Block, vi: &[f64], r: usize) -> Option<Vec<f64>> {
        if blk.agg.is_some() || r < self.lay.n_struct {
            return None;
        }
        let inp = self.inp;
        let t = (0..inp.terms.len())
            .rev()
            .find(|&t| self.lay.term_off[t] <= r)?;
        let term = &inp.terms[t];
        let kt = term.k;
        let mut pos = self.lay.term_off[t];
        let mut ij = None;
        'outer: for j in 0..kt {
            for i in j..kt {
                if pos == r {
                    ij = Some((i, j));
                    break 'outer;
                }
                pos += 1;
            }
        }
        let (ci, cj) = ij?;
        let nb = blk.nb;
        let z = |row: usize, c: usize| term.z[blk.r0 + row + c * inp.n];
        let code = |row: usize| term.codes[blk.r0 + row];
        // rows of each level (in order of first appearance)
        let mut levels: Vec<(i32, Vec<usize>)> = Vec::new();
        for a in 0..nb {
            match levels.iter_mut().find(|(c, _)| *c == code(a)) {
                Some((_, rows)) => rows.push(a),
                None => levels.push((code(a), vec![a])),
            }
        }
        let mut out = vec![0.0; nb * nb];
        let mut vu = vec![0.0; nb];
        let pairs: &[(usize, usize)] = if ci == cj {
            &[(0, 0)]
        } else {
            &[(0, 1), (1, 0)]
        };
        for (_, rows) in &levels {
            for &(a_is_i, _) in pairs {
                // V_r's part u w': u = z_ci (or z_cj), w = the other, on these rows
                let (cu, cw) = if ci == cj || a_is_i == 0 {
                    (ci, cj)
                } else {
                    (cj, ci)
                };
                vu.iter_mut().for_each(|v| *v = 0.0);
                for &b in rows {
                    let zu = z(b, cu);
                    if zu == 0.0 {
                        continue;
                    }
                    let col = &vi[b * nb..(b + 1) * nb];
                    vu.iter_mut().zip(col).for_each(|(o, x)| *o += x * zu);
                }
                for &b in rows {
                    let zw = z(b, cw);
                    if zw == 0.0 {
                        continue;
                    }
                    let oc = &mut out[b * nb..(b + 1) * nb];
                    oc.iter_mut().zip(&vu).for_each(|(o, x)| *o += x * zw);
                }
            }
        }
        Some(out)
    }

    /// Sparse first derivatives of the block's V for every parameter.
    fn block_dv(&self, blk: &Block) -> Vec<Sparse> {
        let inp = self.inp;
        let nb = blk.nb;
        let mut dv: Vec<Sparse> = vec![Vec::new(); self.k];
        for &(s, lo, mi) in &blk.subjects {
            let g = inp.subj_group[s];
            let a0 = inp.subj_start[s];
            for a in 0..self.npg {
                let r = g * self.npg + a;
                for jb in 0..mi {
                    for ia in 0..mi {
                        let val = self.visit_d1(g, a, a0 + ia, a0 + jb);
                        if val != 0.0 {
                            dv[r].push((lo + ia, lo + jb, val));
                        }
                    }
                }
            }
        }
        if blk.agg.is_none() {
            for (t, term) in inp.terms.iter().enumerate() {
                let k = term.k;
                let mut pos = self.lay.term_off[t];
                for j in 0..k {
                    for i in j..k {
                        for b in 0..nb {
                            let rb = blk.r0 + b;
                            for a in 0..nb {
                                let ra = blk.r0 + a;
                                if term.codes[ra] != term.codes[rb] {
                                    continue;
                                }
                                let za = |c: usize| term.z[ra + c * inp.n];
                                let zb = |c: usize| term.z[rb + c * inp.n];
                                let val = if i == j {
                                    za(i) * zb(i)
                                } else {
                                    za(i) * zb(j) + za(j) * zb(i)
                                };
                                if val != 0.0 {
                                    dv[pos].push((a, b, val));
                                }
                            }
                        }
                        pos += 1;
                    }
                }
            }
        }
        dv
    }
}

/// Dense inverse of an SPD matrix via its Cholesky factor; None if not PD.
fn spd_inverse(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = a.to_vec();
    if n < 48 {
        if !chol_in_place(&mut l, n) {
            return None;
        }
    } else {
        // faer's blocked Cholesky (lower triangle; the upper is ignored below)
        let req = cholesky_in_place_scratch::<f64>(n, Par::Seq, Default::default());
        let mut buf = MemBuffer::new(req);
        let stack = MemStack::new(&mut buf);
        let mat = MatMut::from_column_major_slice_mut(&mut l, n, n);
        if cholesky_in_place(mat, Default::default(), Par::Seq, stack, Default::default()).is_err()
        {
            return None;
        }
        for j in 0..n {
            for i in 0..j {
                l[i + j * n] = 0.0;
            }
        }
    }
    let lm = MatRef::from_column_major_slice(&l, n, n);
    let mut linv = Mat::<f64>::zeros(n, n);
    invert_lower_triangular(linv.as_mut(), lm, Par::Seq);
    let mut vi = vec![0.0; n * n];
    faer_matmul(
        MatMut::from_column_major_slice_mut(&mut vi, n, n),
        Accum::Replace,
        linv.as_ref().transpose(),
        linv.as_ref(),
        1.0,
        Par::Seq,
    );
    // exactly symmetric
    for j in 0..n {
        for i in (j + 1)..n {
            let v = 0.5 * (vi[i + j * n] + vi[j + i * n]);
            vi[i + j * n] = v;
            vi[j + i * n] = v;
        }
    }
    Some(vi)
}

/// General inverse by Gauss-Jordan with partial pivoting; None if singular.
fn gj_inverse(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut m = a.to_vec();
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        inv[i + i * n] = 1.0;
    }
    let scale = a
        .iter()
        .fold(0.0f64, |s, v| s.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    for col in 0..n {
        let (piv, pv) = (col..n)
            .map(|r| (r, m[r + col * n].abs()))
            .fold((col, -1.0), |b, x| if x.1 > b.1 { x } else { b });
        if pv <= 1e-13 * scale || !pv.is_finite() {
            return None;
        }
        if piv != col {
            for j in 0..n {
                m.swap(piv + j * n, col + j * n);
                inv.swap(piv + j * n, col + j * n);
            }
        }
        let d = m[col + col * n];
        for j in 0..n {
            m[col + j * n] /= d;
            inv[col + j * n] /= d;
        }
        for r in 0..n {
            if r == col {
                continue;
            }
            let f = m[r + col * n];
            if f == 0.0 {
                continue;
            }
            for j in 0..n {
                m[r + j * n] -= f * m[col + j * n];
                inv[r + j * n] -= f * inv[col + j * n];
            }
        }
    }
    Some(inv)
}

/// `a' b` for column-major n x p (a) and n x q (b): p x q.
fn crossprod(a: &[f64], b: &[f64], n: usize, p: usize, q: usize) -> Vec<f64> {
    let mut out = vec![0.0; p * q];
    faer_matmul(
        MatMut::from_column_major_slice_mut(&mut out, p, q),
        Accum::Replace,
        MatRef::from_column_major_slice(a, n, p).transpose(),
        MatRef::from_column_major_slice(b, n, q),
        1.0,
        Par::Seq,
    );
    out
}

/// Dense `a b`, a n x n, b n x q.
fn matmul(a: &[f64], b: &[f64], n: usize, q: usize) -> Vec<f64> {
    matmul_rect(a, b, n, n, q)
}

/// `S b` for sparse symmetric S (entries of both triangles), b n x q.
fn sparse_mul(s: &Sparse, b: &[f64], n: usize, q: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * q];
    for &(i, l, v) in s {
        for j in 0..q {
            out[i + j * n] += v * b[l + j * n];
        }
    }
    out
}

/// `A S` for dense A (n x n) and sparse S: column l of S picks columns of A.
fn dense_sparse(a: &[f64], s: &Sparse, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    for &(l, j, v) in s {
        let al = &a[l * n..(l + 1) * n];
        let oj = &mut out[j * n..(j + 1) * n];
        for (o, x) in oj.iter_mut().zip(al) {
            *o += x * v;
        }
    }
    out
}

/// `<S, M> = sum_ij S_ij M_ij` for sparse S.
fn sparse_dot(s: &Sparse, m: &[f64], n: usize) -> f64 {
    s.iter().map(|&(i, j, v)| v * m[i + j * n]).sum()
}

fn transpose(a: &[f64], n: usize) -> Vec<f64> {
    let mut t = vec![0.0; n * n];
    for j in 0..n {
        for i in 0..n {
            t[j + i * n] = a[i + j * n];
        }
    }
    t
}

fn process_block(
    ctx: &Ctx,
    ws: &Work,
    blk: &Block,
    pass2: bool,
    acc: &mut Acc,
) -> Result<(), LmmError> {
    let inp = ctx.inp;
    let (k, p, nb) = (ctx.k, inp.p, blk.nb);
    let npg = ctx.npg;
    let v = ctx.block_v(ws, blk);
    let vi = spd_inverse(&v, nb).ok_or_else(|| {
        LmmError::NotPositiveDefinite(
            "covariance matrix of a cluster is not positive definite".into(),
        )
    })?;
    let dv = ctx.block_dv(blk);
    let nz: Vec<usize> = (0..k).filter(|&r| !dv[r].is_empty()).collect();
    if nz.len() * nb * nb > BLOCK_BUDGET {
        return Err(LmmError::TooLarge(format!(
            "small-sample inference for a cluster of {nb} observations with {} covariance parameters needs too much memory",
            nz.len()
        )));
    }
    let mult = blk.agg.as_ref().map_or(1.0, |a| a.1);
    let w = ctx.w.as_deref();
    // D_r = V^-1 V_r (dense), for tr(V^-1 V_r V^-1 V_s)
    let d: Vec<Vec<f64>> = if pass2 && blk.agg.is_none() {
        Vec::new()
    } else {
        nz.iter()
            .map(|&r| {
                if let Some(dr) = ctx.re_derivative_product(blk, &vi, r) {
                    dr
                } else if dv[r].len() > nb * nb / 8 {
                    let mut dd = vec![0.0; nb * nb];
                    for &(i, j, v) in &dv[r] {
                        dd[i + j * nb] = v;
                    }
                    matmul(&vi, &dd, nb, nb)
                } else {
                    dense_sparse(&vi, &dv[r], nb)
                }
            })
            .collect()
    };
    if !pass2 {
        // tr(D_r D_s) = <D_r, D_s'> (dot products with the transposes), or,
        // for two sparse derivatives, sum over their entries of
        // V_r[i,j] V^-1[j,l] V_s[l,m] V^-1[m,i]
        // transposes only for the parameters in a pair that is not summed
        // entry by entry
        let dense_pair = |a: usize, b: usize| dv[nz[a]].len() * dv[nz[b]].len() >= nb * nb;
        let dt: Vec<Vec<f64>> = (0..nz.len())
            .map(|b| {
                if (0..=b).any(|a| dense_pair(a, b)) {
                    transpose(&d[b], nb)
                } else {
                    Vec::new()
                }
            })
            .collect();
        for (a, &r) in nz.iter().enumerate() {
            for (b, &s) in nz.iter().enumerate().skip(a) {
                let sparse_pair = dv[r].len() * dv[s].len() < nb * nb;
                let t = mult
                    * if sparse_pair {
                        let mut acc2 = 0.0;
                        for &(i, j, v) in &dv[r] {
                            for &(l, m2, w2) in &dv[s] {
                                acc2 += v * w2 * vi[j + l * nb] * vi[m2 + i * nb];
                            }
                        }
                        acc2
                    } else {
                        d[a].iter().zip(&dt[b]).map(|(x, y)| x * y).sum::<f64>()
                    };
                acc.tr_vv[r + s * k] += t;
                if r != s {
                    acc.tr_vv[s + r * k] += t;
                }
            }
        }
    }
    match &blk.agg {
        None => {
            // explicit data: X_b, r_b, U = V^-1 X, e = V^-1 r
            let mut x = vec![0.0; nb * p];
            let mut res = vec![0.0; nb];
            for i in 0..nb {
                let row = blk.r0 + i;
                let mut rv = inp.y[row];
                for j in 0..p {
                    let xv = inp.x[row + j * inp.n];
                    x[i + j * nb] = xv;
                    rv -= xv * ctx.beta[j];
                }
                res[i] = rv;
            }
            let u = matmul(&vi, &x, nb, p);
            let e = matmul(&vi, &res, nb, 1);
            let bm: Vec<Vec<f64>> = nz.iter().map(|&r| sparse_mul(&dv[r], &u, nb, p)).collect();
            let cm: Vec<Vec<f64>> = bm.iter().map(|b| matmul(&vi, b, nb, p)).collect();
            if !pass2 {
                let f: Vec<Vec<f64>> = nz.iter().map(|&r| sparse_mul(&dv[r], &e, nb, 1)).collect();
                let gv: Vec<Vec<f64>> = f.iter().map(|fr| matmul(&vi, fr, nb, 1)).collect();
                let bphi: Vec<Vec<f64>> = bm
                    .iter()
                    .map(|b| {
                        let mut o = vec![0.0; nb * p];
                        for j in 0..p {
                            for l in 0..p {
                                let c = ctx.phi_b[l + j * p];
                                for i in 0..nb {
                                    o[i + j * nb] += b[i + l * nb] * c;
                                }
                            }
                        }
                        o
                    })
                    .collect();
                for (a, &r) in nz.iter().enumerate() {
                    let pr = crossprod(&u, &bm[a], nb, p, p);
                    for q in 0..p * p {
                        acc.pm[r * p * p + q] += pr[q];
                    }
                    let gr = crossprod(&u, &f[a], nb, p, 1);
                    for j in 0..p {
                        acc.gm[j + r * p] += gr[j];
                    }
                    for (b, &s) in nz.iter().enumerate() {
                        acc.e_vve[r + s * k] +=
                            f[a].iter().zip(&gv[b]).map(|(x, y)| x * y).sum::<f64>();
                        acc.tr_phi_q[r + s * k] +=
                            bphi[a].iter().zip(&cm[b]).map(|(x, y)| x * y).sum::<f64>();
                    }
                }
                // second derivatives on the subjects' diagonal blocks
                let uphi = matmul_rect(&u, &ctx.phi_b, nb, p, p);
                for &(s, lo, mi) in &blk.subjects {
                    let g = inp.subj_group[s];
                    let a0 = inp.subj_start[s];
                    for &(pa, pb) in &ctx.maps[g].pairs {
                        let (r, q) = (g * npg + pa, g * npg + pb);
                        let (mut t1, mut t2, mut t3) = (0.0, 0.0, 0.0);
                        for jb in 0..mi {
                            for ia in 0..mi {
                                let d2 = ctx.visit_d2(g, pa, pb, a0 + ia, a0 + jb);
                                if d2 == 0.0 {
                                    continue;
                                }
                                let (li, lj) = (lo + ia, lo + jb);
                                t1 += vi[li + lj * nb] * d2;
                                t2 += e[li] * e[lj] * d2;
                                let tphi: f64 =
                                    (0..p).map(|c| uphi[li + c * nb] * u[lj + c * nb]).sum();
                                t3 += tphi * d2;
                            }
                        }
                        acc.tr_vd2[r + q * k] += t1;
                        acc.e_d2e[r + q * k] += t2;
                        acc.tr_phi_r[r + q * k] += t3;
                    }
                }
            } else if let Some(w) = w {
                // QW = sum_r B_r' (sum_s W_rs C_s)
                for (a, &r) in nz.iter().enumerate() {
                    let mut cw = vec![0.0; nb * p];
                    for (b, &s) in nz.iter().enumerate() {
                        let wrs = w[r + s * k];
                        if wrs != 0.0 {
                            cw.iter_mut().zip(&cm[b]).for_each(|(o, c)| *o += wrs * c);
                        }
                    }
                    let q = crossprod(&bm[a], &cw, nb, p, p);
                    acc.qw.iter_mut().zip(&q).for_each(|(o, v)| *o += v);
                }
                if !ctx.linear {
                    for &(s, lo, mi) in &blk.subjects {
                        let g = inp.subj_group[s];
                        let a0 = inp.subj_start[s];
                        if ctx.maps[g].pairs.is_empty() {
                            continue;
                        }
                        let mut d2w = vec![0.0; mi * mi];
                        for &(pa, pb) in &ctx.maps[g].pairs {
                            let wrs = w[(g * npg + pa) + (g * npg + pb) * k];
                            for jb in 0..mi {
                                for ia in 0..mi {
                                    d2w[ia + jb * mi] +=
                                        wrs * ctx.visit_d2(g, pa, pb, a0 + ia, a0 + jb);
                                }
                            }
                        }
                        for c2 in 0..p {
                            for c1 in 0..p {
                                let mut sum = 0.0;
                                for jb in 0..mi {
                                    for ia in 0..mi {
                                        sum += u[lo + ia + c1 * nb]
                                            * d2w[ia + jb * mi]
                                            * u[lo + jb + c2 * nb];
                                    }
                                }
                                acc.rw[c1 + c2 * p] += sum;
                            }
                        }
                    }
                }
            }
        }
        Some((sm, _)) => {
            let p1 = p + 1;
            let nb2 = nb * nb;
            let blk_s = |u: usize, w: usize| &sm[(u + w * p1) * nb2..(u + w * p1 + 1) * nb2];
            let sandwich =
                |mid: &[f64]| -> Vec<f64> { matmul(&matmul(&vi, mid, nb, nb), &vi, nb, nb) };
            // T_uv = V^-1 S_uv V^-1 (u, v < p)
            let mut tm: Vec<Vec<f64>> = Vec::with_capacity(p * p);
            for w_ in 0..p {
                for u_ in 0..p {
                    tm.push(sandwich(blk_s(u_, w_)));
                }
            }
            let tsel = |u_: usize, w_: usize| &tm[u_ + w_ * p];
            if !pass2 {
                let wv: Vec<f64> = (0..p1)
                    .map(|j| if j < p { -ctx.beta[j] } else { 1.0 })
                    .collect();
                let mut rr = vec![0.0; nb2];
                for b_ in 0..p1 {
                    for a_ in 0..p1 {
                        let c = wv[a_] * wv[b_];
                        rr.iter_mut()
                            .zip(blk_s(a_, b_))
                            .for_each(|(o, s)| *o += c * s);
                    }
                }
                let ee = sandwich(&rr);
                let mut tphi = vec![0.0; nb2];
                for w_ in 0..p {
                    for u_ in 0..p {
                        let c = ctx.phi_b[u_ + w_ * p];
                        tphi.iter_mut()
                            .zip(tsel(u_, w_))
                            .for_each(|(o, s)| *o += c * s);
                    }
                }
                // TE_u = V^-1 (sum_i X_i[, u] r_i') V^-1
                let te: Vec<Vec<f64>> = (0..p)
                    .map(|u_| {
                        let mut xr = vec![0.0; nb2];
                        for v_ in 0..p1 {
                            xr.iter_mut()
                                .zip(blk_s(u_, v_))
                                .for_each(|(o, s)| *o += wv[v_] * s);
                        }
                        sandwich(&xr)
                    })
                    .collect();
                let g_ee: Vec<Vec<f64>> = d.iter().map(|dr| matmul_right(dr, &ee, nb)).collect();
                let g_tp: Vec<Vec<f64>> = d.iter().map(|dr| matmul_right(dr, &tphi, nb)).collect();
                for &r in nz.iter() {
                    for w_ in 0..p {
                        for u_ in 0..p {
                            acc.pm[r * p * p + u_ + w_ * p] += sparse_dot(&dv[r], tsel(u_, w_), nb);
                        }
                        acc.gm[w_ + r * p] += sparse_dot(&dv[r], &te[w_], nb);
                    }
                    for (b, &s) in nz.iter().enumerate() {
                        // tr(V_r V^-1 V_s M) = sum_(ij in V_r) V_r[i,j] (D_s M)[j,i]
                        let (mut x1, mut x2) = (0.0, 0.0);
                        for &(i, j, val) in &dv[r] {
                            x1 += val * g_ee[b][j + i * nb];
                            x2 += val * g_tp[b][j + i * nb];
                        }
                        acc.e_vve[r + s * k] += x1;
                        acc.tr_phi_q[r + s * k] += x2;
                    }
                }
                let (s0, _, _) = blk.subjects[0];
                let g = inp.subj_group[s0];
                let a0 = inp.subj_start[s0];
                for &(pa, pb) in &ctx.maps[g].pairs {
                    let (r, q) = (g * npg + pa, g * npg + pb);
                    let (mut t1, mut t2, mut t3) = (0.0, 0.0, 0.0);
                    for jb in 0..nb {
                        for ia in 0..nb {
                            let d2 = ctx.visit_d2(g, pa, pb, a0 + ia, a0 + jb);
                            let o = ia + jb * nb;
                            t1 += vi[o] * d2;
                            t2 += ee[o] * d2;
                            t3 += tphi[o] * d2;
                        }
                    }
                    acc.tr_vd2[r + q * k] += mult * t1;
                    acc.e_d2e[r + q * k] += t2;
                    acc.tr_phi_r[r + q * k] += t3;
                }
            } else if let Some(w) = w {
                // KW = sum_r V_r (sum_s W_rs D_s); QW[u, v] = <KW, T_uv>
                let mut kw = vec![0.0; nb2];
                for &r in &nz {
                    let mut fr = vec![0.0; nb2];
                    for (b, &s) in nz.iter().enumerate() {
                        let wrs = w[r + s * k];
                        if wrs != 0.0 {
                            fr.iter_mut().zip(&d[b]).for_each(|(o, x)| *o += wrs * x);
                        }
                    }
                    let prod = sparse_mul(&dv[r], &fr, nb, nb);
                    kw.iter_mut().zip(&prod).for_each(|(o, x)| *o += x);
                }
                let mut d2w = vec![0.0; nb2];
                let (s0, _, _) = blk.subjects[0];
                let g = inp.subj_group[s0];
                let a0 = inp.subj_start[s0];
                if !ctx.linear {
                    for &(pa, pb) in &ctx.maps[g].pairs {
                        let wrs = w[(g * npg + pa) + (g * npg + pb) * k];
                        for jb in 0..nb {
                            for ia in 0..nb {
                                d2w[ia + jb * nb] +=
                                    wrs * ctx.visit_d2(g, pa, pb, a0 + ia, a0 + jb);
                            }
                        }
                    }
                }
                for w_ in 0..p {
                    for u_ in 0..p {
                        let t = tsel(u_, w_);
                        // <KW, T_uv> with Q_rs[u,v] = tr(K_rs' T_uv)
                        acc.qw[u_ + w_ * p] += kw.iter().zip(t).map(|(a, b)| a * b).sum::<f64>();
                        acc.rw[u_ + w_ * p] += d2w.iter().zip(t).map(|(a, b)| a * b).sum::<f64>();
                    }
                }
            }
        }
    }
    Ok(())
}

/// `a b` for a n x n and b n x n.
fn matmul_right(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    matmul(a, b, n, n)
}

/// `a b` for a n x p, b p x q.
fn matmul_rect(a: &[f64], b: &[f64], n: usize, p: usize, q: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * q];
    faer_matmul(
        MatMut::from_column_major_slice_mut(&mut out, n, q),
        Accum::Replace,
        MatRef::from_column_major_slice(a, n, p),
        MatRef::from_column_major_slice(b, p, q),
        1.0,
        Par::Seq,
    );
    out
}

/// Blocks of the model: subjects sharing a visit pattern and group (no
/// random effects, visit structures) with their moments, else clusters.
fn blocks(inp: &RcovInput) -> Vec<Block> {
    let ns = inp.subj_group.len();
    let nc = inp.cluster_start.len() - 1;
    let p1 = inp.p + 1;
    let n = inp.n;
    let mut out = Vec::new();
    if inp.terms.is_empty() && inp.cov_type.uses_visits() && nc == ns {
        let mut index: std::collections::HashMap<(usize, Vec<usize>), usize> =
            std::collections::HashMap::new();
        for s in 0..ns {
            let (a0, a1) = (inp.subj_start[s], inp.subj_start[s + 1]);
            let nb = a1 - a0;
            let key = (inp.subj_group[s], inp.visit[a0..a1].to_vec());
            let id = *index.entry(key).or_insert_with(|| {
                out.push(Block {
                    r0: a0,
                    nb,
                    subjects: vec![(s, 0, nb)],
                    agg: Some((vec![0.0; p1 * p1 * nb * nb], 0.0)),
                });
                out.len() - 1
            });
            let blk = &mut out[id];
            if let Some((sm, cnt)) = blk.agg.as_mut() {
                *cnt += 1.0;
                let nb2 = nb * nb;
                let wv = |a: usize, u: usize| -> f64 {
                    if u < inp.p {
                        inp.x[a0 + a + u * n]
                    } else {
                        inp.y[a0 + a]
                    }
                };
                for v in 0..p1 {
                    for u in 0..p1 {
                        let b = &mut sm[(u + v * p1) * nb2..(u + v * p1 + 1) * nb2];
                        for jb in 0..nb {
                            let wb = wv(jb, v);
                            for ia in 0..nb {
                                b[ia + jb * nb] += wv(ia, u) * wb;
                            }
                        }
                    }
                }
            }
        }
    } else {
        for c in 0..nc {
            let (s0, s1) = (inp.cluster_start[c], inp.cluster_start[c + 1]);
            let r0 = inp.subj_start[s0];
            let nb = inp.subj_start[s1] - r0;
            let subjects = (s0..s1)
                .map(|s| {
                    (
                        s,
                        inp.subj_start[s] - r0,
                        inp.subj_start[s + 1] - inp.subj_start[s],
                    )
                })
                .collect();
            out.push(Block {
                r0,
                nb,
                subjects,
                agg: None,
            });
        }
    }
    out
}

/// Satterthwaite (`kr = false`) or also Kenward-Roger ingredients at the
/// unconstrained `theta` (a fit's optimum). `linear` drops the second
/// derivative term of the adjusted covariance (SAS's KR(LINEAR)).
pub fn rcov_inference(
    inp: &RcovInput,
    theta: &[f64],
    reml: bool,
    kr: bool,
    linear: bool,
) -> Result<RcovInference, LmmError> {
    let lay = validate(inp)?;
    let mut ws: Work = new_work(inp, &lay);
    inference_prepared(inp, &lay, &mut ws, theta, reml, kr, linear)
}

/// [`rcov_inference`] on a prepared layout and workspace.
pub(super) fn inference_prepared(
    inp: &RcovInput,
    lay: &Layout,
    ws: &mut Work,
    theta: &[f64],
    reml: bool,
    kr: bool,
    linear: bool,
) -> Result<RcovInference, LmmError> {
    if theta.len() != lay.n_par {
        return Err(LmmError::InvalidInput(format!(
            "theta must have length {}",
            lay.n_par
        )));
    }
    evaluate(inp, lay, ws, theta, reml, None)?.ok_or_else(|| {
        LmmError::NotPositiveDefinite("covariance not positive definite at theta".into())
    })?;
    let p = inp.p;
    let m = inp.m;
    let npg = inp.cov_type.n_par(m);
    let k = lay.n_par;
    let mut phi_b = vec![0.0; p * p];
    for i in 0..p {
        phi_b[i + i * p] = 1.0;
    }
    forward_solve(&ws.la, p, &mut phi_b, p, p);
    backward_solve(&ws.la, p, &mut phi_b, p, p);
    let maps: Vec<GroupMaps> = (0..inp.n_groups)
        .map(|g| natural_maps(inp.cov_type, m, &ws.vg[g * lay.mm..(g + 1) * lay.mm]))
        .collect();
    let mut phi: Vec<f64> = maps.iter().flat_map(|g| g.phi.iter().copied()).collect();
    for (t, term) in inp.terms.iter().enumerate() {
        let kt = term.k;
        for j in 0..kt {
            for i in j..kt {
                phi.push(ws.g_cov[t][i + j * kt]);
            }
        }
    }
    let mut ctx = Ctx {
        inp,
        lay,
        maps,
        k,
        npg,
        phi_b: phi_b.clone(),
        beta: ws.beta.clone(),
        reml,
        w: None,
        linear,
    };
    let mut acc = Acc {
        k,
        p,
        tr_vv: vec![0.0; k * k],
        tr_vd2: vec![0.0; k * k],
        e_vve: vec![0.0; k * k],
        e_d2e: vec![0.0; k * k],
        tr_phi_q: vec![0.0; k * k],
        tr_phi_r: vec![0.0; k * k],
        pm: vec![0.0; k * p * p],
        gm: vec![0.0; p * k],
        qw: vec![0.0; p * p],
        rw: vec![0.0; p * p],
    };
    let blks = blocks(inp);
    for b in &blks {
        process_block(&ctx, ws, b, false, &mut acc)?;
    }
    let pp = p * p;
    // J_r = Phi P_r Phi
    let mut jac = vec![0.0; k * pp];
    for r in 0..k {
        let pr = &acc.pm[r * pp..(r + 1) * pp];
        let t = matmul_pp(&phi_b, pr, p);
        let j = matmul_pp(&t, &phi_b, p);
        jac[r * pp..(r + 1) * pp].copy_from_slice(&j);
    }
    // g' Phi g
    let pg = matmul_rect(&phi_b, &acc.gm, p, p, k);
    let mut h = vec![0.0; k * k];
    for s in 0..k {
        for r in 0..k {
            let q = r + s * k;
            let tq = 0.5 * (acc.tr_phi_q[q] + acc.tr_phi_q[s + r * k]);
            let gpg: f64 = (0..p).map(|u| acc.gm[u + r * p] * pg[u + s * p]).sum();
            let trpppp: f64 = jac[r * pp..(r + 1) * pp]
                .iter()
                .zip(&acc.pm[s * pp..(s + 1) * pp])
                .map(|(a, b)| a * b)
                .sum();
            let common = acc.tr_vd2[q] + 2.0 * (acc.e_vve[q] - gpg) - acc.e_d2e[q];
            h[q] = if reml {
                -(acc.tr_vv[q] - 2.0 * tq + trpppp) - acc.tr_phi_r[q] + common
            } else {
                -acc.tr_vv[q] + common
            };
        }
    }
    let hs = h.clone();
    for s in 0..k {
        for r in 0..k {
            h[r + s * k] = 0.5 * (hs[r + s * k] + hs[s + r * k]);
        }
    }
    let w = gj_inverse(&h, k).map(|hi| hi.iter().map(|v| 2.0 * v).collect::<Vec<f64>>());
    let mut vcov_adj = None;
    if kr {
        if let Some(wm) = &w {
            ctx.w = Some(wm.clone());
            for b in &blks {
                process_block(&ctx, ws, b, true, &mut acc)?;
            }
            // PWP = sum_rs W_rs P_r Phi P_s
            let mut pwp = vec![0.0; pp];
            for r in 0..k {
                let mut pw = vec![0.0; pp];
                for s in 0..k {
                    let wrs = wm[r + s * k];
                    pw.iter_mut()
                        .zip(&acc.pm[s * pp..(s + 1) * pp])
                        .for_each(|(o, x)| *o += wrs * x);
                }
                let t = matmul_pp(&acc.pm[r * pp..(r + 1) * pp], &phi_b, p);
                let t2 = matmul_pp(&t, &pw, p);
                pwp.iter_mut().zip(&t2).for_each(|(o, x)| *o += x);
            }
            let sm: Vec<f64> = (0..pp)
                .map(|q| acc.qw[q] - pwp[q] - 0.25 * acc.rw[q])
                .collect();
            let t = matmul_pp(&phi_b, &sm, p);
            let t2 = matmul_pp(&t, &phi_b, p);
            let mut adj = vec![0.0; pp];
            for j in 0..p {
                for i in 0..p {
                    adj[i + j * p] = phi_b[i + j * p] + (t2[i + j * p] + t2[j + i * p]);
                }
            }
            vcov_adj = Some(adj);
        }
    }
    let _ = (acc.k, acc.p, ctx.reml);
    Ok(RcovInference {
        k,
        p,
        phi,
        vcov_beta: phi_b,
        hessian: h,
        w,
        p_list: acc.pm,
        jacobian: jac,
        vcov_adj,
    })
}

fn matmul_pp(a: &[f64], b: &[f64], p: usize) -> Vec<f64> {
    matmul_rect(a, b, p, p, p)
}
