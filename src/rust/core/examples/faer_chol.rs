use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::{Accum, Mat, Par};
use std::time::Instant;
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3707);
    let a = Mat::<f64>::from_fn(n, n, |i, j| {
        if i == j {
            n as f64
        } else {
            1.0 / (1.0 + (i as f64 - j as f64).abs())
        }
    });
    for par in [Par::Seq, Par::rayon(0)] {
        let mut l = a.clone();
        let mut st = MemBuffer::new(cholesky_in_place_scratch::<f64>(n, par, Default::default()));
        let t = Instant::now();
        cholesky_in_place(
            l.as_mut(),
            Default::default(),
            par,
            MemStack::new(&mut st),
            Default::default(),
        )
        .unwrap();
        let tc = t.elapsed().as_secs_f64();
        let mut li = Mat::<f64>::zeros(n, n);
        let t = Instant::now();
        invert_lower_triangular(li.as_mut(), l.as_ref(), par);
        let ti = t.elapsed().as_secs_f64();
        let mut k = Mat::<f64>::zeros(n, n);
        let t = Instant::now();
        tri_matmul(
            k.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Replace,
            li.transpose(),
            BlockStructure::TriangularUpper,
            li.as_ref(),
            BlockStructure::TriangularLower,
            1.0,
            par,
        );
        let tp = t.elapsed().as_secs_f64();
        println!("n = {n} {par:?}: chol {tc:.3} s, inverse {ti:.3} s, product {tp:.3} s ({:.1} GFlop/s chol)", (n as f64).powi(3) / 3.0 / tc / 1e9);
    }
}
