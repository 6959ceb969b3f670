//! Scheduled queries (`td sched:create NAME CRON SQL -d DB --result …`): a query, its database
//! and output, and when it runs — a cron expression in a time zone, `delay` seconds after each
//! scheduled time. Each run is a query job like any other, issued with `scheduled_time` (what
//! `TD_SCHEDULED_TIME()` returns) and its result written where `result` says; the schedule's
//! history lists them.
//!
//! Sources: td-client-python `schedule_api.py` and td-client-ruby `api/schedule.rb` (the calls and
//! what they read back: `start` on create, `cron` and `query` on delete, `jobs` on run, `history`),
//! the `td` toolbelt's `sched.rb`, and TD's API description (createSchedule, runSchedule — `num` at
//! most 10 —, getScheduleExecutionHistoryByName). TD's cron is the five-field form plus `@hourly`,
//! `@daily`, `@weekly`, `@monthly` and `@yearly`; an empty cron makes a schedule that runs only
//! when asked (`sched:run`).

use std::str::FromStr;

use chrono::TimeZone;
use rusqlite::{params, Connection, OptionalExtension};

use crate::catalog::database_id;
use crate::error::{Error, Result};
use crate::jobs::NewJob;
use crate::store::now;

/// `run/:name/:time` runs at most this many jobs (TD's API description, runSchedule).
pub(crate) const MAX_RUNS_AT_ONCE: i64 = 10;

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub id: i64,
    pub account_id: i64,
    pub name: String,
    pub settings: ScheduleSettings,
    pub created_at: i64,
    /// The next scheduled time (Unix seconds); `None` without a cron.
    pub next_time: Option<i64>,
}

/// What a schedule is made of: everything `create` takes and `update` may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSettings {
    /// `None`: runs only when asked.
    pub cron: Option<String>,
    pub timezone: String,
    /// Seconds after the scheduled time the job starts.
    pub delay: i64,
    pub query: String,
    pub database: String,
    /// `presto`, `trino` or `hive`.
    pub job_type: String,
    pub priority: i64,
    pub retry_limit: i64,
    pub engine_version: Option<String>,
    pub pool_name: Option<String>,
    /// A td:// URL or a saved result's `NAME[:TABLE]`, as `job/issue` takes it; "" for none.
    pub result: String,
}

/// A change of a schedule: what is given replaces what was there.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScheduleChange {
    pub name: Option<String>,
    /// `Some("")` clears the cron.
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub delay: Option<i64>,
    pub query: Option<String>,
    pub database: Option<String>,
    pub job_type: Option<String>,
    pub priority: Option<i64>,
    pub retry_limit: Option<i64>,
    pub engine_version: Option<String>,
    pub pool_name: Option<String>,
    pub result: Option<String>,
}

impl ScheduleChange {
    /// The settings of a new schedule: `query` and `database` are required; `type` defaults to
    /// `hive` (td-client-python sends it so), the time zone to UTC.
    pub(crate) fn into_new(self) -> Result<(String, ScheduleSettings)> {
        let required = |value: Option<String>, what: &str| {
            value
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Error::invalid(format!("parameter '{what}' is required")))
        };
        let name = required(self.name, "name")?;
        let settings = ScheduleSettings {
            cron: self.cron.filter(|c| !c.trim().is_empty()),
            timezone: self.timezone.unwrap_or_else(|| "UTC".to_string()),
            delay: self.delay.unwrap_or(0),
            query: required(self.query, "query")?,
            database: required(self.database, "database")?,
            job_type: self.job_type.unwrap_or_else(|| "hive".to_string()),
            priority: self.priority.unwrap_or(0),
            retry_limit: self.retry_limit.unwrap_or(0),
            engine_version: self.engine_version,
            pool_name: self.pool_name,
            result: self.result.unwrap_or_default(),
        };
        Ok((name, settings))
    }

    /// `to` with this change made.
    pub(crate) fn apply(self, to: &mut Schedule) {
        let s = &mut to.settings;
        if let Some(name) = self.name.filter(|n| !n.is_empty()) {
            to.name = name;
        }
        if let Some(cron) = self.cron {
            s.cron = Some(cron).filter(|c| !c.trim().is_empty());
        }
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { s.$field = v; } )* };
        }
        set!(
            timezone,
            delay,
            query,
            database,
            job_type,
            priority,
            retry_limit,
            result
        );
        if let Some(v) = self.engine_version {
            s.engine_version = Some(v);
        }
        if let Some(v) = self.pool_name {
            s.pool_name = Some(v);
        }
    }
}

/// An IANA time zone by name.
fn zone(timezone: &str) -> Result<chrono_tz::Tz> {
    chrono_tz::Tz::from_str(timezone).map_err(|_| {
        Error::invalid(format!(
            "timezone '{timezone}' is not a time zone: give a name such as UTC or Asia/Tokyo"
        ))
    })
}

/// A cron expression in a time zone: when a schedule's runs fall.
pub(crate) struct When {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

impl When {
    /// TD's forms only: five fields, or one of the `@` names (no seconds field).
    pub(crate) fn parse(cron: &str, timezone: &str) -> Result<When> {
        let text = cron.trim();
        let named = ["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually"];
        if !(named.contains(&text) || text.split_whitespace().count() == 5) {
            return Err(Error::invalid(format!(
                "cron '{cron}' is not a schedule: give five fields (minute hour day month weekday, \
                 e.g. '10 * * * *') or @hourly, @daily, @weekly, @monthly, @yearly"
            )));
        }
        let cron = croner::Cron::from_str(text)
            .map_err(|e| Error::invalid(format!("cron '{text}' is not a schedule: {e}")))?;
        Ok(When {
            cron,
            tz: zone(timezone)?,
        })
    }

    /// The first scheduled time strictly after `after` (Unix seconds).
    pub(crate) fn next_after(&self, after: i64) -> Option<i64> {
        let from = self.tz.timestamp_opt(after, 0).single()?;
        self.cron
            .find_next_occurrence(&from, false)
            .ok()
            .map(|t| t.timestamp())
    }
}

impl Schedule {
    /// The query job of this schedule's run for `scheduled_time`: what `TD_SCHEDULED_TIME()`
    /// returns in it; its result goes where the schedule's `result` says.
    pub fn job(&self, scheduled_time: Option<i64>) -> NewJob {
        let s = &self.settings;
        NewJob {
            account_id: self.account_id,
            job_type: s.job_type.clone(),
            database: s.database.clone(),
            query: s.query.clone(),
            result_url: s.result.clone(),
            priority: s.priority,
            retry_limit: s.retry_limit,
            pool_name: s.pool_name.clone(),
            engine_version: s.engine_version.clone(),
            scheduled_time,
            schedule_id: Some(self.id).filter(|id| *id > 0),
            ..NewJob::default()
        }
    }
}

impl ScheduleSettings {
    /// When its runs fall (`None` without a cron), the time zone checked in either case.
    fn when(&self) -> Result<Option<When>> {
        zone(&self.timezone)?;
        self.cron
            .as_deref()
            .map(|cron| When::parse(cron, &self.timezone))
            .transpose()
    }

    /// The cron's next time after `after`, checking the cron and the time zone.
    fn next_after(&self, after: i64) -> Result<Option<i64>> {
        Ok(self.when()?.and_then(|when| when.next_after(after)))
    }

    fn check(&self, conn: &Connection, account_id: i64) -> Result<()> {
        if self.delay < 0 {
            return Err(Error::invalid(format!(
                "delay must be a number of seconds (0 or more), got {}",
                self.delay
            )));
        }
        database_id(conn, account_id, &self.database)?;
        Ok(())
    }
}

fn check_schedule_name(name: &str) -> Result<()> {
    let ok = (1..=256).contains(&name.len()) && !name.contains('/') && !name.trim().is_empty();
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid schedule name '{name}': 1 to 256 characters, no '/'"
        )))
    }
}

const COLUMNS: &str = "id, account_id, name, cron, timezone, delay, query, database_name, type, priority, \
    retry_limit, engine_version, pool_name, result, created_at, next_time";

fn schedule_row(r: &rusqlite::Row) -> rusqlite::Result<Schedule> {
    Ok(Schedule {
        id: r.get(0)?,
        account_id: r.get(1)?,
        name: r.get(2)?,
        settings: ScheduleSettings {
            cron: r.get(3)?,
            timezone: r.get(4)?,
            delay: r.get(5)?,
            query: r.get(6)?,
            database: r.get(7)?,
            job_type: r.get(8)?,
            priority: r.get(9)?,
            retry_limit: r.get(10)?,
            engine_version: r.get(11)?,
            pool_name: r.get(12)?,
            result: r.get(13)?,
        },
        created_at: r.get(14)?,
        next_time: r.get(15)?,
    })
}

/// Records a schedule under a free name; returns it.
pub(crate) fn create(
    conn: &Connection,
    account_id: i64,
    name: &str,
    settings: &ScheduleSettings,
) -> Result<Schedule> {
    check_schedule_name(name)?;
    settings.check(conn, account_id)?;
    let created = now();
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO schedules (account_id, name, query, database_name, type, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            account_id,
            name,
            settings.query,
            settings.database,
            settings.job_type,
            created
        ],
    )?;
    if inserted == 0 {
        return Err(Error::conflict(format!("schedule '{name}' already exists")));
    }
    let schedule = Schedule {
        id: conn.last_insert_rowid(),
        account_id,
        name: name.to_string(),
        settings: settings.clone(),
        created_at: created,
        next_time: settings.next_after(created)?,
    };
    write_row(conn, &schedule)?;
    Ok(schedule)
}

/// Writes every field of `schedule` into its row.
fn write_row(conn: &Connection, schedule: &Schedule) -> Result<()> {
    let s = &schedule.settings;
    conn.execute(
        "UPDATE schedules SET name = ?1, cron = ?2, timezone = ?3, delay = ?4, query = ?5, database_name = ?6, \
         type = ?7, priority = ?8, retry_limit = ?9, engine_version = ?10, pool_name = ?11, result = ?12, \
         next_time = ?13 WHERE id = ?14",
        params![
            schedule.name,
            s.cron,
            s.timezone,
            s.delay,
            s.query,
            s.database,
            s.job_type,
            s.priority,
            s.retry_limit,
            s.engine_version,
            s.pool_name,
            s.result,
            schedule.next_time,
            schedule.id
        ],
    )?;
    Ok(())
}

/// The account's schedule of that name.
pub(crate) fn get(conn: &Connection, account_id: i64, name: &str) -> Result<Schedule> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM schedules WHERE account_id = ?1 AND name = ?2"),
        params![account_id, name],
        schedule_row,
    )
    .optional()?
    .ok_or_else(|| Error::not_found(format!("schedule '{name}' does not exist")))
}

/// The account's schedules, by name.
pub(crate) fn list(conn: &Connection, account_id: i64) -> Result<Vec<Schedule>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM schedules WHERE account_id = ?1 ORDER BY name"
    ))?;
    let rows = stmt.query_map(params![account_id], schedule_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Stores `changed` (the schedule `name` with a [`ScheduleChange`] applied); a new cron or time
/// zone sets its next time afresh. Returns it as stored.
pub(crate) fn update(
    conn: &Connection,
    account_id: i64,
    name: &str,
    mut changed: Schedule,
) -> Result<Schedule> {
    let stored = get(conn, account_id, name)?;
    check_schedule_name(&changed.name)?;
    let s = &changed.settings;
    s.check(conn, account_id)?;
    changed.next_time = if (&s.cron, &s.timezone) != (&stored.settings.cron, &stored.settings.timezone) {
        s.next_after(now())?
    } else {
        stored.next_time
    };
    if changed.name != name && get(conn, account_id, &changed.name).is_ok() {
        return Err(Error::conflict(format!(
            "schedule '{}' already exists",
            changed.name
        )));
    }
    changed.id = stored.id;
    write_row(conn, &changed)?;
    get(conn, account_id, &changed.name)
}

/// Removes a schedule (its jobs stay); returns it as it was.
pub(crate) fn delete(conn: &Connection, account_id: i64, name: &str) -> Result<Schedule> {
    let schedule = get(conn, account_id, name)?;
    conn.execute("DELETE FROM schedules WHERE id = ?1", params![schedule.id])?;
    Ok(schedule)
}

/// The scheduled times of `run/:name/:time`: `time` itself, then the cron's next ones.
pub(crate) fn run_times(schedule: &Schedule, time: i64, num: i64) -> Result<Vec<i64>> {
    if !(1..=MAX_RUNS_AT_ONCE).contains(&num) {
        return Err(Error::invalid(format!(
            "num must be from 1 to {MAX_RUNS_AT_ONCE}, got {num}"
        )));
    }
    let when = schedule.settings.when()?;
    let mut times = vec![time];
    while (times.len() as i64) < num {
        let last = *times.last().unwrap_or(&time);
        match when.as_ref().and_then(|w| w.next_after(last)) {
            Some(next) => times.push(next),
            None => {
                return Err(Error::invalid(format!(
                    "schedule '{}' has no cron: it runs one job at a time (num 1)",
                    schedule.name
                )))
            }
        }
    }
    Ok(times)
}

/// A schedule's run that is due at `at`: its scheduled time, plus `delay`, has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DueRun {
    pub schedule: Schedule,
    pub scheduled_time: i64,
}

/// Whether any schedule has a run due at `at`.
pub(crate) fn any_due(conn: &Connection, at: i64) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM schedules WHERE next_time IS NOT NULL AND next_time + delay <= ?1)",
        params![at],
        |r| r.get(0),
    )?)
}

/// Takes the runs due at `at` and moves each schedule to its next time after `at` (runs missed
/// while td-local was stopped are not made up: one run, the latest due, is issued).
pub(crate) fn take_due(conn: &Connection, at: i64) -> Result<Vec<DueRun>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM schedules WHERE next_time IS NOT NULL AND next_time + delay <= ?1"
    ))?;
    let due: Vec<Schedule> = stmt
        .query_map(params![at], schedule_row)?
        .collect::<rusqlite::Result<_>>()?;
    let mut runs = Vec::new();
    for schedule in due {
        let Some(first) = schedule.next_time else {
            continue;
        };
        // The latest scheduled time whose run is due.
        let when = schedule.settings.when()?;
        let next_after = |t: i64| when.as_ref().and_then(|w| w.next_after(t));
        let mut latest = first;
        let mut next = next_after(first);
        while let Some(t) = next.filter(|t| t + schedule.settings.delay <= at) {
            latest = t;
            next = next_after(t);
        }
        conn.execute(
            "UPDATE schedules SET next_time = ?1 WHERE id = ?2",
            params![next, schedule.id],
        )?;
        runs.push(DueRun {
            schedule,
            scheduled_time: latest,
        });
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_time_follows_the_cron_in_its_time_zone() {
        // 2026-12-07 14:00:00 UTC = 23:00 in Tokyo.
        let at = 1_796_652_000;
        let daily_tokyo = When::parse("@daily", "Asia/Tokyo").unwrap();
        assert_eq!(daily_tokyo.next_after(at), Some(at + 3_600));
        let ten_past = When::parse("10 * * * *", "UTC").unwrap();
        assert_eq!(ten_past.next_after(at), Some(at + 600));
        assert_eq!(ten_past.next_after(at + 600), Some(at + 600 + 3_600));
    }

    #[test]
    fn only_tds_cron_forms_and_real_time_zones_are_taken() {
        for bad in ["0 * * * * *", "* * *", "61 * * * *", "@every_minute", ""] {
            assert!(When::parse(bad, "UTC").is_err(), "{bad}");
        }
        assert!(When::parse("@hourly", "Mars/Olympus").is_err());
        for good in [
            "@hourly",
            "@daily",
            "@weekly",
            "@monthly",
            "@yearly",
            "*/15 9-17 * * 1-5",
        ] {
            assert!(When::parse(good, "UTC").is_ok(), "{good}");
        }
    }
}
