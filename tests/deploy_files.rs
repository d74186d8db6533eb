//! The config files shipped in deploy/ are ones Gatehouse accepts: each is
//! loaded by the real binary (`tenants list` reads and validates the file,
//! on a scratch SQLite database), with its `secret_env` variables set.
//! deploy/check validates the rest of deploy/ (manifests, unit, rules).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::binary;

fn accepts(relative: &str, secrets: &[&str]) {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(binary());
    cmd.args(["--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["tenants", "list"])
        .env_remove("GATEHOUSE_DATABASE_URL")
        .env_remove("GATEHOUSE_KEY_ENCRYPTION_KEY")
        .env_remove("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE");
    for name in secrets {
        cmd.env(name, "a-secret-for-the-config-check-0123456789");
    }
    let out = cmd.output().expect("run gatehouse");
    assert!(
        out.status.success(),
        "{relative} is refused: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("default"),
        "{relative}: no default tenant listed"
    );
}

#[test]
fn kubernetes_base_config_is_accepted() {
    accepts("deploy/kubernetes/base/gatehouse.toml", &[]);
}

#[test]
fn kubernetes_dev_config_is_accepted() {
    accepts("deploy/kubernetes/overlays/dev/gatehouse.toml", &[]);
}

#[test]
fn kubernetes_production_config_is_accepted() {
    accepts(
        "deploy/kubernetes/overlays/production/gatehouse.toml",
        &["GATEHOUSE_SECRET_REPORTING_SERVICE"],
    );
}

#[test]
fn local_cluster_config_is_accepted() {
    accepts(
        "deploy/local/gatehouse.toml",
        &[
            "GATEHOUSE_LOCAL_SERVICE_SECRET",
            "GATEHOUSE_LOCAL_OPAQUE_SECRET",
        ],
    );
}

#[test]
fn a_missing_secret_env_is_refused() {
    // The check above would pass vacuously if the binary ignored the file.
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/local/gatehouse.toml");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(binary())
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["tenants", "list"])
        .env_remove("GATEHOUSE_LOCAL_SERVICE_SECRET")
        .env_remove("GATEHOUSE_LOCAL_OPAQUE_SECRET")
        .output()
        .expect("run gatehouse");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GATEHOUSE_LOCAL_SERVICE_SECRET"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
