//! Server-side apply: an applied manifest decoded, defaulted and
//! validated, then merged onto the live object into the one write that
//! makes it so.

use flotilla_api::defaults::apply_defaults;
use flotilla_api::validate::validate;
use flotilla_api::{Object, apply};
use flotilla_store::{ObjectKey, Precondition, StoredObject};
use serde_json::Value;

use crate::Entropy;

/// Read-merge-write rounds an apply makes before giving up on a hot object.
pub const MAX_APPLY_ATTEMPTS: usize = 5;
/// Random characters after a generateName prefix, as Kubernetes adds.
const GENERATED_SUFFIX_LEN: usize = 5;

/// An applied manifest, ready to merge.
pub struct Prepared {
    pub object: Object,
    pub key: ObjectKey,
    /// Fields Flotilla does not support, ignored because the client asked
    /// to be warned rather than refused.
    pub warnings: Vec<String>,
}

/// Decodes, defaults and validates an applied manifest (JSON) in the
/// client's `namespace`. Unknown fields refuse it unless `warn_unknown_fields`.
/// Every problem is reported, each by field.
pub fn prepare(object_json: &str, namespace: &str, warn_unknown_fields: bool, entropy: &dyn Entropy) -> Result<Prepared, String> {
    let value: Value = serde_json::from_str(object_json).map_err(|e| format!("object is not valid JSON: {e}"))?;
    let decoded = Object::from_value(value).map_err(|e| e.to_string())?;
    let mut warnings = Vec::new();
    if !decoded.unknown_fields.is_empty() {
        let named: Vec<String> = decoded.unknown_fields.iter().map(|p| format!("{p}: field not supported by Flotilla")).collect();
        if !warn_unknown_fields {
            return Err(named.join("; "));
        }
        warnings = named.into_iter().map(|w| format!("{w}; ignored")).collect();
    }
    let mut object = decoded.object;
    apply_defaults(&mut object, namespace);
    let meta = object.metadata_mut();
    if meta.name.is_empty() && !meta.generate_name.is_empty() {
        meta.name = format!("{}{}", meta.generate_name, random_suffix(entropy));
    }
    let problems = validate(&object);
    if !problems.is_empty() {
        return Err(problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "));
    }
    let key = crate::objects::key_of(&object);
    Ok(Prepared { object, key, warnings })
}

fn random_suffix(entropy: &dyn Entropy) -> String {
    // Consonants and digits only, as Kubernetes uses, so no words appear.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..GENERATED_SUFFIX_LEN)
        .map(|_| {
            let mut draw = [0u8; 8];
            entropy.fill(&mut draw);
            // Scaled, not taken modulo the alphabet, so every letter is as likely.
            let at = (u64::from_le_bytes(draw) as u128 * ALPHABET.len() as u128) >> 64;
            ALPHABET[at as usize] as char
        })
        .collect()
}

/// What applying a prepared manifest onto the live object comes to.
#[derive(Debug, PartialEq)]
pub enum Applied {
    /// The live object already says everything the manifest says.
    Unchanged { object: String, revision: u64 },
    /// The merged object, to be written on the precondition that nothing
    /// changed since the live object was read.
    Write { object: String, precondition: Precondition, created: bool },
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ApplyError {
    #[error("{0} already exists")]
    AlreadyExists(ObjectKey),
}

/// Merges `prepared` onto `live` (the stored object of its key, if any).
/// `create_only` refuses an object that exists, as `create` does.
pub fn merge(prepared: &Prepared, live: Option<&StoredObject>, create_only: bool) -> Result<Applied, ApplyError> {
    if create_only && live.is_some() {
        return Err(ApplyError::AlreadyExists(prepared.key.clone()));
    }
    let live_value: Option<Value> = live.map(|o| serde_json::from_str(&o.json).expect("stored objects are JSON"));
    let merged = apply::merge_onto_live(&prepared.object, live_value.as_ref());
    if let (Some(stored), Some(value)) = (live, &live_value)
        && apply::same_desired_state(&merged, value)
    {
        return Ok(Applied::Unchanged { object: stored.json.to_string(), revision: stored.mod_revision });
    }
    let precondition = live.map_or(Precondition::MustNotExist, |l| Precondition::Revision(l.mod_revision));
    Ok(Applied::Write { object: merged.to_string(), precondition, created: live.is_none() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Counting, put};
    use flotilla_store::ObjectStore;
    use serde_json::json;

    fn manifest(image: &str) -> String {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "c", "image": image}]}
        })
        .to_string()
    }

    #[test]
    fn an_apply_creates_then_changes_nothing_then_configures() {
        let mut store = ObjectStore::default();
        let first = prepare(&manifest("nginx:1"), "default", false, &Counting::default()).unwrap();
        assert_eq!(first.key, ObjectKey::new("Pod", "default", "web"));
        let Applied::Write { object, precondition, created } = merge(&first, None, false).unwrap() else { panic!("a write") };
        assert_eq!((precondition, created), (Precondition::MustNotExist, true));
        let revision = put(&mut store, serde_json::from_str(&object).unwrap());

        let live = store.get(&first.key).cloned();
        let again = merge(&first, live.as_ref(), false).unwrap();
        assert!(matches!(again, Applied::Unchanged { revision: r, .. } if r == revision));
        assert_eq!(merge(&first, live.as_ref(), true).unwrap_err().to_string(), "Pod/default/web already exists");

        let changed = prepare(&manifest("nginx:2"), "default", false, &Counting::default()).unwrap();
        let Applied::Write { object, precondition, created } = merge(&changed, live.as_ref(), false).unwrap() else { panic!("a write") };
        assert_eq!((precondition, created), (Precondition::Revision(revision), false));
        assert_eq!(serde_json::from_str::<Value>(&object).unwrap()["spec"]["containers"][0]["image"], "nginx:2");
    }

    #[test]
    fn each_bad_manifest_is_refused_by_field_and_unknown_fields_may_only_warn() {
        let entropy = Counting::default();
        let not_json = prepare("{", "default", false, &entropy).err().unwrap();
        assert!(not_json.starts_with("object is not valid JSON"), "{not_json}");
        let unknown = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}], "colour": "blue"}
        })
        .to_string();
        assert_eq!(prepare(&unknown, "default", false, &entropy).err().unwrap(), "spec.colour: field not supported by Flotilla");
        let warned = prepare(&unknown, "default", true, &entropy).unwrap();
        assert_eq!(warned.warnings, ["spec.colour: field not supported by Flotilla; ignored"]);
        let nameless = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let problem = prepare(&nameless.to_string(), "default", false, &entropy).err().unwrap();
        assert!(problem.contains("metadata.name"), "{problem}");
    }

    #[test]
    fn a_generated_name_takes_five_letters_or_digits_from_the_entropy() {
        let generated = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "job-"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        })
        .to_string();
        let a = prepare(&generated, "default", false, &Counting::default()).unwrap();
        let b = prepare(&generated, "default", false, &Counting::default()).unwrap();
        assert_eq!(a.key, b.key, "the same draws give the same name");
        let suffix = a.key.name.strip_prefix("job-").unwrap();
        assert_eq!(suffix.len(), GENERATED_SUFFIX_LEN);
        assert!(suffix.bytes().all(|c| b"bcdfghjklmnpqrstvwxz2456789".contains(&c)), "{suffix}");
    }
}
