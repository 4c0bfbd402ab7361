//! Kubernetes resource quantities: CPU in cores or millicores ("250m", "1.5"), memory in bytes
//! with binary ("128Mi", "1.5Gi") or decimal ("500M") suffixes. Both serialise as strings.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {what} quantity {input:?}: {reason}; use a form like {example}")]
pub struct QuantityError {
    pub what: &'static str,
    pub input: String,
    pub reason: &'static str,
    pub example: &'static str,
}

/// CPU in millicores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpu(pub u64);

/// Memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Memory(pub u64);

impl Cpu {
    pub fn millis(self) -> u64 {
        self.0
    }
}

impl Memory {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// Splits "1.5Gi" into ("1.5", "Gi") and parses the number as an exact decimal scaled by
/// `scale` (so "1.5" with scale 1000 is 1500), rejecting anything that would round.
fn parse_decimal(num: &str, scale: u128) -> Option<u128> {
    if num.is_empty() || num.starts_with('-') || num.starts_with('+') {
        return None;
    }
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int_v: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = int_v.checked_mul(scale)?;
    let mut denom: u128 = 1;
    let mut frac_v: u128 = 0;
    for d in frac.bytes() {
        denom = denom.checked_mul(10)?;
        frac_v = frac_v * 10 + u128::from(d - b'0');
    }
    let scaled = frac_v.checked_mul(scale)?;
    // Kubernetes rounds fractions up to the smallest unit; so do we.
    value = value.checked_add(scaled.div_ceil(denom))?;
    Some(value)
}

impl FromStr for Cpu {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| QuantityError {
            what: "cpu",
            input: s.to_string(),
            reason,
            example: "\"250m\" or \"1.5\"",
        };
        let t = s.trim();
        let v = if let Some(m) = t.strip_suffix('m') {
            parse_decimal(m, 1)
        } else {
            parse_decimal(t, 1000)
        }
        .ok_or_else(|| err("not a non-negative decimal number of cores or millicores"))?;
        u64::try_from(v).map(Cpu).map_err(|_| err("too large"))
    }
}

const MEMORY_SUFFIXES: [(&str, u128); 12] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

impl FromStr for Memory {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| QuantityError {
            what: "memory",
            input: s.to_string(),
            reason,
            example: "\"128Mi\", \"1.5Gi\" or \"500M\"",
        };
        let t = s.trim();
        let (num, scale) = MEMORY_SUFFIXES
            .iter()
            .find_map(|(suf, scale)| t.strip_suffix(suf).map(|n| (n, *scale)))
            .unwrap_or((t, 1));
        let v = parse_decimal(num, scale)
            .ok_or_else(|| err("not a non-negative number with an optional unit suffix"))?;
        u64::try_from(v).map(Memory).map_err(|_| err("too large"))
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suf, scale) in MEMORY_SUFFIXES.iter().take(6).rev() {
            let scale = *scale as u64;
            if self.0 != 0 && self.0.is_multiple_of(scale) {
                return write!(f, "{}{}", self.0 / scale, suf);
            }
        }
        write!(f, "{}", self.0)
    }
}

macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Manifests may carry plain numbers (`cpu: 2`); accept them as Kubernetes does.
                let v = serde_json::Value::deserialize(d)?;
                let s = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    other => {
                        return Err(serde::de::Error::custom(format!(
                            "expected a quantity string, got {other}"
                        )));
                    }
                };
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
string_serde!(Cpu);
string_serde!(Memory);

/// Kubernetes' quantity on the wire ([`crate::Quantity`]) as podd's CPU and memory.
impl TryFrom<&crate::Quantity> for Cpu {
    type Error = QuantityError;
    fn try_from(q: &crate::Quantity) -> Result<Self, Self::Error> {
        q.0.parse()
    }
}

impl TryFrom<&crate::Quantity> for Memory {
    type Error = QuantityError;
    fn try_from(q: &crate::Quantity) -> Result<Self, Self::Error> {
        q.0.parse()
    }
}

impl From<Cpu> for crate::Quantity {
    fn from(c: Cpu) -> Self {
        crate::Quantity(c.to_string())
    }
}

impl From<Memory> for crate::Quantity {
    fn from(m: Memory) -> Self {
        crate::Quantity(m.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_forms() {
        assert_eq!("250m".parse::<Cpu>().unwrap(), Cpu(250));
        assert_eq!("1".parse::<Cpu>().unwrap(), Cpu(1000));
        assert_eq!("1.5".parse::<Cpu>().unwrap(), Cpu(1500));
        assert_eq!("0.1".parse::<Cpu>().unwrap(), Cpu(100));
        assert!("-1".parse::<Cpu>().is_err());
        assert!("abc".parse::<Cpu>().is_err());
        assert!("".parse::<Cpu>().is_err());
        assert_eq!(Cpu(1500).to_string(), "1500m");
        assert_eq!(Cpu(2000).to_string(), "2");
    }

    #[test]
    fn memory_forms() {
        assert_eq!("128Mi".parse::<Memory>().unwrap(), Memory(128 << 20));
        assert_eq!("1.5Gi".parse::<Memory>().unwrap(), Memory(3 << 29));
        assert_eq!("500M".parse::<Memory>().unwrap(), Memory(500_000_000));
        assert_eq!("1024".parse::<Memory>().unwrap(), Memory(1024));
        assert!("12Qi".parse::<Memory>().is_err());
        assert_eq!(Memory(128 << 20).to_string(), "128Mi");
        let e = "x".parse::<Memory>().unwrap_err().to_string();
        assert!(e.contains("128Mi"), "{e}");
    }

    #[test]
    fn serde_accepts_numbers() {
        let c: Cpu = serde_json::from_str("2").unwrap();
        assert_eq!(c, Cpu(2000));
        let m: Memory = serde_json::from_str("\"64Mi\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"64Mi\"");
    }

    proptest! {
        #[test]
        fn display_roundtrips(c in 0u64..10_000_000, m in 0u64..(1u64 << 50)) {
            prop_assert_eq!(Cpu(c).to_string().parse::<Cpu>().unwrap(), Cpu(c));
            prop_assert_eq!(Memory(m).to_string().parse::<Memory>().unwrap(), Memory(m));
        }
    }
}
