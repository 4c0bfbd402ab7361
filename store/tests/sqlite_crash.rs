//! Killing the server process at any point loses no acknowledged write.
//!
//! The test binary re-executes itself as a child (`crash_child`, which does nothing unless
//! `PODD_STORE_CRASH_DB` is set). The child writes keys from several concurrent tasks and
//! prints a line for each acknowledged write; the parent SIGKILLs it at a random moment,
//! reopens the database and checks that every acknowledged write is there with its revision.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use podd_store::{SqliteOptions, SqliteStore, SqliteSync, Store};
use rand::Rng;

const DB_ENV: &str = "PODD_STORE_CRASH_DB";
const ROUND_ENV: &str = "PODD_STORE_CRASH_ROUND";
const SYNC_ENV: &str = "PODD_STORE_CRASH_SYNC";

fn options(sync: &str) -> SqliteOptions {
    SqliteOptions {
        sync: if sync == "normal" {
            SqliteSync::Normal
        } else {
            SqliteSync::Full
        },
        ..SqliteOptions::default()
    }
}

#[test]
fn crash_child() {
    let (Ok(db), Ok(round)) = (std::env::var(DB_ENV), std::env::var(ROUND_ENV)) else {
        return; // only meaningful when run by `crash_rounds`
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let sync = std::env::var(SYNC_ENV).unwrap_or_default();
        let store = Arc::new(SqliteStore::open_with(&db, options(&sync)).unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for task in 0..4 {
            let store = Arc::clone(&store);
            let tx = tx.clone();
            let round = round.clone();
            tokio::spawn(async move {
                for i in 0u64.. {
                    let key = format!("/crash/{round}/{task}/{i}");
                    let value = format!("{round}-{task}-{i}");
                    // Mix creates with updates of an existing key, so both paths are covered.
                    let rev = if i % 4 == 3 {
                        let k = format!("/crash/{round}/{task}/{}", i - 1);
                        store
                            .update(&k, value.clone().into_bytes(), None)
                            .await
                            .map(|r| (k, r))
                    } else {
                        store
                            .create(&key, value.clone().into_bytes())
                            .await
                            .map(|r| (key, r))
                    };
                    let (k, r) = rev.unwrap();
                    if tx.send(format!("ACK {r} {k} {value}")).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut out = std::io::stdout().lock();
        while let Some(line) = rx.recv().await {
            writeln!(out, "{line}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn killing_the_writer_loses_no_acknowledged_write_sync_full() {
    crash_rounds("full");
}

#[test]
fn killing_the_writer_loses_no_acknowledged_write_sync_normal() {
    crash_rounds("normal");
}

fn crash_rounds(sync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("podd.db");
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let mut total_acked = 0usize;
    let mut last_rev = 0i64;
    for round in 0..6 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(DB_ENV, &db)
            .env(ROUND_ENV, round.to_string())
            .env(SYNC_ENV, sync)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let kill_after = Duration::from_millis(rng.gen_range(100..700));
        // Read acknowledgements on a thread; kill from here at the chosen moment, counted from
        // the first acknowledgement, so a slow start on a loaded machine cannot make the kill
        // land before any write (the point is to kill in the middle of a stream of writes).
        let (first_ack_tx, first_ack) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.splitn(4, ' ');
                if parts.next() != Some("ACK") {
                    continue;
                }
                let rev: i64 = parts.next().unwrap().parse().unwrap();
                let key = parts.next().unwrap().to_string();
                let value = parts.next().unwrap().to_string();
                acks.push((rev, key, value));
                if acks.len() == 1 {
                    let _ = first_ack_tx.send(());
                }
            }
            acks
        });
        if first_ack.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("round {round}: the child acknowledged no write in 60 s");
        }
        std::thread::sleep(kill_after);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        assert!(!acks.is_empty(), "round {round}: no acknowledged write");

        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = SqliteStore::open_with(&db, options(sync)).unwrap();
            // The last write to each key that was acknowledged must be there.
            let mut latest = std::collections::HashMap::new();
            for (rev, key, value) in &acks {
                let e = latest.entry(key.clone()).or_insert((*rev, value.clone()));
                if *rev > e.0 {
                    *e = (*rev, value.clone());
                }
            }
            for (key, (rev, value)) in &latest {
                let kv = store
                    .get(key)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("round {round}: acknowledged {key}@{rev} lost"));
                assert!(
                    kv.mod_revision >= *rev,
                    "round {round}: {key} went back from {rev} to {}",
                    kv.mod_revision
                );
                if kv.mod_revision == *rev {
                    assert_eq!(kv.value, value.as_bytes());
                }
            }
            let now = store.revision().await.unwrap();
            let max_acked = acks.iter().map(|a| a.0).max().unwrap_or(0);
            assert!(
                now >= max_acked && now >= last_rev,
                "round {round}: revision went back"
            );
            // Every acknowledged revision is in the log, with its key.
            let mut w = store.watch("/crash/", last_rev).await.unwrap();
            let n = usize::try_from(now - last_rev).unwrap();
            let evs = podd_store::conformance::take_events(&mut w, n).await;
            let by_rev: std::collections::HashMap<i64, String> =
                evs.into_iter().map(|e| (e.revision(), e.kv.key)).collect();
            for (rev, key, _) in &acks {
                assert_eq!(
                    by_rev.get(rev),
                    Some(key),
                    "round {round}: log lost revision {rev}"
                );
            }
            last_rev = now;
        });
        total_acked += acks.len();
    }
    assert!(
        total_acked > 100,
        "only {total_acked} writes acknowledged over all rounds"
    );
}
