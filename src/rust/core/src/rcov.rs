//! Residual covariance structures for repeated measures (MMRM-type models),
//! optionally with random effects whose grouping factors contain the subject.
//!
//! Model: for each cluster c (a subject, or a top-level random-effect level
//! holding whole subjects), `y_c ~ N(X_c beta, V_c)` with
//! `V_c = blockdiag_i R_i(rho) + sum_t Z_t G_t Z_t'`, where `R_i` is the
//! residual covariance of subject i over its observed visits (a sub-matrix of
//! its group's m x m structured matrix, or built from coordinates for the
//! spatial exponential) and `G_t` the covariance of random-effect term t.
//! Nothing is scaled by a common sigma: the criterion is the REML or ML
//! -2 log-likelihood with beta profiled out,
//! `(n - p) log 2pi + log|V| + log|X'V^-1 X| + r'V^-1 r` (REML; ML drops
//! `log|X'V^-1X|` and uses n), as SAS PROC MIXED and nlme report it.
//!
//! Each evaluation works cluster by cluster on preallocated buffers (dense
//! Cholesky of `V_c`; consecutive single-subject clusters with the same
//! visit pattern reuse the factor). The gradient is analytic: with
//! `M_c = V_c^-1 - V_c^-1 X A^-1 X'V_c^-1 - e e'` (`e = V_c^-1 r`, the middle
//! term only for REML), the derivative along any change `dV_c` is
//! `<dV_c, M_c>`, so it is accumulated into one m x m matrix per group and
//! one k x k matrix per random-effect term, then pulled back to the
//! unconstrained parameters through the (tiny) structure maps.
//!
//! Unconstrained parameters (per group, in this order):
//! - `us`: log-Cholesky factor of the m x m covariance (column-major lower
//!   triangle, log of the diagonal);
//! - `cs`: log variance, `t` with `rho = (e^t - 1) / (e^t + m - 1)` in
//!   `(-1/(m-1), 1)`; `csh`: m log standard deviations, then that `t`;
//! - `ar1`: log variance, `atanh(rho)`; `ar1h`: m log sds, `atanh(rho)`;
//! - `toep`: log variance, m - 1 `atanh` partial autocorrelations (every
//!   value gives a positive-definite Toeplitz matrix, Durbin-Levinson);
//!   `toeph`: m log sds, then the same m - 1;
//! - `adh` (ante-dependence of order 1): m log sds, m - 1 `atanh` of the
//!   correlations of adjacent visits (`corr(i, j)` is their product);
//! - `sp_exp`: log variance, `logit(rho)`, `corr = rho^d` for the Euclidean
//!   distance d of two coordinate vectors.
//!
//! Random-effect term t with k columns: the k(k+1)/2 entries of a lower
//! triangular `L_t` (column-major) with `G_t = L_t L_t'`, unconstrained, so a
//! zero variance is reachable.

#![allow(clippy::needless_range_loop)] // index loops are clearer in dense numerics

use crate::LmmError;

mod infer;
pub use infer::{rcov_inference, RcovInference};

const LOG_2PI: f64 = 1.837_877_066_409_345_3;

/// Largest cluster (rows) for the dense per-cluster factorisation: two
/// buffers of this size squared are kept.
pub const MAX_CLUSTER_ROWS: usize = 4_000;

/// A residual covariance structure (mmrm's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CovType {
    /// Unstructured.
    Us,
    /// Compound symmetry (homogeneous).
    Cs,
    /// Heterogeneous compound symmetry.
    Csh,
    /// First-order autoregressive.
    Ar1,
    /// Heterogeneous first-order autoregressive.
    Ar1h,
    /// Toeplitz.
    Toep,
    /// Heterogeneous Toeplitz.
    Toeph,
    /// Heterogeneous ante-dependence of order 1.
    Adh,
    /// Spatial exponential on numeric coordinates.
    SpExp,
}

impl CovType {
    /// Structure from its name (`"us"`, `"cs"`, ...).
    pub fn parse(s: &str) -> Result<Self, LmmError> {
        Ok(match s {
            "us" => CovType::Us,
            "cs" => CovType::Cs,
            "csh" => CovType::Csh,
            "ar1" => CovType::Ar1,
            "ar1h" => CovType::Ar1h,
            "toep" => CovType::Toep,
            "toeph" => CovType::Toeph,
            "adh" => CovType::Adh,
            "sp_exp" => CovType::SpExp,
            _ => {
                return Err(LmmError::InvalidInput(format!(
                    "unknown covariance structure {s:?}"
                )))
            }
        })
    }

    /// Number of parameters of one group's matrix over m visits.
    pub fn n_par(self, m: usize) -> usize {
        match self {
            CovType::Us => m * (m + 1) / 2,
            CovType::Cs | CovType::Ar1 | CovType::SpExp => 2,
            CovType::Csh | CovType::Ar1h => m + 1,
            CovType::Toep => m,
            CovType::Toeph | CovType::Adh => 2 * m - 1,
        }
    }

    /// Does the structure index visits by a factor (all but `sp_exp`)?
    pub fn uses_visits(self) -> bool {
        self != CovType::SpExp
    }
}

/// One random-effect term: 0-based level codes per row (levels never span
/// two clusters), its model-matrix columns (n x k, column-major).
#[derive(Clone, Copy, Debug)]
pub struct RcovTerm<'a> {
    /// Level of each row (0-based).
    pub codes: &'a [i32],
    /// n x k covariate columns, column-major.
    pub z: &'a [f64],
    /// Number of columns.
    pub k: usize,
}

/// Data of a residual-structure model. Rows are sorted by cluster, subject
/// and visit; subjects by cluster.
#[derive(Clone, Debug)]
pub struct RcovInput<'a> {
    /// Number of observations.
    pub n: usize,
    /// Number of fixed-effect columns.
    pub p: usize,
    /// n x p fixed-effects design, column-major.
    pub x: &'a [f64],
    /// Response (offset already subtracted).
    pub y: &'a [f64],
    /// Row offsets of the subjects (length n_subjects + 1).
    pub subj_start: &'a [usize],
    /// Visit index (0-based, < m) of each row (ignored for `sp_exp`).
    pub visit: &'a [usize],
    /// n x n_coord coordinates, column-major (`sp_exp` only).
    pub coords: &'a [f64],
    /// Number of coordinate columns.
    pub n_coord: usize,
    /// Group (0-based) of each subject.
    pub subj_group: &'a [usize],
    /// Visit-pattern id of each subject: consecutive single-subject clusters
    /// with the same id share their residual matrix.
    pub subj_pattern: &'a [usize],
    /// Subject offsets of the clusters (length n_clusters + 1).
    pub cluster_start: &'a [usize],
    /// The structure.
    pub cov_type: CovType,
    /// Dimension (number of visit levels).
    pub m: usize,
    /// Number of groups (one matrix per group).
    pub n_groups: usize,
    /// Random-effect terms.
    pub terms: Vec<RcovTerm<'a>>,
}

/// Options of [`fit_rcov`].
#[derive(Clone, Debug)]
pub struct RcovControl {
    /// REML (true) or ML.
    pub reml: bool,
    /// Maximum number of BFGS iterations.
    pub max_iter: usize,
    /// Convergence tolerance on the largest absolute gradient element.
    pub gtol: f64,
    /// Starting values (unconstrained), or a data-based start.
    pub theta_start: Option<Vec<f64>>,
    /// If false, evaluate at the start only.
    pub optimize: bool,
}

/// Result of [`fit_rcov`].
#[derive(Clone, Debug)]
pub struct RcovOutput {
    /// Unconstrained parameters at the optimum.
    pub theta: Vec<f64>,
    /// Fixed effects (GLS).
    pub beta: Vec<f64>,
    /// (X'V^-1X)^-1, column-major p x p.
    pub vcov_beta: Vec<f64>,
    /// -2 log-likelihood (REML or ML).
    pub objective: f64,
    /// Gradient of the objective in the unconstrained parameters.
    pub gradient: Vec<f64>,
    /// Each group's m x m covariance (column-major, groups after each
    /// other); for `sp_exp` (variance, rho) per group.
    pub group_cov: Vec<f64>,
    /// Each random-effect term's k x k covariance, column-major.
    pub re_cov: Vec<Vec<f64>>,
    /// X beta in the sorted row order.
    pub fitted: Vec<f64>,
    /// BFGS iterations.
    pub n_iter: usize,
    /// Criterion evaluations.
    pub n_eval: usize,
    /// Did the optimiser converge?
    pub converged: bool,
    /// Optimiser message.
    pub message: String,
}

// ---------------------------------------------------------------------------
// Small dense kernels (column-major, leading dimension = number of rows)
// ---------------------------------------------------------------------------

/// In-place lower Cholesky of the leading n x n block (ld = n). False if
/// not numerically positive definite.
fn chol_in_place(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let mut d = a[j + j * n];
        for k in 0..j {
            d -= a[j + k * n] * a[j + k * n];
        }
        if d.is_nan() || d <= 0.0 || !d.is_finite() {
            return false;
        }
        let d = d.sqrt();
        a[j + j * n] = d;
        for i in (j + 1)..n {
            let mut s = a[i + j * n];
            for k in 0..j {
                s -= a[i + k * n] * a[j + k * n];
            }
            a[i + j * n] = s / d;
        }
        for i in 0..j {
            a[i + j * n] = 0.0;
        }
    }
    true
}

/// Solve L x = b in place for `ncol` right-hand sides stored with leading
/// dimension `ldb`.
fn forward_solve(l: &[f64], n: usize, b: &mut [f64], ldb: usize, ncol: usize) {
    for c in 0..ncol {
        let col = &mut b[c * ldb..c * ldb + n];
        for i in 0..n {
            let mut s = col[i];
            for k in 0..i {
                s -= l[i + k * n] * col[k];
            }
            col[i] = s / l[i + i * n];
        }
    }
}

/// Solve L' x = b in place.
fn backward_solve(l: &[f64], n: usize, b: &mut [f64], ldb: usize, ncol: usize) {
    for c in 0..ncol {
        let col = &mut b[c * ldb..c * ldb + n];
        for i in (0..n).rev() {
            let mut s = col[i];
            for k in (i + 1)..n {
                s -= l[k + i * n] * col[k];
            }
            col[i] = s / l[i + i * n];
        }
    }
}

// ---------------------------------------------------------------------------
// Structure maps: unconstrained parameters -> covariance matrices
// ---------------------------------------------------------------------------

fn cs_rho(t: f64, m: usize) -> f64 {
    let e = t.exp();
    if !e.is_finite() {
        return 1.0;
    }
    (e - 1.0) / (e + (m as f64) - 1.0)
}

/// Autocorrelations rho_1..rho_{m-1} from partial autocorrelations
/// (Durbin-Levinson); `a` and `a_old` are scratch of length m.
fn pacf_to_acf(pacf: &[f64], rho: &mut [f64], a: &mut [f64], a_old: &mut [f64]) {
    let p = pacf.len();
    let mut v = 1.0;
    for k in 0..p {
        let phi = pacf[k];
        let mut s = 0.0;
        for j in 0..k {
            s += a[j] * rho[k - 1 - j];
        }
        rho[k] = s + phi * v;
        a_old[..k].copy_from_slice(&a[..k]);
        for j in 0..k {
            a[j] = a_old[j] - phi * a_old[k - 1 - j];
        }
        a[k] = phi;
        v *= 1.0 - phi * phi;
    }
}

/// Scratch for the structure maps.
struct MapScratch {
    sd: Vec<f64>,
    rho: Vec<f64>,
    a: Vec<f64>,
    a_old: Vec<f64>,
    l: Vec<f64>,
}

impl MapScratch {
    fn new(m: usize) -> Self {
        MapScratch {
            sd: vec![0.0; m],
            rho: vec![0.0; m.max(1)],
            a: vec![0.0; m.max(1)],
            a_old: vec![0.0; m.max(1)],
            l: vec![0.0; m * m],
        }
    }
}

/// The m x m covariance of one group (factor-visit structures).
fn group_matrix(ct: CovType, m: usize, th: &[f64], out: &mut [f64], s: &mut MapScratch) {
    let corr_from_lag = |out: &mut [f64], sd: &[f64], rho: &[f64]| {
        for j in 0..m {
            for i in 0..m {
                let lag = i.abs_diff(j);
                let r = if lag == 0 { 1.0 } else { rho[lag - 1] };
                out[i + j * m] = sd[i] * sd[j] * r;
            }
        }
    };
    match ct {
        CovType::Us => {
            let mut pos = 0;
            for j in 0..m {
                for i in 0..m {
                    s.l[i + j * m] = 0.0;
                }
                for i in j..m {
                    s.l[i + j * m] = if i == j { th[pos].exp() } else { th[pos] };
                    pos += 1;
                }
            }
            for j in 0..m {
                for i in j..m {
                    let mut v = 0.0;
                    for k in 0..=j {
                        v += s.l[i + k * m] * s.l[j + k * m];
                    }
                    out[i + j * m] = v;
                    out[j + i * m] = v;
                }
            }
        }
        CovType::Cs | CovType::Csh => {
            let (sd_par, t) = if ct == CovType::Cs {
                (None, th[1])
            } else {
                (Some(&th[..m]), th[m])
            };
            let rho = cs_rho(t, m);
            for i in 0..m {
                s.sd[i] = match sd_par {
                    None => (0.5 * th[0]).exp(),
                    Some(v) => v[i].exp(),
                };
            }
            for j in 0..m {
                for i in 0..m {
                    let r = if i == j { 1.0 } else { rho };
                    out[i + j * m] = s.sd[i] * s.sd[j] * r;
                }
            }
        }
        CovType::Ar1 | CovType::Ar1h => {
            let (t, het) = if ct == CovType::Ar1 {
                (th[1], false)
            } else {
                (th[m], true)
            };
            let rho = t.tanh();
            for i in 0..m {
                s.sd[i] = if het {
                    th[i].exp()
                } else {
                    (0.5 * th[0]).exp()
                };
            }
            let mut pw = 1.0;
            for lag in 0..m.saturating_sub(1) {
                pw *= rho;
                s.rho[lag] = pw;
            }
            corr_from_lag(out, &s.sd, &s.rho);
        }
        CovType::Toep | CovType::Toeph => {
            let (off, het) = if ct == CovType::Toep {
                (1, false)
            } else {
                (m, true)
            };
            for i in 0..m {
                s.sd[i] = if het {
                    th[i].exp()
                } else {
                    (0.5 * th[0]).exp()
                };
            }
            let k = m.saturating_sub(1);
            // partial autocorrelations in the scratch `l`
            for j in 0..k {
                s.l[j] = th[off + j].tanh();
            }
            let (pa, _) = s.l.split_at(k);
            pacf_to_acf(pa, &mut s.rho[..k.max(1)], &mut s.a, &mut s.a_old);
            corr_from_lag(out, &s.sd, &s.rho);
        }
        CovType::Adh => {
            for i in 0..m {
                s.sd[i] = th[i].exp();
            }
            for j in 0..m.saturating_sub(1) {
                s.rho[j] = th[m + j].tanh();
            }
            for j in 0..m {
                out[j + j * m] = s.sd[j] * s.sd[j];
                let mut c = 1.0;
                for i in (j + 1)..m {
                    c *= s.rho[i - 1];
                    out[i + j * m] = s.sd[i] * s.sd[j] * c;
                    out[j + i * m] = out[i + j * m];
                }
            }
        }
        CovType::SpExp => {
            // not a visit matrix: (variance, rho)
            out[0] = th[0].exp();
            out[1] = 1.0 / (1.0 + (-th[1]).exp());
        }
    }
}

/// Squared-free Euclidean distance of rows a and b of the coordinates.
fn distance(inp: &RcovInput, a: usize, b: usize) -> f64 {
    let mut s = 0.0;
    for c in 0..inp.n_coord {
        let d = inp.coords[a + c * inp.n] - inp.coords[b + c * inp.n];
        s += d * d;
    }
    s.sqrt()
}

// ---------------------------------------------------------------------------
// The model: layout, workspace, criterion and gradient
// ---------------------------------------------------------------------------

/// Subjects in a run of identical visit pattern (no random effects), with
/// the cross-products `S_uv[a, b] = sum_i W_i[a, u] W_i[b, v]` of
/// `W_i = [X_i y_i]`, so that each evaluation costs the same for the run
/// whatever its number of subjects.
struct Agg {
    s0: usize,
    s1: usize,
    nb: usize,
    count: f64,
    visits: Vec<usize>,
    group: usize,
    s: Vec<f64>,
}

/// Largest total size (doubles) of the aggregated cross-products.
const AGG_BUDGET: usize = 20_000_000;

struct Layout {
    /// Local random-effect column offset of each row's level, per term
    /// (`loc[t * n + r]`), within its cluster.
    loc: Vec<usize>,
    /// Number of local random-effect columns of each cluster.
    cl_q: Vec<usize>,
    /// (term, local offset) of each random-effect level block per cluster.
    cl_blocks: Vec<Vec<(usize, usize)>>,
    max_q: usize,
    max_subj_rows: usize,
    aggs: Vec<Agg>,
    agg_at: Vec<Option<usize>>,
    n_struct: usize,
    term_off: Vec<usize>,
    n_par: usize,
    max_rows: usize,
    mm: usize,
}

struct Work {
    vg: Vec<f64>,
    jac: Vec<f64>,
    mg: Vec<f64>,
    g_l: Vec<Vec<f64>>,
    g_cov: Vec<Vec<f64>>,
    n_t: Vec<Vec<f64>>,
    map: MapScratch,
    th_tmp: Vec<f64>,
    mat_tmp: Vec<f64>,
    vc: Vec<f64>,
    vinv: Vec<f64>,
    xw: Vec<f64>,
    yw: Vec<f64>,
    u: Vec<f64>,
    w: Vec<f64>,
    e: Vec<f64>,
    a: Vec<f64>,
    la: Vec<f64>,
    b: Vec<f64>,
    beta: Vec<f64>,
    tmp_p: Vec<f64>,
    sp_grad: Vec<f64>,
    cagg: Vec<f64>,
    tmp2: Vec<f64>,
    ainv: Vec<f64>,
    cached_pattern: Option<usize>,
    cached_inv: bool,
    wb: Woodbury,
}

/// Buffers of the Woodbury evaluation of a cluster with random effects.
struct Woodbury {
    lblk: Vec<f64>,
    zt: Vec<f64>,
    k: Vec<f64>,
    mq: Vec<f64>,
    kx: Vec<f64>,
    ky: Vec<f64>,
    rw: Vec<f64>,
    zz: Vec<f64>,
    zu: Vec<f64>,
    ze: Vec<f64>,
    sub: Vec<f64>,
}

fn validate(inp: &RcovInput) -> Result<Layout, LmmError> {
    let bad = |s: &str| Err(LmmError::InvalidInput(s.to_string()));
    let n = inp.n;
    if n == 0 || inp.y.len() != n || inp.x.len() != n * inp.p {
        return bad("X and y must have one row per observation");
    }
    if inp.x.iter().chain(inp.y.iter()).any(|v| !v.is_finite()) {
        return Err(LmmError::NonFinite("X or y has non-finite values".into()));
    }
    let ns = inp.subj_group.len();
    if inp.subj_start.len() != ns + 1 || inp.subj_pattern.len() != ns {
        return bad("subject descriptions have inconsistent lengths");
    }
    if inp.subj_start[0] != 0 || inp.subj_start[ns] != n {
        return bad("subject offsets must cover the rows");
    }
    if inp.subj_start.windows(2).any(|w| w[1] <= w[0]) {
        return bad("subject offsets must be increasing");
    }
    if inp.subj_group.iter().any(|&g| g >= inp.n_groups) {
        return bad("subject group out of range");
    }
    let nc = inp.cluster_start.len().saturating_sub(1);
    if nc == 0 || inp.cluster_start[0] != 0 || inp.cluster_start[nc] != ns {
        return bad("cluster offsets must cover the subjects");
    }
    if inp.cluster_start.windows(2).any(|w| w[1] <= w[0]) {
        return bad("cluster offsets must be increasing");
    }
    let m = inp.m;
    if m == 0 {
        return bad("the structure needs at least one visit level");
    }
    if inp.cov_type.uses_visits() {
        if inp.visit.len() != n || inp.visit.iter().any(|&v| v >= m) {
            return bad("visit index out of range");
        }
    } else if inp.n_coord == 0
        || inp.coords.len() != n * inp.n_coord
        || inp.coords.iter().any(|v| !v.is_finite())
    {
        return bad("sp_exp needs finite coordinates for every row");
    }
    let mut max_rows = 0;
    for c in 0..nc {
        let r0 = inp.subj_start[inp.cluster_start[c]];
        let r1 = inp.subj_start[inp.cluster_start[c + 1]];
        max_rows = max_rows.max(r1 - r0);
    }
    if max_rows > MAX_CLUSTER_ROWS {
        return Err(LmmError::TooLarge(format!(
            "a cluster of {max_rows} observations is too large for the dense per-cluster factorisation"
        )));
    }
    let n_struct = inp.cov_type.n_par(m) * inp.n_groups;
    let mut term_off = Vec::with_capacity(inp.terms.len());
    let mut off = n_struct;
    for t in &inp.terms {
        if t.codes.len() != n || t.z.len() != n * t.k || t.k == 0 {
            return bad("random-effect term has inconsistent dimensions");
        }
        if t.codes.iter().any(|&c| c < 0) || t.z.iter().any(|v| !v.is_finite()) {
            return bad("random-effect term has invalid codes or values");
        }
        term_off.push(off);
        off += t.k * (t.k + 1) / 2;
    }
    let mm = if inp.cov_type.uses_visits() { m * m } else { 2 };
    // local random-effect columns of each cluster (Woodbury)
    let nt = inp.terms.len();
    let mut loc = vec![0usize; nt * n];
    let mut cl_q = vec![0usize; nc];
    let mut cl_blocks = vec![Vec::new(); if nt > 0 { nc } else { 0 }];
    let mut max_q = 0;
    if nt > 0 {
        let mut seen: std::collections::HashMap<i32, usize> = std::collections::HashMap::new();
        for c in 0..nc {
            let r0 = inp.subj_start[inp.cluster_start[c]];
            let r1 = inp.subj_start[inp.cluster_start[c + 1]];
            let mut q = 0;
            for (t, term) in inp.terms.iter().enumerate() {
                seen.clear();
                for r in r0..r1 {
                    let off = *seen.entry(term.codes[r]).or_insert_with(|| {
                        let o = q;
                        q += term.k;
                        cl_blocks[c].push((t, o));
                        o
                    });
                    loc[t * n + r] = off;
                }
            }
            cl_q[c] = q;
            max_q = max_q.max(q);
        }
    }
    let max_subj_rows = inp
        .subj_start
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(0);
    Ok(Layout {
        loc,
        cl_q,
        cl_blocks,
        max_q,
        max_subj_rows,
        aggs: Vec::new(),
        agg_at: Vec::new(),
        n_struct,
        term_off,
        n_par: off,
        max_rows,
        mm,
    })
}

/// Find runs of single-subject clusters sharing a visit pattern and
/// precompute their cross-products (only without random effects).
fn build_aggregates(inp: &RcovInput, lay: &mut Layout) {
    let ns = inp.subj_group.len();
    lay.agg_at = vec![None; ns];
    if !inp.terms.is_empty() || !inp.cov_type.uses_visits() || inp.cluster_start.len() != ns + 1 {
        return;
    }
    let p1 = inp.p + 1;
    let n = inp.n;
    let mut used = 0usize;
    let mut s = 0;
    while s < ns {
        let mut e = s + 1;
        let rows = |k: usize| &inp.visit[inp.subj_start[k]..inp.subj_start[k + 1]];
        while e < ns
            && inp.subj_pattern[e] == inp.subj_pattern[s]
            && inp.subj_group[e] == inp.subj_group[s]
            && rows(e) == rows(s)
        {
            e += 1;
        }
        let nb = inp.subj_start[s + 1] - inp.subj_start[s];
        let size = nb * nb * p1 * p1;
        if e - s >= (2 * p1).max(8) && used + size <= AGG_BUDGET {
            used += size;
            let mut acc = vec![0.0; size];
            let nb2 = nb * nb;
            for k in s..e {
                let r0 = inp.subj_start[k];
                let w = |a: usize, u: usize| -> f64 {
                    if u < inp.p {
                        inp.x[r0 + a + u * n]
                    } else {
                        inp.y[r0 + a]
                    }
                };
                for v in 0..p1 {
                    for u in 0..p1 {
                        let blk = &mut acc[(u + v * p1) * nb2..(u + v * p1 + 1) * nb2];
                        for b in 0..nb {
                            let wb = w(b, v);
                            for a in 0..nb {
                                blk[a + b * nb] += w(a, u) * wb;
                            }
                        }
                    }
                }
            }
            lay.agg_at[s] = Some(lay.aggs.len());
            lay.aggs.push(Agg {
                s0: s,
                s1: e,
                nb,
                count: (e - s) as f64,
                visits: rows(s).to_vec(),
                group: inp.subj_group[s],
                s: acc,
            });
        }
        s = e;
    }
}

fn new_work(inp: &RcovInput, lay: &Layout) -> Work {
    let p = inp.p;
    let nm = lay.max_rows;
    let ng = inp.n_groups;
    let npg = inp.cov_type.n_par(inp.m);
    Work {
        vg: vec![0.0; ng * lay.mm],
        jac: vec![0.0; lay.n_struct * lay.mm],
        mg: vec![0.0; ng * inp.m * inp.m],
        g_l: inp.terms.iter().map(|t| vec![0.0; t.k * t.k]).collect(),
        g_cov: inp.terms.iter().map(|t| vec![0.0; t.k * t.k]).collect(),
        n_t: inp.terms.iter().map(|t| vec![0.0; t.k * t.k]).collect(),
        map: MapScratch::new(inp.m),
        th_tmp: vec![0.0; npg],
        mat_tmp: vec![0.0; lay.mm],
        vc: vec![0.0; nm * nm],
        vinv: vec![0.0; nm * nm],
        xw: vec![0.0; nm * p],
        yw: vec![0.0; nm],
        u: vec![0.0; nm * p],
        w: vec![0.0; nm * p],
        e: vec![0.0; nm],
        a: vec![0.0; p * p],
        la: vec![0.0; p * p],
        b: vec![0.0; p],
        beta: vec![0.0; p],
        tmp_p: vec![0.0; p],
        sp_grad: vec![0.0; 2 * ng],
        cagg: vec![0.0; nm * nm],
        tmp2: vec![0.0; nm * nm],
        ainv: vec![0.0; p * p],
        cached_pattern: None,
        cached_inv: false,
        wb: {
            let q = lay.max_q;
            let ms = lay.max_subj_rows;
            Woodbury {
                lblk: vec![0.0; nm * ms.max(1)],
                zt: vec![0.0; nm * q],
                k: vec![0.0; nm * q],
                mq: vec![0.0; q * q],
                kx: vec![0.0; q * p],
                ky: vec![0.0; q],
                rw: vec![0.0; nm],
                zz: vec![0.0; q * q],
                zu: vec![0.0; q * p],
                ze: vec![0.0; q],
                sub: vec![0.0; ms * ms],
            }
        },
    }
}

/// Step of the central differences for the structure maps' Jacobian.
const JAC_STEP: f64 = 1e-5;

/// Group matrices, their Jacobian (if wanted) and the random-effect
/// covariances at `theta`.
fn set_parameters(inp: &RcovInput, lay: &Layout, ws: &mut Work, theta: &[f64], jac: bool) {
    let npg = inp.cov_type.n_par(inp.m);
    let mm = lay.mm;
    for g in 0..inp.n_groups {
        let th = &theta[g * npg..(g + 1) * npg];
        group_matrix(
            inp.cov_type,
            inp.m,
            th,
            &mut ws.vg[g * mm..(g + 1) * mm],
            &mut ws.map,
        );
        if jac && inp.cov_type.uses_visits() {
            for j in 0..npg {
                let col = (g * npg + j) * mm;
                ws.th_tmp.copy_from_slice(th);
                ws.th_tmp[j] = th[j] + JAC_STEP;
                group_matrix(
                    inp.cov_type,
                    inp.m,
                    &ws.th_tmp,
                    &mut ws.jac[col..col + mm],
                    &mut ws.map,
                );
                ws.th_tmp[j] = th[j] - JAC_STEP;
                group_matrix(
                    inp.cov_type,
                    inp.m,
                    &ws.th_tmp,
                    &mut ws.mat_tmp,
                    &mut ws.map,
                );
                for q in 0..mm {
                    ws.jac[col + q] = (ws.jac[col + q] - ws.mat_tmp[q]) / (2.0 * JAC_STEP);
                }
            }
        }
    }
    for (t, term) in inp.terms.iter().enumerate() {
        let k = term.k;
        let l = &mut ws.g_l[t];
        let mut pos = lay.term_off[t];
        for j in 0..k {
            for i in 0..k {
                l[i + j * k] = 0.0;
            }
            for i in j..k {
                l[i + j * k] = theta[pos];
                pos += 1;
            }
        }
        let g = &mut ws.g_cov[t];
        for j in 0..k {
            for i in 0..k {
                let mut v = 0.0;
                for q in 0..k {
                    v += l[i + q * k] * l[j + q * k];
                }
                g[i + j * k] = v;
            }
        }
    }
}

/// Build V_c for the cluster with rows r0..r1 into `ws.vc` (ld = nc).
fn build_cluster_v(inp: &RcovInput, lay: &Layout, ws: &mut Work, s0: usize, s1: usize) {
    let r0 = inp.subj_start[s0];
    let nc = inp.subj_start[s1] - r0;
    let m = inp.m;
    let vc = &mut ws.vc[..nc * nc];
    vc.iter_mut().for_each(|v| *v = 0.0);
    for s in s0..s1 {
        let (a0, a1) = (inp.subj_start[s], inp.subj_start[s + 1]);
        let g = inp.subj_group[s];
        for rb in a0..a1 {
            for ra in a0..a1 {
                let v = if inp.cov_type.uses_visits() {
                    ws.vg[g * lay.mm + inp.visit[ra] + inp.visit[rb] * m]
                } else {
                    let var = ws.vg[g * 2];
                    let rho = ws.vg[g * 2 + 1];
                    var * rho.powf(distance(inp, ra, rb))
                };
                vc[(ra - r0) + (rb - r0) * nc] = v;
            }
        }
    }
    for (t, term) in inp.terms.iter().enumerate() {
        let k = term.k;
        let g = &ws.g_cov[t];
        for rb in 0..nc {
            let cb = term.codes[r0 + rb];
            for ra in 0..nc {
                if term.codes[r0 + ra] != cb {
                    continue;
                }
                let mut v = 0.0;
                for j in 0..k {
                    let zb = term.z[r0 + rb + j * inp.n];
                    for i in 0..k {
                        v += term.z[r0 + ra + i * inp.n] * g[i + j * k] * zb;
                    }
                }
                vc[ra + rb * nc] += v;
            }
        }
    }
}

/// Factor (and, for the gradient, invert) V of cluster (s0, s1) into
/// `ws.vc` / `ws.vinv`, reusing the previous factor when the cluster is a
/// single subject with the same visit pattern. False if not PD.
fn factor_cluster(
    inp: &RcovInput,
    lay: &Layout,
    ws: &mut Work,
    s0: usize,
    s1: usize,
    inverse: bool,
) -> bool {
    let nc = inp.subj_start[s1] - inp.subj_start[s0];
    let cacheable = inp.terms.is_empty() && s1 == s0 + 1 && inp.cov_type.uses_visits();
    if cacheable && ws.cached_pattern == Some(inp.subj_pattern[s0]) && (!inverse || ws.cached_inv) {
        return true;
    }
    build_cluster_v(inp, lay, ws, s0, s1);
    if !chol_in_place(&mut ws.vc[..nc * nc], nc) {
        ws.cached_pattern = None;
        return false;
    }
    if inverse {
        // V^-1 = L^-T L^-1: solve on the identity
        let vi = &mut ws.vinv[..nc * nc];
        vi.iter_mut().for_each(|v| *v = 0.0);
        for i in 0..nc {
            vi[i + i * nc] = 1.0;
        }
        forward_solve(&ws.vc[..nc * nc], nc, vi, nc, nc);
        backward_solve(&ws.vc[..nc * nc], nc, vi, nc, nc);
    }
    ws.cached_pattern = if cacheable {
        Some(inp.subj_pattern[s0])
    } else {
        None
    };
    ws.cached_inv = inverse;
    true
}

/// Whitened pieces of cluster c with random effects: per-subject Cholesky
/// factors L_i of R_i (in `wb.lblk`), L^-1 X (`xw`), L^-1 y (`yw`),
/// L^-1 Z (`wb.zt`), K = L^-1 Z Lambda L_M^-T (`wb.k`) with
/// L_M L_M' = I + Lambda' Z' R^-1 Z Lambda. Returns log|V_c|, or None if
/// not positive definite. V_c^-1 = L^-T (I - K K') L^-1.
fn woodbury_factor(inp: &RcovInput, lay: &Layout, ws: &mut Work, c: usize) -> Option<f64> {
    let n = inp.n;
    let p = inp.p;
    let m = inp.m;
    let (s0, s1) = (inp.cluster_start[c], inp.cluster_start[c + 1]);
    let r0 = inp.subj_start[s0];
    let nc = inp.subj_start[s1] - r0;
    let q = lay.cl_q[c];
    let mut logdet = 0.0;
    // local Z
    let zt = &mut ws.wb.zt[..nc * q];
    zt.iter_mut().for_each(|v| *v = 0.0);
    for (t, term) in inp.terms.iter().enumerate() {
        for r in 0..nc {
            let off = lay.loc[t * n + r0 + r];
            for j in 0..term.k {
                zt[r + (off + j) * nc] = term.z[r0 + r + j * n];
            }
        }
    }
    for j in 0..p {
        ws.xw[j * nc..j * nc + nc].copy_from_slice(&inp.x[j * n + r0..j * n + r0 + nc]);
    }
    ws.yw[..nc].copy_from_slice(&inp.y[r0..r0 + nc]);
    let mut boff = 0;
    for s in s0..s1 {
        let (a0, a1) = (inp.subj_start[s], inp.subj_start[s + 1]);
        let mi = a1 - a0;
        let g = inp.subj_group[s];
        let l = &mut ws.wb.lblk[boff..boff + mi * mi];
        for b in 0..mi {
            for a in 0..mi {
                let (ra, rb) = (a0 + a, a0 + b);
                l[a + b * mi] = if inp.cov_type.uses_visits() {
                    ws.vg[g * lay.mm + inp.visit[ra] + inp.visit[rb] * m]
                } else {
                    ws.vg[g * 2] * ws.vg[g * 2 + 1].powf(distance(inp, ra, rb))
                };
            }
        }
        if !chol_in_place(l, mi) {
            return None;
        }
        for i in 0..mi {
            logdet += 2.0 * l[i + i * mi].ln();
        }
        let lo = a0 - r0;
        forward_solve(l, mi, &mut ws.xw[lo..], nc, p);
        forward_solve(l, mi, &mut ws.yw[lo..], nc, 1);
        forward_solve(l, mi, &mut ws.wb.zt[lo..], nc, q);
        boff += mi * mi;
    }
    // W = Z~ Lambda (block-diagonal lower factors per level)
    let zt = &ws.wb.zt[..nc * q];
    let kk = &mut ws.wb.k[..nc * q];
    kk.iter_mut().for_each(|v| *v = 0.0);
    for &(t, off) in &lay.cl_blocks[c] {
        let k = inp.terms[t].k;
        let l = &ws.g_l[t];
        for j in 0..k {
            for i in j..k {
                let lij = l[i + j * k];
                if lij == 0.0 {
                    continue;
                }
                for rr in 0..nc {
                    kk[rr + (off + j) * nc] += zt[rr + (off + i) * nc] * lij;
                }
            }
        }
    }
    // M = I + W'W, K = W L_M^-T
    let mq = &mut ws.wb.mq[..q * q];
    for j in 0..q {
        for i in j..q {
            let v: f64 = (0..nc).map(|r| kk[r + i * nc] * kk[r + j * nc]).sum();
            mq[i + j * q] = v + if i == j { 1.0 } else { 0.0 };
            mq[j + i * q] = mq[i + j * q];
        }
    }
    if !chol_in_place(mq, q) {
        return None;
    }
    for i in 0..q {
        logdet += 2.0 * mq[i + i * q].ln();
    }
    // K' = L_M^-1 W'  (solve on the rows of W)
    for r in 0..nc {
        for i in 0..q {
            let mut v = kk[r + i * nc];
            for j in 0..i {
                v -= mq[i + j * q] * kk[r + j * nc];
            }
            kk[r + i * nc] = v / mq[i + i * q];
        }
    }
    Some(logdet)
}

/// Forward (criterion) contribution of a cluster with random effects.
fn woodbury_forward(
    inp: &RcovInput,
    lay: &Layout,
    ws: &mut Work,
    c: usize,
    yy: &mut f64,
    logdet: &mut f64,
) -> bool {
    let p = inp.p;
    let ld = match woodbury_factor(inp, lay, ws, c) {
        Some(v) => v,
        None => return false,
    };
    *logdet += ld;
    let (s0, s1) = (inp.cluster_start[c], inp.cluster_start[c + 1]);
    let nc = inp.subj_start[s1] - inp.subj_start[s0];
    let q = lay.cl_q[c];
    let kk = &ws.wb.k[..nc * q];
    for j in 0..p {
        for i in 0..q {
            ws.wb.kx[i + j * q] = (0..nc).map(|r| kk[r + i * nc] * ws.xw[r + j * nc]).sum();
        }
    }
    for i in 0..q {
        ws.wb.ky[i] = (0..nc).map(|r| kk[r + i * nc] * ws.yw[r]).sum();
    }
    for j in 0..p {
        let xj = &ws.xw[j * nc..j * nc + nc];
        for i in j..p {
            let xi = &ws.xw[i * nc..i * nc + nc];
            let mut v: f64 = xi.iter().zip(xj).map(|(a, b)| a * b).sum();
            for h in 0..q {
                v -= ws.wb.kx[h + i * q] * ws.wb.kx[h + j * q];
            }
            ws.a[i + j * p] += v;
        }
        let mut v: f64 = xj.iter().zip(&ws.yw[..nc]).map(|(a, b)| a * b).sum();
        for h in 0..q {
            v -= ws.wb.kx[h + j * q] * ws.wb.ky[h];
        }
        ws.b[j] += v;
    }
    let mut v: f64 = ws.yw[..nc].iter().map(|a| a * a).sum();
    for h in 0..q {
        v -= ws.wb.ky[h] * ws.wb.ky[h];
    }
    *yy += v;
    true
}

/// Gradient contribution of a cluster with random effects: the subjects'
/// diagonal blocks of M_c into the group matrices, Z'M_cZ into N_t.
fn woodbury_gradient(inp: &RcovInput, lay: &Layout, ws: &mut Work, c: usize, reml: bool) -> bool {
    let p = inp.p;
    let m = inp.m;
    if woodbury_factor(inp, lay, ws, c).is_none() {
        return false;
    }
    let (s0, s1) = (inp.cluster_start[c], inp.cluster_start[c + 1]);
    let r0 = inp.subj_start[s0];
    let nc = inp.subj_start[s1] - r0;
    let q = lay.cl_q[c];
    // whitened residual r~ = y~ - X~ beta
    for r in 0..nc {
        let mut v = ws.yw[r];
        for j in 0..p {
            v -= ws.xw[r + j * nc] * ws.beta[j];
        }
        ws.wb.rw[r] = v;
    }
    let kk = &ws.wb.k[..nc * q];
    // a = (I - K K') X~, e = (I - K K') r~ (whitened: U = L^-T a, e = L^-T ew)
    for j in 0..p {
        for i in 0..q {
            ws.wb.kx[i + j * q] = (0..nc).map(|r| kk[r + i * nc] * ws.xw[r + j * nc]).sum();
        }
    }
    for i in 0..q {
        ws.wb.ky[i] = (0..nc).map(|r| kk[r + i * nc] * ws.wb.rw[r]).sum();
    }
    for r in 0..nc {
        for j in 0..p {
            let mut v = ws.xw[r + j * nc];
            for h in 0..q {
                v -= kk[r + h * nc] * ws.wb.kx[h + j * q];
            }
            ws.u[r + j * nc] = v;
        }
        let mut v = ws.wb.rw[r];
        for h in 0..q {
            v -= kk[r + h * nc] * ws.wb.ky[h];
        }
        ws.e[r] = v;
    }
    // Z'V^-1Z, Z'V^-1X (= Z~' a), Z'V^-1 r (= Z~' ew) in whitened terms:
    // Z~'(I - KK')Z~
    let zt = &ws.wb.zt[..nc * q];
    // ZK = Z~'K (q x q) in the scratch mq (L_M is no longer needed)
    let zk = &mut ws.wb.mq[..q * q];
    for h in 0..q {
        for i in 0..q {
            zk[i + h * q] = (0..nc).map(|r| zt[r + i * nc] * kk[r + h * nc]).sum();
        }
    }
    for j in 0..q {
        for i in j..q {
            let mut v: f64 = (0..nc).map(|r| zt[r + i * nc] * zt[r + j * nc]).sum();
            for h in 0..q {
                v -= zk[i + h * q] * zk[j + h * q];
            }
            ws.wb.zz[i + j * q] = v;
            ws.wb.zz[j + i * q] = v;
        }
        for jj in 0..p {
            ws.wb.zu[j + jj * q] = (0..nc).map(|r| zt[r + j * nc] * ws.u[r + jj * nc]).sum();
        }
        ws.wb.ze[j] = (0..nc).map(|r| zt[r + j * nc] * ws.e[r]).sum();
    }
    // N_t: diagonal level blocks of Z'MZ = zz - zu A^-1 zu' - ze ze'
    for &(t, off) in &lay.cl_blocks[c] {
        let k = inp.terms[t].k;
        for j in 0..k {
            for i in 0..k {
                let (a, b) = (off + i, off + j);
                let mut v = ws.wb.zz[a + b * q] - ws.wb.ze[a] * ws.wb.ze[b];
                if reml {
                    for u in 0..p {
                        for w in 0..p {
                            v -= ws.wb.zu[a + u * q] * ws.ainv[u + w * p] * ws.wb.zu[b + w * q];
                        }
                    }
                }
                ws.n_t[t][i + j * k] += v;
            }
        }
    }
    // subjects' diagonal blocks: M_II = L_i^-T [(I - K_I K_I') - a_I A^-1 a_I' - e_I e_I'] L_i^-1
    let mut boff = 0;
    for s in s0..s1 {
        let (a0, a1) = (inp.subj_start[s], inp.subj_start[s + 1]);
        let mi = a1 - a0;
        let lo = a0 - r0;
        let g = inp.subj_group[s];
        let sub = &mut ws.wb.sub[..mi * mi];
        for b in 0..mi {
            for a in 0..mi {
                let (ra, rb) = (lo + a, lo + b);
                let mut v = if a == b { 1.0 } else { 0.0 };
                for h in 0..q {
                    v -= kk[ra + h * nc] * kk[rb + h * nc];
                }
                v -= ws.e[ra] * ws.e[rb];
                if reml {
                    for u in 0..p {
                        for w in 0..p {
                            v -= ws.u[ra + u * nc] * ws.ainv[u + w * p] * ws.u[rb + w * nc];
                        }
                    }
                }
                sub[a + b * mi] = v;
            }
        }
        let l = &ws.wb.lblk[boff..boff + mi * mi];
        // sub <- L^-T sub L^-1: columns then rows
        backward_solve(l, mi, sub, mi, mi);
        for a in 0..mi {
            for b in (a + 1)..mi {
                sub.swap(a + b * mi, b + a * mi);
            }
        }
        backward_solve(l, mi, sub, mi, mi);
        for b in 0..mi {
            for a in 0..mi {
                let (ra, rb) = (a0 + a, a0 + b);
                let mv = sub[a + b * mi];
                if inp.cov_type.uses_visits() {
                    ws.mg[g * m * m + inp.visit[ra] + inp.visit[rb] * m] += mv;
                } else {
                    let var = ws.vg[g * 2];
                    let rho = ws.vg[g * 2 + 1];
                    let d = distance(inp, ra, rb);
                    let rv = var * rho.powf(d);
                    ws.sp_grad[2 * g] += mv * rv;
                    ws.sp_grad[2 * g + 1] += mv * rv * d * (1.0 - rho);
                }
            }
        }
        boff += mi * mi;
    }
    true
}

/// Criterion (and gradient into `grad` if given). `Ok(None)` when some
/// matrix is not positive definite at `theta` (the optimiser backs off).
fn evaluate(
    inp: &RcovInput,
    lay: &Layout,
    ws: &mut Work,
    theta: &[f64],
    reml: bool,
    grad: Option<&mut [f64]>,
) -> Result<Option<f64>, LmmError> {
    let n = inp.n;
    let p = inp.p;
    let want_grad = grad.is_some();
    if theta.iter().any(|v| !v.is_finite()) {
        return Ok(None);
    }
    set_parameters(inp, lay, ws, theta, want_grad);
    if ws.vg.iter().any(|v| !v.is_finite()) {
        return Ok(None);
    }
    ws.cached_pattern = None;
    ws.a.iter_mut().for_each(|v| *v = 0.0);
    ws.b.iter_mut().for_each(|v| *v = 0.0);
    let mut yy = 0.0;
    let mut logdet = 0.0;
    let ncl = inp.cluster_start.len() - 1;
    let mut c = 0;
    while c < ncl {
        if let Some(ai) = lay.agg_at.get(c).copied().flatten() {
            let ag = &lay.aggs[ai];
            if !factor_cluster(inp, lay, ws, ag.s0, ag.s0 + 1, true) {
                return Ok(None);
            }
            let nb = ag.nb;
            let nb2 = nb * nb;
            let p1 = p + 1;
            for i in 0..nb {
                logdet += ag.count * 2.0 * ws.vc[i + i * nb].ln();
            }
            let vi = &ws.vinv[..nb2];
            for v in 0..p1 {
                for u in v..p1 {
                    let blk = &ag.s[(u + v * p1) * nb2..(u + v * p1 + 1) * nb2];
                    let val: f64 = vi.iter().zip(blk).map(|(a, b)| a * b).sum();
                    if u < p {
                        ws.a[u + v * p] += val;
                    } else if v < p {
                        ws.b[v] += val;
                    } else {
                        yy += val;
                    }
                }
            }
            c = ag.s1;
            continue;
        }
        if !inp.terms.is_empty() {
            if !woodbury_forward(inp, lay, ws, c, &mut yy, &mut logdet) {
                return Ok(None);
            }
            c += 1;
            continue;
        }
        let (s0, s1) = (inp.cluster_start[c], inp.cluster_start[c + 1]);
        c += 1;
        let r0 = inp.subj_start[s0];
        let nc = inp.subj_start[s1] - r0;
        if !factor_cluster(inp, lay, ws, s0, s1, false) {
            return Ok(None);
        }
        let l = &ws.vc[..nc * nc];
        for i in 0..nc {
            logdet += 2.0 * l[i + i * nc].ln();
        }
        for j in 0..p {
            ws.xw[j * nc..j * nc + nc].copy_from_slice(&inp.x[j * n + r0..j * n + r0 + nc]);
        }
        ws.yw[..nc].copy_from_slice(&inp.y[r0..r0 + nc]);
        forward_solve(l, nc, &mut ws.xw, nc, p);
        forward_solve(l, nc, &mut ws.yw, nc, 1);
        for j in 0..p {
            let xj = &ws.xw[j * nc..j * nc + nc];
            for i in j..p {
                let xi = &ws.xw[i * nc..i * nc + nc];
                ws.a[i + j * p] += xi.iter().zip(xj).map(|(a, b)| a * b).sum::<f64>();
            }
            ws.b[j] += xj.iter().zip(&ws.yw[..nc]).map(|(a, b)| a * b).sum::<f64>();
        }
        yy += ws.yw[..nc].iter().map(|v| v * v).sum::<f64>();
    }
    for j in 0..p {
        for i in j..p {
            ws.la[i + j * p] = ws.a[i + j * p];
            ws.la[j + i * p] = ws.a[i + j * p];
        }
    }
    if !chol_in_place(&mut ws.la, p) {
        return Err(LmmError::NotPositiveDefinite(
            "X'V^-1X is singular: the fixed-effects design is rank deficient".into(),
        ));
    }
    let mut logdet_a = 0.0;
    for i in 0..p {
        logdet_a += 2.0 * ws.la[i + i * p].ln();
    }
    ws.beta.copy_from_slice(&ws.b);
    forward_solve(&ws.la, p, &mut ws.beta, p, 1);
    let rss = yy - ws.beta.iter().map(|v| v * v).sum::<f64>();
    backward_solve(&ws.la, p, &mut ws.beta, p, 1);
    let f = if reml {
        (n - p) as f64 * LOG_2PI + logdet + logdet_a + rss
    } else {
        n as f64 * LOG_2PI + logdet + rss
    };
    if !f.is_finite() {
        return Ok(None);
    }
    if let Some(g) = grad {
        gradient(inp, lay, ws, theta, reml, g)?;
    }
    Ok(Some(f))
}

/// M of an aggregated run, `count V^-1 - V^-1 C V^-1` with
/// `C = sum_uv c_uv S_uv`, `c = w w' (+ (X'V^-1X)^-1 for REML)`,
/// `w = (-beta, 1)`, added into its group's m x m matrix.
fn agg_gradient(inp: &RcovInput, ws: &mut Work, ag: &Agg, reml: bool) {
    let p = inp.p;
    let p1 = p + 1;
    let nb = ag.nb;
    let nb2 = nb * nb;
    let m = inp.m;
    let cm = &mut ws.cagg[..nb2];
    cm.iter_mut().for_each(|v| *v = 0.0);
    for v in 0..p1 {
        let wv = if v < p { -ws.beta[v] } else { 1.0 };
        for u in 0..p1 {
            let wu = if u < p { -ws.beta[u] } else { 1.0 };
            let mut coef = wu * wv;
            if reml && u < p && v < p {
                coef += ws.ainv[u + v * p];
            }
            if coef == 0.0 {
                continue;
            }
            let blk = &ag.s[(u + v * p1) * nb2..(u + v * p1 + 1) * nb2];
            for (x, y) in cm.iter_mut().zip(blk) {
                *x += coef * y;
            }
        }
    }
    // tmp2 = C V^-1, then M = count V^-1 - V^-1 tmp2
    let vi = &ws.vinv[..nb2];
    for b in 0..nb {
        for a in 0..nb {
            let mut s = 0.0;
            for k in 0..nb {
                s += cm[a + k * nb] * vi[k + b * nb];
            }
            ws.tmp2[a + b * nb] = s;
        }
    }
    let g = ag.group;
    for b in 0..nb {
        for a in 0..nb {
            let mut s = 0.0;
            for k in 0..nb {
                s += vi[a + k * nb] * ws.tmp2[k + b * nb];
            }
            let mv = ag.count * vi[a + b * nb] - s;
            ws.mg[g * m * m + ag.visits[a] + ag.visits[b] * m] += mv;
        }
    }
}

/// Second pass: accumulate <dV, M> per group and per term, then pull back.
fn gradient(
    inp: &RcovInput,
    lay: &Layout,
    ws: &mut Work,
    theta: &[f64],
    reml: bool,
    grad: &mut [f64],
) -> Result<(), LmmError> {
    let n = inp.n;
    let p = inp.p;
    let m = inp.m;
    ws.mg.iter_mut().for_each(|v| *v = 0.0);
    ws.sp_grad.iter_mut().for_each(|v| *v = 0.0);
    for t in ws.n_t.iter_mut() {
        t.iter_mut().for_each(|v| *v = 0.0);
    }
    ws.cached_pattern = None;
    // (X'V^-1X)^-1 for the aggregated runs
    ws.ainv.iter_mut().for_each(|v| *v = 0.0);
    for i in 0..p {
        ws.ainv[i + i * p] = 1.0;
    }
    forward_solve(&ws.la, p, &mut ws.ainv, p, p);
    backward_solve(&ws.la, p, &mut ws.ainv, p, p);
    let ncl = inp.cluster_start.len() - 1;
    let mut c = 0;
    while c < ncl {
        if let Some(ai) = lay.agg_at.get(c).copied().flatten() {
            let ag = &lay.aggs[ai];
            if !factor_cluster(inp, lay, ws, ag.s0, ag.s0 + 1, true) {
                return Err(LmmError::NotPositiveDefinite(
                    "covariance matrix lost positive definiteness".into(),
                ));
            }
            agg_gradient(inp, ws, ag, reml);
            c = ag.s1;
            continue;
        }
        if !inp.terms.is_empty() {
            if !woodbury_gradient(inp, lay, ws, c, reml) {
                return Err(LmmError::NotPositiveDefinite(
                    "covariance matrix lost positive definiteness".into(),
                ));
            }
            c += 1;
            continue;
        }
        let (s0, s1) = (inp.cluster_start[c], inp.cluster_start[c + 1]);
        c += 1;
        let r0 = inp.subj_start[s0];
        let nc = inp.subj_start[s1] - r0;
        if !factor_cluster(inp, lay, ws, s0, s1, true) {
            return Err(LmmError::NotPositiveDefinite(
                "covariance matrix lost positive definiteness".into(),
            ));
        }
        // e = V^-1 (y - X beta); U = V^-1 X
        for i in 0..nc {
            let mut r = inp.y[r0 + i];
            for j in 0..p {
                r -= inp.x[r0 + i + j * n] * ws.beta[j];
            }
            ws.yw[i] = r;
        }
        let vi = &ws.vinv[..nc * nc];
        for i in 0..nc {
            let mut s = 0.0;
            for k in 0..nc {
                s += vi[i + k * nc] * ws.yw[k];
            }
            ws.e[i] = s;
        }
        if reml {
            for j in 0..p {
                for i in 0..nc {
                    let mut s = 0.0;
                    for k in 0..nc {
                        s += vi[i + k * nc] * inp.x[r0 + k + j * n];
                    }
                    ws.u[i + j * nc] = s;
                }
            }
            // W' = LA^-1 U' row by row: w_i solves LA w = u_i
            for i in 0..nc {
                for j in 0..p {
                    ws.tmp_p[j] = ws.u[i + j * nc];
                }
                forward_solve(&ws.la, p, &mut ws.tmp_p, p, 1);
                for j in 0..p {
                    ws.w[i + j * nc] = ws.tmp_p[j];
                }
            }
        }
        // M = V^-1 - W W' - e e', consumed entry by entry
        let m_entry = |ws: &Work, a: usize, b: usize| -> f64 {
            let mut v = ws.vinv[a + b * nc] - ws.e[a] * ws.e[b];
            if reml {
                for j in 0..p {
                    v -= ws.w[a + j * nc] * ws.w[b + j * nc];
                }
            }
            v
        };
        for s in s0..s1 {
            let (a0, a1) = (inp.subj_start[s], inp.subj_start[s + 1]);
            let g = inp.subj_group[s];
            for rb in a0..a1 {
                for ra in a0..a1 {
                    let mv = m_entry(ws, ra - r0, rb - r0);
                    if inp.cov_type.uses_visits() {
                        ws.mg[g * m * m + inp.visit[ra] + inp.visit[rb] * m] += mv;
                    } else {
                        let var = ws.vg[g * 2];
                        let rho = ws.vg[g * 2 + 1];
                        let d = distance(inp, ra, rb);
                        let rv = var * rho.powf(d);
                        ws.sp_grad[2 * g] += mv * rv;
                        ws.sp_grad[2 * g + 1] += mv * rv * d * (1.0 - rho);
                    }
                }
            }
        }
        for (t, term) in inp.terms.iter().enumerate() {
            let k = term.k;
            for rb in 0..nc {
                let cb = term.codes[r0 + rb];
                for ra in 0..nc {
                    if term.codes[r0 + ra] != cb {
                        continue;
                    }
                    let mv = m_entry(ws, ra, rb);
                    for j in 0..k {
                        let zb = term.z[r0 + rb + j * n];
                        for i in 0..k {
                            ws.n_t[t][i + j * k] += term.z[r0 + ra + i * n] * mv * zb;
                        }
                    }
                }
            }
        }
    }
    grad.iter_mut().for_each(|v| *v = 0.0);
    let npg = inp.cov_type.n_par(m);
    if inp.cov_type.uses_visits() {
        for g in 0..inp.n_groups {
            let mg = &ws.mg[g * m * m..(g + 1) * m * m];
            for j in 0..npg {
                let col = (g * npg + j) * lay.mm;
                grad[g * npg + j] = ws.jac[col..col + lay.mm]
                    .iter()
                    .zip(mg)
                    .map(|(a, b)| a * b)
                    .sum();
            }
        }
    } else {
        grad[..2 * inp.n_groups].copy_from_slice(&ws.sp_grad);
    }
    // G = L L': d f / d L = 2 N L (N symmetric), lower triangle
    for (t, term) in inp.terms.iter().enumerate() {
        let k = term.k;
        let mut pos = lay.term_off[t];
        for j in 0..k {
            for i in j..k {
                let mut v = 0.0;
                for q in 0..k {
                    v += ws.n_t[t][i + q * k] * ws.g_l[t][q + j * k];
                }
                grad[pos] = 2.0 * v;
                pos += 1;
            }
        }
    }
    let _ = theta;
    Ok(())
}

// ---------------------------------------------------------------------------
// Starting values and the optimiser
// ---------------------------------------------------------------------------

/// Data-based start: OLS residual variances per group and visit,
/// correlations zero (rho 0.5 for sp_exp), random effects with a quarter of
/// the residual standard deviation.
fn start_values(inp: &RcovInput, lay: &Layout) -> Result<Vec<f64>, LmmError> {
    let n = inp.n;
    let p = inp.p;
    let mut xtx = vec![0.0; p * p];
    let mut xty = vec![0.0; p];
    for j in 0..p {
        let xj = &inp.x[j * n..(j + 1) * n];
        for i in j..p {
            let xi = &inp.x[i * n..(i + 1) * n];
            let v: f64 = xi.iter().zip(xj).map(|(a, b)| a * b).sum();
            xtx[i + j * p] = v;
            xtx[j + i * p] = v;
        }
        xty[j] = xj.iter().zip(inp.y).map(|(a, b)| a * b).sum();
    }
    if !chol_in_place(&mut xtx, p) {
        return Err(LmmError::NotPositiveDefinite(
            "X'X is singular: the fixed-effects design is rank deficient".into(),
        ));
    }
    forward_solve(&xtx, p, &mut xty, p, 1);
    backward_solve(&xtx, p, &mut xty, p, 1);
    let m = inp.m;
    let ng = inp.n_groups;
    let mut ss = vec![0.0; ng * m];
    let mut cnt = vec![0.0; ng * m];
    let mut tot = 0.0;
    for s in 0..inp.subj_group.len() {
        let g = inp.subj_group[s];
        for r in inp.subj_start[s]..inp.subj_start[s + 1] {
            let mut res = inp.y[r];
            for j in 0..p {
                res -= inp.x[r + j * n] * xty[j];
            }
            let v = if inp.cov_type.uses_visits() {
                inp.visit[r]
            } else {
                0
            };
            ss[g * m + v] += res * res;
            cnt[g * m + v] += 1.0;
            tot += res * res;
        }
    }
    let mut s2 = tot / (n.saturating_sub(p).max(1)) as f64;
    if s2.is_nan() || s2 <= 0.0 || !s2.is_finite() {
        s2 = 1.0;
    }
    let npg = inp.cov_type.n_par(m);
    let mut th = vec![0.0; lay.n_par];
    for g in 0..ng {
        let t = &mut th[g * npg..(g + 1) * npg];
        let var_v = |v: usize| -> f64 {
            let c = cnt[g * m + v];
            let x = if c > 0.0 { ss[g * m + v] / c } else { s2 };
            if x > 0.0 && x.is_finite() {
                x
            } else {
                s2
            }
        };
        let mut gs = 0.0;
        let mut gc = 0.0;
        for v in 0..m {
            gs += ss[g * m + v];
            gc += cnt[g * m + v];
        }
        let gvar = if gc > 0.0 && gs > 0.0 { gs / gc } else { s2 };
        match inp.cov_type {
            CovType::Us => {
                let mut pos = 0;
                for j in 0..m {
                    for i in j..m {
                        t[pos] = if i == j { 0.5 * var_v(j).ln() } else { 0.0 };
                        pos += 1;
                    }
                }
            }
            CovType::Cs | CovType::Ar1 | CovType::Toep => t[0] = gvar.ln(),
            CovType::SpExp => t[0] = gvar.ln(),
            CovType::Csh | CovType::Ar1h | CovType::Toeph | CovType::Adh => {
                for v in 0..m {
                    t[v] = 0.5 * var_v(v).ln();
                }
            }
        }
    }
    for (ti, term) in inp.terms.iter().enumerate() {
        let k = term.k;
        let mut pos = lay.term_off[ti];
        for j in 0..k {
            for i in j..k {
                th[pos] = if i == j { 0.25 * s2.sqrt() } else { 0.0 };
                pos += 1;
            }
        }
    }
    Ok(th)
}

struct BfgsResult {
    x: Vec<f64>,
    f: f64,
    iter: usize,
    evals: usize,
    converged: bool,
    message: String,
}

/// BFGS on the inverse Hessian with a backtracking (Armijo) line search.
/// `fg` returns `Ok(None)` where the criterion is undefined (not positive
/// definite), which the line search treats as +infinity.
fn bfgs<F>(mut fg: F, x0: Vec<f64>, max_iter: usize, gtol: f64) -> Result<BfgsResult, LmmError>
where
    F: FnMut(&[f64], &mut [f64]) -> Result<Option<f64>, LmmError>,
{
    let k = x0.len();
    let mut x = x0;
    let mut g = vec![0.0; k];
    let mut evals = 1;
    let mut f = match fg(&x, &mut g)? {
        Some(v) => v,
        None => {
            return Err(LmmError::NotPositiveDefinite(
                "the covariance matrix is not positive definite at the starting values".into(),
            ))
        }
    };
    let mut h = vec![0.0; k * k];
    let reset = |h: &mut [f64], scale: f64| {
        h.iter_mut().for_each(|v| *v = 0.0);
        for i in 0..k {
            h[i + i * k] = scale;
        }
    };
    reset(&mut h, 1.0);
    let mut first = true;
    let mut d = vec![0.0; k];
    let mut xn = vec![0.0; k];
    let mut gn = vec![0.0; k];
    let mut s = vec![0.0; k];
    let mut yv = vec![0.0; k];
    let mut hy = vec![0.0; k];
    let mut stall = 0;
    for iter in 0..max_iter {
        let gmax = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        if gmax <= gtol {
            return Ok(BfgsResult {
                x,
                f,
                iter,
                evals,
                converged: true,
                message: "gradient below tolerance".into(),
            });
        }
        for i in 0..k {
            d[i] = -(0..k).map(|j| h[i + j * k] * g[j]).sum::<f64>();
        }
        let mut slope: f64 = d.iter().zip(&g).map(|(a, b)| a * b).sum();
        if slope.is_nan() || slope >= 0.0 {
            reset(&mut h, 1.0);
            d.iter_mut().zip(&g).for_each(|(a, b)| *a = -b);
            slope = -g.iter().map(|v| v * v).sum::<f64>();
        }
        let mut step = if first { (1.0 / gmax).min(1.0) } else { 1.0 };
        let mut accepted = None;
        for _ in 0..60 {
            for i in 0..k {
                xn[i] = x[i] + step * d[i];
            }
            evals += 1;
            if let Some(fnew) = fg(&xn, &mut gn)? {
                if fnew <= f + 1e-4 * step * slope {
                    accepted = Some(fnew);
                    break;
                }
            }
            step *= 0.5;
        }
        let fnew = match accepted {
            Some(v) => v,
            None => {
                let ok = gmax <= 1e-3_f64.max(gtol);
                return Ok(BfgsResult {
                    x,
                    f,
                    iter,
                    evals,
                    converged: ok,
                    message: "line search failed to decrease the criterion".into(),
                });
            }
        };
        for i in 0..k {
            s[i] = xn[i] - x[i];
            yv[i] = gn[i] - g[i];
        }
        let sy: f64 = s.iter().zip(&yv).map(|(a, b)| a * b).sum();
        let yy: f64 = yv.iter().map(|v| v * v).sum();
        if sy > 1e-12 * yy.sqrt() * s.iter().map(|v| v * v).sum::<f64>().sqrt() {
            if first {
                reset(&mut h, sy / yy);
            }
            for i in 0..k {
                hy[i] = (0..k).map(|j| h[i + j * k] * yv[j]).sum();
            }
            let yhy: f64 = yv.iter().zip(&hy).map(|(a, b)| a * b).sum();
            let c = (sy + yhy) / (sy * sy);
            for j in 0..k {
                for i in 0..k {
                    h[i + j * k] += c * s[i] * s[j] - (hy[i] * s[j] + s[i] * hy[j]) / sy;
                }
            }
            first = false;
        }
        let df = f - fnew;
        x.copy_from_slice(&xn);
        g.copy_from_slice(&gn);
        f = fnew;
        if df <= 1e-14 * f.abs().max(1.0) {
            stall += 1;
            if stall >= 5 {
                let gmax = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
                return Ok(BfgsResult {
                    x,
                    f,
                    iter: iter + 1,
                    evals,
                    converged: gmax <= 1e-3_f64.max(gtol),
                    message: "relative change of the criterion below machine precision".into(),
                });
            }
        } else {
            stall = 0;
        }
    }
    Ok(BfgsResult {
        x,
        f,
        iter: max_iter,
        evals,
        converged: false,
        message: "maximum number of iterations reached".into(),
    })
}

/// Criterion (-2 log-likelihood) at unconstrained `theta`; `None` if the
/// covariance is not positive definite there.
pub fn rcov_criterion(inp: &RcovInput, theta: &[f64], reml: bool) -> Result<Option<f64>, LmmError> {
    let mut lay = validate(inp)?;
    if theta.len() != lay.n_par {
        return Err(LmmError::InvalidInput(format!(
            "theta must have length {}",
            lay.n_par
        )));
    }
    build_aggregates(inp, &mut lay);
    let mut ws = new_work(inp, &lay);
    evaluate(inp, &lay, &mut ws, theta, reml, None)
}

/// Criterion and analytic gradient at `theta`.
pub fn rcov_criterion_gradient(
    inp: &RcovInput,
    theta: &[f64],
    reml: bool,
) -> Result<Option<(f64, Vec<f64>)>, LmmError> {
    let mut lay = validate(inp)?;
    if theta.len() != lay.n_par {
        return Err(LmmError::InvalidInput(format!(
            "theta must have length {}",
            lay.n_par
        )));
    }
    build_aggregates(inp, &mut lay);
    let mut ws = new_work(inp, &lay);
    let mut g = vec![0.0; lay.n_par];
    Ok(evaluate(inp, &lay, &mut ws, theta, reml, Some(&mut g))?.map(|f| (f, g)))
}

/// Fit a residual-structure model by REML or ML.
pub fn fit_rcov(inp: &RcovInput, control: &RcovControl) -> Result<RcovOutput, LmmError> {
    let mut lay = validate(inp)?;
    build_aggregates(inp, &mut lay);
    let mut ws = new_work(inp, &lay);
    fit_prepared(inp, &lay, &mut ws, control)
}

/// Owned data of a kept residual-structure model.
#[derive(Clone, Debug)]
struct RcovData {
    n: usize,
    p: usize,
    x: Vec<f64>,
    y: Vec<f64>,
    subj_start: Vec<usize>,
    visit: Vec<usize>,
    coords: Vec<f64>,
    n_coord: usize,
    subj_group: Vec<usize>,
    subj_pattern: Vec<usize>,
    cluster_start: Vec<usize>,
    cov_type: CovType,
    m: usize,
    n_groups: usize,
    terms: Vec<(Vec<i32>, Vec<f64>, usize)>,
}

impl RcovData {
    fn input(&self) -> RcovInput<'_> {
        RcovInput {
            n: self.n,
            p: self.p,
            x: &self.x,
            y: &self.y,
            subj_start: &self.subj_start,
            visit: &self.visit,
            coords: &self.coords,
            n_coord: self.n_coord,
            subj_group: &self.subj_group,
            subj_pattern: &self.subj_pattern,
            cluster_start: &self.cluster_start,
            cov_type: self.cov_type,
            m: self.m,
            n_groups: self.n_groups,
            terms: self
                .terms
                .iter()
                .map(|(codes, z, k)| RcovTerm { codes, z, k: *k })
                .collect(),
        }
    }
}

/// A residual-structure model prepared once (validated layout, per-pattern
/// cross-products, workspace) and kept for refits to new responses and for
/// the inference ingredients: the analogue of [`crate::Model`] for
/// [`fit_rcov`]'s models.
pub struct RcovModel {
    data: RcovData,
    lay: Layout,
    ws: Work,
}

impl RcovModel {
    /// Copy the design and prepare it.
    pub fn new(inp: &RcovInput) -> Result<Self, LmmError> {
        let data = RcovData {
            n: inp.n,
            p: inp.p,
            x: inp.x.to_vec(),
            y: inp.y.to_vec(),
            subj_start: inp.subj_start.to_vec(),
            visit: inp.visit.to_vec(),
            coords: inp.coords.to_vec(),
            n_coord: inp.n_coord,
            subj_group: inp.subj_group.to_vec(),
            subj_pattern: inp.subj_pattern.to_vec(),
            cluster_start: inp.cluster_start.to_vec(),
            cov_type: inp.cov_type,
            m: inp.m,
            n_groups: inp.n_groups,
            terms: inp
                .terms
                .iter()
                .map(|t| (t.codes.to_vec(), t.z.to_vec(), t.k))
                .collect(),
        };
        let d = data.input();
        let mut lay = validate(&d)?;
        build_aggregates(&d, &mut lay);
        let ws = new_work(&d, &lay);
        drop(d);
        Ok(RcovModel { data, lay, ws })
    }

    /// Number of (unconstrained) covariance parameters.
    pub fn n_par(&self) -> usize {
        self.lay.n_par
    }

    /// Number of fixed effects.
    pub fn n_fixed(&self) -> usize {
        self.data.p
    }

    /// Replace the response (offset already subtracted); the per-pattern
    /// cross-products are rebuilt.
    pub fn set_response(&mut self, y: &[f64]) -> Result<(), LmmError> {
        if y.len() != self.data.n {
            return Err(LmmError::InvalidInput(format!(
                "the response must have length {}",
                self.data.n
            )));
        }
        if y.iter().any(|v| !v.is_finite()) {
            return Err(LmmError::NonFinite(
                "the response has non-finite values".into(),
            ));
        }
        self.data.y.copy_from_slice(y);
        let d = self.data.input();
        self.lay.aggs.clear();
        build_aggregates(&d, &mut self.lay);
        Ok(())
    }

    /// Fit (or evaluate at the start when `control.optimize` is false).
    pub fn fit(&mut self, control: &RcovControl) -> Result<RcovOutput, LmmError> {
        let d = self.data.input();
        fit_prepared(&d, &self.lay, &mut self.ws, control)
    }

    /// Satterthwaite / Kenward-Roger ingredients at `theta`.
    pub fn inference(
        &mut self,
        theta: &[f64],
        reml: bool,
        kr: bool,
        linear: bool,
    ) -> Result<RcovInference, LmmError> {
        let d = self.data.input();
        infer::inference_prepared(&d, &self.lay, &mut self.ws, theta, reml, kr, linear)
    }
}

/// [`fit_rcov`] on a prepared layout and workspace.
fn fit_prepared(
    inp: &RcovInput,
    lay: &Layout,
    ws: &mut Work,
    control: &RcovControl,
) -> Result<RcovOutput, LmmError> {
    let th0 = match &control.theta_start {
        Some(t) => {
            if t.len() != lay.n_par {
                return Err(LmmError::InvalidInput(format!(
                    "theta_start must have length {}",
                    lay.n_par
                )));
            }
            t.clone()
        }
        None => start_values(inp, lay)?,
    };
    let reml = control.reml;
    let res = if control.optimize {
        bfgs(
            |th, g| evaluate(inp, lay, ws, th, reml, Some(g)),
            th0,
            control.max_iter,
            control.gtol,
        )?
    } else {
        let f = evaluate(inp, lay, ws, &th0, reml, None)?.ok_or_else(|| {
            LmmError::NotPositiveDefinite("covariance not positive definite at theta".into())
        })?;
        BfgsResult {
            x: th0,
            f,
            iter: 0,
            evals: 1,
            converged: true,
            message: "evaluated at the given parameters".into(),
        }
    };
    // final evaluation at the optimum fills beta, the matrices and A
    let mut gfin = vec![0.0; lay.n_par];
    let f = evaluate(inp, lay, ws, &res.x, reml, Some(&mut gfin))?.ok_or_else(|| {
        LmmError::NotPositiveDefinite("covariance not positive definite at the optimum".into())
    })?;
    let p = inp.p;
    // (X'V^-1X)^-1 from its Cholesky factor
    let mut vc = vec![0.0; p * p];
    for i in 0..p {
        vc[i + i * p] = 1.0;
    }
    forward_solve(&ws.la, p, &mut vc, p, p);
    backward_solve(&ws.la, p, &mut vc, p, p);
    let mut fitted = vec![0.0; inp.n];
    for j in 0..p {
        for r in 0..inp.n {
            fitted[r] += inp.x[r + j * inp.n] * ws.beta[j];
        }
    }
    let _ = res.f;
    Ok(RcovOutput {
        theta: res.x,
        beta: ws.beta.clone(),
        vcov_beta: vc,
        objective: f,
        gradient: gfin,
        group_cov: ws.vg.clone(),
        re_cov: ws.g_cov.clone(),
        fitted,
        n_iter: res.iter,
        n_eval: res.evals,
        converged: res.converged,
        message: res.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiny deterministic generator (no dependency).
    struct Lcg(u64);
    impl Lcg {
        fn unif(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
        }
        fn norm(&mut self) -> f64 {
            let u1 = self.unif().max(1e-300);
            let u2 = self.unif();
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
    }

    struct Data {
        n: usize,
        p: usize,
        x: Vec<f64>,
        y: Vec<f64>,
        subj_start: Vec<usize>,
        visit: Vec<usize>,
        coords: Vec<f64>,
        subj_group: Vec<usize>,
        subj_pattern: Vec<usize>,
        cluster_start: Vec<usize>,
        codes: Vec<Vec<i32>>,
        z: Vec<Vec<f64>>,
        k: Vec<usize>,
        m: usize,
    }

    /// Subjects with random missing visits, two groups, clusters of 3
    /// subjects, a cluster-level random intercept and slope.
    fn data(seed: u64, m: usize, n_subj: usize, with_re: bool) -> Data {
        let mut rng = Lcg(seed);
        let mut visit = Vec::new();
        let mut subj_start = vec![0];
        let mut subj_group = Vec::new();
        for s in 0..n_subj {
            let mut any = false;
            for v in 0..m {
                if rng.unif() < 0.8 || (!any && v == m - 1) {
                    visit.push(v);
                    any = true;
                }
            }
            subj_start.push(visit.len());
            subj_group.push(s % 2);
        }
        let n = visit.len();
        let p = 2;
        let mut x = vec![1.0; n * p];
        let mut y = vec![0.0; n];
        let mut coords = vec![0.0; n];
        for r in 0..n {
            x[r + n] = rng.norm();
            coords[r] = visit[r] as f64 + 0.3 * rng.unif();
            y[r] = 1.0 + 0.5 * x[r + n] + rng.norm() + 0.3 * visit[r] as f64;
        }
        let per = if with_re { 3 } else { 1 };
        let mut cluster_start = vec![0];
        let mut s = 0;
        while s < n_subj {
            s = (s + per).min(n_subj);
            cluster_start.push(s);
        }
        let mut codes = Vec::new();
        let mut z = Vec::new();
        let mut k = Vec::new();
        if with_re {
            let mut c = vec![0i32; n];
            for cl in 0..cluster_start.len() - 1 {
                for sj in cluster_start[cl]..cluster_start[cl + 1] {
                    for r in subj_start[sj]..subj_start[sj + 1] {
                        c[r] = cl as i32;
                        y[r] += 0.7 * (cl as f64 * 0.37).sin();
                    }
                }
            }
            let mut zz = vec![1.0; 2 * n];
            for r in 0..n {
                zz[r + n] = visit[r] as f64 / m as f64;
            }
            codes.push(c);
            z.push(zz);
            k.push(2);
        }
        // distinct pattern ids per subject (no reuse) except equal neighbours
        let mut subj_pattern = Vec::new();
        for sj in 0..n_subj {
            subj_pattern.push(sj);
        }
        Data {
            n,
            p,
            x,
            y,
            subj_start,
            visit,
            coords,
            subj_group,
            subj_pattern,
            cluster_start,
            codes,
            z,
            k,
            m,
        }
    }

    fn input(d: &Data, ct: CovType, ng: usize) -> RcovInput<'_> {
        RcovInput {
            n: d.n,
            p: d.p,
            x: &d.x,
            y: &d.y,
            subj_start: &d.subj_start,
            visit: &d.visit,
            coords: &d.coords,
            n_coord: 1,
            subj_group: if ng == 1 {
                // all in group 0: reuse the pattern vector's zeros trick
                &ZEROS[..d.subj_group.len()]
            } else {
                &d.subj_group
            },
            subj_pattern: &d.subj_pattern,
            cluster_start: &d.cluster_start,
            cov_type: ct,
            m: d.m,
            n_groups: ng,
            terms: (0..d.codes.len())
                .map(|t| RcovTerm {
                    codes: &d.codes[t],
                    z: &d.z[t],
                    k: d.k[t],
                })
                .collect(),
        }
    }

    static ZEROS: [usize; 64] = [0; 64];

    /// Naive dense -2 log-likelihood with the full n x n V.
    fn naive(inp: &RcovInput, theta: &[f64], reml: bool) -> f64 {
        let lay = validate(inp).unwrap();
        let mut ws = new_work(inp, &lay);
        set_parameters(inp, &lay, &mut ws, theta, false);
        let n = inp.n;
        let p = inp.p;
        let mut v = vec![0.0; n * n];
        let nsub = inp.subj_group.len();
        for s in 0..nsub {
            let g = inp.subj_group[s];
            for a in inp.subj_start[s]..inp.subj_start[s + 1] {
                for b in inp.subj_start[s]..inp.subj_start[s + 1] {
                    v[a + b * n] = if inp.cov_type.uses_visits() {
                        ws.vg[g * lay.mm + inp.visit[a] + inp.visit[b] * inp.m]
                    } else {
                        ws.vg[2 * g] * ws.vg[2 * g + 1].powf(distance(inp, a, b))
                    };
                }
            }
        }
        for (t, term) in inp.terms.iter().enumerate() {
            let k = term.k;
            for a in 0..n {
                for b in 0..n {
                    if term.codes[a] == term.codes[b] {
                        for i in 0..k {
                            for j in 0..k {
                                v[a + b * n] +=
                                    term.z[a + i * n] * ws.g_cov[t][i + j * k] * term.z[b + j * n];
                            }
                        }
                    }
                }
            }
        }
        // Gauss-Jordan inverse and log-determinant
        let mut inv = vec![0.0; n * n];
        for i in 0..n {
            inv[i + i * n] = 1.0;
        }
        let mut a = v.clone();
        let mut logdet = 0.0;
        for c in 0..n {
            let piv = a[c + c * n];
            logdet += piv.ln();
            for j in 0..n {
                a[c + j * n] /= piv;
                inv[c + j * n] /= piv;
            }
            for r in 0..n {
                if r != c {
                    let f = a[r + c * n];
                    for j in 0..n {
                        a[r + j * n] -= f * a[c + j * n];
                        inv[r + j * n] -= f * inv[c + j * n];
                    }
                }
            }
        }
        let vx = |i: usize, j: usize| -> f64 { inv[i + j * n] };
        let mut xtvx = vec![0.0; p * p];
        let mut xtvy = vec![0.0; p];
        for i in 0..p {
            for j in 0..p {
                let mut s = 0.0;
                for a in 0..n {
                    for b in 0..n {
                        s += inp.x[a + i * n] * vx(a, b) * inp.x[b + j * n];
                    }
                }
                xtvx[i + j * p] = s;
            }
            let mut s = 0.0;
            for a in 0..n {
                for b in 0..n {
                    s += inp.x[a + i * n] * vx(a, b) * inp.y[b];
                }
            }
            xtvy[i] = s;
        }
        // p = 2 closed form
        let det = xtvx[0] * xtvx[3] - xtvx[1] * xtvx[2];
        let beta = [
            (xtvx[3] * xtvy[0] - xtvx[2] * xtvy[1]) / det,
            (-xtvx[1] * xtvy[0] + xtvx[0] * xtvy[1]) / det,
        ];
        let r: Vec<f64> = (0..n)
            .map(|a| inp.y[a] - inp.x[a] * beta[0] - inp.x[a + n] * beta[1])
            .collect();
        let mut q = 0.0;
        for a in 0..n {
            for b in 0..n {
                q += r[a] * vx(a, b) * r[b];
            }
        }
        if reml {
            (n - p) as f64 * LOG_2PI + logdet + det.ln() + q
        } else {
            n as f64 * LOG_2PI + logdet + q
        }
    }

    fn all_types() -> Vec<CovType> {
        vec![
            CovType::Us,
            CovType::Cs,
            CovType::Csh,
            CovType::Ar1,
            CovType::Ar1h,
            CovType::Toep,
            CovType::Toeph,
            CovType::Adh,
            CovType::SpExp,
        ]
    }

    fn some_theta(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = Lcg(seed);
        (0..n).map(|_| 0.4 * rng.norm()).collect()
    }

    #[test]
    fn criterion_matches_naive_dense() {
        for with_re in [false, true] {
            let d = data(7, 4, 12, with_re);
            for ct in all_types() {
                for ng in [1, 2] {
                    let inp = input(&d, ct, ng);
                    let lay = validate(&inp).unwrap();
                    let th = some_theta(lay.n_par, 3);
                    for reml in [true, false] {
                        let f = rcov_criterion(&inp, &th, reml).unwrap().unwrap();
                        let fnv = naive(&inp, &th, reml);
                        assert!(
                            (f - fnv).abs() < 1e-8 * fnv.abs().max(1.0),
                            "{ct:?} re={with_re} ng={ng} reml={reml}: {f} vs {fnv}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn gradient_matches_differences() {
        for with_re in [false, true] {
            let d = data(11, 4, 12, with_re);
            for ct in all_types() {
                let inp = input(&d, ct, 2);
                let lay = validate(&inp).unwrap();
                let th = some_theta(lay.n_par, 5);
                for reml in [true, false] {
                    let (_, g) = rcov_criterion_gradient(&inp, &th, reml).unwrap().unwrap();
                    for j in 0..lay.n_par {
                        let h = 1e-5;
                        let mut tp = th.clone();
                        tp[j] += h;
                        let fp = rcov_criterion(&inp, &tp, reml).unwrap().unwrap();
                        tp[j] -= 2.0 * h;
                        let fm = rcov_criterion(&inp, &tp, reml).unwrap().unwrap();
                        let fd = (fp - fm) / (2.0 * h);
                        assert!(
                            (g[j] - fd).abs() < 1e-5 * fd.abs().max(1.0),
                            "{ct:?} re={with_re} par {j}: {} vs {fd}",
                            g[j]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn pattern_cache_gives_same_criterion() {
        let d = data(13, 3, 20, false);
        let mut d2 = data(13, 3, 20, false);
        // mark equal consecutive visit patterns as shared
        for s in 1..d2.subj_pattern.len() {
            let a = &d.visit[d.subj_start[s - 1]..d.subj_start[s]];
            let b = &d.visit[d.subj_start[s]..d.subj_start[s + 1]];
            if a == b && d.subj_group[s] == d.subj_group[s - 1] {
                d2.subj_pattern[s] = d2.subj_pattern[s - 1];
            }
        }
        let inp = input(&d, CovType::Us, 1);
        let inp2 = input(&d2, CovType::Us, 1);
        let th = some_theta(6, 1);
        let a = rcov_criterion_gradient(&inp, &th, true).unwrap().unwrap();
        let b = rcov_criterion_gradient(&inp2, &th, true).unwrap().unwrap();
        assert!((a.0 - b.0).abs() < 1e-10);
        for j in 0..6 {
            assert!((a.1[j] - b.1[j]).abs() < 1e-8);
        }
    }

    #[test]
    fn aggregated_runs_match_per_subject_path() {
        // every subject complete: one run of 30 subjects
        let m = 3;
        let ns = 30;
        let mut d = data(19, m, ns, false);
        let mut rng = Lcg(5);
        d.visit = (0..ns * m).map(|r| r % m).collect();
        d.n = ns * m;
        d.subj_start = (0..=ns).map(|s| s * m).collect();
        d.x = vec![1.0; d.n * 2];
        d.y = (0..d.n).map(|_| rng.norm()).collect();
        for r in 0..d.n {
            d.x[r + d.n] = rng.norm();
        }
        d.coords = vec![0.0; d.n];
        d.subj_pattern = vec![0; ns];
        d.subj_group = vec![0; ns];
        for ct in [CovType::Us, CovType::Ar1h, CovType::Adh] {
            let inp = input(&d, ct, 1);
            let mut lay = validate(&inp).unwrap();
            let th = some_theta(lay.n_par, 9);
            for reml in [true, false] {
                let mut ws = new_work(&inp, &lay);
                let mut g0 = vec![0.0; lay.n_par];
                let f0 = evaluate(&inp, &lay, &mut ws, &th, reml, Some(&mut g0))
                    .unwrap()
                    .unwrap();
                let mut lay2 = validate(&inp).unwrap();
                build_aggregates(&inp, &mut lay2);
                assert_eq!(lay2.aggs.len(), 1);
                let mut ws2 = new_work(&inp, &lay2);
                let mut g1 = vec![0.0; lay.n_par];
                let f1 = evaluate(&inp, &lay2, &mut ws2, &th, reml, Some(&mut g1))
                    .unwrap()
                    .unwrap();
                assert!(
                    (f0 - f1).abs() < 1e-9 * f0.abs().max(1.0),
                    "{ct:?}: {f0} {f1}"
                );
                for j in 0..lay.n_par {
                    assert!((g0[j] - g1[j]).abs() < 1e-7 * g0[j].abs().max(1.0));
                }
                assert!((f0 - naive(&inp, &th, reml)).abs() < 1e-8 * f0.abs().max(1.0));
            }
            build_aggregates(&inp, &mut lay);
        }
    }

    #[test]
    fn fit_reaches_stationary_point() {
        for ct in all_types() {
            let d = data(17, 4, 40, false);
            let inp = input(&d, ct, 1);
            let ctl = RcovControl {
                reml: true,
                max_iter: 500,
                gtol: 1e-6,
                theta_start: None,
                optimize: true,
            };
            let out = fit_rcov(&inp, &ctl).unwrap();
            assert!(out.converged, "{ct:?}: {}", out.message);
            let gmax = out.gradient.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            assert!(gmax < 1e-3, "{ct:?}: gradient {gmax}");
        }
    }

    #[test]
    fn toeplitz_from_pacf_is_positive_definite() {
        let m = 5;
        let mut s = MapScratch::new(m);
        let mut out = vec![0.0; m * m];
        let th = [0.1, 2.0, -2.5, 1.5, 3.0];
        group_matrix(CovType::Toep, m, &th, &mut out, &mut s);
        assert!(chol_in_place(&mut out, m));
        // AR(1) is the Toeplitz with PACF (rho, 0, 0, ...)
        let th = [0.0, 0.5f64.atanh(), 0.0, 0.0, 0.0];
        group_matrix(CovType::Toep, m, &th, &mut out, &mut s);
        assert!((out[2] - 0.25).abs() < 1e-12 && (out[4] - 0.0625).abs() < 1e-12);
    }

    #[test]
    fn bad_input_is_an_error() {
        let d = data(1, 3, 5, false);
        let mut inp = input(&d, CovType::Ar1, 1);
        let bad_visit = vec![9usize; d.n];
        inp.visit = &bad_visit;
        assert!(matches!(
            rcov_criterion(&inp, &[0.0, 0.0], true),
            Err(LmmError::InvalidInput(_))
        ));
        assert!(CovType::parse("nope").is_err());
    }

    /// The observed Hessian in SAS's parameters, pulled back through the
    /// (finite-difference) Jacobian of phi(theta), equals the
    /// finite-difference Hessian of the criterion in theta at an optimum
    /// (where the gradient term of the chain rule vanishes); the KR
    /// adjusted covariance is symmetric.
    #[test]
    fn inference_hessian_matches_differences() {
        for &with_re in &[false, true] {
            let d = data(11, 4, 60, with_re);
            for ct in all_types() {
                let inp = input(&d, ct, 1);
                let ctl = RcovControl {
                    reml: true,
                    max_iter: 3000,
                    gtol: 1e-8,
                    theta_start: None,
                    optimize: true,
                };
                let fit = fit_rcov(&inp, &ctl).unwrap();
                let th = fit.theta.clone();
                let inf = rcov_inference(&inp, &th, true, true, false).unwrap();
                let k = th.len();
                let p = inp.p;
                let h = 1e-5;
                let mut jm = vec![0.0; k * k];
                let mut ht = vec![0.0; k * k];
                for j in 0..k {
                    let mut tp = th.clone();
                    let mut tm = th.clone();
                    tp[j] += h;
                    tm[j] -= h;
                    let ip = rcov_inference(&inp, &tp, true, false, false).unwrap();
                    let im = rcov_inference(&inp, &tm, true, false, false).unwrap();
                    let gp = rcov_criterion_gradient(&inp, &tp, true).unwrap().unwrap().1;
                    let gm = rcov_criterion_gradient(&inp, &tm, true).unwrap().unwrap().1;
                    for r in 0..k {
                        jm[r + j * k] = (ip.phi[r] - im.phi[r]) / (2.0 * h);
                        ht[r + j * k] = (gp[r] - gm[r]) / (2.0 * h);
                    }
                }
                let mut scale = 0.0f64;
                let mut err = 0.0f64;
                for b in 0..k {
                    for a in 0..k {
                        let mut v = 0.0;
                        for r in 0..k {
                            for s in 0..k {
                                v += jm[r + a * k] * inf.hessian[r + s * k] * jm[s + b * k];
                            }
                        }
                        scale = scale.max(ht[a + b * k].abs());
                        err = err.max((v - ht[a + b * k]).abs());
                    }
                }
                assert!(err <= 1e-4 * scale, "{ct:?} re={with_re}: {err} vs {scale}");
                let adj = inf.vcov_adj.unwrap();
                for j in 0..p {
                    assert!(adj[j + j * p] > 0.0);
                    for i in 0..p {
                        assert!(
                            (adj[i + j * p] - adj[j + i * p]).abs() <= 1e-12 * adj[j + j * p].abs()
                        );
                    }
                }
            }
        }
    }
}
