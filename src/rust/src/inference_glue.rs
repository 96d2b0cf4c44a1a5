//! extendr glue for the small-sample inference crate (`lmmr-inference`),
//! which works on the fit's kept model (the external pointer of `rs_model_new`).
//! Errors are returned as `list(error_kind =, error_message =)`, never as
//! panics; the R side turns them into classed conditions.

use extendr_api::prelude::*;
use lmmr_inference::{kenward_roger, satterthwaite, LmmError, Mat, QSpace};

use crate::convert::{r_matrix, reals};
use crate::{bad, with_model};

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

/// Small-sample inference ingredients of the kept model behind `ptr` at
/// `(theta, sigma)`, from its blocks and factorisation. `method` is
/// "satterthwaite", "kenward-roger" or "both". Internal; called from R.
/// @noRd
#[extendr]
fn rs_inference(ptr: Robj, theta: Robj, sigma: f64, reml: bool, method: &str) -> List {
    with_model(&ptr, |model| {
        let want_sat = method == "satterthwaite" || method == "both";
        let want_kr = method == "kenward-roger" || method == "both";
        if !want_sat && !want_kr {
            return Err(bad(format!("unknown method {method:?}")));
        }
        let theta = reals(&theta, "theta").map_err(bad)?;
        let qs = QSpace::new(model, theta, sigma)?;
        let sat: Robj = if want_sat {
            let s = satterthwaite(&qs, reml)?;
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
            let r = kenward_roger(&qs, reml)?;
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
        Ok::<List, LmmError>(list!(satterthwaite = sat, kenward_roger = kr))
    })
}

extendr_module! {
    mod inference_glue;
    fn rs_inference;
}
