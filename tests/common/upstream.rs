//! The upstream OpenID provider (panva/oidc-provider in tests/upstream) as a
//! process for tests, and the tenant configuration around an upstream
//! connector. Shared by tests/oidc.rs and tests/oidc_presets.rs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::*;

pub const UPSTREAM_CLIENT: &str = "gatehouse";
pub const UPSTREAM_SECRET: &str = "gatehouse-upstream-secret-0123456789";

// ---------------------------------------------------------------------------
// The upstream provider process.
// ---------------------------------------------------------------------------

pub fn upstream_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstream")
}

/// Installs oidc-provider once per test process when it is missing.
pub fn install_upstream() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let dir = upstream_dir();
    if !dir.join("node_modules/oidc-provider/package.json").exists() {
        let out = Command::new("bash")
            .arg(dir.join("setup.sh"))
            .output()
            .expect("run tests/upstream/setup.sh");
        assert!(
            out.status.success(),
            "tests/upstream/setup.sh failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    *done = true;
}

/// A running oidc-provider on 127.0.0.1, killed on drop.
pub struct Upstream {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Upstream {
    /// Starts the provider on `port` with Gatehouse's `callback` as the
    /// client's redirect URI; `env` adds provider options.
    pub fn start(port: u16, callback: &str, env: &[(&str, &str)]) -> Upstream {
        install_upstream();
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("upstream.log");
        let mut cmd = Command::new("node");
        cmd.arg(upstream_dir().join("provider.mjs"))
            .env("UPSTREAM_PORT", port.to_string())
            .env("UPSTREAM_REDIRECT_URIS", callback)
            .env("UPSTREAM_CLIENT_ID", UPSTREAM_CLIENT)
            .env("UPSTREAM_CLIENT_SECRET", UPSTREAM_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn node tests/upstream/provider.mjs");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.trim() == "ready" {
                    let _ = tx.send(());
                }
            }
        });
        let upstream = Upstream {
            child,
            log,
            _dir: dir,
        };
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            panic!("the upstream provider did not start: {}", upstream.log());
        }
        upstream
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Configuration.
// ---------------------------------------------------------------------------

/// One tenant with the given connector tables, the demo MCP resource, the
/// public client and the service client (for introspection).
pub fn config(connectors: &str) -> String {
    format!(
        r#"
[keys]
algorithm = "ES256"

[[tenants]]
id = "default"
display_name = "Test"

{connectors}

[[tenants.resources]]
uri = "{MCP}"
name = "Demo MCP server"
scopes = ["mcp:read", "mcp:write"]
default_scopes = ["mcp:read"]

[[tenants.clients]]
client_id = "{PUBLIC_CLIENT}"
client_name = "Demo public client"
redirect_uris = ["http://127.0.0.1/callback", "http://localhost/callback"]
grant_types = ["authorization_code", "refresh_token"]
token_endpoint_auth_method = "none"

[[tenants.clients]]
client_id = "{SERVICE_CLIENT}"
client_name = "Demo service"
secret = "{SERVICE_SECRET}"
grant_types = ["client_credentials"]
token_endpoint_auth_method = "client_secret_basic"
"#
    )
}
