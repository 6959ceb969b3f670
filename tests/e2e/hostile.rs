//! Hostile input, as an attacker or an unlucky user writes it: every case exits 2 with a message
//! naming the field (pinned in `snapshots/`), sends no request at all, ends in bounded time and
//! memory, never panics, and prints no secret.

use crate::support::{cli_snapshots, fake_key, slug, TdLocalRun};

/// One hostile spec: its text (`{URL}` is a td:// URL into td-local's account 2, `{HOST}` its
/// host), and extra command-line arguments.
struct Case {
    name: &'static str,
    spec: String,
    args: Vec<String>,
}

fn case(name: &'static str, spec: impl Into<String>) -> Case {
    Case {
        name,
        spec: spec.into(),
        args: Vec::new(),
    }
}

fn cases() -> Vec<Case> {
    let job = "job_id: '1'\ntd: {endpoint: 'http://{HOST}', apikey: '${secret:source_key}'}\n";
    let mut out = vec![
        case("time 1e10", format!("{job}result_url: {{URL}}\nresult_settings: {{time: 1e10}}\n")),
        case("time 1e30", format!("{job}result_url: {{URL}}\nresult_settings: {{time: 1e30}}\n")),
        case("time beyond u64", format!("{job}result_url: {{URL}}\nresult_settings: {{time: 17000000000000000000}}\n")),
        case("mode given twice", format!("{job}result_url: {{URL}}\nresult_settings:\n  mode: append\n  mode: replace\n")),
        case("result_url given twice", format!("{job}result_url: {{URL}}\nresult_url: td://@/other_db/other_t\n")),
        case("td given twice", format!("{job}td: {{endpoint: api.treasuredata.com}}\nresult_url: {{URL}}\n")),
        case(
            "a key twice in result_settings JSON text",
            format!("{job}result_connection: c\nresult_settings: '{{\"database\": \"db_1\", \"table\": \"t_1\", \"mode\": \"append\", \"mode\": \"replace\"}}'\n"),
        ),
        case("mode twice in the URL", format!("{job}result_url: '{{URL}}?mode=replace&mode=append'\n")),
        case("job_id 1e5", "job_id: 1e5\nresult_url: td://@/db_1/t_1\n"),
        case("_retry 1e3", format!("{job}result_url: {{URL}}\n_retry: 1e3\n")),
        case("_retry interval of years", format!("{job}result_url: {{URL}}\n_retry: {{limit: 1, interval: 100000000}}\n")),
        case("a key with an @", "job_id: '1'\ntd: {endpoint: 'http://{HOST}', apikey: '1/ab@cd'}\nresult_url: {URL}\n"),
        case("a key with a slash too many", "job_id: '1'\ntd: {endpoint: 'http://{HOST}', apikey: '1/ab/cd'}\nresult_url: {URL}\n"),
        case("deep nesting", format!("{job}result_url: {{URL}}\nx: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000))),
        case("an alias", format!("{job}result_url: &u {{URL}}\nresult_connection: *u\n")),
        case("query_file /dev/zero", "query_file: /dev/zero\ndatabase: sample_datasets\nresult_url: td://@/db_1/t_1\n"),
        case("query_file a directory", "query_file: /\ndatabase: sample_datasets\nresult_url: td://@/db_1/t_1\n"),
    ];
    let mut injected = case(
        "a param that adds a URL parameter",
        format!("{job}result_url: 'td://${{secret:target_key}}@{{HOST}}/dstdb/${{t}}?mode=append'\n"),
    );
    injected.args = vec!["--param".into(), "t=inj_tbl?mode=replace".into()];
    out.push(injected);
    let mut unwritable = case(
        "status in a directory that does not exist",
        format!("{job}result_url: {{URL}}\n"),
    );
    unwritable.args = vec!["--status".into(), "no/such/dir/status.json".into()];
    out.push(unwritable);
    out
}

#[test]
fn every_hostile_spec_exits_2_having_sent_nothing() {
    let td = TdLocalRun::start();
    let url = td.target_url("dstdb/t_1");
    for case in cases() {
        let spec = case.spec.replace("{URL}", &url).replace("{HOST}", &td.host());
        td.sandbox.write("spec.yml", &spec);
        td.clear_requests();
        let mut args = vec!["run".to_string(), "spec.yml".to_string()];
        if !case.args.iter().any(|a| a == "--status") {
            args.extend(["--status".into(), "status.json".into()]);
        }
        args.extend(case.args.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = td.run(&args);
        assert_eq!(out.code, 2, "{}: exit code\n{}", case.name, out.stderr);
        assert!(
            td.requests().is_empty(),
            "{}: requests were sent: {:?}",
            case.name,
            td.requests()
        );
        // The first problem (after the count, when there are several).
        let mut lines = out.stderr.lines();
        let first_line = match lines.next().unwrap_or_default() {
            count if count.ends_with("problems in the spec:") => {
                format!("error: {}", lines.next().unwrap_or_default().trim())
            }
            line => line.to_string(),
        };
        let first_line: String = first_line.chars().take(400).collect();
        let sandbox = td.sandbox.path().display().to_string();
        cli_snapshots(&[(&sandbox, "[SANDBOX]")]).bind(|| {
            insta::assert_snapshot!(format!("hostile__{}", slug(case.name)), first_line);
        });
    }
}

#[test]
fn a_50_mb_spec_is_refused_without_being_read_whole() {
    let td = TdLocalRun::start();
    let mut spec = String::from("job_id: '1'\nresult_url: td://@/db_1/t_1\n");
    let key_lines: String = (0..3_000_000).map(|i| format!("k{i}: {i}\n")).collect();
    spec.push_str(&key_lines);
    td.sandbox.write("spec.yml", &spec);
    let out = td.run(&["validate", "spec.yml"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("it is larger than 1048576 bytes"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_well_formed_key_passes_the_shape_check() {
    let td = TdLocalRun::start();
    td.sandbox.write(
        "spec.yml",
        &format!(
            "job_id: '1'\ntd: {{endpoint: 'http://{}', apikey: '{}'}}\nresult_url: td://@/db_1/t_1\n",
            td.host(),
            fake_key(3, 7)
        ),
    );
    td.run(&["validate", "spec.yml"]).expect_code(0);
}

/// A server that answers every request with `status` and a body that never ends (no
/// Content-Length, closed only when the client goes); returns its `host:port`.
fn endless_server(status: u16) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                );
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let block = vec![b'['; 64 * 1024];
                while stream.write_all(&block).is_ok() {}
            });
        }
    });
    addr
}

/// An endpoint whose answers never end (a misconfigured proxy, a hostile server): the answer
/// is read up to a bound and the run ends, in bounded time and memory, saying what it met.
#[test]
fn an_endless_answer_is_read_to_a_bound_and_the_run_ends() {
    for (status, expected) in [(200, "longer than 64 MiB"), (500, "answered 500")] {
        let host = endless_server(status);
        let sandbox = crate::support::Sandbox::new();
        sandbox.write(
            "spec.yml",
            &format!(
                "job_id: '1'\ntd: {{endpoint: 'http://{host}', apikey: '{}'}}\nresult_url: 'td://{}@{host}/db_1/t_1'\n",
                fake_key(1, 1),
                fake_key(2, 2)
            ),
        );
        let started = std::time::Instant::now();
        let out = sandbox
            .cmd()
            .args(["run", "spec.yml", "--status", "status.json"])
            .env(crate::support::FAST.0, crate::support::FAST.1)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(1 | 3)),
            "{status}: {:?}\n{stderr}",
            out.status
        );
        assert!(stderr.contains(expected), "{status}: {stderr}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{status}: {:?}",
            started.elapsed()
        );
    }
}

/// `--status` at something that is not a file (a FIFO, a link to a device, a directory) is
/// refused at once with exit 2, without reading it or sending anything.
#[test]
fn a_status_path_that_is_not_a_regular_file_is_refused_at_once() {
    let td = TdLocalRun::start();
    let spec = td.job_spec("1", "dstdb/t_1?mode=append");
    td.sandbox.write("spec.yml", &spec);
    let fifo = td.sandbox.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::os::unix::fs::symlink("/dev/zero", td.sandbox.path().join("zero")).unwrap();
    std::fs::create_dir(td.sandbox.path().join("dir")).unwrap();
    for status in ["fifo", "zero", "dir"] {
        td.clear_requests();
        let started = std::time::Instant::now();
        let out = td.run(&["run", "spec.yml", "--status", status]);
        out.expect_code(2);
        assert!(
            out.stderr.contains("it is not a regular file"),
            "{status}: {}",
            out.stderr
        );
        assert!(td.requests().is_empty(), "{status}: requests were sent");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
