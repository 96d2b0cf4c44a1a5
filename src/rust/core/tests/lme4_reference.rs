#![allow(clippy::excessive_precision)] // reference values pasted verbatim from R

//! End-to-end fits compared with lme4 1.1-31 (numbers produced in R with the
//! calls quoted next to each test; data sets dumped with write.csv).

use lmmr_core::{evaluate_criterion, fit_lmm, FitControl, FitInput, FitOutput, ReTermInput};

struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn read_csv(name: &str) -> Table {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let split = |l: &str| -> Vec<String> {
        l.split(',')
            .map(|s| s.trim_matches('"').to_string())
            .collect()
    };
    let header = split(lines.next().unwrap());
    let rows = lines.filter(|l| !l.is_empty()).map(split).collect();
    Table { header, rows }
}

impl Table {
    fn col(&self, name: &str) -> Vec<String> {
        let j = self.header.iter().position(|h| h == name).unwrap();
        self.rows.iter().map(|r| r[j].clone()).collect()
    }
    fn num(&self, name: &str) -> Vec<f64> {
        self.col(name).iter().map(|s| s.parse().unwrap()).collect()
    }
    /// Factor codes with levels in sorted order (R's default for these data).
    fn factor(&self, name: &str) -> (Vec<i32>, usize) {
        codes(&self.col(name))
    }
}

fn codes(v: &[String]) -> (Vec<i32>, usize) {
    let mut lev: Vec<String> = v.to_vec();
    lev.sort();
    lev.dedup();
    let c = v
        .iter()
        .map(|s| lev.binary_search(s).unwrap() as i32)
        .collect();
    (c, lev.len())
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

/// Our optimum must be as good as lme4's (at most 1e-7 relative worse) and
/// not implausibly better.
fn check_objective(out: &FitOutput, lme4: f64) {
    assert!(out.converged, "{}", out.message);
    assert!(
        out.objective <= lme4 + 1e-7 * lme4.abs(),
        "objective {} vs lme4 {lme4}",
        out.objective
    );
    assert!(
        out.objective >= lme4 - 1e-6 * lme4.abs(),
        "objective {} vs lme4 {lme4}",
        out.objective
    );
}

fn ctl(reml: bool) -> FitControl {
    FitControl {
        reml,
        ..Default::default()
    }
}

struct Dye {
    y: Vec<f64>,
    codes: Vec<i32>,
    g: usize,
    ones: Vec<f64>,
}

fn dye(name: &str) -> Dye {
    let t = read_csv(name);
    let y = t.num("Yield");
    let (codes, g) = t.factor("Batch");
    let ones = vec![1.0; y.len()];
    Dye { y, codes, g, ones }
}

fn dye_input(d: &Dye) -> FitInput<'_> {
    FitInput {
        n: d.y.len(),
        p: 1,
        x: &d.ones,
        y: &d.y,
        weights: &[],
        terms: vec![ReTermInput {
            codes: &d.codes,
            n_levels: d.g,
            z: &d.ones,
            k: 1,
            factor_id: 0,
        }],
    }
}

#[test]
fn dyestuff_reml() {
    // lme4 1.1-31, lmer(Yield ~ 1 + (1|Batch), Dyestuff)
    let d = dye("dyestuff.csv");
    let input = dye_input(&d);
    let out = fit_lmm(&input, &ctl(true)).unwrap();
    check_objective(&out, 319.65427684225739);
    assert!(
        (out.theta[0] - 0.84832378321882296).abs() < 1e-5,
        "{:?}",
        out.theta
    );
    assert!(rel(out.sigma, 49.510099965634744) < 1e-6);
    assert!(rel(out.beta[0], 1527.5) < 1e-10);
    assert!(rel(out.vcov_beta[0], 375.71666769142223) < 1e-5);
    let b_lme4 = [
        -17.6068513668790452,
        0.3912633637076357,
        28.5622255507124514,
        -23.0845384587967395,
        56.7331877377178202,
        -44.9952868264671508,
    ];
    for (a, b) in out.b.iter().zip(b_lme4) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    for v in &out.cond_var[0] {
        assert!(rel(*v, 383.63372789810137) < 1e-5, "{v}");
    }
    assert!(!out.at_bound[0]);
    assert!(out.gradient[0].abs() < 1e-4);
    // fitted values: mean + b
    for i in 0..d.y.len() {
        assert!((out.fitted[i] - out.beta[0] - out.b[d.codes[i] as usize]).abs() < 1e-9);
    }
}

#[test]
fn dyestuff_devfun_values() {
    // lme4 1.1-31: f <- lmer(Yield ~ 1 + (1|Batch), Dyestuff, devFunOnly = TRUE); f(1); f(0)
    let d = dye("dyestuff.csv");
    let input = dye_input(&d);
    let v1 = evaluate_criterion(&input, &[1.0], true).unwrap();
    assert!(rel(v1, 319.792389042002) < 1e-12, "{v1}");
    let v0 = evaluate_criterion(&input, &[0.0], true).unwrap();
    assert!(rel(v0, 326.023232155879) < 1e-12, "{v0}");
}

#[test]
fn dyestuff_ml() {
    // lme4 1.1-31, lmer(Yield ~ 1 + (1|Batch), Dyestuff, REML = FALSE)
    let d = dye("dyestuff.csv");
    let out = fit_lmm(&dye_input(&d), &ctl(false)).unwrap();
    check_objective(&out, 327.32705988113509);
    assert!((out.theta[0] - 0.75258069525229299).abs() < 1e-5);
    assert!(rel(out.sigma, 49.510099951190284) < 1e-6);
}

#[test]
fn dyestuff2_boundary() {
    // lme4 1.1-31, lmer(Yield ~ 1 + (1|Batch), Dyestuff2): singular, theta = 0
    let d = dye("dyestuff2.csv");
    let out = fit_lmm(&dye_input(&d), &ctl(true)).unwrap();
    check_objective(&out, 161.82827781228843);
    assert!(out.theta[0].abs() <= 1e-8, "{:?}", out.theta);
    assert!(out.at_bound[0]);
    assert!(rel(out.sigma, 3.7156842744757266) < 1e-7);
    assert!(rel(out.beta[0], 5.6656000000000013) < 1e-10);
}

struct Sleep {
    y: Vec<f64>,
    x: Vec<f64>,
    z: Vec<f64>,
    ones: Vec<f64>,
    days: Vec<f64>,
    codes: Vec<i32>,
    g: usize,
}

fn sleep() -> Sleep {
    let t = read_csv("sleepstudy.csv");
    let y = t.num("Reaction");
    let days = t.num("Days");
    let (codes, g) = t.factor("Subject");
    let n = y.len();
    let ones = vec![1.0; n];
    let mut x = ones.clone();
    x.extend_from_slice(&days);
    let z = x.clone();
    Sleep {
        y,
        x,
        z,
        ones,
        days,
        codes,
        g,
    }
}

#[test]
fn sleepstudy_reml_and_ml() {
    // lme4 1.1-31, lmer(Reaction ~ Days + (Days|Subject), sleepstudy)
    let s = sleep();
    let input = FitInput {
        n: s.y.len(),
        p: 2,
        x: &s.x,
        y: &s.y,
        weights: &[],
        terms: vec![ReTermInput {
            codes: &s.codes,
            n_levels: s.g,
            z: &s.z,
            k: 2,
            factor_id: 0,
        }],
    };
    let out = fit_lmm(&input, &ctl(true)).unwrap();
    check_objective(&out, 1743.6282719599519);
    let th = [
        0.96674177396741234,
        0.015169058896036137,
        0.23090995320779453,
    ];
    for (a, b) in out.theta.iter().zip(th) {
        assert!((a - b).abs() < 1e-4, "{:?}", out.theta);
    }
    assert!(rel(out.sigma, 25.59179572167535) < 1e-5);
    assert!(rel(out.beta[0], 251.40510484848497) < 1e-9);
    assert!(rel(out.beta[1], 10.467285959595987) < 1e-9);
    let vc = [
        46.5751200487894224,
        -1.4510884166325206,
        -1.4510884166325206,
        2.3894656232069797,
    ];
    for (a, b) in out.vcov_beta.iter().zip(vc) {
        assert!(rel(*a, b) < 1e-4, "{a} vs {b}");
    }
    // ranef of subjects 308 and 309 and postVar of 308
    let b = [
        2.2585509499011551,
        9.1989757655658995,
        -40.3987380788050885,
        -8.6196806152432064,
    ];
    for (a, e) in out.b.iter().zip(b) {
        assert!((a - e).abs() < 1e-3, "{a} vs {e}");
    }
    let pv = [
        145.705587519780039,
        -21.4445035979414378,
        -21.444503597941445,
        5.3122829122645845,
    ];
    for (a, e) in out.cond_var[0].iter().zip(pv) {
        assert!(rel(*a, e) < 1e-4, "{a} vs {e}");
    }
    // lme4 1.1-31, lmer(Reaction ~ Days + (Days|Subject), sleepstudy, REML = FALSE)
    let out = fit_lmm(&input, &ctl(false)).unwrap();
    check_objective(&out, 1751.9393444889909);
    assert!(rel(out.sigma, 25.591907036486965) < 1e-5);
}

#[test]
fn sleepstudy_uncorrelated_two_terms() {
    // lme4 1.1-31, lmer(Reaction ~ Days + (1|Subject) + (0+Days|Subject), sleepstudy)
    let s = sleep();
    let input = FitInput {
        n: s.y.len(),
        p: 2,
        x: &s.x,
        y: &s.y,
        weights: &[],
        terms: vec![
            ReTermInput {
                codes: &s.codes,
                n_levels: s.g,
                z: &s.ones,
                k: 1,
                factor_id: 0,
            },
            ReTermInput {
                codes: &s.codes,
                n_levels: s.g,
                z: &s.days,
                k: 1,
                factor_id: 0,
            },
        ],
    };
    let out = fit_lmm(&input, &ctl(true)).unwrap();
    check_objective(&out, 1743.669293581481);
    assert!((out.theta[0] - 0.97989652791423731).abs() < 1e-4);
    assert!((out.theta[1] - 0.23423122534704488).abs() < 1e-4);
}

#[test]
fn weighted_reml_ml_and_devfun() {
    // lme4 1.1-31: set.seed(1); d<-data.frame(g=gl(10,5),x=rnorm(50));
    // d$y<-d$x+rnorm(10)[d$g]+rnorm(50); d$w<-runif(50,.5,2);
    // m<-lmer(y~x+(1|g),d,weights=w); REMLcrit(m); deviance(refitML(m))
    let t = read_csv("weighted.csv");
    let y = t.num("y");
    let n = y.len();
    let mut x = vec![1.0; n];
    x.extend(t.num("x"));
    let w = t.num("w");
    let (codes, g) = t.factor("g");
    let ones = vec![1.0; n];
    let input = FitInput {
        n,
        p: 2,
        x: &x,
        y: &y,
        weights: &w,
        terms: vec![ReTermInput {
            codes: &codes,
            n_levels: g,
            z: &ones,
            k: 1,
            factor_id: 0,
        }],
    };
    let out = fit_lmm(&input, &ctl(true)).unwrap();
    check_objective(&out, 151.26302941674709);
    assert!((out.theta[0] - 1.1997713977812485).abs() < 1e-5);
    assert!(rel(out.sigma, 0.9346698610420866) < 1e-6);
    assert!(rel(out.beta[1], 0.84889954294299586) < 1e-6);
    let out = fit_lmm(&input, &ctl(false)).unwrap();
    check_objective(&out, 149.18542124813573);
    assert!((out.theta[0] - 1.1462619009862414).abs() < 1e-5);
    // devFunOnly = TRUE at theta = 1
    let v = evaluate_criterion(&input, &[1.0], true).unwrap();
    assert!(rel(v, 151.65889003095333) < 1e-11, "{v}");
    let v = evaluate_criterion(&input, &[1.0], false).unwrap();
    assert!(rel(v, 149.42152753494608) < 1e-11, "{v}");
}

#[test]
fn penicillin_crossed() {
    // lme4 1.1-31, lmer(diameter ~ 1 + (1|plate) + (1|sample), Penicillin)
    let t = read_csv("penicillin.csv");
    let y = t.num("diameter");
    let n = y.len();
    let ones = vec![1.0; n];
    let (cp, gp) = t.factor("plate");
    let (cs, gs) = t.factor("sample");
    let input = FitInput {
        n,
        p: 1,
        x: &ones,
        y: &y,
        weights: &[],
        terms: vec![
            ReTermInput {
                codes: &cp,
                n_levels: gp,
                z: &ones,
                k: 1,
                factor_id: 0,
            },
            ReTermInput {
                codes: &cs,
                n_levels: gs,
                z: &ones,
                k: 1,
                factor_id: 1,
            },
        ],
    };
    let out = fit_lmm(&input, &ctl(true)).unwrap();
    check_objective(&out, 330.8605889996058);
    // The criterion is flat in theta[1] (6 samples); our optimum is lower
    // than lme4's by ~1e-8, with theta[1] differing by ~1e-4.
    assert!((out.theta[0] - 1.5396755541521649).abs() < 1e-4);
    assert!((out.theta[1] - 3.5125188600064563).abs() < 5e-4, "{out:?}");
    assert!(rel(out.sigma, 0.54992268207048345) < 1e-5);
    assert!(rel(out.beta[0], 22.972222222213748) < 1e-8);
}

#[test]
fn pastes_nested() {
    // lme4 1.1-31, lmer(strength ~ 1 + (1|batch/cask), Pastes); theta order (cask:batch, batch)
    let t = read_csv("pastes.csv");
    let y = t.num("strength");
    let n = y.len();
    let ones = vec![1.0; n];
    let (cb, gb) = t.factor("batch");
    let (cs, gs) = t.factor("sample"); // sample = batch:cask
    let input = FitInput {
        n,
        p: 1,
        x: &ones,
        y: &y,
        weights: &[],
        terms: vec![
            ReTermInput {
                codes: &cs,
                n_levels: gs,
                z: &ones,
                k: 1,
                factor_id: 0,
            },
            ReTermInput {
                codes: &cb,
                n_levels: gb,
                z: &ones,
                k: 1,
                factor_id: 1,
            },
        ],
    };
    let out = fit_lmm(&input, &ctl(true)).unwrap();
    check_objective(&out, 246.99074585348703);
    assert!((out.theta[0] - 3.5269017877317386).abs() < 1e-4);
    assert!((out.theta[1] - 1.5634614020968556).abs() < 1e-4);
    assert!(rel(out.sigma, 0.82340752344677781) < 1e-5);
}

#[test]
fn errors_are_typed() {
    let d = dye("dyestuff.csv");
    let mut input = dye_input(&d);
    // theta of the wrong length
    let e = evaluate_criterion(&input, &[1.0, 2.0], true).unwrap_err();
    assert_eq!(e.kind(), "invalid_input");
    // rank-deficient X (two identical columns)
    let x2: Vec<f64> = d.ones.iter().chain(d.ones.iter()).copied().collect();
    input.x = &x2;
    input.p = 2;
    let e = fit_lmm(&input, &ctl(true)).unwrap_err();
    assert_eq!(e.kind(), "not_positive_definite", "{e}");
}

#[test]
fn optimize_false_evaluates_at_start() {
    let d = dye("dyestuff.csv");
    let input = dye_input(&d);
    let c = FitControl {
        optimize: false,
        theta_start: Some(vec![1.0]),
        ..Default::default()
    };
    let out = fit_lmm(&input, &c).unwrap();
    assert_eq!(out.theta, vec![1.0]);
    assert!(rel(out.objective, 319.792389042002) < 1e-12);
    assert_eq!(out.gradient.len(), 1);
}

#[test]
fn iteration_cap_reports_not_converged() {
    let s = sleep();
    let input = FitInput {
        n: s.y.len(),
        p: 2,
        x: &s.x,
        y: &s.y,
        weights: &[],
        terms: vec![ReTermInput {
            codes: &s.codes,
            n_levels: s.g,
            z: &s.z,
            k: 2,
            factor_id: 0,
        }],
    };
    let c = FitControl {
        max_iter: 1,
        ..Default::default()
    };
    let out = fit_lmm(&input, &c).unwrap();
    assert!(!out.converged);
    assert!(out.message.contains("maximum number of iterations"));
}

/// Simulated data (tests/data/sim.csv, made with set.seed(11) in R; see the
/// calls below) for harder models: singular slope, k = 3, crossed with slopes,
/// weights, several terms on one factor.
struct Sim {
    n: usize,
    g: (Vec<i32>, usize),
    a: (Vec<i32>, usize),
    t: Vec<f64>,
    x1: Vec<f64>,
    x2: Vec<f64>,
    y1: Vec<f64>,
    y2: Vec<f64>,
    w: Vec<f64>,
    ones: Vec<f64>,
}

fn sim() -> Sim {
    let tb = read_csv("sim.csv");
    let y1 = tb.num("y1");
    let n = y1.len();
    Sim {
        n,
        g: tb.factor("g"),
        a: tb.factor("a"),
        t: tb.num("t"),
        x1: tb.num("x1"),
        x2: tb.num("x2"),
        y1,
        y2: tb.num("y2"),
        w: tb.num("w"),
        ones: vec![1.0; n],
    }
}

fn cat(cols: &[&[f64]]) -> Vec<f64> {
    cols.iter().flat_map(|c| c.iter().copied()).collect()
}

#[test]
fn sim_singular_slope() {
    // lme4 1.1-31, lmer(y1 ~ t + (t|g), d): singular, theta[3] = 0
    let s = sim();
    let x = cat(&[&s.ones, &s.t]);
    let input = FitInput {
        n: s.n,
        p: 2,
        x: &x,
        y: &s.y1,
        weights: &[],
        terms: vec![ReTermInput {
            codes: &s.g.0,
            n_levels: s.g.1,
            z: &x,
            k: 2,
            factor_id: 0,
        }],
    };
    let out = fit_lmm(&input, &ctl(true)).unwrap();
    check_objective(&out, 743.23268472584948);
    assert!(out.theta[2].abs() <= 1e-8, "{:?}", out.theta);
    assert!(out.at_bound[2], "{:?} {:?}", out.theta, out.at_bound);
    assert!((out.theta[0] - 1.0470041501729221).abs() < 1e-4);
    assert!((out.theta[1] - 0.034977451923891352).abs() < 1e-4);
}

#[test]
fn sim_three_covariates() {
    // lme4 1.1-31, lmer(y2 ~ x1 + x2 + (x1 + x2|g), d)
    let s = sim();
    let x = cat(&[&s.ones, &s.x1, &s.x2]);
    let input = FitInput {
        n: s.n,
        p: 3,
        x: &x,
        y: &s.y2,
        weights: &[],
        terms: vec![ReTermInput {
            codes: &s.g.0,
            n_levels: s.g.1,
            z: &x,
            k: 3,
            factor_id: 0,
        }],
    };
    let out = fit_lmm(&input, &ctl(true)).unwrap();
    check_objective(&out, 941.556730784926);
}

#[test]
fn sim_crossed_with_slope_ml_and_weighted_reml() {
    let s = sim();
    let x = cat(&[&s.ones, &s.x1, &s.x2]);
    let z = cat(&[&s.ones, &s.x1]);
    let terms = vec![
        ReTermInput {
            codes: &s.g.0,
            n_levels: s.g.1,
            z: &z,
            k: 2,
            factor_id: 0,
        },
        ReTermInput {
            codes: &s.a.0,
            n_levels: s.a.1,
            z: &s.ones,
            k: 1,
            factor_id: 1,
        },
    ];
    // lme4 1.1-31, lmer(y2 ~ x1 + x2 + (1|a) + (x1|g), d, REML = FALSE)
    // (lme4 orders the terms (x1|g), (1|a))
    let input = FitInput {
        n: s.n,
        p: 3,
        x: &x,
        y: &s.y2,
        weights: &[],
        terms: terms.clone(),
    };
    let out = fit_lmm(&input, &ctl(false)).unwrap();
    check_objective(&out, 880.54796482206882);
    // lme4 1.1-31, lmer(y2 ~ x1 + x2 + (x1|g) + (1|a), d, weights = w)
    let input = FitInput {
        n: s.n,
        p: 3,
        x: &x,
        y: &s.y2,
        weights: &s.w,
        terms,
    };
    let out = fit_lmm(&input, &ctl(true)).unwrap();
    check_objective(&out, 904.93929644123841);
}

#[test]
fn sim_four_terms() {
    // lme4 1.1-31, lmer(y2 ~ x1 + x2 + (1|g) + (0+x1|g) + (0+x2|g) + (1|a), d)
    let s = sim();
    let x = cat(&[&s.ones, &s.x1, &s.x2]);
    let input = FitInput {
        n: s.n,
        p: 3,
        x: &x,
        y: &s.y2,
        weights: &[],
        terms: vec![
            ReTermInput {
                codes: &s.g.0,
                n_levels: s.g.1,
                z: &s.ones,
                k: 1,
                factor_id: 0,
            },
            ReTermInput {
                codes: &s.g.0,
                n_levels: s.g.1,
                z: &s.x1,
                k: 1,
                factor_id: 0,
            },
            ReTermInput {
                codes: &s.g.0,
                n_levels: s.g.1,
                z: &s.x2,
                k: 1,
                factor_id: 0,
            },
            ReTermInput {
                codes: &s.a.0,
                n_levels: s.a.1,
                z: &s.ones,
                k: 1,
                factor_id: 1,
            },
        ],
    };
    let out = fit_lmm(&input, &ctl(true)).unwrap();
    check_objective(&out, 872.54803341804313);
    let th = [
        0.97727219426335421,
        0.57701706082983895,
        0.47960049660265502,
        0.95290437983064935,
    ];
    for (a, b) in out.theta.iter().zip(th) {
        assert!((a - b).abs() < 1e-3, "{:?}", out.theta);
    }
}

#[test]
fn too_large_rest_block_is_refused() {
    let n = 30_001;
    let ca: Vec<i32> = (0..n).map(|i| (i % 30_000) as i32).collect();
    let cb: Vec<i32> = (0..n).map(|i| (i % 25_000) as i32).collect();
    let ones = vec![1.0; n];
    let y: Vec<f64> = (0..n).map(|i| (i as f64).sin()).collect();
    let input = FitInput {
        n,
        p: 1,
        x: &ones,
        y: &y,
        weights: &[],
        terms: vec![
            ReTermInput {
                codes: &ca,
                n_levels: 30_000,
                z: &ones,
                k: 1,
                factor_id: 0,
            },
            ReTermInput {
                codes: &cb,
                n_levels: 25_000,
                z: &ones,
                k: 1,
                factor_id: 1,
            },
        ],
    };
    let e = fit_lmm(&input, &ctl(true)).unwrap_err();
    assert_eq!(e.kind(), "too_large");
    assert!(e.to_string().contains("25000"), "{e}");
}

/// A fit from sufficient statistics: two pseudo-rows per batch that
/// reproduce the batch's cross-products of [1, y] (a Cholesky factor), with
/// the real number of observations, give the fit of the 30 rows.
#[test]
fn pseudo_rows_with_n_obs_reproduce_the_fit() {
    let d = dye("dyestuff.csv");
    let input = dye_input(&d);
    let mut n_j = vec![0.0f64; d.g];
    let mut sy = vec![0.0; d.g];
    let mut syy = vec![0.0; d.g];
    for (i, &c) in d.codes.iter().enumerate() {
        let j = c as usize;
        n_j[j] += 1.0;
        sy[j] += d.y[i];
        syy[j] += d.y[i] * d.y[i];
    }
    let (mut one, mut y, mut codes) = (Vec::new(), Vec::new(), Vec::new());
    for j in 0..d.g {
        let r11 = n_j[j].sqrt();
        let r12 = sy[j] / r11;
        let r22 = (syy[j] - r12 * r12).sqrt();
        one.extend([r11, 0.0]);
        y.extend([r12, r22]);
        codes.extend([j as i32, j as i32]);
    }
    let pseudo = FitInput {
        n: y.len(),
        p: 1,
        x: &one,
        y: &y,
        weights: &[],
        terms: vec![ReTermInput {
            codes: &codes,
            n_levels: d.g,
            z: &one,
            k: 1,
            factor_id: 0,
        }],
    };
    for reml in [true, false] {
        let full = fit_lmm(&input, &ctl(reml)).unwrap();
        let c = FitControl {
            n_obs: Some(d.y.len()),
            ..ctl(reml)
        };
        let agg = fit_lmm(&pseudo, &c).unwrap();
        assert!(rel(agg.objective, full.objective) < 1e-10);
        assert!(rel(agg.theta[0], full.theta[0]) < 1e-6);
        assert!(rel(agg.beta[0], full.beta[0]) < 1e-8);
        assert!(rel(agg.sigma, full.sigma) < 1e-6);
        assert_eq!(agg.fitted.len(), y.len());
    }
}
