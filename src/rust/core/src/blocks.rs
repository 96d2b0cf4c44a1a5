//! Cross-product blocks of the data, built once per fit.
//!
//! The random-effects columns are split into a *primary* part (all terms on
//! the grouping factor with the largest number of columns `G * K`), whose
//! cross-product is block diagonal over the factor's levels, and a *rest*
//! part (all other terms) kept dense together with `X` and `y`.

use crate::error::LmmError;
use crate::input::FitInput;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// Largest number of rest columns for which a dense block is allocated.
pub const MAX_REST_COLUMNS: usize = 20_000;

/// Per-term layout information.
#[derive(Debug, Clone)]
pub(crate) struct TermInfo {
    pub k: usize,
    pub n_levels: usize,
    /// First column of the term in the user's `b` layout.
    pub b_offset: usize,
    /// `Some(offset inside a primary level block)` for primary terms.
    pub prim_offset: Option<usize>,
    /// First rest column for rest terms.
    pub rest_offset: Option<usize>,
}

/// All cross products needed to evaluate the profiled criterion.
#[derive(Debug, Clone)]
pub(crate) struct Blocks {
    /// Number of observations that contribute (positive weight): the `n` of
    /// the criterion's degrees of freedom.
    pub n: usize,
    pub p: usize,
    pub q: usize,
    pub terms: Vec<TermInfo>,
    /// Indices of the primary terms (in the order they appear in a level block).
    pub prim_terms: Vec<usize>,
    /// Levels of the primary factor.
    pub g1: usize,
    /// Columns per primary level.
    pub k1: usize,
    /// Number of rest columns.
    pub q2: usize,
    /// Per primary level `k1 x k1` blocks `Z1j' W Z1j` (column-major).
    pub a11: Vec<f64>,
    /// Per primary level `k1 x p` blocks `Z1j' W X`.
    pub a1x: Vec<f64>,
    /// Per primary level `k1` vectors `Z1j' W y`.
    pub a1y: Vec<f64>,
    /// CSR pointer: level j touches rest columns `r_cols[r_ptr[j]..r_ptr[j+1]]`.
    pub r_ptr: Vec<usize>,
    /// Touched rest columns (sorted, whole `k` blocks of a (term, level)).
    pub r_cols: Vec<usize>,
    /// Dense `k1 x ncols_j` blocks `Z1j' W Zr[:, cols]`, starting at `k1 * r_ptr[j]`.
    pub r_dat: Vec<f64>,
    /// For each rest column: (term index, covariate index within its block).
    pub rest_col_term: Vec<(usize, usize)>,
    /// Dense symmetric `d x d` matrix (`d = q2 + p + 1`), full storage:
    /// `[Zr'WZr, Zr'WX, Zr'Wy; ., X'WX, X'Wy; ., ., y'Wy]`.
    pub dense: Vec<f64>,
    /// All rest terms have k = 1 (Lambda_r diagonal).
    pub rest_all_k1: bool,
    /// Largest number of touched rest columns of any primary level.
    pub max_level_cols: usize,
    /// `sum(log(w))`.
    pub ldw: f64,
}

impl Blocks {
    /// Dimension of the dense block.
    pub fn d(&self) -> usize {
        self.q2 + self.p + 1
    }

    /// Builds all blocks. `input` must have been validated.
    pub fn build(input: &FitInput) -> Result<Blocks, LmmError> {
        let n = input.n;
        let p = input.p;
        let nt = input.terms.len();
        let weight = |i: usize| -> f64 {
            if input.weights.is_empty() {
                1.0
            } else {
                input.weights[i]
            }
        };

        // Choose the primary factor: the one with the most columns G * K.
        let mut factors: Vec<(usize, usize, usize)> = Vec::new(); // (factor_id, G, K)
        for t in &input.terms {
            if let Some(f) = factors.iter_mut().find(|f| f.0 == t.factor_id) {
                f.2 += t.k;
            } else {
                factors.push((t.factor_id, t.n_levels, t.k));
            }
        }
        let mut best = 0;
        for (i, f) in factors.iter().enumerate() {
            let b = factors[best];
            if f.1 * f.2 > b.1 * b.2 || (f.1 * f.2 == b.1 * b.2 && f.1 > b.1) {
                best = i;
            }
        }
        let prim_factor = factors[best].0;

        let mut terms = Vec::with_capacity(nt);
        let mut prim_terms = Vec::new();
        let mut rest_terms = Vec::new();
        let (mut b_off, mut k1, mut q2) = (0usize, 0usize, 0usize);
        for (t, term) in input.terms.iter().enumerate() {
            let cols = term.n_levels.checked_mul(term.k).ok_or_else(|| {
                LmmError::TooLarge(format!("term {t}: too many random-effect columns"))
            })?;
            let (prim_offset, rest_offset) = if term.factor_id == prim_factor {
                prim_terms.push(t);
                k1 += term.k;
                (Some(k1 - term.k), None)
            } else {
                rest_terms.push(t);
                q2 += cols;
                (None, Some(q2 - cols))
            };
            terms.push(TermInfo {
                k: term.k,
                n_levels: term.n_levels,
                b_offset: b_off,
                prim_offset,
                rest_offset,
            });
            b_off += cols;
        }
        let q = b_off;
        if q2 > MAX_REST_COLUMNS {
            return Err(LmmError::TooLarge(format!(
                "the random-effects terms not on the largest grouping factor have {q2} columns \
                 (more than {MAX_REST_COLUMNS}); the dense block this algorithm needs for them \
                 (crossed designs with several large factors) would be too big"
            )));
        }
        let g1 = input.terms[prim_terms[0]].n_levels;
        let prim_codes = input.terms[prim_terms[0]].codes;
        let d = q2 + p + 1;

        let mut rest_col_term = vec![(0usize, 0usize); q2];
        for &t in &rest_terms {
            let ti = &terms[t];
            let off = ti.rest_offset.unwrap_or(0);
            for l in 0..ti.n_levels {
                for c in 0..ti.k {
                    rest_col_term[off + l * ti.k + c] = (t, c);
                }
            }
        }

        // Primary blocks.
        let kk = k1 * k1;
        let mut a11 = vec![0.0; g1 * kk];
        let mut a1x = vec![0.0; g1 * k1 * p];
        let a1y = vec![0.0; g1 * k1];
        // Flattened access to the primary z columns: (slice, column) pairs.
        let mut pz: Vec<&[f64]> = Vec::with_capacity(k1);
        for &t in &prim_terms {
            let term = &input.terms[t];
            for c in 0..term.k {
                pz.push(&term.z[c * n..(c + 1) * n]);
            }
        }
        let mut zrow = vec![0.0; k1];
        if k1 == 1 {
            let z0 = pz[0];
            for i in 0..n {
                let j = prim_codes[i] as usize;
                let wz = weight(i) * z0[i];
                a11[j] += wz * z0[i];
            }
            for c in 0..p {
                let xc = &input.x[c * n..(c + 1) * n];
                for i in 0..n {
                    let j = prim_codes[i] as usize;
                    a1x[j * p + c] += weight(i) * z0[i] * xc[i];
                }
            }
        } else {
            for i in 0..n {
                let j = prim_codes[i] as usize;
                let w = weight(i);
                for (a, zc) in pz.iter().enumerate() {
                    zrow[a] = zc[i];
                }
                let blk = &mut a11[j * kk..(j + 1) * kk];
                for b in 0..k1 {
                    let wzb = w * zrow[b];
                    for a in 0..k1 {
                        blk[b * k1 + a] += wzb * zrow[a];
                    }
                }
            }
            for c in 0..p {
                let xc = &input.x[c * n..(c + 1) * n];
                for i in 0..n {
                    let j = prim_codes[i] as usize;
                    let wx = weight(i) * xc[i];
                    let base = j * k1 * p + c * k1;
                    for (a, zc) in pz.iter().enumerate() {
                        a1x[base + a] += wx * zc[i];
                    }
                }
            }
        }

        // Sparse primary-rest coupling.
        let mut r_ptr = vec![0usize; g1 + 1];
        let mut r_cols = Vec::new();
        let mut r_dat = Vec::new();
        let mut max_level_cols = 0;
        if !rest_terms.is_empty() {
            // Distinct (primary level, rest block start) pairs.
            let mut keys: Vec<(u32, u32)> = Vec::with_capacity(n * rest_terms.len());
            for &t in &rest_terms {
                let term = &input.terms[t];
                let off = terms[t].rest_offset.unwrap_or(0);
                for i in 0..n {
                    keys.push((
                        prim_codes[i] as u32,
                        (off + term.codes[i] as usize * term.k) as u32,
                    ));
                }
            }
            keys.sort_unstable();
            keys.dedup();
            // Expand blocks into columns.
            let mut blk_ptr = vec![0usize; g1 + 1];
            let mut blk_pos = Vec::with_capacity(keys.len()); // column position of each block
            for &(j, col0) in &keys {
                blk_ptr[j as usize + 1] += 1;
                blk_pos.push(r_cols.len());
                let kr = terms[rest_col_term[col0 as usize].0].k;
                for c in 0..kr {
                    r_cols.push(col0 as usize + c);
                }
                r_ptr[j as usize + 1] = r_cols.len();
            }
            for j in 0..g1 {
                blk_ptr[j + 1] += blk_ptr[j];
                if r_ptr[j + 1] < r_ptr[j] {
                    r_ptr[j + 1] = r_ptr[j];
                }
                max_level_cols = max_level_cols.max(r_ptr[j + 1] - r_ptr[j]);
            }
            r_dat = vec![0.0; r_cols.len() * k1];
            for &t in &rest_terms {
                let term = &input.terms[t];
                let off = terms[t].rest_offset.unwrap_or(0);
                for i in 0..n {
                    let j = prim_codes[i] as usize;
                    let col0 = (off + term.codes[i] as usize * term.k) as u32;
                    let range = &keys[blk_ptr[j]..blk_ptr[j + 1]];
                    let pos = match range.binary_search(&(j as u32, col0)) {
                        Ok(pb) => blk_pos[blk_ptr[j] + pb],
                        Err(_) => {
                            return Err(LmmError::InvalidInput(
                                "internal error building the coupling blocks".into(),
                            ))
                        }
                    };
                    let w = weight(i);
                    for (a, zc) in pz.iter().enumerate() {
                        zrow[a] = w * zc[i];
                    }
                    for c in 0..term.k {
                        let zr = term.z[c * n + i];
                        let dst = &mut r_dat[(pos + c) * k1..(pos + c + 1) * k1];
                        for a in 0..k1 {
                            dst[a] += zrow[a] * zr;
                        }
                    }
                }
            }
        }

        // Dense block: rest part by rows.
        let mut dense = vec![0.0; d * d];
        if q2 > 0 {
            let krest: usize = rest_terms.iter().map(|&t| terms[t].k).sum();
            let mut cols = vec![0usize; krest];
            let mut vals = vec![0.0; krest];
            for i in 0..n {
                let w = weight(i);
                let mut m = 0;
                for &t in &rest_terms {
                    let term = &input.terms[t];
                    let col0 = terms[t].rest_offset.unwrap_or(0) + term.codes[i] as usize * term.k;
                    for c in 0..term.k {
                        cols[m] = col0 + c;
                        vals[m] = term.z[c * n + i];
                        m += 1;
                    }
                }
                for b in 0..krest {
                    let wv = w * vals[b];
                    let cb = cols[b] * d;
                    for a in 0..krest {
                        dense[cb + cols[a]] += wv * vals[a];
                    }
                }
            }
            for c in 0..p {
                let xc = &input.x[c * n..(c + 1) * n];
                for i in 0..n {
                    let wx = weight(i) * xc[i];
                    for &t in &rest_terms {
                        let term = &input.terms[t];
                        let col0 =
                            terms[t].rest_offset.unwrap_or(0) + term.codes[i] as usize * term.k;
                        for cc in 0..term.k {
                            dense[(col0 + cc) * d + q2 + c] += wx * term.z[cc * n + i];
                        }
                    }
                }
            }
        }
        xy_block(input, &mut dense, q2);
        // Symmetrise: fill the upper triangle from the lower one.
        for b in 0..d {
            for a in (b + 1)..d {
                dense[a * d + b] = dense[b * d + a];
            }
        }
        let ldw = if input.weights.is_empty() {
            0.0
        } else {
            // zero weights drop the observation's contribution
            input
                .weights
                .iter()
                .filter(|w| **w > 0.0)
                .map(|w| w.ln())
                .sum()
        };
        let rest_all_k1 = terms.iter().all(|t| t.prim_offset.is_some() || t.k == 1);
        let mut blocks = Blocks {
            n: crate::input::n_effective(input),
            p,
            q,
            terms,
            prim_terms,
            g1,
            k1,
            q2,
            a11,
            a1x,
            a1y,
            r_ptr,
            r_cols,
            r_dat,
            rest_col_term,
            dense,
            max_level_cols,
            rest_all_k1,
            ldw,
        };
        blocks.set_response(input);
        Ok(blocks)
    }

    /// Recomputes the parts that depend on the response: `Z1' W y`, the `y`
    /// column (and row) of the dense block, `X' W y` and `y' W y`. `input`
    /// must be the one the blocks were built from, with a new `y`.
    pub fn set_response(&mut self, input: &FitInput) {
        let n = input.n;
        let p = self.p;
        let q2 = self.q2;
        let k1 = self.k1;
        let d = self.d();
        let weight = |i: usize| -> f64 {
            if input.weights.is_empty() {
                1.0
            } else {
                input.weights[i]
            }
        };
        let y = input.y;
        let prim_codes = input.terms[self.prim_terms[0]].codes;
        self.a1y.iter_mut().for_each(|v| *v = 0.0);
        let mut a = 0;
        for &t in &self.prim_terms {
            let term = &input.terms[t];
            for c in 0..term.k {
                let zc = &term.z[c * n..(c + 1) * n];
                for i in 0..n {
                    let j = prim_codes[i] as usize;
                    self.a1y[j * k1 + a] += weight(i) * zc[i] * y[i];
                }
                a += 1;
            }
        }
        let ycol = q2 + p;
        for c in 0..q2 {
            self.dense[c * d + ycol] = 0.0;
        }
        for (t, ti) in self.terms.iter().enumerate() {
            let Some(off) = ti.rest_offset else { continue };
            let term = &input.terms[t];
            for c in 0..ti.k {
                let zc = &term.z[c * n..(c + 1) * n];
                for i in 0..n {
                    let col = off + term.codes[i] as usize * ti.k + c;
                    self.dense[col * d + ycol] += weight(i) * zc[i] * y[i];
                }
            }
        }
        xy_block(input, &mut self.dense, q2);
        for c in 0..ycol {
            self.dense[ycol * d + c] = self.dense[c * d + ycol];
        }
    }
}

/// `[X y]' W [X y]` into the trailing `(p + 1) x (p + 1)` corner of the
/// dense block (full storage), by chunks with faer.
fn xy_block(input: &FitInput, dense: &mut [f64], q2: usize) {
    let n = input.n;
    let p = input.p;
    let d = q2 + p + 1;
    let weight = |i: usize| -> f64 {
        if input.weights.is_empty() {
            1.0
        } else {
            input.weights[i]
        }
    };
    // [X y]' W [X y] by chunks with faer.
    {
        const CHUNK: usize = 4096;
        let m = p + 1;
        let mut xa = vec![0.0; CHUNK * m];
        let mut wxa = vec![0.0; CHUNK * m];
        let mut acc = vec![0.0; m * m];
        let mut start = 0;
        while start < n {
            let len = CHUNK.min(n - start);
            for c in 0..m {
                let src = if c < p {
                    &input.x[c * n + start..c * n + start + len]
                } else {
                    &input.y[start..start + len]
                };
                for r in 0..len {
                    let v = src[r];
                    xa[c * len + r] = v;
                    wxa[c * len + r] = weight(start + r) * v;
                }
            }
            let xm = MatRef::from_column_major_slice(&xa[..len * m], len, m);
            let wm = MatRef::from_column_major_slice(&wxa[..len * m], len, m);
            let am = MatMut::from_column_major_slice_mut(&mut acc, m, m);
            matmul(am, Accum::Add, xm.transpose(), wm, 1.0, Par::Seq);
            start += len;
        }
        // Lower triangle from the product, upper mirrored (exactly symmetric).
        for b in 0..m {
            for a in b..m {
                dense[(q2 + b) * d + q2 + a] = acc[b * m + a];
                dense[(q2 + a) * d + q2 + b] = acc[b * m + a];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::ReTermInput;

    #[test]
    fn small_crossed_blocks() {
        // n = 4, primary factor a (3 levels), rest factor b (2 levels).
        let ca = [0, 1, 2, 0];
        let cb = [0, 0, 1, 1];
        let ones = [1.0; 4];
        let x = [1.0, 2.0, 3.0, 4.0];
        let y = [1.0, -1.0, 2.0, 0.5];
        let w = [1.0, 2.0, 1.0, 0.5];
        let input = FitInput {
            n: 4,
            p: 1,
            x: &x,
            y: &y,
            weights: &w,
            terms: vec![
                ReTermInput {
                    codes: &cb,
                    n_levels: 2,
                    z: &ones,
                    k: 1,
                    factor_id: 1,
                },
                ReTermInput {
                    codes: &ca,
                    n_levels: 3,
                    z: &ones,
                    k: 1,
                    factor_id: 0,
                },
            ],
        };
        let b = Blocks::build(&input).unwrap();
        assert_eq!(b.prim_terms, vec![1]);
        assert!(b.terms[0].rest_offset.is_some());
        assert_eq!((b.g1, b.k1, b.q2, b.q), (3, 1, 2, 5));
        assert_eq!(b.a11, vec![1.5, 2.0, 1.0]);
        assert_eq!(b.r_ptr, vec![0, 2, 3, 4]);
        assert_eq!(b.r_cols, vec![0, 1, 0, 1]);
        assert_eq!(b.r_dat, vec![1.0, 0.5, 2.0, 1.0]);
        let d = b.d();
        assert_eq!(d, 4);
        // Zr'WZr = diag(3, 1.5)
        assert_eq!(b.dense[0], 3.0);
        assert_eq!(b.dense[d + 1], 1.5);
        assert_eq!(b.dense[1], 0.0);
        // X'WX = 1 + 8 + 9 + 8 = 26
        assert!((b.dense[2 * d + 2] - 26.0).abs() < 1e-12);
        // Zr'WX for level 0 of b: 1*1 + 2*2 = 5
        assert!((b.dense[2 * d] - 5.0).abs() < 1e-12);
        assert!((b.dense[2] - 5.0).abs() < 1e-12);
        assert!((b.ldw - (2.0f64.ln() + 0.5f64.ln())).abs() < 1e-12);
    }
}
