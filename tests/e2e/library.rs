//! The write protocols as library calls, against an in-process td-local: the session driver
//! (upload → freeze → perform → commit, and what it does with a session found half way) and the
//! replace protocol (load a temp table, swap it in). The end-to-end tests reach them only through
//! the binary; here each step's outcome is read directly.

use serde_json::{json, Value};
use td_result_export::internals::{
    drive, replace, ExportId, Load, Made, Moved, Payload, PhaseCell, PollPolicy, SessionAction, SessionRef,
    TdClient, TransferError,
};

use crate::support::{sorted, TdLocalRun};

fn records(tag: &str, n: i64) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": i, "tag": tag, "time": 1_700_000_000 + i}))
        .collect()
}

const SCHEMA: &str = r#"[["id","long"],["tag","string"]]"#;

fn schema() -> Value {
    serde_json::from_str(SCHEMA).unwrap()
}

/// Uploads `rows` as one part of session `name`, as the stream engine's upload does.
async fn upload(client: &TdClient, name: String, rows: &[Value]) -> Result<Moved, TransferError> {
    let body = td_local::internals::gzip_msgpack(rows).unwrap();
    let bytes_out = body.len() as u64;
    client
        .upload_part(&name, "part_000000", Payload::from(bytes::Bytes::from(body)))
        .await?;
    Ok(Moved {
        rows: rows.len() as u64,
        parts: 1,
        bytes_in: bytes_out,
        bytes_out,
    })
}

fn poll() -> PollPolicy {
    PollPolicy::default().scaled(0.001)
}

struct Fixture {
    td: TdLocalRun,
    client: TdClient,
    poll: PollPolicy,
    made: Made,
    phase: PhaseCell,
}

impl Fixture {
    fn new() -> Fixture {
        let td = TdLocalRun::start();
        td.create_database(2, "dstdb");
        let client = td.client(2);
        Fixture {
            td,
            client,
            poll: poll(),
            made: Made::default(),
            phase: PhaseCell::default(),
        }
    }

    /// Loading `dstdb.loaded`.
    fn load(&self, resume_now: bool, rows: Option<u64>) -> Load<'_> {
        Load {
            client: &self.client,
            database: "dstdb",
            table: "loaded",
            poll: &self.poll,
            resume_now,
            rows_expected: rows,
            made: &self.made,
            phase: &self.phase,
        }
    }

    fn session<'a>(&'a self, name: &'a str, resume_now: bool, rows: Option<u64>) -> SessionRef<'a> {
        SessionRef {
            load: self.load(resume_now, rows),
            name,
        }
    }
}

#[test]
fn the_session_driver_makes_uploads_performs_and_commits_a_fresh_session() {
    let fx = Fixture::new();
    let rows = records("fresh", 3);
    let committed = fx.td.rt.block_on(async {
        fx.client.create_table("dstdb", "loaded").await.unwrap();
        let s = fx.session("tdre_fresh", false, Some(3));
        drive(&s, |name| upload(&fx.client, name, &rows), &schema()).await
    });
    let committed = committed.expect("the load commits");
    assert_eq!((committed.rows, committed.by_this_run), (3, true));
    assert_eq!(committed.uploaded.map(|m| m.rows), Some(3));
    assert_eq!(fx.td.rows(2, "dstdb", "loaded"), Some(sorted(rows)));
}

#[test]
fn the_session_driver_commits_a_performed_session_it_resumes_without_uploading_again() {
    let fx = Fixture::new();
    let rows = records("resumed", 4);
    let committed = fx.td.rt.block_on(async {
        fx.client.create_table("dstdb", "loaded").await.unwrap();
        fx.client
            .create_session("tdre_resumed", "dstdb", "loaded")
            .await
            .unwrap();
        upload(&fx.client, "tdre_resumed".into(), &rows).await.unwrap();
        fx.client
            .session_action("tdre_resumed", SessionAction::Freeze)
            .await
            .unwrap();
        fx.client
            .session_action("tdre_resumed", SessionAction::Perform)
            .await
            .unwrap();
        // An earlier run's perform, left running or done: the driver waits for it and commits.
        let s = fx.session("tdre_resumed", true, Some(4));
        drive(
            &s,
            |_| async { unreachable!("a performed session is not uploaded again") },
            &schema(),
        )
        .await
    });
    let committed = committed.expect("the resumed load commits");
    assert_eq!((committed.rows, committed.by_this_run), (4, true));
    assert!(committed.uploaded.is_none(), "nothing uploaded by this call");
    assert_eq!(fx.td.rows(2, "dstdb", "loaded"), Some(sorted(rows)));
}

#[test]
fn the_session_driver_reports_a_committed_session_as_done_and_writes_nothing() {
    let fx = Fixture::new();
    let rows = records("once", 2);
    let (first, again) = fx.td.rt.block_on(async {
        fx.client.create_table("dstdb", "loaded").await.unwrap();
        let s = fx.session("tdre_once", false, Some(2));
        let first = drive(&s, |name| upload(&fx.client, name, &rows), &schema())
            .await
            .expect("the first load commits");
        let again = drive(
            &fx.session("tdre_once", true, Some(2)),
            |_| async { unreachable!("a committed session is not uploaded again") },
            &schema(),
        )
        .await
        .expect("the second call finds it done");
        (first, again)
    });
    assert!(first.by_this_run);
    assert_eq!((again.rows, again.by_this_run), (2, false));
    assert_eq!(
        fx.td.rows(2, "dstdb", "loaded"),
        Some(sorted(rows)),
        "the rows once, not twice"
    );
}

#[test]
fn replace_swaps_the_loaded_rows_in_and_leaves_no_temp_table() {
    let fx = Fixture::new();
    fx.td.insert(2, "dstdb", "loaded", &records("old", 5));
    let rows = records("new", 3);
    let written = fx.td.rt.block_on(async {
        replace(
            &fx.load(false, Some(3)),
            &ExportId::new("library-replace".into(), "loaded"),
            &schema(),
            |name| upload(&fx.client, name, &rows),
        )
        .await
    });
    let written = written.expect("the replace succeeds");
    assert_eq!((written.rows, written.already_done), (3, false));
    assert_eq!(fx.td.rows(2, "dstdb", "loaded"), Some(sorted(rows)));
    assert_eq!(fx.td.tables(2, "dstdb"), ["loaded"], "the temp table is gone");
}

#[test]
fn a_replace_called_again_with_its_key_finds_it_done_and_writes_nothing() {
    let fx = Fixture::new();
    fx.td.insert(2, "dstdb", "loaded", &records("old", 5));
    let rows = records("new", 3);
    let again = fx.td.rt.block_on(async {
        let t = fx.load(false, Some(3));
        let id = ExportId::new("library-once".into(), "loaded");
        replace(&t, &id, &schema(), |name| upload(&fx.client, name, &rows))
            .await
            .expect("the first replace succeeds");
        replace(&t, &id, &schema(), |_| async {
            unreachable!("a replace done is not loaded again")
        })
        .await
    });
    let again = again.expect("the second call succeeds");
    assert!(again.already_done, "{again:?}");
    assert_eq!(fx.td.rows(2, "dstdb", "loaded"), Some(sorted(rows)));
}
