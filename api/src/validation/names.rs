//! Kubernetes' syntax rules for names, label keys and values and port names
//! (apimachinery's `validation.IsDNS1123Label`, `IsQualifiedName`, `IsValidLabelValue`,
//! `IsValidPortName`), with its messages word for word, so kubectl shows what it would show
//! against kube-apiserver.

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const IANA_PORT_NAME_MAX: usize = 15;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case \
     alphanumeric characters or '-', and must start and end with an alphanumeric character \
     (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
     alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
     (e.g. 'example.com', regex used for validation is \
     '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric \
     characters or '-', start with an alphabetic character, and end with an alphanumeric \
     character (e.g. 'my-name',  or 'abc-123', regex used for validation is \
     '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' \
     or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or \
     'my.name',  or '123-abc', regex used for validation is \
     '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of \
     alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
     character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is \
     '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn max_len(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn is_label_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.iter().all(|&c| alnum(c) || c == b'-')
        && alnum(b[0])
        && alnum(b[b.len() - 1])
}

/// Every reason `s` is not a DNS-1123 label (empty when it is one).
pub(crate) fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        out.push(max_len(DNS1123_LABEL_MAX));
    }
    if !is_label_syntax(s) {
        out.push(DNS1123_LABEL_MSG.to_string());
    }
    out
}

/// Every reason `s` is not a DNS-1123 subdomain.
pub(crate) fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        out.push(max_len(DNS1123_SUBDOMAIN_MAX));
    }
    if !s.split('.').all(is_label_syntax) {
        out.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    out
}

/// Every reason `s` is not a DNS-1035 label (Service names).
pub(crate) fn dns1035_label_errors(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        out.push(max_len(DNS1123_LABEL_MAX));
    }
    if !is_label_syntax(s) || !s.as_bytes()[0].is_ascii_lowercase() {
        out.push(DNS1035_LABEL_MSG.to_string());
    }
    out
}

fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Every reason `s` is not a qualified name (`[prefix/]name`: label and annotation keys).
pub(crate) fn qualified_name_errors(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                out.push("prefix part must be non-empty".to_string());
            } else {
                out.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|e| format!("prefix part {e}")),
                );
            }
            name
        }
        _ => {
            out.push(format!(
                "a qualified name {QUALIFIED_NAME_MSG_SHORT} with an optional DNS subdomain \
                 prefix and '/' (e.g. 'example.com/MyName')"
            ));
            return out;
        }
    };
    if name.is_empty() {
        out.push("name part must be non-empty".to_string());
    } else {
        if name.len() > QUALIFIED_NAME_MAX {
            out.push(format!("name part {}", max_len(QUALIFIED_NAME_MAX)));
        }
        if !is_qualified_part(name) {
            out.push(QUALIFIED_NAME_MSG.to_string());
        }
    }
    out
}

const QUALIFIED_NAME_MSG_SHORT: &str = "must consist of alphanumeric characters, '-', '_' or \
     '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or \
     'my.name',  or '123-abc', regex used for validation is \
     '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// Every reason `v` is not a label value.
pub(crate) fn label_value_errors(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    if v.is_empty() {
        return out;
    }
    if v.len() > LABEL_VALUE_MAX {
        out.push(max_len(LABEL_VALUE_MAX));
    }
    if !is_qualified_part(v) {
        out.push(LABEL_VALUE_MSG.to_string());
    }
    out
}

/// Every reason `s` is not an IANA service name (a port name: `http`, `metrics-1`).
pub(crate) fn iana_port_name_errors(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > IANA_PORT_NAME_MAX {
        out.push(max_len(IANA_PORT_NAME_MAX));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        out.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)".into());
    }
    if s.contains("--") {
        out.push("must not contain consecutive hyphens".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        out.push("must not begin or end with a hyphen".into());
    }
    out
}

fn first_or_join(v: Vec<String>) -> Option<String> {
    if v.is_empty() {
        None
    } else {
        Some(v.join(", "))
    }
}

/// A DNS-1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric, at
/// most 63 characters. Returns why not, when not.
pub fn check_dns1123_label(s: &str) -> Option<String> {
    first_or_join(dns1123_label_errors(s))
}

/// A DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters.
pub fn check_dns1123_subdomain(s: &str) -> Option<String> {
    first_or_join(dns1123_subdomain_errors(s))
}

/// A DNS-1035 label (Service names): a DNS-1123 label that starts with a letter.
pub fn check_dns1035_label(s: &str) -> Option<String> {
    first_or_join(dns1035_label_errors(s))
}

/// A qualified name (`[prefix/]name`, the prefix a DNS-1123 subdomain): annotation keys.
pub fn check_qualified_name(k: &str) -> Option<String> {
    first_or_join(qualified_name_errors(k))
}

/// A label key: a qualified name.
pub fn check_label_key(k: &str) -> Option<String> {
    check_qualified_name(k)
}

/// A label value: empty, or like a label key's name.
pub fn check_label_value(v: &str) -> Option<String> {
    first_or_join(label_value_errors(v))
}

/// A port name (IANA service name): at most 15 characters, lower-case alphanumerics and
/// single '-', at least one letter.
pub fn check_iana_port_name(s: &str) -> Option<String> {
    first_or_join(iana_port_name_errors(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(check_dns1123_label("web-1").is_none());
        assert!(check_dns1123_label("Web").is_some());
        assert!(check_dns1123_label("-web").is_some());
        assert!(check_dns1123_label("web-").is_some());
        assert!(check_dns1123_label("").is_some());
        assert_eq!(
            check_dns1123_label(&"a".repeat(64)).unwrap(),
            "must be no more than 63 characters"
        );
        assert!(check_dns1123_subdomain("a.b-c.d").is_none());
        assert!(check_dns1123_subdomain("a..b").is_some());
        assert!(
            check_dns1123_subdomain("Web_1")
                .unwrap()
                .starts_with("a lowercase RFC 1123 subdomain must consist of")
        );
        assert!(check_dns1035_label("1web").is_some());
        assert!(check_dns1035_label("web1").is_none());
    }

    #[test]
    fn labels() {
        assert!(check_label_key("app").is_none());
        assert!(check_label_key("example.com/app_Name").is_none());
        assert!(check_label_key("Example.com/app").is_some());
        assert!(check_label_key("a/b/c").is_some());
        assert!(check_label_key("/a").is_some());
        assert!(
            check_label_key("-bad")
                .unwrap()
                .starts_with("name part must consist")
        );
        assert!(check_label_value("").is_none());
        assert!(check_label_value("v1.2_3").is_none());
        assert!(check_label_value("-x").is_some());
        assert!(check_label_value(&"x".repeat(64)).is_some());
    }

    #[test]
    fn port_names() {
        assert!(check_iana_port_name("http").is_none());
        assert!(check_iana_port_name("metrics-1").is_none());
        assert!(check_iana_port_name("HTTP").is_some());
        assert!(check_iana_port_name("8080").is_some());
        assert!(check_iana_port_name("a--b").is_some());
        assert!(check_iana_port_name("-a").is_some());
        assert!(check_iana_port_name("abcdefghijklmnop").is_some());
    }
}
