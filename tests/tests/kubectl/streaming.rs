//! The streaming subresources through the real kubectl, on a real one-node podd cluster
//! (network namespaces, real containers; `podd_tests::cluster`): `exec` with its exit code,
//! with stdin, with a terminal (kubectl driven through a pty, resize included); `attach` to a
//! container's live output and stdin; `port-forward` (SPDY over WebSocket) to a busybox
//! httpd; `cp` both ways; and `logs` with --tail, --timestamps, --since, --previous,
//! --follow. Then exec, attach and port-forward again over kubectl's older transport, a plain
//! upgrade to SPDY/3.1 (`KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`,
//! `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`), as kubectl before 1.30 speaks it.
//!
//! Needs root and the binaries (`cargo build -p podd -p podd-pod -p podctl`, same profile
//! and target dir as this test); skipped (with a message) when not root.

use podd_tests::cluster::{Cluster, wait_for};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PODS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: busybox-httpd
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Pod
metadata:
  name: talker
spec:
  containers:
  - name: talker
    image: busybox
    stdin: true
    command: ["sh", "-c", "while read l; do echo \"got $l\"; done"]
---
apiVersion: v1
kind: Pod
metadata:
  name: logger
spec:
  containers:
  - name: logger
    image: busybox
    command: ["sh", "-c", "echo one; echo two; echo three; sleep 3; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done"]
---
apiVersion: v1
kind: Pod
metadata:
  name: crasher
spec:
  restartPolicy: Always
  containers:
  - name: crasher
    image: busybox
    command: ["sh", "-c", "n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; echo run $n; sleep 1; exit 1"]
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    emptyDir: {}
"#;

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn netns_path(c: &Cluster) -> PathBuf {
    PathBuf::from(format!("/var/run/netns/{}", c.state.nodes[0].netns))
}

/// kubectl in node 1's network namespace, with the given stdio.
fn kubectl_cmd(c: &Cluster, args: &[&str]) -> Command {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into());
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns_path(c).display()))
        .arg(kubectl)
        .arg("--kubeconfig")
        .arg(c.state.dir.join("kubeconfig"))
        .args(args);
    cmd
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn kubectl(c: &Cluster, args: &[&str], stdin: &[u8]) -> Out {
    let o = c.kubectl(args, stdin).expect("run kubectl");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn ok(c: &Cluster, args: &[&str]) -> String {
    let o = kubectl(c, args, b"");
    assert_eq!(
        o.code,
        0,
        "kubectl {args:?}: {}\n{}\nserver: {}\nagent: {}",
        o.stdout,
        o.stderr,
        tail(&c.log("server.log")),
        tail(&c.log("agent-node-1.log"))
    );
    o.stdout
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Reads from `r` (in a thread) until `want` shows up in what was read or `timeout` passes.
/// Writes `line` to an attach session's stdin every 250 ms for 10 s, because the session may
/// not be up when the first line goes; stops when kubectl closes its stdin.
fn keep_writing(
    mut stdin: std::process::ChildStdin,
    line: &'static [u8],
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for _ in 0..40 {
            if stdin.write_all(line).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    })
}

fn read_until(r: impl Read + Send + 'static, want: &'static str, timeout: Duration) -> String {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut r = r;
        let mut buf = [0u8; 4096];
        // Drains to the end even when nobody listens any more: a closed pipe would kill
        // kubectl (SIGPIPE) at its next line ("Handling connection for ...").
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                return;
            }
            let _ = tx.send(buf[..n].to_vec());
        }
    });
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        if let Ok(b) = rx.recv_timeout(Duration::from_millis(100)) {
            got.extend(b);
            if String::from_utf8_lossy(&got).contains(want) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// How kubectl reaches exec, attach and port-forward.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// kubectl 1.32's default.
    WebSocket,
    /// kubectl's SPDY executor and dialer: `Upgrade: SPDY/3.1`.
    Spdy,
}

impl Transport {
    /// `cmd` with kubectl's switches for this transport.
    fn set(self, cmd: &mut Command) -> &mut Command {
        if self == Transport::Spdy {
            cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
                .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");
        }
        cmd
    }
}

/// Whether kubectl's request log (`-v=6`) shows `sub` upgraded by a POST, which is the SPDY
/// transport (the WebSocket one is a GET).
fn upgraded_by_post(stderr: &str, sub: &str) -> bool {
    stderr
        .lines()
        .any(|l| l.contains("POST ") && l.contains(&format!("/{sub}")) && l.contains(" 101 "))
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
// The skip says why on stderr, as the other root-only suites do.
#[allow(clippy::print_stderr)]
fn exec_attach_port_forward_cp_and_logs() {
    if !is_root() {
        eprintln!("skipped: the streaming suite runs real containers and needs root");
        return;
    }
    let c = Cluster::up(1).expect("a one-node cluster");
    let manifest = c.state.dir.join("streaming-pods.yaml");
    std::fs::write(&manifest, PODS).unwrap();
    ok(&c, &["apply", "-f", manifest.to_str().unwrap()]);
    wait_for(Duration::from_secs(120), "the pods running", || {
        let out = kubectl(&c, &["get", "pods", "-o", "json"], b"");
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        let running = v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p["status"]["phase"] == "Running")
                    .count()
            })
            .unwrap_or(0);
        Ok(running == 4)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", tail(&c.log("agent-node-1.log"))));

    exec(&c);
    exec_tty(&c);
    attach(&c);
    port_forward(&c, Transport::WebSocket);
    cp(&c);
    logs(&c);
    spdy(&c);
    c.down().expect("cluster down");
}

fn exec(c: &Cluster) {
    // The exit code comes back as kubectl's own.
    let o = kubectl(
        c,
        &[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
        b"",
    );
    assert_eq!(o.code, 7, "{} {}", o.stdout, o.stderr);
    assert_eq!(o.stdout, "out\n");
    assert!(o.stderr.contains("err"), "{}", o.stderr);
    // stdin streams in; binary-safe and larger than one frame.
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let out = c
        .kubectl(&["exec", "-i", "web", "--", "md5sum"], &input)
        .expect("exec -i");
    assert!(out.status.success(), "{:?}", out);
    let digest = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            ch.stdin.take().unwrap().write_all(&input)?;
            ch.wait_with_output()
        })
        .expect("md5sum here");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next(),
        String::from_utf8_lossy(&digest.stdout)
            .split_whitespace()
            .next()
    );
    // Interactive: the answer to the first line comes before stdin is closed.
    let mut child = kubectl_cmd(c, &["exec", "-i", "web", "--", "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"echo first-$((40+2))\n").unwrap();
    let got = read_until(
        child.stdout.take().unwrap(),
        "first-42",
        Duration::from_secs(20),
    );
    assert!(
        got.contains("first-42"),
        "interactive exec answered {got:?}"
    );
    stdin.write_all(b"exit 4\n").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4));
}

fn exec_tty(c: &Cluster) {
    let size = nix::pty::Winsize {
        ws_row: 33,
        ws_col: 111,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let slave = std::fs::File::from(pty.slave);
    let mut cmd = kubectl_cmd(c, &["exec", "-it", "web", "--", "sh"]);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // kubectl wants the pty as its controlling terminal (for raw mode and the size).
    // SAFETY: setsid and TIOCSCTTY are async-signal-safe; fd 0 is the pty's slave here.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("kubectl exec -it");
    drop(slave);
    let mut master = std::fs::File::from(pty.master);
    let reader = master.try_clone().unwrap();
    // The shell in the container sees a terminal of the size of ours, and answers.
    master
        .write_all(b"tty >/dev/null && echo is-a-tty; stty size; echo $((6*7))x; exit 5\r")
        .unwrap();
    let got = read_until(reader, "42x", Duration::from_secs(20));
    let status = child.wait().unwrap();
    assert!(
        got.contains("is-a-tty"),
        "the command has a terminal: {got:?}"
    );
    assert!(
        got.contains("33 111"),
        "the terminal has kubectl's size: {got:?}"
    );
    assert!(got.contains("42x"), "{got:?}");
    assert_eq!(status.code(), Some(5), "{got:?}");
}

fn attach(c: &Cluster) {
    // Live output of a running container.
    let mut child = kubectl_cmd(c, &["attach", "logger"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let got = read_until(
        child.stdout.take().unwrap(),
        "tick",
        Duration::from_secs(20),
    );
    kill(child);
    assert!(
        got.contains("tick"),
        "attach shows the live output: {got:?}"
    );
    // stdin into a `stdin: true` container, and its answer.
    let mut child = kubectl_cmd(c, &["attach", "-i", "talker"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let out = child.stdout.take().unwrap();
    let writer = keep_writing(stdin, b"hello\n");
    let got = read_until(out, "got hello", Duration::from_secs(20));
    kill(child);
    let _ = writer.join();
    assert!(
        got.contains("got hello"),
        "attach -i reaches stdin: {got:?}"
    );
}

fn port_forward(c: &Cluster, transport: Transport) {
    // Each transport its own local port: the other's kubectl may still hold its one.
    let local = match transport {
        Transport::WebSocket => 18080,
        Transport::Spdy => 18081,
    };
    let ports = format!("{local}:8080");
    let mut cmd = kubectl_cmd(c, &["port-forward", "-v=6", "pod/web", &ports]);
    let mut child = transport
        .set(&mut cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let want: &'static str =
        Box::leak(format!("Forwarding from 127.0.0.1:{local}").into_boxed_str());
    let got = read_until(child.stdout.take().unwrap(), want, Duration::from_secs(20));
    assert!(got.contains("Forwarding from"), "{got:?}");
    let mut errors = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = errors.read_to_string(&mut s);
        s
    });
    let ns = netns_path(c);
    let get = || -> std::io::Result<String> {
        podd_net::run_in_namespace(&ns, podd_net::NsKind::Net, || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", local))?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut resp = String::new();
            s.read_to_string(&mut resp)?;
            Ok::<_, std::io::Error>(resp)
        })
        .expect("enter the node's netns")
    };
    // Twice: each connection is its own pair of streams in one session.
    let mut answers = Vec::new();
    for _ in 0..2 {
        answers.push(get());
    }
    kill(child);
    let errors = errors.join().unwrap_or_default();
    for resp in answers {
        let resp = resp.unwrap_or_else(|e| {
            panic!(
                "talking through the forwarded port: {e}\nkubectl: {errors}\nserver: {}\nagent: {}",
                tail(&c.log("server.log")),
                tail(&c.log("agent-node-1.log"))
            )
        });
        assert!(
            resp.starts_with("HTTP/1.") && resp.contains("hello-from-pod"),
            "{resp:?}"
        );
    }
    if transport == Transport::Spdy {
        assert!(
            upgraded_by_post(&errors, "portforward"),
            "port-forward went over SPDY/3.1: {errors}"
        );
    }
}

fn cp(c: &Cluster) {
    let dir = c.state.dir.join("cp");
    std::fs::create_dir_all(&dir).unwrap();
    let local = dir.join("up.bin");
    let content: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(&local, &content).unwrap();
    ok(c, &["cp", local.to_str().unwrap(), "web:/tmp/up.bin"]);
    let sum = ok(c, &["exec", "web", "--", "md5sum", "/tmp/up.bin"]);
    let here = Command::new("md5sum").arg(&local).output().unwrap();
    assert_eq!(
        sum.split_whitespace().next(),
        String::from_utf8_lossy(&here.stdout)
            .split_whitespace()
            .next(),
        "the file arrived whole"
    );
    let back = dir.join("down.bin");
    ok(c, &["cp", "web:/tmp/up.bin", back.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&back).unwrap(),
        content,
        "and came back whole"
    );
}

fn logs(c: &Cluster) {
    wait_for(Duration::from_secs(30), "logger ticking", || {
        Ok(kubectl(c, &["logs", "logger"], b"")
            .stdout
            .contains("tick 2"))
    })
    .unwrap();
    let all = ok(c, &["logs", "logger"]);
    assert!(all.starts_with("one\ntwo\nthree\n"), "{all:?}");
    assert_eq!(ok(c, &["logs", "logger", "--tail=1"]).lines().count(), 1);
    let t = ok(c, &["logs", "logger", "--tail=2", "--timestamps"]);
    for l in t.lines() {
        let (ts, _) = l.split_once(' ').unwrap_or_default();
        assert!(
            ts.len() >= 20 && ts.as_bytes()[4] == b'-' && ts.ends_with('Z'),
            "an RFC 3339 time first: {l:?}"
        );
    }
    // The first lines are older than 2 s; recent ticks are not.
    let recent = ok(c, &["logs", "logger", "--since=2s"]);
    assert!(!recent.contains("one\n"), "{recent:?}");
    assert!(recent.contains("tick"), "{recent:?}");
    assert!(ok(c, &["logs", "logger", "--since=1h"]).starts_with("one\n"));
    // --follow streams what comes next.
    let mut child = kubectl_cmd(c, &["logs", "-f", "logger", "--tail=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let before = kubectl(c, &["logs", "logger", "--tail=1"], b"").stdout;
    let n: u32 = before
        .trim()
        .strip_prefix("tick ")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let want: &'static str = Box::leak(format!("tick {}\n", n + 4).into_boxed_str());
    let got = read_until(child.stdout.take().unwrap(), want, Duration::from_secs(20));
    kill(child);
    assert!(got.contains(want), "follow: {got:?}");
    // --previous: the run before the current one.
    wait_for(Duration::from_secs(90), "crasher restarted twice", || {
        let v: serde_json::Value =
            serde_json::from_str(&kubectl(c, &["get", "pod", "crasher", "-o", "json"], b"").stdout)
                .unwrap_or_default();
        Ok(v["status"]["containerStatuses"][0]["restartCount"]
            .as_u64()
            .unwrap_or(0)
            >= 2)
    })
    .unwrap();
    let prev = ok(c, &["logs", "crasher", "--previous"]);
    let runs: Vec<&str> = prev.lines().filter(|l| l.starts_with("run ")).collect();
    assert_eq!(runs.len(), 1, "only the previous run: {prev:?}");
    let o = kubectl(c, &["logs", "web", "--previous"], b"");
    assert_ne!(o.code, 0, "no previous run of web: {}", o.stdout);
}

/// exec (exit code, stdin), attach -i and port-forward over a plain SPDY/3.1 upgrade, with
/// kubectl's WebSocket transport switched off.
fn spdy(c: &Cluster) {
    let run = |args: &[&str], stdin: &[u8]| -> Out {
        let mut cmd = kubectl_cmd(c, args);
        let mut child = Transport::Spdy
            .set(&mut cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut input = child.stdin.take().unwrap();
        let stdin = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let o = child.wait_with_output().expect("wait for kubectl");
        let _ = writer.join();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    };
    // The exit code, stdout and stderr each on their stream.
    let o = run(
        &[
            "exec",
            "-v=6",
            "web",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
        b"",
    );
    assert_eq!(
        o.code,
        7,
        "{} {}\nserver: {}",
        o.stdout,
        o.stderr,
        tail(&c.log("server.log"))
    );
    assert_eq!(o.stdout, "out\n");
    assert!(o.stderr.contains("err"), "{}", o.stderr);
    assert!(
        upgraded_by_post(&o.stderr, "exec"),
        "exec went over SPDY/3.1: {}",
        o.stderr
    );
    // stdin, binary and larger than a SPDY data frame, to its end (md5sum waits for it).
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let o = run(&["exec", "-i", "web", "--", "md5sum"], &input);
    assert_eq!(o.code, 0, "{} {}", o.stdout, o.stderr);
    let digest = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            ch.stdin.take().unwrap().write_all(&input)?;
            ch.wait_with_output()
        })
        .expect("md5sum here");
    assert_eq!(
        o.stdout.split_whitespace().next(),
        String::from_utf8_lossy(&digest.stdout)
            .split_whitespace()
            .next()
    );
    // A successful command exits 0 with its output.
    let o = run(&["exec", "web", "--", "cat", "/www/index.html"], b"");
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "hello-from-pod\n"),
        "{}",
        o.stderr
    );

    // attach -i: stdin reaches the container, its answer comes back.
    let mut cmd = kubectl_cmd(c, &["attach", "-v=6", "-i", "talker"]);
    let mut child = Transport::Spdy
        .set(&mut cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let out = child.stdout.take().unwrap();
    let mut errors = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = errors.read_to_string(&mut s);
        s
    });
    let writer = keep_writing(stdin, b"spdy\n");
    let got = read_until(out, "got spdy", Duration::from_secs(20));
    kill(child);
    let _ = writer.join();
    let errors = errors.join().unwrap_or_default();
    assert!(
        got.contains("got spdy"),
        "attach -i over SPDY reaches stdin: {got:?}\n{errors}"
    );
    assert!(
        upgraded_by_post(&errors, "attach"),
        "attach went over SPDY/3.1: {errors}"
    );

    port_forward(c, Transport::Spdy);
}

const TTY_PODS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  containers:
  - name: shell
    image: busybox
    stdin: true
    tty: true
    command: ["sh"]
---
apiVersion: v1
kind: Pod
metadata:
  name: once
spec:
  restartPolicy: Never
  containers:
  - name: once
    image: busybox
    stdin: true
    stdinOnce: true
    tty: true
    command: ["sh"]
"#;

/// kubectl on a pty of ours (its controlling terminal, as a user's shell gives it), of
/// `size`; returns kubectl and the pty's master.
fn kubectl_on_pty(c: &Cluster, args: &[&str], size: nix::pty::Winsize) -> (Child, std::fs::File) {
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let slave = std::fs::File::from(pty.slave);
    let mut cmd = kubectl_cmd(c, args);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: setsid and TIOCSCTTY are async-signal-safe; fd 0 is the pty's slave here.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("kubectl on a pty");
    drop(slave);
    (child, std::fs::File::from(pty.master))
}

/// Collects what a pty master reads, on a thread, for [`Seen::wait_for`].
struct Seen(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Seen {
    fn follow(r: impl Read + Send + 'static) -> Seen {
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            let mut r = r;
            let mut buf = [0u8; 4096];
            // Ends with EIO once kubectl and everything else closed the pty's slave.
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    return;
                }
                g.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Seen(got)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until `want` shows up; says whether it did.
    fn wait_for(&self, want: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.text().contains(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// Sends `line` until `want` shows up (the session may not be up when the first one goes:
/// kubectl prints "If you don't see a command prompt, try pressing enter.").
fn type_until(master: &mut std::fs::File, seen: &Seen, line: &str, want: &str) -> bool {
    for _ in 0..20 {
        master.write_all(line.as_bytes()).unwrap();
        if seen.wait_for(want, Duration::from_secs(1)) {
            return true;
        }
    }
    false
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn pod_phase(c: &Cluster, name: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&kubectl(c, &["get", "pod", name, "-o", "json"], b"").stdout)
            .unwrap_or_default();
    v["status"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
// The skip says why on stderr, as the other root-only suites do.
#[allow(clippy::print_stderr)]
fn attach_to_a_terminal_and_stdin_once() {
    if !is_root() {
        eprintln!("skipped: the streaming suite runs real containers and needs root");
        return;
    }
    // A prefix of its own: the other streaming test may run beside it in this process.
    let prefix = format!("pt{}", std::process::id() % 100_000);
    let dir = std::env::temp_dir().join(format!("podd-{prefix}"));
    let c = Cluster::up_at(1, &prefix, &dir).expect("a one-node cluster");
    let manifest = c.state.dir.join("tty-pods.yaml");
    std::fs::write(&manifest, TTY_PODS).unwrap();
    ok(&c, &["apply", "-f", manifest.to_str().unwrap()]);
    wait_for(Duration::from_secs(120), "the pods running", || {
        Ok(pod_phase(&c, "shell") == "Running" && pod_phase(&c, "once") == "Running")
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", tail(&c.log("agent-node-1.log"))));

    attach_tty(&c);
    attach_stdin_once_hangs_up(&c);
    run_rm_with_a_terminal(&c);
    run_rm_without_a_terminal(&c);
    c.down().expect("cluster down");
}

/// `kubectl attach -it` to a `tty: true` container: a terminal of kubectl's size, typed
/// commands answered, and a resize of kubectl's terminal reaches the container's.
fn attach_tty(c: &Cluster) {
    let size = nix::pty::Winsize {
        ws_row: 33,
        ws_col: 111,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let (mut child, mut master) = kubectl_on_pty(c, &["attach", "-it", "shell"], size);
    let seen = Seen::follow(master.try_clone().unwrap());
    let answered = type_until(
        &mut master,
        &seen,
        "tty >/dev/null && echo is-a-$((1+1))-tty; stty size\r",
        "is-a-2-tty",
    );
    assert!(
        answered,
        "attach -it answers typed commands: {:?}\nagent: {}",
        seen.text(),
        tail(&c.log("agent-node-1.log"))
    );
    assert!(
        seen.wait_for("33 111", Duration::from_secs(10)),
        "the container's terminal has kubectl's size: {:?}",
        seen.text()
    );
    // kubectl learns of the new size by SIGWINCH, as from a resized window.
    let bigger = nix::libc::winsize {
        ws_row: 44,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the valid pointer.
    let r = unsafe {
        use std::os::fd::AsRawFd;
        libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &bigger)
    };
    assert_eq!(r, 0);
    let resized = type_until(&mut master, &seen, "stty size\r", "44 100");
    assert!(resized, "the resize reaches the pty: {:?}", seen.text());
    // Leaving does not end the container (no stdinOnce): the next attach finds the shell.
    kill(child);
    let (child2, mut master2) = kubectl_on_pty(c, &["attach", "-it", "shell"], size);
    child = child2;
    let seen2 = Seen::follow(master2.try_clone().unwrap());
    assert!(
        type_until(&mut master2, &seen2, "echo again-$((3*3))\r", "again-9"),
        "a second attach: {:?}",
        seen2.text()
    );
    kill(child);
    assert_eq!(pod_phase(c, "shell"), "Running");
}

/// `kubectl attach -i` (stdin piped, no terminal on kubectl's side) to a `tty: true,
/// stdinOnce: true` container: once the client's stdin ends, the container's terminal hangs
/// up and the shell ends, as in Kubernetes.
fn attach_stdin_once_hangs_up(c: &Cluster) {
    let mut child = kubectl_cmd(c, &["attach", "-i", "once"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let seen = Seen::follow(child.stdout.take().unwrap());
    let mut answered = false;
    for _ in 0..20 {
        stdin.write_all(b"echo hello-$((2+3))\n").unwrap();
        if seen.wait_for("hello-5", Duration::from_secs(1)) {
            answered = true;
            break;
        }
    }
    assert!(
        answered,
        "attach -i reaches the terminal: {:?}",
        seen.text()
    );
    drop(stdin);
    let status = wait_child(&mut child, Duration::from_secs(30));
    let ended = wait_for(Duration::from_secs(30), "the shell ended", || {
        Ok(matches!(
            pod_phase(c, "once").as_str(),
            "Succeeded" | "Failed"
        ))
    });
    if status.is_none() {
        kill(child);
    }
    assert!(
        ended.is_ok(),
        "the end of stdin hung the terminal up; phase {}\nagent: {}",
        pod_phase(c, "once"),
        tail(&c.log("agent-node-1.log"))
    );
    assert!(status.is_some(), "kubectl attach ended with the container");
}

/// `kubectl run -it --rm --restart=Never`: a shell on a terminal, typed commands answered;
/// the end of input (^D) ends the shell, kubectl returns and deletes the pod.
fn run_rm_with_a_terminal(c: &Cluster) {
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let (mut child, mut master) = kubectl_on_pty(
        c,
        &[
            "run",
            "-it",
            "--rm",
            "--restart=Never",
            "--image=busybox",
            "tty-run",
            "--",
            "sh",
        ],
        size,
    );
    let seen = Seen::follow(master.try_clone().unwrap());
    assert!(
        type_until(&mut master, &seen, "echo run-$((5*5))\r", "run-25"),
        "kubectl run -it answers: {:?}\nagent: {}",
        seen.text(),
        tail(&c.log("agent-node-1.log"))
    );
    // ^D at the start of a line: the shell reads the end of its input.
    master.write_all(b"\x04").unwrap();
    let status = wait_child(&mut child, Duration::from_secs(60));
    let text = seen.text();
    if status.is_none() {
        kill(child);
    }
    assert!(
        status.is_some(),
        "kubectl run -it ends with the shell: {text:?}"
    );
    wait_for(Duration::from_secs(30), "the pod deleted by --rm", || {
        let o = kubectl(c, &["get", "pod", "tty-run"], b"");
        Ok(o.code != 0 && o.stderr.contains("NotFound"))
    })
    .unwrap_or_else(|e| panic!("{e:#}: {text:?}"));
}

/// `kubectl run -i --rm --restart=Never` with stdin piped (stdinOnce, no terminal): the
/// commands run, the end of kubectl's stdin is the shell's end of input, and the pod goes.
fn run_rm_without_a_terminal(c: &Cluster) {
    let mut child = kubectl_cmd(
        c,
        &[
            "run",
            "-i",
            "--rm",
            "--restart=Never",
            "--image=busybox",
            "pipe-run",
            "--",
            "sh",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let seen = Seen::follow(child.stdout.take().unwrap());
    let errors = Seen::follow(child.stderr.take().unwrap());
    // kubectl reads its stdin once attached; a pipe keeps the lines until then.
    stdin
        .write_all(b"echo piped-$((6+1))\nsleep 1\necho piped-end\n")
        .unwrap();
    drop(stdin);
    let status = wait_child(&mut child, Duration::from_secs(90));
    if status.is_none() {
        kill(child);
    }
    assert!(
        status.is_some(),
        "kubectl run -i ends when its stdin does: {:?} {:?}\nagent: {}",
        seen.text(),
        errors.text(),
        tail(&c.log("agent-node-1.log"))
    );
    assert!(
        seen.text().contains("piped-end"),
        "the commands ran: {:?} {:?}",
        seen.text(),
        errors.text()
    );
    wait_for(Duration::from_secs(30), "the pod deleted by --rm", || {
        let o = kubectl(c, &["get", "pod", "pipe-run"], b"");
        Ok(o.code != 0 && o.stderr.contains("NotFound"))
    })
    .unwrap();
}
