//! TD's table counts are eventually consistent, and td-local plays that by default: after a
//! bulk-import commit, a rename or a swap, `table/show` and `table/list` keep answering the
//! count the table showed before, for a lag (2 s by default, drawn between 1x and 1.5x;
//! `td-local serve --count-lag SECONDS`, 0 for exact counts). Rows are visible to queries at
//! once; only the count lags.
//!
//! Source: td-client-java's integration test against the real API,
//! `TestTDClient.testBulkImport` (src/test/java/com/treasuredata/client/TestTDClient.java),
//! waits up to 5 minutes, reading `listTables` every 5 s, after the session is `committed`
//! before the table's row count is above 0: "It seems it needs some time to reflect the data in
//! TD, so we will wait for few mins before checking the data". How long TD lags is not
//! documented; 2 s keeps tests quick while making every reader of a count face the lag. Streaming
//! imports and job result outputs are not lagged here (an assumption on the kind side: the
//! operator reads no count after them).

use std::time::Duration;

use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::Result;

/// How long a table's count lags a change of its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountLag(Duration);

impl Default for CountLag {
    fn default() -> Self {
        CountLag(Duration::from_secs(2))
    }
}

impl CountLag {
    pub fn new(lag: Duration) -> CountLag {
        CountLag(lag)
    }

    /// Exact counts: no lag.
    pub fn none() -> CountLag {
        CountLag(Duration::ZERO)
    }

    pub fn duration(&self) -> Duration {
        self.0
    }

    /// This change's lag in milliseconds: between 1x and 1.5x the setting (None: no lag).
    fn draw_ms(&self) -> Option<i64> {
        let ms = self.0.as_millis() as i64;
        (ms > 0).then(|| ms + rand::rng().random_range(0..=ms / 2))
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The count a table shows: its rows, or what it showed before a change still lagging.
pub(crate) fn shown(real: i64, lag_count: Option<i64>, lag_until: Option<i64>) -> i64 {
    match (lag_count, lag_until) {
        (Some(count), Some(until)) if until > now_ms() => count,
        _ => real,
    }
}

/// The count table `id` shows now.
pub(crate) fn shown_count(conn: &Connection, id: i64) -> Result<i64> {
    let (lag_count, lag_until): (Option<i64>, Option<i64>) = conn
        .query_row(
            "SELECT lag_count, lag_until FROM tables WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((None, None));
    Ok(shown(crate::records::row_count(conn, id)?, lag_count, lag_until))
}

/// Before a change of table `id`'s rows: it keeps showing the count it shows now, for the lag.
pub(crate) fn hold(conn: &Connection, id: i64, lag: CountLag) -> Result<()> {
    if lag.draw_ms().is_none() {
        return Ok(());
    }
    let count = shown_count(conn, id)?;
    show_as(conn, id, count, lag)
}

/// Table `id` shows `count` for the lag (a renamed table shows the count its name had).
pub(crate) fn show_as(conn: &Connection, id: i64, count: i64, lag: CountLag) -> Result<()> {
    let Some(ms) = lag.draw_ms() else {
        return Ok(());
    };
    conn.execute(
        "UPDATE tables SET lag_count = ?1, lag_until = ?2 WHERE id = ?3",
        params![count, now_ms() + ms, id],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lagging_count_shows_the_old_number_until_the_lag_ends() {
        assert_eq!(shown(10, Some(3), Some(now_ms() + 60_000)), 3);
        assert_eq!(shown(10, Some(3), Some(now_ms() - 1)), 10);
        assert_eq!(shown(10, None, None), 10);
    }

    #[test]
    fn a_lag_is_drawn_between_once_and_one_and_a_half_times_the_setting() {
        let lag = CountLag::new(Duration::from_millis(1000));
        for _ in 0..100 {
            let ms = lag.draw_ms().unwrap();
            assert!((1000..=1500).contains(&ms), "{ms}");
        }
        assert_eq!(CountLag::none().draw_ms(), None);
    }
}
