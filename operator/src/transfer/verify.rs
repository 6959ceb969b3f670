//! What an export can say it verified, from TD's own numbers first. A commit is decided on the
//! session's counts (docs/architecture.md §8); the table's row count is eventually consistent on TD
//! (td-client-java's test against the real API, `TestTDClient.testBulkImport`, waits up to five
//! minutes after `committed` for `table.count` to move), so it is read afterwards, for a bounded
//! time, as a confirmation that never fails an export whose rows were committed.

use serde::{Deserialize, Serialize};

use super::session::Committed;
use crate::retry::PollPolicy;
use crate::td::TdClient;

/// How far the export's rows were verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verified {
    /// TD's numbers for the session (and the jobs) agree with the rows read; the table's count
    /// was not read (this key may not, or an earlier run did the write).
    RowsCommitted,
    /// As `rows_committed`, and the table's count then agreed too.
    CountMatched,
    /// As `rows_committed`, but the table's count had not caught up when the wait ended: TD's
    /// counts lag commits. Not a failure.
    CountPending,
}

/// What was verified, with the numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub verified: Verified,
    /// Rows the session committed: its perform's `valid_records`.
    pub rows_committed: u64,
    /// Rows this run read from the source's result (None: it resumed past the upload).
    pub rows_read: Option<u64>,
    /// The source job's `num_records`, when TD gave it.
    pub num_records: Option<u64>,
    /// The table's count before the commit, what it should reach, and what it was last read as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<CountCheck>,
}

/// The table's count, read after the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountCheck {
    pub before: Option<i64>,
    pub expected: i64,
    pub found: Option<i64>,
    pub matched: bool,
}

impl Verification {
    /// An earlier run's commit: TD's number for the session, and nothing read of the table.
    pub fn committed(valid_records: Option<i64>) -> Verification {
        Verification {
            verified: Verified::RowsCommitted,
            rows_committed: valid_records.unwrap_or(0).max(0) as u64,
            rows_read: None,
            num_records: None,
            count: None,
        }
    }

    /// What this run's commit verified, with the table's count when it was read.
    pub fn of(
        c: &Committed,
        num_records: Option<u64>,
        before: Option<i64>,
        count: Option<(i64, Option<i64>)>,
    ) -> Verification {
        let count = count.map(|(expected, found)| CountCheck {
            before,
            expected,
            found,
            matched: found == Some(expected),
        });
        Verification {
            verified: match count {
                Some(CountCheck { matched: true, .. }) => Verified::CountMatched,
                Some(_) => Verified::CountPending,
                None => Verified::RowsCommitted,
            },
            rows_committed: c.rows,
            rows_read: c.uploaded.as_ref().map(|m| m.rows),
            num_records,
            count,
        }
    }
}

/// Reads the table's count until it is `expected` or `poll.count_settle` has gone by; returns
/// `(expected, last count read)`. A count that cannot be read ends the wait: it is a
/// confirmation, never a failure.
pub(crate) async fn confirm_count(
    client: &TdClient,
    database: &str,
    table: &str,
    expected: i64,
    poll: &PollPolicy,
) -> Option<(i64, Option<i64>)> {
    let started = tokio::time::Instant::now();
    let mut found = None;
    loop {
        match client.table(database, table).await {
            Ok(t) => found = t.map(|t| t.count),
            Err(e) if e.is_forbidden() && found.is_none() => return None,
            Err(e) => {
                tracing::warn!(table = %format!("{database}.{table}"), error = %e, "could not read the table's count");
                return Some((expected, found));
            }
        }
        if found == Some(expected) {
            return Some((expected, found));
        }
        if started.elapsed() >= poll.count_settle {
            tracing::warn!(
                "TD's count of {database}.{table} shows {} rows, not yet the {expected} this export \
                 makes it: TD's table counts lag a commit (often minutes). The session's own numbers \
                 confirmed the rows (verified: count_pending).",
                found.map_or_else(|| "no".to_string(), |n| n.to_string())
            );
            return Some((expected, found));
        }
        tokio::time::sleep(poll.session.after(started.elapsed())).await;
    }
}
