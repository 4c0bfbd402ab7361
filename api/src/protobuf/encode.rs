//! The encoder: an object's JSON, as the API server serves it, into Kubernetes' protobuf,
//! walking the same generated table as the decoder (so `decode(encode(x)) == x`).
//!
//! A JSON field the table does not know is refused by [`encode`] (the server then answers
//! JSON, losing nothing); [`encode_lossy`] leaves it out instead (for watch streams, whose
//! encoding is chosen before the objects are seen). `apiVersion` and `kind` are not fields of
//! protobuf messages: they travel in the `runtime.Unknown` envelope, and are dropped from
//! nested list items as kube-apiserver drops them.

use super::{
    Field, Kind, MAGIC, MAX_DEPTH, Message, ProtobufError, inline, is_special, message, message_for,
};
use serde_json::Value;

/// The Content-Type of a protobuf watch stream: length-prefixed `WatchEvent`s.
pub const WATCH_CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// Whether objects of `api_version` and `kind` have a protobuf message.
pub fn encodable(api_version: &str, kind: &str) -> bool {
    message_for(api_version, kind).is_ok()
}

/// Encodes an object (with apiVersion and kind) into a whole protobuf body: the `k8s\0` magic,
/// then a `runtime.Unknown` naming apiVersion and kind around the object's message. Fails on
/// a field the table does not know.
pub fn encode(obj: &Value) -> Result<Vec<u8>, ProtobufError> {
    encode_with(obj, true)
}

/// [`encode`], leaving out fields the table does not know.
pub fn encode_lossy(obj: &Value) -> Result<Vec<u8>, ProtobufError> {
    encode_with(obj, false)
}

fn encode_with(obj: &Value, strict: bool) -> Result<Vec<u8>, ProtobufError> {
    let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind) = (s("apiVersion"), s("kind"));
    if kind.is_empty() {
        return Err(encode_error("the object", "it has no kind"));
    }
    let msg = message_for(api_version, kind).map_err(|_| ProtobufError::UnknownType {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    })?;
    let mut raw = Vec::new();
    let enc = Encoder { strict };
    enc.message(obj, msg, 0, &mut raw)?;
    let mut type_meta = Vec::new();
    put_string(&mut type_meta, 1, api_version);
    put_string(&mut type_meta, 2, kind);
    let mut out = Vec::with_capacity(raw.len() + type_meta.len() + 32);
    out.extend_from_slice(MAGIC);
    // runtime.Unknown: typeMeta = 1, raw = 2, contentEncoding = 3, contentType = 4 (Go
    // writes the empty strings too).
    put_bytes(&mut out, 1, &type_meta);
    put_bytes(&mut out, 2, &raw);
    put_string(&mut out, 3, "");
    put_string(&mut out, 4, "");
    Ok(out)
}

/// One watch event as kube-apiserver frames it on a protobuf watch: a 4-byte big-endian
/// length, then a `meta.v1.WatchEvent` whose `object.raw` is the object's whole protobuf body
/// (magic and envelope included). Unknown fields are left out (see [`encode_lossy`]).
pub fn encode_watch_frame(event_type: &str, obj: &Value) -> Result<Vec<u8>, ProtobufError> {
    let inner = encode_lossy(obj)?;
    let mut raw_ext = Vec::with_capacity(inner.len() + 8);
    put_bytes(&mut raw_ext, 1, &inner);
    let mut ev = Vec::with_capacity(raw_ext.len() + 24);
    put_string(&mut ev, 1, event_type);
    put_bytes(&mut ev, 2, &raw_ext);
    let len = u32::try_from(ev.len())
        .map_err(|_| encode_error("a watch event", "it is larger than 4 GiB"))?;
    let mut out = Vec::with_capacity(ev.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&ev);
    Ok(out)
}

fn encode_error(what: &str, why: &str) -> ProtobufError {
    ProtobufError::Encode {
        what: what.to_string(),
        why: why.to_string(),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, tag: u32, wire: u8) {
    put_varint(out, (u64::from(tag) << 3) | u64::from(wire));
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
    put_key(out, tag, 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_string(out: &mut Vec<u8>, tag: u32, s: &str) {
    put_bytes(out, tag, s.as_bytes());
}

struct Encoder {
    strict: bool,
}

impl Encoder {
    /// Appends the fields of `v` (a JSON object, or a special message's JSON form) as `msg`.
    fn message(
        &self,
        v: &Value,
        msg: &'static Message,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtobufError> {
        self.message_fields(v, msg, depth, out, self.strict)
    }

    /// [`Self::message`]; `check` refuses JSON keys that are no field.
    fn message_fields(
        &self,
        v: &Value,
        msg: &'static Message,
        depth: usize,
        out: &mut Vec<u8>,
        check: bool,
    ) -> Result<(), ProtobufError> {
        if depth > MAX_DEPTH {
            return Err(encode_error(
                msg.name,
                &format!("objects nest deeper than {MAX_DEPTH} levels"),
            ));
        }
        if let Some(()) = self.special(v, msg.name, out)? {
            return Ok(());
        }
        let obj = v
            .as_object()
            .ok_or_else(|| encode_error(msg.name, &format!("expected a JSON object, found {v}")))?;
        for f in msg.fields {
            if inline(msg.name, f) {
                // Go's `json:",inline"`: the embedded message's fields sit in this object
                // (whose own check below covers them).
                let Kind::Msg(name) = f.kind else { continue };
                let mut body = Vec::new();
                self.message_fields(v, message(name)?, depth + 1, &mut body, false)?;
                put_bytes(out, f.tag, &body);
                continue;
            }
            if let Some(fv) = obj.get(f.json) {
                self.field(f, fv, msg, depth, out)?;
            }
        }
        if check {
            for (k, fv) in obj {
                if fv.is_null() || k == "apiVersion" || k == "kind" || knows(msg, k) {
                    continue;
                }
                return Err(encode_error(
                    &format!("{}.{k}", msg.name),
                    "the protobuf message has no such field",
                ));
            }
        }
        Ok(())
    }

    fn field(
        &self,
        f: &Field,
        v: &Value,
        msg: &'static Message,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtobufError> {
        let what = || format!("{}.{}", msg.name, f.json);
        if v.is_null() {
            return Ok(());
        }
        match f.kind {
            Kind::MapString | Kind::MapBytes | Kind::MapMsg(_) => {
                let m = v
                    .as_object()
                    .ok_or_else(|| encode_error(&what(), "a map must be a JSON object"))?;
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                for k in keys {
                    let mut entry = Vec::new();
                    put_string(&mut entry, 1, k);
                    let val = &m[k];
                    match f.kind {
                        Kind::MapString => {
                            let s = val.as_str().ok_or_else(|| {
                                encode_error(&what(), "a map value must be a string")
                            })?;
                            put_string(&mut entry, 2, s);
                        }
                        Kind::MapBytes => {
                            let b =
                                val.as_str().and_then(super::base64_decode).ok_or_else(|| {
                                    encode_error(&what(), "a map value must be base64")
                                })?;
                            put_bytes(&mut entry, 2, &b);
                        }
                        Kind::MapMsg(name) => {
                            let mut body = Vec::new();
                            self.message(val, message(name)?, depth + 1, &mut body)?;
                            put_bytes(&mut entry, 2, &body);
                        }
                        _ => unreachable!("only maps are here"),
                    }
                    put_bytes(out, f.tag, &entry);
                }
                Ok(())
            }
            _ if f.repeated => {
                let a = v
                    .as_array()
                    .ok_or_else(|| encode_error(&what(), "a repeated field must be an array"))?;
                // Unpacked, as Go writes proto2's repeated scalars.
                for item in a.iter().filter(|i| !i.is_null()) {
                    self.single(f, item, depth, out, &what)?;
                }
                Ok(())
            }
            _ => self.single(f, v, depth, out, &what),
        }
    }

    fn single(
        &self,
        f: &Field,
        v: &Value,
        depth: usize,
        out: &mut Vec<u8>,
        what: &dyn Fn() -> String,
    ) -> Result<(), ProtobufError> {
        let bad =
            |expected: &str| encode_error(&what(), &format!("expected {expected}, found {v}"));
        match f.kind {
            Kind::String => {
                put_string(out, f.tag, v.as_str().ok_or_else(|| bad("a string"))?);
            }
            Kind::Bool => {
                put_key(out, f.tag, 0);
                put_varint(out, u64::from(v.as_bool().ok_or_else(|| bad("a boolean"))?));
            }
            Kind::Int32 => {
                let n = v
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| bad("a 32-bit integer"))?;
                put_key(out, f.tag, 0);
                // Negative int32s are sign-extended to 64 bits on the wire.
                put_varint(out, i64::from(n) as u64);
            }
            Kind::Int64 => {
                let n = v.as_i64().ok_or_else(|| bad("a 64-bit integer"))?;
                put_key(out, f.tag, 0);
                put_varint(out, n as u64);
            }
            Kind::Double => {
                let n = v.as_f64().ok_or_else(|| bad("a number"))?;
                put_key(out, f.tag, 1);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Kind::Bytes => {
                let b = v
                    .as_str()
                    .and_then(super::base64_decode)
                    .ok_or_else(|| bad("base64 bytes"))?;
                put_bytes(out, f.tag, &b);
            }
            Kind::Msg(name) => {
                let mut body = Vec::new();
                self.message(v, message(name)?, depth + 1, &mut body)?;
                put_bytes(out, f.tag, &body);
            }
            Kind::MapString | Kind::MapBytes | Kind::MapMsg(_) => {
                unreachable!("maps are encoded by field()")
            }
        }
        Ok(())
    }

    /// Kubernetes' messages whose JSON is not an object of their fields (the inverse of the
    /// decoder's `special`). None when `name` is an ordinary message.
    fn special(
        &self,
        v: &Value,
        name: &str,
        out: &mut Vec<u8>,
    ) -> Result<Option<()>, ProtobufError> {
        if !is_special(name) {
            return Ok(None);
        }
        let short = name.rsplit('.').next().unwrap_or(name);
        let bad = |expected: &str| encode_error(name, &format!("expected {expected}, found {v}"));
        match short {
            "Time" | "MicroTime" => {
                let s = v.as_str().ok_or_else(|| bad("an RFC 3339 time"))?;
                let ts: k8s_openapi::jiff::Timestamp =
                    s.parse().map_err(|_| bad("an RFC 3339 time"))?;
                let (secs, nanos) = (ts.as_second(), ts.subsec_nanosecond());
                put_key(out, 1, 0);
                put_varint(out, secs as u64);
                if nanos != 0 {
                    put_key(out, 2, 0);
                    put_varint(out, i64::from(nanos) as u64);
                }
            }
            "Quantity" => {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(bad("a quantity")),
                };
                put_string(out, 1, &s);
            }
            "IntOrString" => match v {
                Value::String(s) => {
                    put_key(out, 1, 0);
                    put_varint(out, 1);
                    put_string(out, 3, s);
                }
                Value::Number(n) => {
                    let i = n
                        .as_i64()
                        .and_then(|i| i32::try_from(i).ok())
                        .ok_or_else(|| bad("a 32-bit integer or a string"))?;
                    put_key(out, 1, 0);
                    put_varint(out, 0);
                    put_key(out, 2, 0);
                    put_varint(out, i64::from(i) as u64);
                }
                _ => return Err(bad("an integer or a string")),
            },
            "RawExtension" | "FieldsV1" => {
                let b = serde_json::to_vec(v).map_err(|e| bad(&e.to_string()))?;
                put_bytes(out, 1, &b);
            }
            "Duration" => {
                let s = v.as_str().ok_or_else(|| bad("a duration"))?;
                let n = parse_go_duration(s).ok_or_else(|| bad("a duration like 1h2m3s"))?;
                put_key(out, 1, 0);
                put_varint(out, n as u64);
            }
            _ => return Ok(None),
        }
        Ok(Some(()))
    }
}

/// Whether `msg` has a field (directly or through an inline message) named `json`.
fn knows(msg: &Message, json: &str) -> bool {
    msg.fields.iter().any(|f| {
        f.json == json
            || (inline(msg.name, f)
                && matches!(f.kind, Kind::Msg(n) if message(n).is_ok_and(|m| knows(m, json))))
    })
}

/// Go's `time.ParseDuration`: `1h2m3.5s`, `500ms`, `10us`, `-1m`; nanoseconds.
pub(super) fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_end);
        let n: f64 = num.parse().ok()?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * scale;
        rest = tail;
    }
    let n = total.round() as i64;
    Some(if neg { -n } else { n })
}
