//! Operational commands: scale, cordon, uncordon, drain, events, wait.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use flotilla_api::Kind;
use flotilla_client::api::ObjectKey;
use flotilla_client::{Client, ClientError, Code, Expect, key};
use serde_json::Value;

use crate::objects::Scope;
use crate::print;

/// Compare-and-set rounds before an update gives up on a busy object.
const MAX_UPDATE_ATTEMPTS: usize = 10;
const POLL: Duration = Duration::from_millis(200);

/// Reads an object, changes it with `edit`, and writes it back only if
/// nobody changed it meanwhile; retries on conflict.
pub async fn update(client: &mut Client, key: ObjectKey, edit: impl Fn(&mut Value) -> anyhow::Result<()>) -> anyhow::Result<Value> {
    for _ in 0..MAX_UPDATE_ATTEMPTS {
        let json = client.get(key.clone(), false).await?.with_context(|| format!("{}/{} not found", key.kind, key.name))?;
        let mut object: Value = serde_json::from_str(&json)?;
        let revision: u64 = object["metadata"]["resourceVersion"].as_str().unwrap_or("0").parse().unwrap_or(0);
        edit(&mut object)?;
        match client.put(key.clone(), object.to_string(), Expect::Revision(revision)).await {
            Ok((stored, _)) => return Ok(serde_json::from_str(&stored)?),
            Err(ClientError::Status(s)) if s.code() == Code::Aborted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("{}/{} kept changing; try again", key.kind, key.name)
}

#[derive(Args)]
pub struct ScaleArgs {
    /// deployment, replicaset or statefulset.
    kind: String,
    name: String,
    #[arg(long)]
    replicas: i32,
}

pub async fn scale(args: ScaleArgs, scope: &Scope, server: &str) -> anyhow::Result<()> {
    let kind = Kind::parse(&args.kind)?;
    if !matches!(kind, Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet) {
        bail!("{} cannot be scaled: only deployments, replicasets and statefulsets have replicas", kind.plural());
    }
    if args.replicas < 0 {
        bail!("--replicas: must be 0 or more");
    }
    let mut client = Client::connect(server).await?;
    let ns = if scope.namespace.is_empty() { "default" } else { &scope.namespace };
    update(&mut client, key(kind.name(), ns, &args.name), |o| {
        o["spec"]["replicas"] = Value::from(args.replicas);
        Ok(())
    })
    .await?;
    println!("{}/{} scaled", print::resource_name(kind), args.name);
    Ok(())
}

#[derive(Args)]
pub struct NodeArgs {
    node: String,
}

pub async fn cordon(args: NodeArgs, server: &str, unschedulable: bool) -> anyhow::Result<()> {
    let mut client = Client::connect(server).await?;
    let before = client.get(key("Node", "", &args.node), false).await?.with_context(|| format!("node {:?} not found", args.node))?;
    let was = serde_json::from_str::<Value>(&before)?.pointer("/spec/unschedulable") == Some(&Value::Bool(true));
    let verb = if unschedulable { "cordoned" } else { "uncordoned" };
    if was == unschedulable {
        println!("node/{} already {verb}", args.node);
        return Ok(());
    }
    update(&mut client, key("Node", "", &args.node), |o| {
        if unschedulable {
            o["spec"]["unschedulable"] = Value::Bool(true);
        } else if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("unschedulable");
        }
        Ok(())
    })
    .await?;
    println!("node/{} {verb}", args.node);
    Ok(())
}

#[derive(Args)]
pub struct DrainArgs {
    node: String,
    /// How long to wait for the node's Pods to go.
    #[arg(long, default_value_t = 120)]
    timeout_seconds: u64,
}

/// Cordons the node, then deletes its Pods (those of DaemonSets stay, as
/// with kubectl's --ignore-daemonsets), and waits until they are gone.
pub async fn drain(args: DrainArgs, server: &str) -> anyhow::Result<()> {
    cordon(NodeArgs { node: args.node.clone() }, server, true).await?;
    let mut client = Client::connect(server).await?;
    let (pods, _) = client.list("Pod", None, false).await?;
    let mut evicted = Vec::new();
    for json in pods {
        let pod: Value = serde_json::from_str(&json)?;
        if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(args.node.as_str()) {
            continue;
        }
        let refs = pod.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
        if refs.iter().any(|r| r["kind"] == "DaemonSet") {
            continue;
        }
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
        match client.delete_object(key("Pod", &ns, &name), false).await {
            Ok(_) => println!("evicting pod {ns}/{name}"),
            Err(e) if e.code() == Code::NotFound => continue,
            Err(e) => return Err(e.into()),
        }
        evicted.push((ns, name));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_seconds);
    for (ns, name) in &evicted {
        while client.get(key("Pod", ns, name), false).await?.is_some() {
            if tokio::time::Instant::now() > deadline {
                bail!("pod {ns}/{name} still exists after {}s", args.timeout_seconds);
            }
            tokio::time::sleep(POLL).await;
        }
    }
    println!("node/{} drained", args.node);
    Ok(())
}

pub async fn events(scope: &Scope, server: &str) -> anyhow::Result<()> {
    let mut client = Client::connect(server).await?;
    let namespace = if scope.all_namespaces { None } else { Some(if scope.namespace.is_empty() { "default" } else { scope.namespace.as_str() }) };
    let (items, _) = client.list("Event", namespace, false).await?;
    let mut events: Vec<Value> = items.iter().filter_map(|j| serde_json::from_str(j).ok()).collect();
    events.sort_by_key(|e| e.pointer("/lastTimestamp").and_then(Value::as_str).unwrap_or("").to_string());
    if events.is_empty() {
        eprintln!("No events found.");
    } else {
        print!("{}", print::table(Kind::Event, &events, false, scope.all_namespaces));
    }
    Ok(())
}

#[derive(Args)]
pub struct WaitArgs {
    kind: String,
    name: String,
    /// condition=NAME[=VALUE] (Ready, Complete, Available, ...), or delete.
    #[arg(long = "for")]
    for_: String,
    #[arg(long, default_value_t = 30)]
    timeout_seconds: u64,
}

/// Waits for a condition, printing what it is waiting for meanwhile.
pub async fn wait(args: WaitArgs, scope: &Scope, server: &str) -> anyhow::Result<()> {
    let kind = Kind::parse(&args.kind)?;
    let ns = if !kind.namespaced() { "" } else if scope.namespace.is_empty() { "default" } else { &scope.namespace };
    let target = if args.for_ == "delete" {
        None
    } else {
        let spec = args.for_.strip_prefix("condition=").context("--for: use condition=NAME[=VALUE] or delete")?;
        let (name, value) = spec.split_once('=').unwrap_or((spec, "True"));
        Some((name.to_string(), value.to_string()))
    };
    let mut client = Client::connect(server).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_seconds);
    let shown = format!("{}/{}", print::resource_name(kind), args.name);
    let mut last_state = String::new();
    loop {
        let object = client.get(key(kind.name(), ns, &args.name), false).await?;
        let state = match (&target, &object) {
            (None, None) => {
                println!("{shown} deleted");
                return Ok(());
            }
            (None, Some(_)) => "still exists".to_string(),
            (Some(_), None) => "not found yet".to_string(),
            (Some((name, value)), Some(json)) => {
                let o: Value = serde_json::from_str(json)?;
                let found = o
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|c| c.iter().find(|c| c["type"] == name.as_str()))
                    .and_then(|c| c["status"].as_str().map(str::to_string));
                if found.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(value)) {
                    println!("{shown} condition met");
                    return Ok(());
                }
                format!("condition {name} is {}", found.unwrap_or_else(|| "not reported yet".into()))
            }
        };
        if state != last_state {
            eprintln!("waiting for {shown}: {state}");
            last_state = state;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {}s waiting for {shown} ({last_state})", args.timeout_seconds);
        }
        tokio::time::sleep(POLL).await;
    }
}

#[derive(Args)]
pub struct RolloutStatusArgs {
    /// deployment, statefulset or daemonset.
    kind: String,
    name: String,
    #[arg(long, default_value_t = 300)]
    timeout_seconds: u64,
}

/// Where a rollout stands, in kubectl's words; `None` once it is done.
pub fn rollout_progress(kind: Kind, o: &Value) -> anyhow::Result<Option<String>> {
    let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let num = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let stage = match kind {
        Kind::Deployment => {
            let desired = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            let (updated, total, available) = (num("/status/updatedReplicas"), num("/status/replicas"), num("/status/availableReplicas"));
            if updated < desired {
                Some(format!("Waiting for deployment {name:?} rollout to finish: {updated} out of {desired} new replicas have been updated..."))
            } else if total > updated {
                Some(format!("Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...", total - updated))
            } else if available < updated {
                Some(format!("Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."))
            } else {
                None
            }
        }
        Kind::StatefulSet => {
            let desired = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            let ready = num("/status/readyReplicas");
            (ready < desired).then(|| format!("Waiting for {} pods to be ready...", desired - ready))
        }
        Kind::DaemonSet => {
            let desired = num("/status/desiredNumberScheduled");
            let ready = num("/status/numberReady");
            (ready < desired).then(|| format!("Waiting for daemon set {name:?} rollout to finish: {ready} of {desired} updated pods are available..."))
        }
        other => bail!("{} have no rollout: use deployments, statefulsets or daemonsets", other.plural()),
    };
    // Status that predates the latest spec says nothing about this rollout.
    if num("/status/observedGeneration") < num("/metadata/generation") {
        let label = print::resource_name(kind).split('.').next().unwrap_or_default().to_string();
        return Ok(Some(format!("Waiting for {label} spec update to be observed...")));
    }
    Ok(stage)
}

/// Follows a rollout until it completes, printing each new stage.
pub async fn rollout_status(args: RolloutStatusArgs, scope: &Scope, server: &str) -> anyhow::Result<()> {
    let kind = Kind::parse(&args.kind)?;
    let ns = if scope.namespace.is_empty() { "default" } else { &scope.namespace };
    let mut client = Client::connect(server).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_seconds);
    let mut last = String::new();
    loop {
        let json = client.get(key(kind.name(), ns, &args.name), false).await?.with_context(|| {
            format!("{} {:?} not found", print::resource_name(kind), args.name)
        })?;
        match rollout_progress(kind, &serde_json::from_str(&json)?)? {
            None => {
                let label = print::resource_name(kind).split('.').next().unwrap_or_default().to_string();
                println!("{label} {:?} successfully rolled out", args.name);
                return Ok(());
            }
            Some(stage) if stage != last => {
                println!("{stage}");
                last = stage;
            }
            Some(_) => {}
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {}s: {last}", args.timeout_seconds);
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_stages_read_like_kubectl() {
        let d = |generation: i64, status: Value| {
            let mut o = serde_json::json!({"metadata": {"name": "web", "generation": generation}, "spec": {"replicas": 3}});
            o["status"] = status;
            o
        };
        let cases = [
            (d(2, serde_json::json!({"observedGeneration": 1})), Some("Waiting for deployment spec update to be observed...")),
            (d(1, serde_json::json!({"observedGeneration": 1, "updatedReplicas": 1, "replicas": 3})),
                Some("Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated...")),
            (d(1, serde_json::json!({"observedGeneration": 1, "updatedReplicas": 3, "replicas": 4, "availableReplicas": 3})),
                Some("Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination...")),
            (d(1, serde_json::json!({"observedGeneration": 1, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 2})),
                Some("Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available...")),
            (d(1, serde_json::json!({"observedGeneration": 1, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 3})), None),
        ];
        for (o, want) in cases {
            assert_eq!(rollout_progress(Kind::Deployment, &o).unwrap().as_deref(), want);
        }
        assert!(rollout_progress(Kind::Job, &d(1, Value::Null)).is_err());
    }
}

#[derive(Args)]
pub struct LogsArgs {
    pod: String,
    /// The container; the Pod's first when not given.
    #[arg(short = 'c', long, default_value = "")]
    container: String,
    /// Keep printing output as it comes, until the Pod ends or Ctrl-C.
    #[arg(short = 'f', long)]
    follow: bool,
    /// The output of the container's previous attempt.
    #[arg(short = 'p', long)]
    previous: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<u32>,
}

pub async fn logs(args: LogsArgs, scope: &Scope, server: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut client = Client::connect(server).await?;
    let pod = args.pod.strip_prefix("pod/").unwrap_or(&args.pod).to_string();
    let mut stream = client
        .logs(flotilla_client::node::LogsRequest {
            namespace: scope.namespace().to_string(),
            pod,
            container: args.container,
            previous: args.previous,
            tail_lines: args.tail.unwrap_or(0),
            follow: args.follow,
        })
        .await?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.message().await.map_err(ClientError::from)? {
        out.write_all(&chunk.data)?;
        out.flush()?;
    }
    Ok(())
}

#[derive(Args)]
pub struct ExecArgs {
    pod: String,
    #[arg(short = 'c', long, default_value = "")]
    container: String,
    /// Kill the command after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_seconds: u32,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Prints the command's output and exits with its exit code, as kubectl
/// exec does.
pub async fn exec(args: ExecArgs, scope: &Scope, server: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut client = Client::connect(server).await?;
    let pod = args.pod.strip_prefix("pod/").unwrap_or(&args.pod).to_string();
    let reply = client
        .exec(flotilla_client::node::ExecRequest {
            namespace: scope.namespace().to_string(),
            pod,
            container: args.container,
            command: args.command,
            timeout_ms: args.timeout_seconds.saturating_mul(1000),
        })
        .await?;
    std::io::stdout().write_all(&reply.stdout)?;
    std::io::stderr().write_all(&reply.stderr)?;
    if reply.exit_code != 0 {
        std::process::exit(reply.exit_code.clamp(1, 255));
    }
    Ok(())
}

#[derive(Args)]
pub struct RolloutHistoryArgs {
    /// deployment (only Deployments keep revisions).
    kind: String,
    name: String,
}

#[derive(Args)]
pub struct RolloutUndoArgs {
    /// deployment.
    kind: String,
    name: String,
    /// The revision to go back to; the one before the current by default.
    #[arg(long)]
    to_revision: Option<u64>,
}

/// A Deployment and its ReplicaSets by revision, oldest first.
async fn revisions(client: &mut Client, kind: &str, name: &str, scope: &Scope) -> anyhow::Result<(Value, Vec<(u64, Value)>)> {
    if Kind::parse(kind).ok() != Some(Kind::Deployment) {
        bail!("{kind}: only deployments keep a rollout history");
    }
    let ns = scope.namespace();
    let json = client.get(key("Deployment", ns, name), false).await?.with_context(|| format!("deployment {ns}/{name} not found"))?;
    let deployment: Value = serde_json::from_str(&json)?;
    let uid = deployment["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let (items, _) = client.list("ReplicaSet", Some(ns), false).await?;
    let mut owned = Vec::new();
    for json in items {
        let rs: Value = serde_json::from_str(&json)?;
        let refs = rs.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
        if !refs.iter().any(|r| r["uid"] == uid.as_str()) {
            continue;
        }
        let revision = rs
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(flotilla_api::wellknown::REVISION_ANNOTATION))
            .and_then(Value::as_str)
            .and_then(|r| r.parse().ok());
        if let Some(revision) = revision {
            owned.push((revision, rs));
        }
    }
    owned.sort_by_key(|(r, _)| *r);
    Ok((deployment, owned))
}

pub async fn rollout_history(args: RolloutHistoryArgs, scope: &Scope, server: &str) -> anyhow::Result<()> {
    let mut client = Client::connect(server).await?;
    let (_, owned) = revisions(&mut client, &args.kind, &args.name, scope).await?;
    println!("deployment.apps/{}", args.name);
    println!("REVISION  CHANGE-CAUSE");
    for (revision, rs) in owned {
        let cause = rs.pointer("/metadata/annotations/kubernetes.io~1change-cause").and_then(Value::as_str).unwrap_or("<none>");
        println!("{revision:<9} {cause}");
    }
    Ok(())
}

/// Puts an earlier revision's Pod template back into the Deployment; the
/// controller then rolls out to it, reusing that revision's ReplicaSet.
pub async fn rollout_undo(args: RolloutUndoArgs, scope: &Scope, server: &str) -> anyhow::Result<()> {
    let mut client = Client::connect(server).await?;
    let (deployment, owned) = revisions(&mut client, &args.kind, &args.name, scope).await?;
    let current: u64 = deployment
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(flotilla_api::wellknown::REVISION_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .or_else(|| owned.last().map(|(r, _)| *r))
        .unwrap_or(0);
    let target = match args.to_revision {
        Some(r) => owned.iter().find(|(rev, _)| *rev == r).with_context(|| format!("revision {r} not found in the history of deployment {}", args.name))?,
        None => owned
            .iter()
            .rev()
            .find(|(rev, _)| *rev < current)
            .with_context(|| format!("no earlier revision of deployment {} to go back to", args.name))?,
    };
    let mut template = target.1["spec"]["template"].clone();
    if let Some(labels) = template.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(flotilla_api::wellknown::POD_TEMPLATE_HASH_LABEL);
    }
    update(&mut client, key("Deployment", scope.namespace(), &args.name), |d| {
        d["spec"]["template"] = template.clone();
        Ok(())
    })
    .await?;
    println!("deployment.apps/{} rolled back to revision {}", args.name, target.0);
    Ok(())
}
