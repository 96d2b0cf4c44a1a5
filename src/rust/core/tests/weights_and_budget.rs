//! Zero weights drop the observation's contribution (the fit equals the fit
//! without those rows), and a spent time budget stops the fit at the best
//! point reached.

use lmmr_core::{check_weights, fit_lmm, FitControl, FitInput, ReTermInput};

/// Seeded data: 12 groups of 6, intercept and one covariate, random
/// intercept and slope.
fn data() -> (Vec<f64>, Vec<f64>, Vec<i32>, Vec<f64>) {
    let n = 72;
    let mut s: u64 = 12345;
    let mut unif = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64) / ((1u64 << 53) as f64) - 0.5
    };
    let codes: Vec<i32> = (0..n).map(|i| (i / 6) as i32).collect();
    let xc: Vec<f64> = (0..n).map(|_| 2.0 * unif()).collect();
    let b: Vec<f64> = (0..12).map(|_| 2.0 * unif()).collect();
    let y: Vec<f64> = (0..n)
        .map(|i| 1.0 + 0.5 * xc[i] + b[codes[i] as usize] + unif())
        .collect();
    let x: Vec<f64> = (0..n).map(|_| 1.0).chain(xc.iter().copied()).collect();
    let z: Vec<f64> = (0..n).map(|_| 1.0).chain(xc.iter().copied()).collect();
    (x, y, codes, z)
}

fn input<'a>(
    x: &'a [f64],
    y: &'a [f64],
    w: &'a [f64],
    codes: &'a [i32],
    z: &'a [f64],
    n: usize,
) -> FitInput<'a> {
    FitInput {
        n,
        p: 2,
        x,
        y,
        weights: w,
        terms: vec![ReTermInput {
            codes,
            n_levels: 12,
            z,
            k: 2,
            factor_id: 0,
        }],
    }
}

/// Rows `keep` of a column-major `n x k` matrix.
fn rows(m: &[f64], n: usize, keep: &[usize]) -> Vec<f64> {
    let k = m.len() / n;
    (0..k)
        .flat_map(|c| keep.iter().map(move |&i| m[c * n + i]))
        .collect()
}

#[test]
fn zero_weights_equal_dropping_the_rows() {
    let (x, y, codes, z) = data();
    let n = y.len();
    let w: Vec<f64> = (0..n)
        .map(|i| {
            if i % 7 == 3 {
                0.0
            } else {
                1.0 + (i % 3) as f64
            }
        })
        .collect();
    let keep: Vec<usize> = (0..n).filter(|&i| w[i] > 0.0).collect();
    let (xs, ys, zs) = (rows(&x, n, &keep), rows(&y, n, &keep), rows(&z, n, &keep));
    let ws: Vec<f64> = keep.iter().map(|&i| w[i]).collect();
    let cs: Vec<i32> = keep.iter().map(|&i| codes[i]).collect();
    for reml in [true, false] {
        let ctl = FitControl {
            reml,
            ..Default::default()
        };
        let full = fit_lmm(&input(&x, &y, &w, &codes, &z, n), &ctl).unwrap();
        let sub = fit_lmm(&input(&xs, &ys, &ws, &cs, &zs, keep.len()), &ctl).unwrap();
        assert!((full.objective - sub.objective).abs() < 1e-8 * sub.objective.abs());
        assert!((full.sigma - sub.sigma).abs() < 1e-6 * sub.sigma);
        for (a, b) in full.beta.iter().zip(&sub.beta) {
            assert!((a - b).abs() < 1e-6 * (1.0 + b.abs()));
        }
        assert_eq!(full.fitted.len(), n);
    }
}

#[test]
fn the_weights_rule() {
    assert_eq!(check_weights(&[1.0, 0.0, 2.0]).unwrap(), 2);
    assert_eq!(check_weights(&[1.0, -1.0]).unwrap_err().kind(), "argument");
    assert_eq!(
        check_weights(&[1.0, f64::NAN]).unwrap_err().kind(),
        "argument"
    );
    assert_eq!(check_weights(&[0.0, 0.0]).unwrap_err().kind(), "argument");
}

#[test]
fn a_spent_budget_stops_at_the_best_point_not_converged() {
    let (x, y, codes, z) = data();
    let n = y.len();
    let ctl = FitControl {
        max_time: Some(0.0),
        ..Default::default()
    };
    let out = fit_lmm(&input(&x, &y, &[], &codes, &z, n), &ctl).unwrap();
    assert!(out.time_budget_spent);
    assert!(!out.converged);
    assert!(out.message.contains("max_time"));
    assert!(out.objective.is_finite());
    let free = fit_lmm(&input(&x, &y, &[], &codes, &z, n), &FitControl::default()).unwrap();
    assert!(!free.time_budget_spent);
    assert!(free.objective <= out.objective);
}
