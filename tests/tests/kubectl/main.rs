//! The kubectl compatibility suite: the real `kubectl` (1.32, `/usr/bin/kubectl`, or
//! `$KUBECTL`) against a podd control plane started in this process, on loopback, with hollow
//! nodes that run pods without containers. Each test is what a user would type, with what
//! Kubernetes answers: the columns kubectl prints, apply and patch round trips that lose no
//! field, dry runs that change nothing, orphan deletes, set-based selectors, rollouts.
//!
//! `cargo test -p podd-tests --test kubectl`. No root needed; nothing leaves 127.0.0.1.
//! Except `streaming`: exec, attach, port-forward, cp and logs need real containers, so it
//! runs a one-node netns cluster (`podd_tests::cluster`; root, and the podd binaries built),
//! and skips itself when not root.

mod apply;
mod autoscale;
mod basics;
mod certs;
mod config;
mod cronjobs;
mod daemonsets;
mod harness;
mod jobs;
mod manifests;
mod namespaces;
mod pod_config;
mod protobuf;
mod python;
mod streaming;
mod verbs;
mod workloads;
