//! `cargo xtask codegen-protobuf`: writes `api/src/protobuf/messages.rs`, the table that lets
//! the API server read Kubernetes' protobuf request bodies (kubectl's generators send them).
//!
//! Kubernetes' .proto files are not at hand, but the `k8s-pb` crate (prost types generated
//! from them) carries every message's field numbers and wire types in its `#[prost(...)]`
//! attributes, and `k8s-openapi` carries every field's JSON name in its serde code. This joins
//! the two into a table: message → (tag, JSON name, wire kind). The decoder in
//! `api/src/protobuf/` walks the wire format with it and builds the JSON the schema decoder
//! then reads, so no per-type conversion code is written by hand.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// The API groups whose messages podd may be sent.
const PACKAGES: &[&str] = &[
    "api/core/v1",
    "api/apps/v1",
    "api/autoscaling/v1",
    "api/autoscaling/v2",
    "api/batch/v1",
    "api/coordination/v1",
    "api/discovery/v1",
    "api/events/v1",
    "api/policy/v1",
    "api/rbac/v1",
    "api/networking/v1",
    "api/storage/v1",
    "apimachinery/pkg/apis/meta/v1",
    "apimachinery/pkg/api/resource",
    "apimachinery/pkg/util/intstr",
    "apimachinery/pkg/runtime",
];

const K8S_PB: &str = "k8s-pb-0.9.0";
const K8S_OPENAPI: &str = "k8s-openapi-0.29.0";
const OPENAPI_VERSION_DIR: &str = "v1_34";

/// One field of a message.
struct Field {
    tag: u32,
    json: String,
    /// `string`, `bool`, `int32`, `int64`, `bytes`, `msg:<full name>`, `map:<value kind>`.
    kind: String,
    repeated: bool,
}

pub fn run(k8s_pb: Option<PathBuf>, k8s_openapi: Option<PathBuf>) -> Result<()> {
    let pb = match k8s_pb {
        Some(p) => p,
        None => find_registry_crate(K8S_PB)?,
    };
    let oa = match k8s_openapi {
        Some(p) => p,
        None => find_registry_crate(K8S_OPENAPI)?,
    };
    let mut messages: BTreeMap<String, Vec<Field>> = BTreeMap::new();
    for pkg in PACKAGES {
        let src = pb.join("src").join(pkg).join("mod.rs");
        let text =
            fs::read_to_string(&src).with_context(|| format!("reading {}", src.display()))?;
        let json_names = openapi_json_names(&oa.join("src").join(OPENAPI_VERSION_DIR).join(pkg))?;
        for (name, fields) in parse_prost_structs(&text, pkg)? {
            let names = json_names.get(&name);
            let fields = fields
                .into_iter()
                .map(|(rust, mut f)| {
                    f.json = json_name(names, &rust);
                    f
                })
                .collect();
            messages.insert(format!("{}.{name}", pkg.replace('/', ".")), fields);
        }
    }
    let out = crate::process::workspace_root().join("api/src/protobuf/messages.rs");
    fs::write(&out, render(&messages)).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {} messages to {}", messages.len(), out.display());
    Ok(())
}

fn find_registry_crate(dir: &str) -> Result<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    for index in fs::read_dir(home.join("registry/src")).context("reading the cargo registry")? {
        let p = index?.path().join(dir);
        if p.is_dir() {
            return Ok(p);
        }
    }
    bail!(
        "{dir} is not in the cargo registry: fetch it first (e.g. `cargo fetch` in a crate that depends on it), or pass its path"
    )
}

/// struct name → rust field name → JSON name, from k8s-openapi's serde code
/// (`"hostIPC" => Field::Key_host_ipc`).
fn openapi_json_names(dir: &Path) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let mut out = BTreeMap::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries {
        let path = e?.path();
        if path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = fs::read_to_string(&path)?;
        let Some(name) = text
            .lines()
            .find_map(|l| l.strip_prefix("pub struct "))
            .and_then(|l| l.split([' ', '{', '<']).next())
        else {
            continue;
        };
        let mut fields = BTreeMap::new();
        for line in text.lines() {
            let l = line.trim();
            if let Some((json, rest)) = l
                .strip_prefix('"')
                .and_then(|r| r.split_once("\" => Field::Key_"))
            {
                let rust = rest.trim_end_matches(',');
                fields.insert(rust.to_string(), json.to_string());
            }
        }
        out.insert(name.to_string(), fields);
    }
    Ok(out)
}

fn json_name(names: Option<&BTreeMap<String, String>>, rust: &str) -> String {
    let rust = rust.trim_start_matches("r#");
    if let Some(n) = names.and_then(|m| m.get(rust)) {
        return n.clone();
    }
    // The same name in other words: compare without case and underscores.
    let flat = rust.replace('_', "");
    if let Some(n) = names.and_then(|m| m.values().find(|j| j.eq_ignore_ascii_case(&flat))) {
        return n.clone();
    }
    let mut out = String::new();
    let mut up = false;
    for c in rust.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The prost structs of one package: name → [(rust field name, field)].
fn parse_prost_structs(text: &str, pkg: &str) -> Result<Vec<Struct>> {
    let mut out = Vec::new();
    let mut current: Option<Struct> = None;
    let mut attr: Option<String> = None;
    // A field whose type continues on the next lines: (rust name, attribute, type so far).
    let mut pending: Option<(String, String, String)> = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some((rust, a, mut ty)) = pending.take() {
            ty.push_str(l);
            if complete(&ty) {
                push_field(&mut current, &rust, &a, &ty, pkg)?;
            } else {
                pending = Some((rust, a, ty));
            }
            continue;
        }
        if let Some(rest) = l.strip_prefix("pub struct ") {
            if let Some(done) = current.take() {
                out.push(done);
            }
            let name = rest
                .split([' ', '{'])
                .next()
                .unwrap_or_default()
                .to_string();
            current = Some((name, Vec::new()));
            continue;
        }
        if l == "}" {
            if let Some(done) = current.take() {
                out.push(done);
            }
            continue;
        }
        if let Some(a) = l.strip_prefix("#[prost(") {
            attr = Some(a.trim_end_matches(")]").to_string());
            continue;
        }
        if let Some(rest) = l.strip_prefix("pub ")
            && let Some((rust, ty)) = rest.split_once(':')
            && let Some(a) = attr.take()
        {
            let ty = ty.trim().to_string();
            if complete(&ty) {
                push_field(&mut current, rust.trim(), &a, &ty, pkg)?;
            } else {
                pending = Some((rust.trim().to_string(), a, ty));
            }
        }
    }
    if let Some(done) = current.take() {
        out.push(done);
    }
    Ok(out)
}

/// Whether a field's type, read so far, is whole: it ends the field and its `<>` balance.
fn complete(ty: &str) -> bool {
    ty.ends_with(',') && ty.matches('<').count() == ty.matches('>').count()
}

type Struct = (String, Vec<(String, Field)>);

fn push_field(
    current: &mut Option<Struct>,
    rust: &str,
    attr: &str,
    ty: &str,
    pkg: &str,
) -> Result<()> {
    let Some((_, fields)) = current.as_mut() else {
        return Ok(());
    };
    let field = parse_field(attr, ty.trim_end_matches(','), pkg)
        .with_context(|| format!("field {rust} in {pkg}: #[prost({attr})]"))?;
    fields.push((rust.to_string(), field));
    Ok(())
}

fn parse_field(attr: &str, ty: &str, pkg: &str) -> Result<Field> {
    let tag: u32 = attr
        .split("tag = \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .context("no tag")?
        .parse()?;
    let repeated = attr.contains("repeated");
    let head = attr.split(',').next().unwrap_or_default().trim();
    let kind = if head.starts_with("btree_map") || head.starts_with("map") {
        let value = attr
            .split('"')
            .nth(1)
            .and_then(|m| m.split(',').nth(1))
            .context("map without value type")?
            .trim()
            .to_string();
        if value == "message" {
            format!("map:msg:{}", message_type(ty, pkg, true)?)
        } else {
            format!("map:{value}")
        }
    } else {
        match head {
            "message" => format!("msg:{}", message_type(ty, pkg, false)?),
            "string" | "bool" | "int32" | "int64" | "double" => head.to_string(),
            h if h.starts_with("bytes") => "bytes".to_string(),
            other => bail!("unsupported prost kind {other:?}"),
        }
    };
    Ok(Field {
        tag,
        json: String::new(),
        kind,
        repeated,
    })
}

/// The full name of the message type in a Rust type such as
/// `::core::option::Option<super::super::super::apimachinery::pkg::apis::meta::v1::ObjectMeta>`.
fn message_type(ty: &str, pkg: &str, map_value: bool) -> Result<String> {
    let inner = if map_value {
        ty.trim_end_matches(['>', ','])
            .rsplit(',')
            .next()
            .unwrap_or(ty)
    } else {
        ty
    };
    let inner = inner
        .trim()
        .trim_start_matches("::core::option::Option<")
        .trim_start_matches("::prost::alloc::vec::Vec<")
        .trim_end_matches('>')
        .trim();
    let mut segments: Vec<&str> = pkg.split('/').collect();
    let mut path: Vec<&str> = inner.split("::").filter(|s| !s.is_empty()).collect();
    while path.first() == Some(&"super") {
        segments.pop();
        path.remove(0);
    }
    if path.is_empty() {
        bail!("cannot read the type {ty:?}");
    }
    segments.extend(path);
    Ok(segments.join("."))
}

fn render(messages: &BTreeMap<String, Vec<Field>>) -> String {
    let mut s = String::new();
    s.push_str(
        "// @generated by `cargo xtask codegen-protobuf` from k8s-pb 0.9.0 (field numbers and\n\
         // wire types) and k8s-openapi 0.29 v1_34 (JSON names). Do not edit by hand.\n\n\
         use super::{Field, Kind::*, Message};\n\n\
         /// Every message the decoder knows, sorted by name (binary search).\n\
         pub(super) static MESSAGES: &[Message] = &[\n",
    );
    for (name, fields) in messages {
        let _ = writeln!(
            s,
            "    Message {{\n        name: {name:?},\n        fields: &["
        );
        for f in fields {
            let kind = match f.kind.split_once(':') {
                None => capitalise(&f.kind),
                Some(("msg", m)) => format!("Msg({m:?})"),
                Some(("map", v)) => match v.split_once(':') {
                    Some(("msg", m)) => format!("MapMsg({m:?})"),
                    _ => format!("Map{}", capitalise(v)),
                },
                Some(_) => unreachable!("kinds are made above"),
            };
            let _ = writeln!(
                s,
                "            Field {{ tag: {}, json: {:?}, kind: {kind}, repeated: {} }},",
                f.tag, f.json, f.repeated
            );
        }
        s.push_str("        ],\n    },\n");
    }
    s.push_str("];\n");
    s
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
