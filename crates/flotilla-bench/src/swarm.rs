//! Flotilla's docker runtime against Docker Swarm on the same engine: the
//! time from asking for N replicas to N containers running. Swarm runs a
//! service on a single-node swarm (`docker swarm init`); Flotilla runs a
//! Deployment on three peers on loopback whose Pods are containers of the
//! same engine. Both run the `flotilla:local` image (`scripts/image.sh`),
//! `sleep` as the command, so no registry is involved.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_testkit::{Cluster, Options, apply, pods};
use serde_json::{Value, json};

use crate::{median, ms};

const IMAGE: &str = "flotilla:local";
/// How long N replicas may take before the run is called failed.
const RUN_LIMIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(100);

fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker").args(args).output().context("running docker")?;
    if !out.status.success() {
        bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Joins a single-node swarm if the engine is in none; leaves it again
/// when dropped, only if it was made here.
struct Swarm {
    made_here: bool,
}

impl Swarm {
    fn join() -> anyhow::Result<Swarm> {
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
        if state == "active" {
            return Ok(Swarm { made_here: false });
        }
        docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
        Ok(Swarm { made_here: true })
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if self.made_here {
            let _ = docker(&["swarm", "leave", "--force"]);
        }
    }
}

/// Seconds from `docker service create` to `replicas` tasks running.
fn swarm_run(replicas: usize, run: usize) -> anyhow::Result<Duration> {
    let name = format!("flotilla-bench-{replicas}-{run}");
    let started = Instant::now();
    docker(&[
        "service", "create", "--detach", "--quiet", "--no-resolve-image", "--name", &name,
        "--replicas", &replicas.to_string(), "--entrypoint", "sleep", IMAGE, "1000000",
    ])?;
    let outcome = loop {
        let states = docker(&["service", "ps", &name, "--filter", "desired-state=running", "--format", "{{.CurrentState}}"])?;
        if states.lines().filter(|l| l.starts_with("Running")).count() >= replicas {
            break Ok(started.elapsed());
        }
        if started.elapsed() > RUN_LIMIT {
            break Err(anyhow::anyhow!("swarm: {replicas} tasks not running after {RUN_LIMIT:?}"));
        }
        std::thread::sleep(POLL);
    };
    docker(&["service", "rm", &name])?;
    // The service's containers go away in the background: wait, so the
    // next run starts on an idle engine.
    let label = format!("label=com.docker.swarm.service.name={name}");
    let deadline = Instant::now() + RUN_LIMIT;
    while !docker(&["ps", "--all", "--quiet", "--filter", &label])?.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    outcome
}

fn deployment(name: &str, replicas: usize) -> String {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "sleep", "image": IMAGE, "command": ["sleep", "1000000"]}]}
            }
        }
    })
    .to_string()
}

/// Time from applying a Deployment of `replicas` to all its Pods Running.
async fn flotilla_run(cluster: &Cluster, replicas: usize, run: usize) -> anyhow::Result<Duration> {
    let name = format!("bench-{replicas}-{run}");
    let mut client = cluster.client(1).await;
    let started = Instant::now();
    apply(cluster, 1, &deployment(&name, replicas));
    let outcome = loop {
        let running = pods(&mut client)
            .await
            .iter()
            .filter(|p| p.pointer("/metadata/labels/app").and_then(Value::as_str) == Some(name.as_str()))
            .filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Running"))
            .count();
        if running >= replicas {
            break Ok(started.elapsed());
        }
        if started.elapsed() > RUN_LIMIT {
            break Err(anyhow::anyhow!("flotilla: {replicas} Pods not running after {RUN_LIMIT:?}"));
        }
        tokio::time::sleep(POLL).await;
    };
    let out = flotilla_testkit::cli(&cluster.addr_of(1), &["delete", "deployment", &name], None);
    anyhow::ensure!(out.status.success(), "deleting {name}: {}", String::from_utf8_lossy(&out.stderr));
    // Wait until its containers are gone, as for Swarm.
    let deadline = Instant::now() + RUN_LIMIT;
    while Instant::now() < deadline {
        let left = pods(&mut client).await.iter().filter(|p| p.pointer("/metadata/labels/app").and_then(Value::as_str) == Some(name.as_str())).count();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    outcome
}

pub async fn compare(levels: &[usize], runs: usize) -> anyhow::Result<Value> {
    anyhow::ensure!(runs > 0, "at least one run");
    docker(&["image", "inspect", IMAGE]).context("no flotilla:local image: build it with scripts/image.sh")?;
    let swarm = Swarm::join()?;
    let options = Options {
        node: "runtime = \"docker\"\n".into(),
        node_name_prefix: format!("bench{}", std::process::id()),
        ..Options::default()
    };
    let cluster = Cluster::start(3, options);
    cluster.wait_leader(Duration::from_secs(30)).await;
    cluster.wait_nodes_ready(1, 3, Duration::from_secs(30)).await;
    let version = docker(&["version", "--format", "{{.Server.Version}}"])?;
    println!("N containers running: Flotilla (docker runtime, 3 peers on loopback) and Docker Swarm {version} (one node), same engine, image {IMAGE}");
    println!("{:>9} {:>14} {:>12} {:>8}", "replicas", "flotilla s", "swarm s", "ratio");
    let mut rows = Vec::new();
    for &replicas in levels {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for run in 0..runs {
            ours.push(ms(flotilla_run(&cluster, replicas, run).await?));
            theirs.push(ms(tokio::task::spawn_blocking(move || swarm_run(replicas, run)).await??));
        }
        let (f, s) = (median(ours.clone()), median(theirs.clone()));
        println!("{replicas:>9} {:>14.2} {:>12.2} {:>8.2}", f / 1e3, s / 1e3, s / f);
        rows.push(json!({"replicas": replicas, "flotilla_ms": f, "swarm_ms": s, "swarm_over_flotilla": s / f, "flotilla_runs_ms": ours, "swarm_runs_ms": theirs}));
    }
    drop(swarm);
    Ok(json!({"bench": "swarm-comparison", "docker_version": version, "runs": runs, "results": rows}))
}
