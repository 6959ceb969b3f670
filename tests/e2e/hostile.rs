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
        let first_line = out.stderr.lines().next().unwrap_or_default().to_string();
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
