//! Booting the guest under QEMU's TCG (this host has no KVM) and streaming its serial console.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::report::VmReport;
use crate::process::describe;

pub struct Boot<'a> {
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub memory: &'a str,
    pub cpus: u32,
    pub verbose_kernel: bool,
    pub timeout: Duration,
}

enum Event {
    Console(String),
    Qemu(String),
    Closed,
}

/// Boots the guest, echoes its console with a `vm| ` prefix and feeds it to `report`.
pub fn boot(boot: &Boot<'_>, report: &mut VmReport) -> Result<()> {
    let mut cmdline = String::from(
        "console=ttyS0 panic=-1 nowatchdog nosoftlockup mitigations=off \
         rcupdate.rcu_cpu_stall_suppress=1 random.trust_cpu=on rdinit=/init",
    );
    if !boot.verbose_kernel {
        cmdline.push_str(" quiet loglevel=4");
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-machine",
        "q35",
    ])
    .args(["-accel", "tcg,thread=multi", "-cpu", "max"])
    .args(["-smp", &boot.cpus.to_string(), "-m", boot.memory])
    .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
    .arg("-kernel")
    .arg(boot.kernel)
    .arg("-initrd")
    .arg(boot.initramfs)
    .args(["-append", &cmdline])
    .args([
        "-fsdev",
        "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
    ])
    .args(["-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"])
    .args(["-device", "virtio-rng-pci"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    println!("$ {}", describe(&cmd));
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let tx_out = tx.clone();
    std::thread::spawn(move || read_lines(stdout, &tx_out, Event::Console));
    std::thread::spawn(move || read_lines(stderr, &tx, Event::Qemu));

    let deadline = start + boot.timeout;
    let mut open_streams = 2;
    let mut exit_seen_at: Option<Instant> = None;
    while open_streams > 0 {
        let now = Instant::now();
        // After the exit marker the guest powers off at once; don't wait long for it.
        let limit =
            exit_seen_at.map_or(deadline, |at| (at + Duration::from_secs(30)).min(deadline));
        if now >= limit {
            if exit_seen_at.is_none() {
                report.timed_out = true;
                println!(
                    "vm-test: timeout after {} s: killing qemu",
                    boot.timeout.as_secs()
                );
            }
            break;
        }
        match rx.recv_timeout(limit - now) {
            Ok(Event::Console(line)) => {
                println!("vm {:>6.1}| {line}", start.elapsed().as_secs_f64());
                report.feed(&line);
                if report.ready.is_some() && report.boot_secs.is_none() {
                    report.boot_secs = Some(start.elapsed().as_secs_f64());
                }
                if report.exit_marker.is_some() && exit_seen_at.is_none() {
                    exit_seen_at = Some(Instant::now());
                }
            }
            Ok(Event::Qemu(line)) => {
                // -cpu max lists features TCG lacks; that is expected noise.
                if !line.contains("TCG doesn't support requested feature") {
                    println!("qemu: {line}");
                }
            }
            Ok(Event::Closed) => open_streams -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // QEMU has normally exited by now (poweroff); make sure of it.
    if child.try_wait()?.is_none() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    report.total_secs = start.elapsed().as_secs_f64();
    if !status.success() && !report.timed_out {
        println!("vm-test: qemu exited with {status}");
    }
    Ok(())
}

fn read_lines(stream: impl Read, tx: &mpsc::Sender<Event>, wrap: fn(String) -> Event) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line =
                    strip_escapes(String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']));
                if tx.send(wrap(line)).is_err() {
                    return;
                }
            }
        }
    }
    let _ = tx.send(Event::Closed);
}

/// Drops terminal escape sequences (SeaBIOS clears the screen) so lines stay readable.
fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // parameters, then one final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_stripped() {
        assert_eq!(
            strip_escapes("\u{1b}c\u{1b}[?7l\u{1b}[2J\u{1b}[0mSeaBIOS"),
            "SeaBIOS"
        );
        assert_eq!(strip_escapes("plain [ok]"), "plain [ok]");
    }
}
