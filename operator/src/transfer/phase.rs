//! What a transfer is doing now. Once the rows are sent, TD still performs, commits and (for a
//! replace) renames — minutes at 10M rows — and a person watching should see which, not a bar
//! stuck at 100%.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::td::SessionStatus;
use td_model::states::{Reported, SessionState};

/// A step of the stream engine's write, as the status document names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Rows are being sent.
    Upload,
    /// TD's perform job turns the parts into records.
    Perform,
    /// TD makes the records visible.
    Commit,
    /// A replace's loaded temp table is renamed over the target.
    Rename,
    /// Another run owns this export; this one waits for its outcome.
    WaitForOtherRun,
}

impl Step {
    /// The step a session in `status` is at, from this run's side.
    pub fn of_session(status: &SessionStatus) -> Option<Step> {
        match status {
            Reported::Known(SessionState::Uploading) => Some(Step::Upload),
            Reported::Known(SessionState::Performing) => Some(Step::Perform),
            Reported::Known(SessionState::Ready) | Reported::Known(SessionState::Committing) => {
                Some(Step::Commit)
            }
            Reported::Known(SessionState::Committed) | Reported::Other(_) => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Step::Upload => "upload",
            Step::Perform => "perform",
            Step::Commit => "commit",
            Step::Rename => "rename",
            Step::WaitForOtherRun => "waiting for the other run",
        }
    }
}

/// The current step, the TD job doing it, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub step: Step,
    pub job_id: Option<String>,
    /// For how long it has run (a monotonic clock).
    pub since: Instant,
    /// When it began, for the status document: fixed once, so every write shows the same time.
    pub started_at: chrono::DateTime<chrono::Utc>,
}

impl Phase {
    /// For a person: `perform (job 123) 12 s`.
    pub fn describe(&self, elapsed: Duration) -> String {
        let job = self
            .job_id
            .as_ref()
            .map(|j| format!(" (job {j})"))
            .unwrap_or_default();
        format!("{}{job} {} s", self.step.name(), elapsed.as_secs())
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(self.since.elapsed()))
    }
}

/// The phase, set by the stage doing the work and read by whoever shows it.
#[derive(Debug, Default)]
pub struct PhaseCell(Mutex<Option<Phase>>);

impl PhaseCell {
    /// Enters `step` (keeping its start when it is the step already under way).
    pub fn set(&self, step: Step, job_id: Option<&str>) {
        let mut phase = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let job_id = job_id.map(str::to_string);
        if phase
            .as_ref()
            .is_some_and(|p| p.step == step && p.job_id == job_id)
        {
            return;
        }
        *phase = Some(Phase {
            step,
            job_id,
            since: Instant::now(),
            started_at: chrono::Utc::now(),
        });
    }

    pub fn get(&self) -> Option<Phase> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_reads_as_its_step_its_job_and_its_time() {
        let phase = Phase {
            step: Step::Perform,
            job_id: Some("123".into()),
            since: Instant::now(),
            started_at: chrono::Utc::now(),
        };
        assert_eq!(
            phase.describe(Duration::from_millis(12_400)),
            "perform (job 123) 12 s"
        );
        let rename = Phase {
            step: Step::Rename,
            job_id: None,
            ..phase
        };
        assert_eq!(rename.describe(Duration::ZERO), "rename 0 s");
    }

    #[test]
    fn the_same_step_keeps_its_start_and_a_new_one_starts_afresh() {
        let cell = PhaseCell::default();
        cell.set(Step::Perform, Some("7"));
        let first = cell.get().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        cell.set(Step::Perform, Some("7"));
        assert_eq!(cell.get().unwrap(), first);
        let first = first.since;
        cell.set(Step::Commit, None);
        let commit = cell.get().unwrap();
        assert_eq!(commit.step, Step::Commit);
        assert!(commit.since > first);
    }
}
