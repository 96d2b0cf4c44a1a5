//! Compare the random-effects-space computations with naive dense n x n
//! formulas (and finite differences) on small seeded data.

use faer::prelude::Solve;
use faer::{Mat, Side};
use lmmr_core::{Design, LmmError, Model, ReTerm};
use lmmr_inference::{kenward_roger, satterthwaite, QSpace};

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }
    fn norm(&mut self) -> f64 {
        let u1 = self.next().max(1e-12);
        let u2 = self.next();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

struct Data {
    n: usize,
    p: usize,
    x: Vec<f64>,
    y: Vec<f64>,
    w: Vec<f64>,
    codes: Vec<Vec<i32>>,
    nl: Vec<usize>,
    z: Vec<Vec<f64>>,
    k: Vec<usize>,
    fid: Vec<usize>,
    theta: Vec<f64>,
    sigma: f64,
}

/// crossed = two grouping factors (dense path); otherwise two terms on one factor.
fn make(seed: u64, crossed: bool, weighted: bool) -> Data {
    let mut rng = Lcg(seed);
    let n = 48;
    let p = 3;
    let mut x = vec![0.0; n * p];
    let mut y = vec![0.0; n];
    let mut w = vec![1.0; n];
    let g1 = 6;
    let g2 = 4;
    let mut c1 = vec![0i32; n];
    let mut c2 = vec![0i32; n];
    let mut z1 = vec![0.0; n * 2];
    let mut z2 = vec![0.0; n];
    for i in 0..n {
        let t = rng.next() * 4.0;
        x[i] = 1.0;
        x[i + n] = t;
        x[i + 2 * n] = if rng.next() < 0.4 { 1.0 } else { 0.0 };
        c1[i] = (i % g1) as i32;
        c2[i] = ((i / 3) % g2) as i32;
        z1[i] = 1.0;
        z1[i + n] = t;
        z2[i] = if crossed { 1.0 } else { t };
        y[i] = 1.0 + 0.5 * t + rng.norm() * 0.7 + (c1[i] as f64) * 0.3 + 0.4 * rng.norm() * t;
        if weighted {
            w[i] = 0.5 + rng.next();
        }
    }
    if crossed {
        Data {
            n,
            p,
            x,
            y,
            w,
            codes: vec![c1, c2],
            nl: vec![g1, g2],
            z: vec![z1, z2],
            k: vec![2, 1],
            fid: vec![0, 1],
            theta: vec![0.8, -0.2, 0.35, 0.6],
            sigma: 0.9,
        }
    } else {
        let zi: Vec<f64> = z1[..n].to_vec();
        Data {
            n,
            p,
            x,
            y,
            w,
            codes: vec![c1.clone(), c1],
            nl: vec![g1, g1],
            z: vec![zi, z2],
            k: vec![1, 1],
            fid: vec![0, 0],
            theta: vec![0.8, 0.4],
            sigma: 0.9,
        }
    }
}

/// The kept model of the data and its inference summary at (theta, sigma).
fn input(d: &Data, theta: &[f64], sigma: f64) -> Result<QSpace, LmmError> {
    let mut model = Model::new(Design {
        n: d.n,
        p: d.p,
        x: d.x.clone(),
        y: d.y.clone(),
        weights: d.w.clone(),
        terms: (0..d.codes.len())
            .map(|t| ReTerm {
                codes: d.codes[t].clone().into(),
                n_levels: d.nl[t],
                z: d.z[t].clone().into(),
                k: d.k[t],
                factor_id: d.fid[t],
            })
            .collect(),
    })?;
    QSpace::new(&mut model, theta, sigma)
}

/// Dense Z (n x q) and the relative covariance D (q x q).
fn dense_z_d(d: &Data, theta: &[f64]) -> (Mat<f64>, Mat<f64>) {
    let n = d.n;
    let q: usize = (0..d.k.len()).map(|t| d.k[t] * d.nl[t]).sum();
    let mut z = Mat::<f64>::zeros(n, q);
    let mut dm = Mat::<f64>::zeros(q, q);
    let mut off = 0;
    let mut tp = 0;
    for t in 0..d.k.len() {
        let k = d.k[t];
        let mut lam = Mat::<f64>::zeros(k, k);
        for c in 0..k {
            for r in c..k {
                lam[(r, c)] = theta[tp];
                tp += 1;
            }
        }
        let dd = &lam * lam.transpose();
        for l in 0..d.nl[t] {
            for a in 0..k {
                for b in 0..k {
                    dm[(off + l * k + a, off + l * k + b)] = dd[(a, b)];
                }
            }
        }
        for i in 0..n {
            let l = d.codes[t][i] as usize;
            for c in 0..k {
                z[(i, off + l * k + c)] = d.z[t][i + n * c];
            }
        }
        off += k * d.nl[t];
    }
    (z, dm)
}

fn inv(a: &Mat<f64>) -> Mat<f64> {
    let n = a.nrows();
    let llt = a.llt(Side::Lower).unwrap();
    llt.solve(Mat::<f64>::identity(n, n))
}

fn logdet(a: &Mat<f64>) -> f64 {
    let llt = a.llt(Side::Lower).unwrap();
    let l = llt.L();
    (0..a.nrows()).map(|i| 2.0 * l[(i, i)].ln()).sum()
}

fn sigma_mat(d: &Data, theta: &[f64], sigma: f64) -> Mat<f64> {
    let (z, dm) = dense_z_d(d, theta);
    let mut s = &z * &dm * z.transpose();
    for i in 0..d.n {
        s[(i, i)] += 1.0 / d.w[i];
    }
    let s2 = sigma * sigma;
    Mat::from_fn(d.n, d.n, |i, j| s[(i, j)] * s2)
}

fn xmat(d: &Data) -> Mat<f64> {
    Mat::from_fn(d.n, d.p, |i, j| d.x[i + d.n * j])
}

fn deviance(d: &Data, vp: &[f64], reml: bool) -> f64 {
    let nt = vp.len() - 1;
    let sig = sigma_mat(d, &vp[..nt], vp[nt]);
    let s = inv(&sig);
    let x = xmat(d);
    let xsx = x.transpose() * &s * &x;
    let y = Mat::from_fn(d.n, 1, |i, _| d.y[i]);
    let beta = inv(&xsx) * (x.transpose() * &s * &y);
    let r = &y - &x * &beta;
    let q = (r.transpose() * &s * &r)[(0, 0)];
    logdet(&sig) + if reml { logdet(&xsx) } else { 0.0 } + q
}

fn vcov(d: &Data, vp: &[f64]) -> Mat<f64> {
    let nt = vp.len() - 1;
    let s = inv(&sigma_mat(d, &vp[..nt], vp[nt]));
    let x = xmat(d);
    inv(&(x.transpose() * &s * &x))
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / (1.0 + b.abs())
}

fn check_satterthwaite(d: &Data, reml: bool) {
    let inp = input(d, &d.theta, d.sigma).unwrap();
    let s = satterthwaite(&inp, reml).unwrap();
    let mut vp = d.theta.clone();
    vp.push(d.sigma);
    let m = vp.len();
    let h = 1e-4;
    // gradient and Hessian by central differences
    for i in 0..m {
        let mut a = vp.clone();
        a[i] += h;
        let mut b = vp.clone();
        b[i] -= h;
        let g = (deviance(d, &a, reml) - deviance(d, &b, reml)) / (2.0 * h);
        assert!(
            rel(s.gradient[i], g) < 1e-6,
            "gradient {i}: {} vs {g}",
            s.gradient[i]
        );
        for j in 0..m {
            let f = |di: f64, dj: f64| {
                let mut v = vp.clone();
                v[i] += di;
                v[j] += dj;
                deviance(d, &v, reml)
            };
            let hh = (f(h, h) - f(h, -h) - f(-h, h) + f(-h, -h)) / (4.0 * h * h);
            assert!(
                rel(s.hessian[(i, j)], hh) < 1e-4,
                "hessian {i},{j}: {} vs {hh}",
                s.hessian[(i, j)]
            );
        }
        // Jacobian of vcov
        let va = vcov(d, &a);
        let vb = vcov(d, &b);
        for r in 0..d.p {
            for c in 0..d.p {
                let jn = (va[(r, c)] - vb[(r, c)]) / (2.0 * h);
                assert!(rel(s.jacobian[i][(r, c)], jn) < 1e-6, "jac {i}");
            }
        }
    }
    let v = vcov(d, &vp);
    for r in 0..d.p {
        for c in 0..d.p {
            assert!(rel(s.vcov_beta[(r, c)], v[(r, c)]) < 1e-10);
        }
    }
}

#[test]
fn satterthwaite_matches_finite_differences() {
    for &(crossed, weighted) in &[(true, false), (false, false), (true, true), (false, true)] {
        let d = make(7, crossed, weighted);
        check_satterthwaite(&d, true);
        check_satterthwaite(&d, false);
    }
}

/// Naive dense Kenward-Roger following Kenward & Roger (1997).
fn naive_kr(d: &Data) -> (Mat<f64>, Mat<f64>) {
    let n = d.n;
    let sig = sigma_mat(d, &d.theta, d.sigma);
    let s = inv(&sig);
    let x = xmat(d);
    let phi = inv(&(x.transpose() * &s * &x));
    let (z, _) = dense_z_d(d, &d.theta);
    let mut gs: Vec<Mat<f64>> = Vec::new();
    let mut off = 0;
    for t in 0..d.k.len() {
        let k = d.k[t];
        for c in 0..k {
            for r in c..k {
                let mut e = Mat::<f64>::zeros(z.ncols(), z.ncols());
                for l in 0..d.nl[t] {
                    e[(off + l * k + r, off + l * k + c)] = 1.0;
                    e[(off + l * k + c, off + l * k + r)] = 1.0;
                }
                gs.push(&z * &e * z.transpose());
            }
        }
        off += k * d.nl[t];
    }
    gs.push(Mat::from_fn(
        n,
        n,
        |i, j| if i == j { 1.0 / d.w[i] } else { 0.0 },
    ));
    let ng = gs.len();
    let p: Vec<Mat<f64>> = gs
        .iter()
        .map(|g| x.transpose() * &s * g * &s * &x)
        .collect();
    let q = |i: usize, j: usize| x.transpose() * &s * &gs[i] * &s * &gs[j] * &s * &x;
    let tr = |a: &Mat<f64>| (0..a.nrows()).map(|i| a[(i, i)]).sum::<f64>();
    let mut ie = Mat::<f64>::zeros(ng, ng);
    for i in 0..ng {
        for j in 0..ng {
            ie[(i, j)] = tr(&(&s * &gs[i] * &s * &gs[j])) - 2.0 * tr(&(&phi * q(i, j)))
                + tr(&(&phi * &p[i] * &phi * &p[j]));
        }
    }
    let w = Mat::from_fn(ng, ng, |i, j| 2.0 * inv(&ie)[(i, j)]);
    let mut uu = Mat::<f64>::zeros(d.p, d.p);
    for i in 0..ng {
        for j in 0..ng {
            uu += Mat::from_fn(d.p, d.p, |r, c| {
                w[(i, j)] * (q(i, j) - &p[i] * &phi * &p[j])[(r, c)]
            });
        }
    }
    let adj = &phi + Mat::from_fn(d.p, d.p, |r, c| 2.0 * (&phi * &uu * &phi)[(r, c)]);
    (adj, w)
}

#[test]
fn kenward_roger_matches_dense() {
    for &(crossed, weighted) in &[(true, false), (false, false), (true, true), (false, true)] {
        let d = make(11, crossed, weighted);
        let kr = kenward_roger(&input(&d, &d.theta, d.sigma).unwrap(), true).unwrap();
        let (adj, w) = naive_kr(&d);
        for r in 0..d.p {
            for c in 0..d.p {
                assert!(
                    rel(kr.phi_adj[(r, c)], adj[(r, c)]) < 1e-9,
                    "phi_adj {r},{c}: {} vs {}",
                    kr.phi_adj[(r, c)],
                    adj[(r, c)]
                );
            }
        }
        for r in 0..w.nrows() {
            for c in 0..w.ncols() {
                assert!(rel(kr.w[(r, c)], w[(r, c)]) < 1e-8, "W {r},{c}");
            }
        }
    }
}

#[test]
fn kenward_roger_needs_reml() {
    let d = make(3, false, false);
    let qs = input(&d, &d.theta, d.sigma).unwrap();
    let e = kenward_roger(&qs, false).err().unwrap();
    assert_eq!(e.kind(), "argument");
}

#[test]
fn bad_input_is_an_error() {
    let d = make(3, true, false);
    let short = [0.5];
    assert_eq!(
        input(&d, &short, d.sigma).err().unwrap().kind(),
        "invalid_input"
    );
    assert!(input(&d, &d.theta, -1.0).is_err());
    let mut bad = make(3, true, false);
    bad.codes[0][0] = 99;
    assert!(input(&bad, &bad.theta, bad.sigma).is_err());
}

#[test]
fn large_single_factor() {
    let mut rng = Lcg(5);
    let g = 1000;
    let n = 50_000;
    let p = 2;
    let mut x = vec![0.0; n * p];
    let mut y = vec![0.0; n];
    let codes: Vec<i32> = (0..n).map(|i| (i % g) as i32).collect();
    let z = vec![1.0; n];
    let w = vec![1.0; n];
    for i in 0..n {
        x[i] = 1.0;
        x[i + n] = rng.next();
        y[i] = x[i + n] + rng.norm() + (codes[i] as f64 % 7.0) * 0.1;
    }
    let theta = [0.3];
    let d = Data {
        n,
        p,
        x,
        y,
        w,
        codes: vec![codes],
        nl: vec![g],
        z: vec![z],
        k: vec![1],
        fid: vec![0],
        theta: theta.to_vec(),
        sigma: 1.0,
    };
    let t0 = std::time::Instant::now();
    let inp = input(&d, &theta, 1.0).unwrap();
    let kr = kenward_roger(&inp, true).unwrap();
    let s = satterthwaite(&inp, true).unwrap();
    let el = t0.elapsed().as_secs_f64();
    eprintln!("KR + Satterthwaite at n = 50,000, 1,000 clusters: {el:.3} s");
    assert!(kr.phi_adj[(1, 1)] > 0.0 && s.hessian[(0, 0)].is_finite());
}
