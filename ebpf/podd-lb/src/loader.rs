//! Loading, attaching, pinning and re-adopting the programs and maps; applying planned writes.

use crate::plan::{Op, Programmed, State, frontend_of, service_key};
use crate::spec::{Frontend, ServiceEntry};
use crate::{LbError, OBJECT};
use aya::maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, PerCpuValues};
use aya::programs::links::{FdLink, LinkError};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use aya::{Ebpf, EbpfLoader};
use podd_lb_common::{
    Backend, BackendKey, FLAG_MAGLEV, MAGLEV_TABLE_SIZE, MAP_AFFINITY, MAP_BACKENDS, MAP_MAGLEV,
    MAP_REVNAT, MAP_SERVICES, MAP_STATS, MaglevKey, ServiceKey, ServiceStats, ServiceValue,
};
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where podd pins its maps and links by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/podd";

/// The four programs, by their function names in podd-ebpf.
pub const PROGRAMS: [&str; 4] = [
    "podd_connect4",
    "podd_sendmsg4",
    "podd_recvmsg4",
    "podd_getpeername4",
];

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Where to attach and where to pin.
#[derive(Debug, Clone)]
pub struct LbConfig {
    /// A directory on a bpffs; maps go in it, links in `links/` below it. One loader per
    /// directory.
    pub pin_dir: PathBuf,
    /// cgroup v2 directories to attach to (the pods' cgroup root, optionally the host root).
    pub cgroups: Vec<PathBuf>,
}

impl LbConfig {
    pub fn new(cgroup: impl Into<PathBuf>) -> Self {
        LbConfig {
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            cgroups: vec![cgroup.into()],
        }
    }
}

/// Map writes made by one sync. Every field counts single-element syscalls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub service_writes: u32,
    pub service_deletes: u32,
    pub backend_writes: u32,
    pub backend_deletes: u32,
    pub maglev_writes: u32,
    pub maglev_deletes: u32,
    pub stats_resets: u32,
    /// Time spent in map syscalls.
    pub write_time: std::time::Duration,
}

impl SyncReport {
    /// All map writes and deletes.
    pub fn total(&self) -> u32 {
        self.service_writes
            + self.service_deletes
            + self.backend_writes
            + self.backend_deletes
            + self.maglev_writes
            + self.maglev_deletes
            + self.stats_resets
    }
}

/// Run statistics of one program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramStats {
    pub program: &'static str,
    pub run_count: u64,
    pub run_time: std::time::Duration,
}

/// Makes the kernel count run time and run count of every BPF program while the returned fd is
/// open (BPF_ENABLE_STATS; it costs two clock reads per program run).
pub fn enable_program_stats() -> Result<std::os::fd::OwnedFd, LbError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| LbError::Io {
        what: "enabling BPF run-time statistics",
        path: PathBuf::from("bpf(BPF_ENABLE_STATS)"),
        source: e.io_error,
    })
}

/// The loaded load balancer. Dropping it leaves the programs attached and the maps pinned, so a
/// restarted loader adopts them with no gap; [`LoadBalancer::shutdown`] removes everything.
pub struct LoadBalancer {
    config: LbConfig,
    ebpf: Ebpf,
    services: BpfHashMap<MapData, ServiceKey, ServiceValue>,
    backends: BpfHashMap<MapData, BackendKey, Backend>,
    maglev: BpfHashMap<MapData, MaglevKey, Backend>,
    stats: PerCpuArray<MapData, ServiceStats>,
    state: State,
    /// The planned state may differ from the maps after a failed write: re-read before the next
    /// sync.
    stale: bool,
    ncpus: usize,
    links: Vec<PathBuf>,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LbError + 'a {
    move |source| LbError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn map_err(map: &'static str, op: &'static str) -> impl FnOnce(MapError) -> LbError {
    move |source| LbError::Map {
        map,
        op,
        source: Box::new(source),
    }
}

fn is_bpffs(path: &Path) -> Result<bool, LbError> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| LbError::Io {
        what: "checking the file system of",
        path: path.to_owned(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: an all-zero statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(LbError::Io {
            what: "checking the file system of",
            path: path.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// "/sys/fs/cgroup/unified/x" -> "sys_fs_cgroup_unified_x": a file name naming the cgroup.
fn cgroup_tag(path: &Path) -> String {
    path.to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Link pins are `<cgroup tag>__<program>__g<generation>` (bpffs forbids dots in names).
fn link_generation(name: &str) -> Option<u64> {
    name.rsplit_once("__g")?.1.parse().ok()
}

impl LoadBalancer {
    /// Loads the programs (re-using maps already pinned in `pin_dir`), attaches them to every
    /// configured cgroup with new links, pins those, and only then removes the links of a
    /// previous loader: during the handover both run, which is harmless (the second sees a
    /// backend address, not a VIP) and leaves no moment without translation. Then reads the
    /// maps back, so that the next [`sync`](Self::sync) writes only differences.
    pub fn start(config: LbConfig) -> Result<Self, LbError> {
        let pin_dir = config.pin_dir.clone();
        std::fs::create_dir_all(&pin_dir).map_err(io("creating the pin directory", &pin_dir))?;
        if !is_bpffs(&pin_dir)? {
            return Err(LbError::NotBpffs { path: pin_dir });
        }
        let links_dir = pin_dir.join("links");
        std::fs::create_dir_all(&links_dir)
            .map_err(io("creating the link pin directory", &links_dir))?;

        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pin_dir)
            .load(OBJECT)
            .map_err(|e| LbError::Load(Box::new(e)))?;

        let old_links: Vec<PathBuf> = std::fs::read_dir(&links_dir)
            .map_err(io("listing", &links_dir))?
            .flatten()
            .map(|e| e.path())
            .collect();
        let generation = old_links
            .iter()
            .filter_map(|p| link_generation(&p.file_name()?.to_string_lossy()))
            .max()
            .map_or(1, |g| g + 1);

        let mut links = Vec::new();
        let cgroups: Vec<(PathBuf, File)> = config
            .cgroups
            .iter()
            .map(|c| Ok((c.clone(), File::open(c).map_err(io("opening cgroup", c))?)))
            .collect::<Result<_, LbError>>()?;
        for name in PROGRAMS {
            let prog: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or(LbError::Missing(name))?
                .try_into()
                .map_err(|e| LbError::Program {
                    name,
                    source: Box::new(e),
                })?;
            prog.load().map_err(|e| LbError::Program {
                name,
                source: Box::new(e),
            })?;
            for (path, file) in &cgroups {
                let attach_err = |e: String| LbError::Attach {
                    program: name,
                    cgroup: path.clone(),
                    reason: e,
                };
                // bpf_link attachments always allow several programs per cgroup.
                let id = prog
                    .attach(file, CgroupAttachMode::Single)
                    .map_err(|e| attach_err(e.to_string()))?;
                let link = prog.take_link(id).map_err(|e| attach_err(e.to_string()))?;
                let fd_link: FdLink = link.try_into().map_err(|e: LinkError| {
                    attach_err(format!("not a bpf_link (kernel older than 5.7?): {e}"))
                })?;
                let pin = links_dir.join(format!("{}__{name}__g{generation}", cgroup_tag(path)));
                fd_link.pin(&pin).map_err(|e| LbError::Pin {
                    path: pin.clone(),
                    reason: format!("{e}: {:?}", std::error::Error::source(&e)),
                })?;
                links.push(pin);
            }
        }
        // The new links are live: drop the previous loader's (and those of cgroups no longer
        // configured). Removing the last reference to a link detaches it.
        for old in old_links {
            if !links.contains(&old) {
                detach_pinned_link(&old).map_err(io("detaching old link", &old))?;
            }
        }

        let services = take_hash(&mut ebpf, MAP_SERVICES)?;
        let backends = take_hash(&mut ebpf, MAP_BACKENDS)?;
        let maglev = take_hash(&mut ebpf, MAP_MAGLEV)?;
        let stats = PerCpuArray::try_from(
            ebpf.take_map(MAP_STATS)
                .ok_or(LbError::Missing(MAP_STATS))?,
        )
        .map_err(map_err(MAP_STATS, "opening"))?;
        let ncpus = aya::util::nr_cpus().map_err(|(_, e)| LbError::Io {
            what: "counting possible CPUs from",
            path: PathBuf::from("/sys/devices/system/cpu/possible"),
            source: e,
        })?;
        let mut lb = LoadBalancer {
            config,
            ebpf,
            services,
            backends,
            maglev,
            stats,
            state: State::default(),
            stale: false,
            ncpus,
            links,
        };
        lb.adopt()?;
        tracing::info!(
            pin_dir = %lb.config.pin_dir.display(),
            cgroups = ?lb.config.cgroups,
            adopted_services = lb.state.services.len(),
            "service load balancer attached"
        );
        Ok(lb)
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &LbConfig {
        &self.config
    }

    /// Pinned link paths of this loader.
    pub fn links(&self) -> &[PathBuf] {
        &self.links
    }

    /// Number of service ports in the maps.
    pub fn service_count(&self) -> usize {
        self.state.services.len()
    }

    /// Reads the maps into `self.state`, and deletes stray elements a crashed writer may have
    /// left (slots beyond a published count, entries of services that no longer exist).
    fn adopt(&mut self) -> Result<(), LbError> {
        let mut state = State::default();
        let entries: Vec<(ServiceKey, ServiceValue)> = self
            .services
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(MAP_SERVICES, "reading"))?;
        let mut stray_services = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for (k, v) in entries {
            if frontend_of(&k).is_none()
                || v.id >= podd_lb_common::MAX_SERVICES
                || !ids.insert(v.id)
            {
                stray_services.push(k);
                continue;
            }
            let mut slots = Vec::with_capacity(v.count as usize);
            for slot in 0..v.count {
                match self.backends.get(
                    &BackendKey {
                        service_id: v.id,
                        slot,
                    },
                    0,
                ) {
                    Ok(b) => slots.push(b),
                    Err(MapError::KeyNotFound) => break,
                    Err(e) => return Err(map_err(MAP_BACKENDS, "reading")(e)),
                }
            }
            let mut maglev = Vec::new();
            if v.flags & FLAG_MAGLEV != 0 && v.count > 0 {
                for index in 0..MAGLEV_TABLE_SIZE {
                    // A missing entry reads as the zero backend, which differs from any real
                    // one, so the next sync rewrites it.
                    maglev.push(
                        self.maglev
                            .get(
                                &MaglevKey {
                                    service_id: v.id,
                                    index,
                                },
                                0,
                            )
                            .unwrap_or_default(),
                    );
                }
            }
            state.services.insert(
                k,
                Programmed {
                    id: v.id,
                    flags: v.flags,
                    slots,
                    maglev,
                },
            );
        }
        for k in stray_services {
            self.services
                .remove(&k)
                .map_err(map_err(MAP_SERVICES, "deleting a stray entry"))?;
        }
        let live: HashMap<u32, &Programmed> = state.services.values().map(|p| (p.id, p)).collect();
        let stray_backends: Vec<BackendKey> = self
            .backends
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                live.get(&k.service_id)
                    .is_none_or(|p| k.slot as usize >= p.slots.len())
            })
            .collect();
        for k in stray_backends {
            ignore_missing(self.backends.remove(&k)).map_err(map_err(MAP_BACKENDS, "deleting"))?;
        }
        let stray_maglev: Vec<MaglevKey> = self
            .maglev
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                live.get(&k.service_id)
                    .is_none_or(|p| k.index as usize >= p.maglev.len())
            })
            .collect();
        for k in stray_maglev {
            ignore_missing(self.maglev.remove(&k)).map_err(map_err(MAP_MAGLEV, "deleting"))?;
        }
        state.next_id = live.keys().max().map_or(0, |m| m + 1);
        let used: BTreeSet<u32> = live.keys().copied().collect();
        state.free_ids = (0..state.next_id).filter(|i| !used.contains(i)).collect();
        self.state = state;
        self.stale = false;
        Ok(())
    }

    /// Brings the maps to exactly `desired` (the full set of service ports with their ready
    /// backends), writing only what differs, in an order that never shows a half-written
    /// service (see `plan`). When it returns, no new connection goes to a backend that is not
    /// in `desired`.
    pub fn sync(&mut self, desired: &[ServiceEntry]) -> Result<SyncReport, LbError> {
        if self.stale {
            self.adopt()?;
        }
        let ops = self.state.plan(desired)?;
        self.apply_ops(&ops)
    }

    /// Adds or updates one service port, leaving the others alone: the cost of one endpoint
    /// change does not grow with the number of services.
    pub fn upsert(&mut self, entry: &ServiceEntry) -> Result<SyncReport, LbError> {
        if self.stale {
            self.adopt()?;
        }
        let key = service_key(&entry.frontend);
        let mut one = State {
            services: self
                .state
                .services
                .remove(&key)
                .into_iter()
                .map(|p| (key, p))
                .collect(),
            free_ids: std::mem::take(&mut self.state.free_ids),
            next_id: self.state.next_id,
        };
        let planned = one.plan(std::slice::from_ref(entry));
        self.state.services.extend(one.services);
        self.state.free_ids = one.free_ids;
        self.state.next_id = one.next_id;
        let ops = planned?;
        self.apply_ops(&ops)
    }

    /// Removes one service port.
    pub fn remove(&mut self, frontend: &Frontend) -> Result<SyncReport, LbError> {
        if self.stale {
            self.adopt()?;
        }
        let key = service_key(frontend);
        let Some(p) = self.state.services.remove(&key) else {
            return Ok(SyncReport::default());
        };
        let mut one = State {
            services: [(key, p)].into_iter().collect(),
            free_ids: std::mem::take(&mut self.state.free_ids),
            next_id: self.state.next_id,
        };
        let ops = one.plan(&[])?;
        self.state.free_ids = one.free_ids;
        self.apply_ops(&ops)
    }

    fn apply_ops(&mut self, ops: &[Op]) -> Result<SyncReport, LbError> {
        let mut r = SyncReport::default();
        let start = Instant::now();
        for op in ops {
            let res = match *op {
                Op::PutService(k, v) => {
                    r.service_writes += 1;
                    self.services
                        .insert(k, v, 0)
                        .map_err(map_err(MAP_SERVICES, "writing"))
                }
                Op::DelService(k) => {
                    r.service_deletes += 1;
                    ignore_missing(self.services.remove(&k))
                        .map_err(map_err(MAP_SERVICES, "deleting"))
                }
                Op::PutBackend(k, v) => {
                    r.backend_writes += 1;
                    self.backends
                        .insert(k, v, 0)
                        .map_err(map_err(MAP_BACKENDS, "writing"))
                }
                Op::DelBackend(k) => {
                    r.backend_deletes += 1;
                    ignore_missing(self.backends.remove(&k))
                        .map_err(map_err(MAP_BACKENDS, "deleting"))
                }
                Op::PutMaglev(k, v) => {
                    r.maglev_writes += 1;
                    self.maglev
                        .insert(k, v, 0)
                        .map_err(map_err(MAP_MAGLEV, "writing"))
                }
                Op::DelMaglev(k) => {
                    r.maglev_deletes += 1;
                    ignore_missing(self.maglev.remove(&k)).map_err(map_err(MAP_MAGLEV, "deleting"))
                }
                Op::ResetStats(id) => {
                    r.stats_resets += 1;
                    let zeros = PerCpuValues::try_from(vec![ServiceStats::default(); self.ncpus])
                        .map_err(|source| LbError::Io {
                        what: "building per-CPU zeros for",
                        path: PathBuf::from(MAP_STATS),
                        source,
                    })?;
                    self.stats
                        .set(id, zeros, 0)
                        .map_err(map_err(MAP_STATS, "resetting"))
                }
            };
            if let Err(e) = res {
                self.stale = true;
                return Err(e);
            }
        }
        r.write_time = start.elapsed();
        tracing::debug!(writes = r.total(), ?r.write_time, "service maps synced");
        Ok(r)
    }

    /// For each program: how often it ran and its total run time, as the kernel counts them
    /// while statistics are enabled (see [`enable_program_stats`]).
    pub fn program_stats(&self) -> Result<Vec<ProgramStats>, LbError> {
        PROGRAMS
            .iter()
            .map(|&name| {
                let prog = self.ebpf.program(name).ok_or(LbError::Missing(name))?;
                let info = prog.info().map_err(|e| LbError::Program {
                    name,
                    source: Box::new(e),
                })?;
                Ok(ProgramStats {
                    program: name,
                    run_count: info.run_count(),
                    run_time: info.run_time(),
                })
            })
            .collect()
    }

    /// Per-service counters, summed over CPUs.
    pub fn stats(&self) -> Result<Vec<(Frontend, ServiceStats)>, LbError> {
        let mut out = Vec::new();
        for (k, p) in &self.state.services {
            let per_cpu = self
                .stats
                .get(&p.id, 0)
                .map_err(map_err(MAP_STATS, "reading"))?;
            let mut sum = ServiceStats::default();
            for s in per_cpu.iter() {
                sum.connections += s.connections;
                sum.no_backend += s.no_backend;
            }
            if let Some(f) = frontend_of(k) {
                out.push((f, sum));
            }
        }
        out.sort_by_key(|(f, _)| *f);
        Ok(out)
    }

    /// Detaches every program and removes the pinned links and maps and the pin directory.
    pub fn shutdown(self) -> Result<(), LbError> {
        let pin_dir = self.config.pin_dir.clone();
        for link in &self.links {
            match detach_pinned_link(link) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("detaching link", link)(e));
                }
                _ => {}
            }
        }
        let links_dir = pin_dir.join("links");
        remove_dir_if_exists(&links_dir)?;
        for map in [
            MAP_SERVICES,
            MAP_BACKENDS,
            MAP_MAGLEV,
            MAP_REVNAT,
            MAP_AFFINITY,
            MAP_STATS,
        ] {
            let p = pin_dir.join(map);
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("removing map pin", &p)(e));
                }
                _ => {}
            }
        }
        remove_dir_if_exists(&pin_dir)?;
        tracing::info!(pin_dir = %pin_dir.display(), "service load balancer removed");
        Ok(())
    }
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_DETACH: libc::c_long = 34;

/// Detaches a pinned link now (BPF_LINK_DETACH), then removes its pin. Merely unpinning would
/// detach it too, but from a deferred kernel work item, so a connect() right after shutdown
/// could still be translated.
fn detach_pinned_link(path: &Path) -> std::io::Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // bpf_attr for BPF_OBJ_GET: pathname (u64), bpf_fd (u32), file_flags (u32).
    let mut attr = [0u64; 2];
    attr[0] = c.as_ptr() as u64;
    // SAFETY: `attr` is a valid, initialised bpf_attr prefix of the size passed, and the
    // pathname pointer stays valid for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new fd, owned by nobody else.
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // bpf_attr for BPF_LINK_DETACH: link_fd (u32).
    let mut attr = [0u32; 4];
    attr[0] = std::os::fd::AsRawFd::as_raw_fd(&link) as u32;
    // SAFETY: as above; the fd is open for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    drop(link);
    std::fs::remove_file(path)
}

fn remove_dir_if_exists(p: &Path) -> Result<(), LbError> {
    match std::fs::remove_dir(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io("removing pin directory (not empty?)", p)(e))
        }
        _ => Ok(()),
    }
}

fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

fn take_hash<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<BpfHashMap<MapData, K, V>, LbError> {
    BpfHashMap::try_from(ebpf.take_map(name).ok_or(LbError::Missing(name))?)
        .map_err(map_err(name, "opening"))
}
