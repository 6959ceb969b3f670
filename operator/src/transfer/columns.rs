//! From the result's schema to the target table's: TD types and TD column names (docs/architecture.md §4),
//! by TD's rules in td-model.

use serde::Serialize;
use td_model::name::unique_columns;
use td_model::schema::parse_table_schema;
use td_model::schema::ResultColumn;
use td_model::time::{row_time, RowTime, TimeCandidate};
use td_model::types::{is_boolean_type, reads_as_null, td_type};

use super::TransferError;
use crate::source::job_start_time;
use crate::td::Job;

/// Where every row's `time` came from, as the status document names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// The result's own integer `time` column.
    Column,
    /// The column `result_settings.time_column` names.
    TimeColumn,
    /// `result_settings.time`.
    Setting,
    /// The source job's start time (so a rerun writes identical rows).
    JobStart,
}

/// Where each row's `time` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFill {
    /// The result's own `time` column (at this index).
    Column(usize),
    /// The same value for every row (the `time` setting, or the source job's start time).
    Fixed(i64),
    /// Read from this column (`time_column`): integer seconds or a timestamp.
    Parsed(usize),
}

/// One result column and what it becomes in the target table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappedColumn {
    /// Name in the result.
    pub source: String,
    /// Normalized name in the target (`^[a-z_][a-z0-9_]*$`).
    pub target: String,
    /// TD type: long, double, string, array<…>, map<…,…>.
    #[serde(rename = "type")]
    pub td_type: String,
    #[serde(skip)]
    pub source_type: String,
}

impl MappedColumn {
    /// Whether values must be turned from booleans into 0/1 longs.
    pub fn is_boolean(&self) -> bool {
        is_boolean_type(&self.source_type)
    }
}

/// Maps every column of a result schema, making names unique with `_1`, `_2` … in order of
/// appearance.
pub fn map_columns(schema: &[ResultColumn]) -> Vec<MappedColumn> {
    let targets = unique_columns(schema.iter().map(|c| c.name.as_str()));
    schema
        .iter()
        .zip(targets)
        .map(|(c, target)| MappedColumn {
            source: c.name.clone(),
            target,
            td_type: td_type(&c.result_type),
            source_type: c.result_type.clone(),
        })
        .collect()
}

/// The TD schema (`[[name, type], …]`) for the mapped columns, without `time` (it is implicit).
pub(crate) fn td_schema(columns: &[MappedColumn]) -> serde_json::Value {
    columns
        .iter()
        .filter(|c| c.target != "time")
        .map(|c| serde_json::json!([c.target, c.td_type]))
        .collect()
}

/// A result column whose values would read as NULL under the existing table's type for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaConflict {
    pub column: String,
    /// The column's type in the table.
    pub table_type: String,
    /// What the result's values are (TD type, and the result's own type).
    pub result_type: String,
    pub source_type: String,
}

impl std::fmt::Display for SchemaConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` is {} in the table but {} ({}) in the result",
            self.column, self.table_type, self.result_type, self.source_type
        )
    }
}

/// The columns of `columns` that an existing table (its schema as TD's JSON text, tuples
/// `[key, type(, alias)]` matched by key) would read as NULL. A schema that cannot be read
/// gives none: the check only ever stops an export on certain proof.
pub(crate) fn schema_conflicts(columns: &[MappedColumn], table_schema: &str) -> Vec<SchemaConflict> {
    let Ok(existing) = parse_table_schema(table_schema) else {
        tracing::warn!("the target table's schema could not be read; its column types are not checked");
        return Vec::new();
    };
    columns
        .iter()
        .filter(|c| c.target != "time")
        .filter_map(|c| {
            let have = existing.iter().find(|e| e.name == c.target)?;
            reads_as_null(&c.td_type, &have.td_type).then(|| SchemaConflict {
                column: c.target.clone(),
                table_type: have.td_type.clone(),
                result_type: c.td_type.clone(),
                source_type: c.source_type.clone(),
            })
        })
        .collect()
}

/// How each row gets its `time`: the result's integer `time` column, else the `time` setting,
/// else the source job's start time (so a rerun writes identical rows).
pub fn time_fill(
    columns: &[MappedColumn],
    setting: Option<i64>,
    time_column: Option<&str>,
    job: &Job,
) -> Result<(TimeFill, TimeSource), TransferError> {
    let candidates: Vec<TimeCandidate<'_>> = columns
        .iter()
        .map(|c| TimeCandidate {
            name: &c.source,
            target: &c.target,
            result_type: &c.source_type,
        })
        .collect();
    let rule = row_time(&candidates, time_column).map_err(|e| TransferError::NotExportable {
        message: e.to_string(),
    })?;
    match rule {
        RowTime::Parsed(i) => return Ok((TimeFill::Parsed(i), TimeSource::TimeColumn)),
        RowTime::Column(i) => return Ok((TimeFill::Column(i), TimeSource::Column)),
        RowTime::Fallback => {}
    }
    if let Some(t) = setting {
        return Ok((TimeFill::Fixed(t), TimeSource::Setting));
    }
    match job_start_time(job) {
        Some(t) => Ok((TimeFill::Fixed(t), TimeSource::JobStart)),
        None => Err(TransferError::NotExportable {
            message: format!(
                "the result of job {} has no `time` column and the job has no start time: set result_settings.time",
                job.job_id
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(cols: &[(&str, &str)]) -> Vec<ResultColumn> {
        cols.iter()
            .map(|(n, t)| ResultColumn {
                name: n.to_string(),
                result_type: t.to_string(),
            })
            .collect()
    }

    #[test]
    fn columns_get_td_names_and_types_in_order() {
        let mapped = map_columns(&schema(&[
            ("Code", "integer"),
            ("code", "varchar"),
            ("v", "array(bigint)"),
        ]));
        let got: Vec<(&str, &str)> = mapped
            .iter()
            .map(|c| (c.target.as_str(), c.td_type.as_str()))
            .collect();
        assert_eq!(
            got,
            [("code", "long"), ("code_1", "string"), ("v_", "array<long>")]
        );
        assert_eq!(
            td_schema(&map_columns(&schema(&[("time", "bigint"), ("x", "double")]))),
            serde_json::json!([["x", "double"]])
        );
    }
}
