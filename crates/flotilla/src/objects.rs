//! The kubectl-style object commands: apply, create, get, describe, delete.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use flotilla_api::manifest::{self, ManifestObject, ValidateMode};
use flotilla_api::{Kind, yaml_out};
use flotilla_client::api::{ApplyAction, ApplyRequest, EventType};
use flotilla_client::{Client, key};
use serde_json::Value;

use crate::print::{self, Format};

/// Files a directory may hold that `apply -f DIR` reads.
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];
/// Manifests read from one `-f` at most.
const MAX_MANIFEST_FILES: usize = 1_000;
/// How long `delete --wait` waits before giving up.
const DELETE_WAIT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Validate {
    Strict,
    Warn,
}

#[derive(Args)]
pub struct Scope {
    /// Namespace (default: "default").
    #[arg(short = 'n', long = "namespace", global = true, default_value = "")]
    pub namespace: String,
    /// All namespaces.
    #[arg(short = 'A', long = "all-namespaces", global = true)]
    pub all_namespaces: bool,
}

impl Scope {
    pub fn namespace(&self) -> &str {
        if self.namespace.is_empty() { "default" } else { &self.namespace }
    }

    fn for_kind(&self, kind: Kind) -> Option<&str> {
        if !kind.namespaced() {
            Some("")
        } else if self.all_namespaces {
            None
        } else {
            Some(self.namespace())
        }
    }
}

#[derive(Args)]
pub struct ApplyArgs {
    /// Files, directories, or - for standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// strict refuses fields Flotilla does not implement; warn drops them
    /// with a warning.
    #[arg(long, value_enum, default_value = "strict")]
    validate: Validate,
    /// Check and show what would change, without writing.
    #[arg(long)]
    dry_run: bool,
    #[arg(short = 'o', long = "output", value_enum)]
    output: Option<Format>,
}

#[derive(Args)]
pub struct GetArgs {
    /// pods, deployments, nodes, ... (kubectl's names and short names work).
    kind: String,
    names: Vec<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Format,
    /// Label selector, e.g. app=web,tier!=db.
    #[arg(short = 'l', long = "selector", default_value = "")]
    selector: String,
    /// After listing, print changes as they happen.
    #[arg(short = 'w', long = "watch")]
    watch: bool,
    /// Read this peer's replica without asking the leader.
    #[arg(long)]
    stale: bool,
}

#[derive(Args)]
pub struct DescribeArgs {
    kind: String,
    name: String,
}

#[derive(Args)]
pub struct DeleteArgs {
    kind: Option<String>,
    names: Vec<String>,
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    /// Also delete what the object owns (ReplicaSets of a Deployment, Pods of
    /// a ReplicaSet, ...).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    cascade: bool,
    /// Wait until the objects are gone.
    #[arg(long)]
    wait: bool,
}

fn parse_kind(text: &str) -> anyhow::Result<Kind> {
    Ok(Kind::parse(text)?)
}

/// Reads every manifest named by `-f`, parsing client-side so that errors
/// name file and line. Nothing is applied if any document is wrong.
fn read_manifests(files: &[String], namespace: &str, mode: ValidateMode) -> anyhow::Result<Vec<ManifestObject>> {
    let mut sources: Vec<(String, String)> = Vec::new();
    for f in files {
        if f == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
            sources.push(("<stdin>".into(), text));
            continue;
        }
        let path = PathBuf::from(f);
        let paths = if path.is_dir() { manifest_files(&path)? } else { vec![path] };
        for p in paths {
            let text = std::fs::read_to_string(&p).with_context(|| p.display().to_string())?;
            sources.push((p.display().to_string(), text));
        }
    }
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (source, text) in &sources {
        let parsed = manifest::parse(text, source, namespace, mode);
        for w in &parsed.warnings {
            eprintln!("Warning: {w}");
        }
        errors.extend(parsed.errors.iter().map(|e| e.to_string()));
        objects.extend(parsed.objects);
    }
    if !errors.is_empty() {
        for e in &errors[..errors.len() - 1] {
            eprintln!("error: {e}");
        }
        bail!("{}", errors.last().expect("not empty"));
    }
    if objects.is_empty() {
        bail!("no objects found in {}", files.join(", "));
    }
    Ok(objects)
}

fn manifest_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e)))
        .collect();
    out.sort();
    if out.len() > MAX_MANIFEST_FILES {
        bail!("{}: more than {MAX_MANIFEST_FILES} manifest files", dir.display());
    }
    Ok(out)
}

pub async fn apply(args: ApplyArgs, scope: &Scope, server: &str, create_only: bool) -> anyhow::Result<()> {
    let mode = if args.validate == Validate::Warn { ValidateMode::Warn } else { ValidateMode::Strict };
    let objects = read_manifests(&args.files, &scope.namespace, mode)?;
    let mut client = Client::connect(server).await?;
    for m in objects {
        let kind = m.object.kind();
        let name = m.object.metadata().name.clone();
        let response = client
            .apply(ApplyRequest {
                object_json: m.object.to_json(),
                namespace: scope.namespace.clone(),
                warn_unknown_fields: mode == ValidateMode::Warn,
                create_only,
                dry_run: args.dry_run,
            })
            .await
            .with_context(|| format!("{}:{}: {}/{name}", m.source, m.line, print::resource_name(kind)))?;
        for w in &response.warnings {
            eprintln!("Warning: {w}");
        }
        let stored: Value = serde_json::from_str(&response.object_json)?;
        match args.output {
            Some(format) => print!("{}", print::document(format, kind, &[stored], true)),
            None => {
                let action = match ApplyAction::try_from(response.action) {
                    Ok(ApplyAction::Created) => "created",
                    Ok(ApplyAction::Configured) => "configured",
                    _ => "unchanged",
                };
                let shown = stored.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(&name);
                let dry = if args.dry_run { " (dry run)" } else { "" };
                println!("{}/{shown} {action}{dry}", print::resource_name(kind));
            }
        }
    }
    Ok(())
}

pub async fn get(args: GetArgs, scope: &Scope, server: &str) -> anyhow::Result<()> {
    let kind = parse_kind(&args.kind)?;
    let namespace = scope.for_kind(kind);
    let mut client = Client::connect(server).await?;
    let (items, revision) = if args.names.is_empty() {
        let (items, revision) = client.list_selected(kind.name(), namespace, &args.selector, 0, args.stale).await?;
        (items.iter().map(|j| serde_json::from_str(j)).collect::<Result<Vec<Value>, _>>()?, revision)
    } else {
        let ns = namespace.unwrap_or(scope.namespace());
        let mut items = Vec::new();
        for name in &args.names {
            let json = client
                .get(key(kind.name(), ns, name), args.stale)
                .await?
                .with_context(|| format!("{} {name:?} not found", print::resource_name(kind)))?;
            items.push(serde_json::from_str(&json)?);
        }
        (items, 0)
    };
    let single = args.names.len() == 1;
    match args.output {
        Format::Table | Format::Wide => {
            if items.is_empty() && !args.watch {
                eprintln!("No resources found{}.", namespace.map_or(String::new(), |ns| if ns.is_empty() { String::new() } else { format!(" in {ns} namespace") }));
            } else {
                print!("{}", print::table(kind, &items, args.output == Format::Wide, scope.all_namespaces && kind.namespaced()));
            }
        }
        format => print!("{}", print::document(format, kind, &items, single)),
    }
    if args.watch {
        let from = if revision > 0 { revision } else { client.list(kind.name(), namespace, false).await?.1 };
        let mut stream = client.watch(kind.name(), namespace, from).await?;
        while let Some(event) = stream.message().await? {
            let object: Value = serde_json::from_str(&event.object_json)?;
            if !args.names.is_empty() && !args.names.iter().any(|n| Some(n.as_str()) == object.pointer("/metadata/name").and_then(Value::as_str)) {
                continue;
            }
            if !args.selector.is_empty() {
                let labels = object.pointer("/metadata/labels").cloned().unwrap_or_default();
                let labels = serde_json::from_value(labels).unwrap_or_default();
                if !flotilla_api::meta::parse_selector(&args.selector).map_err(anyhow::Error::msg)?.matches(&labels) {
                    continue;
                }
            }
            match args.output {
                Format::Table | Format::Wide => {
                    let t = print::table(kind, &[object], args.output == Format::Wide, scope.all_namespaces && kind.namespaced());
                    let row = t.lines().nth(1).unwrap_or_default();
                    let tag = if event.r#type == EventType::Deleted as i32 { "  (deleted)" } else { "" };
                    println!("{row}{tag}");
                }
                Format::Json => println!("{}", serde_json::json!({ "type": event_name(event.r#type), "object": object })),
                format => print!("{}", print::document(format, kind, &[object], true)),
            }
        }
    }
    Ok(())
}

fn event_name(t: i32) -> &'static str {
    match EventType::try_from(t) {
        Ok(EventType::Added) => "ADDED",
        Ok(EventType::Modified) => "MODIFIED",
        _ => "DELETED",
    }
}

pub async fn describe(args: DescribeArgs, scope: &Scope, server: &str) -> anyhow::Result<()> {
    let kind = parse_kind(&args.kind)?;
    let ns = if kind.namespaced() { scope.namespace() } else { "" };
    let mut client = Client::connect(server).await?;
    let json = client
        .get(key(kind.name(), ns, &args.name), false)
        .await?
        .with_context(|| format!("{} {:?} not found", print::resource_name(kind), args.name))?;
    let object: Value = serde_json::from_str(&json)?;
    println!("Name:         {}", args.name);
    if kind.namespaced() {
        println!("Namespace:    {ns}");
    }
    println!("Kind:         {kind}");
    print!("{}", yaml_out::to_yaml(&object));
    let (events, _) = client.list("Event", Some(if kind.namespaced() { ns } else { "default" }), false).await?;
    let mut mine: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|e| {
            e.pointer("/involvedObject/kind").and_then(Value::as_str) == Some(kind.name())
                && e.pointer("/involvedObject/name").and_then(Value::as_str) == Some(args.name.as_str())
        })
        .collect();
    mine.sort_by_key(|e| e.pointer("/lastTimestamp").and_then(Value::as_str).unwrap_or("").to_string());
    println!("Events:");
    if mine.is_empty() {
        println!("  <none>");
    } else {
        for line in print::table(Kind::Event, &mine, false, false).lines() {
            println!("  {line}");
        }
    }
    Ok(())
}

pub async fn delete(args: DeleteArgs, scope: &Scope, server: &str) -> anyhow::Result<()> {
    let mut targets: Vec<(Kind, String, String)> = Vec::new();
    if !args.files.is_empty() {
        for m in read_manifests(&args.files, &scope.namespace, ValidateMode::Warn)? {
            let meta = m.object.metadata();
            targets.push((m.object.kind(), meta.namespace.clone(), meta.name.clone()));
        }
    } else {
        let kind = parse_kind(args.kind.as_deref().context("name a kind and a name, or -f FILE")?)?;
        if args.names.is_empty() {
            bail!("name the {} to delete", kind.plural());
        }
        let ns = if kind.namespaced() { scope.namespace().to_string() } else { String::new() };
        targets.extend(args.names.iter().map(|n| (kind, ns.clone(), n.clone())));
    }
    let mut client = Client::connect(server).await?;
    let mut gone = Vec::new();
    for (kind, ns, name) in targets {
        let r = client
            .delete_object(key(kind.name(), &ns, &name), args.cascade)
            .await
            .with_context(|| format!("deleting {}/{name}", print::resource_name(kind)))?;
        println!("{} \"{name}\" deleted", print::resource_name(kind));
        gone.extend(r.deleted);
    }
    if args.wait {
        let deadline = tokio::time::Instant::now() + DELETE_WAIT;
        for k in gone {
            while client.get(k.clone(), false).await?.is_some() {
                if tokio::time::Instant::now() > deadline {
                    bail!("{}/{} still exists after {}s", k.kind, k.name, DELETE_WAIT.as_secs());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok(())
}
