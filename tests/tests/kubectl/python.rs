//! The official Python client (`pip install kubernetes`) against the same cluster: its typed
//! models decode every kind podd serves, so a field in a shape Kubernetes does not use fails
//! here (tests/python/client_kinds.py says what it checks). `.ci/run` makes the client's
//! venv (/var/cache/podd-ci/venv) and sets PODD_PYTHON; elsewhere, set it to a python that
//! has the client.

use crate::harness::Cluster;
use std::process::Command;

#[test]
fn the_python_client_reads_writes_and_watches_every_kind() {
    let python = std::env::var("PODD_PYTHON").unwrap_or_else(|_| {
        let ci = "/var/cache/podd-ci/venv/bin/python";
        if std::path::Path::new(ci).exists() {
            ci
        } else {
            "python3"
        }
        .to_string()
    });
    let has_client = Command::new(&python)
        .args(["-c", "import kubernetes"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_client,
        "{python} cannot import the kubernetes client: run .ci/run's prerequisites, or \
         `python3 -m venv V && V/bin/pip install kubernetes` and set PODD_PYTHON=V/bin/python"
    );
    let c = Cluster::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/client_kinds.py");
    let out = Command::new(&python)
        .arg(script)
        .env("KUBECONFIG", c.kubeconfig())
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("\nOK"),
        "the Python client failed:\n{stdout}\n{stderr}"
    );
}
