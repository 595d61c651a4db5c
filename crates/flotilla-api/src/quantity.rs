//! Resource quantities as Kubernetes writes them: `500m`, `2`, `128Mi`,
//! `1G`, `1.5`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A quantity kept as written, so it prints back unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Quantity(pub String);

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Manifests write `cpu: 1` as often as `cpu: "1"`.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
        }
        Ok(Quantity(match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
        }))
    }
}

const SUFFIXES: &[(&str, f64)] = &[
    ("Ki", 1024.0),
    ("Mi", 1_048_576.0),
    ("Gi", 1_073_741_824.0),
    ("Ti", 1_099_511_627_776.0),
    ("Pi", 1_125_899_906_842_624.0),
    ("Ei", 1_152_921_504_606_846_976.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
];

impl Quantity {
    /// The value in base units (cores, bytes).
    pub fn value(&self) -> Result<f64, String> {
        let s = self.0.trim();
        let (number, scale) = SUFFIXES
            .iter()
            .find_map(|(suffix, scale)| s.strip_suffix(suffix).map(|n| (n, *scale)))
            .unwrap_or((s, 1.0));
        let n: f64 = number.parse().map_err(|_| format!("{:?} is not a quantity (e.g. 500m, 2, 128Mi)", self.0))?;
        if !n.is_finite() || n < 0.0 {
            return Err(format!("{:?} must be a finite, non-negative quantity", self.0));
        }
        Ok(n * scale)
    }

    /// CPU in millicores, rounded up as Kubernetes does.
    pub fn millis(&self) -> Result<u64, String> {
        Ok((self.value()? * 1000.0).ceil() as u64)
    }

    /// Memory or storage in bytes, rounded up.
    pub fn bytes(&self) -> Result<u64, String> {
        Ok(self.value()?.ceil() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_kubernetes() {
        let q = |s: &str| Quantity(s.into());
        assert_eq!(q("500m").millis(), Ok(500));
        assert_eq!(q("2").millis(), Ok(2000));
        assert_eq!(q("0.1").millis(), Ok(100));
        assert_eq!(q("128Mi").bytes(), Ok(134_217_728));
        assert_eq!(q("1G").bytes(), Ok(1_000_000_000));
        assert_eq!(q("1.5Gi").bytes(), Ok(1_610_612_736));
        assert!(q("lots").value().is_err());
        assert!(q("-1").value().is_err());
        let from_yaml_number: Quantity = serde_json::from_str("1").unwrap();
        assert_eq!(from_yaml_number, q("1"));
        assert_eq!(serde_json::to_string(&q("250m")).unwrap(), "\"250m\"");
    }
}
