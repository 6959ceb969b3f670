//! td-local's bulk-import state machine against a small model of TD's (docs/td-semantics.md):
//! random sequences of create, upload, freeze, unfreeze, perform, a perform that dies (killed),
//! commit and delete, each answered as the model says, with the session's status, its
//! `valid_records` and the table's rows checked after every step.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::bulk_import::create_table;
use crate::{gzip_msgpack, Server};

#[derive(Debug, Clone)]
enum Op {
    Create,
    Upload {
        part: u8,
        rows: u8,
    },
    Freeze,
    Unfreeze,
    /// A perform that runs to its end.
    Perform,
    /// A perform job that dies without finishing (then killed): TD leaves the session
    /// `performing` under it (embulk-output-td PR #133).
    DeadPerform,
    Commit,
    Delete,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Create),
        4 => (0u8..3, 1u8..20).prop_map(|(part, rows)| Op::Upload { part, rows }),
        2 => Just(Op::Freeze),
        1 => Just(Op::Unfreeze),
        3 => Just(Op::Perform),
        2 => Just(Op::DeadPerform),
        3 => Just(Op::Commit),
        1 => Just(Op::Delete),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Uploading { frozen: bool },
    Performing,
    Ready,
    Committed,
}

impl Phase {
    fn status(self) -> &'static str {
        match self {
            Phase::Uploading { .. } => "uploading",
            Phase::Performing => "performing",
            Phase::Ready => "ready",
            Phase::Committed => "committed",
        }
    }
}

/// TD's session as the model sees it.
#[derive(Debug, Default)]
struct Model {
    session: Option<(Phase, BTreeMap<u8, u8>)>,
    /// Rows the table holds: every commit's parts.
    table_rows: usize,
}

/// What the model expects of one call: the HTTP status (2xx as 200).
impl Model {
    fn apply(&mut self, op: &Op) -> u16 {
        let Some((phase, parts)) = &mut self.session else {
            return match op {
                Op::Create => {
                    self.session = Some((Phase::Uploading { frozen: false }, BTreeMap::new()));
                    200
                }
                // No session: nothing to act on (a dead perform cannot be staged either).
                Op::DeadPerform => 0,
                _ => 404,
            };
        };
        match (op, *phase) {
            (Op::Create, _) => 409,
            (Op::Upload { part, rows }, Phase::Uploading { frozen: false }) => {
                parts.insert(*part, *rows);
                200
            }
            (Op::Freeze, Phase::Uploading { .. }) => {
                *phase = Phase::Uploading { frozen: true };
                200
            }
            (Op::Unfreeze, Phase::Uploading { .. }) => {
                *phase = Phase::Uploading { frozen: false };
                200
            }
            // A perform is a new trial from uploading, performing (a dead one) or ready.
            (Op::Perform, Phase::Uploading { .. } | Phase::Performing | Phase::Ready) => {
                *phase = Phase::Ready;
                200
            }
            (Op::DeadPerform, Phase::Uploading { .. } | Phase::Ready) => {
                *phase = Phase::Performing;
                200
            }
            (Op::DeadPerform, _) => 0,
            (Op::Commit, Phase::Ready) => {
                self.table_rows += parts.values().map(|&r| r as usize).sum::<usize>();
                *phase = Phase::Committed;
                200
            }
            (Op::Delete, _) => {
                self.session = None;
                200
            }
            _ => 409,
        }
    }

    fn valid_records(&self) -> Option<usize> {
        match &self.session {
            Some((Phase::Ready, parts)) => Some(parts.values().map(|&r| r as usize).sum()),
            _ => None,
        }
    }
}

/// The rows of part `part`: `rows` records, distinct from every other part's.
fn part_records(case: usize, part: u8, rows: u8) -> Vec<Value> {
    (0..rows)
        .map(|i| json!({"time": 1_700_000_000 + i as i64, "case": case as i64, "part": part as i64, "i": i as i64}))
        .collect()
}

async fn wait_while_performing(s: &Server, key: &str, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, shown) = s.get(key, &format!("/v3/bulk_import/show/{name}")).await;
        assert_eq!(status, 200, "{shown}");
        if shown["status"] != "performing" {
            return shown;
        }
        assert!(Instant::now() < deadline, "perform of {name} never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `op` against td-local; returns the HTTP status class it answered (2xx as 200; 0 when
/// the op was not applicable, as the model says).
async fn run(s: &Server, case: usize, name: &str, table: &str, op: &Op, expected: u16) -> u16 {
    let key = s.master(0);
    let answer = |status: reqwest::StatusCode| {
        if status.is_success() {
            200
        } else {
            status.as_u16()
        }
    };
    match op {
        Op::Create => answer(
            s.post(&key, &format!("/v3/bulk_import/create/{name}/sm_db/{table}"), &[])
                .await
                .0,
        ),
        Op::Upload { part, rows } => {
            let body = gzip_msgpack(&part_records(case, *part, *rows));
            answer(
                s.put(&key, &format!("/v3/bulk_import/upload_part/{name}/p{part}"), body)
                    .await
                    .0,
            )
        }
        Op::Freeze | Op::Unfreeze | Op::Commit | Op::Delete => {
            let verb = match op {
                Op::Freeze => "freeze",
                Op::Unfreeze => "unfreeze",
                Op::Commit => "commit",
                _ => "delete",
            };
            answer(
                s.post(&key, &format!("/v3/bulk_import/{verb}/{name}"), &[])
                    .await
                    .0,
            )
        }
        Op::Perform => {
            let code = answer(
                s.post(&key, &format!("/v3/bulk_import/perform/{name}"), &[])
                    .await
                    .0,
            );
            if code == 200 {
                wait_while_performing(s, &key, name).await;
            }
            code
        }
        Op::DeadPerform => {
            if expected == 0 {
                return 0;
            }
            let job = s.td.inspect().interrupt_perform(1, name).expect("session exists");
            let (status, body) = s.post(&key, &format!("/v3/job/kill/{job}"), &[]).await;
            assert!(status.is_success(), "{body}");
            200
        }
    }
}

static CASES: AtomicUsize = AtomicUsize::new(0);

fn check_sequence(rt: &tokio::runtime::Runtime, s: &Server, ops: &[Op]) -> Result<(), TestCaseError> {
    let case = CASES.fetch_add(1, Ordering::Relaxed);
    let (name, table) = (format!("sm_{case}"), format!("t_{case}"));
    create_table(s, 0, "sm_db", &table);
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        let expected = model.apply(op);
        let got = rt.block_on(run(s, case, &name, &table, op, expected));
        let context = format!("step {step} {op:?} after {:?}", &ops[..step]);
        prop_assert_eq!(got, expected, "{}", context);
        let (status, shown) = rt.block_on(s.get(&s.master(0), &format!("/v3/bulk_import/show/{name}")));
        match &model.session {
            None => prop_assert_eq!(status.as_u16(), 404, "{}: {}", context, shown),
            Some((phase, _)) => {
                prop_assert_eq!(
                    shown["status"].as_str(),
                    Some(phase.status()),
                    "{}: {}",
                    context,
                    shown
                );
                if let Phase::Uploading { frozen } = phase {
                    prop_assert_eq!(shown["upload_frozen"].as_bool(), Some(*frozen), "{}", context);
                }
            }
        }
        if let Some(valid) = model.valid_records() {
            prop_assert_eq!(
                shown["valid_records"].as_u64(),
                Some(valid as u64),
                "{}: {}",
                context,
                shown
            );
            prop_assert_eq!(shown["error_records"].as_u64(), Some(0), "{}", context);
        }
        let rows = s.td.inspect().row_count(1, "sm_db", &table).expect("table rows");
        prop_assert_eq!(rows as usize, model.table_rows, "{}: rows in the table", context);
    }
    Ok(())
}

#[test]
fn the_bulk_import_state_machine_follows_tds_model_under_random_sequences() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(Server::start());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..14), |ops| {
        check_sequence(&rt, &s, &ops)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
