//! Leak test (root, host): 1,000 create/start/wait/delete cycles through the library, then no
//! leftover cgroup, mount, namespace file, state directory, fd or child. Its own test binary,
//! so the counts are not disturbed by other tests. PODD_RT_LEAK_CYCLES overrides the count.

mod common;

use common::Env;
use podd_runtime::Container;

#[test]
fn leak_test_1000_cycles() {
    let env = Env::new("leak");
    let spec = env.spec("leak", &["/bin/true"]);
    let count_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let mounts = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .count()
    };
    let nsfs = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(" nsfs "))
            .count()
    };
    let (fds0, mounts0, nsfs0) = (count_fds(), mounts(), nsfs());
    let cycles = std::env::var("PODD_RT_LEAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    for i in 0..cycles {
        let id = format!("leak-{i}");
        let mut c = Container::create(&id, env.dir.path(), &spec, &env.opts()).unwrap();
        c.start().unwrap();
        assert_eq!(c.wait().unwrap(), 0);
        c.delete(false).unwrap();
    }
    assert_eq!(count_fds(), fds0, "file descriptors leaked");
    assert_eq!(mounts(), mounts0, "mounts leaked");
    assert_eq!(nsfs(), nsfs0, "namespace files leaked");
    env.assert_clean();
    assert!(
        !env.cgroup_dir().exists(),
        "the cgroup parent was removed with the last container"
    );
    let children = nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    assert!(
        matches!(children, Err(nix::Error::ECHILD)),
        "no unreaped children: {children:?}"
    );
    assert!(
        std::fs::read_dir(&env.root)
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "no state directories"
    );
}
