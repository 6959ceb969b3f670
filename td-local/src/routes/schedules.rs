//! `/v3/schedule/*`: create, list, update, delete, run and history of scheduled queries
//! (`crate::schedules`), with the answers the clients read: td-client-python `schedule_api.py`
//! (`start` on create, `cron` and `query` on delete, `jobs` on run, `history`) and TD's API
//! description (Schedule, ScheduleReference, ScheduledJob). Master key only.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::SecondsFormat;
use serde_json::{json, Value};
use td_model::key::mask_keys;
use td_model::time::td_timestamp;

use crate::accounts::Caller;
use crate::error::Error;
use crate::jobs;
use crate::routes::error::ApiResult;
use crate::routes::jobs::{base_url, show_json};
use crate::routes::params::Params;
use crate::schedules::{self, Schedule, ScheduleChange};
use crate::state::AppState;
use crate::store::blocking;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/schedule/list", get(list))
        .route("/v3/schedule/create/{name}", post(create))
        .route("/v3/schedule/update/{name}", post(update))
        .route("/v3/schedule/delete/{name}", post(delete))
        .route("/v3/schedule/run/{name}/{time}", post(run))
        .route("/v3/schedule/history/{name}", get(history))
}

/// ISO 8601 in UTC, as the API description's `DateTimeISO8601`.
fn iso(secs: i64) -> Value {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| json!(t.to_rfc3339_opts(SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

/// The Schedule object (a result URL's key masked, as saved results show it).
fn schedule_json(s: &Schedule, user_name: &str) -> Value {
    let t = &s.settings;
    json!({
        "name": s.name,
        "cron": t.cron.clone().unwrap_or_default(),
        "timezone": t.timezone,
        "delay": t.delay,
        "query": t.query,
        "database": t.database,
        "type": t.job_type,
        "priority": t.priority,
        "retry_limit": t.retry_limit,
        "engine_version": t.engine_version,
        "pool_name": t.pool_name,
        "result": mask_keys(&t.result),
        "created_at": iso(s.created_at),
        "next_time": s.next_time.map(iso),
        "user_name": user_name,
    })
}

/// What `create` and `update` take, as the clients send it.
fn change_from(params: &Params, name: Option<&str>) -> ApiResult<ScheduleChange> {
    let text = |key: &str| params.0.get(key).cloned();
    Ok(ScheduleChange {
        name: name
            .map(str::to_owned)
            .or_else(|| params.get("name").map(str::to_owned)),
        cron: text("cron"),
        timezone: params.get("timezone").map(str::to_owned),
        delay: params.int("delay")?,
        query: params.get("query").map(str::to_owned),
        database: params.get("database").map(str::to_owned),
        job_type: params.get("type").map(str::to_owned),
        priority: params.int("priority")?,
        retry_limit: params.int("retry_limit")?,
        engine_version: params.get("engine_version").map(str::to_owned),
        pool_name: params.get("pool_name").map(str::to_owned),
        result: text("result"),
    })
}

/// A schedule's query as the job it issues would be, checked as `job/issue` checks one.
async fn check_as_job(state: &AppState, schedule: &Schedule) -> ApiResult<()> {
    let (runner, job) = (state.runner.clone(), schedule.job(None));
    Ok(blocking(move || runner.check_issuable(&job)).await?)
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_master("listing schedules")?;
    let account = caller.account_id();
    let all = state
        .store
        .read_async(move |conn| schedules::list(conn, account))
        .await?;
    let items: Vec<Value> = all
        .iter()
        .map(|s| schedule_json(s, &caller.account.name))
        .collect();
    Ok(Json(json!({ "schedules": items })))
}

/// Creates a schedule; the answer's `start` is its first scheduled time (null without a cron).
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    caller.require_master("creating a schedule")?;
    let account = caller.account_id();
    let (name, settings) = change_from(&params, Some(&name))?.into_new()?;
    let draft = Schedule {
        id: 0,
        account_id: account,
        name: name.clone(),
        settings: settings.clone(),
        created_at: 0,
        next_time: None,
    };
    check_as_job(&state, &draft).await?;
    let made = state
        .store
        .write_async(move |tx| schedules::create(tx, account, &name, &settings))
        .await?;
    let mut answer = schedule_json(&made, &caller.account.name);
    answer["start"] = made.next_time.map(iso).unwrap_or(Value::Null);
    Ok(Json(answer))
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    caller.require_master("updating a schedule")?;
    let account = caller.account_id();
    let change = change_from(&params, None)?;
    let mut changed = {
        let name = name.clone();
        state
            .store
            .read_async(move |conn| schedules::get(conn, account, &name))
            .await?
    };
    change.apply(&mut changed);
    check_as_job(&state, &changed).await?;
    let updated = state
        .store
        .write_async(move |tx| schedules::update(tx, account, &name, changed))
        .await?;
    Ok(Json(schedule_json(&updated, &caller.account.name)))
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_master("deleting a schedule")?;
    let account = caller.account_id();
    let gone = state
        .store
        .write_async(move |tx| schedules::delete(tx, account, &name))
        .await?;
    Ok(Json(schedule_json(&gone, &caller.account.name)))
}

/// Runs the schedule now for `time` (Unix seconds, or a date the toolbelt would send), `num`
/// times along its cron (at most 10); answers the jobs with their scheduled times.
async fn run(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, time)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    caller.require_master("running a schedule")?;
    let account = caller.account_id();
    let time = parse_run_time(&time)?;
    let num = params.int("num")?.unwrap_or(1);
    let schedule = state
        .store
        .read_async(move |conn| schedules::get(conn, account, &name))
        .await?;
    let times = schedules::run_times(&schedule, time, num)?;
    let mut jobs = Vec::new();
    for scheduled_time in times {
        let id = state.runner.issue_scheduled(&schedule, scheduled_time).await?;
        jobs.push(json!({
            "job_id": id,
            "type": schedule.settings.job_type,
            "scheduled_at": td_timestamp(scheduled_time),
        }));
    }
    Ok(Json(json!({ "jobs": jobs })))
}

fn parse_run_time(text: &str) -> Result<i64, Error> {
    if let Ok(secs) = text.trim().parse::<i64>() {
        return Ok(secs);
    }
    td_model::time::parse_time(text).map_err(|_| {
        Error::invalid(format!(
            "time '{text}' is not a time: give Unix seconds or 'YYYY-MM-DD HH:MM:SS'"
        ))
    })
}

/// The schedule's runs, newest first, `from` to `to` (0 and 20 by default), each a job with its
/// `scheduled_at`.
async fn history(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    caller.require_master("reading a schedule's history")?;
    let account = caller.account_id();
    let from = params.int("from")?.unwrap_or(0).max(0);
    let to = params.int("to")?.unwrap_or(from + 20).max(from);
    let (count, runs) = state
        .store
        .read_async(move |conn| {
            let schedule = schedules::get(conn, account, &name)?;
            jobs::of_schedule(conn, schedule.id, from, to)
        })
        .await?;
    let base = base_url(&headers);
    let history: Vec<Value> = runs
        .iter()
        .map(|job| show_json(job, &caller.account.name, &base))
        .collect();
    Ok(Json(
        json!({ "history": history, "count": count, "from": from, "to": to }),
    ))
}
