//! Kernel modules for the guest: find them in the Debian kernel package, read each module's
//! `depends=` from its `.modinfo` ELF section, and order them so dependencies load first
//! (what modules.dep and modprobe would do, without needing depmod).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Modules the guest loads at boot. Names as `modprobe` takes them; dependencies are added.
/// Extend with `PODD_VM_EXTRA_MODULES="a b"` or by adding here.
pub const GUEST_MODULES: &[&str] = &[
    // the host root over virtio 9p, and entropy
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "virtio_rng",
    // pod networking
    "veth",
    "bridge",
    "br_netfilter",
    "dummy",
    "tun",
    "vxlan",
    "macvlan",
    "ipvlan",
    // images and rootfs
    "overlay",
    // tc eBPF
    "sch_ingress",
    "cls_bpf",
    "act_bpf",
    // iptables (nft backend) baselines in tests
    "nf_conntrack",
    "nf_nat",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "xt_conntrack",
    "xt_MASQUERADE",
    "xt_addrtype",
    "xt_comment",
    "xt_mark",
    "ip_tables",
    "iptable_filter",
    "iptable_nat",
];

/// A module file and its name, in load order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub path: PathBuf,
}

/// Module names use `_` and `-` interchangeably; files mostly use `_`.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Resolves `wanted` (plus dependencies) under `modules_dir` (`lib/modules/<release>`), in load
/// order. Modules built into the kernel are skipped; an unknown name is an error.
pub fn resolve(modules_dir: &Path, wanted: &[String]) -> Result<Vec<Module>> {
    let index = index_modules(&modules_dir.join("kernel"))?;
    let builtin = builtin_modules(modules_dir);
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    for name in wanted {
        visit(
            &normalize(name),
            &index,
            &builtin,
            &mut done,
            &mut Vec::new(),
            &mut order,
        )?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    done: &mut BTreeSet<String>,
    stack: &mut Vec<String>,
    order: &mut Vec<Module>,
) -> Result<()> {
    if done.contains(name) {
        return Ok(());
    }
    let Some(path) = index.get(name) else {
        if builtin.contains(name) {
            done.insert(name.to_string());
            return Ok(());
        }
        bail!("kernel module `{name}` is neither a module file nor built into the guest kernel");
    };
    if stack.iter().any(|s| s == name) {
        bail!(
            "kernel module dependency cycle: {} -> {name}",
            stack.join(" -> ")
        );
    }
    stack.push(name.to_string());
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let info =
        ModInfo::parse(&data).with_context(|| format!("reading .modinfo of {}", path.display()))?;
    // A `softdep pre:` names something the module's init asks the kernel for (libcrc32c asks
    // for the crc32c algorithm); without modprobe in the guest it must be loaded first. Those
    // are often aliases: try the name and `<name>_generic`, and skip what is not there.
    for soft in &info.soft_pre {
        let soft = normalize(soft);
        if let Some(name) = [soft.clone(), format!("{soft}_generic")]
            .into_iter()
            .find(|n| index.contains_key(n))
        {
            visit(&name, index, builtin, done, stack, order)?;
        }
    }
    for dep in &info.depends {
        visit(&normalize(dep), index, builtin, done, stack, order)?;
    }
    stack.pop();
    done.insert(name.to_string());
    order.push(Module {
        name: name.to_string(),
        path: path.clone(),
    });
    Ok(())
}

fn index_modules(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut index = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Some(file) = path.file_name().and_then(|f| f.to_str())
                && let Some(stem) = file.strip_suffix(".ko")
            {
                index.insert(normalize(stem), path.clone());
            }
        }
    }
    if index.is_empty() {
        bail!("no kernel modules (*.ko) under {}", dir.display());
    }
    Ok(index)
}

fn builtin_modules(modules_dir: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.rsplit('/').next())
        .filter_map(|file| file.strip_suffix(".ko"))
        .map(normalize)
        .collect()
}

/// What a module's `.modinfo` says it needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// `depends=a,b`: modules whose symbols it uses.
    pub depends: Vec<String>,
    /// `softdep=pre: a b post: c`: the `pre:` part.
    pub soft_pre: Vec<String>,
}

impl ModInfo {
    pub fn parse(elf: &[u8]) -> Result<ModInfo> {
        let modinfo = elf_section(elf, ".modinfo")?;
        let mut info = ModInfo::default();
        for entry in modinfo.split(|&b| b == 0) {
            let entry = String::from_utf8_lossy(entry);
            if let Some(list) = entry.strip_prefix("depends=") {
                info.depends.extend(
                    list.split(',')
                        .filter(|d| !d.is_empty())
                        .map(str::to_string),
                );
            } else if let Some(spec) = entry.strip_prefix("softdep=") {
                let mut in_pre = false;
                for word in spec.split_whitespace() {
                    match word {
                        "pre:" => in_pre = true,
                        "post:" => in_pre = false,
                        name if in_pre => info.soft_pre.push(name.to_string()),
                        _ => {}
                    }
                }
            }
        }
        Ok(info)
    }
}

fn read_u16(data: &[u8], at: usize) -> Result<u16> {
    let bytes = data.get(at..at + 2).context("ELF file is truncated")?;
    Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn read_u32(data: &[u8], at: usize) -> Result<u32> {
    let bytes = data.get(at..at + 4).context("ELF file is truncated")?;
    Ok(u32::from_le_bytes(bytes.try_into()?))
}

fn read_u64(data: &[u8], at: usize) -> Result<u64> {
    let bytes = data.get(at..at + 8).context("ELF file is truncated")?;
    Ok(u64::from_le_bytes(bytes.try_into()?))
}

/// The contents of a named section of a little-endian ELF64 file.
fn elf_section<'a>(elf: &'a [u8], wanted: &str) -> Result<&'a [u8]> {
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        bail!("not a little-endian ELF64 file");
    }
    let section_headers = usize::try_from(read_u64(elf, 0x28)?)?;
    let entry_size = usize::from(read_u16(elf, 0x3a)?);
    let count = usize::from(read_u16(elf, 0x3c)?);
    let names_index = usize::from(read_u16(elf, 0x3e)?);
    let section = |i: usize| -> Result<(u32, usize, usize)> {
        let at = section_headers + i * entry_size;
        Ok((
            read_u32(elf, at)?,
            usize::try_from(read_u64(elf, at + 24)?)?,
            usize::try_from(read_u64(elf, at + 32)?)?,
        ))
    };
    let (_, names_offset, names_size) = section(names_index)?;
    let names = elf
        .get(names_offset..names_offset + names_size)
        .context("ELF section names are truncated")?;
    for i in 0..count {
        let (name_at, offset, size) = section(i)?;
        let name = names.get(name_at as usize..).unwrap_or_default();
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        if name == wanted.as_bytes() {
            return elf
                .get(offset..offset + size)
                .context("ELF section is truncated");
        }
    }
    bail!("no {wanted} section")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with a section-name table and one `.modinfo` section.
    fn fake_module(modinfo: &[u8]) -> Vec<u8> {
        let names = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        let names_at = elf.len();
        elf.extend_from_slice(names);
        let modinfo_at = elf.len();
        elf.extend_from_slice(modinfo);
        while !elf.len().is_multiple_of(8) {
            elf.push(0);
        }
        let headers_at = elf.len();
        elf.extend_from_slice(&[0u8; 64]); // null section
        for (name, at, size) in [
            (1u32, names_at, names.len()),
            (11, modinfo_at, modinfo.len()),
        ] {
            let mut header = [0u8; 64];
            header[..4].copy_from_slice(&name.to_le_bytes());
            header[24..32].copy_from_slice(&(at as u64).to_le_bytes());
            header[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&header);
        }
        elf[0x28..0x30].copy_from_slice(&(headers_at as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn reads_depends_and_softdeps_from_modinfo() {
        let elf = fake_module(
            b"license=GPL\0depends=netfs,9pnet\0softdep=pre: crc32c x post: y\0name=9p\0",
        );
        let info = ModInfo::parse(&elf).unwrap();
        assert_eq!(info.depends, ["netfs", "9pnet"]);
        assert_eq!(info.soft_pre, ["crc32c", "x"]);
        let elf = fake_module(b"depends=\0name=dummy\0");
        assert_eq!(ModInfo::parse(&elf).unwrap(), ModInfo::default());
    }

    #[test]
    fn orders_dependencies_first_and_skips_builtins() {
        let root = std::env::temp_dir().join(format!("xtask-kmod-test-{}", std::process::id()));
        let kernel = root.join("kernel/fs");
        std::fs::create_dir_all(&kernel).unwrap();
        std::fs::write(
            kernel.join("9p.ko"),
            fake_module(b"depends=9pnet,netfs,crc32c\0"),
        )
        .unwrap();
        std::fs::write(kernel.join("9pnet.ko"), fake_module(b"depends=\0")).unwrap();
        std::fs::write(
            kernel.join("netfs.ko"),
            fake_module(b"depends=9pnet\0softdep=pre: crc32c nothere\0"),
        )
        .unwrap();
        std::fs::write(kernel.join("crc32c_generic.ko"), fake_module(b"depends=\0")).unwrap();
        std::fs::write(root.join("modules.builtin"), "kernel/lib/crc32c.ko\n").unwrap();
        let order = resolve(&root, &["9p".to_string(), "9pnet".to_string()]).unwrap();
        let names: Vec<_> = order.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["9pnet", "crc32c_generic", "netfs", "9p"]);
        let err = resolve(&root, &["nope".to_string()]).unwrap_err();
        assert!(err.to_string().contains("`nope`"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
