//! What an earlier run (or attempt) of this export left that this one picks up, read from its
//! status document in one place: the query job to reuse, whether the session it wrote may be
//! resumed at once, and the server export it submitted or finished.

use crate::status::{ExportInfo, State, StatusDoc};
use crate::td::Job;

/// The earlier status document, as this run reads it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Resume<'a> {
    previous: Option<&'a StatusDoc>,
}

impl<'a> Resume<'a> {
    pub(super) fn new(previous: Option<&'a StatusDoc>) -> Resume<'a> {
        Resume { previous }
    }

    /// The earlier run when it did not succeed: what it left is to be picked up.
    fn unfinished(&self) -> Option<&'a StatusDoc> {
        self.previous.filter(|p| p.state != State::Success)
    }

    /// The query job an unfinished run issued, for the source stage to reuse when it is the same
    /// query and did not fail.
    pub(super) fn source_job(&self) -> Option<&'a str> {
        self.unfinished().and_then(|p| p.export.source_job_id.as_deref())
    }

    /// The run that wrote `session` has ended (its document says so, or says `running` while its
    /// process is gone from this machine): its session may be resumed at once.
    pub(super) fn session_ended(&self, session: &str) -> bool {
        self.previous.is_some_and(|p| {
            p.export.session.as_deref() == Some(session)
                && (p.state != State::Running || p.process.as_ref().is_some_and(|run| run.has_ended_here()))
        })
    }

    /// The record of this very export (same key) having succeeded: a second server export would
    /// append twice.
    pub(super) fn server_done(&self, key: &str) -> Option<&'a ExportInfo> {
        self.previous
            .filter(|p| p.state == State::Success && p.export.idempotency_key.as_deref() == Some(key))
            .map(|p| &p.export)
    }

    /// The server export an unfinished run of the same source job submitted: the one it recorded,
    /// or, if it died while submitting, the one TD has linked to the job since.
    pub(super) fn server_export(&self, job: &Job) -> Option<String> {
        self.unfinished()
            .filter(|p| p.export.source_job_id.as_deref() == Some(job.job_id.as_str()))
            .and_then(|p| {
                p.export.export_job_id.clone().or_else(|| {
                    let before = p.export.submitting.as_ref()?.linked_before.as_ref();
                    job.linked_result_export_job_id
                        .clone()
                        .filter(|now| Some(now) != before)
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(state: State, key: &str, session: &str, source_job: &str) -> StatusDoc {
        let mut d = StatusDoc::new();
        d.state = state;
        d.export.idempotency_key = Some(key.into());
        d.export.session = Some(session.into());
        d.export.source_job_id = Some(source_job.into());
        d
    }

    #[test]
    fn a_failed_runs_session_is_resumed_at_once_and_its_query_job_reused() {
        let failed = doc(State::Failed, "k", "tdre_1", "42");
        let resume = Resume::new(Some(&failed));
        assert!(resume.session_ended("tdre_1"));
        assert!(!resume.session_ended("tdre_2"), "another export's session");
        assert_eq!(resume.source_job(), Some("42"));
        assert!(resume.server_done("k").is_none(), "it did not succeed");
    }

    #[test]
    fn a_succeeded_export_is_done_for_its_key_only_and_leaves_nothing_to_reuse() {
        let done = doc(State::Success, "k", "tdre_1", "42");
        let resume = Resume::new(Some(&done));
        assert!(resume.server_done("k").is_some());
        assert!(resume.server_done("other").is_none());
        assert_eq!(resume.source_job(), None);
    }

    #[test]
    fn a_run_still_running_elsewhere_is_not_taken_over() {
        let mut running = doc(State::Running, "k", "tdre_1", "42");
        running.process = None;
        assert!(!Resume::new(Some(&running)).session_ended("tdre_1"));
        assert!(!Resume::new(None).session_ended("tdre_1"));
    }
}
