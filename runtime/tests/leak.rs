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
    // The host's mount table is shared with other tests on this machine (their netns files come
    // and go), so count only what could be ours: any mount, namespace files (nsfs) included,
    // under this test's bundle directory or state root. The containers' own mounts live in
    // their mount namespaces, which die with them (their cgroups are checked empty and gone).
    let ours = [env.dir.path().to_path_buf(), env.root.clone()];
    let our_mounts = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| ours.iter().any(|p| l.contains(p.to_str().unwrap())))
            .count()
    };
    let fds0 = count_fds();
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
    assert_eq!(our_mounts(), 0, "mounts leaked");
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
