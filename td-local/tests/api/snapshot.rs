//! Queries read one consistent snapshot: the tables a query names and the rows under them come
//! from the same committed state, whatever renames and replaces run meanwhile.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::Server;

/// Rows in every generation of the table.
const N: usize = 40;
/// Observations each reader makes at the least (and it keeps reading while the writer works).
const READS_PER_READER: usize = 1_000;
/// Renames and replaces the writer makes at the least (and it keeps going while readers read).
const MIN_CHANGES: usize = 60;

fn generation(tag: &str) -> Vec<Value> {
    (0..N)
        .map(|i| json!({"time": 1_700_000_000 + i as i64, "tag": tag}))
        .collect()
}

/// Polls the store until export job `id` has finished; returns its status.
async fn finished(s: &Server, id: i64) -> String {
    loop {
        let job = s.td.inspect().job(id).unwrap();
        if !job.status.is_active() {
            return job.status.as_str().to_string();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_reads_one_snapshot_while_the_table_is_renamed_over_and_replaced() {
    let s = Server::start().await;
    let account = s.td.accounts()[0].id;
    let key = s.master(0);
    let inspect = s.td.inspect();
    inspect
        .insert(account, "snap_db", "snap_t", &generation("g0"))
        .unwrap();

    let writer_done = Arc::new(AtomicBool::new(false));
    let readers_done = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (inspect, writer_done, readers_done) =
                (inspect.clone(), writer_done.clone(), readers_done.clone());
            tokio::task::spawn_blocking(move || {
                let mut seen = Vec::new();
                while seen.len() < READS_PER_READER || !writer_done.load(Ordering::SeqCst) {
                    let (rows, _) = inspect
                        .query(
                            account,
                            "snap_db",
                            "SELECT COUNT(1), COUNT(DISTINCT tag) FROM snap_t",
                        )
                        .unwrap();
                    seen.push(rows[0].clone());
                }
                readers_done.fetch_add(1, Ordering::SeqCst);
                seen
            })
        })
        .collect();

    // Alternately: a freshly loaded table renamed over `t`, and a result exported into `t` with
    // mode=replace. Each generation has N rows with one tag.
    let mut changes = 0;
    while changes < MIN_CHANGES || readers_done.load(Ordering::SeqCst) < 2 {
        let tag = format!("g{}", changes + 1);
        if changes % 2 == 0 {
            inspect
                .insert(account, "snap_db", "staging", &generation(&tag))
                .unwrap();
            let (status, body) = s
                .post(
                    &key,
                    "/v3/table/rename/snap_db/staging/snap_t",
                    &[("overwrite", "true")],
                )
                .await;
            assert_eq!(status, 200, "{body}");
        } else {
            let rows: Vec<Value> = generation(&tag)
                .iter()
                .map(|r| json!([r["time"], r["tag"]]))
                .collect();
            let job = inspect
                .finished_job(
                    account,
                    "snap_db",
                    &[("time", "bigint"), ("tag", "varchar")],
                    &rows,
                    1,
                )
                .unwrap();
            let (status, body) = s
                .post(
                    &key,
                    &format!("/v3/job/result_export/{job}"),
                    &[("result", "td://@/snap_db/snap_t?mode=replace")],
                )
                .await;
            assert_eq!(status, 201, "{body}");
            let export: i64 = body["job_id"].as_str().unwrap().parse().unwrap();
            assert_eq!(finished(&s, export).await, "success");
        }
        changes += 1;
        if changes >= MIN_CHANGES {
            writer_done.store(true, Ordering::SeqCst);
        }
    }

    let mut observations = Vec::new();
    for reader in readers {
        observations.extend(reader.await.unwrap());
    }
    let wrong: Vec<&Value> = observations.iter().filter(|o| **o != json!([N, 1])).collect();
    assert!(
        wrong.is_empty(),
        "{} of {} observations over {changes} renames and replaces saw no generation or a mix, e.g. {:?}",
        wrong.len(),
        observations.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(observations.len() >= 2 * READS_PER_READER);
}
