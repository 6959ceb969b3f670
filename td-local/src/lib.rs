//! td-local: a Treasure Data REST API v3 server on an embedded SQLite database.
//!
//! Start it in process with [`TdLocal::start`] (port 0 picks a free port), read its base URL and
//! the accounts' keys, inject faults through [`TdLocal::faults`], and [`TdLocal::shutdown`] it.
//! The `td-local` binary serves the same thing from the command line.

pub mod accounts;
pub mod bulk_import;
pub mod error;
pub mod faults;
pub mod jobs;
pub mod output;
pub mod params;
pub mod query;
pub mod records;
mod routes;
pub mod sample;
pub mod store;

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

pub use accounts::Account;
pub use faults::{FaultAction, FaultRule, Faults, LoggedRequest, Trigger};

/// How to start a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the database, results and `accounts.yml` live; created if missing.
    pub data_dir: PathBuf,
    /// Address to bind; port 0 picks a free one. Loopback by default.
    pub listen: SocketAddr,
    /// Serve the `/_td_local/` admin routes (fault injection, request log).
    pub admin: bool,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: false,
        }
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: store::Store,
    pub accounts: Arc<Vec<Arc<Account>>>,
    pub faults: Faults,
    pub data_dir: Arc<PathBuf>,
}

impl AppState {
    pub fn account(&self, id: i64) -> Option<Arc<Account>> {
        self.accounts.iter().find(|a| a.id == id).cloned()
    }
}

/// A running td-local.
pub struct TdLocal {
    addr: SocketAddr,
    state: AppState,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TdLocal {
    /// Opens (or creates) the data directory, binds, and serves in the background.
    pub async fn start(config: Config) -> anyhow::Result<TdLocal> {
        let state = open_state(&config.data_dir)?;
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let app = router(state.clone(), config.admin);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, app, stopped));
        tracing::info!(%addr, data = %config.data_dir.display(), "td-local listening");
        Ok(TdLocal {
            addr,
            state,
            stop,
            task,
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
        &self.state.accounts
    }

    pub fn data_dir(&self) -> &Path {
        &self.state.data_dir
    }

    /// The shared state, for tests that set up rows through the library.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The embedded database, for tests and tools that read what the API stored.
    pub fn store(&self) -> &store::Store {
        &self.state.store
    }

    /// Fault rules and the request log.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// Stops accepting, lets requests in flight finish, and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn open_state(dir: &Path) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(dir)?;
    let accounts = accounts::load_or_create(dir)?;
    let store = store::Store::open(dir)?;
    sample::ensure_sample_datasets(&store, &accounts)?;
    jobs::recover(&store)?;
    bulk_import::recover(&store)?;
    Ok(AppState {
        store,
        accounts: Arc::new(accounts.into_iter().map(Arc::new).collect()),
        faults: Faults::default(),
        data_dir: Arc::new(dir.to_path_buf()),
    })
}

/// Every route, with the `.json` suffix stripping, the request log and fault injection around them.
pub fn router(state: AppState, admin: bool) -> Router {
    let mut app = routes::api();
    if admin {
        app = app.merge(faults::admin_routes());
    }
    app.fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            faults::middleware,
        ))
        .with_state(state)
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
