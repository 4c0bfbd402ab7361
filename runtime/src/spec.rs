//! Loading and checking a bundle's config.json.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};

/// Read `bundle/config.json`; the error names the file and what is wrong.
pub fn load_bundle(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|e| Error::BadConfig {
        path: path.clone(),
        message: format!("cannot read it: {e}"),
    })?;
    serde_json::from_slice(&text).map_err(|e| Error::BadConfig {
        path,
        message: e.to_string(),
    })
}

/// Whether `v` is a SemVer 2.0.0 version (`MAJOR.MINOR.PATCH[-PRE][+BUILD]`, numbers without
/// leading zeros) of major version 1, as the spec requires of `ociVersion`.
pub fn supported_oci_version(v: &str) -> bool {
    let (core, build) = match v.split_once('+') {
        Some((c, b)) => (c, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match core.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (core, None),
    };
    let ident_ok = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|id| {
                !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
    };
    let number = |s: &str| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| number(p))
        && parts[0] == "1"
        && pre.is_none_or(ident_ok)
        && build.is_none_or(ident_ok)
}

/// Check that a spec can run, and return its rootfs as an absolute path.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    if !supported_oci_version(spec.version()) {
        return Err(Error::InvalidSpec(format!(
            "ociVersion {:?} is not a SemVer version of the runtime spec 1.x",
            spec.version()
        )));
    }
    let root = spec.root().as_ref().ok_or_else(|| {
        Error::InvalidSpec(
            "root is missing: set root.path to the container's root filesystem".into(),
        )
    })?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    if !rootfs.is_dir() {
        return Err(Error::InvalidSpec(format!(
            "root.path {} is not a directory; unpack the image's root filesystem there",
            rootfs.display()
        )));
    }
    // `process` is optional at create; the spec makes it REQUIRED only when start is called,
    // and `start` refuses a container without one.
    if let Some(process) = spec.process() {
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(Error::InvalidSpec(
                "process.args is empty: name the program to run".into(),
            ));
        }
        if !process.cwd().is_absolute() {
            return Err(Error::InvalidSpec(format!(
                "process.cwd {:?} must be absolute",
                process.cwd()
            )));
        }
    }
    let linux = spec.linux().as_ref();
    let namespaces = linux.and_then(|l| l.namespaces().as_ref());
    let mut seen = Vec::new();
    for ns in namespaces.into_iter().flatten() {
        if seen.contains(&ns.typ()) {
            return Err(Error::InvalidSpec(format!(
                "namespace {:?} listed twice",
                ns.typ()
            )));
        }
        seen.push(ns.typ());
    }
    let has_userns = seen.contains(&LinuxNamespaceType::User);
    if has_userns {
        let l = linux.expect("namespaces come from linux");
        let new_userns = namespaces
            .into_iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
        if new_userns
            && (l.uid_mappings().as_ref().is_none_or(|m| m.is_empty())
                || l.gid_mappings().as_ref().is_none_or(|m| m.is_empty()))
        {
            return Err(Error::InvalidSpec(
                "a new user namespace needs linux.uidMappings and linux.gidMappings".into(),
            ));
        }
    }
    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
        for key in sysctl.keys() {
            if key.contains('/') || key.contains("..") {
                return Err(Error::InvalidSpec(format!(
                    "sysctl {key:?} is not a sysctl name"
                )));
            }
        }
    }
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty())
        && !seen.contains(&LinuxNamespaceType::Uts)
    {
        return Err(Error::InvalidSpec(
            "hostname is set but there is no uts namespace".into(),
        ));
    }
    Ok(rootfs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_rootfs_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec::default();
        let err = validate(&spec, dir.path()).unwrap_err().to_string();
        assert!(err.contains("root.path") && err.contains("rootfs"), "{err}");
    }

    #[test]
    fn oci_versions() {
        for ok in [
            "1.0.0",
            "1.0.2-dev",
            "1.1.0",
            "1.2.0+dev",
            "1.0.0-rc.1+build.5",
        ] {
            assert!(supported_oci_version(ok), "{ok}");
        }
        for bad in [
            "invalid", "", "1.0", "2.0.0", "01.0.0", "1.0.0-", "1.0.0+", "1.0.x",
        ] {
            assert!(!supported_oci_version(bad), "{bad}");
        }
    }

    #[test]
    fn bad_json_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
        let err = load_bundle(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
    }
}
