//! Image benchmarks (root): layer unpack per compression, the shared-layer cache hit, overlay
//! rootfs mount + teardown, and a registry pull over loopback, against copying the same files
//! with `cp -a` (the baseline: what any unpack must at least do).
//!
//! Run: `cargo bench -p podd-image --bench images`.

// A benchmark's report is its output.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use podd_image::testing::{self, TestRegistry};
use podd_image::{Compression, ImageStore, OverlayRootfs};

fn median_p99(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let p99 = v[((v.len() as f64 * 0.99).ceil() as usize).min(v.len()) - 1];
    (v[v.len() / 2], p99)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let work = tempfile::Builder::new()
        .prefix("podd-image-bench-")
        .tempdir()
        .unwrap();
    let w = work.path();
    let runs = 15;

    // Baseline: copy an unpacked busybox layer with cp -a.
    testing::write_busybox_layout(&w.join("layout-none"), Compression::None).unwrap();
    let store = ImageStore::open(w.join("seed")).unwrap();
    let seed = store
        .unpack(
            &store
                .resolve_layout(&w.join("layout-none"), "busybox")
                .unwrap(),
        )
        .unwrap();
    let mut base = Vec::new();
    for i in 0..runs {
        let to = w.join(format!("cp-{i}"));
        let t = Instant::now();
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(&seed.layer_dirs[0])
            .arg(&to)
            .status()
            .unwrap()
            .success();
        base.push(t.elapsed());
        assert!(ok);
    }
    let (base_med, _) = median_p99(base);
    let size = std::fs::metadata(seed.layer_dirs[0].join("bin/busybox"))
        .unwrap()
        .len();
    let applets = std::fs::read_dir(seed.layer_dirs[0].join("bin"))
        .unwrap()
        .count();
    println!(
        "busybox layer: {applets} entries in /bin, busybox {} KiB",
        size / 1024
    );
    println!(
        "{:<34} {:>10} {:>10} {:>12}",
        "case", "median ms", "p99 ms", "vs cp -a"
    );
    println!(
        "{:<34} {:>10.2} {:>10} {:>12}",
        "baseline: cp -a of the layer",
        ms(base_med),
        "",
        "1.00x"
    );

    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let layout = w.join(format!("layout-{c:?}"));
        if !layout.exists() {
            testing::write_busybox_layout(&layout, c).unwrap();
        }
        let mut times = Vec::new();
        for i in 0..runs {
            let store = ImageStore::open(w.join(format!("store-{c:?}-{i}"))).unwrap();
            let t = Instant::now();
            let image = store.resolve_layout(&layout, "busybox").unwrap();
            store.unpack(&image).unwrap();
            times.push(t.elapsed());
        }
        let (med, p99) = median_p99(times);
        println!(
            "{:<34} {:>10.2} {:>10.2} {:>11.2}x",
            format!("resolve + unpack ({c:?})"),
            ms(med),
            ms(p99),
            med.as_secs_f64() / base_med.as_secs_f64()
        );
    }

    // Cache hit: the layer is already in the store.
    let layout = w.join("layout-Gzip");
    let mut hits = Vec::new();
    for _ in 0..runs * 10 {
        let t = Instant::now();
        let image = store.resolve_layout(&layout, "busybox").unwrap();
        store.unpack(&image).unwrap();
        hits.push(t.elapsed());
    }
    let (med, p99) = median_p99(hits);
    println!(
        "{:<34} {:>10.3} {:>10.3}",
        "resolve + unpack (cached layer)",
        ms(med),
        ms(p99)
    );

    // Overlay rootfs mount + teardown.
    let image = store
        .unpack(&store.resolve_layout(&layout, "busybox").unwrap())
        .unwrap();
    std::fs::create_dir(w.join("containers")).unwrap();
    let mut mounts = Vec::new();
    let mut teardowns = Vec::new();
    for i in 0..100 {
        let dir = w.join(format!("containers/c{i}"));
        let t = Instant::now();
        let r = OverlayRootfs::mount(&image, &dir).unwrap();
        mounts.push(t.elapsed());
        let t = Instant::now();
        r.teardown().unwrap();
        teardowns.push(t.elapsed());
    }
    let (m, mp) = median_p99(mounts);
    let (t, tp) = median_p99(teardowns);
    println!(
        "{:<34} {:>10.3} {:>10.3}",
        "overlay rootfs mount",
        ms(m),
        ms(mp)
    );
    println!(
        "{:<34} {:>10.3} {:>10.3}",
        "overlay rootfs teardown",
        ms(t),
        ms(tp)
    );

    // Registry pull over loopback HTTP (fresh store each time: download + verify + unpack).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = TestRegistry::start_http().unwrap();
    let target = format!("{}/bench/busybox:latest", registry.host());
    rt.block_on(testing::push_layout(
        &layout,
        "busybox",
        &target,
        &registry.options(),
    ))
    .unwrap();
    let mut pulls = Vec::new();
    for i in 0..runs {
        let store = ImageStore::open(w.join(format!("pull-{i}"))).unwrap();
        let t = Instant::now();
        rt.block_on(store.prepare(&target, podd_image::PullPolicy::Always, &registry.options()))
            .unwrap();
        pulls.push(t.elapsed());
    }
    let (med, p99) = median_p99(pulls);
    println!(
        "{:<34} {:>10.2} {:>10.2} {:>11.2}x",
        "registry pull + unpack (gzip, http)",
        ms(med),
        ms(p99),
        med.as_secs_f64() / base_med.as_secs_f64()
    );
    drop(registry);
}
