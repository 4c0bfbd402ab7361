//! Pod IP address management for one node's pod CIDR, persisted on disk.
//!
//! Layout: `DIR/<cidr>/` (e.g. `/var/lib/podd/ipam/10.244.1.0-24/`) holds one
//! file per lease, named by the IP (`10.244.1.7`) and holding the owner (the
//! pod uid) and a newline; plus `last`, the last IP handed out.
//!
//! Why a file per lease: creating it is the allocation, and the kernel makes
//! that atomic and exclusive. The lease is written to a temporary file first
//! and then `link(2)`ed to its final name, which fails with EEXIST like
//! `O_EXCL` but never exposes an empty lease if the agent dies half-way. So a
//! restarted agent, or two processes at once, can never hand out an IP twice.
//!
//! Allocation is next-fit: it starts after the last IP handed out and wraps
//! around, so an IP freed a moment ago is reused as late as possible
//! (connections to a deleted pod's IP then rarely reach a new pod).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use crate::cidr::Ipv4Cidr;
use crate::error::{NetError, Result};

/// The default base directory; each CIDR gets a subdirectory.
pub const DEFAULT_IPAM_DIR: &str = "/var/lib/podd/ipam";

const CURSOR_FILE: &str = "last";
const TEMP_PREFIX: &str = ".tmp.";

/// The candidates for the next allocation, in next-fit order: the pod range
/// of `cidr` starting just after `last` (or at the start), wrapping around once.
pub fn next_fit_order(
    cidr: &Ipv4Cidr,
    last: Option<Ipv4Addr>,
) -> Result<impl Iterator<Item = Ipv4Addr>> {
    let range = cidr.pod_range()?;
    let (first, end) = (*range.start(), *range.end());
    let start = match last.map(u32::from) {
        Some(last) if last >= first && last < end => last + 1,
        _ => first,
    };
    Ok((start..=end).chain(first..start).map(Ipv4Addr::from))
}

/// Checks a lease owner: it is written to a file, one per line.
fn validate_owner(owner: &str) -> Result<()> {
    if owner.is_empty() || owner.len() > 253 || owner.chars().any(|c| c.is_control()) {
        return Err(NetError::InvalidName {
            what: "lease owner",
            name: owner.to_string(),
            reason: "an owner (pod uid) is 1 to 253 printable characters".into(),
        });
    }
    Ok(())
}

/// The leases of one pod CIDR. Not `Sync`: wrap it in a mutex to share it.
/// Several processes may use the same directory; the files arbitrate.
#[derive(Debug)]
pub struct Ipam {
    cidr: Ipv4Cidr,
    dir: PathBuf,
    /// What this process knows of the leases; refreshed from disk on conflict.
    leases: BTreeMap<Ipv4Addr, String>,
    last: Option<Ipv4Addr>,
}

impl Ipam {
    /// Opens (creating if needed) the lease directory of `cidr` under `base_dir`
    /// and loads the existing leases.
    pub fn open(base_dir: &Path, cidr: Ipv4Cidr) -> Result<Self> {
        cidr.pod_range()?;
        let dir = base_dir.join(cidr.to_path_component());
        fs::create_dir_all(&dir).map_err(|e| NetError::io("create IPAM directory", &dir, e))?;
        let mut ipam = Ipam {
            cidr,
            dir,
            leases: BTreeMap::new(),
            last: None,
        };
        ipam.refresh()?;
        ipam.remove_stale_temp_files();
        Ok(ipam)
    }

    pub fn cidr(&self) -> Ipv4Cidr {
        self.cidr
    }

    /// The directory holding this CIDR's lease files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The leases as last read or made by this process.
    pub fn leases(&self) -> &BTreeMap<Ipv4Addr, String> {
        &self.leases
    }

    /// The IP leased to `owner`, if any.
    pub fn lease_of(&self, owner: &str) -> Option<Ipv4Addr> {
        self.leases
            .iter()
            .find(|(_, o)| o.as_str() == owner)
            .map(|(ip, _)| *ip)
    }

    /// Re-reads the leases and the cursor from disk.
    pub fn refresh(&mut self) -> Result<()> {
        let mut leases = BTreeMap::new();
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| NetError::io("read IPAM directory", &self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| NetError::io("read IPAM directory", &self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(ip) = name.parse::<Ipv4Addr>() else {
                continue; // the cursor, temporary files
            };
            let path = entry.path();
            match read_lease(&path)? {
                Some(owner) => {
                    if !self.cidr.contains(ip) {
                        warn!(lease = %path.display(), cidr = %self.cidr, "lease outside the CIDR is ignored");
                        continue;
                    }
                    leases.insert(ip, owner);
                }
                None => continue, // released between read_dir and read
            }
        }
        self.leases = leases;
        self.last = fs::read_to_string(self.dir.join(CURSOR_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Ok(())
    }

    /// Leases an IP to `owner`. If `owner` already holds one, that one is
    /// returned, so a retried pod setup never takes a second IP.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr> {
        validate_owner(owner)?;
        if let Some(ip) = self.lease_of(owner) {
            return Ok(ip);
        }
        // Two passes: the second after re-reading the disk, in case another
        // process released leases we still believe taken.
        for pass in 0..2 {
            if pass == 1 {
                self.refresh()?;
                if let Some(ip) = self.lease_of(owner) {
                    return Ok(ip);
                }
            }
            let candidates: Vec<Ipv4Addr> = next_fit_order(&self.cidr, self.last)?
                .filter(|ip| !self.leases.contains_key(ip))
                .collect();
            for ip in candidates {
                if self.try_claim(ip, owner)? {
                    self.leases.insert(ip, owner.to_string());
                    self.last = Some(ip);
                    self.write_cursor(ip);
                    debug!(%ip, owner, "leased pod IP");
                    return Ok(ip);
                }
                // Someone else holds it: learn who, and go on.
                if let Some(other) = read_lease(&self.lease_path(ip))? {
                    self.leases.insert(ip, other);
                }
            }
        }
        Err(NetError::IpamExhausted {
            cidr: self.cidr.to_string(),
            leases: self.leases.len(),
        })
    }

    /// Frees every lease held by `owner` (normally one) and returns the IPs.
    /// Reads the disk, so it also frees leases this process did not make.
    pub fn release(&mut self, owner: &str) -> Result<Vec<Ipv4Addr>> {
        validate_owner(owner)?;
        self.refresh()?;
        let mine: Vec<Ipv4Addr> = self
            .leases
            .iter()
            .filter(|(_, o)| o.as_str() == owner)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in &mine {
            self.remove_lease(*ip)?;
        }
        Ok(mine)
    }

    /// Frees the leases whose owner is not in `live_owners`, for example
    /// those of pods deleted while the agent was down. Returns what it freed.
    pub fn reconcile(&mut self, live_owners: &HashSet<String>) -> Result<Vec<(Ipv4Addr, String)>> {
        self.refresh()?;
        let stale: Vec<(Ipv4Addr, String)> = self
            .leases
            .iter()
            .filter(|(_, owner)| !live_owners.contains(owner.as_str()))
            .map(|(ip, owner)| (*ip, owner.clone()))
            .collect();
        for (ip, owner) in &stale {
            self.remove_lease(*ip)?;
            info!(%ip, owner, "freed the lease of a pod that is gone");
        }
        self.remove_stale_temp_files();
        Ok(stale)
    }

    fn lease_path(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Atomically creates the lease file; false if it already exists.
    fn try_claim(&self, ip: Ipv4Addr, owner: &str) -> Result<bool> {
        let final_path = self.lease_path(ip);
        let temp_path = self.dir.join(format!(
            "{TEMP_PREFIX}{}.{}.{ip}",
            std::process::id(),
            nix::unistd::gettid()
        ));
        let write_temp = || -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&temp_path)?;
            // No fsync: a lease must outlive the agent process, which the page
            // cache guarantees; after a machine crash every pod is gone anyway
            // and reconcile frees the leases.
            file.write_all(format!("{owner}\n").as_bytes())
        };
        write_temp().map_err(|e| NetError::io("write lease", &temp_path, e))?;
        let linked = fs::hard_link(&temp_path, &final_path);
        let _ = fs::remove_file(&temp_path);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(NetError::io("create lease", &final_path, e)),
        }
    }

    fn remove_lease(&mut self, ip: Ipv4Addr) -> Result<()> {
        let path = self.lease_path(ip);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(NetError::io("remove lease", &path, e)),
        }
        self.leases.remove(&ip);
        debug!(%ip, "released pod IP");
        Ok(())
    }

    /// The cursor is only a hint for spreading, so failing to write it is
    /// logged, not fatal. It is overwritten in place as a fixed 16 bytes:
    /// no rename and no truncation, both of which make ext4 flush data
    /// synchronously (auto_da_alloc) and cost milliseconds per allocation.
    /// A torn write only makes the next agent start its search elsewhere.
    fn write_cursor(&self, ip: Ipv4Addr) {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join(CURSOR_FILE);
        let text = format!("{:<15}\n", ip.to_string());
        let result = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .and_then(|file| file.write_all_at(text.as_bytes(), 0));
        if let Err(e) = result {
            warn!(path = %path.display(), error = %e, "could not save the IPAM cursor");
        }
    }

    /// Removes temporary files left by processes that died mid-write.
    fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
                continue;
            };
            let pid = rest.split('.').next().unwrap_or("");
            let alive = !pid.is_empty() && Path::new("/proc").join(pid).exists();
            if !alive {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The owner recorded in a lease file; `None` if the file is gone.
fn read_lease(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let owner = text.trim_end_matches('\n');
            if owner.is_empty() || owner.contains('\n') {
                return Err(NetError::CorruptLease {
                    path: path.to_path_buf(),
                    reason: "expected one line holding the owner".into(),
                });
            }
            Ok(Some(owner.to_string()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NetError::io("read lease", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn next_fit_starts_after_the_cursor_and_wraps() {
        let c = cidr("10.244.1.0/29"); // pods: .2 .. .6
        let order: Vec<String> = next_fit_order(&c, Some(Ipv4Addr::new(10, 244, 1, 4)))
            .unwrap()
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(
            order,
            [
                "10.244.1.5",
                "10.244.1.6",
                "10.244.1.2",
                "10.244.1.3",
                "10.244.1.4"
            ]
        );
        let from_start: Vec<_> = next_fit_order(&c, None).unwrap().collect();
        assert_eq!(from_start.first(), Some(&Ipv4Addr::new(10, 244, 1, 2)));
        // A cursor outside the range (say, a changed CIDR) restarts at the front.
        let odd: Vec<_> = next_fit_order(&c, Some(Ipv4Addr::new(1, 2, 3, 4)))
            .unwrap()
            .collect();
        assert_eq!(odd, from_start);
    }

    #[test]
    fn allocate_is_idempotent_per_owner_and_spreads() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), cidr("10.244.1.0/24")).unwrap();
        let a = ipam.allocate("pod-a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(ipam.allocate("pod-a").unwrap(), a);
        let b = ipam.allocate("pod-b").unwrap();
        assert_eq!(ipam.release("pod-a").unwrap(), vec![a]);
        // The freed .2 is not reused at once: next-fit moves on.
        let c = ipam.allocate("pod-c").unwrap();
        assert!(c > b, "{c} should come after {b}");
        assert!(ipam.lease_of("pod-a").is_none());
    }

    #[test]
    fn the_cursor_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let c = cidr("10.244.1.0/24");
        let mut ipam = Ipam::open(dir.path(), c).unwrap();
        ipam.allocate("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        ipam.release("b").unwrap();
        ipam.release("a").unwrap();
        let mut restarted = Ipam::open(dir.path(), c).unwrap();
        let next = restarted.allocate("c").unwrap();
        assert_eq!(u32::from(next), u32::from(b) + 1, "continues after {b}");
    }

    #[test]
    fn exhaustion_is_a_clear_error_and_release_makes_room() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), cidr("10.244.9.0/29")).unwrap();
        for i in 0..5 {
            ipam.allocate(&format!("p{i}")).unwrap();
        }
        let err = ipam.allocate("p5").unwrap_err();
        assert!(err.to_string().contains("no free pod IP"), "{err}");
        ipam.release("p2").unwrap();
        ipam.allocate("p5").unwrap();
    }

    #[test]
    fn bad_owner_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), cidr("10.244.1.0/24")).unwrap();
        assert!(ipam.allocate("").is_err());
        assert!(ipam.allocate("a\nb").is_err());
        assert!(ipam.leases().is_empty());
    }

    #[test]
    fn two_allocators_on_one_directory_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let c = cidr("10.244.1.0/26");
        let mut first = Ipam::open(dir.path(), c).unwrap();
        let mut second = Ipam::open(dir.path(), c).unwrap();
        let mut seen = HashSet::new();
        for i in 0..30 {
            let a = first.allocate(&format!("a{i}")).unwrap();
            let b = second.allocate(&format!("b{i}")).unwrap();
            assert!(seen.insert(a), "duplicate {a}");
            assert!(seen.insert(b), "duplicate {b}");
        }
    }

    #[test]
    fn concurrent_threads_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let c = cidr("10.244.1.0/24");
        let ips: Vec<Ipv4Addr> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let path = dir.path().to_path_buf();
                    scope.spawn(move || {
                        let mut ipam = Ipam::open(&path, c).unwrap();
                        (0..40)
                            .map(|i| ipam.allocate(&format!("t{t}-{i}")).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let unique: HashSet<_> = ips.iter().collect();
        assert_eq!(unique.len(), ips.len());
    }

    #[test]
    fn reconcile_frees_leases_of_gone_owners() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), cidr("10.244.1.0/24")).unwrap();
        let keep = ipam.allocate("alive").unwrap();
        let gone = ipam.allocate("dead").unwrap();
        let live: HashSet<String> = ["alive".to_string()].into();
        assert_eq!(
            ipam.reconcile(&live).unwrap(),
            vec![(gone, "dead".to_string())]
        );
        assert_eq!(ipam.lease_of("alive"), Some(keep));
        assert!(!ipam.dir().join(gone.to_string()).exists());
    }

    #[test]
    fn corrupt_lease_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = cidr("10.244.1.0/24");
        let sub = dir.path().join(c.to_path_component());
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join("10.244.1.9"), "").unwrap();
        let err = Ipam::open(dir.path(), c).unwrap_err();
        assert!(err.to_string().contains("10.244.1.9"), "{err}");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(u8),
        Release(u8),
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..40).prop_map(Op::Allocate),
            2 => (0u8..40).prop_map(Op::Release),
            1 => Just(Op::Restart),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Under any sequence of allocations, releases and restarts: no IP is
        /// held twice, none is the network, gateway or broadcast address, and
        /// what a restarted allocator reads equals what was written.
        #[test]
        fn leases_stay_unique_valid_and_persistent(ops in proptest::collection::vec(op(), 1..80)) {
            let dir = tempfile::tempdir().unwrap();
            let c = cidr("10.244.7.0/27"); // 29 pod IPs, fewer than owners: exhaustion happens
            let mut ipam = Ipam::open(dir.path(), c).unwrap();
            let mut model: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Allocate(n) => {
                        let owner = format!("pod-{n}");
                        match ipam.allocate(&owner) {
                            Ok(ip) => {
                                prop_assert!(c.contains(ip));
                                prop_assert_ne!(ip, c.network());
                                prop_assert_ne!(ip, c.gateway().unwrap());
                                prop_assert_ne!(ip, c.broadcast());
                                if let Some(old) = model.get(&owner) {
                                    prop_assert_eq!(*old, ip);
                                }
                                prop_assert!(model.iter().all(|(o, i)| o == &owner || *i != ip));
                                model.insert(owner, ip);
                            }
                            Err(NetError::IpamExhausted { .. }) => {
                                prop_assert_eq!(model.len(), 29);
                            }
                            Err(e) => return Err(TestCaseError::fail(e.to_string())),
                        }
                    }
                    Op::Release(n) => {
                        let owner = format!("pod-{n}");
                        let freed = ipam.release(&owner).unwrap();
                        prop_assert_eq!(freed, model.remove(&owner).into_iter().collect::<Vec<_>>());
                    }
                    Op::Restart => {
                        ipam = Ipam::open(dir.path(), c).unwrap();
                    }
                }
                let on_disk: BTreeMap<String, Ipv4Addr> =
                    ipam.leases().iter().map(|(ip, o)| (o.clone(), *ip)).collect();
                prop_assert_eq!(&on_disk, &model);
            }
            let reopened = Ipam::open(dir.path(), c).unwrap();
            let reread: BTreeMap<String, Ipv4Addr> =
                reopened.leases().iter().map(|(ip, o)| (o.clone(), *ip)).collect();
            prop_assert_eq!(reread, model);
        }
    }
}
