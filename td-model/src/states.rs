//! TD's words for where a job and a bulk-import session are in their life, as its API reports
//! them (docs/td-api.md §5, §6): the operator reads them, td-local stores and reports them, from
//! this one list. With the `sql` feature (td-local's) they bind to and read from SQLite as the
//! words they are.

macro_rules! states {
    ($(#[$meta:meta])* $name:ident ($what:literal) { $($variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
        }

        impl $name {
            /// The word TD uses.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The state a word names; `None` for a word this list does not have.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        #[cfg(feature = "sql")]
        impl rusqlite::types::FromSql for $name {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<$name> {
                let text = value.as_str()?;
                $name::parse(text).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(format!("{} '{text}'", $what).into())
                })
            }
        }

        #[cfg(feature = "sql")]
        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
            }
        }
    };
}

states! {
    /// A job's life: `queued` → `booting` → `running` → `success` | `error` | `killed`.
    JobState ("job status") {
        Queued = "queued",
        Booting = "booting",
        Running = "running",
        Success = "success",
        Error = "error",
        Killed = "killed",
    }
}

impl JobState {
    /// The job still has work to do (and can be killed).
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Queued | JobState::Booting | JobState::Running)
    }

    pub fn is_finished(self) -> bool {
        !self.is_active()
    }

    pub fn has_failed(self) -> bool {
        matches!(self, JobState::Error | JobState::Killed)
    }
}

states! {
    /// A bulk-import session's life: `uploading` (frozen or not) → `performing` → `ready` →
    /// `committing` → `committed`.
    SessionState ("bulk import status") {
        Uploading = "uploading",
        Performing = "performing",
        Ready = "ready",
        Committing = "committing",
        Committed = "committed",
    }
}

impl SessionState {
    /// TD is working on the session (a perform or a commit in flight).
    pub fn is_busy(self) -> bool {
        matches!(self, SessionState::Performing | SessionState::Committing)
    }

    /// A commit was asked for and TD took it: the session is the record of rows that are (or
    /// are about to be) in the table, and nothing may delete it.
    pub fn has_committed(self) -> bool {
        matches!(self, SessionState::Committing | SessionState::Committed)
    }
}

/// A state as TD reports it: one of the words above, or one this list does not have (a newer
/// TD's), kept as written so that a message can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported<S> {
    Known(S),
    Other(String),
}

impl<S: Copy> Reported<S> {
    /// The known state, if it is one.
    pub fn known(&self) -> Option<S> {
        match self {
            Reported::Known(state) => Some(*state),
            Reported::Other(_) => None,
        }
    }
}

impl<S: PartialEq + Copy> Reported<S> {
    pub fn is(&self, state: S) -> bool {
        self.known() == Some(state)
    }
}

macro_rules! reported {
    ($name:ident) => {
        impl Reported<$name> {
            pub fn parse(text: &str) -> Reported<$name> {
                $name::parse(text).map_or_else(|| Reported::Other(text.to_string()), Reported::Known)
            }

            pub fn as_str(&self) -> &str {
                match self {
                    Reported::Known(state) => state.as_str(),
                    Reported::Other(text) => text,
                }
            }
        }

        impl std::fmt::Display for Reported<$name> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for Reported<$name> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Reported<$name>, D::Error> {
                Ok(Reported::<$name>::parse(
                    &<String as serde::Deserialize>::deserialize(d)?,
                ))
            }
        }
    };
}

reported!(JobState);
reported!(SessionState);

/// A state this list does not know is taken as neither finished, failed, busy nor committed: a
/// client keeps waiting, and never deletes what it cannot read.
impl Reported<JobState> {
    pub fn is_finished(&self) -> bool {
        self.known().is_some_and(JobState::is_finished)
    }

    pub fn has_failed(&self) -> bool {
        self.known().is_some_and(JobState::has_failed)
    }
}

impl Reported<SessionState> {
    pub fn is_busy(&self) -> bool {
        self.known().is_some_and(SessionState::is_busy)
    }

    pub fn has_committed(&self) -> bool {
        self.known().is_some_and(SessionState::has_committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_its_state_and_an_unknown_one_is_kept_as_written() {
        for state in [
            JobState::Queued,
            JobState::Booting,
            JobState::Running,
            JobState::Success,
            JobState::Error,
            JobState::Killed,
        ] {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
        assert_eq!(
            Reported::<SessionState>::parse("committed"),
            Reported::Known(SessionState::Committed)
        );
        let other = Reported::<JobState>::parse("paused");
        assert_eq!(other, Reported::Other("paused".into()));
        assert_eq!(other.to_string(), "paused");
        assert!(!other.is(JobState::Success));
    }
}
