//! Solutions at a given theta: beta, spherical and original random effects,
//! vcov(beta), conditional variances and fitted values.

use crate::blocks::Blocks;
use crate::error::LmmError;
use crate::factor::{level_block, Workspace};
use crate::input::{self, FitInput};
use crate::precondition::{QRows, QView};
use faer::{Mat, MatRef, Par};

/// Everything derived from the factorisation at the final theta.
#[derive(Debug, Clone)]
pub(crate) struct Solution {
    pub beta: Vec<f64>,
    pub sigma: f64,
    pub vcov_beta: Vec<f64>,
    pub b: Vec<f64>,
    pub cond_var: Vec<Vec<f64>>,
    pub fitted: Vec<f64>,
    /// The penalised residual sum of squares recomputed from the rows,
    /// `sum w (y - fitted)^2 + |u|^2`: a check on the cross-product value,
    /// which cancels catastrophically when the response is far from the
    /// span of X but near that of Z Lambda.
    pub pwrss_rows: f64,
}

/// Inverse of a small lower-triangular matrix stored column-major with leading
/// dimension `ld` (returns a dense `k x k` column-major lower triangle).
fn lower_inverse(l: &[f64], ld: usize, k: usize) -> Vec<f64> {
    let mut inv = vec![0.0; k * k];
    for c in 0..k {
        // Solve L x = e_c.
        inv[c * k + c] = 1.0 / l[c * ld + c];
        for r in (c + 1)..k {
            let mut v = 0.0;
            for m in c..r {
                v -= l[m * ld + r] * inv[c * k + m];
            }
            inv[c * k + r] = v / l[r * ld + r];
        }
    }
    inv
}

/// `Linv' H Linv` for small dense `k x k` (H symmetric, full storage).
fn sandwich_t(linv: &[f64], h: &[f64], k: usize) -> Vec<f64> {
    // T = H Linv
    let mut t = vec![0.0; k * k];
    for c in 0..k {
        for r in 0..k {
            let mut v = 0.0;
            for m in c..k {
                v += h[m * k + r] * linv[c * k + m];
            }
            t[c * k + r] = v;
        }
    }
    let mut out = vec![0.0; k * k];
    for c in 0..k {
        for r in 0..k {
            let mut v = 0.0;
            for m in r..k {
                v += linv[r * k + m] * t[c * k + m];
            }
            out[c * k + r] = v;
        }
    }
    out
}

/// `s2 * Lam Q Lam'` for a k x k block `q` (full storage) and lower `lam`.
fn scale_block(lam: &[f64], q: &[f64], k: usize, s2: f64, out: &mut [f64]) {
    for c in 0..k {
        for r in 0..k {
            let mut v = 0.0;
            for a in 0..=r {
                for b in 0..=c {
                    v += lam[a * k + r] * q[b * k + a] * lam[b * k + c];
                }
            }
            out[c * k + r] = s2 * v;
        }
    }
}

/// `[u2; beta]` (rest spherical random effects and fixed effects) by back
/// substitution in the dense factor; `ws` must hold the factorisation.
pub(crate) fn dense_solution(bl: &Blocks, ws: &Workspace) -> Vec<f64> {
    let d = bl.d();
    let mdim = bl.q2 + bl.p;
    let mut x = vec![0.0; mdim];
    for i in (0..mdim).rev() {
        let mut v = ws.s[i * d + d - 1];
        let col = &ws.s[i * d..(i + 1) * d];
        for k in (i + 1)..mdim {
            v -= col[k] * x[k];
        }
        x[i] = v / col[i];
    }
    x
}

/// What the solution's pass over the rows reads besides the input: `Q`
/// (`xq`), how fitted values on the transformed problem's scale map back to
/// the data's (`fitted = scale * fitted~ + Q rb`, `rb = R beta0`, see
/// `precondition::map_back`) and its threads (0: all cores).
pub(crate) struct Back<'a> {
    pub xq: QView<'a>,
    pub scale: f64,
    pub rb: &'a [f64],
    pub threads: usize,
}

/// Rows per chunk of [`rows_pass`].
const ROWS_CHUNK: usize = 1024;

/// One pass over the rows, on `threads` threads (each row's values depend
/// only on that row; the sum is taken along the fixed tree of `pass`): the
/// fitted values in the data's units (`back`) and the weighted residual sum
/// of squares `sum w (y~ - X~ beta~ - Z b~)^2` of the transformed problem.
fn rows_pass(
    input: &FitInput,
    bl: &Blocks,
    beta: &[f64],
    b: &[f64],
    back: &Back,
) -> Result<(Vec<f64>, f64), LmmError> {
    let (xq, threads) = (back.xq, back.threads);
    use crate::pass::{reduce_slabs_rows, resolve_threads, slab_rows};
    let (n, p) = (input.n, bl.p);
    let mut fitted = vec![0.0; n];
    let make = |_s: usize, lo: usize, f_all: &mut [f64]| -> Result<f64, LmmError> {
        let rows = f_all.len();
        let mut qr = QRows::new(xq, n, p, ROWS_CHUNK.min(rows));
        let mut ss = 0.0;
        let mut start = 0;
        while start < rows {
            let len = ROWS_CHUNK.min(rows - start);
            let (a, e) = (lo + start, lo + start + len);
            qr.load(a, len);
            let f = &mut f_all[start..start + len];
            f.fill(0.0);
            for (c, bc) in beta.iter().enumerate() {
                for (v, q) in f.iter_mut().zip(qr.col(c)) {
                    *v += q * bc;
                }
            }
            for (t, term) in input.terms.iter().enumerate() {
                let ti = &bl.terms[t];
                for c in 0..ti.k {
                    let zc = &term.z[c * n + a..c * n + e];
                    for ((v, z), code) in f.iter_mut().zip(zc).zip(&term.codes[a..e]) {
                        *v += z * b[ti.b_offset + *code as usize * ti.k + c];
                    }
                }
            }
            for (t, v) in f.iter().enumerate() {
                let i = a + t;
                if input::contributes(input.weights, i) {
                    let w = if input.weights.is_empty() {
                        1.0
                    } else {
                        input.weights[i]
                    };
                    let r = input.y[i] - v;
                    ss += w * r * r;
                }
            }
            for v in f.iter_mut() {
                *v *= back.scale;
            }
            for (k, c) in back.rb.iter().enumerate() {
                for (v, q) in f.iter_mut().zip(qr.col(k)) {
                    *v += c * q;
                }
            }
            start += len;
        }
        Ok(ss)
    };
    let add = |a: &mut f64, b: f64| *a += b;
    let ss = reduce_slabs_rows(
        &mut fitted,
        slab_rows(1),
        resolve_threads(threads),
        &make,
        &add,
    )?;
    Ok((fitted, ss))
}

/// Computes the solution. `ws` must hold the factorisation at the final theta
/// (i.e. `evaluate` was the last call on it) and `ws.lam` that theta.
pub(crate) fn solve(
    input: &FitInput,
    bl: &Blocks,
    ws: &mut Workspace,
    pwrss: f64,
    reml: bool,
    back: &Back,
) -> Result<Solution, LmmError> {
    let d = bl.d();
    let q2 = bl.q2;
    let p = bl.p;
    let k1 = bl.k1;
    let n_obs = bl.n;
    let x = dense_solution(bl, ws);
    let beta = x[q2..].to_vec();
    let s2 = pwrss
        / if reml {
            (n_obs - p) as f64
        } else {
            n_obs as f64
        };
    let sigma = s2.sqrt();

    // vcov(beta) = s2 * (L_X L_X')^{-1}.
    let mut vcov_beta = vec![0.0; p * p];
    if p > 0 {
        let lx = &ws.s[q2 * d + q2..];
        let linv = lower_inverse(lx, d, p);
        let ident: Vec<f64> = (0..p * p)
            .map(|i| if i % (p + 1) == 0 { 1.0 } else { 0.0 })
            .collect();
        let v = sandwich_t(&linv, &ident, p);
        for (o, vi) in vcov_beta.iter_mut().zip(v) {
            *o = s2 * vi;
        }
    }

    // P = (L22 L22')^{-1}.
    let mut pmat = Mat::<f64>::zeros(q2, q2);
    if q2 > 0 {
        let l22 = MatRef::from_column_major_slice_with_stride(&ws.s, q2, q2, d);
        let par = if q2 >= 384 { Par::rayon(0) } else { Par::Seq };
        pmat = crate::factor::schur_inverse(l22, par);
    }

    // Spherical random effects u (internal layout) and conditional variances.
    let q1 = bl.g1 * k1;
    let mut u1 = vec![0.0; q1];
    let mut cv1 = vec![0.0; q1 * k1]; // per level k1 x k1 blocks of (LL')^{-1}
    let mut rhs = vec![0.0; k1];
    let mut tmp = Vec::new();
    let mut g = vec![0.0; k1 * k1];
    // Scattered designs: the levels' C_r P[idx, idx] by columns of P, from
    // the C_j the evaluation at this theta left in the scatter buffers.
    let mut scat = ws.scatter.take();
    if let Some(sc) = &mut scat {
        sc.gather_e(bl, false, |b| pmat.col_as_slice(b));
    }
    let levels = (0..bl.g1).try_for_each(|j| -> Result<(), LmmError> {
        let (m, _) = level_block(bl, ws, j)?;
        let nc = m - p - 1;
        for (a, r) in rhs.iter_mut().enumerate() {
            let mut v = ws.c[(m - 1) * k1 + a];
            for cc in 0..m - 1 {
                v -= ws.c[cc * k1 + a] * x[ws.idx[cc]];
            }
            *r = v;
        }
        // u1_j = L_j^{-T} rhs
        for a in (0..k1).rev() {
            let mut v = rhs[a];
            for l in (a + 1)..k1 {
                v -= ws.m[a * k1 + l] * u1[j * k1 + l];
            }
            u1[j * k1 + a] = v / ws.m[a * k1 + a];
        }
        // G = C_r P_sub C_r'
        g.iter_mut().for_each(|v| *v = 0.0);
        if let (Some(sc), true) = (&scat, nc > 0) {
            // E = C_r P[:, idx] gathered by columns of P.
            let r0 = bl.r_ptr[j];
            for b in 0..nc {
                let t = sc.csr_to_csc[r0 + b];
                let e = &sc.e[t * k1..(t + 1) * k1];
                for c in 0..k1 {
                    for r in 0..k1 {
                        g[c * k1 + r] += e[r] * ws.c[b * k1 + c];
                    }
                }
            }
        } else if nc > 0 {
            tmp.clear();
            tmp.resize(k1 * nc, 0.0);
            for b in 0..nc {
                let pb = ws.idx[b];
                for a in 0..nc {
                    let pab = pmat[(ws.idx[a], pb)];
                    for r in 0..k1 {
                        tmp[b * k1 + r] += ws.c[a * k1 + r] * pab;
                    }
                }
            }
            for c in 0..k1 {
                for r in 0..k1 {
                    let mut v = 0.0;
                    for b in 0..nc {
                        v += tmp[b * k1 + r] * ws.c[b * k1 + c];
                    }
                    g[c * k1 + r] = v;
                }
            }
        }
        for a in 0..k1 {
            g[a * k1 + a] += 1.0;
        }
        let linv = lower_inverse(&ws.m, k1, k1);
        let q = sandwich_t(&linv, &g, k1);
        cv1[j * k1 * k1..(j + 1) * k1 * k1].copy_from_slice(&q);
        Ok(())
    });
    ws.scatter = scat;
    levels?;

    // u2 = x[..q2]; b = Lambda u in the user's layout; conditional variances.
    let mut b = vec![0.0; bl.q];
    let mut cond_var = Vec::with_capacity(bl.terms.len());
    for (t, ti) in bl.terms.iter().enumerate() {
        let k = ti.k;
        let lam = &ws.lam[ws.lam_off[t]..ws.lam_off[t] + k * k];
        let mut cv = vec![0.0; k * k * ti.n_levels];
        let mut qb = vec![0.0; k * k];
        for l in 0..ti.n_levels {
            // u block and (LL')^{-1} block for (t, l).
            let ublk: &[f64] = if let Some(o) = ti.prim_offset {
                for c in 0..k {
                    for r in 0..k {
                        qb[c * k + r] = cv1[l * k1 * k1 + (o + c) * k1 + o + r];
                    }
                }
                &u1[l * k1 + o..l * k1 + o + k]
            } else {
                let o = ti.rest_offset.unwrap_or(0) + l * k;
                for c in 0..k {
                    for r in 0..k {
                        qb[c * k + r] = pmat[(o + r, o + c)];
                    }
                }
                &x[o..o + k]
            };
            let bo = ti.b_offset + l * k;
            for r in 0..k {
                let mut v = 0.0;
                for c in 0..=r {
                    v += lam[c * k + r] * ublk[c];
                }
                b[bo + r] = v;
            }
            scale_block(lam, &qb, k, s2, &mut cv[l * k * k..(l + 1) * k * k]);
        }
        cond_var.push(cv);
    }

    // Fitted values X beta + Z b, one per row of the input (which are
    // pseudo-rows for a fit from sufficient statistics: then n differs).
    let (fitted, rows_ss) = rows_pass(input, bl, &beta, &b, back)?;
    let pwrss_rows: f64 = u1.iter().chain(&x[..q2]).map(|v| v * v).sum::<f64>() + rows_ss;
    if !(sigma.is_finite() && beta.iter().all(|v| v.is_finite()) && b.iter().all(|v| v.is_finite()))
    {
        return Err(LmmError::NonFinite(
            "solution contains non-finite values".into(),
        ));
    }
    Ok(Solution {
        beta,
        sigma,
        vcov_beta,
        b,
        cond_var,
        fitted,
        pwrss_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_inverse_and_sandwich() {
        // L = [2 0; 1 3]
        let l = [2.0, 1.0, 0.0, 3.0];
        let inv = lower_inverse(&l, 2, 2);
        assert!((inv[0] - 0.5).abs() < 1e-15);
        assert!((inv[1] + 1.0 / 6.0).abs() < 1e-15);
        assert!((inv[3] - 1.0 / 3.0).abs() < 1e-15);
        // (L L')^{-1} = Linv' Linv
        let id = [1.0, 0.0, 0.0, 1.0];
        let s = sandwich_t(&inv, &id, 2);
        // L L' = [4 2; 2 10], inverse = [10 -2; -2 4] / 36
        assert!((s[0] - 10.0 / 36.0).abs() < 1e-15);
        assert!((s[1] + 2.0 / 36.0).abs() < 1e-15);
        assert!((s[2] + 2.0 / 36.0).abs() < 1e-15);
        assert!((s[3] - 4.0 / 36.0).abs() < 1e-15);
        let mut out = [0.0; 4];
        scale_block(&l, &id, 2, 2.0, &mut out);
        assert_eq!(out, [8.0, 4.0, 4.0, 20.0]);
    }
}
