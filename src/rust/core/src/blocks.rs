//! Cross-product blocks of the data, built once per fit.
//!
//! The random-effects columns are split into a *primary* part (all terms on
//! the grouping factor with the largest number of columns `G * K`), whose
//! cross-product is block diagonal over the factor's levels, and a *rest*
//! part (all other terms) kept dense together with `X` and `y`.

use crate::error::LmmError;
use crate::input::FitInput;
use crate::precondition::{QRows, QView};
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

    /// Builds all blocks, on all cores. `input` must have been validated.
    #[allow(dead_code)] // kept for callers without a thread setting
    pub fn build(input: &FitInput) -> Result<Blocks, LmmError> {
        Self::build_threads(input, 0)
    }

    /// Builds all blocks in one pass over the rows on `threads` threads (0:
    /// all cores); the result is bit-identical whatever `threads` (see
    /// `pass`). `input` must have been validated.
    pub fn build_threads(input: &FitInput, threads: usize) -> Result<Blocks, LmmError> {
        Self::build_view(input, QView::Dense(input.x), threads)
    }

    /// [`Blocks::build_threads`] with the fixed-effects columns read from
    /// `xq` (the `x` of `input` is not used).
    pub(crate) fn build_view(
        input: &FitInput,
        xq: QView,
        threads: usize,
    ) -> Result<Blocks, LmmError> {
        let n = input.n;
        let p = input.p;
        let nt = input.terms.len();

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

        // Sparse primary-rest coupling: which (primary level, rest block)
        // pairs occur, before the pass that sums into them.
        let mut r_ptr = vec![0usize; g1 + 1];
        let mut r_cols = Vec::new();
        let mut max_level_cols = 0;
        let mut coupling = Coupling::default();
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
            coupling = Coupling {
                keys,
                blk_ptr,
                blk_pos,
            };
        }

        let layout = Layout {
            n,
            p,
            g1,
            k1,
            q2,
            d,
            n_rcols: r_cols.len(),
            prim_terms: &prim_terms,
            rest_terms: &rest_terms,
            terms: &terms,
            coupling: &coupling,
            xq,
        };
        // One pass over the rows for every block (y included).
        let acc = full_pass(input, &layout, threads)?;
        let Acc {
            a11,
            a1x,
            a1y,
            r_dat,
            dense: rest_dense,
            xy,
        } = acc;
        let mut dense = if q2 > 0 { rest_dense } else { vec![0.0; d * d] };
        place_xy(&xy, &mut dense, q2, p + 1);
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
        Ok(Blocks {
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
        })
    }

    /// Recomputes the parts that depend on the response: `Z1' W y`, the `y`
    /// column (and row) of the dense block, `X' W y` and `y' W y`. `input`
    /// must be the one the blocks were built from, with a new `y`. Uses all
    /// cores (see [`Blocks::set_response_threads`]).
    #[allow(dead_code)] // kept for callers without a thread setting
    pub fn set_response(&mut self, input: &FitInput) {
        if self.set_response_threads(input, 0).is_err() {
            // a single thread spawns nothing, so it cannot fail
            let _ = self.set_response_threads(input, 1);
        }
    }

    /// [`Blocks::set_response`] on `threads` threads (0: all cores), in one
    /// pass over the rows; the result does not depend on `threads`.
    pub fn set_response_threads(
        &mut self,
        input: &FitInput,
        threads: usize,
    ) -> Result<(), LmmError> {
        self.set_response_view(input, QView::Dense(input.x), threads)
    }

    /// [`Blocks::set_response_threads`] with the fixed-effects columns read
    /// from `xq` (the `x` of `input` is not used).
    pub(crate) fn set_response_view(
        &mut self,
        input: &FitInput,
        xq: QView,
        threads: usize,
    ) -> Result<(), LmmError> {
        let p = self.p;
        let q2 = self.q2;
        let d = self.d();
        let rest_terms: Vec<usize> = (0..self.terms.len())
            .filter(|&t| self.terms[t].rest_offset.is_some())
            .collect();
        let coupling = Coupling::default();
        let layout = Layout {
            n: input.n,
            p,
            g1: self.g1,
            k1: self.k1,
            q2,
            d,
            n_rcols: 0,
            prim_terms: &self.prim_terms,
            rest_terms: &rest_terms,
            terms: &self.terms,
            coupling: &coupling,
            xq,
        };
        let r = response_pass(input, &layout, threads)?;
        self.a1y = r.a1y;
        let ycol = q2 + p;
        for c in 0..q2 {
            self.dense[c * d + ycol] = r.ry[c];
        }
        for c in 0..=p {
            self.dense[(q2 + c) * d + ycol] = r.xyy[c];
        }
        for c in 0..ycol {
            self.dense[ycol * d + c] = self.dense[c * d + ycol];
        }
        Ok(())
    }
}

/// Where the coupling blocks of each primary level sit in `r_dat`.
#[derive(Default)]
struct Coupling {
    /// Sorted distinct (primary level, first rest column of the block).
    keys: Vec<(u32, u32)>,
    /// Level j's keys are `keys[blk_ptr[j]..blk_ptr[j + 1]]`.
    blk_ptr: Vec<usize>,
    /// Position (in `r_cols`) of each key's first column.
    blk_pos: Vec<usize>,
}

impl Coupling {
    fn position(&self, j: usize, col0: u32) -> Result<usize, LmmError> {
        let range = &self.keys[self.blk_ptr[j]..self.blk_ptr[j + 1]];
        match range.binary_search(&(j as u32, col0)) {
            Ok(pb) => Ok(self.blk_pos[self.blk_ptr[j] + pb]),
            Err(_) => Err(LmmError::InvalidInput(
                "internal error building the coupling blocks".into(),
            )),
        }
    }
}

/// What a pass over the rows needs to know about the block layout.
struct Layout<'a> {
    n: usize,
    p: usize,
    g1: usize,
    k1: usize,
    q2: usize,
    d: usize,
    n_rcols: usize,
    prim_terms: &'a [usize],
    rest_terms: &'a [usize],
    terms: &'a [TermInfo],
    coupling: &'a Coupling,
    /// The fixed-effects columns.
    xq: QView<'a>,
}

/// Partial sums of every block over some rows.
struct Acc {
    a11: Vec<f64>,
    a1x: Vec<f64>,
    a1y: Vec<f64>,
    r_dat: Vec<f64>,
    /// `d x d`, lower triangle of the rest columns' rows (empty without rest
    /// terms; the `[X y]` corner is in `xy`).
    dense: Vec<f64>,
    /// `(p + 1) x (p + 1)`: `[X y]' W [X y]` (full).
    xy: Vec<f64>,
}

/// Partial sums of the response-dependent parts.
struct RespAcc {
    a1y: Vec<f64>,
    /// `Zr' W y`, length q2.
    ry: Vec<f64>,
    /// `[X y]' W y`, length p + 1.
    xyy: Vec<f64>,
}

fn chunk_weights(input: &FitInput, start: usize, len: usize, buf: &mut [f64]) {
    if input.weights.is_empty() {
        buf[..len].fill(1.0);
    } else {
        buf[..len].copy_from_slice(&input.weights[start..start + len]);
    }
}

/// The primary factor's covariate columns as slices.
fn primary_columns<'a>(input: &FitInput<'a>, l: &Layout) -> Vec<&'a [f64]> {
    let n = input.n;
    let mut pz: Vec<&[f64]> = Vec::with_capacity(l.k1);
    for &t in l.prim_terms {
        let term = &input.terms[t];
        for c in 0..term.k {
            pz.push(&term.z[c * n..(c + 1) * n]);
        }
    }
    pz
}

fn full_pass(input: &FitInput, l: &Layout, threads: usize) -> Result<Acc, LmmError> {
    let (g1, k1, p, d) = (l.g1, l.k1, l.p, l.d);
    let m = p + 1;
    let dense_len = if l.q2 > 0 { d * d } else { 0 };
    let len = g1 * (k1 * k1 + k1 * p + k1) + l.n_rcols * k1 + dense_len + m * m;
    let slab = crate::pass::slab_rows(len);
    let n_slabs = l.n.div_ceil(slab);
    let make = |s: usize| full_slab(input, l, s * slab, ((s + 1) * slab).min(l.n));
    let add = |a: &mut Acc, b: Acc| {
        use crate::pass::add_into;
        add_into(&mut a.a11, &b.a11);
        add_into(&mut a.a1x, &b.a1x);
        add_into(&mut a.a1y, &b.a1y);
        add_into(&mut a.r_dat, &b.r_dat);
        add_into(&mut a.dense, &b.dense);
        add_into(&mut a.xy, &b.xy);
    };
    crate::pass::reduce_slabs(n_slabs, crate::pass::resolve_threads(threads), &make, &add)
}

/// Every block's sums over rows `lo..hi`, by chunks of rows.
fn full_slab(input: &FitInput, l: &Layout, lo: usize, hi: usize) -> Result<Acc, LmmError> {
    use crate::pass::CHUNK;
    let (n, p, g1, k1, q2, d) = (l.n, l.p, l.g1, l.k1, l.q2, l.d);
    let m = p + 1;
    let kk = k1 * k1;
    let mut acc = Acc {
        a11: vec![0.0; g1 * kk],
        a1x: vec![0.0; g1 * k1 * p],
        a1y: vec![0.0; g1 * k1],
        r_dat: vec![0.0; l.n_rcols * k1],
        dense: vec![0.0; if q2 > 0 { d * d } else { 0 }],
        xy: vec![0.0; m * m],
    };
    let prim_codes = input.terms[l.prim_terms[0]].codes;
    let pz = primary_columns(input, l);
    let y = input.y;
    let chunk = CHUNK.min(hi - lo);
    let mut xa = vec![0.0; chunk * m];
    let mut wxa = vec![0.0; chunk * m];
    let mut w = vec![0.0; chunk];
    let mut wz = vec![0.0; chunk * k1];
    let mut zrow = vec![0.0; k1];
    let krest: usize = l.rest_terms.iter().map(|&t| l.terms[t].k).sum();
    let mut cols = vec![0usize; krest];
    let mut vals = vec![0.0; krest];
    let mut xr = QRows::new(l.xq, n, p, chunk);
    let mut start = lo;
    while start < hi {
        let len = chunk.min(hi - start);
        chunk_weights(input, start, len, &mut w);
        xr.load(start, len);
        let xcols: Vec<&[f64]> = (0..p).map(|c| xr.col(c)).collect();
        // [X y]' W [X y] with faer on the gathered chunk.
        for c in 0..m {
            let src = if c < p {
                xcols[c]
            } else {
                &y[start..start + len]
            };
            xa[c * len..(c + 1) * len].copy_from_slice(src);
            for r in 0..len {
                wxa[c * len + r] = w[r] * src[r];
            }
        }
        {
            let xm = MatRef::from_column_major_slice(&xa[..len * m], len, m);
            let wm = MatRef::from_column_major_slice(&wxa[..len * m], len, m);
            let am = MatMut::from_column_major_slice_mut(&mut acc.xy, m, m);
            matmul(am, Accum::Add, xm.transpose(), wm, 1.0, Par::Seq);
        }
        // Primary blocks: w z for the chunk, then Z1'WZ1, Z1'Wy, Z1'WX.
        let codes = &prim_codes[start..start + len];
        for (a, zc) in pz.iter().enumerate() {
            for r in 0..len {
                wz[a * len + r] = w[r] * zc[start + r];
            }
        }
        if k1 == 1 {
            let z0 = &pz[0][start..start + len];
            let ys = &y[start..start + len];
            for r in 0..len {
                let j = codes[r] as usize;
                acc.a11[j] += wz[r] * z0[r];
                acc.a1y[j] += wz[r] * ys[r];
            }
            for (c, xc) in xcols.iter().enumerate() {
                for r in 0..len {
                    acc.a1x[codes[r] as usize * p + c] += wz[r] * xc[r];
                }
            }
        } else {
            for r in 0..len {
                let j = codes[r] as usize;
                for (a, zc) in pz.iter().enumerate() {
                    zrow[a] = zc[start + r];
                }
                let blk = &mut acc.a11[j * kk..(j + 1) * kk];
                for b in 0..k1 {
                    let wzb = wz[b * len + r];
                    for a in 0..k1 {
                        blk[b * k1 + a] += wzb * zrow[a];
                    }
                    acc.a1y[j * k1 + b] += wzb * y[start + r];
                }
            }
            for (c, xc) in xcols.iter().enumerate() {
                for r in 0..len {
                    let base = codes[r] as usize * k1 * p + c * k1;
                    for a in 0..k1 {
                        acc.a1x[base + a] += wz[a * len + r] * xc[r];
                    }
                }
            }
        }
        // Rest terms, row by row: Zr'WZr, Zr'WX, Zr'Wy and the coupling.
        if q2 > 0 {
            let ycol = q2 + p;
            for r in 0..len {
                let i = start + r;
                let wi = w[r];
                let j = codes[r] as usize;
                let mut mm = 0;
                for &t in l.rest_terms {
                    let term = &input.terms[t];
                    let ti = &l.terms[t];
                    let col0 = ti.rest_offset.unwrap_or(0) + term.codes[i] as usize * ti.k;
                    // coupling with the primary level of the row
                    let pos = l.coupling.position(j, col0 as u32)?;
                    for c in 0..ti.k {
                        let zr = term.z[c * n + i];
                        cols[mm] = col0 + c;
                        vals[mm] = zr;
                        mm += 1;
                        let dst = &mut acc.r_dat[(pos + c) * k1..(pos + c + 1) * k1];
                        for a in 0..k1 {
                            dst[a] += wz[a * len + r] * zr;
                        }
                    }
                }
                for b in 0..krest {
                    let wv = wi * vals[b];
                    let cb = cols[b] * d;
                    for a in 0..krest {
                        acc.dense[cb + cols[a]] += wv * vals[a];
                    }
                    for (c, xc) in xcols.iter().enumerate() {
                        acc.dense[cb + q2 + c] += wv * xc[r];
                    }
                    acc.dense[cb + ycol] += wv * y[i];
                }
            }
        }
        start += len;
    }
    Ok(acc)
}

fn response_pass(input: &FitInput, l: &Layout, threads: usize) -> Result<RespAcc, LmmError> {
    let len = l.g1 * l.k1 + l.q2 + l.p + 1;
    let slab = crate::pass::slab_rows(len);
    let n_slabs = l.n.div_ceil(slab);
    let make = |s: usize| Ok(response_slab(input, l, s * slab, ((s + 1) * slab).min(l.n)));
    let add = |a: &mut RespAcc, b: RespAcc| {
        use crate::pass::add_into;
        add_into(&mut a.a1y, &b.a1y);
        add_into(&mut a.ry, &b.ry);
        add_into(&mut a.xyy, &b.xyy);
    };
    crate::pass::reduce_slabs(n_slabs, crate::pass::resolve_threads(threads), &make, &add)
}

/// The response-dependent sums over rows `lo..hi`.
fn response_slab(input: &FitInput, l: &Layout, lo: usize, hi: usize) -> RespAcc {
    use crate::pass::CHUNK;
    let (n, p, k1) = (l.n, l.p, l.k1);
    let mut acc = RespAcc {
        a1y: vec![0.0; l.g1 * k1],
        ry: vec![0.0; l.q2],
        xyy: vec![0.0; p + 1],
    };
    let prim_codes = input.terms[l.prim_terms[0]].codes;
    let pz = primary_columns(input, l);
    let mut wy = vec![0.0; CHUNK.min(hi - lo)];
    let mut xr = QRows::new(l.xq, n, p, wy.len());
    let mut start = lo;
    while start < hi {
        let len = wy.len().min(hi - start);
        chunk_weights(input, start, len, &mut wy);
        let ys = &input.y[start..start + len];
        for r in 0..len {
            wy[r] *= ys[r];
        }
        let codes = &prim_codes[start..start + len];
        for (a, zc) in pz.iter().enumerate() {
            for r in 0..len {
                acc.a1y[codes[r] as usize * k1 + a] += wy[r] * zc[start + r];
            }
        }
        for &t in l.rest_terms {
            let term = &input.terms[t];
            let ti = &l.terms[t];
            let off = ti.rest_offset.unwrap_or(0);
            for c in 0..ti.k {
                for r in 0..len {
                    let i = start + r;
                    acc.ry[off + term.codes[i] as usize * ti.k + c] += wy[r] * term.z[c * n + i];
                }
            }
        }
        xr.load(start, len);
        for c in 0..p {
            let xc = xr.col(c);
            let mut s = 0.0;
            for r in 0..len {
                s += wy[r] * xc[r];
            }
            acc.xyy[c] += s;
        }
        let mut s = 0.0;
        for r in 0..len {
            s += wy[r] * ys[r];
        }
        acc.xyy[p] += s;
        start += len;
    }
    acc
}

/// `[X y]' W [X y]` (`m x m`, lower triangle used) into the trailing corner
/// of the dense block, both triangles (exactly symmetric).
fn place_xy(xy: &[f64], dense: &mut [f64], q2: usize, m: usize) {
    let d = q2 + m;
    for b in 0..m {
        for a in b..m {
            dense[(q2 + b) * d + q2 + a] = xy[b * m + a];
            dense[(q2 + a) * d + q2 + b] = xy[b * m + a];
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

    /// Seeded crossed design: `(1 + x | a)` on 50 levels, `(1 | b)` on 7
    /// levels, weights; `n` rows spanning several slabs.
    type Crossed = (Vec<i32>, Vec<i32>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

    fn crossed(n: usize) -> Crossed {
        let mut s = 42u64;
        let mut unif = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let ca: Vec<i32> = (0..n).map(|_| (unif() * 50.0) as i32).collect();
        let cb: Vec<i32> = (0..n).map(|_| (unif() * 7.0) as i32).collect();
        let xc: Vec<f64> = (0..n).map(|_| unif() - 0.5).collect();
        let mut x = vec![1.0; n];
        x.extend_from_slice(&xc);
        let mut za = vec![1.0; n];
        za.extend_from_slice(&xc);
        let y: Vec<f64> = (0..n)
            .map(|i| xc[i] + unif() + ca[i] as f64 * 0.01)
            .collect();
        let w: Vec<f64> = (0..n).map(|_| 0.5 + unif()).collect();
        (ca, cb, x, za, y, w)
    }

    fn assert_bits(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.to_bits(), y.to_bits());
        }
    }

    #[test]
    fn blocks_do_not_depend_on_the_number_of_threads() {
        let n = 300_000; // several slabs
        let (ca, cb, x, za, y, w) = crossed(n);
        let ones = vec![1.0; n];
        let input = FitInput {
            n,
            p: 2,
            x: &x,
            y: &y,
            weights: &w,
            terms: vec![
                ReTermInput {
                    codes: &ca,
                    n_levels: 50,
                    z: &za,
                    k: 2,
                    factor_id: 0,
                },
                ReTermInput {
                    codes: &cb,
                    n_levels: 7,
                    z: &ones,
                    k: 1,
                    factor_id: 1,
                },
            ],
        };
        let one = Blocks::build_threads(&input, 1).unwrap();
        for t in [2, 3] {
            let other = Blocks::build_threads(&input, t).unwrap();
            assert_bits(&one.a11, &other.a11);
            assert_bits(&one.a1x, &other.a1x);
            assert_bits(&one.a1y, &other.a1y);
            assert_bits(&one.r_dat, &other.r_dat);
            assert_bits(&one.dense, &other.dense);
            assert_eq!(one.r_cols, other.r_cols);
        }
        // against naive sums: X'WX, Z1'WX of level 3, Zr'Wy of level 2
        let d = one.d();
        let (mut xtx, mut zx, mut zy) = (0.0, [0.0; 2], 0.0);
        for i in 0..n {
            xtx += w[i] * x[n + i] * x[n + i];
            if ca[i] == 3 {
                zx[0] += w[i] * x[n + i];
                zx[1] += w[i] * za[n + i] * x[n + i];
            }
            if cb[i] == 2 {
                zy += w[i] * y[i];
            }
        }
        let q2 = one.q2;
        assert!((one.dense[(q2 + 1) * d + q2 + 1] - xtx).abs() < 1e-9 * xtx.abs());
        let base = 3 * 2 * 2 + 2; // level 3, column 1 of X
        assert!((one.a1x[base] - zx[0]).abs() < 1e-9 * (1.0 + zx[0].abs()));
        assert!((one.a1x[base + 1] - zx[1]).abs() < 1e-9 * (1.0 + zx[1].abs()));
        assert!((one.dense[2 * d + q2 + 2] - zy).abs() < 1e-9 * zy.abs());
        // a new response: the same in one pass on any number of threads,
        // and equal to a fresh build
        let y2: Vec<f64> = y.iter().map(|v| v * 0.5 - 1.0).collect();
        let input2 = FitInput {
            y: &y2,
            ..input.clone()
        };
        let mut fresh = Blocks::build_threads(&input2, 2).unwrap();
        let mut a = one.clone();
        a.set_response_threads(&input2, 1).unwrap();
        let mut b = one.clone();
        b.set_response_threads(&input2, 3).unwrap();
        assert_bits(&a.a1y, &b.a1y);
        assert_bits(&a.dense, &b.dense);
        for (u, v) in a.dense.iter().zip(&fresh.dense) {
            assert!((u - v).abs() <= 1e-10 * (1.0 + v.abs()));
        }
        for (u, v) in a.a1y.iter().zip(&fresh.a1y) {
            assert!((u - v).abs() <= 1e-10 * (1.0 + v.abs()));
        }
        // what the kept model does after building: then bit-identical
        fresh.set_response_threads(&input2, 2).unwrap();
        assert_bits(&a.a1y, &fresh.a1y);
        assert_bits(&a.dense, &fresh.dense);
    }
}
