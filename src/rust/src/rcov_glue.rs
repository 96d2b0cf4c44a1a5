//! extendr glue for residual-structure (repeated-measures) models
//! (the kept `lmmr_core::RcovModel`). Errors are returned as
//! `list(error_kind =, error_message =)`, never as panics.

use extendr_api::prelude::*;
use lmmr_core::{
    CovType, LmmError, RcovControl, RcovInference, RcovInput, RcovModel, RcovOutput, RcovTerm,
};

use crate::convert::{count, r_matrix, reals};

fn bad(msg: impl Into<String>) -> LmmError {
    LmmError::InvalidInput(msg.into())
}

fn ints(x: &Robj, what: &str) -> std::result::Result<Vec<usize>, LmmError> {
    let v = x
        .as_integer_slice()
        .ok_or_else(|| bad(format!("`{what}` must be an integer vector")))?;
    v.iter()
        .map(|&i| usize::try_from(i).map_err(|_| bad(format!("`{what}` must be non-negative"))))
        .collect()
}

/// Owned index vectors of a residual-structure design (the numeric
/// columns stay borrowed from R).
struct RcovIndex {
    subj_start: Vec<usize>,
    visit: Vec<usize>,
    subj_group: Vec<usize>,
    subj_pattern: Vec<usize>,
    cluster_start: Vec<usize>,
    ks: Vec<usize>,
}

/// The R-side description of a design (as passed by `h_rcov_args()`).
struct RcovArgs<'a> {
    x: &'a Robj,
    y: &'a Robj,
    subj_start: &'a Robj,
    visit: &'a Robj,
    coords: &'a Robj,
    subj_group: &'a Robj,
    subj_pattern: &'a Robj,
    cluster_start: &'a Robj,
    cov_type: &'a str,
    m: i32,
    n_groups: i32,
    codes: &'a [Robj],
    z: &'a [Robj],
    k: &'a Robj,
}

impl<'a> RcovArgs<'a> {
    fn index(&self) -> std::result::Result<RcovIndex, LmmError> {
        Ok(RcovIndex {
            subj_start: ints(self.subj_start, "subj_start")?,
            visit: ints(self.visit, "visit")?,
            subj_group: ints(self.subj_group, "subj_group")?,
            subj_pattern: ints(self.subj_pattern, "subj_pattern")?,
            cluster_start: ints(self.cluster_start, "cluster_start")?,
            ks: ints(self.k, "k")?,
        })
    }

    fn input<'b>(&'b self, ix: &'b RcovIndex) -> std::result::Result<RcovInput<'b>, LmmError>
    where
        'a: 'b,
    {
        let y = reals(self.y, "y").map_err(bad)?;
        let n = y.len();
        let x = reals(self.x, "X").map_err(bad)?;
        if n == 0 || x.len() % n != 0 {
            return Err(bad("X must have one row per observation"));
        }
        let p = x.len() / n;
        let coords_v = reals(self.coords, "coords").map_err(bad)?;
        let n_coord = coords_v.len().checked_div(n).unwrap_or(0);
        if self.codes.len() != ix.ks.len() || self.z.len() != ix.ks.len() {
            return Err(bad(
                "random-effect term descriptions have inconsistent lengths",
            ));
        }
        let mut terms = Vec::with_capacity(ix.ks.len());
        for t in 0..ix.ks.len() {
            terms.push(RcovTerm {
                codes: self.codes[t]
                    .as_integer_slice()
                    .ok_or_else(|| bad("`codes` must be integer vectors"))?,
                z: reals(&self.z[t], "Z").map_err(bad)?,
                k: ix.ks[t],
            });
        }
        Ok(RcovInput {
            n,
            p,
            x,
            y,
            subj_start: &ix.subj_start,
            visit: &ix.visit,
            coords: coords_v,
            n_coord,
            subj_group: &ix.subj_group,
            subj_pattern: &ix.subj_pattern,
            cluster_start: &ix.cluster_start,
            cov_type: CovType::parse(self.cov_type)?,
            m: count(self.m, "m").map_err(bad)?,
            n_groups: count(self.n_groups, "n_groups").map_err(bad)?,
            terms,
        })
    }
}

fn fit_list(out: RcovOutput, p: usize) -> List {
    let re_cov: Vec<Robj> = out.re_cov.iter().map(|v| Robj::from(&v[..])).collect();
    list!(
        theta = out.theta,
        beta = out.beta,
        vcov_beta = r_matrix(&out.vcov_beta, p, p),
        objective = out.objective,
        gradient = out.gradient,
        group_cov = out.group_cov,
        re_cov = List::from_values(re_cov),
        fitted = out.fitted,
        n_iter = out.n_iter as i32,
        n_eval = out.n_eval as i32,
        converged = out.converged,
        message = out.message
    )
}

fn inference_list(out: RcovInference) -> List {
    let (kk, p) = (out.k, out.p);
    let w: Robj = match &out.w {
        Some(w) => r_matrix(w, kk, kk),
        None => Robj::from(()),
    };
    let adj: Robj = match &out.vcov_adj {
        Some(a) => r_matrix(a, p, p),
        None => Robj::from(()),
    };
    list!(
        phi = out.phi,
        vcov_beta = r_matrix(&out.vcov_beta, p, p),
        hessian = r_matrix(&out.hessian, kk, kk),
        w = w,
        p_list = out.p_list,
        jacobian = out.jacobian,
        vcov_adj = adj
    )
}

fn error_list(e: &LmmError) -> List {
    list!(error_kind = e.kind(), error_message = e.to_string())
}

/// Build the kept model of a residual-structure design; an external
/// pointer, or an error list. Internal; see `h_rcov_engine_ptr()`.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn rs_rcov_model_new(
    x: Robj,
    y: Robj,
    subj_start: Robj,
    visit: Robj,
    coords: Robj,
    subj_group: Robj,
    subj_pattern: Robj,
    cluster_start: Robj,
    cov_type: &str,
    m: i32,
    n_groups: i32,
    codes: List,
    z: List,
    k: Robj,
) -> Robj {
    let result = (|| -> std::result::Result<RcovModel, LmmError> {
        let codes_v: Vec<Robj> = codes.values().collect();
        let z_v: Vec<Robj> = z.values().collect();
        let args = RcovArgs {
            x: &x,
            y: &y,
            subj_start: &subj_start,
            visit: &visit,
            coords: &coords,
            subj_group: &subj_group,
            subj_pattern: &subj_pattern,
            cluster_start: &cluster_start,
            cov_type,
            m,
            n_groups,
            codes: &codes_v,
            z: &z_v,
            k: &k,
        };
        let ix = args.index()?;
        let inp = args.input(&ix)?;
        RcovModel::new(&inp)
    })();
    match result {
        Ok(m) => ExternalPtr::new(m).into(),
        Err(e) => error_list(&e).into(),
    }
}

fn with_rcov_model(
    ptr: &Robj,
    f: impl FnOnce(&mut RcovModel) -> std::result::Result<List, LmmError>,
) -> List {
    let result = ExternalPtr::<RcovModel>::try_from(ptr)
        .map_err(|_| bad("the fit's residual-structure model pointer is not valid"))
        .and_then(|mut p| match p.try_addr_mut() {
            Ok(m) => f(m),
            Err(_) => Err(bad(
                "the fit's residual-structure model pointer is not valid",
            )),
        });
    match result {
        Ok(l) => l,
        Err(e) => error_list(&e),
    }
}

/// Does `ptr` point to a live residual-structure model (FALSE after
/// `readRDS()`)?
/// @noRd
#[extendr]
fn rs_rcov_model_is_live(ptr: Robj) -> bool {
    ExternalPtr::<RcovModel>::try_from(&ptr)
        .map(|p| p.try_addr().is_ok())
        .unwrap_or(false)
}

/// Replace the kept model's response (offset subtracted, rows in the
/// layout's order).
/// @noRd
#[extendr]
fn rs_rcov_model_set_response(ptr: Robj, y: Robj) -> List {
    with_rcov_model(&ptr, |m| {
        let y = reals(&y, "y").map_err(bad)?;
        m.set_response(y)?;
        Ok(list!(n = y.len() as i32))
    })
}

/// Fit the kept model (or evaluate at `theta_start` when `optimize` is
/// FALSE).
/// @noRd
#[extendr]
fn rs_rcov_model_fit(
    ptr: Robj,
    reml: bool,
    max_iter: i32,
    gtol: f64,
    theta_start: Robj,
    optimize: bool,
) -> List {
    with_rcov_model(&ptr, |m| {
        let theta0 = if theta_start.is_null() {
            None
        } else {
            Some(reals(&theta_start, "theta_start").map_err(bad)?.to_vec())
        };
        let control = RcovControl {
            reml,
            max_iter: count(max_iter, "max_iter").map_err(bad)?,
            gtol,
            theta_start: theta0,
            optimize,
        };
        let p = m.n_fixed();
        Ok(fit_list(m.fit(&control)?, p))
    })
}

/// Satterthwaite / Kenward-Roger ingredients from the kept model at `theta`.
/// @noRd
#[extendr]
fn rs_rcov_model_inference(ptr: Robj, theta: Robj, reml: bool, kr: bool, linear: bool) -> List {
    with_rcov_model(&ptr, |m| {
        let theta = reals(&theta, "theta").map_err(bad)?;
        Ok(inference_list(m.inference(theta, reml, kr, linear)?))
    })
}

extendr_module! {
    mod rcov_glue;
    fn rs_rcov_model_new;
    fn rs_rcov_model_is_live;
    fn rs_rcov_model_set_response;
    fn rs_rcov_model_fit;
    fn rs_rcov_model_inference;
}
