//! Column-oriented updates for designs whose primary levels touch scattered
//! columns of the later factors (ratings of items by users: each user sees a
//! few hundred of thousands of items, no two users the same ones).
//!
//! There the groups of [`Chunk`](crate::chunk::Chunk) hold one level each,
//! and the updates `S[idx, idx] -= C_j' C_j` (evaluation) and the gathers
//! `E_j = C_j K[idx, idx]` (gradient) become random accesses all over a
//! large dense matrix. Here every level's `C_j` and `L_j` are kept, and both
//! are done one *column* of `S` (or `K`) at a time over the levels that touch
//! the column (a transposed index built once): the column stays in cache, and
//! columns are shared out between threads, each column computed by one
//! thread in a fixed order (the results do not depend on the thread count).
//! The gradient reuses the evaluation's `C_j` and `L_j` instead of
//! recomputing them.

use crate::blocks::Blocks;
use crate::chunk::Chunk;

/// Smallest update cost (`sum_j k1 m_j^2`) for which the column-oriented
/// path is considered.
const MIN_COST: f64 = 1e6;

/// Largest number of kept `C_j` entries (see [`Scatter::plan`]).
const MAX_KEPT: usize = 100_000_000;

pub(crate) struct Scatter {
    /// `off[j]`: first column of level `j`'s `C_j` in `c` (`m_j = off[j+1] -
    /// off[j]` columns: its rest columns, then X, then y).
    pub off: Vec<usize>,
    /// For rest column `b`, entries `col_ptr[b]..col_ptr[b+1]` of `ent`.
    pub col_ptr: Vec<usize>,
    /// (level, position of the column among the level's columns).
    pub ent: Vec<(u32, u32)>,
    /// For each touched (level, rest column) in level order
    /// (`r_ptr[j] + pos`), its position in `ent`.
    pub csr_to_csc: Vec<usize>,
    /// `C_j` of every level (k1 x m_j each), from the last evaluation.
    pub c: Vec<f64>,
    /// `L_j` of every level (k1 x k1 each).
    pub l: Vec<f64>,
    /// `E_j` columns of the rest columns, in `ent` order (k1 each).
    pub e: Vec<f64>,
    /// Column ranges of `S`'s rest columns per thread (equal work).
    pub split: Vec<usize>,
    /// Entry ranges of `ent` per thread, by rest column (equal work).
    pub split_e: Vec<usize>,
}

/// Columns of level `j` in the dense system: its rest columns, then the
/// `p + 1` X and y columns.
#[inline]
pub(crate) fn level_col(bl: &Blocks, j: usize, a: usize) -> usize {
    let r0 = bl.r_ptr[j];
    let nc = bl.r_ptr[j + 1] - r0;
    if a < nc {
        bl.r_cols[r0 + a]
    } else {
        bl.q2 + a - nc
    }
}

/// Splits `0..w.len()` into `parts` contiguous ranges of about equal total
/// weight; returns the `parts + 1` boundaries.
fn balanced(w: &[f64], parts: usize) -> Vec<usize> {
    let total: f64 = w.iter().sum();
    let mut out = vec![0];
    let mut acc = 0.0;
    let mut next = 1;
    for (i, v) in w.iter().enumerate() {
        acc += v;
        while next < parts && acc >= total * next as f64 / parts as f64 {
            out.push(i + 1);
            next += 1;
        }
    }
    while out.len() < parts {
        out.push(w.len());
    }
    out.push(w.len());
    out
}

impl Scatter {
    /// The column-oriented plan, or `None` where the grouped updates serve
    /// better: the levels the grouping leaves alone must carry most of the
    /// update cost.
    pub fn plan(bl: &Blocks, threads: usize) -> Option<Scatter> {
        if bl.q2 == 0 || bl.g1 < 2 {
            return None;
        }
        let k1 = bl.k1;
        let p1 = bl.p + 1;
        let cost = |j: usize| {
            let m = (bl.r_ptr[j + 1] - bl.r_ptr[j] + p1) as f64;
            k1 as f64 * m * m
        };
        let total: f64 = (0..bl.g1).map(cost).sum();
        // A testing knob: the column-oriented path for every design with
        // later factors (the R tests compare it with lme4 on small designs).
        if std::env::var_os("LMMR_FORCE_SCATTER").is_some() {
            return Some(Scatter::build(bl, threads));
        }
        if total < MIN_COST {
            return None;
        }
        // The kept blocks take k1 (sum_j m_j) numbers (twice: C and E); not
        // beyond 1e8 of them (0.8 GB each), e.g. many fixed effects times
        // many levels.
        let kept = k1 * (bl.r_cols.len() + bl.g1 * p1);
        if kept > MAX_KEPT {
            return None;
        }
        // The grouping of the evaluation, on the pattern only.
        let mut ch = Chunk::new(k1, bl.d());
        let zl = vec![0.0; k1 * k1];
        let mut zc = Vec::new();
        let mut idx = Vec::new();
        let mut single = 0.0;
        let mut group_cost = 0.0;
        let mut grouped = 0.0;
        for j in 0..bl.g1 {
            idx.clear();
            let m = bl.r_ptr[j + 1] - bl.r_ptr[j] + p1;
            idx.extend((0..m).map(|a| level_col(bl, j, a)));
            if !ch.accepts(&idx) {
                if ch.levels.len() == 1 {
                    single += group_cost;
                }
                let u = ch.ucols.len() as f64;
                grouped += u * u * ch.rows as f64;
                ch.clear();
                group_cost = 0.0;
            }
            zc.resize(k1 * m, 0.0);
            ch.push(j, &zl, &zc, &idx);
            group_cost += cost(j);
        }
        if ch.levels.len() == 1 {
            single += group_cost;
        }
        let u = ch.ucols.len() as f64;
        grouped += u * u * ch.rows as f64;
        // Scattered when the levels the grouping leaves alone carry most of
        // the cost, or when the groups' products cost well over the levels'
        // own updates (unions much wider than any level).
        if single < 0.5 * total && grouped < 1.5 * total {
            return None;
        }
        Some(Scatter::build(bl, threads))
    }

    /// The transposed index and buffers for `bl` (which must have rest
    /// columns), work shared out between `threads` threads.
    pub fn build(bl: &Blocks, threads: usize) -> Scatter {
        let k1 = bl.k1;
        let p1 = bl.p + 1;
        let q2 = bl.q2;
        let mut count = vec![0usize; q2 + 1];
        for &c in &bl.r_cols {
            count[c + 1] += 1;
        }
        for b in 0..q2 {
            count[b + 1] += count[b];
        }
        let col_ptr = count;
        let mut fill = col_ptr.clone();
        let mut ent = vec![(0u32, 0u32); bl.r_cols.len()];
        let mut csr_to_csc = vec![0usize; bl.r_cols.len()];
        let mut work = vec![0.0; q2];
        let mut off = Vec::with_capacity(bl.g1 + 1);
        let mut tot = 0;
        for j in 0..bl.g1 {
            off.push(tot);
            let r0 = bl.r_ptr[j];
            let nc = bl.r_ptr[j + 1] - r0;
            tot += nc + p1;
            for a in 0..nc {
                let b = bl.r_cols[r0 + a];
                ent[fill[b]] = (j as u32, a as u32);
                csr_to_csc[r0 + a] = fill[b];
                fill[b] += 1;
                work[b] += (nc + p1 - a) as f64;
            }
        }
        off.push(tot);
        let threads = threads.max(1);
        let split = balanced(&work, threads);
        let ework: Vec<f64> = (0..q2)
            .map(|b| {
                ent[col_ptr[b]..col_ptr[b + 1]]
                    .iter()
                    .map(|&(j, _)| (off[j as usize + 1] - off[j as usize]) as f64)
                    .sum()
            })
            .collect();
        let split_e = balanced(&ework, threads);
        Scatter {
            c: vec![0.0; k1 * tot],
            l: vec![0.0; k1 * k1 * bl.g1],
            e: vec![0.0; k1 * bl.r_cols.len()],
            off,
            col_ptr,
            ent,
            csr_to_csc,
            split,
            split_e,
        }
    }

    /// `S[rows >= b, b] -= sum_j C_j' C_j` for every rest column `b` of the
    /// dense system `s` (`d x d`, column-major, lower triangle), the X and y
    /// rows included; the X and y columns are left to the caller.
    pub fn update_rest(&self, bl: &Blocks, s: &mut [f64]) {
        let d = bl.d();
        let k1 = bl.k1;
        let q2 = bl.q2;
        let run = |cols: std::ops::Range<usize>, dst: &mut [f64]| {
            for b in cols.clone() {
                let col = &mut dst[(b - cols.start) * d..(b - cols.start + 1) * d];
                for &(j, pos) in &self.ent[self.col_ptr[b]..self.col_ptr[b + 1]] {
                    let (j, pos) = (j as usize, pos as usize);
                    let m = self.off[j + 1] - self.off[j];
                    let cj = &self.c[k1 * self.off[j]..k1 * self.off[j + 1]];
                    let cb = &cj[pos * k1..(pos + 1) * k1];
                    let r0 = bl.r_ptr[j];
                    let nc = bl.r_ptr[j + 1] - r0;
                    if k1 == 1 {
                        let v = cb[0];
                        for a in pos..nc {
                            col[bl.r_cols[r0 + a]] -= cj[a] * v;
                        }
                        for (dst, ca) in col[q2..q2 + m - nc].iter_mut().zip(&cj[nc..m]) {
                            *dst -= ca * v;
                        }
                    } else {
                        for a in pos..m {
                            let ca = &cj[a * k1..(a + 1) * k1];
                            let v: f64 = ca.iter().zip(cb).map(|(x, y)| x * y).sum();
                            col[level_col(bl, j, a)] -= v;
                        }
                    }
                }
            }
        };
        let split = &self.split;
        let mut rest = &mut s[..q2 * d];
        std::thread::scope(|sc| {
            for t in 0..split.len() - 1 {
                let (a, b) = (split[t], split[t + 1]);
                let (mine, tail) = std::mem::take(&mut rest).split_at_mut((b - a) * d);
                rest = tail;
                if t + 2 == split.len() {
                    run(a..b, mine);
                } else {
                    let run = &run;
                    sc.spawn(move || run(a..b, mine));
                }
            }
        });
    }

    /// `E_j[:, pos] = sum_{a < mm_j} C_j[:, a] K[col_a, b]` for every touched
    /// rest column `b` (into `self.e`, `ent` order), with `kcol(b)` column
    /// `b` of the dense inverse `K` (`dd` rows) and `mm_j` the level's rest
    /// columns plus, with `with_x`, its X columns.
    pub fn gather_e<'k, F>(&mut self, bl: &Blocks, with_x: bool, kcol: F)
    where
        F: Fn(usize) -> &'k [f64] + Sync,
    {
        let k1 = bl.k1;
        let p = bl.p;
        let q2 = bl.q2;
        let split = self.split_e.clone();
        let (c, off, ent, col_ptr) = (&self.c, &self.off, &self.ent, &self.col_ptr);
        let run = |cols: std::ops::Range<usize>, dst: &mut [f64]| {
            let base = col_ptr[cols.start];
            for b in cols {
                let kb = kcol(b);
                for t in col_ptr[b]..col_ptr[b + 1] {
                    let j = ent[t].0 as usize;
                    let r0 = bl.r_ptr[j];
                    let nc = bl.r_ptr[j + 1] - r0;
                    let cj = &c[k1 * off[j]..k1 * off[j + 1]];
                    let et = &mut dst[(t - base) * k1..(t - base + 1) * k1];
                    if k1 == 1 {
                        let rc = &bl.r_cols[r0..r0 + nc];
                        let mut v: f64 = rc.iter().zip(cj).map(|(&r, &c)| c * kb[r]).sum();
                        if with_x {
                            v += (0..p).map(|a| cj[nc + a] * kb[q2 + a]).sum::<f64>();
                        }
                        et[0] = v;
                        continue;
                    }
                    et.fill(0.0);
                    for a in 0..nc {
                        let kab = kb[bl.r_cols[r0 + a]];
                        crate::grad::axpy(et, kab, &cj[a * k1..(a + 1) * k1]);
                    }
                    if with_x {
                        for a in 0..p {
                            let kab = kb[q2 + a];
                            let src = (nc + a) * k1;
                            crate::grad::axpy(et, kab, &cj[src..src + k1]);
                        }
                    }
                }
            }
        };
        let mut rest = &mut self.e[..];
        std::thread::scope(|sc| {
            for t in 0..split.len() - 1 {
                let (a, b) = (split[t], split[t + 1]);
                let len = (col_ptr[b] - col_ptr[a]) * k1;
                let (mine, tail) = std::mem::take(&mut rest).split_at_mut(len);
                rest = tail;
                if t + 2 == split.len() {
                    run(a..b, mine);
                } else {
                    let run = &run;
                    sc.spawn(move || run(a..b, mine));
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factor::{evaluate, Workspace};
    use crate::input::{FitInput, ReTermInput};

    /// Sparse crossed design: 80 primary levels each seeing a random ~15%
    /// of 60 items; `(1 + x | a) + (1 + x | b) + (1 | c)` or intercepts only.
    fn check(k: usize, threads: usize) {
        let mut s = 7u64;
        let mut unif = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let (ga, gb, gc) = (80usize, 60usize, 9usize);
        let mut ca = Vec::new();
        let mut cb = Vec::new();
        for a in 0..ga {
            for b in 0..gb {
                if unif() < 0.15 {
                    for _ in 0..1 + (unif() * 3.0) as usize {
                        ca.push(a as i32);
                        cb.push(b as i32);
                    }
                }
            }
        }
        let n = ca.len();
        let cc: Vec<i32> = (0..n).map(|_| (unif() * gc as f64) as i32).collect();
        let xc: Vec<f64> = (0..n).map(|_| unif() - 0.5).collect();
        let mut x = vec![1.0; n];
        x.extend_from_slice(&xc);
        let mut z = vec![1.0; n];
        z.extend_from_slice(&xc);
        let ones = vec![1.0; n];
        let y: Vec<f64> = (0..n)
            .map(|i| xc[i] + unif() + ca[i] as f64 * 0.01 - cb[i] as f64 * 0.02)
            .collect();
        let w: Vec<f64> = (0..n).map(|_| 0.5 + unif()).collect();
        let za: &[f64] = if k == 2 { &z } else { &ones };
        let input = FitInput {
            n,
            p: 2,
            x: &x,
            y: &y,
            weights: &w,
            terms: vec![
                ReTermInput {
                    codes: &ca,
                    n_levels: ga,
                    z: za,
                    k,
                    factor_id: 0,
                },
                ReTermInput {
                    codes: &cb,
                    n_levels: gb,
                    z: za,
                    k,
                    factor_id: 1,
                },
                ReTermInput {
                    codes: &cc,
                    n_levels: gc,
                    z: &ones,
                    k: 1,
                    factor_id: 2,
                },
            ],
        };
        let bl = Blocks::build(&input).unwrap();
        let nt = if k == 2 { 7 } else { 3 };
        let theta: Vec<f64> = (0..nt).map(|i| 0.4 + 0.1 * i as f64).collect();
        for reml in [false, true] {
            let mut plain = Workspace::new(&bl);
            let mut sc = Workspace::new(&bl);
            sc.scatter = Some(Scatter::build(&bl, threads));
            plain.set_theta(&bl, &theta);
            sc.set_theta(&bl, &theta);
            let c1 = evaluate(&bl, &mut plain, reml).unwrap();
            let c2 = evaluate(&bl, &mut sc, reml).unwrap();
            assert!((c1.value - c2.value).abs() < 1e-10 * c1.value.abs());
            let g1 = crate::grad::gradient(&bl, &mut plain, &c1, reml).unwrap();
            let g2 = crate::grad::gradient(&bl, &mut sc, &c2, reml).unwrap();
            for (a, b) in g1.iter().zip(&g2) {
                assert!((a - b).abs() < 1e-8 * (1.0 + a.abs()), "{g1:?} vs {g2:?}");
            }
            // the solution's conditional variances by columns of P
            let s1 = crate::solve::solve(
                &input,
                &bl,
                &mut plain,
                c1.pwrss,
                reml,
                &crate::solve::Back {
                    xq: crate::precondition::QView::Dense(input.x),
                    scale: 1.0,
                    rb: &[],
                    threads: 1,
                },
            )
            .unwrap();
            let s2 = crate::solve::solve(
                &input,
                &bl,
                &mut sc,
                c2.pwrss,
                reml,
                &crate::solve::Back {
                    xq: crate::precondition::QView::Dense(input.x),
                    scale: 1.0,
                    rb: &[],
                    threads: 2,
                },
            )
            .unwrap();
            for (u, v) in s1
                .cond_var
                .iter()
                .flatten()
                .zip(s2.cond_var.iter().flatten())
            {
                assert!((u - v).abs() < 1e-10 * (1.0 + u.abs()));
            }
            for (u, v) in s1.b.iter().zip(&s2.b) {
                assert!((u - v).abs() < 1e-10 * (1.0 + u.abs()));
            }
        }
    }

    #[test]
    fn column_updates_equal_the_grouped_ones() {
        check(1, 1);
        check(1, 2);
        check(2, 3);
    }

    #[test]
    fn balanced_split_covers_everything() {
        let w = vec![1.0, 5.0, 0.0, 2.0, 2.0];
        for parts in 1..7 {
            let s = balanced(&w, parts);
            assert_eq!(s.len(), parts + 1);
            assert_eq!(s[0], 0);
            assert_eq!(s[parts], w.len());
            assert!(s.windows(2).all(|v| v[0] <= v[1]));
        }
    }
}
