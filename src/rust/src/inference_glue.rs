//! extendr glue for the small-sample inference crate (`lmmr-inference`).
//! Errors are returned as `list(error_kind =, error_message =)`, never as
//! panics; the R side turns them into classed conditions.

use extendr_api::prelude::*;
use lmmr_inference::{kenward_roger, satterthwaite, InferenceError, Mat, ModelInput, TermInput};

fn bad(msg: impl Into<String>) -> InferenceError {
    InferenceError::InvalidInput(msg.into())
}

fn reals<'a>(x: &'a Robj, what: &str) -> std::result::Result<&'a [f64], InferenceError> {
    x.as_real_slice()
        .ok_or_else(|| bad(format!("`{what}` must be a double vector")))
}

fn ints<'a>(x: &'a Robj, what: &str) -> std::result::Result<&'a [i32], InferenceError> {
    x.as_integer_slice()
        .ok_or_else(|| bad(format!("`{what}` must be an integer vector")))
}

fn nonneg(v: i32, what: &str) -> std::result::Result<usize, InferenceError> {
    usize::try_from(v).map_err(|_| bad(format!("`{what}` must be non-negative")))
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
    let mut r = Robj::from(&vals[..]);
    let dims = [nr as i32, nc as i32];
    match r.set_attrib("dim", Robj::from(&dims[..])) {
        Ok(_) => r,
        Err(_) => Robj::from(&vals[..]),
    }
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
) -> List {
    let codes_v: Vec<Robj> = codes.values().collect();
    let z_v: Vec<Robj> = z.values().collect();
    let result = (|| -> std::result::Result<List, InferenceError> {
        let y_s = reals(&y, "y")?;
        let n = y_s.len();
        let x_s = reals(&x, "X")?;
        if n == 0 || x_s.len() % n != 0 {
            return Err(bad("X must have one row per observation"));
        }
        let p = x_s.len() / n;
        let nl = ints(&n_levels, "n_levels")?;
        let ks = ints(&k, "k")?;
        let fid = ints(&factor_id, "factor_id")?;
        let nt = codes_v.len();
        if z_v.len() != nt || nl.len() != nt || ks.len() != nt || fid.len() != nt {
            return Err(bad(
                "random-effect term descriptions have inconsistent lengths",
            ));
        }
        let mut terms = Vec::with_capacity(nt);
        for t in 0..nt {
            terms.push(TermInput {
                codes: ints(&codes_v[t], "codes")?,
                n_levels: nonneg(nl[t], "n_levels")?,
                z: reals(&z_v[t], "Z")?,
                k: nonneg(ks[t], "k")?,
                factor_id: nonneg(fid[t], "factor_id")?,
            });
        }
        let inp = ModelInput {
            n,
            p,
            x: x_s,
            y: y_s,
            weights: reals(&weights, "weights")?,
            terms,
            theta: reals(&theta, "theta")?,
            sigma,
            reml,
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
