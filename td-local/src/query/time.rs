//! TD's time UDFs on SQLite: `TD_TIME_RANGE(time, start, end[, tz])`,
//! `TD_TIME_FORMAT(time, format[, tz])` (Java `SimpleDateFormat` patterns),
//! `TD_TIME_ADD(time, duration[, tz])`, `TD_TIME_PARSE(text[, tz])`,
//! `TD_DATE_TRUNC(unit, time[, tz])` and `TD_SCHEDULED_TIME()`.
//!
//! A `time` argument is integer seconds or a timestamp string (read in `tz` when it names no zone);
//! every function returns integer seconds (or text for TD_TIME_FORMAT) and NULL for a NULL time.
//!
//! Times and zones are read by td-model: zones are fixed offsets only (no tz database), so a zone
//! with DST is an error rather than a silent wrong answer.

use chrono::{DateTime, Datelike, FixedOffset, TimeZone, Timelike};
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use td_model::time::{gmt_name, parse_duration, parse_time_in, truncate, TruncUnit, Zone};

/// Reads a time argument: integer seconds, or text as td-model reads it (digits, `YYYY-MM-DD`,
/// `YYYY-MM-DD HH:MM:SS` or with `T`, optionally followed by a zone); `None` for NULL. Text
/// without a zone is read in `zone`.
pub(crate) fn parse_time(value: ValueRef<'_>, zone: &Zone) -> Result<Option<i64>, String> {
    match value {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(i) => Ok(Some(i)),
        ValueRef::Real(f) => Ok(Some(f.floor() as i64)),
        ValueRef::Text(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            parse_time_in(&text, zone)
                .map(Some)
                .map_err(|e| format!("`{}` {e}", text.trim()))
        }
        ValueRef::Blob(_) => Err("a time must be an integer or a string, not a blob".into()),
    }
}

/// `start <= time < end`; a NULL bound is open. NULL time gives NULL.
pub(crate) fn time_range(time: Option<i64>, start: Option<i64>, end: Option<i64>) -> Option<bool> {
    let t = time?;
    Some(start.is_none_or(|s| s <= t) && end.is_none_or(|e| t < e))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Formats `seconds` in `zone` with a Java `SimpleDateFormat` pattern.
pub(crate) fn format_time(seconds: i64, pattern: &str, zone: &Zone) -> Result<String, String> {
    let t = zone
        .offset
        .timestamp_opt(seconds, 0)
        .single()
        .ok_or_else(|| format!("time {seconds} is out of range"))?;
    let mut out = String::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            i = quoted_literal(&chars, i, &mut out);
            continue;
        }
        let run = chars[i..].iter().take_while(|&&x| x == c).count();
        i += run;
        if c.is_ascii_alphabetic() {
            out.push_str(&field(&t, c, run, zone)?);
        } else {
            out.extend(std::iter::repeat_n(c, run));
        }
    }
    Ok(out)
}

/// Copies a `'…'` literal (`''` is one quote); returns the index after it.
fn quoted_literal(chars: &[char], start: usize, out: &mut String) -> usize {
    if chars.get(start + 1) == Some(&'\'') {
        out.push('\'');
        return start + 2;
    }
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            return i + 1;
        }
        out.push(chars[i]);
        i += 1;
    }
    i
}

fn pad(n: i64, width: usize) -> String {
    format!("{n:0width$}")
}

/// One pattern field: `letter` repeated `n` times.
fn field(t: &DateTime<FixedOffset>, letter: char, n: usize, zone: &Zone) -> Result<String, String> {
    let offset = zone.offset.local_minus_utc();
    Ok(match letter {
        'G' => "AD".to_string(),
        'y' | 'Y' if n == 2 => pad(i64::from(t.year().rem_euclid(100)), 2),
        'y' | 'Y' => pad(i64::from(t.year()), n),
        'M' | 'L' if n >= 4 => MONTHS[t.month0() as usize].to_string(),
        'M' | 'L' if n == 3 => MONTHS[t.month0() as usize][..3].to_string(),
        'M' | 'L' => pad(i64::from(t.month()), n),
        'd' => pad(i64::from(t.day()), n),
        'D' => pad(i64::from(t.ordinal()), n),
        'E' if n >= 4 => WEEKDAYS[t.weekday().num_days_from_monday() as usize].to_string(),
        'E' => WEEKDAYS[t.weekday().num_days_from_monday() as usize][..3].to_string(),
        'u' => pad(i64::from(t.weekday().number_from_monday()), n),
        'a' => if t.hour() < 12 { "AM" } else { "PM" }.to_string(),
        'H' => pad(i64::from(t.hour()), n),
        'k' => pad(i64::from(if t.hour() == 0 { 24 } else { t.hour() }), n),
        'K' => pad(i64::from(t.hour() % 12), n),
        'h' => pad(i64::from(if t.hour() % 12 == 0 { 12 } else { t.hour() % 12 }), n),
        'm' => pad(i64::from(t.minute()), n),
        's' => pad(i64::from(t.second()), n),
        'S' => pad(0, n),
        'z' => zone.name.clone(),
        'Z' => rfc822_offset(offset),
        'X' if offset == 0 => "Z".to_string(),
        'X' if n == 1 => rfc822_offset(offset)[..3].to_string(),
        'X' if n == 2 => rfc822_offset(offset),
        'X' => gmt_name(offset)[3..].to_string(),
        other => return Err(format!("unsupported pattern letter '{other}' in TD_TIME_FORMAT")),
    })
}

/// `+0900`
fn rfc822_offset(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let abs = seconds.abs();
    format!("{sign}{:02}{:02}", abs / 3600, abs % 3600 / 60)
}

fn zone_arg(ctx: &Context<'_>, index: usize) -> rusqlite::Result<Zone> {
    if ctx.len() <= index {
        return Ok(Zone::utc());
    }
    match ctx.get_raw(index) {
        ValueRef::Null => Ok(Zone::utc()),
        ValueRef::Text(t) => Zone::parse(&String::from_utf8_lossy(t))
            .map_err(|e| user_error(format!("the time zone argument {e}"))),
        _ => Err(user_error("time zone must be a string".to_string())),
    }
}

fn user_error(message: String) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(message.into())
}

fn check_arity(ctx: &Context<'_>, name: &str, min: usize, max: usize) -> rusqlite::Result<()> {
    if (min..=max).contains(&ctx.len()) {
        Ok(())
    } else {
        Err(user_error(format!(
            "{name} takes {min} to {max} arguments, got {}",
            ctx.len()
        )))
    }
}

/// A text argument (the duration of TD_TIME_ADD, the unit of TD_DATE_TRUNC); `None` for NULL.
fn text_arg(ctx: &Context<'_>, index: usize, function: &str, what: &str) -> rusqlite::Result<Option<String>> {
    match ctx.get_raw(index) {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => Ok(Some(String::from_utf8_lossy(t).into_owned())),
        _ => Err(user_error(format!("{function}: the {what} must be a string"))),
    }
}

/// Reads argument `index` as a time in `zone`, for `function`'s messages.
fn time_arg(ctx: &Context<'_>, index: usize, zone: &Zone, function: &str) -> rusqlite::Result<Option<i64>> {
    parse_time(ctx.get_raw(index), zone).map_err(|e| user_error(format!("{function}: {e}")))
}

/// `TD_TIME_ADD(time, duration[, tz])`: `time` moved by `duration` (`1d`, `-2h`, `30m`, …).
fn time_add(time: Option<i64>, duration: Option<&str>) -> Result<Option<i64>, String> {
    let (Some(time), Some(duration)) = (time, duration) else {
        return Ok(None);
    };
    let seconds = parse_duration(duration).map_err(|e| format!("TD_TIME_ADD: {e}"))?;
    time.checked_add(seconds)
        .map(Some)
        .ok_or_else(|| format!("TD_TIME_ADD: {time} + {duration} is out of range"))
}

/// `TD_DATE_TRUNC(unit, time[, tz])`: the start of the minute, hour, day, week (Monday), month,
/// quarter or year that holds `time`, on the wall clock of `tz`.
fn date_trunc(unit: Option<&str>, time: Option<i64>, zone: &Zone) -> Result<Option<i64>, String> {
    let (Some(unit), Some(time)) = (unit, time) else {
        return Ok(None);
    };
    let unit = TruncUnit::parse(unit).ok_or_else(|| {
        format!("TD_DATE_TRUNC: unit '{unit}' is not minute, hour, day, week, month, quarter or year")
    })?;
    truncate(time, unit, zone)
        .map(Some)
        .ok_or_else(|| format!("TD_DATE_TRUNC: time {time} is out of range"))
}

/// Registers TD's time functions (names are case-insensitive in SQLite); `TD_SCHEDULED_TIME()`
/// returns `scheduled_time`.
pub(crate) fn register(conn: &Connection, scheduled_time: i64) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("TD_SCHEDULED_TIME", 0, flags, move |_| Ok(scheduled_time))?;
    conn.create_scalar_function("TD_TIME_ADD", -1, flags, |ctx| {
        check_arity(ctx, "TD_TIME_ADD", 2, 3)?;
        let zone = zone_arg(ctx, 2)?;
        let time = time_arg(ctx, 0, &zone, "TD_TIME_ADD")?;
        let duration = text_arg(ctx, 1, "TD_TIME_ADD", "duration")?;
        time_add(time, duration.as_deref()).map_err(user_error)
    })?;
    // A text that is not a time gives NULL, not an error: TD's docs say only that it converts a
    // time string to Unix seconds, so what it does with garbage is unconfirmed; NULL is what a
    // Hive or Presto user expects of a parse function.
    conn.create_scalar_function("TD_TIME_PARSE", -1, flags, |ctx| {
        check_arity(ctx, "TD_TIME_PARSE", 1, 2)?;
        let zone = zone_arg(ctx, 1)?;
        Ok(match ctx.get_raw(0) {
            ValueRef::Text(t) => parse_time_in(&String::from_utf8_lossy(t), &zone).ok(),
            ValueRef::Null => None,
            _ => return Err(user_error("TD_TIME_PARSE: the time must be a string".into())),
        })
    })?;
    conn.create_scalar_function("TD_DATE_TRUNC", -1, flags, |ctx| {
        check_arity(ctx, "TD_DATE_TRUNC", 2, 3)?;
        let zone = zone_arg(ctx, 2)?;
        let unit = text_arg(ctx, 0, "TD_DATE_TRUNC", "unit")?;
        let time = time_arg(ctx, 1, &zone, "TD_DATE_TRUNC")?;
        date_trunc(unit.as_deref(), time, &zone).map_err(user_error)
    })?;
    conn.create_scalar_function("TD_TIME_RANGE", -1, flags, |ctx| {
        check_arity(ctx, "TD_TIME_RANGE", 3, 4)?;
        let zone = zone_arg(ctx, 3)?;
        let read = |i: usize| {
            parse_time(ctx.get_raw(i), &zone).map_err(|e| user_error(format!("TD_TIME_RANGE: {e}")))
        };
        Ok(time_range(read(0)?, read(1)?, read(2)?))
    })?;
    conn.create_scalar_function("TD_TIME_FORMAT", -1, flags, |ctx| {
        check_arity(ctx, "TD_TIME_FORMAT", 2, 3)?;
        let zone = zone_arg(ctx, 2)?;
        let Some(seconds) =
            parse_time(ctx.get_raw(0), &zone).map_err(|e| user_error(format!("TD_TIME_FORMAT: {e}")))?
        else {
            return Ok(None);
        };
        let pattern = match ctx.get_raw(1) {
            ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
            _ => return Err(user_error("TD_TIME_FORMAT: the format must be a string".into())),
        };
        format_time(seconds, &pattern, &zone)
            .map(Some)
            .map_err(user_error)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_412_320_845; // 2014-10-03 07:20:45 UTC, a Friday

    #[test]
    fn formats_java_patterns_in_utc_and_fixed_zones() {
        let utc = Zone::utc();
        assert_eq!(
            format_time(T, "yyyy-MM-dd HH:mm:ss zzz", &utc).unwrap(),
            "2014-10-03 07:20:45 UTC"
        );
        let jst = Zone::parse("JST").unwrap();
        assert_eq!(
            format_time(T, "yyyy-MM-dd HH:mm:ss Z", &jst).unwrap(),
            "2014-10-03 16:20:45 +0900"
        );
        let minus = Zone::parse("-08:00").unwrap();
        assert_eq!(
            format_time(T, "yy/M/d h:mm a z XXX", &minus).unwrap(),
            "14/10/2 11:20 PM GMT-08:00 -08:00"
        );
        assert_eq!(
            format_time(T, "EEE, d MMM yyyy", &utc).unwrap(),
            "Fri, 3 Oct 2014"
        );
        assert_eq!(format_time(T, "EEEE MMMM", &utc).unwrap(), "Friday October");
        assert_eq!(
            format_time(T, "'at' HH 'o''clock'", &utc).unwrap(),
            "at 07 o'clock"
        );
        assert!(format_time(T, "yyyy-qq", &utc).unwrap_err().contains("'q'"));
    }

    #[test]
    fn reads_times_as_seconds_dates_and_datetimes() {
        let utc = Zone::utc();
        let jst = Zone::parse("JST").unwrap();
        let text = |s: &'static str| ValueRef::Text(s.as_bytes());
        assert_eq!(parse_time(ValueRef::Integer(5), &utc).unwrap(), Some(5));
        assert_eq!(parse_time(text("1412320845"), &utc).unwrap(), Some(T));
        assert_eq!(parse_time(text("2014-10-03 07:20:45"), &utc).unwrap(), Some(T));
        assert_eq!(parse_time(text("2014-10-03 16:20:45"), &jst).unwrap(), Some(T));
        assert_eq!(
            parse_time(text("2014-10-03"), &utc).unwrap(),
            Some(T - (7 * 3600 + 20 * 60 + 45))
        );
        assert_eq!(
            parse_time(text("2014-10-03 16:20:45 +0900"), &utc).unwrap(),
            Some(T)
        );
        assert_eq!(parse_time(ValueRef::Null, &utc).unwrap(), None);
        assert!(parse_time(text("yesterday"), &utc).is_err());
    }

    #[test]
    fn time_add_moves_by_a_duration_and_keeps_null() {
        assert_eq!(time_add(Some(T), Some("1d")), Ok(Some(T + 86_400)));
        assert_eq!(time_add(Some(T), Some("-2h")), Ok(Some(T - 7_200)));
        assert_eq!(time_add(None, Some("1d")), Ok(None));
        assert_eq!(time_add(Some(T), None), Ok(None));
        assert!(time_add(Some(T), Some("1M"))
            .unwrap_err()
            .contains("not a duration"));
    }

    #[test]
    fn date_trunc_names_its_units() {
        let jst = Zone::parse("JST").unwrap();
        // 2014-10-03 16:20:45 JST truncated to the JST day: 2014-10-03 00:00 JST.
        assert_eq!(
            date_trunc(Some("day"), Some(T), &jst),
            Ok(Some(T - (16 * 3600 + 20 * 60 + 45)))
        );
        assert_eq!(date_trunc(Some("day"), None, &jst), Ok(None));
        assert!(date_trunc(Some("decade"), Some(T), &jst)
            .unwrap_err()
            .contains("'decade'"));
    }

    #[test]
    fn range_is_half_open_and_null_bounds_are_open() {
        assert_eq!(time_range(Some(10), Some(10), Some(20)), Some(true));
        assert_eq!(time_range(Some(20), Some(10), Some(20)), Some(false));
        assert_eq!(time_range(Some(9), None, Some(20)), Some(true));
        assert_eq!(time_range(Some(99), Some(10), None), Some(true));
        assert_eq!(time_range(None, Some(10), None), None);
    }
}
