//! Calls to TD go through the proxy the task names (`td.proxy`, as Digdag reads it) or the one the
//! environment names (`HTTP_PROXY`/`HTTPS_PROXY`, minus `NO_PROXY`), here a small forward proxy on
//! loopback that records the connections it carried.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use crate::export::{events, with_events_job};
use crate::support::{sorted, TdLocalRun};

/// A request line the proxy carried, and its `Proxy-Authorization`.
type Seen = Vec<(String, Option<String>)>;

/// A forward HTTP proxy: for each connection it reads the first request's head, records its
/// request line and `Proxy-Authorization`, connects to the absolute URI's host and relays bytes
/// both ways.
struct Proxy {
    port: u16,
    seen: Arc<Mutex<Seen>>,
}

impl Proxy {
    fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || relay(client, &log));
            }
        });
        Proxy { port, seen }
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}

fn relay(mut client: TcpStream, log: &Mutex<Seen>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or_default().to_string();
    let auth = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("Proxy-Authorization: ")
                .or_else(|| l.strip_prefix("proxy-authorization: "))
        })
        .map(str::to_string);
    log.lock().unwrap().push((line.clone(), auth));
    let target = line.split_whitespace().nth(1).unwrap_or_default();
    let host = target
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let Ok(mut upstream) = TcpStream::connect(host) else {
        return;
    };
    upstream.write_all(&head).unwrap();
    let (mut up_read, mut client_write) = (upstream.try_clone().unwrap(), client.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_read, &mut client_write);
    });
    let _ = std::io::copy(&mut client, &mut upstream);
}

fn spec(td: &TdLocalRun, job: &str, table: &str, extra_td: &str) -> String {
    format!(
        "job_id: '{job}'\ntd: {{endpoint: 'http://{}', apikey: '${{secret:source_key}}'{extra_td}}}\nresult_url: {}\n",
        td.host(),
        td.target_url(&format!("dstdb/{table}"))
    )
}

#[test]
fn td_proxy_carries_every_call_with_its_credentials() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let proxy = Proxy::start();
    let extra = format!(
        ", proxy: {{host: 127.0.0.1, port: {}, user: me, password: '${{secret:proxy_password}}'}}",
        proxy.port
    );
    let mut cmd = td.command(&["run", "spec.yml", "--status", "status.json"]);
    td.sandbox
        .write("spec.yml", &spec(&td, &job, "via_td_proxy", &extra));
    cmd.env("PROXY_PASSWORD", "s3cret-pass");
    let out = td.run_command(cmd);
    out.expect_code(0);
    assert_eq!(td.rows(2, "dstdb", "via_td_proxy"), Some(sorted(events())));
    let seen = proxy.seen();
    assert!(!seen.is_empty(), "no call went through td.proxy");
    assert!(
        seen.iter()
            .all(|(line, _)| line.contains(&format!("http://{}/v3/", td.host()))),
        "{seen:?}"
    );
    // Basic me:s3cret-pass
    assert!(
        seen.iter()
            .all(|(_, auth)| auth.as_deref() == Some("Basic bWU6czNjcmV0LXBhc3M=")),
        "{seen:?}"
    );
    assert!(!out.stderr.contains("s3cret-pass") && !out.status.to_string().contains("s3cret-pass"));
}

#[test]
fn the_environments_proxy_is_honoured_and_no_proxy_bypasses_it() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let proxy = Proxy::start();
    td.sandbox
        .write("spec.yml", &spec(&td, &job, "via_env_proxy", ""));
    let mut cmd = td.command(&["run", "spec.yml", "--status", "status.json"]);
    cmd.env("HTTP_PROXY", format!("http://127.0.0.1:{}", proxy.port));
    td.run_command(cmd).expect_code(0);
    assert_eq!(td.rows(2, "dstdb", "via_env_proxy"), Some(sorted(events())));
    let through = proxy.seen().len();
    assert!(through > 0, "HTTP_PROXY was not used");

    td.sandbox.write("spec.yml", &spec(&td, &job, "bypassed", ""));
    let mut cmd = td.command(&["run", "spec.yml", "--status", "status.json"]);
    cmd.env("HTTP_PROXY", format!("http://127.0.0.1:{}", proxy.port))
        .env("NO_PROXY", "127.0.0.1");
    td.run_command(cmd).expect_code(0);
    assert_eq!(td.rows(2, "dstdb", "bypassed"), Some(sorted(events())));
    assert_eq!(
        proxy.seen().len(),
        through,
        "NO_PROXY=127.0.0.1 bypasses the proxy"
    );
}
