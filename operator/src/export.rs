//! One export, start to end: connect the accounts, get the source job, map its columns, move the
//! rows with the chosen engine, and keep the status document up to date all along.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::progress::{Display, Reporter};
use crate::resolve::{Account, Endpoint, Source, TargetAccount, TdUrl};
use crate::retry::RetryPolicy;
use crate::source::{job_start_time, result_schema, wait_for_job, SourceError};
use crate::spec::{Mode, Transfer};
use crate::status::{Attempt, ColumnInfo, ErrorInfo, StatusDoc, StatusFile, Submitting, TargetInfo};
use crate::td::{http_client, Job, TdClient, TdError};
use crate::transfer::columns::{is_integer_type, map_columns, td_schema, MappedColumn};
use crate::transfer::server::{self, Destination};
use crate::transfer::stream::{pipe, Moved, Progress};
use crate::transfer::transcode::{TimeFill, Transcoder};
use crate::transfer::{self, session_name, TransferError, Written};
use crate::{exit, ExportPlan};

/// Why an export failed; each maps to an exit code and a class for the status document.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error("{0}")]
    Td(#[from] TdError),
    #[error("{message}")]
    Result { message: String },
    #[error("result_connection '{name}': {problem}")]
    Connection { name: String, problem: String },
    #[error("starting the embedded td-local in {dir}: {message}")]
    Local { dir: String, message: String },
    #[error("interrupted by {0}; the export can be run again safely")]
    Interrupted(&'static str),
}

impl ExportError {
    pub fn exit_code(&self) -> i32 {
        if self.is_transient() {
            return exit::TRANSIENT;
        }
        match self {
            ExportError::Transfer(
                TransferError::ReplaceNeedsMaster { .. } | TransferError::WriteOnlyCannotCreate { .. },
            )
            | ExportError::Connection { .. }
            | ExportError::Local { .. } => exit::INVALID,
            _ => exit::FAILED,
        }
    }

    /// Whether running again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ExportError::Source(SourceError::Td(e)) | ExportError::Td(e) => e.is_transient(),
            ExportError::Transfer(e) => e.is_transient(),
            ExportError::Interrupted(_) => true,
            _ => false,
        }
    }

    /// A short class name for the status document.
    pub fn class(&self) -> &'static str {
        match self {
            ExportError::Source(SourceError::JobFailed { .. }) => "SourceJobFailed",
            ExportError::Source(SourceError::BadSchema { .. }) => "BadResultSchema",
            ExportError::Source(SourceError::Td(e)) | ExportError::Td(e) => td_class(e),
            ExportError::Transfer(TransferError::Td(e)) => td_class(e),
            ExportError::Transfer(TransferError::Rejected { .. }) => "RejectedRows",
            ExportError::Transfer(TransferError::ReplaceNeedsMaster { .. }) => "ReplaceNeedsMasterKey",
            ExportError::Transfer(TransferError::WriteOnlyCannotCreate { .. }) => "WriteOnlyCannotCreate",
            ExportError::Transfer(TransferError::DatabaseMissing { .. }) => "DatabaseNotFound",
            ExportError::Transfer(TransferError::Verify { .. }) => "VerificationFailed",
            ExportError::Transfer(_) => "TransferFailed",
            ExportError::Result { .. } => "ResultNotExportable",
            ExportError::Connection { .. } => "ConnectionNotFound",
            ExportError::Local { .. } => "LocalServerFailed",
            ExportError::Interrupted(_) => "Interrupted",
        }
    }
}

fn td_class(e: &TdError) -> &'static str {
    match e.status() {
        Some(401) => "AuthError",
        Some(403) => "ForbiddenError",
        Some(404) => "NotFoundError",
        Some(409) => "AlreadyExistsError",
        Some(400 | 422) => "BadRequestError",
        Some(_) => "ApiError",
        None => "NetworkError",
    }
}

/// The accounts, connected.
struct Connected {
    source: TdClient,
    target: Option<TdClient>,
    /// The target endpoint as configured, for the status document and the idempotency key.
    target_endpoint: String,
    target_is_local: bool,
    /// For the server engine.
    destination: Option<Destination>,
    _local: Option<td_local::TdLocal>,
}

/// Runs the export with whole-task retries (`_retry`), updating `doc` and writing it to `file`.
pub async fn run(
    plan: &ExportPlan,
    doc: Arc<Mutex<StatusDoc>>,
    file: &StatusFile,
    display: Display,
) -> Result<(), ExportError> {
    let mut previous = file.previous();
    let mut attempt = 0u32;
    loop {
        let at = crate::status::now_rfc3339();
        let result = run_once(plan, &doc, file, previous.as_ref(), display).await;
        let (outcome, message) = match &result {
            Ok(()) => ("success".to_string(), None),
            Err(e) => (e.class().to_string(), Some(e.to_string())),
        };
        lock(&doc).attempts.push(Attempt { at, outcome, message });
        match result {
            Err(e) if e.is_transient() && attempt < plan.retry.limit => {
                attempt += 1;
                let wait = crate::retry::scaled(plan.retry.interval_before(attempt));
                tracing::warn!(attempt, wait_s = wait.as_secs_f64(), error = %e, "retrying the export");
                write(file, &doc);
                // The next attempt resumes what this one recorded (the query job, a server export).
                previous = Some(lock(&doc).clone());
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

fn lock(doc: &Mutex<StatusDoc>) -> std::sync::MutexGuard<'_, StatusDoc> {
    doc.lock().unwrap_or_else(|p| p.into_inner())
}

fn write(file: &StatusFile, doc: &Mutex<StatusDoc>) {
    let snapshot = lock(doc).clone();
    if let Err(e) = file.write(&snapshot) {
        tracing::warn!(error = %e, "could not write the status document");
    }
}

async fn run_once(
    plan: &ExportPlan,
    doc: &Arc<Mutex<StatusDoc>>,
    file: &StatusFile,
    previous: Option<&StatusDoc>,
    display: Display,
) -> Result<(), ExportError> {
    let connected = connect(plan).await?;
    {
        let mut d = lock(doc);
        d.export.transfer = transfer_name(plan.transfer).into();
        d.export.target = Some(TargetInfo {
            endpoint: connected.target_endpoint.clone(),
            database: plan.target.database.clone(),
            table: plan.target.table.clone(),
            mode: plan.target.mode.to_string(),
        });
    }
    // A replace refuses a write-only key before any data moves (and before waiting on the source).
    if let Some(target) = &connected.target {
        if connected.target_is_local {
            target.create_database(&plan.target.database).await?;
        }
        if plan.target.mode == Mode::Replace && plan.transfer == Transfer::Stream {
            transfer::preflight_replace(target, &plan.target.database).await?;
        }
    }

    let job = source_job(plan, &connected.source, doc, file, previous).await?;
    let rows_total = job.num_records.map(|n| n.max(0) as u64);
    {
        let mut d = lock(doc);
        d.set_last_job(&job.job_id, job.num_records);
        d.export.source_job_id = Some(job.job_id.clone());
        d.export.rows_total = rows_total;
    }
    // The key names the export: a given `idempotency_key` (else the source job) and the target,
    // so one key shared by tasks writing to different tables never makes one look done.
    let export_name = plan.idempotency_key.as_deref().unwrap_or(&job.job_id);
    let key = format!(
        "{export_name}|{}|{}|{}|{}",
        connected.target_endpoint, plan.target.database, plan.target.table, plan.target.mode
    );
    lock(doc).export.idempotency_key = Some(key.clone());
    write(file, doc);

    match plan.transfer {
        Transfer::Stream => stream_export(plan, &connected, &job, &key, doc, file, display).await,
        Transfer::Server => server_export(&connected, &job, doc, file, previous).await,
    }
}

fn transfer_name(t: Transfer) -> &'static str {
    match t {
        Transfer::Stream => "stream",
        Transfer::Server => "server",
    }
}

/// Where the embedded td-local keeps its data when no directory is named.
pub const DEFAULT_LOCAL_DIR: &str = ".td-local";

/// Starts the embedded td-local when an endpoint is `local`, and builds the clients.
async fn connect(plan: &ExportPlan) -> Result<Connected, ExportError> {
    let local = match plan.uses_local() {
        true => Some(start_local(plan.local_dir.as_deref().unwrap_or(DEFAULT_LOCAL_DIR.as_ref())).await?),
        false => None,
    };
    let local_url = local.as_ref().map(|l| l.base_url());
    let base = |e: &Endpoint| match e {
        Endpoint::Url(u) => u.as_str().trim_end_matches('/').to_string(),
        Endpoint::Local => local_url.clone().expect("td-local started for a local endpoint"),
    };
    let http = http_client();
    let policy = RetryPolicy::from_env();
    let client = |account: &Account| {
        TdClient::new(
            http.clone(),
            &base(&account.endpoint),
            account.api_key.expose(),
            policy.clone(),
        )
    };
    let source = client(&plan.source_account);

    let target_account = match &plan.target.account {
        TargetAccount::Known { account, .. } => Some(account.clone()),
        // TD resolves a saved connection itself (by id): its key, masked in listings, is not needed.
        TargetAccount::Connection { .. } if plan.transfer == Transfer::Server && !plan.target.legacy_mode => {
            None
        }
        TargetAccount::Connection {
            name,
            api_key,
            endpoint,
        } => {
            lookup_connection(
                &source,
                name,
                api_key.clone(),
                endpoint.clone(),
                &plan.source_account,
            )
            .await?
        }
    };
    let target = target_account.as_ref().map(client);
    // Shown and hashed as configured ("local", not the port of this run's td-local), so the
    // idempotency key is the same on every rerun.
    let target_endpoint = target_account
        .as_ref()
        .map_or_else(|| "connection".to_string(), |a| a.endpoint.to_string());
    let target_is_local = target_account
        .as_ref()
        .is_some_and(|a| a.endpoint == Endpoint::Local);
    let destination = match plan.transfer {
        Transfer::Server => Some(destination(plan, &source, target_account.as_ref()).await?),
        Transfer::Stream => None,
    };
    Ok(Connected {
        source,
        target,
        target_endpoint,
        target_is_local,
        destination,
        _local: local,
    })
}

async fn start_local(dir: &std::path::Path) -> Result<td_local::TdLocal, ExportError> {
    td_local::TdLocal::start(td_local::Config::new(dir))
        .await
        .map_err(|e| ExportError::Local {
            dir: dir.display().to_string(),
            message: e.to_string(),
        })
}

/// Finds a connection that is not defined locally among the source account's saved results.
async fn lookup_connection(
    source: &TdClient,
    name: &str,
    api_key: Option<crate::resolve::ApiKey>,
    endpoint: Option<Endpoint>,
    source_account: &Account,
) -> Result<Option<Account>, ExportError> {
    let saved = source.saved_results().await?;
    let Some(found) = saved.into_iter().find(|r| r.name == name) else {
        return Err(ExportError::Connection {
            name: name.to_string(),
            problem:
                "not found in --connections, the spec's connections:, or the source account's saved results; \
                      define it in a connections file"
                    .into(),
        });
    };
    let (url_key, url_host) =
        TdUrl::parse_account(&found.url).map_err(|problem| ExportError::Connection {
            name: name.into(),
            problem,
        })?;
    let key = api_key
        .or(url_key)
        .unwrap_or_else(|| source_account.api_key.clone());
    if key.expose().contains('*') {
        // The account masks keys in listings: the stream engine cannot write with it.
        return Err(ExportError::Connection {
            name: name.to_string(),
            problem: "its API key is not readable from the account; set result_settings.api_key, \
                      or use transfer: server"
                .into(),
        });
    }
    let endpoint = match (endpoint, url_host) {
        (Some(e), _) => e,
        (None, Some(host)) => Endpoint::parse(&host, true)
            .map_err(|problem| ExportError::Connection {
                name: name.into(),
                problem,
            })?
            .unwrap_or_else(|| source_account.endpoint.clone()),
        (None, None) => source_account.endpoint.clone(),
    };
    Ok(Some(Account {
        endpoint,
        api_key: key,
    }))
}

/// What the server engine asks TD to write to.
async fn destination(
    plan: &ExportPlan,
    source: &TdClient,
    target: Option<&Account>,
) -> Result<Destination, ExportError> {
    let t = &plan.target;
    let connection = match &t.account {
        TargetAccount::Known { connection, .. } => connection.clone(),
        TargetAccount::Connection { name, .. } => Some(name.clone()),
    };
    if let (false, Some(name)) = (t.legacy_mode, &connection) {
        if let Some(id) = source.connection_id(name).await? {
            let mut settings = serde_json::json!({
                "user_database_name": t.database, "user_table_name": t.table, "mode": t.mode.to_string(),
            });
            if let Some(time) = t.time {
                settings["time"] = time.into();
            }
            return Ok(Destination::Connection {
                id,
                settings: settings.to_string(),
            });
        }
    }
    if let (None, None, Some(name)) = (&t.url, target, &connection) {
        return Err(ExportError::Connection {
            name: name.clone(),
            problem: "not found on the source account (/v3/connections/lookup); save it there, \
                      or define it in a connections file"
                .into(),
        });
    }
    // A td:// URL: the target's key and host (empty = the source account, as TD reads it).
    let (key, host) = match (&t.url, target) {
        (Some(url), _) => (
            url.api_key.as_ref().map(|k| k.expose().to_string()),
            url.host.clone(),
        ),
        (None, Some(account)) => (
            Some(account.api_key.expose().to_string()),
            account.endpoint.url().and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
            }),
        ),
        (None, None) => (None, None),
    };
    let mut url = format!(
        "td://{}@{}/{}/{}?mode={}",
        key.unwrap_or_default(),
        host.unwrap_or_default(),
        t.database,
        t.table,
        t.mode
    );
    if let Some(time) = t.time {
        url.push_str(&format!("&time={time}"));
    }
    Ok(Destination::Url(url))
}

/// The finished source job: waited for, or issued (with a domain key, so a rerun reuses it).
async fn source_job(
    plan: &ExportPlan,
    source: &TdClient,
    doc: &Arc<Mutex<StatusDoc>>,
    file: &StatusFile,
    previous: Option<&StatusDoc>,
) -> Result<Job, ExportError> {
    let id = match &plan.source {
        Source::Job { id } => id.clone(),
        Source::Query {
            sql,
            database,
            engine,
        } => {
            // A run that did not finish left its job in the status document: reuse it, unless
            // it failed or ran another query (the spec was fixed since).
            let unfinished = previous.filter(|p| p.state != crate::status::State::Success);
            let recorded = match unfinished.and_then(|p| p.export.source_job_id.clone()) {
                Some(id) => reusable_job(source, &id, sql, database).await?,
                None => None,
            };
            match recorded {
                Some(id) => id,
                None => {
                    let domain_key = plan.idempotency_key.as_deref().map(|k| {
                        format!(
                            "tdre-{}",
                            &transfer::key_hash(&format!("{k}|{database}|{sql}"))[..32]
                        )
                    });
                    let engine = format!("{engine:?}").to_lowercase();
                    let id = source
                        .issue_query(&engine, database, sql, domain_key.as_deref())
                        .await?;
                    tracing::info!(job_id = %id, "issued the query");
                    lock(doc).export.source_job_id = Some(id.clone());
                    write(file, doc);
                    id
                }
            }
        }
    };
    let started = Instant::now();
    let job = wait_for_job(source, &id, |job| {
        tracing::info!(job_id = %job.job_id, status = %job.status, waited_s = started.elapsed().as_secs(), "waiting for the source job");
    })
    .await?;
    Ok(job)
}

/// `id` when that job ran `sql` on `database` and has not failed: a rerun waits for it instead
/// of issuing the query again.
async fn reusable_job(
    source: &TdClient,
    id: &str,
    sql: &str,
    database: &str,
) -> Result<Option<String>, ExportError> {
    let job = match source.job(id).await {
        Ok(job) => job,
        Err(e) if e.is_status(404) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let same_query = job.query.as_deref() == Some(sql) && job.database.as_deref() == Some(database);
    Ok((same_query && !job.has_failed()).then(|| id.to_string()))
}

/// How each row gets its `time`, and the name of that choice for the status document.
fn time_fill(
    columns: &[MappedColumn],
    setting: Option<i64>,
    job: &Job,
) -> Result<(TimeFill, &'static str), ExportError> {
    if let Some(i) = columns.iter().position(|c| c.target == "time") {
        let c = &columns[i];
        if !is_integer_type(&c.source_type) {
            return Err(ExportError::Result {
                message: format!(
                    "the result's `{}` column is {}, but TD's `time` must be integer unix seconds: \
                     cast it (CAST(... AS BIGINT) or TD_TIME_PARSE(...)) or rename it in the query",
                    c.source, c.source_type
                ),
            });
        }
        return Ok((TimeFill::Column(i), "column"));
    }
    if let Some(t) = setting {
        return Ok((TimeFill::Fixed(t), "setting"));
    }
    match job_start_time(job) {
        Some(t) => Ok((TimeFill::Fixed(t), "job_start")),
        None => Err(ExportError::Result {
            message: format!(
                "the result of job {} has no `time` column and the job has no start time: set result_settings.time",
                job.job_id
            ),
        }),
    }
}

async fn stream_export(
    plan: &ExportPlan,
    connected: &Connected,
    job: &Job,
    key: &str,
    doc: &Arc<Mutex<StatusDoc>>,
    file: &StatusFile,
    display: Display,
) -> Result<(), ExportError> {
    let source = &connected.source;
    let target = connected
        .target
        .as_ref()
        .expect("stream targets are resolved to an account");
    let columns = map_columns(&result_schema(job)?);
    let (fill, time_source) = time_fill(&columns, plan.target.time, job)?;
    let schema = td_schema(&columns);
    let session = session_name(key);
    {
        let mut d = lock(doc);
        d.export.columns = columns.iter().map(ColumnInfo::from).collect();
        d.export.time_source = Some(time_source.into());
        d.export.session = Some(session.clone());
    }
    for c in columns.iter().filter(|c| c.source != c.target) {
        tracing::info!(source = %c.source, target = %c.target, "column renamed");
    }
    write(file, doc);

    let progress = Arc::new(Progress::default());
    let reporter = Reporter::new(
        display,
        job.result_size.map(|n| n.max(0) as u64),
        job.num_records.map(|n| n.max(0) as u64),
    );
    let watcher = tokio::spawn(watch_progress(
        progress.clone(),
        doc.clone(),
        file.clone(),
        reporter,
    ));
    let upload = |session: String| {
        let (source, target, job_id) = (source.clone(), target.clone(), job.job_id.clone());
        let (columns, progress) = (columns.clone(), progress.clone());
        async move {
            let body = source.job_result(&job_id, "msgpack.gz").await?;
            let moved = pipe(
                body,
                Transcoder::new(&columns, fill),
                progress,
                move |part, bytes| {
                    let (target, session) = (target.clone(), session.clone());
                    async move { target.upload_part(&session, &part, bytes).await }
                },
            )
            .await?;
            Ok::<Moved, TransferError>(moved)
        }
    };
    let (db, table) = (plan.target.database.as_str(), plan.target.table.as_str());
    let written = match plan.target.mode {
        Mode::Append => transfer::append(target, db, table, &session, &schema, upload).await,
        Mode::Replace => transfer::replace(target, db, table, key, &schema, upload).await,
    };
    watcher.abort();
    let written = written?;
    record_written(doc, &written);
    Ok(())
}

fn record_written(doc: &Mutex<StatusDoc>, w: &Written) {
    let mut d = lock(doc);
    d.export.rows = w.rows;
    d.export.bytes_in = w.moved.bytes_in;
    d.export.bytes_out = w.moved.bytes_out;
    d.export.already_done = w.already_done;
    d.export.verified = w.verified;
}

/// Copies the transfer's counters into the status document and the display while it runs.
async fn watch_progress(
    progress: Arc<Progress>,
    doc: Arc<Mutex<StatusDoc>>,
    file: StatusFile,
    mut reporter: Reporter,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut ticks = 0u64;
    loop {
        tick.tick().await;
        let (rows, bytes_in, bytes_out) = (
            progress.rows.load(Ordering::Relaxed),
            progress.bytes_in.load(Ordering::Relaxed),
            progress.bytes_out.load(Ordering::Relaxed),
        );
        reporter.update(rows, bytes_in, bytes_out);
        ticks += 1;
        // The document is rewritten once a second, the display four times.
        if ticks % 4 == 0 {
            {
                let mut d = lock(&doc);
                d.export.rows = rows;
                d.export.bytes_in = bytes_in;
                d.export.bytes_out = bytes_out;
            }
            write(&file, &doc);
        }
    }
}

async fn server_export(
    connected: &Connected,
    job: &Job,
    doc: &Arc<Mutex<StatusDoc>>,
    file: &StatusFile,
    previous: Option<&StatusDoc>,
) -> Result<(), ExportError> {
    let destination = connected
        .destination
        .as_ref()
        .expect("server exports have a destination");
    // An earlier run of the same source job that did not finish: poll the export it recorded,
    // or, if it died while submitting, the export TD has linked to the job since.
    let unfinished = previous
        .filter(|p| p.state != crate::status::State::Success)
        .filter(|p| p.export.source_job_id.as_deref() == Some(job.job_id.as_str()));
    let recorded = unfinished.and_then(|p| {
        p.export.export_job_id.clone().or_else(|| {
            let before = p.export.submitting.as_ref()?.linked_before.as_ref();
            job.linked_result_export_job_id
                .clone()
                .filter(|now| Some(now) != before)
        })
    });
    match &recorded {
        Some(id) => tracing::info!(export_job_id = %id, "resuming the export job an earlier run submitted"),
        None => {
            let linked_before = job.linked_result_export_job_id.clone();
            lock(doc).export.submitting = Some(Submitting { linked_before });
            write(file, doc);
        }
    }
    let exported = server::export(&connected.source, job, destination, recorded, |id| {
        lock(doc).export.export_job_id = Some(id.to_string());
        write(file, doc);
    })
    .await?;
    let mut d = lock(doc);
    d.export.rows = exported.num_records.unwrap_or_default().max(0) as u64;
    Ok(())
}

/// The error part of the status document.
pub fn error_info(e: &ExportError) -> ErrorInfo {
    let mut backtrace = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        backtrace.push(s.to_string());
        source = s.source();
    }
    ErrorInfo {
        class: e.class().into(),
        message: e.to_string(),
        retryable: e.is_transient(),
        backtrace,
    }
}
