//! cgroup v2 manager: creates a container's cgroup under a configurable root, applies the
//! spec's limits, reads stats, freezes/thaws and kills every process in it.
//!
//! Controllers are enabled in the ancestors' `cgroup.subtree_control` only when a limit needs
//! them, so a spec without limits works on a tree without controllers (such as a hybrid host's
//! `/sys/fs/cgroup/unified`), and a spec with limits there fails with [`Error::ControllerMissing`].

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use crate::error::{Error, Result, io_err};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Find the cgroup v2 mount: `/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified` on a
/// hybrid one.
pub fn detect_root() -> Result<PathBuf> {
    for candidate in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if let Ok(st) = nix::sys::statfs::statfs(candidate)
            && st.filesystem_type().0 == CGROUP2_SUPER_MAGIC
        {
            return Ok(PathBuf::from(candidate));
        }
    }
    Err(Error::NoCgroup2)
}

/// One write of a limit into a cgroup interface file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitWrite {
    /// The controller that provides the file ("cpu", "memory", ...).
    pub controller: String,
    /// The interface file name ("memory.max").
    pub file: String,
    /// The value written.
    pub value: String,
}

impl LimitWrite {
    /// Whether this write sets the value a new cgroup already has: no limit.
    pub fn is_unlimited(&self) -> bool {
        match self.file.as_str() {
            "pids.max" | "memory.max" | "memory.swap.max" => self.value == "max",
            "cpu.max" => self.value == "max 100000",
            f => f.starts_with("hugetlb.") && f.ends_with(".max") && self.value == "max",
        }
    }
}

fn w(controller: &str, file: impl Into<String>, value: impl ToString) -> LimitWrite {
    LimitWrite {
        controller: controller.into(),
        file: file.into(),
        value: value.to_string(),
    }
}

/// cgroup v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000), as runc converts.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// blkio weight (10..1000) to io.weight (1..10000).
pub fn blkio_to_io_weight(weight: u16) -> u64 {
    let w = u64::from(weight).clamp(10, 1000);
    1 + (w - 10) * 9999 / 990
}

fn limit_value(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

/// Translate the spec's resources into cgroup v2 file writes (pure; unit-tested).
pub fn limit_writes(res: &LinuxResources) -> Result<Vec<LimitWrite>> {
    let mut out = Vec::new();
    if let Some(cpu) = res.cpu() {
        if let Some(shares) = cpu.shares()
            && shares > 0
        {
            out.push(w("cpu", "cpu.weight", shares_to_weight(shares)));
        }
        if cpu.quota().is_some() || cpu.period().is_some() {
            let quota = match cpu.quota() {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".into(),
            };
            out.push(w(
                "cpu",
                "cpu.max",
                format!("{quota} {}", cpu.period().unwrap_or(100_000)),
            ));
        }
        if let Some(burst) = cpu.burst() {
            out.push(w("cpu", "cpu.max.burst", burst));
        }
        if let Some(idle) = cpu.idle() {
            out.push(w("cpu", "cpu.idle", idle));
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
            out.push(w("cpuset", "cpuset.cpus", cpus));
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
            out.push(w("cpuset", "cpuset.mems", mems));
        }
        if cpu.realtime_runtime().is_some() || cpu.realtime_period().is_some() {
            return Err(Error::InvalidSpec(
                "linux.resources.cpu.realtimeRuntime/realtimePeriod are cgroup v1 only".into(),
            ));
        }
    }
    if let Some(mem) = res.memory() {
        if let Some(limit) = mem.limit() {
            out.push(w("memory", "memory.max", limit_value(limit)));
        }
        if let Some(low) = mem.reservation() {
            out.push(w("memory", "memory.low", limit_value(low)));
        }
        if let Some(swap) = mem.swap() {
            // OCI's swap is memory+swap (v1 memsw); v2's memory.swap.max is swap alone.
            let value = match (swap, mem.limit()) {
                (s, _) if s < 0 => "max".to_string(),
                (s, Some(l)) if l > 0 => {
                    if s < l {
                        return Err(Error::InvalidSpec(format!(
                            "linux.resources.memory.swap ({s}) is memory+swap and must be >= memory.limit ({l})"
                        )));
                    }
                    (s - l).to_string()
                }
                (s, _) => s.to_string(),
            };
            out.push(w("memory", "memory.swap.max", value));
        }
    }
    if let Some(pids) = res.pids() {
        let limit = pids.limit();
        out.push(w(
            "pids",
            "pids.max",
            if limit <= 0 {
                "max".into()
            } else {
                limit.to_string()
            },
        ));
    }
    if let Some(bio) = res.block_io() {
        if let Some(weight) = bio.weight() {
            out.push(w("io", "io.weight", blkio_to_io_weight(weight)));
        }
        let throttles = [
            ("rbps", bio.throttle_read_bps_device()),
            ("wbps", bio.throttle_write_bps_device()),
            ("riops", bio.throttle_read_iops_device()),
            ("wiops", bio.throttle_write_iops_device()),
        ];
        for (key, devs) in throttles {
            for d in devs.iter().flatten() {
                out.push(w(
                    "io",
                    "io.max",
                    format!("{}:{} {key}={}", d.major(), d.minor(), d.rate()),
                ));
            }
        }
    }
    for h in res.hugepage_limits().iter().flatten() {
        out.push(w(
            "hugetlb",
            format!("hugetlb.{}.max", h.page_size()),
            limit_value(h.limit()),
        ));
    }
    if let Some(unified) = res.unified() {
        let mut keys: Vec<_> = unified.keys().collect();
        keys.sort();
        for key in keys {
            let controller = key.split('.').next().unwrap_or_default();
            if key.contains('/') || controller.is_empty() || !key.contains('.') {
                return Err(Error::InvalidSpec(format!(
                    "linux.resources.unified key {key:?} is not a cgroup file"
                )));
            }
            out.push(w(controller, key.clone(), &unified[key]));
        }
    }
    Ok(out)
}

/// Stats read from a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// cpu.stat key/values (usage_usec, user_usec, system_usec, nr_periods, nr_throttled, throttled_usec).
    pub cpu: BTreeMap<String, u64>,
    /// memory.current, when the memory controller is enabled.
    pub memory_current: Option<u64>,
    /// memory.events (low, high, max, oom, oom_kill, ...).
    pub memory_events: BTreeMap<String, u64>,
    /// pids.current, when the pids controller is enabled.
    pub pids_current: Option<u64>,
}

fn parse_flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// A container's cgroup: `root/relative`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cgroup {
    /// The cgroup2 mount (or a subtree of it) everything lives under.
    pub root: PathBuf,
    /// The path below `root`, without a leading '/'.
    pub relative: PathBuf,
    /// Directories this cgroup created (deepest last) and so removes.
    #[serde(default)]
    pub created: Vec<PathBuf>,
}

impl Cgroup {
    /// A cgroup at `root/relative` (a leading '/' on `relative` is ignored).
    pub fn new(root: impl Into<PathBuf>, relative: impl AsRef<Path>) -> Result<Cgroup> {
        let rel = relative.as_ref();
        let relative: PathBuf = rel
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect();
        if rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
            || relative.as_os_str().is_empty()
        {
            return Err(Error::InvalidSpec(format!(
                "cgroups path {:?} must be a non-empty path without '..'",
                rel
            )));
        }
        if rel.to_string_lossy().contains(':') {
            return Err(Error::InvalidSpec(format!(
                "cgroups path {rel:?} looks like a systemd slice:prefix:name path; podd-oci manages cgroupfs paths only"
            )));
        }
        Ok(Cgroup {
            root: root.into(),
            relative,
            created: Vec::new(),
        })
    }

    /// The cgroup's directory.
    pub fn path(&self) -> PathBuf {
        self.root.join(&self.relative)
    }

    /// Create the directories (recording the ones made here) and apply `resources`.
    pub fn create(&mut self, resources: Option<&LinuxResources>) -> Result<()> {
        let mut writes = match resources {
            Some(r) => limit_writes(r)?,
            None => Vec::new(),
        };
        // "No limit" (`pids.limit: -1`, as engines send by default) is what a new cgroup has
        // anyway: it needs no controller, so where the controller is missing it is skipped.
        if writes.iter().any(LimitWrite::is_unlimited) {
            let available =
                fs::read_to_string(self.root.join("cgroup.controllers")).unwrap_or_default();
            writes.retain(|lw| {
                let keep =
                    !lw.is_unlimited() || available.split_whitespace().any(|c| c == lw.controller);
                if !keep {
                    tracing::debug!(file = %lw.file, "no limit asked and no controller: skipped");
                }
                keep
            });
        }
        let mut needed: Vec<(&str, &str)> = Vec::new();
        for lw in &writes {
            if !needed.iter().any(|(c, _)| *c == lw.controller) {
                needed.push((&lw.controller, &lw.file));
            }
        }
        if !needed.is_empty() {
            let available = fs::read_to_string(self.root.join("cgroup.controllers"))
                .map_err(io_err("read", self.root.join("cgroup.controllers")))?;
            let list: Vec<&str> = available.split_whitespace().collect();
            for (controller, file) in &needed {
                if !list.contains(controller) {
                    return Err(Error::ControllerMissing {
                        controller: controller.to_string(),
                        root: self.root.clone(),
                        available: available.trim().to_string(),
                        setting: file.to_string(),
                    });
                }
            }
        }
        // mkdir each level, remembering what we made; retry if a sibling's delete races us.
        let mut dir = self.root.clone();
        for comp in self.relative.components() {
            dir.push(comp);
            match fs::create_dir(&dir) {
                Ok(()) => self.created.push(dir.clone()),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    if dir == self.path() {
                        self.remove_created();
                        return Err(Error::InvalidSpec(format!(
                            "cgroup {} already exists; another container uses this cgroups path",
                            dir.display()
                        )));
                    }
                }
                Err(e) => {
                    self.remove_created();
                    return Err(io_err("create cgroup", dir)(e));
                }
            }
        }
        if let Err(e) = self.apply(&writes, &needed) {
            self.remove_created();
            return Err(e);
        }
        Ok(())
    }

    fn apply(&self, writes: &[LimitWrite], needed: &[(&str, &str)]) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        // Enable each controller from the root down to the leaf's parent.
        let mut dir = self.root.clone();
        for comp in self.relative.components() {
            let control = dir.join("cgroup.subtree_control");
            let enabled = fs::read_to_string(&control).unwrap_or_default();
            for (c, _) in needed {
                if !enabled.split_whitespace().any(|e| e == *c) {
                    fs::write(&control, format!("+{c}"))
                        .map_err(io_err("enable controller in", control.clone()))?;
                }
            }
            dir.push(comp);
        }
        let leaf = self.path();
        for lw in writes {
            let file = leaf.join(&lw.file);
            fs::write(&file, &lw.value).map_err(|source| Error::Io {
                what: "write cgroup limit",
                path: PathBuf::from(format!("{} (value {:?})", file.display(), lw.value)),
                source,
            })?;
        }
        Ok(())
    }

    /// Move process `pid` into this cgroup (0 means the caller).
    pub fn add_process(&self, pid: i32) -> Result<()> {
        let procs = self.path().join("cgroup.procs");
        fs::write(&procs, pid.to_string()).map_err(io_err("join cgroup", procs))
    }

    /// Pids in the cgroup.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let procs = self.path().join("cgroup.procs");
        let text = fs::read_to_string(&procs).map_err(io_err("read", procs))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    fn events(&self) -> BTreeMap<String, u64> {
        fs::read_to_string(self.path().join("cgroup.events"))
            .map(|t| parse_flat_keyed(&t))
            .unwrap_or_default()
    }

    /// Whether any live process is in the cgroup (or its children).
    pub fn populated(&self) -> bool {
        self.events().get("populated").copied().unwrap_or(0) == 1
    }

    /// Read cpu/memory/pids stats; files of disabled controllers are left out.
    pub fn stats(&self) -> Result<Stats> {
        let dir = self.path();
        let cpu_stat = dir.join("cpu.stat");
        let cpu =
            parse_flat_keyed(&fs::read_to_string(&cpu_stat).map_err(io_err("read", cpu_stat))?);
        let read_u64 = |f: &str| {
            fs::read_to_string(dir.join(f))
                .ok()
                .and_then(|t| t.trim().parse().ok())
        };
        Ok(Stats {
            cpu,
            memory_current: read_u64("memory.current"),
            memory_events: fs::read_to_string(dir.join("memory.events"))
                .map(|t| parse_flat_keyed(&t))
                .unwrap_or_default(),
            pids_current: read_u64("pids.current"),
        })
    }

    /// Freeze (true) or thaw (false) every process, waiting until the kernel reports it done.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        let file = self.path().join("cgroup.freeze");
        fs::write(&file, if frozen { "1" } else { "0" }).map_err(io_err("write", file))?;
        let want = u64::from(frozen);
        if !self.wait_event("frozen", want, Instant::now() + Duration::from_secs(5)) {
            return Err(Error::Timeout(format!(
                "waiting for {} to report frozen {want}",
                self.path().display()
            )));
        }
        Ok(())
    }

    /// Wait until `cgroup.events` reports `key` as `want`, or `deadline`; true once it does (or
    /// once the cgroup is gone and `want` is 0). The kernel signals each change of the file
    /// with POLLPRI, so this sleeps until an event, not in a polling loop.
    fn wait_event(&self, key: &str, want: u64, deadline: Instant) -> bool {
        use std::os::unix::fs::FileExt;
        let Ok(file) = fs::File::open(self.path().join("cgroup.events")) else {
            return want == 0;
        };
        let mut buf = [0u8; 256];
        loop {
            // A read from the start also re-arms the notification.
            let Ok(n) = file.read_at(&mut buf, 0) else {
                return want == 0;
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            if parse_flat_keyed(&text).get(key).copied().unwrap_or(0) == want {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let timeout = nix::poll::PollTimeout::try_from(left.as_micros().div_ceil(1000))
                .unwrap_or(nix::poll::PollTimeout::MAX);
            let mut pfd = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&file),
                nix::poll::PollFlags::POLLPRI,
            )];
            let _ = nix::poll::poll(&mut pfd, timeout);
        }
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> bool {
        self.events().get("frozen").copied().unwrap_or(0) == 1
    }

    /// SIGKILL every process in the cgroup (cgroup.kill, or each pid on kernels before 5.14).
    pub fn kill_all(&self) -> Result<()> {
        let file = self.path().join("cgroup.kill");
        match fs::write(&file, "1") {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound && self.path().exists() => {
                // Frozen tasks cannot die; thaw first.
                let _ = fs::write(self.path().join("cgroup.freeze"), "0");
                for pid in self.pids()? {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("write", file)(e)),
        }
    }

    /// Kill what is left, wait until empty, and remove the directories this cgroup created.
    pub fn destroy(&self) -> Result<()> {
        let leaf = self.path();
        if !leaf.exists() {
            return Ok(());
        }
        if self.populated() {
            self.kill_all()?;
            if !self.wait_event("populated", 0, Instant::now() + Duration::from_secs(10)) {
                return Err(Error::Timeout(format!(
                    "waiting for the processes of {} to exit",
                    leaf.display()
                )));
            }
        }
        let dirs: Vec<PathBuf> = if self.created.is_empty() {
            vec![leaf.clone()]
        } else {
            self.created.clone()
        };
        for (i, dir) in dirs.iter().enumerate().rev() {
            let is_leaf = i + 1 == dirs.len();
            let mut tries = 0;
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    // A shared ancestor still holds another container: leave it to that one.
                    Err(e)
                        if !is_leaf
                            && matches!(
                                e.raw_os_error(),
                                Some(libc::EBUSY) | Some(libc::ENOTEMPTY)
                            ) =>
                    {
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 1000 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_micros(500));
                    }
                    Err(e) => return Err(io_err("remove cgroup", dir.clone())(e)),
                }
            }
        }
        Ok(())
    }

    /// Remove just the directories created, without waiting (used when create fails early).
    fn remove_created(&self) {
        for dir in self.created.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    #[test]
    fn translates_limits() {
        let res = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(50_000i64)
                    .period(100_000u64)
                    .shares(1024u64)
                    .build()
                    .unwrap(),
            )
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .swap(128i64 << 20)
                    .reservation(1i64 << 20)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(10i64).build().unwrap())
            .build()
            .unwrap();
        let writes = limit_writes(&res).unwrap();
        let get = |f: &str| writes.iter().find(|w| w.file == f).map(|w| w.value.clone());
        assert_eq!(get("cpu.max").as_deref(), Some("50000 100000"));
        assert_eq!(get("cpu.weight").as_deref(), Some("39"));
        assert_eq!(get("memory.max").as_deref(), Some("67108864"));
        assert_eq!(get("memory.swap.max").as_deref(), Some("67108864"));
        assert_eq!(get("memory.low").as_deref(), Some("1048576"));
        assert_eq!(get("pids.max").as_deref(), Some("10"));
    }

    #[test]
    fn weights_convert_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
    }

    #[test]
    fn no_limit_needs_no_controller() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "hugetlb\n").unwrap();
        let res = |limit: i64| -> LinuxResources {
            serde_json::from_value(serde_json::json!({"pids": {"limit": limit}})).unwrap()
        };
        let mut cg = Cgroup::new(dir.path(), "a/b").unwrap();
        cg.create(Some(&res(-1)))
            .expect("pids.limit -1 needs no pids controller");
        assert!(cg.path().is_dir());
        assert!(!cg.path().join("pids.max").exists(), "nothing written");
        let mut cg = Cgroup::new(dir.path(), "c").unwrap();
        let err = cg.create(Some(&res(100))).unwrap_err();
        assert!(matches!(err, Error::ControllerMissing { .. }), "{err}");
    }

    #[test]
    fn rejects_bad_paths() {
        assert!(Cgroup::new("/sys/fs/cgroup", "../x").is_err());
        assert!(Cgroup::new("/sys/fs/cgroup", "system.slice:podd:x").is_err());
        assert_eq!(
            Cgroup::new("/r", "/a/b").unwrap().path(),
            PathBuf::from("/r/a/b")
        );
    }
}
