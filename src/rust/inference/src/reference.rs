//! The former row-based implementation (its own cross-products from the
//! rows, one dense block for crossed designs), kept only as the reference the
//! tests compare the kept-model path with.
//!
//! Random-effects-space algebra for Satterthwaite and Kenward-Roger.
//!
//! Notation: `Sigma = sigma^2 (W^-1 + Z D Z')` with `D = Lambda Lambda'`
//! (relative covariance of the random effects), `S = Sigma^-1`,
//! `Phi = (X' S X)^-1`, `P = S - S X Phi X' S`. A derivative (or any other
//! symmetric "direction") of `Sigma` is written `Z K Z' + a Sigma` with `K`
//! block diagonal — one small matrix per term repeated for every level — and
//! a scalar `a`; residual-variance directions use
//! `W^-1 = Sigma / sigma^2 - Z D Z'`. Every trace and quadratic form needed is
//! then a function of `M_S = Z' S Z`, `N = Z' S X`, `v = Z' P y`, `Phi` and
//! `y' P y` (and `M_P = M_S - N Phi N'`).

use crate::linalg::{mm, sym_pinv, symmetrise, tmm, tr_ab, trace, Chol};
use faer::{Mat, MatRef};
use lmmr_core::LmmError as InferenceError;

/// One random-effect term: level code and `k` covariates per observation.
pub struct TermInput<'a> {
    /// 0-based level code per observation (length `n`).
    pub codes: &'a [i32],
    /// Number of levels `G`.
    pub n_levels: usize,
    /// `n x k` covariate matrix, column major.
    pub z: &'a [f64],
    /// Number of columns of the term.
    pub k: usize,
    /// 0-based grouping factor id (terms sharing a factor share it).
    pub factor_id: usize,
}

/// Design and estimates of a fitted model.
pub struct ModelInput<'a> {
    /// Number of observations.
    pub n: usize,
    /// Number of fixed-effect columns.
    pub p: usize,
    /// `n x p` fixed-effects design, column major.
    pub x: &'a [f64],
    /// Response minus offset.
    pub y: &'a [f64],
    /// Prior weights (`W = diag(weights)`).
    pub weights: &'a [f64],
    /// Random-effect terms.
    pub terms: Vec<TermInput<'a>>,
    /// lme4's theta: per term, the column-major lower triangle of `Lambda_t`.
    pub theta: &'a [f64],
    /// Residual standard deviation.
    pub sigma: f64,
    /// REML (TRUE) or ML fit.
    pub reml: bool,
    /// Number of observations when the rows are pseudo-rows reproducing the
    /// data's cross-products (a fit from sufficient statistics); `None`: `n`.
    pub n_obs: Option<usize>,
}

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

struct Term<'a> {
    codes: Vec<usize>,
    n_levels: usize,
    k: usize,
    z: &'a [f64],
    lambda: Mat<f64>,
}

/// Members of a block: (term, level, local offset).
type Members = Vec<(usize, usize, usize)>;

struct Layout {
    blocks: Vec<Members>,
    size: Vec<usize>,
    obs_block: Vec<usize>,
    level_off: Vec<Vec<usize>>,
}

/// The random-effects-space summary of the model at the given estimates.
struct QSpace<'a> {
    terms: Vec<Term<'a>>,
    layout: Layout,
    m: Vec<Mat<f64>>,
    nmat: Vec<Mat<f64>>,
    v: Vec<Mat<f64>>,
    phi: Mat<f64>,
    xsx: Mat<f64>,
    beta: Vec<f64>,
    ypy: f64,
    /// Observations that contribute (positive weight; a zero weight drops
    /// the observation's contribution, as in the fit).
    n: usize,
    p: usize,
    sigma: f64,
}

/// A symmetric direction `Z K Z' + a Sigma`; `mats[t]` is the `k_t x k_t`
/// block of term `t` (None = zero).
struct Dir {
    mats: Vec<Option<Mat<f64>>>,
    a: f64,
}

/// Per-direction precomputations.
struct Pre {
    a: f64,
    ts: f64,
    r: Mat<f64>,
    u: Vec<Mat<f64>>,
    mu: Vec<Mat<f64>>,
    y: Vec<Mat<f64>>,
    kv: Vec<Mat<f64>>,
    mkv: Vec<Mat<f64>>,
    nkv: Mat<f64>,
    vkv: f64,
}

fn invalid(msg: impl Into<String>) -> InferenceError {
    InferenceError::InvalidInput(msg.into())
}

fn check_input(inp: &ModelInput<'_>) -> Result<(), InferenceError> {
    let n = inp.n;
    if n == 0 {
        return Err(invalid("no observations"));
    }
    if inp.y.len() != n || inp.weights.len() != n {
        return Err(invalid(
            "`y` and `weights` must have one value per observation",
        ));
    }
    if inp.x.len() != n * inp.p {
        return Err(invalid("`X` must be n x p"));
    }
    if inp.y.iter().chain(inp.x.iter()).any(|v| !v.is_finite()) {
        return Err(invalid("non-finite values in `y` or `X`"));
    }
    if inp.weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(invalid("weights must be finite and non-negative"));
    }
    if !inp.sigma.is_finite() || inp.sigma <= 0.0 {
        return Err(invalid("`sigma` must be positive and finite"));
    }
    let mut n_theta = 0;
    for t in &inp.terms {
        if t.k == 0 || t.codes.len() != n || t.z.len() != n * t.k {
            return Err(invalid("random-effect term with inconsistent dimensions"));
        }
        if t.codes.iter().any(|&c| c < 0 || (c as usize) >= t.n_levels) {
            return Err(invalid("random-effect level code out of range"));
        }
        if t.z.iter().any(|v| !v.is_finite()) {
            return Err(invalid("non-finite values in a random-effect covariate"));
        }
        n_theta += t.k * (t.k + 1) / 2;
    }
    if inp.theta.len() != n_theta {
        return Err(invalid(format!(
            "`theta` has length {}, expected {n_theta}",
            inp.theta.len()
        )));
    }
    if inp.theta.iter().any(|v| !v.is_finite()) {
        return Err(invalid("non-finite `theta`"));
    }
    Ok(())
}

fn build_terms<'a>(inp: &ModelInput<'a>) -> Vec<Term<'a>> {
    let mut pos = 0;
    inp.terms
        .iter()
        .map(|t| {
            let k = t.k;
            let mut lambda = Mat::<f64>::zeros(k, k);
            for c in 0..k {
                for r in c..k {
                    lambda[(r, c)] = inp.theta[pos];
                    pos += 1;
                }
            }
            Term {
                codes: t.codes.iter().map(|&c| c as usize).collect(),
                n_levels: t.n_levels,
                k,
                z: t.z,
                lambda,
            }
        })
        .collect()
}

fn build_layout(inp: &ModelInput<'_>, terms: &[Term<'_>]) -> Layout {
    let n = inp.n;
    let single = !terms.is_empty()
        && inp
            .terms
            .iter()
            .all(|t| t.factor_id == inp.terms[0].factor_id)
        && terms
            .iter()
            .all(|t| t.n_levels == terms[0].n_levels && t.codes == terms[0].codes);
    if single {
        let g = terms[0].n_levels;
        let kk: usize = terms.iter().map(|t| t.k).sum();
        let mut local = Vec::with_capacity(terms.len());
        let mut off = 0;
        for t in terms {
            local.push(off);
            off += t.k;
        }
        let blocks = (0..g)
            .map(|l| (0..terms.len()).map(|t| (t, l, local[t])).collect())
            .collect();
        let level_off = terms
            .iter()
            .enumerate()
            .map(|(t, _)| vec![local[t]; g])
            .collect();
        Layout {
            blocks,
            size: vec![kk; g],
            obs_block: terms[0].codes.clone(),
            level_off,
        }
    } else {
        let mut members = Vec::new();
        let mut level_off = Vec::with_capacity(terms.len());
        let mut off = 0;
        for (ti, t) in terms.iter().enumerate() {
            let mut lo = Vec::with_capacity(t.n_levels);
            for l in 0..t.n_levels {
                members.push((ti, l, off));
                lo.push(off);
                off += t.k;
            }
            level_off.push(lo);
        }
        Layout {
            blocks: vec![members],
            size: vec![off],
            obs_block: vec![0; n],
            level_off,
        }
    }
}

/// `Lambda' X` for a block matrix `X`, with `Lambda` block diagonal
/// (`mats[t]` at every level of term `t` in the block).
fn lambda_t_apply(members: &Members, mats: &[Mat<f64>], x: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(x.nrows(), x.ncols());
    for &(t, _, off) in members {
        let m = &mats[t];
        let k = m.nrows();
        for col in 0..x.ncols() {
            for r in 0..k {
                let mut s = 0.0;
                for c in r..k {
                    s += m[(c, r)] * x[(off + c, col)];
                }
                out[(off + r, col)] = s;
            }
        }
    }
    out
}

impl<'a> QSpace<'a> {
    fn new(inp: &ModelInput<'a>) -> Result<QSpace<'a>, InferenceError> {
        check_input(inp)?;
        let n = inp.n;
        let p = inp.p;
        let terms = build_terms(inp);
        let layout = build_layout(inp, &terms);
        let nb = layout.blocks.len();
        let mut c: Vec<Mat<f64>> = layout.size.iter().map(|&s| Mat::zeros(s, s)).collect();
        let mut zwx: Vec<Mat<f64>> = layout.size.iter().map(|&s| Mat::zeros(s, p)).collect();
        let mut zwy: Vec<Mat<f64>> = layout.size.iter().map(|&s| Mat::zeros(s, 1)).collect();
        let mut xwx = Mat::<f64>::zeros(p, p);
        let mut xwy = Mat::<f64>::zeros(p, 1);
        let mut ywy = 0.0;
        let mut ent: Vec<(usize, f64)> = Vec::new();
        let mut xi = vec![0.0; p];
        for i in 0..n {
            let w = inp.weights[i];
            let yi = inp.y[i];
            for (j, xv) in xi.iter_mut().enumerate() {
                *xv = inp.x[i + n * j];
            }
            for j in 0..p {
                let wx = w * xi[j];
                for jj in 0..=j {
                    xwx[(j, jj)] += wx * xi[jj];
                }
                xwy[(j, 0)] += wx * yi;
            }
            ywy += w * yi * yi;
            ent.clear();
            for (ti, t) in terms.iter().enumerate() {
                let off = layout.level_off[ti][t.codes[i]];
                for cc in 0..t.k {
                    ent.push((off + cc, t.z[i + n * cc]));
                }
            }
            let b = layout.obs_block[i];
            let cb = &mut c[b];
            for &(ra, za) in &ent {
                let wz = w * za;
                if wz == 0.0 {
                    continue;
                }
                for &(rb, zb) in &ent {
                    cb[(ra, rb)] += wz * zb;
                }
                for j in 0..p {
                    zwx[b][(ra, j)] += wz * xi[j];
                }
                zwy[b][(ra, 0)] += wz * yi;
            }
        }
        for j in 0..p {
            for jj in 0..j {
                xwx[(jj, j)] = xwx[(j, jj)];
            }
        }
        let s2 = inp.sigma * inp.sigma;
        let lambdas: Vec<Mat<f64>> = terms.iter().map(|t| t.lambda.clone()).collect();
        let mut m = Vec::with_capacity(nb);
        let mut nmat = Vec::with_capacity(nb);
        let mut zsy = Vec::with_capacity(nb);
        let mut xsx = xwx;
        let mut xsy = xwy;
        let mut ysy = ywy;
        for b in 0..nb {
            let size = layout.size[b];
            let members = &layout.blocks[b];
            // G = Lambda' C and A = Lambda' C Lambda + I, using the block structure of Lambda
            let g = lambda_t_apply(members, &lambdas, c[b].as_ref());
            let mut a = lambda_t_apply(members, &lambdas, g.transpose());
            symmetrise(&mut a);
            for i in 0..size {
                a[(i, i)] += 1.0;
            }
            let ch = Chol::new(a.as_ref(), "Lambda' Z'WZ Lambda + I")?;
            let h = lambda_t_apply(members, &lambdas, zwx[b].as_ref());
            let hy = lambda_t_apply(members, &lambdas, zwy[b].as_ref());
            // with A = L L': C Lambda A^-1 Lambda' C = (L^-1 G)' (L^-1 G)
            let lg = ch.half_solve(g.as_ref());
            let lh = ch.half_solve(h.as_ref());
            let lhy = ch.half_solve(hy.as_ref());
            let mut mb = tmm(lg.as_ref(), lg.as_ref());
            for j in 0..size {
                for i in 0..size {
                    mb[(i, j)] = (c[b][(i, j)] - mb[(i, j)]) / s2;
                }
            }
            symmetrise(&mut mb);
            let gh = tmm(lg.as_ref(), lh.as_ref());
            let mut nbm = Mat::<f64>::zeros(size, p);
            for j in 0..p {
                for i in 0..size {
                    nbm[(i, j)] = (zwx[b][(i, j)] - gh[(i, j)]) / s2;
                }
            }
            let ghy = tmm(lg.as_ref(), lhy.as_ref());
            let mut zb = Mat::<f64>::zeros(size, 1);
            for i in 0..size {
                zb[(i, 0)] = (zwy[b][(i, 0)] - ghy[(i, 0)]) / s2;
            }
            let hah = tmm(lh.as_ref(), lh.as_ref());
            let hahy = tmm(lh.as_ref(), lhy.as_ref());
            for j in 0..p {
                for i in 0..p {
                    xsx[(i, j)] -= hah[(i, j)];
                }
                xsy[(j, 0)] -= hahy[(j, 0)];
            }
            ysy -= tmm(lhy.as_ref(), lhy.as_ref())[(0, 0)];
            m.push(mb);
            nmat.push(nbm);
            zsy.push(zb);
        }
        for j in 0..p {
            for i in 0..p {
                xsx[(i, j)] /= s2;
            }
            xsy[(j, 0)] /= s2;
        }
        symmetrise(&mut xsx);
        ysy /= s2;
        let chx = Chol::new(xsx.as_ref(), "X' Sigma^-1 X")?;
        let phi = chx.inverse();
        let beta_m = chx.solve(xsy.as_ref());
        let beta: Vec<f64> = (0..p).map(|j| beta_m[(j, 0)]).collect();
        let mut ypy = ysy;
        for (j, bj) in beta.iter().enumerate() {
            ypy -= xsy[(j, 0)] * bj;
        }
        let v: Vec<Mat<f64>> = (0..nb)
            .map(|b| {
                let nb_beta = mm(nmat[b].as_ref(), beta_m.as_ref());
                let mut vb = zsy[b].clone();
                for i in 0..vb.nrows() {
                    vb[(i, 0)] -= nb_beta[(i, 0)];
                }
                vb
            })
            .collect();
        if !ypy.is_finite() || beta.iter().any(|b| !b.is_finite()) {
            return Err(InferenceError::NonFinite("GLS estimates".into()));
        }
        Ok(QSpace {
            terms,
            layout,
            m,
            nmat,
            v,
            phi,
            xsx,
            beta,
            ypy,
            // the data's n of a fit from pseudo-rows, else the observations
            // that contribute (positive weight; a zero weight drops the
            // observation's contribution, as in the fit)
            n: inp
                .n_obs
                .unwrap_or_else(|| inp.weights.iter().filter(|w| **w > 0.0).count()),
            p,
            sigma: inp.sigma,
        })
    }

    /// `K X_b` for a block matrix `X_b`.
    fn apply_k(&self, dir: &Dir, b: usize, x: MatRef<'_, f64>) -> Mat<f64> {
        let mut out = Mat::<f64>::zeros(x.nrows(), x.ncols());
        for &(t, _, off) in &self.layout.blocks[b] {
            if let Some(kt) = &dir.mats[t] {
                let k = kt.nrows();
                for col in 0..x.ncols() {
                    for r in 0..k {
                        let mut s = 0.0;
                        for c in 0..k {
                            s += kt[(r, c)] * x[(off + c, col)];
                        }
                        out[(off + r, col)] = s;
                    }
                }
            }
        }
        out
    }

    /// `tr(K M_b)`.
    fn tr_km(&self, dir: &Dir, b: usize) -> f64 {
        let mb = &self.m[b];
        let mut s = 0.0;
        for &(t, _, off) in &self.layout.blocks[b] {
            if let Some(kt) = &dir.mats[t] {
                let k = kt.nrows();
                for r in 0..k {
                    for c in 0..k {
                        s += kt[(r, c)] * mb[(off + c, off + r)];
                    }
                }
            }
        }
        s
    }

    /// Single-direction quantities: `tr(K M_S)`, `N' K N`, `v' K v`.
    fn light(&self, dir: &Dir) -> (f64, Mat<f64>, f64) {
        let mut ts = 0.0;
        let mut r = Mat::<f64>::zeros(self.p, self.p);
        let mut vkv = 0.0;
        for b in 0..self.layout.blocks.len() {
            ts += self.tr_km(dir, b);
            let u = self.apply_k(dir, b, self.nmat[b].as_ref());
            r += tmm(self.nmat[b].as_ref(), u.as_ref());
            let kv = self.apply_k(dir, b, self.v[b].as_ref());
            vkv += tmm(self.v[b].as_ref(), kv.as_ref())[(0, 0)];
        }
        symmetrise(&mut r);
        (ts, r, vkv)
    }

    fn pre(&self, dir: &Dir) -> Pre {
        let nb = self.layout.blocks.len();
        let mut out = Pre {
            a: dir.a,
            ts: 0.0,
            r: Mat::zeros(self.p, self.p),
            u: Vec::with_capacity(nb),
            mu: Vec::with_capacity(nb),
            y: Vec::with_capacity(nb),
            kv: Vec::with_capacity(nb),
            mkv: Vec::with_capacity(nb),
            nkv: Mat::zeros(self.p, 1),
            vkv: 0.0,
        };
        for b in 0..nb {
            let mb = &self.m[b];
            out.ts += self.tr_km(dir, b);
            let u = self.apply_k(dir, b, self.nmat[b].as_ref());
            out.r += tmm(self.nmat[b].as_ref(), u.as_ref());
            out.nkv += tmm(u.as_ref(), self.v[b].as_ref());
            let kv = self.apply_k(dir, b, self.v[b].as_ref());
            out.vkv += tmm(self.v[b].as_ref(), kv.as_ref())[(0, 0)];
            out.mu.push(mm(mb.as_ref(), u.as_ref()));
            out.u.push(u);
            out.y.push(self.apply_k(dir, b, mb.as_ref()));
            out.mkv.push(mm(mb.as_ref(), kv.as_ref()));
            out.kv.push(kv);
        }
        symmetrise(&mut out.r);
        out
    }

    /// Pairwise: `tr(K_i M_S K_j M_S)`, `N' K_i M_S K_j N`, `v' K_i M_S K_j v`.
    fn pair(&self, i: &Pre, j: &Pre) -> (f64, Mat<f64>, f64) {
        let mut t = 0.0;
        let mut q = Mat::<f64>::zeros(self.p, self.p);
        let mut vq = 0.0;
        for b in 0..self.layout.blocks.len() {
            t += tr_ab(i.y[b].as_ref(), j.y[b].as_ref());
            q += tmm(i.u[b].as_ref(), j.mu[b].as_ref());
            vq += tmm(i.kv[b].as_ref(), j.mkv[b].as_ref())[(0, 0)];
        }
        (t, q, vq)
    }

    /// `tr(Phi A)`.
    fn tr_phi(&self, a: &Mat<f64>) -> f64 {
        tr_ab(self.phi.as_ref(), a.as_ref())
    }

    fn lambda_dir(&self, t: usize, mat: Mat<f64>, a: f64) -> Dir {
        let mut mats: Vec<Option<Mat<f64>>> = vec![None; self.terms.len()];
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

fn scaled(m: &Mat<f64>, s: f64) -> Mat<f64> {
    let mut out = m.clone();
    for j in 0..out.ncols() {
        for i in 0..out.nrows() {
            out[(i, j)] *= s;
        }
    }
    out
}

/// Satterthwaite ingredients at the given estimates.
pub fn satterthwaite(inp: &ModelInput<'_>) -> Result<Satterthwaite, InferenceError> {
    let qs = QSpace::new(inp)?;
    let s2 = qs.sigma * qs.sigma;
    let sig = qs.sigma;
    // parameter list: (term, (r, c)) for theta, then sigma
    let mut tpar: Vec<(usize, (usize, usize))> = Vec::new();
    for (t, term) in qs.terms.iter().enumerate() {
        for rc in QSpace::tri_index(term.k) {
            tpar.push((t, rc));
        }
    }
    let nt = tpar.len();
    let npar = nt + 1;
    let mut dirs: Vec<Dir> = tpar
        .iter()
        .map(|&(t, (r, c))| qs.lambda_dir(t, scaled(&d_first(&qs.terms[t].lambda, r, c), s2), 0.0))
        .collect();
    dirs.push(Dir {
        mats: vec![None; qs.terms.len()],
        a: 2.0 / sig,
    });
    let pres: Vec<Pre> = dirs.iter().map(|d| qs.pre(d)).collect();
    let reml = inp.reml;
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
                    d_second(qs.terms[ti].k, rci, rcj)
                        .map(|d| qs.lambda_dir(ti, scaled(&d, s2), 0.0))
                } else {
                    None
                }
            } else if i < nt {
                let (ti, (r, c)) = tpar[i];
                Some(qs.lambda_dir(
                    ti,
                    scaled(&d_first(&qs.terms[ti].lambda, r, c), 2.0 * sig),
                    0.0,
                ))
            } else {
                Some(Dir {
                    mats: vec![None; qs.terms.len()],
                    a: 2.0 / s2,
                })
            };
            let (t1v, q1) = match second {
                Some(d) => {
                    let (ts, r, vkv) = qs.light(&d);
                    (t1(ts, &r, d.a), vkv + d.a * qs.ypy)
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
        beta: qs.beta.clone(),
        vcov_beta: qs.phi.clone(),
        gradient: grad,
        hessian: hess,
        vcov_varpar,
        jacobian,
    })
}

/// Pseudo-inverse keeping positive eigenvalues above 1e-8 (as lmerTest).
fn sym_pinv_positive(h: &Mat<f64>) -> Result<(Mat<f64>, usize), InferenceError> {
    let n = h.nrows();
    if n == 0 {
        return Ok((Mat::zeros(0, 0), 0));
    }
    if (0..n).any(|j| (0..n).any(|i| !h[(i, j)].is_finite())) {
        return Err(InferenceError::NonFinite("Hessian of the deviance".into()));
    }
    let evd = h
        .self_adjoint_eigen(faer::Side::Lower)
        .map_err(|_| InferenceError::NonFinite("eigen decomposition of the Hessian".into()))?;
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

/// Kenward-Roger ingredients at the given (REML) estimates.
pub fn kenward_roger(inp: &ModelInput<'_>) -> Result<KenwardRoger, InferenceError> {
    if !inp.reml {
        return Err(InferenceError::BadArgument(
            "Kenward-Roger's method is only available for REML fits; refit the model with REML = TRUE.".into(),
        ));
    }
    let qs = QSpace::new(inp)?;
    let s2 = qs.sigma * qs.sigma;
    let p = qs.p;
    let mut dirs: Vec<Dir> = Vec::new();
    for (t, term) in qs.terms.iter().enumerate() {
        let k = term.k;
        for (r, c) in QSpace::tri_index(k) {
            let mut e = Mat::<f64>::zeros(k, k);
            e[(r, c)] = 1.0;
            e[(c, r)] = 1.0;
            dirs.push(qs.lambda_dir(t, e, 0.0));
        }
    }
    // residual variance: W^-1 = Sigma / sigma^2 - Z D Z'
    let neg_d: Vec<Option<Mat<f64>>> = qs
        .terms
        .iter()
        .map(|t| Some(scaled(&mm(t.lambda.as_ref(), t.lambda.transpose()), -1.0)))
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
        return Err(InferenceError::NonFinite(
            "Kenward-Roger adjusted covariance".into(),
        ));
    }
    let _ = trace;
    Ok(KenwardRoger {
        phi: qs.phi.clone(),
        phi_adj,
        info,
        w,
        p_list,
        condition,
    })
}
