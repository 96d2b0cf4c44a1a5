//! The kept-model path against the former row-based implementation
//! (`reference`) on seeded designs: one random intercept, correlated slopes,
//! `||`, nested, crossed (with slopes, weights, zero weights), boundary
//! theta, ML, a pseudo-row count override and a non-trivial `X` scale.

use crate::reference;
use crate::{kenward_roger, satterthwaite, QSpace};
use faer::Mat;
use lmmr_core::{Design, FitControl, Model, ReTerm};

struct Rng(u64);
impl Rng {
    fn unif(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Term description: (grouping codes, n_levels, covariate columns (1 = intercept
/// only, 2 = intercept + x), factor id).
type TermSpec = (Vec<i32>, usize, usize, usize);

fn design(seed: u64, n: usize, specs: Vec<TermSpec>, weighted: bool, zero_w: bool) -> Design {
    let mut rng = Rng(seed);
    let xc: Vec<f64> = (0..n).map(|_| rng.unif() * 4.0 - 2.0).collect();
    let x2: Vec<f64> = (0..n).map(|_| 100.0 + 20.0 * rng.unif()).collect();
    let mut y: Vec<f64> = (0..n)
        .map(|i| 1.0 + 0.5 * xc[i] + 0.01 * x2[i] + (rng.unif() - 0.5) * 1.5)
        .collect();
    for (codes, g, _, _) in &specs {
        let eff: Vec<f64> = (0..*g).map(|_| rng.unif() - 0.5).collect();
        let slope: Vec<f64> = (0..*g).map(|_| 0.6 * (rng.unif() - 0.5)).collect();
        for i in 0..n {
            let l = codes[i] as usize;
            y[i] += 1.5 * eff[l] + slope[l] * xc[i];
        }
    }
    let mut x = vec![1.0; n];
    x.extend_from_slice(&xc);
    x.extend_from_slice(&x2);
    let weights = if weighted {
        (0..n)
            .map(|i| {
                if zero_w && i % 11 == 0 {
                    0.0
                } else {
                    0.5 + rng.unif()
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let terms = specs
        .into_iter()
        .map(|(codes, g, k, fid)| {
            let mut z = vec![1.0; n];
            if k == 2 {
                z.extend_from_slice(&xc);
            }
            ReTerm {
                codes: codes.into(),
                n_levels: g,
                z: z.into(),
                k,
                factor_id: fid,
            }
        })
        .collect();
    Design {
        n,
        p: 3,
        x,
        y,
        weights,
        terms,
    }
}

fn close_mat(a: &Mat<f64>, b: &Mat<f64>, tol: f64, what: &str) {
    assert_eq!((a.nrows(), a.ncols()), (b.nrows(), b.ncols()), "{what}");
    let scale = (0..b.ncols())
        .flat_map(|j| (0..b.nrows()).map(move |i| (i, j)))
        .fold(0.0f64, |m, (i, j)| m.max(b[(i, j)].abs()));
    for j in 0..b.ncols() {
        for i in 0..b.nrows() {
            let d = (a[(i, j)] - b[(i, j)]).abs();
            assert!(
                d <= tol * (scale + 1e-300),
                "{what}[{i},{j}]: {} vs {} (scale {scale})",
                a[(i, j)],
                b[(i, j)]
            );
        }
    }
}

fn close_vec(a: &[f64], b: &[f64], tol: f64, what: &str) {
    let ma = Mat::from_fn(a.len(), 1, |i, _| a[i]);
    let mb = Mat::from_fn(b.len(), 1, |i, _| b[i]);
    close_mat(&ma, &mb, tol, what);
}

/// Compares both paths at `theta` (the REML or ML fit if `None`).
fn check(d: &Design, reml: bool, theta: Option<Vec<f64>>, n_obs: Option<usize>) {
    let mut model = Model::new(d.clone()).unwrap();
    if let Some(n) = n_obs {
        model.set_counts(Some(n), Some(0.0)).unwrap();
    }
    let control = FitControl {
        reml,
        ..FitControl::default()
    };
    let fit = model.fit(&control).unwrap();
    let theta = theta.unwrap_or(fit.theta.clone());
    let sigma = model.evaluate(&theta, reml).unwrap().sigma;
    let ones = vec![1.0; d.n];
    let old_in = reference::ModelInput {
        n: d.n,
        p: d.p,
        x: &d.x,
        y: &d.y,
        weights: if d.weights.is_empty() {
            &ones
        } else {
            &d.weights
        },
        terms: d
            .terms
            .iter()
            .map(|t| reference::TermInput {
                codes: &t.codes,
                n_levels: t.n_levels,
                z: &t.z,
                k: t.k,
                factor_id: t.factor_id,
            })
            .collect(),
        theta: &theta,
        sigma,
        reml,
        n_obs,
    };
    let qs = QSpace::new(&mut model, &theta, sigma).unwrap();
    let tol = 1e-7;
    let s_new = satterthwaite(&qs, reml).unwrap();
    let s_old = reference::satterthwaite(&old_in).unwrap();
    close_vec(&s_new.beta, &s_old.beta, tol, "beta");
    close_mat(&s_new.vcov_beta, &s_old.vcov_beta, tol, "vcov_beta");
    let gs = s_old.gradient.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (a, b) in s_new.gradient.iter().zip(&s_old.gradient) {
        assert!((a - b).abs() <= 1e-6 * gs, "gradient {a} vs {b}");
    }
    close_mat(&s_new.hessian, &s_old.hessian, tol, "hessian");
    close_mat(&s_new.vcov_varpar, &s_old.vcov_varpar, 1e-6, "vcov_varpar");
    for (a, b) in s_new.jacobian.iter().zip(&s_old.jacobian) {
        close_mat(a, b, tol, "jacobian");
    }
    if reml {
        let k_new = kenward_roger(&qs, true).unwrap();
        let k_old = reference::kenward_roger(&old_in).unwrap();
        close_mat(&k_new.phi, &k_old.phi, tol, "phi");
        close_mat(&k_new.phi_adj, &k_old.phi_adj, tol, "phi_adj");
        close_mat(&k_new.info, &k_old.info, tol, "info");
        close_mat(&k_new.w, &k_old.w, 1e-6, "w");
        for (a, b) in k_new.p_list.iter().zip(&k_old.p_list) {
            close_mat(a, b, tol, "p_list");
        }
    }
}

fn codes(n: usize, g: usize, f: impl Fn(usize) -> usize) -> Vec<i32> {
    (0..n).map(|i| (f(i) % g) as i32).collect()
}

#[test]
fn one_random_intercept_and_correlated_slopes() {
    let n = 160;
    let g = codes(n, 12, |i| i / 13);
    for reml in [true, false] {
        check(
            &design(1, n, vec![(g.clone(), 12, 1, 0)], false, false),
            reml,
            None,
            None,
        );
        check(
            &design(2, n, vec![(g.clone(), 12, 2, 0)], true, false),
            reml,
            None,
            None,
        );
    }
}

#[test]
fn uncorrelated_terms_on_one_factor() {
    // (x || g): (1 | g) + (0 + x | g) -- here as an intercept term and an
    // intercept + slope term on the same factor
    let n = 150;
    let g = codes(n, 10, |i| i * 7);
    let d = design(
        3,
        n,
        vec![(g.clone(), 10, 1, 0), (g, 10, 2, 0)],
        false,
        false,
    );
    check(&d, true, None, None);
}

#[test]
fn nested_factors() {
    // (1 | a) + (1 | a:b): a has 6 levels, a:b 24
    let n = 192;
    let ab = codes(n, 24, |i| i / 8);
    let a: Vec<i32> = ab.iter().map(|c| c / 4).collect();
    let d = design(4, n, vec![(a, 6, 1, 0), (ab, 24, 1, 1)], true, false);
    check(&d, true, None, None);
    check(&d, false, None, None);
}

#[test]
fn crossed_factors_with_slopes_weights_and_zero_weights() {
    let n = 180;
    let mut rng = Rng(77);
    let s = codes(n, 15, |i| i);
    let it: Vec<i32> = (0..n).map(|_| (rng.unif() * 9.0).min(8.0) as i32).collect();
    for (weighted, zero_w) in [(false, false), (true, false), (true, true)] {
        let d = design(
            5,
            n,
            vec![(s.clone(), 15, 2, 0), (it.clone(), 9, 1, 1)],
            weighted,
            zero_w,
        );
        check(&d, true, None, None);
        check(&d, false, None, None);
    }
    // the rest factor with slopes (k = 2 on the dense block)
    let d = design(
        6,
        n,
        vec![(s.clone(), 15, 1, 0), (it.clone(), 9, 2, 1)],
        true,
        false,
    );
    check(&d, true, None, None);
    // three crossed factors
    let h = codes(n, 4, |i| i / 3);
    let d = design(
        7,
        n,
        vec![(s, 15, 1, 0), (it, 9, 1, 1), (h, 4, 1, 2)],
        false,
        false,
    );
    check(&d, true, None, None);
}

#[test]
fn boundary_theta_and_pseudo_row_counts() {
    let n = 180;
    let s = codes(n, 15, |i| i);
    let it = codes(n, 9, |i| i / 20);
    let d = design(
        8,
        n,
        vec![(s.clone(), 15, 2, 0), (it, 9, 1, 1)],
        false,
        false,
    );
    // a zero variance (boundary) and a zero slope column
    check(&d, true, Some(vec![0.8, 0.1, 0.0, 0.0]), None);
    check(&d, true, Some(vec![0.0, 0.0, 0.5, 0.7]), None);
    // n of the data when the rows are pseudo-rows
    let d1 = design(9, n, vec![(s, 15, 1, 0)], false, false);
    check(&d1, true, None, Some(250));
}

#[test]
fn errors_come_from_the_core() {
    let n = 100;
    let g = codes(n, 10, |i| i);
    let mut model = Model::new(design(10, n, vec![(g, 10, 1, 0)], false, false)).unwrap();
    assert_eq!(
        QSpace::new(&mut model, &[1.0, 2.0], 1.0)
            .err()
            .unwrap()
            .kind(),
        "invalid_input"
    );
    assert_eq!(
        QSpace::new(&mut model, &[1.0], -1.0).err().unwrap().kind(),
        "invalid_input"
    );
    assert_eq!(
        QSpace::new(&mut model, &[f64::NAN], 1.0)
            .err()
            .unwrap()
            .kind(),
        "invalid_input"
    );
}
