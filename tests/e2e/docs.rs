//! The README's spec reference is made from the task spec's JSON Schema, so that a key added to
//! the schema and not to the README fails here. `TDRE_UPDATE_README=1 cargo test … docs::`
//! rewrites the section (the only test that writes into the source tree, and only when asked).

use serde_json::Value;

use crate::support::repo_root;

const START: &str =
    "<!-- spec:reference:start (made from schema/td_result_export.schema.json by tests/e2e/docs.rs) -->";
const END: &str = "<!-- spec:reference:end -->";

/// Every key of the task spec, dotted, with its description (in key order).
fn keys(schema: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(schema, schema, "", &mut out);
    out
}

fn walk(root: &Value, node: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    // What a key's value is: its own properties, or those of the definition it refers to
    // (directly, under `then`, or as the value of every entry of a map).
    let resolve = |v: &Value| -> Value {
        let target = v
            .get("$ref")
            .or_else(|| v.pointer("/then/$ref"))
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|p| root.pointer(p));
        target.cloned().unwrap_or_else(|| v.clone())
    };
    let Some(properties) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, sub) in properties {
        let path = format!("{prefix}{name}");
        let description = sub["description"].as_str().unwrap_or_default().to_string();
        out.push((path.clone(), description));
        walk(root, &resolve(sub), &format!("{path}."), out);
        if let Some(entry) = sub.get("additionalProperties").filter(|e| e.is_object()) {
            walk(root, &resolve(entry), &format!("{path}.NAME."), out);
        }
    }
}

fn reference() -> String {
    let text = std::fs::read_to_string(repo_root().join("schema/td_result_export.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let mut table = String::from("| key | what it is |\n|---|---|\n");
    for (key, description) in keys(&schema) {
        table.push_str(&format!("| `{key}` | {} |\n", description.replace('|', "\\|")));
    }
    table
}

#[test]
fn the_readme_spec_reference_documents_every_key_of_the_schema() {
    let path = repo_root().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (Some(start), Some(end)) = (readme.find(START), readme.find(END)) else {
        panic!("README.md has no spec reference between {START} and {END}");
    };
    let shown = &readme[start + START.len()..end];
    let made = format!("\n{}", reference());
    if std::env::var_os("TDRE_UPDATE_README").is_some() {
        let updated = format!("{}{made}{}", &readme[..start + START.len()], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        shown, made,
        "README.md's spec reference is not the schema's: run `TDRE_UPDATE_README=1 cargo test -p td-result-export --test e2e docs::`"
    );
}

#[test]
fn the_reference_reaches_nested_settings_connections_and_retry() {
    let made = reference();
    for key in [
        "`result_settings.time_column`",
        "`result_settings.api_key`",
        "`connections.NAME.api_hostname`",
        "`td.proxy.host`",
        "`_retry.interval_type`",
        "`scheduled_time`",
    ] {
        assert!(made.contains(key), "{key} missing:\n{made}");
    }
}

/// The README's td-local setup commands run as written, from an empty directory.
#[test]
fn the_readmes_td_local_setup_commands_run_as_written() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme
        .find("**Setting it up from the command line**")
        .expect("the README's setup section");
    let block = &readme[start..];
    let block = &block[block.find("```sh\n").expect("its command block") + 6..];
    let block = &block[..block.find("```").unwrap()];
    let commands: Vec<String> = block.lines().map(|l| l.trim().to_string()).collect();
    let work = tempfile::tempdir().unwrap();
    let (script, out) = crate::support::run_recipe(&commands, work.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("350.5") && stdout.contains("1200"), "{stdout}");
}
