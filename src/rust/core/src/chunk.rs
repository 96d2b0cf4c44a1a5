//! Groups of primary levels whose `C_j` blocks (see
//! [`level_block`](crate::factor::level_block)) are stacked into one dense
//! matrix over the union of their columns, so that the updates
//! `S -= sum_j C_j' C_j` (evaluation) and `E_j = C_j K[idx, idx]` (gradient)
//! become a few matrix products instead of many small scattered loops.
//!
//! A level joins the current group while the group's product stays within a
//! small factor of the cost of the levels' separate updates (levels that
//! touch the same columns, as in crossed designs where every subject sees
//! every item, stack perfectly; nested designs with disjoint columns stay
//! one level per group).

/// Largest union of columns handled through a temporary product.
pub(crate) const MAX_UNION: usize = 2048;

pub(crate) struct Chunk {
    /// Rows per group (a multiple of k1).
    pub maxr: usize,
    pub k1: usize,
    pub rows: usize,
    /// Position of a dense-system column in the union, or usize::MAX.
    pub pos: Vec<usize>,
    /// Union columns in insertion order.
    pub ucols: Vec<usize>,
    /// `maxr x |union|` column-major (leading dimension maxr).
    pub cc: Vec<f64>,
    /// Per level of the group: (level, m, offset into lc / li).
    pub levels: Vec<(usize, usize, usize)>,
    /// Copies of the levels' L_j (k1 x k1 each).
    pub lm: Vec<f64>,
    /// Copies of the levels' C_j (k1 x m) and idx (m).
    pub lc: Vec<f64>,
    pub li: Vec<usize>,
    cost_sep: f64,
    /// Sorted union and its positions.
    pub sorted: Vec<usize>,
    pub spos: Vec<usize>,
    /// Sorted stacked copy, `rows x |union|`.
    pub cs: Vec<f64>,
    pub tmp: Vec<f64>,
}

impl Chunk {
    pub fn new(k1: usize, d: usize) -> Chunk {
        let k1 = k1.max(1);
        let cap = (1usize << 22) / d.max(1);
        let maxr = (cap.min(256) / k1).max(1) * k1;
        Chunk {
            maxr,
            k1,
            rows: 0,
            pos: vec![usize::MAX; d],
            ucols: Vec::new(),
            cc: vec![0.0; maxr * d],
            levels: Vec::new(),
            lm: Vec::new(),
            lc: Vec::new(),
            li: Vec::new(),
            cost_sep: 0.0,
            sorted: Vec::new(),
            spos: vec![usize::MAX; d],
            cs: Vec::new(),
            tmp: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Whether a level with columns `idx` fits into the current group.
    pub fn accepts(&self, idx: &[usize]) -> bool {
        if self.levels.is_empty() {
            return true;
        }
        if self.rows + self.k1 > self.maxr {
            return false;
        }
        let new = idx.iter().filter(|&&c| self.pos[c] == usize::MAX).count();
        let u = (self.ucols.len() + new) as f64;
        let m = idx.len() as f64;
        let k1 = self.k1 as f64;
        let grouped = u * u * (self.rows as f64 + k1);
        grouped <= 3.0 * (self.cost_sep + m * m * k1)
            && self.ucols.len() + new <= MAX_UNION.max(idx.len())
    }

    /// Adds level `j` with factor `l` (k1 x k1), `c` (k1 x m) and `idx`.
    pub fn push(&mut self, j: usize, l: &[f64], c: &[f64], idx: &[usize]) {
        let k1 = self.k1;
        let m = idx.len();
        let r0 = self.rows;
        // Zero the new row band of the existing union columns.
        for u in 0..self.ucols.len() {
            self.cc[u * self.maxr + r0..u * self.maxr + r0 + k1].fill(0.0);
        }
        for (a, &col) in idx.iter().enumerate() {
            if self.pos[col] == usize::MAX {
                let u = self.ucols.len();
                self.pos[col] = u;
                self.ucols.push(col);
                self.cc[u * self.maxr..u * self.maxr + r0 + k1].fill(0.0);
            }
            let u = self.pos[col];
            self.cc[u * self.maxr + r0..u * self.maxr + r0 + k1]
                .copy_from_slice(&c[a * k1..(a + 1) * k1]);
        }
        self.levels.push((j, m, self.li.len()));
        self.lm.extend_from_slice(&l[..k1 * k1]);
        self.lc.extend_from_slice(&c[..k1 * m]);
        self.li.extend_from_slice(idx);
        self.rows += k1;
        self.cost_sep += (m * m * k1) as f64;
    }

    /// Sorts the union and builds `cs` (rows x |union|, sorted columns
    /// restricted to those `< limit`). Returns the number of such columns.
    pub fn sort_union(&mut self, limit: usize) -> usize {
        self.sorted.clear();
        self.sorted
            .extend(self.ucols.iter().copied().filter(|&c| c < limit));
        self.sorted.sort_unstable();
        let nu = self.sorted.len();
        let rows = self.rows;
        self.cs.clear();
        self.cs.resize(rows * nu, 0.0);
        for (s, &col) in self.sorted.iter().enumerate() {
            self.spos[col] = s;
            let u = self.pos[col];
            self.cs[s * rows..(s + 1) * rows]
                .copy_from_slice(&self.cc[u * self.maxr..u * self.maxr + rows]);
        }
        nu
    }

    /// Empties the group.
    pub fn clear(&mut self) {
        for &c in &self.ucols {
            self.pos[c] = usize::MAX;
        }
        for &c in &self.sorted {
            self.spos[c] = usize::MAX;
        }
        self.ucols.clear();
        self.sorted.clear();
        self.levels.clear();
        self.lm.clear();
        self.lc.clear();
        self.li.clear();
        self.rows = 0;
        self.cost_sep = 0.0;
    }
}
