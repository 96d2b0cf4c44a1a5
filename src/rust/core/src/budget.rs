//! A time budget for the optimisation. While an optimisation runs, every
//! evaluation of the criterion (`Prepared::eval`) first asks
//! [`Budget::check`], which refuses with [`LmmError::TimeBudget`] once the
//! budget is spent, and then [`Budget::record`]s the point, so that a fit
//! that cannot make progress in time stops at the best point it reached
//! (reported as not converged) instead of running on. Living in the
//! evaluation, it does not depend on the optimiser.

use crate::error::LmmError;
use std::time::{Duration, Instant};

pub(crate) struct Budget {
    deadline: Option<Instant>,
    max_time: f64,
    /// Criterion value and theta of the best evaluation so far.
    pub best: Option<(f64, Vec<f64>)>,
    /// Evaluations recorded.
    pub n_eval: usize,
}

impl Budget {
    /// `max_time` in seconds; `None`, infinite or NaN means no budget.
    pub fn new(max_time: Option<f64>) -> Budget {
        let deadline = max_time
            .filter(|t| t.is_finite() && *t >= 0.0)
            .and_then(|t| Instant::now().checked_add(Duration::from_secs_f64(t)));
        Budget {
            deadline,
            max_time: max_time.unwrap_or(f64::INFINITY),
            best: None,
            n_eval: 0,
        }
    }

    /// `Err(TimeBudget)` once the budget is spent.
    pub fn check(&self) -> Result<(), LmmError> {
        if let Some(d) = self.deadline {
            if Instant::now() >= d {
                return Err(LmmError::TimeBudget(format!(
                    "the time budget (max_time = {} s) was spent after {} evaluations of the criterion",
                    self.max_time, self.n_eval
                )));
            }
        }
        Ok(())
    }

    /// Counts an evaluation with value `v` at `theta`, keeping the best.
    pub fn record(&mut self, v: f64, theta: &[f64]) {
        self.n_eval += 1;
        if v.is_finite() && self.best.as_ref().is_none_or(|(b, _)| v < *b) {
            self.best = Some((v, theta.to_vec()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_best_point_and_stops_when_spent() {
        let mut b = Budget::new(None);
        for x in [3.0f64, 0.5, 2.0] {
            b.check().unwrap();
            b.record((x - 1.0).powi(2), &[x]);
        }
        assert_eq!(b.n_eval, 3);
        assert_eq!(b.best.as_ref().unwrap().1, vec![0.5]);
        let spent = Budget::new(Some(0.0));
        let e = spent.check().unwrap_err();
        assert_eq!(e.kind(), "time_budget");
        assert!(spent.best.is_none());
        let inf = Budget::new(Some(f64::INFINITY));
        assert!(inf.check().is_ok());
    }
}
