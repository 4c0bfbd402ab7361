//! Quantities as Kubernetes reads them (`resource.ParseQuantity`), to check their form and to
//! compare requests with limits of any resource, not only cpu and memory.

use crate::Quantity;

/// Kubernetes' message for a malformed quantity.
pub(crate) const QUANTITY_FORM_MSG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// The value of a quantity (`250m` is 0.25, `1Ki` is 1024, `1e3` is 1000), None when it is not
/// a quantity. A float is exact enough to order requests and limits.
pub(crate) fn value(q: &Quantity) -> Option<f64> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let sign_len = usize::from(number.starts_with(['+', '-']));
    let digits = &number[sign_len..];
    if digits.is_empty()
        || digits.contains(['+', '-'])
        || digits.matches('.').count() > 1
        || digits == "."
    {
        return None;
    }
    let n: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp => {
            let e = exp.strip_prefix(['e', 'E'])?;
            let e: i32 = e.parse().ok()?;
            10f64.powi(e)
        }
    };
    Some(n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<f64> {
        value(&Quantity(s.into()))
    }

    #[test]
    fn parses_kubernetes_forms() {
        assert_eq!(v("250m"), Some(0.25));
        assert_eq!(v("2"), Some(2.0));
        assert_eq!(v("1Ki"), Some(1024.0));
        assert_eq!(v("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(v("1e3"), Some(1000.0));
        assert_eq!(v("1.5"), Some(1.5));
        assert_eq!(v("-1"), Some(-1.0));
        assert_eq!(v("abc"), None);
        assert_eq!(v("1Kb"), None);
        assert_eq!(v(""), None);
        assert_eq!(v("1..2"), None);
    }
}
