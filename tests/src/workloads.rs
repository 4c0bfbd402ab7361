//! Container commands and workloads the end-to-end tests and the e2e benchmark run, shared
//! by the host and VM suites.

use crate::cluster::Cluster;

/// Runs until SIGTERM, which it obeys (as PID 1 of its container; a bare `sleep` would ignore
/// it and every delete would wait out the grace period).
pub const FOREVER: &str = "trap 'exit 0' TERM; sleep 1000000 & wait";

/// Burns CPU while /tmp/load exists in its container, else idles; obeys SIGTERM. Tests start
/// and stop the load with `podctl exec POD -- touch|rm /tmp/load`.
pub const BURN_WHILE_LOADED: &str = "trap 'exit 0' TERM; while :; do \
    if [ -e /tmp/load ]; then n=0; while [ $n -lt 20000 ]; do n=$((n+1)); done; \
    else sleep 1; fi; done";

/// `podctl autoscale` for the `burn` Deployment: 1 to 3 replicas at 50% of the CPU request,
/// back in 10 s after the load stops (Kubernetes waits 5 min by default).
pub const AUTOSCALE_BURN: [&str; 10] = [
    "autoscale",
    "burn",
    "--min",
    "1",
    "--max",
    "3",
    "--cpu-percent",
    "50",
    "--scale-down-window",
    "10s",
];

/// The service the tests measure: `web` (3 busybox-httpd replicas on 8080) exposed on port 80,
/// and a `client` pod to send requests from.
pub fn start_web_and_client(c: &Cluster) -> anyhow::Result<()> {
    c.podctl(&[
        "run",
        "web",
        "--image",
        "busybox-httpd",
        "--replicas",
        "3",
        "--port",
        "8080",
    ])?;
    c.podctl(&["expose", "web", "--port", "80", "--target-port", "8080"])?;
    // As PID 1, sleep would ignore SIGTERM and each delete would wait the 30 s grace period.
    c.podctl(&[
        "run", "client", "--image", "busybox", "--", "sh", "-c", FOREVER,
    ])?;
    Ok(())
}
