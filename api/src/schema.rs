//! The edge between JSON and types: decoding a request's object into its k8s-openapi type
//! with every type error listed at once with its path, unknown fields found (for
//! `fieldValidation=Strict|Warn|Ignore`), and the number forms Kubernetes accepts for
//! quantities coerced. Uses the schemas k8s-openapi generates (schemars, under Kubernetes'
//! definition names); `/openapi/v2` and `/openapi/v3` are built from the same types by the
//! API server (`podd_control_plane::discovery`), in OpenAPI's own dialect.

use crate::Kind;
use crate::validation::{FieldError, MAX_REPORTED_ERRORS, ValidationErrors};
use k8s_openapi::schemars::JsonSchema;
use k8s_openapi::schemars::generate::SchemaSettings;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// `fieldValidation` as kubectl sends it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    /// Kubernetes' default for requests that do not say.
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: &str) -> Option<FieldValidation> {
        match s {
            "Ignore" => Some(FieldValidation::Ignore),
            "Warn" => Some(FieldValidation::Warn),
            "Strict" => Some(FieldValidation::Strict),
            _ => None,
        }
    }
}

/// Kubernetes' definition name of quantities: a number is accepted where one is expected and
/// stored as its string.
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime";

/// A time as it is stored: Kubernetes keeps Time to the second and MicroTime to the
/// microsecond, so a finer time sent by a client is cut to that precision here, once, and
/// what is stored reads back as the object that was decoded.
fn canonical_time<T: serde::de::DeserializeOwned + serde::Serialize>(v: &mut Value) {
    if let Ok(t) = serde_json::from_value::<T>(v.clone())
        && let Ok(canonical) = serde_json::to_value(&t)
    {
        *v = canonical;
    }
}
/// Where schemars puts definitions with its default settings, which the walk resolves.
const REF_PREFIX: &str = "#/$defs/";

/// Every definition the served kinds use, generated once, and each kind's own definition.
struct Schemas {
    definitions: Map<String, Value>,
    roots: BTreeMap<Kind, String>,
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let mut roots = BTreeMap::new();
    for kind in Kind::ALL {
        crate::with_kind_type!(kind, T => {
            generator.subschema_for::<T>();
            roots.insert(kind, <T as JsonSchema>::schema_name().into_owned());
        });
    }
    Schemas {
        definitions: generator.take_definitions(false),
        roots,
    }
});

/// Decodes `v` into `T`. Errors list every type problem (and, when Strict, every unknown
/// field) with its path; on success, the warnings are what Warn reports (`unknown field
/// "spec.foo"`), to be sent back as `Warning:` headers.
pub fn decode<T: crate::Object>(
    mut v: Value,
    validation: FieldValidation,
) -> Result<(T, Vec<String>), ValidationErrors> {
    let s = &*SCHEMAS;
    let mut walk = Walk {
        definitions: &s.definitions,
        errors: ValidationErrors::default(),
        unknown: Vec::new(),
        unknown_left_out: 0,
        path: String::new(),
    };
    if let Some(root) = s.definitions.get(&s.roots[&T::API_KIND]) {
        walk.value(root, &mut v);
    }
    let Walk {
        mut errors,
        unknown,
        unknown_left_out,
        ..
    } = walk;
    let mut warnings = Vec::new();
    match validation {
        FieldValidation::Strict => {
            unknown
                .into_iter()
                .for_each(|f| errors.push(FieldError::unknown_field(f)));
            if unknown_left_out > 0 {
                errors.push(FieldError::too_many(
                    "<object>",
                    format!("{unknown_left_out} more unknown fields"),
                ));
            }
        }
        FieldValidation::Warn => {
            warnings = unknown
                .iter()
                .map(|f| format!("unknown field {f:?}"))
                .collect();
            if unknown_left_out > 0 {
                warnings.push(format!("{unknown_left_out} more unknown fields"));
            }
        }
        FieldValidation::Ignore => {}
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let obj = serde_json::from_value(v).map_err(|e| {
        let mut errs = ValidationErrors::default();
        errs.push(FieldError::type_invalid("<body>", format!("{e}")));
        errs
    })?;
    Ok((obj, warnings))
}

/// A walk of one request's JSON along its kind's schema.
struct Walk<'a> {
    definitions: &'a Map<String, Value>,
    errors: ValidationErrors,
    /// Paths of the fields the schema does not have.
    unknown: Vec<String>,
    /// Unknown fields past [`MAX_REPORTED_ERRORS`], counted only.
    unknown_left_out: usize,
    /// The path of the value being looked at, as Kubernetes writes it
    /// (`spec.template.spec.containers[0].image`).
    path: String,
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl<'a> Walk<'a> {
    fn path_or_root(&self) -> &str {
        if self.path.is_empty() {
            "<body>"
        } else {
            &self.path
        }
    }

    /// `spec.replicas: Invalid value: "string": spec.replicas in body must be of type
    /// integer: "string"`, as kube-apiserver's schema validation words it.
    fn type_error(&mut self, want: &str, got: &Value) {
        let path = self.path_or_root().to_string();
        let got = json_type(got);
        self.errors.push(FieldError::type_invalid(
            path.clone(),
            format!("{got:?}: {path} in body must be of type {want}: {got:?}"),
        ));
    }

    /// `Invalid value: VALUE: DETAIL`, with `value` already as Kubernetes prints it.
    fn invalid(&mut self, value: String, detail: String) {
        let path = self.path_or_root().to_string();
        self.errors
            .push(FieldError::type_invalid(path, format!("{value}: {detail}")));
    }

    fn value(&mut self, schema: &'a Value, v: &mut Value) {
        // null is "unset" for every field, as Kubernetes' decoder reads it.
        if v.is_null() {
            return;
        }
        let (schema, def_name) = match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.strip_prefix(REF_PREFIX).unwrap_or(r);
                let definitions: &'a Map<String, Value> = self.definitions;
                match definitions.get(name) {
                    Some(def) => (def, Some(name)),
                    None => return,
                }
            }
            None => (schema, None),
        };
        if v.is_string() {
            match def_name {
                Some(TIME) => canonical_time::<crate::Time>(v),
                Some(MICRO_TIME) => canonical_time::<crate::MicroTime>(v),
                _ => {}
            }
        }
        if schema
            .get("x-kubernetes-int-or-string")
            .and_then(Value::as_bool)
            == Some(true)
        {
            let quantity = def_name == Some(QUANTITY);
            match v {
                Value::String(_) => {}
                Value::Number(n) if quantity => *v = Value::String(n.to_string()),
                Value::Number(n) if n.is_i64() || n.is_u64() => {
                    if n.as_i64().is_none_or(|i| i32::try_from(i).is_err()) {
                        let n = n.to_string();
                        let p = self.path_or_root().to_string();
                        self.invalid(
                            n,
                            format!("{p} in body should be less than or equal to 2147483647"),
                        );
                    }
                }
                other => {
                    let other = other.clone();
                    self.type_error(if quantity { "string" } else { "integer,string" }, &other);
                }
            }
            return;
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => self.object(schema, v),
            Some("array") => {
                let Value::Array(items) = v else {
                    let got = v.clone();
                    return self.type_error("array", &got);
                };
                let Some(item_schema) = schema.get("items") else {
                    return;
                };
                let len = self.path.len();
                for (i, item) in items.iter_mut().enumerate() {
                    self.path.push_str(&format!("[{i}]"));
                    self.value(item_schema, item);
                    self.path.truncate(len);
                }
            }
            Some("string") => {
                let Value::String(s) = v else {
                    let got = v.clone();
                    return self.type_error("string", &got);
                };
                if schema.get("format").and_then(Value::as_str) == Some("date-time")
                    && s.parse::<k8s_openapi::jiff::Timestamp>().is_err()
                {
                    let s = format!("{s:?}");
                    let p = self.path_or_root().to_string();
                    self.invalid(
                        s.clone(),
                        format!("{p} in body must be of type date-time: {s}"),
                    );
                }
            }
            Some("integer") => {
                let Value::Number(n) = v else {
                    let got = v.clone();
                    return self.type_error("integer", &got);
                };
                if n.is_f64() {
                    let got = v.clone();
                    return self.type_error("integer", &got);
                }
                if schema.get("format").and_then(Value::as_str) == Some("int32")
                    && n.as_i64().is_none_or(|i| i32::try_from(i).is_err())
                {
                    let n = n.to_string();
                    let p = self.path_or_root().to_string();
                    let bound = if n.starts_with('-') {
                        "greater than or equal to -2147483648"
                    } else {
                        "less than or equal to 2147483647"
                    };
                    self.invalid(n, format!("{p} in body should be {bound}"));
                }
            }
            Some("number") if !v.is_number() => {
                let got = v.clone();
                self.type_error("number", &got);
            }
            Some("boolean") if !v.is_boolean() => {
                let got = v.clone();
                self.type_error("boolean", &got);
            }
            _ => {}
        }
    }

    fn object(&mut self, schema: &'a Value, v: &mut Value) {
        let Value::Object(fields) = v else {
            let got = v.clone();
            return self.type_error("object", &got);
        };
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        if properties.is_none() && additional.is_none() {
            // A free-form object (RawExtension, FieldsV1): anything goes.
            return;
        }
        let len = self.path.len();
        for (key, field) in fields.iter_mut() {
            if !self.path.is_empty() {
                self.path.push('.');
            }
            self.path.push_str(key);
            match properties.and_then(|p| p.get(key)).or(additional) {
                Some(field_schema) => self.value(field_schema, field),
                // Bounded, as errors are: a hostile body of many unknown fields must not make
                // an answer of as many lines.
                None if self.unknown.len() < MAX_REPORTED_ERRORS => {
                    self.unknown.push(self.path.clone())
                }
                None => self.unknown_left_out += 1,
            }
            self.path.truncate(len);
        }
    }
}

#[cfg(test)]
mod tests;
