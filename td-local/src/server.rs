//! A running td-local: open the data directory, bind, serve, stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::accounts::{self, Account, Accounts};
use crate::error::{Error, Result};
use crate::faults::{self, Faults};
use crate::inspect::Inspect;
use crate::lag::CountLag;
use crate::limits::Limits;
use crate::routes;
use crate::runner::Runner;
use crate::sample;
use crate::state::AppState;
use crate::store::Store;

/// How to start a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the database, results and `accounts.yml` live; created if missing.
    pub data_dir: PathBuf,
    /// Address to bind; port 0 picks a free one. Loopback by default.
    pub listen: SocketAddr,
    /// Serve the `/_td_local/` admin routes (fault injection, request log, the accounts and
    /// their keys). Each call needs `Authorization: TD1 <master key>` of one of the accounts.
    pub admin: bool,
    /// How much one request may make the server read, inflate and hold (`crate::limits`).
    pub limits: Limits,
    /// How long table counts lag a commit, rename or swap (`crate::lag`): TD's default reading.
    pub count_lag: CountLag,
    /// Whether this server lives only for one run of the operator (`endpoint: local`): another
    /// run that finds it serving the directory waits for it to stop, where it uses a lasting one
    /// (`td-local serve`, a test's server) at once.
    pub embedded: bool,
}

/// The server an embedded start found or made: its own, or one already serving the directory.
pub enum Embedded {
    Started(Box<TdLocal>),
    /// A lasting server (`td-local serve`) already serves the directory, at this base URL.
    Running(String),
}

impl Embedded {
    pub fn base_url(&self) -> String {
        match self {
            Embedded::Started(td) => td.base_url(),
            Embedded::Running(url) => url.clone(),
        }
    }
}

/// One data directory, one server: a second server on it would take the first one's running
/// jobs for leftovers of a crash and fail them (`Runner::recover`), and both would run them.
const LOCK_FILE: &str = "server.lock";
/// How often a server waiting for the data directory tries it again.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// What the lock file says about the server holding it: `lasting URL` or `embedded URL`.
fn holder(dir: &Path) -> Option<(bool, String)> {
    let text = std::fs::read_to_string(dir.join(LOCK_FILE)).ok()?;
    let (kind, url) = text.trim().split_once(' ')?;
    Some((kind == "lasting", url.to_string()))
}

/// How taking the data directory ended.
enum Locked {
    /// This process holds it (until the file is closed, whatever ends the process).
    Held(std::fs::File),
    /// A lasting server holds it, at this URL.
    Lasting(String),
}

/// Takes the data directory for this server. Another server holding it is refused
/// (`wait` false), or — for an embedded start — used when it lasts and waited for when it is
/// another run's embedded one.
async fn lock_data_dir(dir: &Path, wait: bool) -> Result<Locked> {
    use rustix::fs::{flock, FlockOperation};
    std::fs::create_dir_all(dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    let mut announced = false;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Locked::Held(file)),
            Err(rustix::io::Errno::WOULDBLOCK) if wait => {
                if let Some((true, url)) = holder(dir) {
                    tracing::info!(%url, "td-local already serves {}: using it", dir.display());
                    return Ok(Locked::Lasting(url));
                }
                if !announced {
                    tracing::warn!(
                        "another run's td-local serves {}: waiting for that run to end",
                        dir.display()
                    );
                    announced = true;
                }
                tokio::time::sleep(LOCK_RETRY).await;
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(Error::conflict(format!(
                    "another td-local already serves {}: stop it, or give another --data directory",
                    dir.display()
                )))
            }
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
    }
}

/// Says in the lock file which server holds the directory, and where.
fn announce(lock: &std::fs::File, embedded: bool, url: &str) -> Result<()> {
    use std::io::{Seek, Write};
    let mut lock = lock;
    lock.set_len(0)?;
    lock.seek(std::io::SeekFrom::Start(0))?;
    let kind = if embedded { "embedded" } else { "lasting" };
    writeln!(lock, "{kind} {url}")?;
    Ok(())
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: false,
            limits: Limits::default(),
            count_lag: CountLag::default(),
            embedded: false,
        }
    }
}

/// A running td-local.
pub struct TdLocal {
    addr: SocketAddr,
    state: AppState,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// This server's hold on its data directory.
    _lock: std::fs::File,
}

impl TdLocal {
    /// Opens (or creates) the data directory, binds, and serves in the background.
    pub async fn start(config: Config) -> Result<TdLocal> {
        match lock_data_dir(&config.data_dir, false).await? {
            Locked::Held(lock) => TdLocal::serve_locked(config, lock).await,
            Locked::Lasting(_) => unreachable!("a start that does not wait never uses another server"),
        }
    }

    /// For one run of the operator (`endpoint: local`): a lasting server already serving the
    /// directory is used; another run's embedded one is waited for; else this one starts.
    pub async fn embedded(config: Config) -> Result<Embedded> {
        let config = Config {
            embedded: true,
            ..config
        };
        match lock_data_dir(&config.data_dir, true).await? {
            Locked::Held(lock) => Ok(Embedded::Started(Box::new(
                TdLocal::serve_locked(config, lock).await?,
            ))),
            Locked::Lasting(url) => Ok(Embedded::Running(url)),
        }
    }

    async fn serve_locked(config: Config, lock: std::fs::File) -> Result<TdLocal> {
        let state = open_state(&config.data_dir, config.limits, config.count_lag)?;
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        announce(&lock, config.embedded, &format!("http://{addr}"))?;
        let app = router(state.clone(), config.admin);
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(fire_schedules(state.runner.clone(), stopped.clone()));
        let task = tokio::spawn(serve(listener, app, stopped));
        tracing::info!(%addr, data = %config.data_dir.display(), "td-local listening");
        Ok(TdLocal {
            addr,
            state,
            stop,
            task,
            _lock: lock,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn accounts(&self) -> &[Arc<Account>] {
        self.state.accounts.all()
    }

    pub fn data_dir(&self) -> &Path {
        &self.state.data_dir
    }

    /// Reads what the API stored and sets up what a test needs, through the library.
    pub fn inspect(&self) -> Inspect {
        Inspect::new(self.state.store.clone(), &self.state.data_dir)
    }

    /// The embedded database itself, for checks that [`TdLocal::inspect`] does not offer.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Fault rules and the request log.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// Issues the scheduled runs due at `at` (Unix seconds) now, as the server's own tick would
    /// once that time has come; returns their job ids. For tests that cannot wait for a cron.
    pub async fn fire_schedules_at(&self, at: i64) -> Result<Vec<i64>> {
        self.state.runner.fire_schedules(at).await
    }

    /// Stops accepting, lets requests in flight finish, and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn open_state(dir: &Path, limits: Limits, count_lag: CountLag) -> Result<AppState> {
    std::fs::create_dir_all(dir)?;
    let accounts = Accounts::new(accounts::load_or_create(dir)?);
    let store = Store::open(dir)?;
    sample::ensure_sample_datasets(&store, accounts.all())?;
    Runner::recover(&store)?;
    Ok(AppState {
        runner: Runner::new(store.clone(), dir, accounts.clone(), limits, count_lag),
        store,
        accounts,
        faults: Faults::default(),
        data_dir: Arc::new(dir.to_path_buf()),
        limits,
        count_lag,
    })
}

/// Every route, with the `.json` suffix stripping, the request log and fault injection around them.
fn router(state: AppState, admin: bool) -> Router {
    let mut app = routes::api();
    if admin {
        app = app.merge(routes::admin::routes(state.clone()));
    }
    app.fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::admin::middleware,
        ))
        .with_state(state)
}

/// How often the server looks for scheduled runs that are due.
const SCHEDULE_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Issues every scheduled run as its time (plus the schedule's delay) comes, until the server
/// stops.
async fn fire_schedules(runner: crate::runner::Runner, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SCHEDULE_TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = runner.fire_schedules(crate::store::now()).await {
                    tracing::warn!(error = %e, "scheduled runs could not be read");
                }
            }
            _ = stopped.changed() => return,
        }
    }
}

/// Serves connections until `stopped` turns true. A fault that resets the connection makes the
/// service fail, which hyper answers by closing the connection without a response.
async fn serve(listener: TcpListener, app: Router, mut stopped: watch::Receiver<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => break,
        };
        let Ok((socket, _)) = accepted else { continue };
        let _ = socket.set_nodelay(true);
        let app = app.clone();
        let mut conn_stopped = stopped.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let app = app.clone();
                async move {
                    let mut req = req.map(Body::new);
                    if let Some(uri) = routes::normalize_uri(req.uri()) {
                        *req.uri_mut() = uri;
                    }
                    let response = app.oneshot(req).await.unwrap_or_else(|e| match e {});
                    if response.extensions().get::<faults::ResetConnection>().is_some() {
                        return Err(faults::ResetConnection);
                    }
                    Ok(response)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(socket), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = conn_stopped.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    while connections.join_next().await.is_some() {}
}
