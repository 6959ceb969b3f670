//! A job's result in the formats `job/result` serves (docs/td-api.md §6): the stored msgpack.gz as
//! it is (whole or one byte range), msgpack arrays, or one line a row of JSON, CSV or TSV with an
//! optional header of column names.

use std::fs::File;
use std::io::{self, Write};

use flate2::read::MultiGzDecoder;
use serde_json::Value;
use td_model::schema::parse_result_schema;

use crate::error::{Error, Result};
use crate::records::{msgpack_to_display, read_msgpack_values};

/// The formats a result can be read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    MsgpackGz,
    Msgpack,
    Json,
    Csv,
    Tsv,
}

impl Format {
    pub(crate) fn parse(text: &str) -> Result<Format> {
        Ok(match text {
            "msgpack.gz" => Format::MsgpackGz,
            "msgpack" => Format::Msgpack,
            "json" => Format::Json,
            "csv" => Format::Csv,
            "tsv" => Format::Tsv,
            other => {
                return Err(Error::invalid(format!(
                    "invalid format '{other}': use json, csv, tsv, msgpack or msgpack.gz"
                )))
            }
        })
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::MsgpackGz => "application/octet-stream",
            Format::Msgpack => "application/x-msgpack",
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Tsv => "text/tab-separated-values; charset=utf-8",
        }
    }
}

/// The ETag of a stored result: a result never changes once written.
pub(crate) fn etag(job_id: i64, len: u64) -> String {
    format!("\"td-local-result-{job_id}-{len}\"")
}

/// A `Range` header against a body of known length; `end` is exclusive.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    Satisfiable(u64, u64),
    Unsatisfiable,
    /// Not a single byte range we serve (several ranges, other units): send the whole body.
    Ignored,
}

pub(crate) fn parse_range(header: &str, len: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Ignored;
    };
    if spec.contains(',') {
        return RangeRequest::Ignored;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Ignored;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (first.is_empty(), last.is_empty()) {
        (true, true) => return RangeRequest::Ignored,
        (true, false) => match parse(last) {
            Some(0) => return RangeRequest::Unsatisfiable,
            Some(n) => (len.saturating_sub(n), len),
            None => return RangeRequest::Ignored,
        },
        (false, _) => {
            let Some(start) = parse(first) else {
                return RangeRequest::Ignored;
            };
            let end = if last.is_empty() {
                len
            } else {
                match parse(last) {
                    Some(l) if l >= start => (l + 1).min(len),
                    _ => return RangeRequest::Ignored,
                }
            };
            (start, end)
        }
    };
    if start >= len {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Satisfiable(start, end)
    }
}

/// Column names from `hive_result_schema` (`[[name, type], …]`); none when it cannot be read.
pub(crate) fn column_names(schema: Option<&str>) -> Vec<String> {
    schema
        .and_then(|s| parse_result_schema(s).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.name)
        .collect()
}

/// Writes the stored result in `format` (anything but msgpack.gz).
pub(crate) fn convert(
    file: File,
    format: Format,
    header: Option<&[String]>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut rows = MultiGzDecoder::new(io::BufReader::new(file));
    if format == Format::Msgpack {
        io::copy(&mut rows, out)?;
        return Ok(());
    }
    let mut line = Vec::new();
    if let Some(names) = header {
        let names: Vec<Value> = names.iter().map(|n| Value::from(n.as_str())).collect();
        write_row(format, &names, &mut line);
        out.write_all(&line)?;
    }
    read_msgpack_values(rows, |value| {
        let cells = match msgpack_to_display(value) {
            Value::Array(cells) => cells,
            other => vec![other],
        };
        line.clear();
        write_row(format, &cells, &mut line);
        out.write_all(&line)
            .map_err(|e| Error::internal(format!("sending the result: {e}")))
    })
    .map_err(|e| io::Error::other(e.to_string()))
}

/// One row as a line of JSON, CSV (RFC 4180 quoting) or TSV (backslash escapes).
fn write_row(format: Format, cells: &[Value], line: &mut Vec<u8>) {
    match format {
        Format::Json => {
            serde_json::to_writer(&mut *line, cells).expect("JSON into memory");
        }
        Format::Csv | Format::Tsv => {
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    line.push(if format == Format::Csv { b',' } else { b'\t' });
                }
                let text = cell_text(cell);
                if format == Format::Csv {
                    csv_field(&text, line);
                } else {
                    tsv_field(&text, line);
                }
            }
        }
        Format::Msgpack | Format::MsgpackGz => unreachable!("binary formats are copied, not converted"),
    }
    line.push(b'\n');
}

fn cell_text(cell: &Value) -> String {
    match cell {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn csv_field(text: &str, line: &mut Vec<u8>) {
    if text.contains([',', '"', '\n', '\r']) {
        line.push(b'"');
        line.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        line.push(b'"');
    } else {
        line.extend_from_slice(text.as_bytes());
    }
}

fn tsv_field(text: &str, line: &mut Vec<u8>) {
    for c in text.chars() {
        match c {
            '\t' => line.extend_from_slice(b"\\t"),
            '\n' => line.extend_from_slice(b"\\n"),
            '\r' => line.extend_from_slice(b"\\r"),
            '\\' => line.extend_from_slice(b"\\\\"),
            c => {
                let mut buf = [0; 4];
                line.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-9", 100), Satisfiable(0, 10));
        assert_eq!(parse_range("bytes=90-200", 100), Satisfiable(90, 100));
        assert_eq!(parse_range("bytes=95-", 100), Satisfiable(95, 100));
        assert_eq!(parse_range("bytes=-10", 100), Satisfiable(90, 100));
        assert_eq!(parse_range("bytes=-500", 100), Satisfiable(0, 100));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 100), Ignored);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ignored);
        assert_eq!(parse_range("items=0-1", 100), Ignored);
    }

    #[test]
    fn csv_and_tsv_escape_what_would_break_a_line() {
        let cells = [
            json!("a,b"),
            json!("say \"hi\""),
            json!(null),
            json!(1.5),
            json!("x\ty\nz"),
        ];
        let mut csv = Vec::new();
        write_row(Format::Csv, &cells, &mut csv);
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "\"a,b\",\"say \"\"hi\"\"\",,1.5,\"x\ty\nz\"\n"
        );
        let mut tsv = Vec::new();
        write_row(Format::Tsv, &cells, &mut tsv);
        assert_eq!(
            String::from_utf8(tsv).unwrap(),
            "a,b\tsay \"hi\"\t\t1.5\tx\\ty\\nz\n"
        );
    }
}
