//! Thin extendr glue: converts R objects to the numerics crate's inputs and
//! results back to plain R lists. Errors never become Rust panics; they are
//! returned as `list(error_kind =, error_message =)` and turned into classed R
//! conditions by the R wrapper (`h_call_rust()`).

mod inference_glue;
mod rcov_glue;
mod refit_glue;

use extendr_api::prelude::*;
use lmmr_core::{Design, FitControl, FitOutput, Kept, LmmError, Model, ReTerm, Values};
use std::sync::Arc;

mod convert;

use convert::{count, r_matrix, read_design, reals, DesignArgs};

/// A glue-level failure: an R object of the wrong shape or type.
pub(crate) fn bad(msg: impl Into<String>) -> LmmError {
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
        n_grad = out.n_grad as i32,
        converged = out.converged,
        message = out.message,
        time_budget_spent = out.time_budget_spent
    )
}

/// The thread R runs on (set by the first `rs_model_new()` call, which R
/// makes from its main thread).
static R_MAIN_THREAD: std::sync::OnceLock<std::thread::ThreadId> = std::sync::OnceLock::new();

/// Is a Ctrl-C pending? Runs `R_CheckUserInterrupt()` inside
/// `R_ToplevelExec()` so that an interrupt unwinds only to here (never
/// through Rust frames); the interrupt is then reported as an error.
fn r_interrupt_pending() -> bool {
    use std::os::raw::c_void;
    extern "C" {
        fn R_ToplevelExec(fun: Option<unsafe extern "C" fn(*mut c_void)>, data: *mut c_void)
            -> i32;
        fn R_CheckUserInterrupt();
    }
    unsafe extern "C" fn check(_: *mut c_void) {
        R_CheckUserInterrupt();
    }
    // The R API must only be called from R's main thread: a criterion
    // evaluated on a worker thread never checks.
    if R_MAIN_THREAD.get() != Some(&std::thread::current().id()) {
        return false;
    }
    // SAFETY: on R's main thread; the callback touches no Rust state.
    unsafe { R_ToplevelExec(Some(check), std::ptr::null_mut()) == 0 }
}

/// An R vector (or matrix) kept by a model, its values read from the
/// passes' threads. Holding the `Robj` keeps it from R's garbage collector,
/// and as a reference R counts it makes R copy the vector before any change
/// to it (copy-on-modify), so the values never change while the model
/// lives. The model, and with it the `Robj`, is dropped on R's main thread
/// (by the external pointer's finaliser or an error return).
struct RVector<T> {
    ptr: *const T,
    len: usize,
    _keep: Robj,
}

impl<T> RVector<T> {
    /// `values` must be the data of `robj`.
    fn new(robj: &Robj, values: &[T]) -> RVector<T> {
        RVector {
            ptr: values.as_ptr(),
            len: values.len(),
            _keep: robj.clone(),
        }
    }
}

// SAFETY: the values are only read, and the R object stays alive and
// unmodified for as long as this value exists (see above); the `Robj` itself
// is never used from other threads.
unsafe impl<T> Send for RVector<T> {}
unsafe impl<T> Sync for RVector<T> {}

impl<T> Kept<T> for RVector<T> {
    fn values(&self) -> &[T] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` points to `len` values owned by `_keep`
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Builds a [`Model`] from the design passed from R and returns it behind an
/// external pointer (or an error list). `n_obs` and `log_w_sum` (or NULL)
/// describe the data when the rows are pseudo-rows of a fit from sufficient
/// statistics. `threads` (NULL or a whole number, 0 for all cores) sets the
/// threads of the passes over the rows. Internal; called by `h_engine_build()`.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn rs_model_new(
    x: Robj,
    y: Robj,
    weights: Robj,
    codes: List,
    n_levels: Robj,
    z: List,
    k: Robj,
    factor_id: Robj,
    n_obs: Robj,
    log_w_sum: Robj,
    threads: Robj,
) -> Robj {
    R_MAIN_THREAD.get_or_init(|| std::thread::current().id());
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
        // threads of the passes over the rows; NULL or 0: all cores
        let threads = if threads.is_null() {
            0
        } else {
            match reals(&threads, "threads").map_err(bad)? {
                [x] if x.is_finite() && *x >= 0.0 && x.fract() == 0.0 => *x as usize,
                _ => return Err(bad("`threads` must be one non-negative whole number")),
            }
        };
        let n_obs = if n_obs.is_null() {
            None
        } else {
            match reals(&n_obs, "n_obs").map_err(bad)? {
                [x] if x.is_finite() && *x >= 1.0 && x.fract() == 0.0 => Some(*x as usize),
                _ => return Err(bad("`n_obs` must be one positive whole number")),
            }
        };
        let log_w_sum = if log_w_sum.is_null() {
            None
        } else {
            match reals(&log_w_sum, "log_w_sum").map_err(bad)? {
                [x] if x.is_finite() => Some(*x),
                _ => return Err(bad("`log_w_sum` must be one finite number")),
            }
        };
        // the model keeps R's X, level codes and random-effect columns
        // themselves (no copies; Q = X R^-1 is formed where it is read)
        let design = Design {
            n: d.n,
            p: d.p,
            x: Vec::new(),
            y: d.y.to_vec(),
            weights: d.weights.to_vec(),
            terms: d
                .terms
                .iter()
                .enumerate()
                .map(|(t, term)| ReTerm {
                    codes: Values::Kept(Arc::new(RVector::new(&codes_v[t], term.codes))),
                    n_levels: term.n_levels,
                    z: Values::Kept(Arc::new(RVector::new(&z_v[t], term.z))),
                    k: term.k,
                    factor_id: term.factor_id,
                })
                .collect(),
        };
        let kept_x = Values::Kept(Arc::new(RVector::new(&x, d.x)));
        let mut model = Model::from_kept(design, kept_x, threads)?;
        model.set_counts(n_obs, log_w_sum)?;
        model.set_interrupt(Some(r_interrupt_pending));
        Ok::<Model, LmmError>(model)
    })();
    match result {
        Ok(m) => ExternalPtr::new(m).into(),
        Err(e) => error_list(&e).into(),
    }
}

/// Runs `f` on the model behind `ptr`; errors (a dead pointer after
/// `readRDS()`, numerical failures) become error lists.
pub(crate) fn with_model(ptr: &Robj, f: impl FnOnce(&mut Model) -> Result<List, LmmError>) -> List {
    let result = ExternalPtr::<Model>::try_from(ptr)
        .map_err(|_| bad("the fit's model pointer is not valid (rebuild it with h_model_ptr())"))
        .and_then(|mut p| match p.try_addr_mut() {
            Ok(m) => f(m),
            Err(_) => Err(bad("the fit's model pointer is not valid")),
        });
    match result {
        Ok(l) => l,
        Err(e) => error_list(&e),
    }
}

/// Does `ptr` point to a live model (FALSE after `readRDS()`)?
/// @noRd
#[extendr]
fn rs_model_is_live(ptr: Robj) -> bool {
    ExternalPtr::<Model>::try_from(&ptr)
        .map(|p| p.try_addr().is_ok())
        .unwrap_or(false)
}

/// Fits the kept model (REML or ML); `max_time` is the optimisation's time
/// budget in seconds (`Inf`: none).
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn rs_model_fit(
    ptr: Robj,
    reml: bool,
    max_iter: i32,
    tol: f64,
    theta_start: Robj,
    optimize: bool,
    max_time: f64,
    restarts: bool,
) -> List {
    with_model(&ptr, |m| {
        let theta0 = if theta_start.is_null() {
            None
        } else {
            Some(reals(&theta_start, "theta_start").map_err(bad)?.to_vec())
        };
        let control = FitControl {
            reml,
            max_iter: count(max_iter, "max_iter").map_err(bad)?,
            tol,
            theta_start: theta0,
            optimize,
            n_obs: None,
            log_w_sum: None,
            max_time: Some(max_time).filter(|t| t.is_finite()),
            restarts,
        };
        let p = m.design().p;
        m.fit(&control).map(|out| output_list(out, p))
    })
}

/// Replaces the kept model's response (offset already subtracted).
/// @noRd
#[extendr]
fn rs_model_set_response(ptr: Robj, y: Robj) -> List {
    with_model(&ptr, |m| {
        let y = reals(&y, "y").map_err(bad)?;
        m.set_response(y)?;
        Ok(list!(n = y.len() as i32))
    })
}

/// Criterion, its parts, sigma and beta at `theta` (no random effects or
/// fitted values): the profiles' deviance function.
/// @noRd
#[extendr]
fn rs_model_evaluate(ptr: Robj, theta: Robj, reml: bool) -> List {
    with_model(&ptr, |m| {
        let theta = reals(&theta, "theta").map_err(bad)?;
        let e = m.evaluate(theta, reml)?;
        Ok(list!(
            objective = e.objective,
            ldl2 = e.ldl2,
            ldrx2 = e.ldrx2,
            pwrss = e.pwrss,
            sigma = e.sigma,
            beta = e.beta
        ))
    })
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

/// `[X 1]'[X 1]` of a numeric matrix (X'X, its column sums and n) in one
/// multithreaded pass, and which columns hold only 0s and 1s:
/// `list(gram =, binary =)`, or an error list. Internal; see
/// `h_x_summaries()`.
/// @noRd
#[extendr]
fn rs_cross_products(x: Robj, nrow: Robj, ncol: Robj, threads: Robj) -> Robj {
    let result = (|| {
        let dim = |v: &Robj, what: &str| match reals(v, what).map_err(bad)? {
            [d] if d.is_finite() && *d >= 0.0 && d.fract() == 0.0 => Ok(*d as usize),
            _ => Err(bad(format!(
                "`{what}` must be one non-negative whole number"
            ))),
        };
        let (n, p) = (dim(&nrow, "nrow")?, dim(&ncol, "ncol")?);
        let xs = reals(&x, "x").map_err(bad)?;
        let threads = if threads.is_null() {
            0
        } else {
            match reals(&threads, "threads").map_err(bad)? {
                [t] if t.is_finite() && *t >= 0.0 && t.fract() == 0.0 => *t as usize,
                _ => return Err(bad("`threads` must be one non-negative whole number")),
            }
        };
        let g = lmmr_core::cross_products(xs, n, p, threads)?;
        let binary = lmmr_core::binary_columns(xs, n, p);
        Ok::<Robj, LmmError>(list!(gram = r_matrix(&g, p + 1, p + 1), binary = binary).into())
    })();
    match result {
        Ok(m) => m,
        Err(e) => error_list(&e).into(),
    }
}

/// The `n x length(cols)` model matrix whose columns are described by
/// `comps` (a list of numeric vectors and of `list(codes, table)` factor
/// components) and `cols` (per column, the 1-based indices of its
/// components; empty for the intercept): a new double matrix (allocated
/// without zeroing; the threads that fill it touch its pages), or an error
/// list. Internal; see `h_columns_model_matrix()`.
/// @noRd
#[extendr]
fn rs_fill_columns(n: Robj, comps: List, cols: List) -> Robj {
    let result = (|| {
        let n = match reals(&n, "n").map_err(bad)? {
            [v] if v.is_finite() && *v >= 0.0 && v.fract() == 0.0 => *v as usize,
            _ => return Err(bad("`n` must be one non-negative whole number")),
        };
        // the R objects stay owned here while the slices into them are used
        let objs: Vec<Robj> = comps.values().collect();
        let mut pairs: Vec<Option<(Robj, Robj)>> = Vec::with_capacity(objs.len());
        for c in &objs {
            if c.as_real_slice().is_some() {
                pairs.push(None);
            } else if let Some(l) = c.as_list() {
                let (Ok(codes), Ok(table)) = (l.elt(0), l.elt(1)) else {
                    return Err(bad("a factor component needs `codes` and `table`"));
                };
                pairs.push(Some((codes, table)));
            } else {
                return Err(bad("a component must be a double vector or a factor list"));
            }
        }
        let mut parts = Vec::with_capacity(objs.len());
        for (c, pair) in objs.iter().zip(&pairs) {
            match pair {
                None => parts.push(lmmr_core::Component::Numeric(
                    c.as_real_slice().unwrap_or_default(),
                )),
                Some((codes, table)) => {
                    let codes = codes
                        .as_integer_slice()
                        .ok_or_else(|| bad("a factor component needs integer `codes`"))?;
                    let table = table
                        .as_real_slice()
                        .ok_or_else(|| bad("a factor component needs a double `table`"))?;
                    parts.push(lmmr_core::Component::Factor { codes, table });
                }
            }
        }
        let mut spec = Vec::with_capacity(cols.len());
        for c in cols.values() {
            let idx = c
                .as_integer_slice()
                .ok_or_else(|| bad("`cols` must hold integer vectors"))?;
            let mut col = Vec::with_capacity(idx.len());
            for &i in idx {
                let k = usize::try_from(i)
                    .ok()
                    .filter(|k| *k >= 1 && *k <= parts.len())
                    .ok_or_else(|| bad(format!("component index {i} out of range")))?;
                col.push(parts[k - 1]);
            }
            spec.push(col);
        }
        let len = n
            .checked_mul(spec.len())
            .ok_or_else(|| bad("the model matrix would be too large"))?;
        let (Ok(nr), Ok(nc)) = (i32::try_from(n), i32::try_from(spec.len())) else {
            return Err(bad("the model matrix would be too large"));
        };
        let mut x = Robj::alloc_matrix(extendr_api::rtype_to_sxp(Rtype::Doubles), nr, nc);
        let out = x
            .as_real_slice_mut()
            .ok_or_else(|| bad("internal error: the matrix could not be allocated"))?;
        debug_assert_eq!(out.len(), len);
        lmmr_core::fill_columns(out, n, &spec, 0)?;
        Ok::<Robj, LmmError>(x)
    })();
    match result {
        Ok(x) => x,
        Err(e) => error_list(&e).into(),
    }
}

extendr_module! {
    mod lmmr;
    fn rs_cross_products;
    fn rs_fill_columns;
    use inference_glue;
    fn rs_model_new;
    fn rs_model_is_live;
    fn rs_model_fit;
    fn rs_model_set_response;
    fn rs_model_evaluate;
    use rcov_glue;
    use refit_glue;
    fn rs_check_weights;
}
