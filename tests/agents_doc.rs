//! docs/agents.md is a runnable walk-through: its shell block runs here, as
//! written, against the real binary with the quick-start configuration
//! (config/dev.toml), so the documented commands and answers stay true.

mod common;
use common::*;

/// The first ```sh block of the document.
fn shell_block(doc: &str) -> String {
    let start = doc.find("```sh\n").expect("a ```sh block") + "```sh\n".len();
    let end = doc[start..].find("\n```").expect("the block ends") + start;
    doc[start..end].to_string()
}

async fn agents_walkthrough_runs_against_the_quick_start_configuration(db: Db) {
    let root = env!("CARGO_MANIFEST_DIR");
    let dev = std::fs::read_to_string(format!("{root}/config/dev.toml")).expect("dev.toml");
    let server = Server::start_with(db, &dev).await;
    let doc = std::fs::read_to_string(format!("{root}/docs/agents.md")).expect("agents.md");
    let work = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(shell_block(&doc))
        .env("GH", &server.base)
        .current_dir(work.path())
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the walk-through failed\nstdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    // What the document says each step shows.
    let exchanged: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(work.path().join("exchanged.json")).expect("exchanged.json"),
    )
    .expect("json");
    let claims = jwt_claims(exchanged["access_token"].as_str().expect("token"));
    assert_eq!(claims["aud"], "http://127.0.0.1:8766/mcp");
    assert_eq!(claims["client_id"], "demo-agent");
    assert_eq!(claims["scope"], "mcp:read");
    assert_eq!(claims["act"]["client_id"], "demo-agent", "{claims}");
    assert!(stdout.contains("\"error\": \"invalid_scope\""), "{stdout}");
    assert!(
        stdout
            .contains("\"issued_token_type\": \"urn:ietf:params:oauth:token-type:refresh_token\""),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("204"), "deleted: {stdout}");
}

on_both_databases!(agents_walkthrough_runs_against_the_quick_start_configuration);
