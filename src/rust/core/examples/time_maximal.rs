//! Times one criterion evaluation and one gradient on a "maximal" crossed
//! design (56 subjects x 32 items, 8 random-effect columns per factor).
//! Run: cargo run --release -p lmmr-core --example time_maximal [full]
use lmmr_core::{evaluate_criterion, evaluate_gradient, FitInput, ReTermInput};
use std::time::Instant;

fn main() {
    let full = std::env::args().any(|a| a == "full");
    let (ns, ni) = (56usize, 32usize);
    let n = ns * ni;
    let mut s_codes = vec![0i32; n];
    let mut i_codes = vec![0i32; n];
    let mut z = vec![0.0; n * 8];
    let mut y = vec![0.0; n];
    let mut seed = 12345u64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    for s in 0..ns {
        for it in 0..ni {
            let i = s * ni + it;
            s_codes[i] = s as i32;
            i_codes[i] = it as i32;
            let cond = (s + it) % 8;
            let b: Vec<f64> = (0..3).map(|k| ((cond >> k) & 1) as f64 - 0.5).collect();
            let cols = [
                1.0,
                b[0],
                b[1],
                b[2],
                2.0 * b[0] * b[1],
                2.0 * b[0] * b[2],
                2.0 * b[1] * b[2],
                4.0 * b[0] * b[1] * b[2],
            ];
            for c in 0..8 {
                z[c * n + i] = cols[c];
            }
            y[i] = rnd() + 0.3 * (s as f64).sin() + 0.2 * (it as f64).cos();
        }
    }
    let x: Vec<f64> = z.clone();
    let mut terms = Vec::new();
    if full {
        terms.push(ReTermInput {
            codes: &s_codes,
            n_levels: ns,
            z: &z,
            k: 8,
            factor_id: 0,
        });
        terms.push(ReTermInput {
            codes: &i_codes,
            n_levels: ni,
            z: &z,
            k: 8,
            factor_id: 1,
        });
    } else {
        for c in 0..8 {
            terms.push(ReTermInput {
                codes: &s_codes,
                n_levels: ns,
                z: &z[c * n..(c + 1) * n],
                k: 1,
                factor_id: 0,
            });
        }
        for c in 0..8 {
            terms.push(ReTermInput {
                codes: &i_codes,
                n_levels: ni,
                z: &z[c * n..(c + 1) * n],
                k: 1,
                factor_id: 1,
            });
        }
    }
    let input = FitInput {
        n,
        p: 8,
        x: &x,
        y: &y,
        weights: &[],
        terms,
    };
    let k: usize = input.terms.iter().map(|t| t.k * (t.k + 1) / 2).sum();
    let theta: Vec<f64> = (0..k).map(|i| 0.3 + 0.01 * i as f64).collect();
    let reps = 20;
    let t0 = Instant::now();
    let (te2, tg2) = lmmr_core::time_prepared(&input, &theta, true, reps).unwrap();
    let _ = t0;
    println!(
        "prepared: criterion {:.2} ms, criterion + gradient {:.2} ms",
        te2 * 1e3,
        tg2 * 1e3
    );
    let t0 = Instant::now();
    for _ in 0..reps {
        evaluate_criterion(&input, &theta, true).unwrap();
    }
    let te = t0.elapsed().as_secs_f64() / reps as f64;
    let t0 = Instant::now();
    for _ in 0..reps {
        evaluate_gradient(&input, &theta, true).unwrap();
    }
    let tg = t0.elapsed().as_secs_f64() / reps as f64;
    println!(
        "k = {k}: criterion {:.2} ms, criterion + gradient {:.2} ms (including setup)",
        te * 1e3,
        tg * 1e3
    );
    let t0 = Instant::now();
    let out = lmmr_core::fit_lmm(&input, &lmmr_core::FitControl::default()).unwrap();
    println!(
        "fit: {:.2} s, objective {:.6}, evals {}, grads {}, converged {} ({})",
        t0.elapsed().as_secs_f64(),
        out.objective,
        out.n_eval,
        out.n_grad,
        out.converged,
        out.message
    );
}
