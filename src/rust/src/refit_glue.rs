//! extendr glue for batched refits of the kept model to simulated responses
//! (parametric bootstrap, PB tests): `lmmr_core::Model::refit_metric` and
//! `Model::refit_responses`. Errors are returned as error lists, never as
//! panics.

use extendr_api::prelude::*;
use lmmr_core::{FitControl, LmmError};

use crate::convert::{count, r_matrix, reals};
use crate::{bad, with_model};

/// Starting metric of warm-started refits: the (positive definite) Hessian
/// of the criterion at `theta` for the response loaded in the model.
/// @noRd
#[extendr]
fn rs_model_refit_metric(ptr: Robj, theta: Robj, reml: bool) -> List {
    with_model(&ptr, |m| {
        let theta = reals(&theta, "theta").map_err(bad)?;
        let k = theta.len();
        let h = m.refit_metric(theta, reml)?;
        Ok(list!(metric = r_matrix(&h, k, k)))
    })
}

/// Refits the kept model to each column of `ys` (an n x m double matrix,
/// offset subtracted), warm-started at `theta_start` with the starting
/// metric `metric`. Returns per refit the criterion, theta (k x m), beta
/// (p x m), sigma, convergence, whether the light path confirmed it, the
/// numbers of evaluations and the error message (NA when it did not fail).
/// A user interrupt fails the whole call.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn rs_model_refit_many(
    ptr: Robj,
    ys: Robj,
    theta_start: Robj,
    metric: Robj,
    reml: bool,
    max_iter: i32,
    tol: f64,
    max_time: f64,
) -> List {
    with_model(&ptr, |m| {
        let n = m.design().n;
        let p = m.design().p;
        let yv = reals(&ys, "ys").map_err(bad)?;
        if n == 0 || yv.len() % n != 0 {
            return Err(bad(format!("`ys` must have {n} rows")));
        }
        let n_resp = yv.len() / n;
        let theta0 = reals(&theta_start, "theta_start").map_err(bad)?.to_vec();
        let k = theta0.len();
        let metric = reals(&metric, "metric").map_err(bad)?;
        let control = FitControl {
            reml,
            max_iter: count(max_iter, "max_iter").map_err(bad)?,
            tol,
            theta_start: Some(theta0),
            optimize: true,
            n_obs: None,
            log_w_sum: None,
            max_time: Some(max_time).filter(|t| t.is_finite()),
            restarts: false,
        };
        let res = m.refit_responses(yv, n_resp, metric, &control)?;
        let mut objective = vec![f64::NAN; n_resp];
        let mut sigma = vec![f64::NAN; n_resp];
        let mut theta = vec![f64::NAN; k * n_resp];
        let mut beta = vec![f64::NAN; p * n_resp];
        let mut converged = vec![false; n_resp];
        let mut light = vec![false; n_resp];
        let mut n_eval = vec![0i32; n_resp];
        let mut n_grad = vec![0i32; n_resp];
        let mut error: Vec<Option<String>> = vec![None; n_resp];
        for (j, r) in res.into_iter().enumerate() {
            match r {
                Ok(e) => {
                    if e.theta.len() != k || e.beta.len() != p {
                        return Err(LmmError::InvalidInput(
                            "refit estimates of the wrong size".into(),
                        ));
                    }
                    objective[j] = e.objective;
                    sigma[j] = e.sigma;
                    theta[j * k..(j + 1) * k].copy_from_slice(&e.theta);
                    beta[j * p..(j + 1) * p].copy_from_slice(&e.beta);
                    converged[j] = e.converged;
                    light[j] = e.light;
                    n_eval[j] = e.n_eval as i32;
                    n_grad[j] = e.n_grad as i32;
                }
                Err(e) => error[j] = Some(e.to_string()),
            }
        }
        let error: Vec<Option<&str>> = error.iter().map(|e| e.as_deref()).collect();
        Ok(list!(
            objective = objective,
            theta = r_matrix(&theta, k, n_resp),
            beta = r_matrix(&beta, p, n_resp),
            sigma = sigma,
            converged = converged,
            light = light,
            n_eval = n_eval,
            n_grad = n_grad,
            error = error
        ))
    })
}

extendr_module! {
    mod refit_glue;
    fn rs_model_refit_metric;
    fn rs_model_refit_many;
}
