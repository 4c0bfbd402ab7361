//! The image config's process defaults, merged with a container spec the way Kubernetes does.

use std::path::Path;

use oci_spec::image::ImageConfiguration;

use crate::error::{ImageError, Result};

/// What an image says to run, before the container spec overrides it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=VALUE` strings, in order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, as in the image config.
    pub user: Option<String>,
}

impl ImageDefaults {
    pub fn from_config(config: &ImageConfiguration) -> ImageDefaults {
        let Some(c) = config.config() else {
            return ImageDefaults::default();
        };
        ImageDefaults {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().filter(|s| !s.is_empty()),
            user: c.user().clone().filter(|s| !s.is_empty()),
        }
    }
}

/// The process a container runs, after merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedProcess {
    pub argv: Vec<String>,
    /// Environment in order, names unique.
    pub env: Vec<(String, String)>,
    pub cwd: String,
    /// The image's user, if any (the pod's securityContext, if set, wins over it; see
    /// [`resolve_user`]).
    pub user: Option<String>,
}

/// Merges the image defaults with a container's command, args, env and workingDir, as
/// Kubernetes does:
/// - command set: it replaces Entrypoint, and the image's Cmd is ignored; args (if any) follow it;
/// - only args set: Entrypoint + args;
/// - neither: Entrypoint + Cmd;
/// - env: the image's, then the container's, the container winning on equal names;
/// - workingDir: the container's, else the image's, else `/`.
pub fn merge(
    image_name: &str,
    image: &ImageDefaults,
    command: &[String],
    args: &[String],
    env: &[(String, String)],
    working_dir: Option<&str>,
) -> Result<MergedProcess> {
    let argv: Vec<String> = match (command.is_empty(), args.is_empty()) {
        (false, _) => command.iter().chain(args).cloned().collect(),
        (true, false) => image.entrypoint.iter().chain(args).cloned().collect(),
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    };
    if argv.is_empty() {
        return Err(ImageError::Invalid {
            image: image_name.to_string(),
            what: "process".into(),
            reason: "the image has no Entrypoint or Cmd and the container sets no command; set the container's command"
                .into(),
        });
    }
    let mut merged: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| match merged.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value.to_string(),
        None => merged.push((name.to_string(), value.to_string())),
    };
    for kv in &image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(k, v);
    }
    for (k, v) in env {
        set(k, v);
    }
    let cwd = working_dir
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| image.working_dir.clone())
        .unwrap_or_else(|| "/".to_string());
    Ok(MergedProcess {
        argv,
        env: merged,
        cwd,
        user: image.user.clone(),
    })
}

/// A resolved numeric identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Resolves an image `User` (`name`, `uid`, `name:group`, `uid:gid`) against the rootfs's
/// /etc/passwd and /etc/group. An empty user is root.
pub fn resolve_user(image_name: &str, user: &str, rootfs: &Path) -> Result<ResolvedUser> {
    let err = |reason: String| ImageError::User {
        image: image_name.to_string(),
        user: user.to_string(),
        reason,
    };
    if user.is_empty() {
        return Ok(ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
        });
    }
    let passwd = read_etc_file(rootfs, "/etc/passwd").map_err(&err)?;
    let group = read_etc_file(rootfs, "/etc/group").map_err(&err)?;
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let pw_entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u)));
    let (uid, default_gid, name) = match (u.parse::<u32>(), &pw_entry) {
        (Ok(uid), Some(f)) => (uid, f[3].parse().unwrap_or(0), Some(f[0].to_string())),
        (Ok(uid), None) => (uid, 0, None),
        (Err(_), Some(f)) => (
            f[2].parse()
                .map_err(|_| err("bad uid in /etc/passwd".into()))?,
            f[3].parse().unwrap_or(0),
            Some(f[0].to_string()),
        ),
        (Err(_), None) => {
            return Err(err(
                "no such user in the image's /etc/passwd; use a numeric uid".into(),
            ));
        }
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 3)
        .collect();
    let gid = match g {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    err(format!(
                        "no group {g:?} in the image's /etc/group; use a numeric gid"
                    ))
                })?,
        },
    };
    let additional_gids = match name {
        Some(name) => groups
            .iter()
            .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == name))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect(),
        None => vec![],
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// The most of /etc/passwd or /etc/group read (real ones are a few KiB).
pub const MAX_ETC_FILE: u64 = 4 << 20;

/// Reads `path` of the container's root filesystem, resolved inside `rootfs` (pathrs, with
/// openat2 RESOLVE_IN_ROOT): a symlink in the image, even an absolute one, never reaches a
/// host file. A missing file reads as empty; anything but a regular file, or a file over
/// [`MAX_ETC_FILE`], is an error.
fn read_etc_file(rootfs: &Path, path: &str) -> std::result::Result<String, String> {
    use std::io::Read;
    let missing = |e: &pathrs::error::Error| {
        e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::ENOENT))
    };
    let root = match pathrs::Root::open(rootfs) {
        Ok(r) => r,
        Err(e) if missing(&e) => return Ok(String::new()),
        Err(e) => {
            return Err(format!(
                "opening the root filesystem {}: {e}",
                rootfs.display()
            ));
        }
    };
    let handle = match root.resolve(path) {
        Ok(h) => h,
        Err(e) if missing(&e) => return Ok(String::new()),
        Err(e) => return Err(format!("resolving {path} inside the image: {e}")),
    };
    // Check the type on the O_PATH handle first: opening a FIFO would block, a device could
    // be anything.
    let st = rustix::fs::fstat(&handle).map_err(|e| format!("checking {path}: {e}"))?;
    let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if ft != rustix::fs::FileType::RegularFile {
        return Err(format!(
            "{path} in the image is a {ft:?}, not a regular file"
        ));
    }
    let file = handle
        .reopen(pathrs::flags::OpenFlags::O_RDONLY)
        .map_err(|e| format!("opening {path}: {e}"))?;
    let mut data = Vec::new();
    file.take(MAX_ETC_FILE + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("reading {path}: {e}"))?;
    if data.len() as u64 > MAX_ETC_FILE {
        return Err(format!("{path} in the image is over {MAX_ETC_FILE} bytes"));
    }
    Ok(String::from_utf8_lossy(&data).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn image() -> ImageDefaults {
        ImageDefaults {
            entrypoint: s(&["/entry"]),
            cmd: s(&["--default"]),
            env: s(&["PATH=/bin", "A=image", "EMPTY"]),
            working_dir: Some("/app".into()),
            user: Some("1000".into()),
        }
    }

    #[test]
    fn defaults_when_container_sets_nothing() {
        let m = merge("img", &image(), &[], &[], &[], None).unwrap();
        assert_eq!(m.argv, s(&["/entry", "--default"]));
        assert_eq!(m.cwd, "/app");
        assert_eq!(m.user.as_deref(), Some("1000"));
    }

    #[test]
    fn command_replaces_entrypoint_and_drops_cmd() {
        let m = merge("img", &image(), &s(&["sh", "-c"]), &[], &[], None).unwrap();
        assert_eq!(m.argv, s(&["sh", "-c"]));
        let m = merge(
            "img",
            &image(),
            &s(&["sh", "-c"]),
            &s(&["echo hi"]),
            &[],
            None,
        )
        .unwrap();
        assert_eq!(m.argv, s(&["sh", "-c", "echo hi"]));
    }

    #[test]
    fn args_replace_cmd_only() {
        let m = merge("img", &image(), &[], &s(&["--other"]), &[], None).unwrap();
        assert_eq!(m.argv, s(&["/entry", "--other"]));
    }

    #[test]
    fn env_merges_with_container_winning() {
        let env = vec![
            ("A".to_string(), "pod".to_string()),
            ("B".to_string(), "new".to_string()),
        ];
        let m = merge("img", &image(), &[], &[], &env, Some("/w")).unwrap();
        let want: Vec<(String, String)> =
            [("PATH", "/bin"), ("A", "pod"), ("EMPTY", ""), ("B", "new")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(m.env, want);
        assert_eq!(m.cwd, "/w");
    }

    #[test]
    fn nothing_to_run_is_an_error_naming_the_fix() {
        let e = merge("busybox", &ImageDefaults::default(), &[], &[], &[], None).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("busybox") && msg.contains("set the container's command"),
            "{msg}"
        );
        let m = merge("busybox", &ImageDefaults::default(), &[], &[], &[], None);
        assert!(m.is_err());
    }

    #[test]
    fn resolves_users_from_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nwww:x:33:\nadm:x:4:www\n",
        )
        .unwrap();
        let r = |u: &str| resolve_user("img", u, dir.path());
        assert_eq!(
            r("").unwrap(),
            ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            r("www").unwrap(),
            ResolvedUser {
                uid: 33,
                gid: 33,
                additional_gids: vec![4]
            }
        );
        assert_eq!(r("33").unwrap().gid, 33);
        assert_eq!(r("www:adm").unwrap().gid, 4);
        assert_eq!(
            r("1234:5678").unwrap(),
            ResolvedUser {
                uid: 1234,
                gid: 5678,
                additional_gids: vec![]
            }
        );
        assert!(r("nobody").unwrap_err().to_string().contains("numeric uid"));
        assert!(r("www:nogroup").is_err());
    }

    #[test]
    fn a_symlinked_passwd_resolves_inside_the_root() {
        let host = tempfile::tempdir().unwrap();
        let host_passwd = host.path().join("passwd");
        fs::write(&host_passwd, "hostonly:x:4242:4242::/:/bin/sh\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(&host_passwd, root.path().join("etc/passwd")).unwrap();
        let e = resolve_user("img", "hostonly", root.path()).unwrap_err();
        assert!(e.to_string().contains("no such user"), "{e}");
        // The same link, resolved in the root, finds the image's own file.
        let inside = root.path().join(host_passwd.strip_prefix("/").unwrap());
        fs::create_dir_all(inside.parent().unwrap()).unwrap();
        fs::write(&inside, "imageuser:x:7:7::/:/bin/sh\n").unwrap();
        assert_eq!(
            resolve_user("img", "imageuser", root.path()).unwrap().uid,
            7
        );
        // A FIFO is refused, not opened (which would block).
        fs::remove_file(root.path().join("etc/passwd")).unwrap();
        nix::unistd::mkfifo(
            &root.path().join("etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let e = resolve_user("img", "x", root.path()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn container_env_always_wins(k in "[A-Z]{1,4}", v1 in "[a-z]{0,4}", v2 in "[a-z]{0,4}") {
            let img = ImageDefaults { cmd: vec!["x".into()], env: vec![format!("{k}={v1}")], ..Default::default() };
            let m = merge("i", &img, &[], &[], &[(k.clone(), v2.clone())], None).unwrap();
            proptest::prop_assert_eq!(m.env, vec![(k, v2)]);
        }
    }
}
