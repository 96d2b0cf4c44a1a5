//! Satterthwaite and Kenward-Roger from the kept model's random-effects-space
//! moments ([`lmmr_core::InferenceMoments`]).
//!
//! Notation: `Sigma = sigma^2 (W^-1 + Z D Z')` with `D = Lambda Lambda'`
//! (relative covariance of the random effects), `S = Sigma^-1`,
//! `Phi = (X' S X)^-1`, `P = S - S X Phi X' S`. A derivative (or any other
//! symmetric "direction") of `Sigma` is written `Z K Z' + a Sigma` with `K`
//! block diagonal — one small matrix per term repeated for every level — and
//! a scalar `a`; residual-variance directions use
//! `W^-1 = Sigma / sigma^2 - Z D Z'`. `K` is a combination of the core's
//! basis directions `E_i`, so every trace and quadratic form needed is a
//! bilinear combination of the moments the core computes from its blocks
//! (`tr(E_i M_S)`, `N'E_i N`, `tr(E_i M_S E_j M_S)`, ... with
//! `M_S = Z'SZ`, `N = Z'SX`, `v = Z'Py`), plus `Phi` and `y'Py`.

use crate::linalg::{mm, sym_pinv, symmetrise, tmm, tr_ab};
use faer::Mat;
use lmmr_core::{InferenceMoments, LmmError, Model};

/// Satterthwaite ingredients (lmerTest conventions).
pub struct Satterthwaite {
    /// GLS estimate of beta at the given variance parameters.
    pub beta: Vec<f64>,
    /// `Cov(beta) = (X' Sigma^-1 X)^-1`.
    pub vcov_beta: Mat<f64>,
    /// Gradient of the deviance w.r.t. `(theta, sigma)` (zero at an interior optimum).
    pub gradient: Vec<f64>,
    /// Hessian of the deviance w.r.t. `(theta, sigma)`.
    pub hessian: Mat<f64>,
    /// `2 H^-1` (pseudo-inverse over positive eigenvalues).
    pub vcov_varpar: Mat<f64>,
    /// `d Cov(beta) / d varpar_i`, one `p x p` matrix per parameter.
    pub jacobian: Vec<Mat<f64>>,
}

/// Kenward-Roger ingredients (pbkrtest conventions).
pub struct KenwardRoger {
    /// Unadjusted `Cov(beta)`.
    pub phi: Mat<f64>,
    /// Adjusted covariance `Phi_A`.
    pub phi_adj: Mat<f64>,
    /// Expected information `IE` (twice the REML information).
    pub info: Mat<f64>,
    /// `W = 2 IE^-1`, asymptotic covariance of the linear covariance parameters.
    pub w: Mat<f64>,
    /// `P_r = X' S G_r S X`, one per covariance parameter.
    pub p_list: Vec<Mat<f64>>,
    /// Smallest absolute eigenvalue of `IE`.
    pub condition: f64,
}

/// The random-effects-space summary of a kept model at `(theta, sigma)`:
/// the core's moments (unit residual variance) and `sigma`.
pub struct QSpace {
    m: InferenceMoments,
    phi: Mat<f64>,
    xsx: Mat<f64>,
    ypy: f64,
    n: usize,
    p: usize,
    sigma: f64,
    /// `sigma^-2`.
    is2: f64,
}

/// A symmetric direction `Z K Z' + a Sigma`; `mats[t]` is the `k_t x k_t`
/// block of term `t` (None = zero).
struct Dir {
    mats: Vec<Option<Mat<f64>>>,
    a: f64,
}

/// Per-direction quantities: `K` in the core's basis, `tr(K M_S)`, `N'KN`,
/// `N'Kv`, `v'Kv`.
struct Pre {
    coef: Vec<(usize, f64)>,
    a: f64,
    ts: f64,
    r: Mat<f64>,
    nkv: Mat<f64>,
    vkv: f64,
}

fn scaled(m: &Mat<f64>, s: f64) -> Mat<f64> {
    let mut out = m.clone();
    for j in 0..out.ncols() {
        for i in 0..out.nrows() {
            out[(i, j)] *= s;
        }
    }
    out
}

impl QSpace {
    /// Moments of `model` at `theta` with residual standard deviation `sigma`
    /// (the model's own validation of theta; its error type).
    pub fn new(model: &mut Model, theta: &[f64], sigma: f64) -> Result<QSpace, LmmError> {
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(LmmError::InvalidInput(
                "`sigma` must be positive and finite".into(),
            ));
        }
        let m = model.inference_moments(theta)?;
        let s2 = sigma * sigma;
        Ok(QSpace {
            phi: scaled(&m.phi, s2),
            xsx: scaled(&m.xsx, 1.0 / s2),
            ypy: m.ypy / s2,
            n: m.n,
            p: m.p,
            sigma,
            is2: 1.0 / s2,
            m,
        })
    }

    fn n_terms(&self) -> usize {
        self.m.lambda.len()
    }

    fn lambda(&self, t: usize) -> &Mat<f64> {
        &self.m.lambda[t]
    }

    /// `K` in the basis: coefficient of `E_(t, a, b)` is `K_t[a, b]`.
    fn coef(&self, dir: &Dir) -> Vec<(usize, f64)> {
        self.m
            .basis
            .iter()
            .enumerate()
            .filter_map(|(i, &(t, a, b))| {
                dir.mats[t]
                    .as_ref()
                    .map(|k| (i, k[(a, b)]))
                    .filter(|(_, c)| *c != 0.0)
            })
            .collect()
    }

    fn pre(&self, dir: &Dir) -> Pre {
        let p = self.p;
        let coef = self.coef(dir);
        let is4 = self.is2 * self.is2;
        let mut out = Pre {
            coef: Vec::new(),
            a: dir.a,
            ts: 0.0,
            r: Mat::zeros(p, p),
            nkv: Mat::zeros(p, 1),
            vkv: 0.0,
        };
        for &(i, c) in &coef {
            out.ts += c * self.m.tr_m[i] * self.is2;
            out.r += scaled(&self.m.nen[i], c * is4);
            out.nkv += scaled(&self.m.nev[i], c * is4);
            out.vkv += c * self.m.vev[i] * is4;
        }
        symmetrise(&mut out.r);
        out.coef = coef;
        out
    }

    /// Pairwise: `tr(K_i M_S K_j M_S)`, `N' K_i M_S K_j N`, `v' K_i M_S K_j v`.
    fn pair(&self, i: &Pre, j: &Pre) -> (f64, Mat<f64>, f64) {
        let p = self.p;
        let nb = self.m.basis.len();
        let is4 = self.is2 * self.is2;
        let is6 = is4 * self.is2;
        let mut t = 0.0;
        let mut q = Mat::<f64>::zeros(p, p);
        let mut vq = 0.0;
        for &(u, cu) in &i.coef {
            for &(w, cw) in &j.coef {
                let c = cu * cw;
                t += c * self.m.tr_mm[(u, w)] * is4;
                q += scaled(&self.m.nmn[u * nb + w], c * is6);
                vq += c * self.m.vmv[(u, w)] * is6;
            }
        }
        (t, q, vq)
    }

    /// `tr(Phi A)`.
    fn tr_phi(&self, a: &Mat<f64>) -> f64 {
        tr_ab(self.phi.as_ref(), a.as_ref())
    }

    fn lambda_dir(&self, t: usize, mat: Mat<f64>, a: f64) -> Dir {
        let mut mats: Vec<Option<Mat<f64>>> = vec![None; self.n_terms()];
        mats[t] = Some(mat);
        Dir { mats, a }
    }

    /// Index pairs (row, col) of the lower triangle, column major, of a k x k matrix.
    fn tri_index(k: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(k * (k + 1) / 2);
        for c in 0..k {
            for r in c..k {
                out.push((r, c));
            }
        }
        out
    }
}

/// `d(Lambda Lambda')/d theta` for the element (r, c) of `Lambda`.
fn d_first(lam: &Mat<f64>, r: usize, c: usize) -> Mat<f64> {
    let k = lam.nrows();
    let mut d = Mat::<f64>::zeros(k, k);
    for b in 0..k {
        d[(r, b)] += lam[(b, c)];
        d[(b, r)] += lam[(b, c)];
    }
    d
}

/// Second derivative of `Lambda Lambda'` w.r.t. elements (r1,c1), (r2,c2).
fn d_second(k: usize, (r1, c1): (usize, usize), (r2, c2): (usize, usize)) -> Option<Mat<f64>> {
    if c1 != c2 {
        return None;
    }
    let mut d = Mat::<f64>::zeros(k, k);
    d[(r1, r2)] += 1.0;
    d[(r2, r1)] += 1.0;
    Some(d)
}

/// Satterthwaite ingredients at the summary's estimates.
pub fn satterthwaite(qs: &QSpace, reml: bool) -> Result<Satterthwaite, LmmError> {
    let s2 = qs.sigma * qs.sigma;
    let sig = qs.sigma;
    // parameter list: (term, (r, c)) for theta, then sigma
    let mut tpar: Vec<(usize, (usize, usize))> = Vec::new();
    for t in 0..qs.n_terms() {
        for rc in QSpace::tri_index(qs.lambda(t).nrows()) {
            tpar.push((t, rc));
        }
    }
    let nt = tpar.len();
    let npar = nt + 1;
    let mut dirs: Vec<Dir> = tpar
        .iter()
        .map(|&(t, (r, c))| qs.lambda_dir(t, scaled(&d_first(qs.lambda(t), r, c), s2), 0.0))
        .collect();
    dirs.push(Dir {
        mats: vec![None; qs.n_terms()],
        a: 2.0 / sig,
    });
    let pres: Vec<Pre> = dirs.iter().map(|d| qs.pre(d)).collect();
    if qs.n <= qs.p {
        return Err(LmmError::InvalidInput(
            "the number of observations must exceed the number of fixed effects".into(),
        ));
    }
    let n_eff = if reml {
        (qs.n - qs.p) as f64
    } else {
        qs.n as f64
    };
    // single-direction trace: tr(P Sigma_i) (REML) or tr(S Sigma_i) (ML)
    let t1 = |ts: f64, r: &Mat<f64>, a: f64| -> f64 {
        let base = if reml { ts - qs.tr_phi(r) } else { ts };
        base + a * n_eff
    };
    let tr_kmp: Vec<f64> = pres
        .iter()
        .map(|pr| {
            if reml {
                pr.ts - qs.tr_phi(&pr.r)
            } else {
                pr.ts
            }
        })
        .collect();
    let mut grad = vec![0.0; npar];
    for (i, pr) in pres.iter().enumerate() {
        let tr = t1(pr.ts, &pr.r, pr.a);
        let quad = pr.vkv + pr.a * qs.ypy;
        grad[i] = tr - quad;
    }
    let mut hess = Mat::<f64>::zeros(npar, npar);
    let phi = &qs.phi;
    for i in 0..npar {
        for j in i..npar {
            let (pi, pj) = (&pres[i], &pres[j]);
            let (tkk, qt, vq) = qs.pair(pi, pj);
            // tr(K_i M K_j M) with M = M_P (REML) or M_S (ML)
            let tkk = if reml {
                let phi_ri = mm(phi.as_ref(), pi.r.as_ref());
                let phi_rj = mm(phi.as_ref(), pj.r.as_ref());
                tkk - 2.0 * qs.tr_phi(&qt) + tr_ab(phi_ri.as_ref(), phi_rj.as_ref())
            } else {
                tkk
            };
            let t2 = tkk + pj.a * tr_kmp[i] + pi.a * tr_kmp[j] + pi.a * pj.a * n_eff;
            // quadratic forms always with P
            let nphi = mm(phi.as_ref(), pj.nkv.as_ref());
            let vkmpkv = vq - tmm(pi.nkv.as_ref(), nphi.as_ref())[(0, 0)];
            let q2 = vkmpkv + pj.a * pi.vkv + pi.a * pj.vkv + pi.a * pj.a * qs.ypy;
            // second derivative direction
            let second: Option<Dir> = if i < nt && j < nt {
                let (ti, rci) = tpar[i];
                let (tj, rcj) = tpar[j];
                if ti == tj {
                    d_second(qs.lambda(ti).nrows(), rci, rcj)
                        .map(|d| qs.lambda_dir(ti, scaled(&d, s2), 0.0))
                } else {
                    None
                }
            } else if i < nt {
                let (ti, (r, c)) = tpar[i];
                Some(qs.lambda_dir(ti, scaled(&d_first(qs.lambda(ti), r, c), 2.0 * sig), 0.0))
            } else {
                Some(Dir {
                    mats: vec![None; qs.n_terms()],
                    a: 2.0 / s2,
                })
            };
            let (t1v, q1) = match second {
                Some(d) => {
                    let pr = qs.pre(&d);
                    (t1(pr.ts, &pr.r, d.a), pr.vkv + d.a * qs.ypy)
                }
                None => (0.0, 0.0),
            };
            let h = -t2 + t1v + 2.0 * q2 - q1;
            hess[(i, j)] = h;
            hess[(j, i)] = h;
        }
    }
    let (hinv, _) = sym_pinv_positive(&hess)?;
    let vcov_varpar = scaled(&hinv, 2.0);
    let jacobian = pres
        .iter()
        .map(|pr| {
            let mut j = mm(mm(phi.as_ref(), pr.r.as_ref()).as_ref(), phi.as_ref());
            for c in 0..qs.p {
                for r in 0..qs.p {
                    j[(r, c)] += pr.a * phi[(r, c)];
                }
            }
            symmetrise(&mut j);
            j
        })
        .collect();
    Ok(Satterthwaite {
        beta: qs.m.beta.clone(),
        vcov_beta: qs.phi.clone(),
        gradient: grad,
        hessian: hess,
        vcov_varpar,
        jacobian,
    })
}

/// Pseudo-inverse keeping positive eigenvalues above 1e-8 (as lmerTest).
fn sym_pinv_positive(h: &Mat<f64>) -> Result<(Mat<f64>, usize), LmmError> {
    let n = h.nrows();
    if n == 0 {
        return Ok((Mat::zeros(0, 0), 0));
    }
    if (0..n).any(|j| (0..n).any(|i| !h[(i, j)].is_finite())) {
        return Err(LmmError::NonFinite("Hessian of the deviance".into()));
    }
    let evd = h
        .self_adjoint_eigen(faer::Side::Lower)
        .map_err(|_| LmmError::NonFinite("eigen decomposition of the Hessian".into()))?;
    let u = evd.U();
    let s = evd.S();
    let mut out = Mat::<f64>::zeros(n, n);
    let mut kept = 0;
    for k in 0..n {
        let ev = s[k];
        if ev <= 1e-8 {
            continue;
        }
        kept += 1;
        for j in 0..n {
            let f = u[(j, k)] / ev;
            for i in 0..n {
                out[(i, j)] += u[(i, k)] * f;
            }
        }
    }
    symmetrise(&mut out);
    Ok((out, kept))
}

/// Kenward-Roger ingredients at the summary's (REML) estimates.
/// `reml` must be true: pbkrtest's method is defined for REML fits.
pub fn kenward_roger(qs: &QSpace, reml: bool) -> Result<KenwardRoger, LmmError> {
    if !reml {
        return Err(LmmError::BadArgument(
            "Kenward-Roger's method is only available for REML fits; refit the model with REML = TRUE.".into(),
        ));
    }
    let s2 = qs.sigma * qs.sigma;
    let p = qs.p;
    let mut dirs: Vec<Dir> = Vec::new();
    for t in 0..qs.n_terms() {
        let k = qs.lambda(t).nrows();
        for (r, c) in QSpace::tri_index(k) {
            let mut e = Mat::<f64>::zeros(k, k);
            e[(r, c)] = 1.0;
            e[(c, r)] = 1.0;
            dirs.push(qs.lambda_dir(t, e, 0.0));
        }
    }
    // residual variance: W^-1 = Sigma / sigma^2 - Z D Z'
    let neg_d: Vec<Option<Mat<f64>>> = (0..qs.n_terms())
        .map(|t| {
            let l = qs.lambda(t);
            Some(scaled(&mm(l.as_ref(), l.transpose()), -1.0))
        })
        .collect();
    dirs.push(Dir {
        mats: neg_d,
        a: 1.0 / s2,
    });
    let ng = dirs.len();
    let pres: Vec<Pre> = dirs.iter().map(|d| qs.pre(d)).collect();
    let phi = &qs.phi;
    let p_list: Vec<Mat<f64>> = pres
        .iter()
        .map(|pr| {
            let mut m = pr.r.clone();
            for c in 0..p {
                for r in 0..p {
                    m[(r, c)] += pr.a * qs.xsx[(r, c)];
                }
            }
            m
        })
        .collect();
    let phi_p: Vec<Mat<f64>> = p_list
        .iter()
        .map(|pm| mm(phi.as_ref(), pm.as_ref()))
        .collect();
    let n = qs.n as f64;
    let mut info = Mat::<f64>::zeros(ng, ng);
    let mut q_list: Vec<Vec<Mat<f64>>> = vec![Vec::new(); ng];
    for i in 0..ng {
        for j in 0..ng {
            let (pi, pj) = (&pres[i], &pres[j]);
            let (tkk, qt, _) = qs.pair(pi, pj);
            let mut q = qt;
            for c in 0..p {
                for r in 0..p {
                    q[(r, c)] +=
                        pj.a * pi.r[(r, c)] + pi.a * pj.r[(r, c)] + pi.a * pj.a * qs.xsx[(r, c)];
                }
            }
            if j >= i {
                let tss = tkk + pj.a * pi.ts + pi.a * pj.ts + pi.a * pj.a * n;
                let v = tss - 2.0 * qs.tr_phi(&q) + tr_ab(phi_p[i].as_ref(), phi_p[j].as_ref());
                info[(i, j)] = v;
                info[(j, i)] = v;
            }
            q_list[i].push(q);
        }
    }
    let (iinv, condition) = if sym_pinv(info.as_ref(), 0.0)?.1 > 1e-10 {
        sym_pinv(info.as_ref(), 0.0)?
    } else {
        sym_pinv(info.as_ref(), f64::EPSILON.sqrt())?
    };
    let w = scaled(&iinv, 2.0);
    let mut uu = Mat::<f64>::zeros(p, p);
    for i in 0..ng {
        for j in 0..ng {
            let pfp = mm(p_list[i].as_ref(), phi_p[j].as_ref());
            let wij = w[(i, j)];
            for c in 0..p {
                for r in 0..p {
                    uu[(r, c)] += wij * (q_list[i][j][(r, c)] - pfp[(r, c)]);
                }
            }
        }
    }
    let corr = mm(mm(phi.as_ref(), uu.as_ref()).as_ref(), phi.as_ref());
    let mut phi_adj = phi.clone();
    for c in 0..p {
        for r in 0..p {
            phi_adj[(r, c)] += 2.0 * corr[(r, c)];
        }
    }
    symmetrise(&mut phi_adj);
    if (0..p).any(|c| (0..p).any(|r| !phi_adj[(r, c)].is_finite())) {
        return Err(LmmError::NonFinite(
            "Kenward-Roger adjusted covariance".into(),
        ));
    }
    Ok(KenwardRoger {
        phi: qs.phi.clone(),
        phi_adj,
        info,
        w,
        p_list,
        condition,
    })
}
