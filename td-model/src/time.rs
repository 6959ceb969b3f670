//! Time as TD reads and writes it: every row's `time` is integer Unix seconds; settings, URL
//! parameters and time columns may instead hold a timestamp, which is read here.
//!
//! Read: digits (`1700000000`), RFC 3339 / ISO-8601 (`2024-01-31T00:00:00Z`, `…+09:00`),
//! `YYYY-MM-DD HH:MM:SS[.fff]` (or with `T`) optionally followed by a zone, and `YYYY-MM-DD`. A zone
//! is `UTC`/`GMT`/`Z`, a DST-free name TD users write (`JST`, `Asia/Tokyo`, `KST`, `Asia/Seoul`), or a
//! fixed offset (`+0900`, `+09:00`, `-08`, `GMT+09:00`); time zones with DST are refused rather than
//! read wrong. A timestamp without a zone is in the caller's zone (UTC unless told).
//! Written: `YYYY-MM-DD HH:MM:SS UTC`, the format of `created_at`, `start_at` and the like.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};

/// The latest second a `time` may hold: 9999-12-31 23:59:59 UTC (what timestamps can name).
pub const MAX_SECONDS: i64 = 253_402_300_799;
/// The earliest: 0000-01-01 00:00:00 UTC.
pub const MIN_SECONDS: i64 = -62_167_219_200;

/// A fixed-offset time zone and the name Java's `z` prints for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub offset: FixedOffset,
    pub name: String,
}

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            offset: FixedOffset::east_opt(0).expect("zero offset"),
            name: "UTC".into(),
        }
    }

    /// Parses a zone name or a fixed offset.
    pub fn parse(text: &str) -> Result<Zone, TimeError> {
        let t = text.trim();
        let named = |hours: i32, name: &str| Zone {
            offset: FixedOffset::east_opt(hours * 3600).expect("offset within a day"),
            name: name.into(),
        };
        match t.to_ascii_uppercase().as_str() {
            "UTC" | "Z" | "ETC/UTC" | "UCT" => return Ok(named(0, "UTC")),
            "GMT" | "ETC/GMT" => return Ok(named(0, "GMT")),
            "JST" | "ASIA/TOKYO" | "JAPAN" => return Ok(named(9, "JST")),
            "KST" | "ASIA/SEOUL" => return Ok(named(9, "KST")),
            _ => {}
        }
        let offset_text = ["GMT", "UTC"].iter().find_map(|p| t.strip_prefix(p)).unwrap_or(t);
        let seconds = parse_offset(offset_text).ok_or_else(|| TimeError::Zone(text.to_string()))?;
        let offset = FixedOffset::east_opt(seconds).ok_or_else(|| TimeError::Zone(text.to_string()))?;
        Ok(Zone {
            offset,
            name: gmt_name(seconds),
        })
    }
}

/// `+09:00`, `+0900`, `+09`, `-8` → seconds east of UTC.
fn parse_offset(text: &str) -> Option<i32> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (hours, minutes) = if digits.len() <= 2 {
        (digits.parse::<i32>().ok()?, 0)
    } else {
        let split = digits.len() - 2;
        (
            digits[..split].parse::<i32>().ok()?,
            digits[split..].parse::<i32>().ok()?,
        )
    };
    (hours <= 18 && minutes < 60).then_some(sign * (hours * 3600 + minutes * 60))
}

/// Java's name for a custom zone: `GMT+09:00`.
pub fn gmt_name(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let abs = seconds.abs();
    format!("GMT{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60)
}

/// Why a value is not a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("is not a time (use Unix seconds, YYYY-MM-DD, YYYY-MM-DD HH:MM:SS[.fff][ ZONE] or ISO-8601)")]
    Unreadable,
    #[error("is out of range (years 0 to 9999)")]
    OutOfRange,
    #[error("has an unsupported time zone `{0}` (use UTC, JST or an offset like +09:00)")]
    Zone(String),
}

/// Reads a time in UTC (unless the text names a zone).
pub fn parse_time(text: &str) -> Result<i64, TimeError> {
    parse_time_in(text, &Zone::utc())
}

/// Reads a time; a timestamp without a zone is in `zone`.
pub fn parse_time_in(text: &str, zone: &Zone) -> Result<i64, TimeError> {
    let text = text.trim();
    if !text.is_empty()
        && text
            .trim_start_matches(['-', '+'])
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        return text
            .parse::<i64>()
            .ok()
            .and_then(checked)
            .ok_or(TimeError::OutOfRange);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return checked(t.timestamp()).ok_or(TimeError::OutOfRange);
    }
    let (local, rest) = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_and_remainder(text, f).ok())
        .or_else(|| {
            let (date, rest) = NaiveDate::parse_and_remainder(text, "%Y-%m-%d").ok()?;
            Some((date.and_hms_opt(0, 0, 0)?, rest))
        })
        .ok_or(TimeError::Unreadable)?;
    let rest = rest.trim();
    let named;
    let zone = if rest.is_empty() {
        zone
    } else {
        named = Zone::parse(rest).map_err(|_| match rest.starts_with(|c: char| c.is_ascii_digit()) {
            true => TimeError::Unreadable,
            false => TimeError::Zone(rest.to_string()),
        })?;
        &named
    };
    zone.offset
        .from_local_datetime(&local)
        .single()
        .map(|t| t.timestamp())
        .and_then(checked)
        .ok_or(TimeError::OutOfRange)
}

fn checked(seconds: i64) -> Option<i64> {
    (MIN_SECONDS..=MAX_SECONDS).contains(&seconds).then_some(seconds)
}

/// `seconds` when a timestamp can name it (years 0 to 9999).
pub fn check_seconds(seconds: i64) -> Result<i64, TimeError> {
    checked(seconds).ok_or(TimeError::OutOfRange)
}

/// TD's timestamp: `YYYY-MM-DD HH:MM:SS UTC`.
pub fn td_timestamp(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

/// Reads one of TD's own timestamps (`2024-01-02 03:04:05 UTC` or RFC 3339) — what the API
/// answers in `start_at`, `created_at` and the like.
pub fn parse_td_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S UTC") {
        return Some(t.and_utc().timestamp());
    }
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp())
}

/// A duration as TD's `TD_TIME_ADD` reads it: an optional sign, then one or more `<integer><unit>`
/// (`1d`, `-2h`, `30m`, `1d12h`), with units `s`, `m`, `h`, `d` and `w` (spelt out as `sec`,
/// `second(s)`, `min`, `minute(s)`, `hour(s)`, `day(s)`, `week(s)` too: user queries run on TD
/// write `'8week'`). Months and years have no fixed length and are refused. Returns seconds.
pub fn parse_duration(text: &str) -> Result<i64, DurationError> {
    let bad = || DurationError(text.to_string());
    let t = text.trim();
    let (sign, mut rest) = match t.as_bytes().first() {
        Some(b'-') => (-1, &t[1..]),
        Some(b'+') => (1, &t[1..]),
        _ => (1, t),
    };
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let letters = rest[digits..].bytes().take_while(u8::is_ascii_alphabetic).count();
        if digits == 0 || letters == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit = match &rest[digits..digits + letters] {
            "s" | "sec" | "second" | "seconds" => 1,
            "m" | "min" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        rest = &rest[digits + letters..];
    }
    Ok(sign * total)
}

/// A text that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a duration (use e.g. 1d, -2h, 30m, 10s, 1w or 1d12h)")]
pub struct DurationError(pub String);

/// The units `TD_DATE_TRUNC` truncates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncUnit {
    Minute,
    Hour,
    Day,
    /// Weeks start on Monday (ISO 8601, as Presto's `date_trunc`).
    Week,
    Month,
    Quarter,
    Year,
}

impl TruncUnit {
    pub fn parse(text: &str) -> Option<TruncUnit> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "minute" => TruncUnit::Minute,
            "hour" => TruncUnit::Hour,
            "day" => TruncUnit::Day,
            "week" => TruncUnit::Week,
            "month" => TruncUnit::Month,
            "quarter" => TruncUnit::Quarter,
            "year" => TruncUnit::Year,
            _ => return None,
        })
    }
}

/// The start of the `unit` that holds `seconds`, as the wall clock of `zone` counts it (Unix
/// seconds). `None` when out of range.
pub fn truncate(seconds: i64, unit: TruncUnit, zone: &Zone) -> Option<i64> {
    use chrono::{Datelike, Duration, Timelike};
    let local = zone.offset.timestamp_opt(seconds, 0).single()?.naive_local();
    let midnight = local.date().and_hms_opt(0, 0, 0)?;
    let start = match unit {
        TruncUnit::Minute => local.with_second(0)?,
        TruncUnit::Hour => local.with_second(0)?.with_minute(0)?,
        TruncUnit::Day => midnight,
        TruncUnit::Week => midnight - Duration::days(i64::from(local.weekday().num_days_from_monday())),
        TruncUnit::Month => midnight.with_day(1)?,
        TruncUnit::Quarter => midnight.with_day(1)?.with_month((local.month0() / 3) * 3 + 1)?,
        TruncUnit::Year => midnight.with_day(1)?.with_month(1)?,
    };
    zone.offset
        .from_local_datetime(&start)
        .single()
        .map(|t| t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_706_659_200; // 2024-01-31 00:00:00 UTC

    #[test]
    fn times_read_as_seconds_timestamps_and_dates() {
        for text in [
            "1706659200",
            "2024-01-31",
            "2024-01-31 00:00:00",
            "2024-01-31 00:00:00 UTC",
            "2024-01-31 09:00:00 +0900",
            "2024-01-31 09:00:00+09:00",
            "2024-01-31 09:00:00 JST",
            "2024-01-31 09:00:00 Asia/Tokyo",
            "2024-01-31T00:00:00Z",
            "2024-01-31T09:00:00+09:00",
            "2024-01-31T00:00:00.250",
            "2024-01-31 00:00:00.999 UTC",
            "  2024-01-31  ",
        ] {
            assert_eq!(parse_time(text), Ok(T), "{text}");
        }
        let jst = Zone::parse("JST").unwrap();
        assert_eq!(parse_time_in("2024-01-31 09:00:00", &jst), Ok(T));
        assert_eq!(parse_time_in("2024-01-31 00:00:00 UTC", &jst), Ok(T));
    }

    #[test]
    fn what_is_not_a_time_says_why() {
        assert_eq!(parse_time("yesterday"), Err(TimeError::Unreadable));
        assert_eq!(parse_time(""), Err(TimeError::Unreadable));
        assert_eq!(
            parse_time("2024-01-31 00:00:00 Europe/Paris"),
            Err(TimeError::Zone("Europe/Paris".into()))
        );
        assert_eq!(parse_time("2024-13-01"), Err(TimeError::Unreadable));
        assert_eq!(parse_time("17000000000000000000"), Err(TimeError::OutOfRange));
        assert_eq!(parse_time("99999999999999"), Err(TimeError::OutOfRange));
        assert_eq!(parse_time(&MAX_SECONDS.to_string()), Ok(MAX_SECONDS));
    }

    #[test]
    fn zones_are_names_or_fixed_offsets() {
        let z = |t: &str| Zone::parse(t).map(|z| (z.offset.local_minus_utc(), z.name));
        assert_eq!(z("utc"), Ok((0, "UTC".into())));
        assert_eq!(z("JST"), Ok((9 * 3600, "JST".into())));
        assert_eq!(z("+09:00"), Ok((9 * 3600, "GMT+09:00".into())));
        assert_eq!(z("GMT-0830"), Ok((-(8 * 3600 + 1800), "GMT-08:30".into())));
        assert!(z("America/New_York").is_err() && z("+25").is_err());
    }

    #[test]
    fn durations_are_signed_sums_of_units() {
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert_eq!(parse_duration("-2h"), Ok(-7_200));
        assert_eq!(parse_duration("30m"), Ok(1_800));
        assert_eq!(parse_duration("+10s"), Ok(10));
        assert_eq!(parse_duration("1w"), Ok(604_800));
        assert_eq!(parse_duration("8week"), Ok(8 * 604_800));
        assert_eq!(parse_duration("-1d12h"), Ok(-(86_400 + 12 * 3_600)));
        assert_eq!(parse_duration(" 3days "), Ok(3 * 86_400));
        for bad in [
            "",
            "-",
            "d",
            "1",
            "1x",
            "1M",
            "1y",
            "1d-2h",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), Err(DurationError(bad.into())), "{bad:?}");
        }
    }

    #[test]
    fn truncation_follows_the_zones_wall_clock() {
        // 2024-01-31 15:45:30 UTC, a Wednesday; 2024-02-01 00:45:30 in JST (a Thursday).
        let t = 1_706_715_930;
        let utc = Zone::utc();
        let jst = Zone::parse("JST").unwrap();
        let at = |text: &str, zone: &Zone| parse_time_in(text, zone).unwrap();
        let cases = [
            (TruncUnit::Minute, &utc, at("2024-01-31 15:45:00", &utc)),
            (TruncUnit::Hour, &utc, at("2024-01-31 15:00:00", &utc)),
            (TruncUnit::Day, &utc, at("2024-01-31", &utc)),
            (TruncUnit::Day, &jst, at("2024-02-01", &jst)),
            (TruncUnit::Week, &utc, at("2024-01-29", &utc)),
            (TruncUnit::Week, &jst, at("2024-01-29", &jst)),
            (TruncUnit::Month, &utc, at("2024-01-01", &utc)),
            (TruncUnit::Month, &jst, at("2024-02-01", &jst)),
            (TruncUnit::Quarter, &utc, at("2024-01-01", &utc)),
            (TruncUnit::Year, &jst, at("2024-01-01", &jst)),
        ];
        for (unit, zone, expected) in cases {
            assert_eq!(
                truncate(t, unit, zone),
                Some(expected),
                "{unit:?} in {}",
                zone.name
            );
        }
        let aug = at("2024-08-15 10:00:00", &utc);
        assert_eq!(
            truncate(aug, TruncUnit::Quarter, &utc),
            Some(at("2024-07-01", &utc))
        );
        assert_eq!(TruncUnit::parse("Week"), Some(TruncUnit::Week));
        assert_eq!(TruncUnit::parse("fortnight"), None);
    }

    #[test]
    fn td_timestamps_round_trip() {
        assert_eq!(td_timestamp(1_412_320_845), "2014-10-03 07:20:45 UTC");
        assert_eq!(parse_td_timestamp("2014-10-03 07:20:45 UTC"), Some(1_412_320_845));
        assert_eq!(parse_td_timestamp("2014-10-03T07:20:45Z"), Some(1_412_320_845));
        assert_eq!(parse_td_timestamp("yesterday"), None);
    }
}

/// Where each row's `time` comes from when a job's result is written into a table: one rule for
/// the operator's transcoder and td-local's result output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowTime {
    /// The result's own `time` column (its index), of an integer type.
    Column(usize),
    /// The column `time_column` names (its index): seconds or a timestamp in each row.
    Parsed(usize),
    /// No column gives it: the `time` setting, else the source job's start.
    Fallback,
}

/// Why a result's rows cannot get their `time`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowTimeError {
    #[error("time_column `{name}` is not a column of the result ({columns})")]
    NoSuchColumn { name: String, columns: String },
    #[error(
        "the result has a `time` column of its own and time_column names `{name}`: rename one in the query"
    )]
    TwoTimes { name: String },
    #[error(
        "the result's `{column}` column is {result_type}, but TD's `time` must be integer unix seconds: \
         cast it (CAST(... AS BIGINT) or TD_TIME_PARSE(...)) or rename it in the query"
    )]
    NotInteger { column: String, result_type: String },
}

/// One result column as the `time` rule sees it.
#[derive(Debug, Clone, Copy)]
pub struct TimeCandidate<'a> {
    /// Its name in the result.
    pub name: &'a str,
    /// Its name in the target table (`time` is the one TD reads).
    pub target: &'a str,
    pub result_type: &'a str,
}

/// Where the rows' `time` comes from: the `time_column` setting's column when set (no other
/// column may then be `time`), else the result's `time` column, which must be an integer, else
/// the fallback.
pub fn row_time(columns: &[TimeCandidate<'_>], time_column: Option<&str>) -> Result<RowTime, RowTimeError> {
    if let Some(name) = time_column {
        let i = columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| RowTimeError::NoSuchColumn {
                name: name.to_string(),
                columns: columns.iter().map(|c| c.name).collect::<Vec<_>>().join(", "),
            })?;
        if columns
            .iter()
            .enumerate()
            .any(|(j, c)| j != i && c.target == "time")
        {
            return Err(RowTimeError::TwoTimes {
                name: name.to_string(),
            });
        }
        return Ok(RowTime::Parsed(i));
    }
    match columns.iter().position(|c| c.target == "time") {
        Some(i) if crate::types::is_integer_type(columns[i].result_type) => Ok(RowTime::Column(i)),
        Some(i) => Err(RowTimeError::NotInteger {
            column: columns[i].name.to_string(),
            result_type: columns[i].result_type.to_string(),
        }),
        None => Ok(RowTime::Fallback),
    }
}

#[cfg(test)]
mod row_time_tests {
    use super::*;

    fn cols<'a>(list: &[(&'a str, &'a str)]) -> Vec<TimeCandidate<'a>> {
        list.iter()
            .map(|(name, result_type)| TimeCandidate {
                name,
                target: name,
                result_type,
            })
            .collect()
    }

    #[test]
    fn the_time_column_setting_wins_then_an_integer_time_column_then_the_fallback() {
        let both = cols(&[("created", "varchar"), ("n", "bigint")]);
        assert_eq!(row_time(&both, Some("created")), Ok(RowTime::Parsed(0)));
        assert_eq!(
            row_time(&cols(&[("x", "double"), ("time", "bigint")]), None),
            Ok(RowTime::Column(1))
        );
        assert_eq!(row_time(&cols(&[("x", "double")]), None), Ok(RowTime::Fallback));
    }

    #[test]
    fn a_time_column_that_is_not_an_integer_or_a_second_time_is_refused() {
        let text_time = cols(&[("time", "varchar")]);
        assert!(matches!(
            row_time(&text_time, None),
            Err(RowTimeError::NotInteger { .. })
        ));
        let two = cols(&[("time", "bigint"), ("created", "varchar")]);
        assert_eq!(
            row_time(&two, Some("created")),
            Err(RowTimeError::TwoTimes {
                name: "created".into()
            })
        );
        assert!(matches!(
            row_time(&two, Some("nope")),
            Err(RowTimeError::NoSuchColumn { .. })
        ));
    }
}
