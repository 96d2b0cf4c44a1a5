//! Conversions shared by the extendr entry points: reading the model design
//! passed from R (fixed design, response, weights and random-effect terms)
//! as checked slices, and building R matrices. Errors are plain strings that
//! each entry point wraps into its own error type.

use extendr_api::prelude::*;

fn real_slice<'a>(x: &'a Robj, what: &str) -> Result<&'a [f64], String> {
    x.as_real_slice()
        .ok_or_else(|| format!("`{what}` must be a double vector"))
}

fn int_slice<'a>(x: &'a Robj, what: &str) -> Result<&'a [i32], String> {
    x.as_integer_slice()
        .ok_or_else(|| format!("`{what}` must be an integer vector"))
}

fn to_usize(v: i32, what: &str) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("`{what}` must be non-negative"))
}

/// A double vector passed from R (e.g. theta).
pub(crate) fn reals<'a>(x: &'a Robj, what: &str) -> Result<&'a [f64], String> {
    real_slice(x, what)
}

/// A non-negative integer argument.
pub(crate) fn count(v: i32, what: &str) -> Result<usize, String> {
    to_usize(v, what)
}

/// One random-effect term as slices into R memory.
pub(crate) struct RTerm<'a> {
    pub codes: &'a [i32],
    pub n_levels: usize,
    pub z: &'a [f64],
    pub k: usize,
    pub factor_id: usize,
}

/// The model design as slices into R memory.
pub(crate) struct RDesign<'a> {
    pub n: usize,
    pub p: usize,
    pub x: &'a [f64],
    pub y: &'a [f64],
    pub weights: &'a [f64],
    pub terms: Vec<RTerm<'a>>,
}

/// R objects describing a design, in the order the R wrappers pass them.
pub(crate) struct DesignArgs<'a> {
    pub x: &'a Robj,
    pub y: &'a Robj,
    pub weights: &'a Robj,
    pub codes: &'a [Robj],
    pub n_levels: &'a Robj,
    pub z: &'a [Robj],
    pub k: &'a Robj,
    pub factor_id: &'a Robj,
}

/// Checks shapes and types of the design passed from R.
pub(crate) fn read_design<'a>(a: &DesignArgs<'a>) -> Result<RDesign<'a>, String> {
    let y = real_slice(a.y, "y")?;
    let n = y.len();
    let x = real_slice(a.x, "X")?;
    if n == 0 || x.len() % n != 0 {
        return Err("X must have one row per observation".into());
    }
    let nl = int_slice(a.n_levels, "n_levels")?;
    let ks = int_slice(a.k, "k")?;
    let fid = int_slice(a.factor_id, "factor_id")?;
    let n_terms = a.codes.len();
    if a.z.len() != n_terms || nl.len() != n_terms || ks.len() != n_terms || fid.len() != n_terms {
        return Err("random-effect term descriptions have inconsistent lengths".into());
    }
    let mut terms = Vec::with_capacity(n_terms);
    for t in 0..n_terms {
        terms.push(RTerm {
            codes: int_slice(&a.codes[t], "codes")?,
            n_levels: to_usize(nl[t], "n_levels")?,
            z: real_slice(&a.z[t], "Z")?,
            k: to_usize(ks[t], "k")?,
            factor_id: to_usize(fid[t], "factor_id")?,
        });
    }
    Ok(RDesign {
        n,
        p: x.len() / n,
        x,
        y,
        weights: real_slice(a.weights, "weights")?,
        terms,
    })
}

/// Matrix holding `vals` in column-major order.
pub(crate) fn r_matrix(vals: &[f64], nrow: usize, ncol: usize) -> Robj {
    let mut m = Robj::from(vals);
    let dims = [nrow as i32, ncol as i32];
    match m.set_attrib("dim", Robj::from(&dims[..])) {
        Ok(_) => m,
        Err(_) => Robj::from(vals),
    }
}
