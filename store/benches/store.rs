//! Store benchmark: write throughput and latency, reads, lists and watch delivery for each
//! backend, with etcd (what Kubernetes uses) as the baseline, side by side.
//!
//! `cargo bench -p podd-store --bench store` (release). Everything runs on this machine: etcd
//! on loopback with its data on the same disk as the SQLite file. Sizes are bounded so a run
//! takes well under a minute; `PODD_STORE_BENCH_SCALE=N` multiplies them.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use podd_store::testing::EtcdServer;
use podd_store::{MemStore, SqliteOptions, SqliteStore, SqliteSync, Store};

struct Figures {
    name: &'static str,
    seq_writes_per_s: f64,
    seq_p50: Duration,
    seq_p99: Duration,
    conc_writes_per_s: f64,
    conc_p50: Duration,
    conc_p99: Duration,
    get_p50: Duration,
    list_ms: f64,
    listed: usize,
    watch_p50: Duration,
    watch_p99: Duration,
    fanout_events_per_s: f64,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

const VALUE: usize = 1024;
const CONCURRENCY: usize = 64;
const ROUNDS: usize = 3;

fn median(runs: Vec<Figures>) -> Figures {
    fn mid<T: Copy + PartialOrd>(runs: &[Figures], f: impl Fn(&Figures) -> T) -> T {
        let mut v: Vec<T> = runs.iter().map(f).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v[v.len() / 2]
    }
    let r = &runs;
    Figures {
        name: r[0].name,
        seq_writes_per_s: mid(r, |f| f.seq_writes_per_s),
        seq_p50: mid(r, |f| f.seq_p50),
        seq_p99: mid(r, |f| f.seq_p99),
        conc_writes_per_s: mid(r, |f| f.conc_writes_per_s),
        conc_p50: mid(r, |f| f.conc_p50),
        conc_p99: mid(r, |f| f.conc_p99),
        get_p50: mid(r, |f| f.get_p50),
        list_ms: mid(r, |f| f.list_ms),
        listed: mid(r, |f| f.listed),
        watch_p50: mid(r, |f| f.watch_p50),
        watch_p99: mid(r, |f| f.watch_p99),
        fanout_events_per_s: mid(r, |f| f.fanout_events_per_s),
    }
}

async fn measure(name: &'static str, store: Arc<dyn Store>, scale: usize, round: usize) -> Figures {
    let p = format!("/bench/{round}");
    let seq = 500 * scale;
    let per_task = 40 * scale;
    let value = vec![b'x'; VALUE];

    // Sequential writes: one client, each waits for its acknowledgement (durable).
    let mut lat = Vec::with_capacity(seq);
    let started = Instant::now();
    for i in 0..seq {
        let t = Instant::now();
        store
            .create(&format!("{p}/seq/{i:06}"), value.clone())
            .await
            .unwrap();
        lat.push(t.elapsed());
    }
    let seq_elapsed = started.elapsed();
    lat.sort_unstable();
    let (seq_p50, seq_p99) = (pct(&lat, 0.5), pct(&lat, 0.99));

    // Concurrent writes: many clients at once, as the API server under load.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let store = Arc::clone(&store);
        let value = value.clone();
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let s = Instant::now();
                store
                    .create(&format!("{p}/conc/{t:03}/{i:05}"), value.clone())
                    .await
                    .unwrap();
                lat.push(s.elapsed());
            }
            lat
        }));
    }
    let mut clat = Vec::new();
    for t in tasks {
        clat.extend(t.await.unwrap());
    }
    let conc_elapsed = started.elapsed();
    clat.sort_unstable();

    // Point reads.
    let mut glat = Vec::with_capacity(seq);
    for i in 0..seq {
        let t = Instant::now();
        let kv = store.get(&format!("{p}/seq/{i:06}")).await.unwrap();
        glat.push(t.elapsed());
        assert!(kv.is_some());
    }
    glat.sort_unstable();

    // A full list.
    let t = Instant::now();
    let listed = store.list(&format!("{p}/")).await.unwrap().items.len();
    let list_ms = t.elapsed().as_secs_f64() * 1e3;

    // Watch delivery: from the write call to the event at a watcher.
    let from = store.revision().await.unwrap();
    let mut w = store.watch(&format!("{p}/watch/"), from).await.unwrap();
    let mut wlat = Vec::with_capacity(seq / 2);
    for i in 0..seq / 2 {
        let t = Instant::now();
        store
            .create(&format!("{p}/watch/{i:06}"), value.clone())
            .await
            .unwrap();
        w.next().await.unwrap().unwrap();
        wlat.push(t.elapsed());
    }
    wlat.sort_unstable();

    // Fan-out: many watchers on one prefix, all must get every event.
    let watchers = 200;
    let events = 100 * scale;
    let from = store.revision().await.unwrap();
    let mut streams = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        streams.push(store.watch(&format!("{p}/fan/"), from).await.unwrap());
    }
    let started = Instant::now();
    let consumers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                for _ in 0..events {
                    s.next().await.unwrap().unwrap();
                }
            })
        })
        .collect();
    for i in 0..events {
        store
            .create(&format!("{p}/fan/{i:06}"), value.clone())
            .await
            .unwrap();
    }
    for c in consumers {
        c.await.unwrap();
    }
    let fanout_events_per_s = (watchers * events) as f64 / started.elapsed().as_secs_f64();

    Figures {
        name,
        seq_writes_per_s: seq as f64 / seq_elapsed.as_secs_f64(),
        seq_p50,
        seq_p99,
        conc_writes_per_s: clat.len() as f64 / conc_elapsed.as_secs_f64(),
        conc_p50: pct(&clat, 0.5),
        conc_p99: pct(&clat, 0.99),
        get_p50: pct(&glat, 0.5),
        list_ms,
        listed,
        watch_p50: pct(&wlat, 0.5),
        watch_p99: pct(&wlat, 0.99),
        fanout_events_per_s,
    }
}

fn us(d: Duration) -> String {
    format!("{:.0}µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let scale: usize = std::env::var("PODD_STORE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let results = rt.block_on(async {
        // Data on the same disk for both durable backends.
        let dir = tempfile::Builder::new()
            .prefix("podd-store-bench-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let etcd = EtcdServer::start()
            .await
            .expect("start etcd (apt install etcd-server)");
        let etcd_store: Arc<dyn Store> = Arc::new(etcd.store().await.unwrap());
        let sqlite: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("podd.db")).unwrap());
        let normal = SqliteOptions {
            sync: SqliteSync::Normal,
            ..SqliteOptions::default()
        };
        let sqlite_normal: Arc<dyn Store> =
            Arc::new(SqliteStore::open_with(dir.path().join("normal.db"), normal).unwrap());
        let mem: Arc<dyn Store> = Arc::new(MemStore::new());
        let backends: [(&'static str, Arc<dyn Store>); 4] = [
            ("etcd 3.4 (baseline)", etcd_store),
            ("sqlite (WAL, sync=FULL)", sqlite),
            ("sqlite (WAL, sync=NORMAL)", sqlite_normal),
            ("memory", mem),
        ];
        // Rounds interleave the backends, and each figure is the median over the rounds, so a
        // burst of other disk traffic does not land on one backend only.
        let mut runs: Vec<Vec<Figures>> = (0..backends.len()).map(|_| Vec::new()).collect();
        for round in 0..ROUNDS {
            for (i, (name, store)) in backends.iter().enumerate() {
                runs[i].push(measure(name, Arc::clone(store), scale, round).await);
            }
        }
        runs.into_iter().map(median).collect::<Vec<_>>()
    });

    let base = &results[0];
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "podd-store benchmark: {VALUE}-byte values, {CONCURRENCY} concurrent writers, every write acknowledged only when durable (memory: in RAM); medians of {ROUNDS} interleaved rounds"
    )
    .unwrap();
    writeln!(
        out,
        "{:<26} {:>11} {:>8} {:>8} {:>12} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>11} {:>8}",
        "backend",
        "seq wr/s",
        "p50",
        "p99",
        "conc wr/s",
        "p50",
        "p99",
        "get p50",
        "list ms",
        "(keys)",
        "watch p50",
        "p99",
        "fanout ev/s",
        "vs etcd"
    )
    .unwrap();
    for r in &results {
        writeln!(
            out,
            "{:<26} {:>11.0} {:>8} {:>8} {:>12.0} {:>8} {:>8} {:>8} {:>9.1} {:>9} {:>9} {:>8} {:>11.0} {:>7.1}x",
            r.name,
            r.seq_writes_per_s,
            us(r.seq_p50),
            us(r.seq_p99),
            r.conc_writes_per_s,
            us(r.conc_p50),
            us(r.conc_p99),
            us(r.get_p50),
            r.list_ms,
            r.listed,
            us(r.watch_p50),
            us(r.watch_p99),
            r.fanout_events_per_s,
            r.conc_writes_per_s / base.conc_writes_per_s,
        )
        .unwrap();
    }
    for r in &results[1..] {
        writeln!(
            out,
            "{}, as a multiple of etcd: sequential writes {:.1}x, concurrent writes {:.1}x, get {:.1}x as fast, list {:.1}x as fast, watch delivery {:.1}x as fast, fan-out to 200 watchers {:.1}x",
            r.name,
            r.seq_writes_per_s / base.seq_writes_per_s,
            r.conc_writes_per_s / base.conc_writes_per_s,
            base.get_p50.as_secs_f64() / r.get_p50.as_secs_f64().max(1e-9),
            base.list_ms / r.list_ms.max(1e-9),
            base.watch_p50.as_secs_f64() / r.watch_p50.as_secs_f64().max(1e-9),
            r.fanout_events_per_s / base.fanout_events_per_s,
        )
        .unwrap();
    }
}
