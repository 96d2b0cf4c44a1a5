//! Naive dense reference implementation (tests only) and the comparison of
//! the blocked algorithm against it on seeded random designs.

use crate::input::FitInput;

/// Dense results at a fixed theta.
pub(crate) struct DenseRef {
    pub reml: f64,
    pub ml: f64,
    pub ldl2: f64,
    pub ldrx2: f64,
    pub pwrss: f64,
    pub beta: Vec<f64>,
    pub b: Vec<f64>,
    /// (LL')^{-1}, q x q.
    pub ainv: Vec<f64>,
    /// (R_X'R_X)^{-1}, p x p.
    pub rxinv: Vec<f64>,
    pub lambda: Vec<f64>,
    pub q: usize,
}

fn chol(a: &mut [f64], k: usize) {
    for j in 0..k {
        let mut dj = a[j * k + j];
        for l in 0..j {
            dj -= a[l * k + j] * a[l * k + j];
        }
        assert!(dj > 0.0, "reference Cholesky failed");
        let ljj = dj.sqrt();
        a[j * k + j] = ljj;
        for i in (j + 1)..k {
            let mut v = a[j * k + i];
            for l in 0..j {
                v -= a[l * k + i] * a[l * k + j];
            }
            a[j * k + i] = v / ljj;
        }
        for i in 0..j {
            a[j * k + i] = 0.0;
        }
    }
}

/// Inverse of SPD matrix via Gauss-Jordan (plain loops).
fn spd_inverse(a: &[f64], k: usize) -> Vec<f64> {
    let mut m = a.to_vec();
    let mut inv = vec![0.0; k * k];
    for i in 0..k {
        inv[i * k + i] = 1.0;
    }
    for c in 0..k {
        let piv = m[c * k + c];
        for j in 0..k {
            m[j * k + c] /= piv;
            inv[j * k + c] /= piv;
        }
        for r in 0..k {
            if r != c {
                let f = m[c * k + r];
                for j in 0..k {
                    m[j * k + r] -= f * m[j * k + c];
                    inv[j * k + r] -= f * inv[j * k + c];
                }
            }
        }
    }
    inv
}

pub(crate) fn dense_reference(input: &FitInput, theta: &[f64]) -> DenseRef {
    let n = input.n;
    let p = input.p;
    let q: usize = input.terms.iter().map(|t| t.n_levels * t.k).sum();
    let w = |i: usize| {
        if input.weights.is_empty() {
            1.0
        } else {
            input.weights[i]
        }
    };
    // Z (n x q) and Lambda (q x q), dense.
    let mut z = vec![0.0; n * q];
    let mut lam = vec![0.0; q * q];
    let mut off = 0;
    let mut th = 0;
    for t in &input.terms {
        let k = t.k;
        for i in 0..n {
            for c in 0..k {
                z[(off + t.codes[i] as usize * k + c) * n + i] = t.z[c * n + i];
            }
        }
        let mut lt = vec![0.0; k * k];
        for c in 0..k {
            for r in c..k {
                lt[c * k + r] = theta[th];
                th += 1;
            }
        }
        for l in 0..t.n_levels {
            let o = off + l * k;
            for c in 0..k {
                for r in 0..k {
                    lam[(o + c) * q + o + r] = lt[c * k + r];
                }
            }
        }
        off += t.n_levels * k;
    }
    // ZL = Z Lambda, columns [ZL, X, y], weighted cross products.
    let d = q + p + 1;
    let mut cols = vec![0.0; n * d];
    for c in 0..q {
        for i in 0..n {
            let mut v = 0.0;
            for m in 0..q {
                v += z[m * n + i] * lam[c * q + m];
            }
            cols[c * n + i] = v;
        }
    }
    for c in 0..p {
        for i in 0..n {
            cols[(q + c) * n + i] = input.x[c * n + i];
        }
    }
    for i in 0..n {
        cols[(q + p) * n + i] = input.y[i];
    }
    let mut a = vec![0.0; d * d];
    for c in 0..d {
        for r in 0..d {
            let mut v = 0.0;
            for i in 0..n {
                v += cols[r * n + i] * w(i) * cols[c * n + i];
            }
            a[c * d + r] = v;
        }
    }
    for i in 0..q {
        a[i * d + i] += 1.0;
    }
    let aq: Vec<f64> = (0..q * q).map(|ix| a[(ix / q) * d + ix % q]).collect();
    let mut l = a.clone();
    chol(&mut l, d);
    let ldl2: f64 = (0..q).map(|i| 2.0 * l[i * d + i].ln()).sum();
    let ldrx2: f64 = (q..q + p).map(|i| 2.0 * l[i * d + i].ln()).sum();
    let pwrss = l[(d - 1) * d + d - 1].powi(2);
    // Solve the full normal equations for [u; beta].
    let m = q + p;
    let am: Vec<f64> = (0..m * m).map(|ix| a[(ix / m) * d + ix % m]).collect();
    let rhs: Vec<f64> = (0..m).map(|i| a[(d - 1) * d + i]).collect();
    let ainv_full = spd_inverse(&am, m);
    let sol: Vec<f64> = (0..m)
        .map(|r| (0..m).map(|c| ainv_full[c * m + r] * rhs[c]).sum())
        .collect();
    let u = &sol[..q];
    let beta = sol[q..].to_vec();
    let b: Vec<f64> = (0..q)
        .map(|r| (0..q).map(|c| lam[c * q + r] * u[c]).sum())
        .collect();
    let rxinv: Vec<f64> = (0..p * p)
        .map(|ix| ainv_full[(q + ix / p) * m + q + ix % p])
        .collect();
    let ainv = spd_inverse(&aq, q);
    let nf = n as f64;
    let nmp = (n - p) as f64;
    let ldw: f64 = (0..n).map(|i| w(i).ln()).sum();
    let tp = 2.0 * std::f64::consts::PI;
    let ml = ldl2 - ldw + nf * (1.0 + (tp * pwrss / nf).ln());
    let reml = ldl2 + ldrx2 - ldw + nmp * (1.0 + (tp * pwrss / nmp).ln());
    DenseRef {
        reml,
        ml,
        ldl2,
        ldrx2,
        pwrss,
        beta,
        b,
        ainv,
        rxinv,
        lambda: lam,
        q,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::ReTermInput;
    use crate::{evaluate_criterion, evaluate_gradient, evaluate_hessian, fit_lmm, FitControl};

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let u1 = self.next().max(1e-300);
            let u2 = self.next();
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
        fn int(&mut self, m: usize) -> usize {
            ((self.next() * m as f64) as usize).min(m - 1)
        }
    }

    /// (codes, n_levels, z, k, factor_id)
    type Term = (Vec<i32>, usize, Vec<f64>, usize, usize);

    /// Owned storage for a random design.
    struct Design {
        n: usize,
        p: usize,
        x: Vec<f64>,
        y: Vec<f64>,
        w: Vec<f64>,
        terms: Vec<Term>,
    }

    impl Design {
        fn input(&self) -> FitInput<'_> {
            FitInput {
                n: self.n,
                p: self.p,
                x: &self.x,
                y: &self.y,
                weights: &self.w,
                terms: self
                    .terms
                    .iter()
                    .map(|(c, g, z, k, f)| ReTermInput {
                        codes: c,
                        n_levels: *g,
                        z,
                        k: *k,
                        factor_id: *f,
                    })
                    .collect(),
            }
        }
    }

    /// factors: number of levels per factor; terms: (factor, k); nested: if
    /// true, factor 1 is nested in factor 0 (codes of 0 derived from 1).
    fn make(
        seed: u64,
        n: usize,
        p: usize,
        factors: &[usize],
        terms: &[(usize, usize)],
        weighted: bool,
        nested: bool,
    ) -> Design {
        let mut r = Rng(seed);
        let mut x = vec![0.0; n * p];
        for c in 0..p {
            for i in 0..n {
                x[c * n + i] = if c == 0 { 1.0 } else { r.normal() };
            }
        }
        let mut codes: Vec<Vec<i32>> = factors
            .iter()
            .map(|&g| {
                (0..n)
                    .map(|i| if i < g { i as i32 } else { r.int(g) as i32 })
                    .collect()
            })
            .collect();
        if nested {
            // factor 0 (coarse) = factor 1 (fine) / ratio
            let ratio = factors[1] / factors[0];
            codes[0] = codes[1].iter().map(|&c| c / ratio as i32).collect();
        }
        let cov: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let y: Vec<f64> = (0..n)
            .map(|i| {
                let mut v = 0.5 + cov[i] + r.normal();
                for (f, c) in codes.iter().enumerate() {
                    v += ((c[i] as f64 + 1.0 + f as f64) * 1.7).sin();
                }
                v
            })
            .collect();
        let w = if weighted {
            (0..n).map(|_| 0.3 + 2.0 * r.next()).collect()
        } else {
            Vec::new()
        };
        let ts = terms
            .iter()
            .map(|&(f, k)| {
                let mut z = vec![0.0; n * k];
                for c in 0..k {
                    for i in 0..n {
                        z[c * n + i] = match c {
                            0 => 1.0,
                            1 => cov[i],
                            _ => r.normal(),
                        };
                    }
                }
                (codes[f].clone(), factors[f], z, k, f)
            })
            .collect();
        Design {
            n,
            p,
            x,
            y,
            w,
            terms: ts,
        }
    }

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / (1.0 + b.abs())
    }

    fn compare(des: &Design, theta: &[f64]) {
        let input = des.input();
        let r = dense_reference(&input, theta);
        let tol = 1e-10;
        let creml = evaluate_criterion(&input, theta, true).unwrap();
        let cml = evaluate_criterion(&input, theta, false).unwrap();
        assert!(rel(creml, r.reml) < tol, "REML {creml} vs {}", r.reml);
        assert!(rel(cml, r.ml) < tol, "ML {cml} vs {}", r.ml);
        for reml in [true, false] {
            let ctl = FitControl {
                reml,
                optimize: false,
                theta_start: Some(theta.to_vec()),
                ..Default::default()
            };
            let out = fit_lmm(&input, &ctl).unwrap();
            assert!(rel(out.ldl2, r.ldl2) < tol);
            assert!(rel(out.ldrx2, r.ldrx2) < tol);
            assert!(rel(out.pwrss, r.pwrss) < tol);
            for (a, b) in out.beta.iter().zip(&r.beta) {
                assert!(rel(*a, *b) < tol, "beta {a} vs {b}");
            }
            assert_eq!(out.b.len(), r.q);
            for (a, b) in out.b.iter().zip(&r.b) {
                assert!(rel(*a, *b) < tol, "b {a} vs {b}");
            }
            let s2 = r.pwrss
                / if reml {
                    (des.n - des.p) as f64
                } else {
                    des.n as f64
                };
            assert!(rel(out.sigma * out.sigma, s2) < tol);
            for (a, b) in out.vcov_beta.iter().zip(&r.rxinv) {
                assert!(rel(*a, s2 * b) < tol, "vcov {a} vs {}", s2 * b);
            }
            // conditional variances: s2 * Lambda (LL')^{-1} Lambda' blocks.
            let q = r.q;
            let mut off = 0;
            for (t, term) in input.terms.iter().enumerate() {
                let k = term.k;
                for l in 0..term.n_levels {
                    let o = off + l * k;
                    for c in 0..k {
                        for rr in 0..k {
                            let mut v = 0.0;
                            for a in 0..q {
                                for b in 0..q {
                                    v += r.lambda[a * q + o + rr]
                                        * r.ainv[b * q + a]
                                        * r.lambda[b * q + o + c];
                                }
                            }
                            let got = out.cond_var[t][l * k * k + c * k + rr];
                            assert!(rel(got, s2 * v) < tol, "condvar {got} vs {}", s2 * v);
                        }
                    }
                }
                off += term.n_levels * k;
            }
            // fitted = X beta + Z b
            for i in 0..des.n {
                let mut v = 0.0;
                for c in 0..des.p {
                    v += des.x[c * des.n + i] * r.beta[c];
                }
                let mut off = 0;
                for term in &input.terms {
                    for c in 0..term.k {
                        v += term.z[c * des.n + i] * r.b[off + term.codes[i] as usize * term.k + c];
                    }
                    off += term.n_levels * term.k;
                }
                assert!(rel(out.fitted[i], v) < tol);
            }
        }
    }

    #[test]
    fn one_intercept_p1() {
        let d = make(1, 40, 1, &[7], &[(0, 1)], false, false);
        compare(&d, &[0.8]);
        compare(&d, &[0.0]);
        compare(&d, &[3.0]);
    }

    #[test]
    fn correlated_slope_p2() {
        let d = make(2, 60, 2, &[6], &[(0, 2)], false, false);
        compare(&d, &[0.9, -0.3, 0.4]);
        compare(&d, &[1.0, 0.0, 0.0]);
    }

    #[test]
    fn two_terms_one_factor() {
        let d = make(3, 50, 2, &[5], &[(0, 1), (0, 1)], false, false);
        compare(&d, &[0.7, 1.3]);
        let d = make(4, 70, 3, &[5], &[(0, 2), (0, 1)], true, false);
        compare(&d, &[0.7, 0.2, 1.1, 0.5]);
    }

    #[test]
    fn crossed_two_terms() {
        let d = make(5, 80, 2, &[9, 5], &[(0, 1), (1, 1)], false, false);
        compare(&d, &[0.8, 1.4]);
        // rest term with k = 2, primary term with k = 2
        let d = make(6, 90, 2, &[9, 4], &[(1, 2), (0, 2)], false, false);
        compare(&d, &[0.5, 0.3, 0.8, 1.2, -0.4, 0.6]);
    }

    #[test]
    fn three_crossed_factors() {
        let d = make(
            7,
            100,
            2,
            &[10, 4, 3],
            &[(0, 1), (1, 1), (2, 2)],
            true,
            false,
        );
        compare(&d, &[0.8, 1.4, 0.6, -0.2, 0.9]);
    }

    #[test]
    fn nested() {
        let d = make(8, 90, 1, &[4, 12], &[(1, 1), (0, 1)], false, true);
        compare(&d, &[0.8, 1.4]);
    }

    #[test]
    fn weighted() {
        let d = make(9, 50, 3, &[6], &[(0, 1)], true, false);
        compare(&d, &[1.2]);
        let d = make(10, 80, 2, &[8, 3], &[(0, 2), (1, 1)], true, false);
        compare(&d, &[1.2, 0.1, 0.5, 0.7]);
    }

    #[test]
    fn larger_rest_block_uses_faer_cholesky() {
        // q2 + p + 1 > 48 so the dense factorisation goes through faer.
        let d = make(11, 300, 2, &[60, 50], &[(0, 1), (1, 1)], false, false);
        compare(&d, &[0.8, 1.4]);
    }

    /// Analytic gradient against central differences of the criterion.
    fn check_grad(des: &Design, theta: &[f64]) {
        let input = des.input();
        for reml in [true, false] {
            let (f0, g) = evaluate_gradient(&input, theta, reml).unwrap();
            let f1 = evaluate_criterion(&input, theta, reml).unwrap();
            assert!(rel(f0, f1) < 1e-12);
            let mut th = theta.to_vec();
            for i in 0..theta.len() {
                let h = 1e-5 * theta[i].abs().max(0.5);
                th[i] = theta[i] + h;
                let fp = evaluate_criterion(&input, &th, reml).unwrap();
                th[i] = theta[i] - h;
                let fm = evaluate_criterion(&input, &th, reml).unwrap();
                th[i] = theta[i];
                let fd = (fp - fm) / (2.0 * h);
                assert!(
                    (g[i] - fd).abs() < 1e-6 * (1.0 + fd.abs()),
                    "reml {reml} theta {theta:?} component {i}: analytic {} vs fd {fd}",
                    g[i]
                );
            }
        }
    }

    #[test]
    fn gradient_one_intercept() {
        let d = make(1, 40, 1, &[7], &[(0, 1)], false, false);
        check_grad(&d, &[0.8]);
        check_grad(&d, &[3.0]);
        let d = make(12, 60, 3, &[9], &[(0, 1)], false, false);
        check_grad(&d, &[0.4]);
    }

    #[test]
    fn gradient_correlated_slopes() {
        let d = make(2, 60, 2, &[6], &[(0, 2)], false, false);
        check_grad(&d, &[0.9, -0.3, 0.4]);
        let d = make(13, 120, 3, &[10], &[(0, 3)], false, false);
        check_grad(&d, &[0.9, -0.3, 0.2, 0.4, 0.1, 0.7]);
    }

    #[test]
    fn gradient_several_terms_one_factor() {
        // (x || g): two k = 1 terms on one factor; and (x | g) + (1 | g).
        let d = make(3, 50, 2, &[5], &[(0, 1), (0, 1)], false, false);
        check_grad(&d, &[0.7, 1.3]);
        let d = make(4, 70, 3, &[5], &[(0, 2), (0, 1)], true, false);
        check_grad(&d, &[0.7, 0.2, 1.1, 0.5]);
    }

    #[test]
    fn gradient_nested_and_crossed() {
        let d = make(8, 90, 1, &[4, 12], &[(1, 1), (0, 1)], false, true);
        check_grad(&d, &[0.8, 1.4]);
        let d = make(5, 80, 2, &[9, 5], &[(0, 1), (1, 1)], false, false);
        check_grad(&d, &[0.8, 1.4]);
        // rest term with k = 2, primary term with k = 2
        let d = make(6, 90, 2, &[9, 4], &[(1, 2), (0, 2)], false, false);
        check_grad(&d, &[0.5, 0.3, 0.8, 1.2, -0.4, 0.6]);
        let d = make(
            7,
            100,
            2,
            &[10, 4, 3],
            &[(0, 1), (1, 1), (2, 2)],
            true,
            false,
        );
        check_grad(&d, &[0.8, 1.4, 0.6, -0.2, 0.9]);
        // rest block through faer (d > 48)
        let d = make(11, 300, 2, &[60, 50], &[(0, 1), (1, 2)], false, false);
        check_grad(&d, &[0.8, 1.4, 0.3, 0.5]);
    }

    #[test]
    fn gradient_weighted() {
        let d = make(9, 50, 3, &[6], &[(0, 1)], true, false);
        check_grad(&d, &[1.2]);
        let d = make(10, 80, 2, &[8, 3], &[(0, 2), (1, 1)], true, false);
        check_grad(&d, &[1.2, 0.1, 0.5, 0.7]);
    }

    #[test]
    fn gradient_at_the_boundary() {
        // A zero diagonal: scalar variance (even criterion, zero gradient)
        // and a zero diagonal with a non-zero column below it.
        let d = make(1, 40, 1, &[7], &[(0, 1)], false, false);
        check_grad(&d, &[0.0]);
        let (_, g) = evaluate_gradient(&d.input(), &[0.0], true).unwrap();
        assert!(g[0].abs() < 1e-12);
        let d = make(2, 60, 2, &[6], &[(0, 2)], false, false);
        check_grad(&d, &[0.0, -0.3, 0.4]);
        check_grad(&d, &[0.9, -0.3, 0.0]);
        let d = make(10, 80, 2, &[8, 3], &[(0, 2), (1, 1)], true, false);
        check_grad(&d, &[1.2, 0.1, 0.5, 0.0]);
        check_grad(&d, &[0.0, 0.0, 0.0, 0.7]);
    }

    #[test]
    fn moment_start_is_near_the_estimates() {
        // one factor, crossed, weighted: the moment start within a factor
        // of two of the fitted theta (the random effects have sd ~0.7)
        for (seed, factors, terms, weighted) in [
            (21u64, vec![40usize], vec![(0usize, 1usize)], false),
            (22, vec![40, 25], vec![(0, 1), (1, 1)], false),
            (23, vec![30, 20], vec![(0, 1), (1, 1)], true),
        ] {
            let d = make(seed, 2000, 2, &factors, &terms, weighted, false);
            let mut m = crate::Model::from_input(&d.input(), 1).unwrap();
            let start = crate::moment_start(&m.prep.blocks).unwrap();
            let fit = m.fit(&crate::FitControl::default()).unwrap();
            for (a, b) in start.iter().zip(&fit.theta) {
                assert!(
                    *a > 0.5 * b && *a < 2.0 * b,
                    "start {start:?}, fit {:?}",
                    fit.theta
                );
            }
        }
        // not for vector-valued terms
        let d = make(2, 60, 2, &[6], &[(0, 2)], false, false);
        let m = crate::Model::from_input(&d.input(), 1).unwrap();
        assert!(crate::moment_start(&m.prep.blocks).is_none());
    }

    #[test]
    fn hessian_matches_second_differences() {
        let d = make(10, 80, 2, &[8, 3], &[(0, 2), (1, 1)], true, false);
        let input = d.input();
        let theta = [1.2, 0.1, 0.5, 0.7];
        for reml in [true, false] {
            let h = evaluate_hessian(&input, &theta, reml).unwrap();
            let m = theta.len();
            let f = |t: &[f64]| evaluate_criterion(&input, t, reml).unwrap();
            let f0 = f(&theta);
            for i in 0..m {
                for j in 0..m {
                    assert!((h[i * m + j] - h[j * m + i]).abs() < 1e-12);
                    let (hi, hj) = (1e-4, 1e-4);
                    let mut t = theta.to_vec();
                    let fd = if i == j {
                        t[i] += hi;
                        let fp = f(&t);
                        t[i] -= 2.0 * hi;
                        let fm = f(&t);
                        (fp - 2.0 * f0 + fm) / (hi * hi)
                    } else {
                        let mut s = 0.0;
                        for (a, b, sg) in [
                            (1.0, 1.0, 1.0),
                            (1.0, -1.0, -1.0),
                            (-1.0, 1.0, -1.0),
                            (-1.0, -1.0, 1.0),
                        ] {
                            t[i] = theta[i] + a * hi;
                            t[j] = theta[j] + b * hj;
                            s += sg * f(&t);
                        }
                        s / (4.0 * hi * hj)
                    };
                    let got = h[j * m + i];
                    assert!(
                        (got - fd).abs() < 1e-4 * (1.0 + fd.abs()),
                        "H[{i},{j}] {got} vs {fd}"
                    );
                }
            }
        }
    }
}
