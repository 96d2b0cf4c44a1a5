//! Deterministic multithreaded passes over the rows.
//!
//! The rows are split into *slabs* whose size depends only on the problem
//! (never on the number of threads). Each slab's partial sums are computed
//! sequentially, and the partials are combined along a fixed binary tree over
//! the slabs. The threads only decide which subtrees run at the same time, so
//! every floating-point operation and its order are the same whatever the
//! thread count: results are bit-identical for 1, 2, ... threads.

use crate::error::LmmError;

/// Rows per inner chunk of a slab (the unit that is gathered into small
/// dense buffers and multiplied with faer).
pub(crate) const CHUNK: usize = 4096;

/// Smallest number of rows per slab.
const MIN_SLAB: usize = 16 * CHUNK;

/// Number of threads to use: `requested`, or all cores for 0.
pub fn resolve_threads(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism()
            .map(|v| v.get())
            .unwrap_or(1)
    }
}

/// Rows per slab for a pass whose per-slab partial holds `partial_len`
/// numbers: at least [`MIN_SLAB`] and at least `partial_len`, so that the
/// partials never take more memory than the rows they summarise. A multiple
/// of [`CHUNK`].
pub(crate) fn slab_rows(partial_len: usize) -> usize {
    let r = MIN_SLAB.max(partial_len);
    r.div_ceil(CHUNK) * CHUNK
}

/// Sums `make(s)` over the slabs `s = 0..n_slabs` along a fixed binary tree
/// (`add(left, right)` adds the right partial into the left), on up to
/// `threads` threads. `n_slabs` must be positive.
pub(crate) fn reduce_slabs<T, M, A>(
    n_slabs: usize,
    threads: usize,
    make: &M,
    add: &A,
) -> Result<T, LmmError>
where
    T: Send,
    M: Fn(usize) -> Result<T, LmmError> + Sync,
    A: Fn(&mut T, T) + Sync,
{
    tree(0, n_slabs.max(1), threads.max(1), make, add)
}

fn tree<T, M, A>(a: usize, b: usize, threads: usize, make: &M, add: &A) -> Result<T, LmmError>
where
    T: Send,
    M: Fn(usize) -> Result<T, LmmError> + Sync,
    A: Fn(&mut T, T) + Sync,
{
    if b - a == 1 {
        return make(a);
    }
    let m = a + (b - a) / 2;
    let (left, right) = if threads > 1 {
        let tr = threads / 2;
        let tl = threads - tr;
        std::thread::scope(|s| {
            let h = s.spawn(move || tree(m, b, tr, make, add));
            let left = tree(a, m, tl, make, add);
            let right = h.join().unwrap_or_else(|_| {
                Err(LmmError::InvalidInput(
                    "internal error: a worker thread of the data pass failed".into(),
                ))
            });
            (left, right)
        })
    } else {
        (tree(a, m, 1, make, add), tree(m, b, 1, make, add))
    };
    let mut left = left?;
    add(&mut left, right?);
    Ok(left)
}

/// [`reduce_slabs`] over a buffer with one value per row (`out`, length
/// `n`): `make(s, lo, piece)` gets slab `s`'s rows `lo..lo + piece.len()`
/// of `out` to write (each slab owns its rows) and returns its partial.
pub(crate) fn reduce_slabs_rows<T, M, A>(
    out: &mut [f64],
    slab: usize,
    threads: usize,
    make: &M,
    add: &A,
) -> Result<T, LmmError>
where
    T: Send,
    M: Fn(usize, usize, &mut [f64]) -> Result<T, LmmError> + Sync,
    A: Fn(&mut T, T) + Sync,
{
    use std::sync::Mutex;
    let n_slabs = out.len().div_ceil(slab).max(1);
    let cells: Vec<Mutex<Option<&mut [f64]>>> =
        out.chunks_mut(slab).map(|v| Mutex::new(Some(v))).collect();
    let run = |s: usize| -> Result<T, LmmError> {
        let mut empty: [f64; 0] = [];
        let mut taken = None;
        if let Some(cell) = cells.get(s) {
            taken = cell.lock().ok().and_then(|mut g| g.take());
            if taken.is_none() {
                return Err(LmmError::InvalidInput(
                    "internal error in the data pass".into(),
                ));
            }
        }
        let piece = taken.unwrap_or(&mut empty);
        make(s, s * slab, piece)
    };
    reduce_slabs(n_slabs, threads, &run, add)
}

/// Element-wise `a += b`.
pub(crate) fn add_into(a: &mut [f64], b: &[f64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_sum_does_not_depend_on_the_threads() {
        let vals: Vec<f64> = (0..1000).map(|i| 1.0 / (i as f64 + 0.37)).collect();
        let make =
            |s: usize| -> Result<f64, LmmError> { Ok(vals[s * 10..s * 10 + 10].iter().sum()) };
        let add = |a: &mut f64, b: f64| *a += b;
        let one = reduce_slabs(100, 1, &make, &add).unwrap();
        for t in 2..6 {
            assert_eq!(
                one.to_bits(),
                reduce_slabs(100, t, &make, &add).unwrap().to_bits()
            );
        }
        assert_eq!(slab_rows(10) % CHUNK, 0);
        assert!(slab_rows(10_000_000) >= 10_000_000);
    }
}
