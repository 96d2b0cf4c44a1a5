//! Times one criterion evaluation and one gradient on a crossed ratings
//! design shaped like MovieLens-1M (skewed user activity, Zipf-like item
//! popularity). Run:
//! `cargo run --release -p lmmr-core --example time_crossed [n users items]`
use lmmr_core::{FitInput, ReTermInput};
use std::time::Instant;

struct Rng(u64);
impl Rng {
    fn unif(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.unif().max(1e-300);
        let u2 = self.unif();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Draws from cumulative weights by bisection.
fn draw(cum: &[f64], r: &mut Rng) -> usize {
    let u = r.unif() * cum[cum.len() - 1];
    cum.partition_point(|c| *c < u).min(cum.len() - 1)
}

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let (n, nu, ni) = if a.len() == 3 {
        (a[0], a[1], a[2])
    } else {
        (1_000_000, 6040, 3706)
    };
    let mut r = Rng(7);
    let mut cu = Vec::with_capacity(nu);
    let mut s = 0.0;
    for _ in 0..nu {
        s += r.normal().exp();
        cu.push(s);
    }
    let mut ci = Vec::with_capacity(ni);
    let mut s = 0.0;
    for i in 0..ni {
        s += 1.0 / ((i + 1) as f64).powf(0.9);
        ci.push(s);
    }
    let mut u = vec![0i32; n];
    let mut it = vec![0i32; n];
    for k in 0..n {
        u[k] = if k < nu {
            k as i32
        } else {
            draw(&cu, &mut r) as i32
        };
        it[k] = if k >= nu && k < nu + ni {
            (k - nu) as i32
        } else {
            draw(&ci, &mut r) as i32
        };
    }
    let ue: Vec<f64> = (0..nu).map(|_| 0.45 * r.normal()).collect();
    let ie: Vec<f64> = (0..ni).map(|_| 0.5 * r.normal()).collect();
    let y: Vec<f64> = (0..n)
        .map(|k| 3.5 + ue[u[k] as usize] + ie[it[k] as usize] + 0.9 * r.normal())
        .collect();
    let ones = vec![1.0; n];
    let input = FitInput {
        n,
        p: 1,
        x: &ones,
        y: &y,
        weights: &[],
        terms: vec![
            ReTermInput {
                codes: &u,
                n_levels: nu,
                z: &ones,
                k: 1,
                factor_id: 0,
            },
            ReTermInput {
                codes: &it,
                n_levels: ni,
                z: &ones,
                k: 1,
                factor_id: 1,
            },
        ],
    };
    let theta = vec![0.5, 0.55];
    let reps = 3;
    let (te, tg) = lmmr_core::time_prepared(&input, &theta, true, reps).unwrap();
    println!(
        "n = {n}, {nu} x {ni}: criterion {:.1} ms, criterion + gradient {:.1} ms",
        te * 1e3,
        tg * 1e3
    );
    if std::env::args().any(|a| a == "fit") {
        let t0 = Instant::now();
        let out = lmmr_core::fit_lmm(&input, &lmmr_core::FitControl::default()).unwrap();
        println!(
            "fit: {:.2} s, objective {:.6}, evals {}, grads {}, converged {}",
            t0.elapsed().as_secs_f64(),
            out.objective,
            out.n_eval,
            out.n_grad,
            out.converged
        );
    }
}
