//! Thin extendr glue: converts R objects to the numerics crate's inputs and
//! results back to plain R lists. Errors never become Rust panics; they are
//! returned as `list(error_kind =, error_message =)` and turned into classed R
//! conditions by the R wrapper (`h_call_rust()`).

mod inference_glue;

use extendr_api::prelude::*;
use lmmr_core::{FitControl, FitInput, FitOutput, LmmError, ReTermInput};

mod convert;

use convert::{count, r_matrix, read_design, reals, DesignArgs};

/// A glue-level failure: an R object of the wrong shape or type.
fn bad(msg: impl Into<String>) -> LmmError {
    LmmError::InvalidInput(msg.into())
}

fn error_list(e: &LmmError) -> List {
    list!(error_kind = e.kind(), error_message = e.to_string())
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
        message = out.message,
        time_budget_spent = out.time_budget_spent
    )
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
    max_time: f64,
) -> List {
    let codes_v: Vec<Robj> = codes.values().collect();
    let z_v: Vec<Robj> = z.values().collect();
    let result = (|| {
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
        let theta0 = if theta_start.is_null() {
            None
        } else {
            Some(reals(&theta_start, "theta_start").map_err(bad)?.to_vec())
        };
        let input = FitInput {
            n: d.n,
            p: d.p,
            x: d.x,
            y: d.y,
            weights: d.weights,
            terms: d
                .terms
                .iter()
                .map(|t| ReTermInput {
                    codes: t.codes,
                    n_levels: t.n_levels,
                    z: t.z,
                    k: t.k,
                    factor_id: t.factor_id,
                })
                .collect(),
        };
        let control = FitControl {
            reml,
            max_iter: count(max_iter, "max_iter").map_err(bad)?,
            tol,
            theta_start: theta0,
            optimize,
            max_time: Some(max_time).filter(|t| t.is_finite()),
        };
        lmmr_core::fit_lmm(&input, &control).map(|out| output_list(out, d.p))
    })();
    match result {
        Ok(l) => l,
        Err(e) => error_list(&e),
    }
}

/// Check prior weights with the one rule the fit uses
/// (`lmmr_core::check_weights`): `list(n_positive =)` or an error list.
/// Internal; called by the model-frame code before anything is built.
/// @noRd
#[extendr]
fn rs_check_weights(weights: Robj) -> List {
    let result = reals(&weights, "weights")
        .map_err(bad)
        .and_then(lmmr_core::check_weights);
    match result {
        Ok(n_pos) => list!(n_positive = n_pos as f64),
        Err(e) => error_list(&e),
    }
}

extendr_module! {
    mod lmmr;
    use inference_glue;
    fn rs_fit_lmm;
    fn rs_check_weights;
}
