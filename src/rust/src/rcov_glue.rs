//! extendr glue for residual-structure (repeated-measures) models
//! (`lmmr_core::fit_rcov`). Errors are returned as
//! `list(error_kind =, error_message =)`, never as panics.

use extendr_api::prelude::*;
use lmmr_core::{fit_rcov, CovType, LmmError, RcovControl, RcovInput, RcovTerm};

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

/// Fit (or evaluate at `theta_start` when `optimize` is FALSE) a model with
/// a residual covariance structure. Internal; called by `lmm()`.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn rs_fit_rcov(
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
    reml: bool,
    max_iter: i32,
    gtol: f64,
    theta_start: Robj,
    optimize: bool,
) -> List {
    let result = (|| -> std::result::Result<List, LmmError> {
        let y = reals(&y, "y").map_err(bad)?;
        let n = y.len();
        let x = reals(&x, "X").map_err(bad)?;
        if n == 0 || x.len() % n != 0 {
            return Err(bad("X must have one row per observation"));
        }
        let p = x.len() / n;
        let coords_v = reals(&coords, "coords").map_err(bad)?;
        let n_coord = coords_v.len().checked_div(n).unwrap_or(0);
        let subj_start = ints(&subj_start, "subj_start")?;
        let visit = ints(&visit, "visit")?;
        let subj_group = ints(&subj_group, "subj_group")?;
        let subj_pattern = ints(&subj_pattern, "subj_pattern")?;
        let cluster_start = ints(&cluster_start, "cluster_start")?;
        let ks = ints(&k, "k")?;
        let codes_v: Vec<Robj> = codes.values().collect();
        let z_v: Vec<Robj> = z.values().collect();
        if codes_v.len() != ks.len() || z_v.len() != ks.len() {
            return Err(bad(
                "random-effect term descriptions have inconsistent lengths",
            ));
        }
        let mut terms = Vec::with_capacity(ks.len());
        for t in 0..ks.len() {
            terms.push(RcovTerm {
                codes: codes_v[t]
                    .as_integer_slice()
                    .ok_or_else(|| bad("`codes` must be integer vectors"))?,
                z: reals(&z_v[t], "Z").map_err(bad)?,
                k: ks[t],
            });
        }
        let inp = RcovInput {
            n,
            p,
            x,
            y,
            subj_start: &subj_start,
            visit: &visit,
            coords: coords_v,
            n_coord,
            subj_group: &subj_group,
            subj_pattern: &subj_pattern,
            cluster_start: &cluster_start,
            cov_type: CovType::parse(cov_type)?,
            m: count(m, "m").map_err(bad)?,
            n_groups: count(n_groups, "n_groups").map_err(bad)?,
            terms,
        };
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
        let out = fit_rcov(&inp, &control)?;
        let re_cov: Vec<Robj> = out.re_cov.iter().map(|v| Robj::from(&v[..])).collect();
        Ok(list!(
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
        ))
    })();
    match result {
        Ok(l) => l,
        Err(e) => list!(error_kind = e.kind(), error_message = e.to_string()),
    }
}

extendr_module! {
    mod rcov_glue;
    fn rs_fit_rcov;
}
