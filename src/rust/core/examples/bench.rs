//! Timing of large fits: `cargo run -p lmmr-core --release --example bench`
//! (the n = 10^6 random-intercept case also split into building the kept
//! model and fitting it).

use lmmr_core::{fit_lmm, FitControl, FitInput, Model, ReTermInput};
use std::time::Instant;

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
}

fn intercept_case(n: usize, p: usize, g: usize) {
    let mut r = Rng(42);
    let mut x = vec![1.0; n * p];
    for v in x[n..].iter_mut() {
        *v = r.normal();
    }
    let codes: Vec<i32> = (0..n).map(|i| (i % g) as i32).collect();
    let re: Vec<f64> = (0..g).map(|_| r.normal()).collect();
    let y: Vec<f64> = (0..n)
        .map(|i| {
            let mut v = 1.0 + 0.5 * re[codes[i] as usize] + r.normal();
            for c in 1..p {
                v += 0.1 * c as f64 * x[c * n + i];
            }
            v
        })
        .collect();
    let ones = vec![1.0; n];
    let input = FitInput {
        n,
        p,
        x: &x,
        y: &y,
        weights: &[],
        terms: vec![ReTermInput {
            codes: &codes,
            n_levels: g,
            z: &ones,
            k: 1,
            factor_id: 0,
        }],
    };
    let t0 = Instant::now();
    let out = fit_lmm(&input, &FitControl::default());
    let el = t0.elapsed();
    match out {
        Ok(o) => println!(
            "intercept: n = {n}, p = {p}, groups = {g}: {:.3} s, {} evaluations, theta = {:?}, converged = {}",
            el.as_secs_f64(),
            o.n_eval,
            o.theta,
            o.converged
        ),
        Err(e) => println!("intercept case failed: {e}"),
    }
    // where the time goes: building the kept model against fitting it
    for rep in 0..3 {
        let t0 = Instant::now();
        let model = Model::from_input(&input, 0);
        let t1 = Instant::now();
        let fit = model.and_then(|mut m| m.fit(&FitControl::default()));
        let t2 = Instant::now();
        match fit {
            Ok(o) => println!(
                "  rep {rep}: build {:.3} s, fit {:.3} s ({} evaluations)",
                (t1 - t0).as_secs_f64(),
                (t2 - t1).as_secs_f64(),
                o.n_eval
            ),
            Err(e) => println!("  rep {rep} failed: {e}"),
        }
    }
}

fn crossed_case(n: usize, g1: usize, g2: usize, slope: bool) {
    let mut r = Rng(7);
    let p = 2;
    let mut x = vec![1.0; n * p];
    for v in x[n..].iter_mut() {
        *v = r.normal();
    }
    let c1: Vec<i32> = (0..n).map(|_| (r.next() * g1 as f64) as i32).collect();
    let c2: Vec<i32> = (0..n).map(|_| (r.next() * g2 as f64) as i32).collect();
    let e1: Vec<f64> = (0..g1).map(|_| r.normal()).collect();
    let e2: Vec<f64> = (0..g2).map(|_| r.normal()).collect();
    let y: Vec<f64> = (0..n)
        .map(|i| 1.0 + x[n + i] + e1[c1[i] as usize] + 0.7 * e2[c2[i] as usize] + r.normal())
        .collect();
    let ones = vec![1.0; n];
    let k1 = if slope { 2 } else { 1 };
    let z1 = if slope { x.clone() } else { ones.clone() };
    let input = FitInput {
        n,
        p,
        x: &x,
        y: &y,
        weights: &[],
        terms: vec![
            ReTermInput {
                codes: &c1,
                n_levels: g1,
                z: &z1,
                k: k1,
                factor_id: 0,
            },
            ReTermInput {
                codes: &c2,
                n_levels: g2,
                z: &ones,
                k: 1,
                factor_id: 1,
            },
        ],
    };
    let t0 = Instant::now();
    let out = fit_lmm(&input, &FitControl::default());
    let el = t0.elapsed();
    match out {
        Ok(o) => println!(
            "crossed: n = {n}, levels {g1} (k = {k1}) x {g2}: {:.3} s, {} evaluations, theta = {:?}, converged = {}",
            el.as_secs_f64(),
            o.n_eval,
            o.theta,
            o.converged
        ),
        Err(e) => println!("crossed case failed: {e}"),
    }
}

fn main() {
    intercept_case(1_000_000, 10, 10_000);
    crossed_case(75_000, 3000, 1000, false);
    crossed_case(75_000, 3000, 1000, true);
}
