//! The one retry policy for every call to TD (which failures are retried, how long to wait) and the
//! one poll policy for everything the operator waits on. All the numbers live here, in the two
//! `Default`s (docs/architecture.md §2); [`crate::options`] scales them for tests.

use std::time::Duration;

use rand::Rng;

/// Whether a call may be sent again after a failure that leaves its outcome unknown
/// (a timeout or a reset after the request was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safety {
    /// A GET: repeatable, and a 409 cannot be about a state it changed. TD's front end answers
    /// 409 to some retried requests (td-client-java's `TDClient.createTableIfNotExists`:
    /// "Nginx returns conflict(409) upon request retry"), so a read's 409 is retried.
    Read,
    /// PUT of a named part or `import_with_id`, and our own creates where 409 means done.
    Repeatable,
    /// Anything else: resent only when the server surely did not act on it.
    Once,
}

impl Safety {
    fn is_repeatable(self) -> bool {
        matches!(self, Safety::Read | Safety::Repeatable)
    }
}

/// How a single attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with this status (and maybe `Retry-After`).
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No connection was made: the request never reached the server.
    Connect,
    /// Sent, but no complete answer (timeout, reset, truncated body): the outcome is unknown.
    Ambiguous,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// First backoff ceiling; doubles each retry (full jitter: a uniform wait in `[0, ceiling]`).
    pub base: Duration,
    pub max_backoff: Duration,
    pub max_retries: u32,
    /// No retry is started once this much time has gone by since the first attempt.
    pub max_elapsed: Duration,
    /// `Retry-After` is honoured up to this.
    pub retry_after_cap: Duration,
    /// Factor applied to a server's `Retry-After` (1 in production; tests shrink every wait).
    pub retry_after_scale: f64,
    /// Retries of a call whose host name does not resolve, before it is a configuration error
    /// (a resolver's passing hiccup is over by then; a typo is not).
    pub max_unresolved_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
            max_retries: 8,
            max_elapsed: Duration::from_secs(300),
            retry_after_cap: Duration::from_secs(60),
            retry_after_scale: 1.0,
            max_unresolved_retries: 2,
        }
    }
}

/// Statuses that say the request was refused before anything was done.
fn not_acted_on(code: u16) -> bool {
    matches!(code, 408 | 429 | 503)
}

impl RetryPolicy {
    /// Every wait of the policy multiplied by `factor`. The elapsed budget is not a wait and is
    /// kept: it bounds real time, and requests take as long as they take whatever the factor.
    pub fn scaled(self, factor: f64) -> RetryPolicy {
        RetryPolicy {
            base: self.base.mul_f64(factor),
            max_backoff: self.max_backoff.mul_f64(factor),
            retry_after_cap: self.retry_after_cap.mul_f64(factor),
            retry_after_scale: self.retry_after_scale * factor,
            ..self
        }
    }

    /// Whether this failure is worth another attempt at all, ignoring the budget.
    pub fn is_retryable(failure: Failure, safety: Safety) -> bool {
        match failure {
            // 408, 429 and 503 say the request was not acted on; any other 5xx may come after
            // the server acted (a gateway timing out), so it is as ambiguous as a reset.
            Failure::Status { code, .. } if not_acted_on(code) => true,
            Failure::Status { code: 409, .. } if safety == Safety::Read => true,
            Failure::Status { code, .. } => code >= 500 && code != 501 && safety.is_repeatable(),
            Failure::Connect => true,
            Failure::Ambiguous => safety.is_repeatable(),
        }
    }

    /// Whether an error status may have come after the server acted (so a call that is not
    /// safe to repeat must not be resent blindly).
    pub fn is_ambiguous_status(code: u16) -> bool {
        code >= 500 && code != 501 && !not_acted_on(code)
    }

    /// How long to wait before retry number `retry` (0-based), or `None` to give up.
    pub fn next_wait(
        &self,
        retry: u32,
        elapsed: Duration,
        failure: Failure,
        safety: Safety,
    ) -> Option<Duration> {
        if retry >= self.max_retries || !Self::is_retryable(failure, safety) {
            return None;
        }
        let wait = match failure {
            Failure::Status {
                retry_after: Some(after),
                ..
            } => after.mul_f64(self.retry_after_scale).min(self.retry_after_cap),
            _ => self.jitter(retry),
        };
        (elapsed + wait <= self.max_elapsed).then_some(wait)
    }

    fn jitter(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << retry.min(20))
            .min(self.max_backoff);
        ceiling.mul_f64(rand::rng().random_range(0.0..=1.0))
    }
}

/// The wait between two looks at something TD is working on: `first` at the start, then a
/// `share` of the time waited so far, never more than `max`. A job that ends is seen at most a
/// `share` of its run time later (and `first` after a short one), whatever its length: doubling
/// waits would overshoot by up to its whole length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub first: Duration,
    pub share: f64,
    pub max: Duration,
}

impl Backoff {
    /// The wait after `waited` so far.
    pub fn after(&self, waited: Duration) -> Duration {
        waited.mul_f64(self.share).max(self.first).min(self.max)
    }

    fn scaled(self, factor: f64) -> Backoff {
        Backoff {
            first: self.first.mul_f64(factor),
            max: self.max.mul_f64(factor),
            ..self
        }
    }
}

/// Everything the operator waits on besides retries, and how patiently.
#[derive(Debug, Clone, PartialEq)]
pub struct PollPolicy {
    /// A TD job running: the source job, an export job, a perform's job.
    pub job: Backoff,
    /// A bulk-import session performing or committing.
    pub session: Backoff,
    /// A replace starts over: it waits this long, polling at `session.first`, for a perform or
    /// commit that an earlier attempt left running before it discards that session.
    pub settle: Duration,
    /// A call that must not be resent blindly (rename, result_export) whose answer was lost: how
    /// often TD's state is read to tell whether it was done, and the call sent again if not.
    pub lost_answer_rechecks: u32,
    /// 409s in a row on a session transition after which it is taken as a real refusal (each
    /// one says the session moved on: the state is read again in between).
    pub max_conflicts: u32,
    /// A query issued with a domain key whose earlier job failed or was killed is issued again
    /// under the next key (`KEY-1`, `KEY-2`, …), at most this many times.
    pub max_reissues: u32,
    /// A run that finds the export's session made by another run takes the load over when the
    /// session has not moved for this long (its run is gone). A perform or commit in flight is
    /// TD working, and never stands still.
    pub stale_after: Duration,
    /// How long a run waits for another run's load to end before it gives up (exit 3).
    pub max_wait_for_owner: Duration,
    /// How often a run waiting for another run's load says where the wait stands.
    pub wait_report_every: Duration,
    /// Perform trials one run starts on a session (a first one, and new trials after perform
    /// jobs that failed or were killed) before it gives up with the session named.
    pub max_trials: u32,
    /// How long a run waits for one perform to end before it gives up (exit 3): with a
    /// write-only key the perform job cannot be read, so this is the only bound.
    pub max_perform: Duration,
    /// After a write, how long the table's count is read for it to catch up (TD's counts lag
    /// commits by minutes); past it the export succeeds with `count_pending`.
    pub count_settle: Duration,
    /// How long an interrupted run waits for TD to kill the query it issued before it exits.
    pub cancel_grace: Duration,
    /// How often the progress display is refreshed while rows move.
    pub progress_tick: Duration,
    /// How often the running status document is rewritten while rows move.
    pub status_every: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            // Every second for the first 8 s, then every eighth of the wait: a 10-minute job is
            // read ~70 times, and seen done at most 12.5% (or 1 s) late.
            job: Backoff {
                first: Duration::from_secs(1),
                share: 0.125,
                max: Duration::from_secs(30),
            },
            session: Backoff {
                first: Duration::from_secs(1),
                share: 0.125,
                max: Duration::from_secs(10),
            },
            settle: Duration::from_secs(600),
            lost_answer_rechecks: 3,
            max_conflicts: 5,
            max_reissues: 10,
            stale_after: Duration::from_secs(120),
            max_wait_for_owner: Duration::from_secs(3600),
            wait_report_every: Duration::from_secs(30),
            max_trials: 3,
            max_perform: Duration::from_secs(6 * 3600),
            count_settle: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(10),
            progress_tick: Duration::from_millis(250),
            status_every: Duration::from_secs(1),
        }
    }
}

impl PollPolicy {
    /// Every wait multiplied by `factor` (the display's refresh excepted: it is for people).
    pub fn scaled(self, factor: f64) -> PollPolicy {
        PollPolicy {
            job: self.job.scaled(factor),
            session: self.session.scaled(factor),
            settle: self.settle.mul_f64(factor),
            stale_after: self.stale_after.mul_f64(factor),
            max_wait_for_owner: self.max_wait_for_owner.mul_f64(factor),
            wait_report_every: self.wait_report_every.mul_f64(factor),
            max_perform: self.max_perform.mul_f64(factor),
            count_settle: self.count_settle.mul_f64(factor),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONCE: Safety = Safety::Once;
    const REPEATABLE: Safety = Safety::Repeatable;

    fn status(code: u16) -> Failure {
        Failure::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn retries_408_429_and_5xx_but_not_501_or_4xx() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(RetryPolicy::is_retryable(status(code), REPEATABLE), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422, 501] {
            assert!(!RetryPolicy::is_retryable(status(code), REPEATABLE), "{code}");
        }
    }

    #[test]
    fn a_409_to_a_read_is_the_front_ends_and_is_retried() {
        assert!(RetryPolicy::is_retryable(status(409), Safety::Read));
        assert!(!RetryPolicy::is_retryable(status(409), REPEATABLE));
        assert!(!RetryPolicy::is_retryable(status(409), ONCE));
        assert!(RetryPolicy::is_retryable(Failure::Ambiguous, Safety::Read));
    }

    #[test]
    fn a_5xx_that_may_follow_the_action_is_not_resent_for_once_calls() {
        for code in [408, 429, 503] {
            assert!(RetryPolicy::is_retryable(status(code), ONCE), "{code}");
        }
        for code in [500, 502, 504] {
            assert!(!RetryPolicy::is_retryable(status(code), ONCE), "{code}");
            assert!(RetryPolicy::is_ambiguous_status(code), "{code}");
        }
    }

    #[test]
    fn ambiguous_failures_are_retried_only_for_repeatable_calls() {
        assert!(RetryPolicy::is_retryable(Failure::Ambiguous, REPEATABLE));
        assert!(!RetryPolicy::is_retryable(Failure::Ambiguous, ONCE));
        assert!(RetryPolicy::is_retryable(Failure::Connect, ONCE));
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_ceiling() {
        let p = RetryPolicy::default();
        for retry in 0..8 {
            let ceiling = (p.base * 2u32.pow(retry)).min(p.max_backoff);
            for _ in 0..50 {
                let w = p.next_wait(retry, Duration::ZERO, status(503), ONCE).unwrap();
                assert!(w <= ceiling, "retry {retry}: {w:?} > {ceiling:?}");
            }
        }
    }

    #[test]
    fn gives_up_after_max_retries_or_max_elapsed() {
        let p = RetryPolicy::default();
        assert!(p.next_wait(8, Duration::ZERO, status(503), ONCE).is_none());
        assert!(p
            .next_wait(0, Duration::from_secs(301), status(503), ONCE)
            .is_none());
    }

    #[test]
    fn a_scaled_policy_scales_every_wait_and_retry_after() {
        let p = RetryPolicy::default().scaled(0.001);
        assert_eq!(p.base, Duration::from_micros(500));
        assert_eq!(p.max_elapsed, RetryPolicy::default().max_elapsed);
        let after = Failure::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(
            p.next_wait(0, Duration::ZERO, after, ONCE),
            Some(Duration::from_millis(7))
        );
        let poll = PollPolicy::default().scaled(0.001);
        assert_eq!(poll.job.first, Duration::from_millis(1));
        assert_eq!(poll.job.after(Duration::from_secs(1)), Duration::from_millis(30));
        assert_eq!(poll.progress_tick, Duration::from_millis(250));
    }

    #[test]
    fn a_poll_waits_a_share_of_the_time_so_far_between_first_and_max() {
        let job = PollPolicy::default().job;
        let secs = Duration::from_secs;
        assert_eq!(job.after(Duration::ZERO), secs(1));
        assert_eq!(job.after(secs(8)), secs(1));
        assert_eq!(job.after(secs(80)), secs(10));
        assert_eq!(job.after(secs(3600)), secs(30));
        // What the share buys: a job that ends at any time is seen at most 1 s or 12.5% later.
        for ends in [0.5, 2.0, 9.5, 61.0, 150.0, 1234.0] {
            let mut t = 0.0;
            while t < ends {
                t += job.after(Duration::from_secs_f64(t)).as_secs_f64();
            }
            assert!(
                t - ends <= f64::max(1.0, ends * 0.125),
                "ends {ends} s, seen at {t} s"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = RetryPolicy::default();
        let after = |s| Failure::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(
            p.next_wait(0, Duration::ZERO, after(7), ONCE),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            p.next_wait(0, Duration::ZERO, after(600), ONCE),
            Some(Duration::from_secs(60))
        );
    }
}
