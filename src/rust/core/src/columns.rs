//! The fixed-effects model matrix filled from the data's columns: every
//! column is a product of components (numeric columns, or factor codes
//! looked up in one column of a contrast matrix), taken left to right, as
//! R's `model.matrix()` forms interaction columns. R decides the layout
//! (`h_columns_model_matrix()`); this fills the values.

use crate::error::LmmError;

/// One factor of a model-matrix column.
#[derive(Debug, Clone, Copy)]
pub enum Component<'a> {
    /// A numeric column (length `n`).
    Numeric(&'a [f64]),
    /// A factor's 1-based codes (length `n`; `NA` or out of range gives
    /// `NA`) and one column of its contrast matrix, by level.
    Factor { codes: &'a [i32], table: &'a [f64] },
}

/// R's `NA_real_` (a NaN with payload 1954), what `model.matrix()` puts
/// where a factor is missing.
const NA_REAL: f64 = f64::from_bits(0x7FF0_0000_0000_07A2);

fn lookup(table: &[f64], code: i32) -> f64 {
    if code >= 1 && (code as usize) <= table.len() {
        table[code as usize - 1]
    } else {
        NA_REAL
    }
}

fn fill_one(col: &mut [f64], comps: &[Component]) {
    let Some((first, rest)) = comps.split_first() else {
        col.fill(1.0);
        return;
    };
    match first {
        Component::Numeric(x) => col.copy_from_slice(x),
        Component::Factor { codes, table } => {
            for (o, c) in col.iter_mut().zip(codes.iter()) {
                *o = lookup(table, *c);
            }
        }
    }
    for comp in rest {
        match comp {
            Component::Numeric(x) => {
                for (o, v) in col.iter_mut().zip(x.iter()) {
                    *o *= v;
                }
            }
            Component::Factor { codes, table } => {
                for (o, c) in col.iter_mut().zip(codes.iter()) {
                    *o *= lookup(table, *c);
                }
            }
        }
    }
}

/// Fills `out` (column-major `n x cols.len()`) with the columns: column `j`
/// is the product of `cols[j]`'s components (an empty list is a column of
/// ones, the intercept). Columns are shared out between `threads` threads
/// (0: all cores); each is computed by one thread, so the values do not
/// depend on the thread count.
pub fn fill_columns(
    out: &mut [f64],
    n: usize,
    cols: &[Vec<Component>],
    threads: usize,
) -> Result<(), LmmError> {
    let bad = |m: String| Err(LmmError::InvalidInput(m));
    if Some(out.len()) != n.checked_mul(cols.len()) {
        return bad(format!(
            "the matrix has {} values, not n x columns = {n} x {}",
            out.len(),
            cols.len()
        ));
    }
    for (j, col) in cols.iter().enumerate() {
        for comp in col {
            let len = match comp {
                Component::Numeric(x) => x.len(),
                Component::Factor { codes, .. } => codes.len(),
            };
            if len != n {
                return bad(format!(
                    "column {}: a component has length {len}, not n = {n}",
                    j + 1
                ));
            }
        }
    }
    if n == 0 || cols.is_empty() {
        return Ok(());
    }
    let t = crate::pass::resolve_threads(threads).min(cols.len()).max(1);
    let per = cols.len().div_ceil(t);
    std::thread::scope(|s| {
        for (outs, spec) in out.chunks_mut(per * n).zip(cols.chunks(per)) {
            s.spawn(move || {
                for (col, comps) in outs.chunks_mut(n).zip(spec) {
                    fill_one(col, comps);
                }
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_left_to_right_and_missing_codes() {
        let x = [1.5, -2.0, 3.0, 0.25];
        let z = [2.0, 0.5, -1.0, 4.0];
        let codes = [1, 3, 2, i32::MIN];
        let table = [0.0, 1.0, -0.5];
        let cols = vec![
            vec![],
            vec![Component::Numeric(&x)],
            vec![Component::Factor {
                codes: &codes,
                table: &table,
            }],
            vec![
                Component::Numeric(&x),
                Component::Factor {
                    codes: &codes,
                    table: &table,
                },
                Component::Numeric(&z),
            ],
        ];
        for threads in [1, 2, 3] {
            let mut out = vec![0.0; 16];
            fill_columns(&mut out, 4, &cols, threads).unwrap();
            assert_eq!(&out[..4], &[1.0; 4]);
            assert_eq!(&out[4..8], &x);
            assert_eq!(&out[8..11], &[0.0, -0.5, 1.0]);
            assert_eq!(out[11].to_bits(), NA_REAL.to_bits());
            for i in 0..3 {
                assert_eq!(out[12 + i], x[i] * table[codes[i] as usize - 1] * z[i]);
            }
            assert!(out[15].is_nan());
        }
        let mut short = vec![0.0; 15];
        assert!(fill_columns(&mut short, 4, &cols, 1).is_err());
        let bad = vec![vec![Component::Numeric(&x[..3])]];
        let mut out = vec![0.0; 4];
        assert!(fill_columns(&mut out, 4, &bad, 1).is_err());
    }
}
