//! A look at what landed, for a person who just ran an export: the target's row count and its
//! first rows as a small table. Read through TD's API like anything else (a `LIMIT` query on the
//! target account), so it needs a key that may read the target.

use std::fmt;

use futures::TryStreamExt;
use serde_json::Value;

use crate::connect::TableRef;
use crate::retry::PollPolicy;
use crate::source::{result_schema, wait_for_job, SourceError};
use crate::td::{TdClient, TdError};

/// Rows a preview shows.
pub(crate) const PREVIEW_ROWS: usize = 5;
/// A cell longer than this is cut (with `…`), so that a wide row stays readable.
const CELL_CHARS: usize = 40;
/// The most of the preview's result that is read.
const RESULT_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error(transparent)]
    Td(#[from] TdError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{database}.{table} is not there")]
    Missing { database: String, table: String },
    #[error("the preview's result is not JSON rows: {0}")]
    Result(String),
}

/// The target as it stands after the export.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    pub database: String,
    pub table: String,
    /// The count TD shows for the table (it lags a commit).
    pub count: i64,
    /// The count the export makes the table reach, when the export knows it.
    pub expected: Option<i64>,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Reads `table`'s row count and its first [`PREVIEW_ROWS`] rows; `expected` is the count the
/// export makes the table reach, shown beside TD's while TD's lags.
pub async fn preview(
    client: &TdClient,
    table: &TableRef,
    expected: Option<i64>,
    poll: &PollPolicy,
) -> Result<Preview, PreviewError> {
    let (database, name) = (table.database.as_str(), table.table.as_str());
    let count = client
        .table(database, name)
        .await?
        .ok_or_else(|| PreviewError::Missing {
            database: database.into(),
            table: name.into(),
        })?
        .count;
    let sql = format!("SELECT * FROM \"{name}\" LIMIT {PREVIEW_ROWS}");
    let id = client.issue_query("presto", database, &sql, None, &[]).await?;
    let job = wait_for_job(client, &id, poll).await?;
    let columns = result_schema(&job)?.into_iter().map(|c| c.name).collect();
    let mut body = Vec::new();
    let mut result = client.job_result(&id, "json").await?;
    while let Some(piece) = result
        .try_next()
        .await
        .map_err(|e| PreviewError::Result(e.to_string()))?
    {
        body.extend_from_slice(&piece);
        if body.len() > RESULT_BYTES {
            break;
        }
    }
    let rows = String::from_utf8_lossy(&body)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .take(PREVIEW_ROWS)
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Array(cells)) => Ok(cells.iter().map(cell).collect()),
            _ => Err(PreviewError::Result(format!(
                "a line is not a JSON array: {line:.80}"
            ))),
        })
        .collect::<Result<_, _>>()?;
    Ok(Preview {
        database: database.into(),
        table: name.into(),
        count,
        expected,
        columns,
        rows,
    })
}

/// A value as a person reads it: text without quotes, `NULL` for null, cut when long.
fn cell(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => "NULL".into(),
        other => other.to_string(),
    };
    let text = text.replace(['\n', '\r', '\t'], " ");
    match text.char_indices().nth(CELL_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

impl fmt::Display for Preview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = self.expected.unwrap_or(self.count);
        let shown = match self.rows.len() {
            0 => String::new(),
            n if (n as i64) < rows => format!("; the first {n}:"),
            _ => ":".into(),
        };
        let lag = if rows == self.count {
            String::new()
        } else {
            format!(" (TD's count still shows {}: it lags a commit)", self.count)
        };
        writeln!(
            f,
            "{}.{} now has {rows} rows{lag}{shown}",
            self.database, self.table
        )?;
        if self.rows.is_empty() {
            return Ok(());
        }
        let width = |i: usize| {
            let header = self.columns.get(i).map_or(0, |c| c.chars().count());
            self.rows
                .iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .fold(header, usize::max)
        };
        let widths: Vec<usize> = (0..self.columns.len()).map(width).collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, w)| format!("{:<w$}", cells.get(i).map_or("", String::as_str)))
                .collect();
            padded.join(" | ").trim_end().to_string()
        };
        writeln!(f, "  {}", line(&self.columns))?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        writeln!(f, "  {}", rule.join("-+-"))?;
        for row in &self.rows {
            writeln!(f, "  {}", line(row))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preview_is_the_count_then_a_small_aligned_table() {
        let preview = Preview {
            database: "testdb".into(),
            table: "output_table".into(),
            count: 12,
            expected: None,
            columns: vec!["code".into(), "cnt".into()],
            rows: vec![vec!["200".into(), "4981".into()], vec!["404".into(), "17".into()]],
        };
        insta::assert_snapshot!(preview.to_string(), @r"
        testdb.output_table now has 12 rows; the first 2:
          code | cnt
          -----+-----
          200  | 4981
          404  | 17
        ");
    }

    #[test]
    fn a_lagging_count_is_shown_beside_the_count_the_export_made() {
        let preview = Preview {
            database: "testdb".into(),
            table: "output_table".into(),
            count: 0,
            expected: Some(2),
            columns: vec!["code".into()],
            rows: vec![vec!["200".into()], vec!["404".into()]],
        };
        insta::assert_snapshot!(preview.to_string(), @r"
        testdb.output_table now has 2 rows (TD's count still shows 0: it lags a commit):
          code
          ----
          200
          404
        ");
    }

    #[test]
    fn long_or_multiline_values_are_cut_to_one_short_line() {
        let long = Value::String(format!("{}\nsecond line", "é".repeat(50)));
        let shown = cell(&long);
        assert_eq!(shown.chars().count(), CELL_CHARS + 1);
        assert!(shown.ends_with('…') && !shown.contains('\n'));
        assert_eq!(cell(&Value::Null), "NULL");
        assert_eq!(cell(&serde_json::json!(1.5)), "1.5");
    }
}
