//! extendr glue for the small-sample inference crate (`lmmr-inference`).
//! Errors are returned as `list(error_kind =, error_message =)`, never as
//! panics; the R side turns them into classed conditions.

use extendr_api::prelude::*;
use lmmr_inference::{kenward_roger, satterthwaite, InferenceError, Mat, ModelInput, TermInput};

use crate::convert::{r_matrix, read_design, reals, DesignArgs};

fn bad(msg: impl Into<String>) -> InferenceError {
    InferenceError::InvalidInput(msg.into())
}

/// Column-major R matrix from a faer matrix.
fn rmat(m: &Mat<f64>) -> Robj {
    let (nr, nc) = (m.nrows(), m.ncols());
    let mut vals = Vec::with_capacity(nr * nc);
    for j in 0..nc {
        for i in 0..nr {
            vals.push(m[(i, j)]);
        }
    }
    r_matrix(&vals, nr, nc)
}

fn rmat_list(ms: &[Mat<f64>]) -> Robj {
    let v: Vec<Robj> = ms.iter().map(rmat).collect();
    List::from_values(v).into()
}

/// Small-sample inference ingredients for a fitted model. `method` is
/// "satterthwaite", "kenward-roger" or "both". Internal; called from R.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn rs_inference(
    x: Robj,
    y: Robj,
    weights: Robj,
    codes: List,
    n_levels: Robj,
    z: List,
    k: Robj,
    factor_id: Robj,
    theta: Robj,
    sigma: f64,
    reml: bool,
    method: &str,
    n_obs: Robj,
) -> List {
    let codes_v: Vec<Robj> = codes.values().collect();
    let z_v: Vec<Robj> = z.values().collect();
    let result = (|| -> std::result::Result<List, InferenceError> {
        let d = read_design(&DesignArgs {
            x: &x,
            y: &y,
            weights: &weights,
            codes: &codes_v,
            n_levels: &n_levels,
            z: &z_v,
            k: &k,
            factor_id: &factor_id,
        })
        .map_err(bad)?;
        let inp = ModelInput {
            n: d.n,
            p: d.p,
            x: d.x,
            y: d.y,
            weights: d.weights,
            terms: d
                .terms
                .iter()
                .map(|t| TermInput {
                    codes: t.codes,
                    n_levels: t.n_levels,
                    z: t.z,
                    k: t.k,
                    factor_id: t.factor_id,
                })
                .collect(),
            theta: reals(&theta, "theta").map_err(bad)?,
            sigma,
            reml,
            n_obs: if n_obs.is_null() {
                None
            } else {
                match reals(&n_obs, "n_obs").map_err(bad)? {
                    [x] if x.is_finite() && *x >= 1.0 && x.fract() == 0.0 => Some(*x as usize),
                    _ => return Err(bad("`n_obs` must be one positive whole number")),
                }
            },
        };
        let want_sat = method == "satterthwaite" || method == "both";
        let want_kr = method == "kenward-roger" || method == "both";
        if !want_sat && !want_kr {
            return Err(bad(format!("unknown method {method:?}")));
        }
        let sat: Robj = if want_sat {
            let s = satterthwaite(&inp)?;
            list!(
                beta = s.beta,
                vcov_beta = rmat(&s.vcov_beta),
                gradient = s.gradient,
                hessian = rmat(&s.hessian),
                vcov_varpar = rmat(&s.vcov_varpar),
                jacobian = rmat_list(&s.jacobian)
            )
            .into()
        } else {
            Robj::from(())
        };
        let kr: Robj = if want_kr {
            let r = kenward_roger(&inp)?;
            list!(
                phi = rmat(&r.phi),
                phi_adj = rmat(&r.phi_adj),
                info = rmat(&r.info),
                w = rmat(&r.w),
                p_list = rmat_list(&r.p_list),
                condition = r.condition
            )
            .into()
        } else {
            Robj::from(())
        };
        Ok(list!(satterthwaite = sat, kenward_roger = kr))
    })();
    match result {
        Ok(l) => l,
        Err(e) => list!(error_kind = e.kind(), error_message = e.to_string()),
    }
}

extendr_module! {
    mod inference_glue;
    fn rs_inference;
}
