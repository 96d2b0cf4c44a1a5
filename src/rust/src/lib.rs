//! Thin extendr glue: converts R objects to the numerics crate's inputs and
//! results back to plain R lists. Errors never become Rust panics; they are
//! returned as `list(error_kind =, error_message =)` and turned into classed R
//! conditions by the R wrapper (`h_call_rust()`).

mod inference_glue;

use extendr_api::prelude::*;
use lmmr_core::{FitControl, FitInput, FitOutput, LmmError, ReTermInput};

/// A glue-level failure: an R object of the wrong shape or type.
fn bad(msg: impl Into<String>) -> LmmError {
    LmmError::InvalidInput(msg.into())
}

fn real_slice<'a>(x: &'a Robj, what: &str) -> std::result::Result<&'a [f64], LmmError> {
    x.as_real_slice()
        .ok_or_else(|| bad(format!("`{what}` must be a double vector")))
}

fn int_slice<'a>(x: &'a Robj, what: &str) -> std::result::Result<&'a [i32], LmmError> {
    x.as_integer_slice()
        .ok_or_else(|| bad(format!("`{what}` must be an integer vector")))
}

fn to_usize(v: i32, what: &str) -> std::result::Result<usize, LmmError> {
    usize::try_from(v).map_err(|_| bad(format!("`{what}` must be non-negative")))
}

fn error_list(e: &LmmError) -> List {
    list!(error_kind = e.kind(), error_message = e.to_string())
}

/// Matrix holding `vals` in column-major order.
fn r_matrix(vals: &[f64], nrow: usize, ncol: usize) -> Robj {
    let mut m = Robj::from(vals);
    let dims = [nrow as i32, ncol as i32];
    match m.set_attrib("dim", Robj::from(&dims[..])) {
        Ok(_) => m,
        Err(_) => Robj::from(vals),
    }
}

fn output_list(out: FitOutput, p: usize) -> List {
    let cond_var: Vec<Robj> = out.cond_var.iter().map(|v| Robj::from(&v[..])).collect();
    list!(
        theta = out.theta,
        lower = out.lower,
        beta = out.beta,
        sigma = out.sigma,
        objective = out.objective,
        ldl2 = out.ldl2,
        ldrx2 = out.ldrx2,
        pwrss = out.pwrss,
        vcov_beta = r_matrix(&out.vcov_beta, p, p),
        b = out.b,
        cond_var = List::from_values(cond_var),
        fitted = out.fitted,
        gradient = out.gradient,
        at_bound = out.at_bound,
        n_eval = out.n_eval as i32,
        converged = out.converged,
        message = out.message
    )
}

/// Owned views of the R inputs, checked for shape.
struct Inputs<'a> {
    n: usize,
    p: usize,
    x: &'a [f64],
    y: &'a [f64],
    weights: &'a [f64],
    terms: Vec<ReTermInput<'a>>,
}

#[allow(clippy::too_many_arguments)]
fn collect_inputs<'a>(
    x: &'a Robj,
    y: &'a Robj,
    weights: &'a Robj,
    codes: &'a [Robj],
    n_levels: &'a Robj,
    z: &'a [Robj],
    k: &'a Robj,
    factor_id: &'a Robj,
) -> std::result::Result<Inputs<'a>, LmmError> {
    let y_s = real_slice(y, "y")?;
    let n = y_s.len();
    let x_s = real_slice(x, "X")?;
    if n == 0 || x_s.len() % n != 0 {
        return Err(bad("X must have one row per observation"));
    }
    let p = x_s.len() / n;
    let w_s = real_slice(weights, "weights")?;
    let nl = int_slice(n_levels, "n_levels")?;
    let ks = int_slice(k, "k")?;
    let fid = int_slice(factor_id, "factor_id")?;
    let n_terms = codes.len();
    if z.len() != n_terms || nl.len() != n_terms || ks.len() != n_terms || fid.len() != n_terms {
        return Err(bad(
            "random-effect term descriptions have inconsistent lengths",
        ));
    }
    let mut terms = Vec::with_capacity(n_terms);
    for t in 0..n_terms {
        terms.push(ReTermInput {
            codes: int_slice(&codes[t], "codes")?,
            n_levels: to_usize(nl[t], "n_levels")?,
            z: real_slice(&z[t], "Z")?,
            k: to_usize(ks[t], "k")?,
            factor_id: to_usize(fid[t], "factor_id")?,
        });
    }
    Ok(Inputs {
        n,
        p,
        x: x_s,
        y: y_s,
        weights: w_s,
        terms,
    })
}

/// Fit a linear mixed model (or evaluate its profiled criterion at
/// `theta_start` when `optimize` is FALSE). Internal; called by `lmm()`.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn rs_fit_lmm(
    x: Robj,
    y: Robj,
    weights: Robj,
    codes: List,
    n_levels: Robj,
    z: List,
    k: Robj,
    factor_id: Robj,
    reml: bool,
    max_iter: i32,
    tol: f64,
    theta_start: Robj,
    optimize: bool,
) -> List {
    let codes_v: Vec<Robj> = codes.values().collect();
    let z_v: Vec<Robj> = z.values().collect();
    let result = (|| {
        let inp = collect_inputs(&x, &y, &weights, &codes_v, &n_levels, &z_v, &k, &factor_id)?;
        let theta0 = if theta_start.is_null() {
            None
        } else {
            Some(real_slice(&theta_start, "theta_start")?.to_vec())
        };
        let input = FitInput {
            n: inp.n,
            p: inp.p,
            x: inp.x,
            y: inp.y,
            weights: inp.weights,
            terms: inp.terms,
        };
        let control = FitControl {
            reml,
            max_iter: to_usize(max_iter, "max_iter")?,
            tol,
            theta_start: theta0,
            optimize,
        };
        lmmr_core::fit_lmm(&input, &control).map(|out| output_list(out, inp.p))
    })();
    match result {
        Ok(l) => l,
        Err(e) => error_list(&e),
    }
}

extendr_module! {
    mod lmmr;
    use inference_glue;
    fn rs_fit_lmm;
}
