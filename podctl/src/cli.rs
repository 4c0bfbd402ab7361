//! podctl's command line.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "podctl", version, about = "Drive a podd cluster")]
pub struct Cli {
    /// Config file with the server address, CA and token [default: ~/.podd/config, then the
    /// node's own root-only socket].
    #[arg(long, global = true, env = "PODCTL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Server: a Unix socket path (unix:///run/podd/podd.sock) or https://HOST:6443.
    #[arg(long, global = true, env = "PODCTL_SERVER")]
    pub server: Option<String>,
    #[arg(short = 'n', long, global = true, default_value = "default")]
    pub namespace: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a Deployment running IMAGE.
    Run(RunArgs),
    /// Set a Deployment's replica count.
    Scale {
        name: String,
        #[arg(long)]
        replicas: u32,
    },
    /// Create a Service for a Deployment's pods.
    Expose {
        name: String,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        target_port: Option<u16>,
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Proto,
    },
    /// Create a HorizontalPodAutoscaler for a Deployment.
    Autoscale {
        name: String,
        #[arg(long)]
        min: u32,
        #[arg(long)]
        max: u32,
        #[arg(long = "cpu-percent")]
        cpu_percent: u32,
        /// How long load must stay low before scaling in: "30s", "5m", or seconds
        /// [default: the server's, 5m as in Kubernetes].
        #[arg(long = "scale-down-window", value_parser = crate::age::parse_window)]
        scale_down_window: Option<u32>,
    },
    /// List objects.
    Get(GetArgs),
    /// Show one object in detail.
    Describe { kind: String, name: String },
    /// Delete an object (owned objects go with it unless --cascade=orphan).
    Delete {
        kind: String,
        name: String,
        /// background (the default), foreground (the owner goes last) or orphan (keep the
        /// objects it owns).
        #[arg(long, value_enum, default_value = "background")]
        cascade: Cascade,
        /// Seconds the object's containers get to stop; 0 deletes at once.
        #[arg(long = "grace-period")]
        grace_period: Option<i64>,
    },
    /// Create or update the objects in a YAML or JSON file (server-side apply when the server
    /// supports it, a strategic merge otherwise).
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Server-side apply: take over fields another manager owns instead of failing.
        #[arg(long = "force-conflicts")]
        force_conflicts: bool,
        /// `server`: show what would be stored, store nothing.
        #[arg(long = "dry-run", value_enum, default_value = "none")]
        dry_run: DryRun,
    },
    /// Print a container's log.
    Logs {
        pod: String,
        #[arg(short = 'c', long)]
        container: Option<String>,
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Run a command in a container.
    Exec {
        pod: String,
        #[arg(short = 'c', long)]
        container: Option<String>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show CPU and memory use.
    Top {
        #[arg(value_enum)]
        what: TopWhat,
    },
    /// Wait for a Deployment's rollout to finish.
    Rollout {
        #[arg(value_enum)]
        action: RolloutAction,
        name: String,
        #[arg(long, default_value_t = 300)]
        timeout_seconds: u64,
    },
    /// Print shell completions.
    Completion { shell: clap_complete::Shell },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    pub name: String,
    #[arg(long)]
    pub image: String,
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    #[arg(long)]
    pub port: Option<u16>,
    /// CPU request and limit, e.g. 250m.
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory request and limit, e.g. 128Mi.
    #[arg(long)]
    pub memory: Option<String>,
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Any served kind: pods, deployments, replicasets, services, endpoints,
    /// endpointslices, nodes, hpa, events, leases (or their short names).
    pub kind: String,
    pub name: Option<String>,
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Watch for changes after listing.
    #[arg(short = 'w', long)]
    pub watch: bool,
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Wide,
    Json,
    Yaml,
    /// `kind/name` a line, as kubectl prints them (for scripts: `podctl logs $(...)`).
    Name,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DryRun {
    None,
    Server,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cascade {
    Background,
    Foreground,
    Orphan,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum TopWhat {
    Pods,
    Nodes,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum RolloutAction {
    Status,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let c = Cli::try_parse_from([
            "podctl",
            "run",
            "web",
            "--image",
            "busybox-httpd",
            "--replicas",
            "3",
            "--port",
            "8080",
            "--cpu",
            "250m",
            "--env",
            "A=1",
            "--",
            "httpd",
            "-f",
        ])
        .unwrap();
        match c.command {
            Command::Run(r) => {
                assert_eq!(r.replicas, 3);
                assert_eq!(r.command, ["httpd", "-f"]);
                assert_eq!(r.env, ["A=1"]);
            }
            other => panic!("{other:?}"),
        }
        let c = Cli::try_parse_from(["podctl", "get", "pods", "-o", "wide", "-l", "app=web", "-w"])
            .unwrap();
        assert!(matches!(
            c.command,
            Command::Get(GetArgs {
                watch: true,
                output: Some(Output::Wide),
                ..
            })
        ));
        let c =
            Cli::try_parse_from(["podctl", "exec", "web-1", "--", "cat", "/etc/hostname"]).unwrap();
        assert!(matches!(c.command, Command::Exec { .. }));
        assert!(Cli::try_parse_from(["podctl", "scale", "web"]).is_err());
        let c = Cli::try_parse_from(["podctl", "delete", "deploy", "web", "--cascade", "orphan"])
            .unwrap();
        assert!(matches!(
            c.command,
            Command::Delete {
                cascade: Cascade::Orphan,
                ..
            }
        ));
    }
}
