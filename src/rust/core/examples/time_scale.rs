//! Where the time of building and fitting the 10^6-row one-factor model goes:
//! `cargo run --release -p lmmr-core --example time_scale [n] [threads]`.
//! (n x 10 design with an intercept, 10^4 groups, `(1 | g)`, as
//! `bench/bench-scale.R`.)

use lmmr_core::{FitControl, FitInput, Model, ReTermInput};
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(1_000_000, |v| v as usize);
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (p, g) = (10, 10_000);
    let mut r = Rng(42);
    let mut x = vec![1.0; n * p];
    for v in x[n..].iter_mut() {
        *v = r.normal();
    }
    let codes: Vec<i32> = (0..n).map(|_| (r.next() * g as f64) as i32).collect();
    let re: Vec<f64> = (0..g).map(|_| r.normal()).collect();
    let y: Vec<f64> = (0..n)
        .map(|i| {
            let mut v = re[codes[i] as usize] + r.normal();
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
    if std::env::var_os("TIME_SCALE_FITS").is_some() {
        let mut m = Model::from_input(&input, threads).expect("model");
        let t0 = Instant::now();
        for _ in 0..20 {
            m.fit(&FitControl::default()).expect("fit");
        }
        println!("20 fits: {:.3} s", t0.elapsed().as_secs_f64());
        return;
    }
    if std::env::var_os("TIME_SCALE_BUILDS").is_some() {
        let t0 = Instant::now();
        for _ in 0..10 {
            let m = Model::from_input(&input, threads).expect("model");
            drop(m);
        }
        println!("10 builds: {:.3} s", t0.elapsed().as_secs_f64());
        return;
    }
    for rep in 0..3 {
        let t0 = Instant::now();
        let mut m = Model::from_input(&input, threads).expect("model");
        let t1 = Instant::now();
        let out = m.fit(&FitControl::default()).expect("fit");
        let t2 = Instant::now();
        println!(
            "rep {rep}: build {:.3} s, fit {:.3} s ({} evaluations), theta {:?}",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            out.n_eval,
            out.theta
        );
    }
}
