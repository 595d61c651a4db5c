//! Golden tests over data files: every supported kind parses, defaults and
//! round-trips through JSON and YAML; every broken manifest gets exactly
//! the errors its `# expect:` lines name.
//!
//! `UPDATE_GOLDEN=1 cargo test -p flotilla-api --test golden` rewrites the
//! expected JSON after a deliberate change; review the diff.

use std::path::{Path, PathBuf};

use flotilla_api::manifest::{self, ValidateMode};
use flotilla_api::yaml::parse_documents;
use flotilla_api::yaml_out::to_yaml;
use flotilla_api::{Kind, Object};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_kind_parses_defaults_and_round_trips() {
    let files = yaml_files(&golden_dir());
    let mut kinds = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        let parsed = manifest::parse(&text, &name, "", ValidateMode::Strict);
        assert!(parsed.errors.is_empty(), "{name}: {:?}", parsed.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>());
        assert!(parsed.warnings.is_empty(), "{name}: {:?}", parsed.warnings);
        assert_eq!(parsed.objects.len(), 1, "{name}");
        let object = &parsed.objects[0].object;
        kinds.push(object.kind());
        let value = object.to_value();

        let expected_path = file.with_extension("json");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&expected_path, serde_json::to_string_pretty(&value).unwrap() + "\n").unwrap();
        }
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&expected_path).unwrap_or_else(|_| panic!("{} missing", expected_path.display())),
        )
        .unwrap();
        assert_eq!(value, expected, "{name}: defaults differ from {}", expected_path.display());

        // JSON round trip: nothing lost, nothing unknown.
        let again = Object::from_value(serde_json::from_str(&object.to_json()).unwrap()).unwrap();
        assert!(again.unknown_fields.is_empty(), "{name}: {:?}", again.unknown_fields);
        assert_eq!(&again.object, object, "{name}: JSON round trip");

        // YAML round trip through kubectl-style output.
        let yaml = to_yaml(&value);
        let docs = parse_documents(&yaml).unwrap_or_else(|e| panic!("{name}: our YAML does not parse: {e}\n{yaml}"));
        assert_eq!(docs[0].value, value, "{name}: YAML round trip\n{yaml}");
        let reparsed = manifest::parse(&yaml, &name, "", ValidateMode::Strict);
        assert!(reparsed.errors.is_empty(), "{name}: {:?}", reparsed.errors);
        assert_eq!(&reparsed.objects[0].object, object, "{name}: re-applying printed YAML changes nothing");
    }
    kinds.sort();
    assert_eq!(kinds, Kind::ALL.to_vec(), "one golden manifest per served kind");
}

/// The Job in the Pod overview must apply as it stands.
#[test]
fn the_seed_job_manifest_applies_unchanged() {
    let copy = std::fs::read_to_string(golden_dir().join("job.yaml")).unwrap();
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/seed/pod-overview.md");
    if let Ok(doc) = std::fs::read_to_string(&seed) {
        let block = doc.split("```yaml\n").nth(1).and_then(|b| b.split("```").next()).expect("the seed's yaml block");
        assert_eq!(block, copy, "tests/golden/job.yaml must be the seed's manifest, byte for byte");
    }
    let parsed = manifest::parse(&copy, "job.yaml", "", ValidateMode::Strict);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let Object::Job(job) = &parsed.objects[0].object else { panic!("not a Job") };
    assert_eq!(job.metadata.name, "hello");
    assert_eq!(job.metadata.namespace, "default");
    assert_eq!(job.spec.completions, Some(1));
    assert_eq!(job.spec.backoff_limit, Some(6));
    let pod = &job.spec.template.spec;
    assert_eq!(pod.restart_policy, "OnFailure");
    assert_eq!(pod.containers[0].command, vec!["sh", "-c", "echo \"Hello, Kubernetes!\" && sleep 3600"]);
}

#[test]
fn each_broken_manifest_gets_its_expected_errors_with_lines() {
    let files = yaml_files(&golden_dir().join("broken"));
    assert!(files.len() >= 10);
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        let mut expected: Vec<String> =
            text.lines().filter_map(|l| l.strip_prefix("# expect: ")).map(str::to_string).collect();
        assert!(!expected.is_empty(), "{name} names no expected error");
        let parsed = manifest::parse(&text, &name, "", ValidateMode::Strict);
        let mut got: Vec<String> = parsed.errors.iter().map(|e| e.to_string()).collect();
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn warn_mode_accepts_unknown_fields_with_a_warning_each() {
    let text = std::fs::read_to_string(golden_dir().join("broken/unknown-field.yaml")).unwrap();
    let parsed = manifest::parse(&text, "unknown-field.yaml", "", ValidateMode::Warn);
    assert!(parsed.errors.is_empty());
    assert_eq!(parsed.objects.len(), 1);
    let warnings: Vec<String> = parsed.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings, vec![
        "unknown-field.yaml:11: spec.containers[0].securityContext: field not supported by Flotilla; ignored",
        "unknown-field.yaml:13: spec.hostNetwork: field not supported by Flotilla; ignored",
    ]);
}

#[test]
fn a_list_document_and_the_namespace_flag() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- kind: ConfigMap\n  apiVersion: v1\n  metadata: {name: a}\n- kind: ConfigMap\n  metadata: {name: b, namespace: other}\n";
    let parsed = manifest::parse(text, "list.yaml", "team", ValidateMode::Strict);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let names: Vec<(String, String)> =
        parsed.objects.iter().map(|o| (o.object.metadata().namespace.clone(), o.object.metadata().name.clone())).collect();
    assert_eq!(names, vec![("team".into(), "a".into()), ("other".into(), "b".into())]);
}

