//! Deterministic names. Two reconciles of the same view must propose the
//! same names, so a proposal repeated from a stale view fails as "already
//! exists" instead of creating a second Pod.

use flotilla_api::pod::PodTemplateSpec;

/// Kubernetes' alphabet for generated names: no vowels (no accidental
/// words), no characters that are easily confused.
pub const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub const SUFFIX_LEN: usize = 5;
pub const TEMPLATE_HASH_LEN: usize = 10;

/// The 5-character suffix of a controller's `attempt`-th generated Pod
/// name; `seed` is the controller's uid (and, for a DaemonSet, the node).
pub fn pod_name_suffix(seed: &str, attempt: u32) -> String {
    encode(
        hash(&[seed.as_bytes(), b"\0", &attempt.to_le_bytes()]),
        SUFFIX_LEN,
    )
}

/// The `pod-template-hash` of a Deployment's template: 10 characters of a
/// hash of its JSON (field order is fixed by the types, maps are sorted).
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let json = serde_json::to_string(template).expect("API types serialize");
    encode(hash(&[json.as_bytes()]), TEMPLATE_HASH_LEN)
}

/// FNV-1a, then a 64-bit finalizer so that similar inputs (attempt 1 and
/// 2) give unrelated outputs in every digit.
fn hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn encode(mut h: u64, len: usize) -> String {
    let base = NAME_ALPHABET.len() as u64;
    (0..len)
        .map(|_| {
            let c = NAME_ALPHABET[(h % base) as usize] as char;
            h /= base;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_deterministic_distinct_and_in_the_alphabet() {
        assert_eq!(pod_name_suffix("uid-1", 0), pod_name_suffix("uid-1", 0));
        let mut seen = std::collections::BTreeSet::new();
        for attempt in 0..200 {
            let s = pod_name_suffix("uid-1", attempt);
            assert_eq!(s.len(), SUFFIX_LEN);
            assert!(s.bytes().all(|b| NAME_ALPHABET.contains(&b)), "{s}");
            seen.insert(s);
        }
        assert_eq!(seen.len(), 200, "200 attempts give 200 names");
        assert_ne!(pod_name_suffix("uid-1", 0), pod_name_suffix("uid-2", 0));
    }

    #[test]
    fn template_hash_follows_the_template() {
        let mut t = PodTemplateSpec::default();
        t.metadata.labels.insert("app".into(), "web".into());
        let h = template_hash(&t);
        assert_eq!(h.len(), TEMPLATE_HASH_LEN);
        assert_eq!(h, template_hash(&t.clone()));
        t.spec.restart_policy = "Always".into();
        assert_ne!(h, template_hash(&t));
    }
}
