//! The five-peer Docker Compose cluster of `docker-compose.yml`, from the
//! image `scripts/image.sh` builds out of the binary under test. Skips,
//! saying why, where no Docker engine or `docker-compose` answers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use flotilla_blackbox::{Client, Expect, cli, config_map, flotilla_bin, key, value_of};
use flotilla_chaos::nemesis::{Container, Shape, apply_grudge, connected, grudge, heal_all, partition};

const SETTLE: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// One compose project, taken down with its volumes when dropped (also
/// when the test fails).
struct Project {
    name: String,
    host_ip: String,
}

impl Project {
    fn compose(&self, args: &[&str]) -> Output {
        Command::new("docker-compose")
            .arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(repo().join("docker-compose.yml"))
            .args(args)
            .env("FLOTILLA_HOST_IP", &self.host_ip)
            .output()
            .expect("running docker-compose")
    }

    fn addr(&self, peer: u64) -> String {
        format!("{}:{}", self.host_ip, 7000 + peer)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let out = self.compose(&["down", "--volumes", "--timeout", "5"]);
        if !out.status.success() {
            eprintln!("docker-compose down failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

fn ok(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Builds the image for a new project, or says why it cannot be done here
/// and returns `None`.
fn prepare() -> Option<Project> {
    match Command::new("docker-compose").arg("version").output() {
        Ok(out) if out.status.success() => {}
        _ => {
            println!("skipped: docker-compose does not run here");
            return None;
        }
    }
    if !Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success()) {
        println!("skipped: no Docker engine answers");
        return None;
    }
    let image = Command::new("bash").arg(repo().join("scripts/image.sh")).arg(flotilla_bin()).output().expect("running scripts/image.sh");
    ok(&image, "scripts/image.sh");
    Some(Project {
        name: format!("flotilla-test-{}", std::process::id()),
        host_ip: format!("127.{}.{}.{}", rand::random_range(1..255u8), rand::random_range(1..255u8), rand::random_range(2..255u8)),
    })
}

/// `prepare`, then brings the project up.
fn start() -> Option<Project> {
    let project = prepare()?;
    ok(&project.compose(&["up", "--detach"]), "docker-compose up");
    Some(project)
}

/// Waits until every peer of `peers`, asked through its published port,
/// names the same leader of five voters, and returns it.
async fn agreed_leader(project: &Project, peers: &[u64]) -> u64 {
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut leaders = Vec::new();
        for peer in peers {
            let status = match Client::connect(&project.addr(*peer)).await {
                Ok(mut c) => c.local_status().await.ok(),
                Err(_) => None,
            };
            leaders.push(status.filter(|s| s.has_leader && s.voters.len() == 5).map(|s| s.leader));
        }
        if let Some(Some(leader)) = leaders.first()
            && leaders.iter().all(|l| *l == Some(*leader))
            && peers.contains(leader)
        {
            return *leader;
        }
        assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}\n{}", ok(&project.compose(&["logs", "--tail", "20"]), "logs"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_peers_from_docker_compose_elect_one_leader_and_run_the_seed_job() {
    let Some(project) = start() else { return };
    agreed_leader(&project, &[1, 2, 3, 4, 5]).await;
    let table = ok(&cli(&project.addr(3), &["cluster", "status"], None), "cluster status");
    let rows = table.lines().filter(|l| l.starts_with(|c: char| c.is_ascii_digit()));
    let leaders = rows.filter(|l| l.split_whitespace().nth(2) == Some("leader")).count();
    assert_eq!(leaders, 1, "{table}");

    // The seed's Job runs in one of the containers; its output reaches the
    // CLI through any peer.
    let job = std::fs::read_to_string(repo().join("crates/flotilla-api/tests/golden/job.yaml")).unwrap();
    ok(&cli(&project.addr(1), &["apply", "-f", "-"], Some(&job)), "apply");
    let deadline = Instant::now() + SETTLE;
    loop {
        let pods = ok(&cli(&project.addr(5), &["get", "pods", "-o", "name"], None), "get pods");
        if let Some(pod) = pods.lines().next().map(|l| l.trim_start_matches("pod/").to_string()) {
            let out = cli(&project.addr(2), &["logs", &pod], None);
            if String::from_utf8_lossy(&out.stdout).contains("Hello, Kubernetes!") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the seed Job printed nothing\n{}", ok(&project.compose(&["logs", "--tail", "20"]), "logs"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_minority_cannot_commit_and_catches_up_after_the_heal() {
    let Some(project) = start() else { return };
    let leader = agreed_leader(&project, &[1, 2, 3, 4, 5]).await;
    let container = |peer: u64| {
        let id = ok(&project.compose(&["ps", "--quiet", &format!("peer{peer}")]), "docker-compose ps");
        Container::inspect(id.trim()).unwrap()
    };
    // The leader and one follower on the small side: the leader must lose
    // its lease there.
    let minority: Vec<u64> = [leader].into_iter().chain((1..=5).filter(|p| *p != leader).take(1)).collect();
    let majority: Vec<u64> = (1..=5).filter(|p| !minority.contains(p)).collect();
    let small: Vec<Container> = minority.iter().map(|p| container(*p)).collect();
    let large: Vec<Container> = majority.iter().map(|p| container(*p)).collect();
    partition(&small.iter().collect::<Vec<_>>(), &large.iter().collect::<Vec<_>>()).unwrap();

    // Nothing written through the small side is acknowledged.
    let mut through_minority = Client::connect(&project.addr(minority[1])).await.unwrap();
    let write = through_minority.put(key("ConfigMap", "default", "minority"), config_map("lost"), Expect::Anything);
    let outcome = tokio::time::timeout(Duration::from_secs(5), write).await;
    assert!(!matches!(outcome, Ok(Ok(_))), "a write through the isolated minority was acknowledged: {outcome:?}");

    // The large side elects a leader of its own and commits.
    let new_leader = agreed_leader(&project, &majority).await;
    assert!(majority.contains(&new_leader));
    let mut through_majority = Client::connect(&project.addr(majority[0])).await.unwrap();
    let deadline = Instant::now() + SETTLE;
    loop {
        let write = through_majority.put(key("ConfigMap", "default", "majority"), config_map("kept"), Expect::Anything);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), write).await {
            break;
        }
        assert!(Instant::now() < deadline, "the majority never committed");
    }
    let read = through_majority.get(key("ConfigMap", "default", "minority"), false).await.unwrap();
    assert_eq!(read, None, "the minority's write was committed");

    // After the heal the small side learns what the large side committed.
    heal_all(&small.iter().chain(large.iter()).collect::<Vec<_>>()).unwrap();
    let deadline = Instant::now() + SETTLE;
    loop {
        let read = tokio::time::timeout(Duration::from_secs(3), through_minority.get(key("ConfigMap", "default", "majority"), false)).await;
        if let Ok(Ok(Some(json))) = read {
            assert_eq!(value_of(&json), "kept");
            break;
        }
        assert!(Instant::now() < deadline, "the healed minority never caught up: {read:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn docker(args: &[&str]) {
    let out = Command::new("docker").args(args).output().expect("running docker");
    ok(&out, &format!("docker {}", args.join(" ")));
}

/// The containers of peers 1 to 5, as they are now (a restart changes
/// their pids).
fn containers(project: &Project) -> Vec<Container> {
    (1..=5)
        .map(|peer| {
            let id = ok(&project.compose(&["ps", "--quiet", &format!("peer{peer}")]), "docker-compose ps");
            Container::inspect(id.trim()).unwrap()
        })
        .collect()
}

/// Whether a write through `peer` is acknowledged within `wait`.
async fn commits_through(project: &Project, peer: u64, name: &str, wait: Duration) -> bool {
    let attempt = async {
        let mut c = Client::connect(&project.addr(peer)).await.ok()?;
        c.put(key("ConfigMap", "default", name), config_map(name), Expect::Anything).await.ok()
    };
    matches!(tokio::time::timeout(wait, attempt).await, Ok(Some(_)))
}

/// Retries a write through `peer` until it is acknowledged; returns the
/// stored object.
async fn commit(project: &Project, peer: u64, name: &str) -> serde_json::Value {
    let deadline = Instant::now() + SETTLE;
    while !commits_through(project, peer, name, Duration::from_secs(3)).await {
        assert!(Instant::now() < deadline, "no write through peer {peer} committed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut c = Client::connect(&project.addr(peer)).await.unwrap();
    serde_json::from_str(&c.get(key("ConfigMap", "default", name), false).await.unwrap().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nemesis_bites() {
    let Some(project) = start() else { return };
    agreed_leader(&project, &[1, 2, 3, 4, 5]).await;
    let mut cs = containers(&project);

    // Each partition cuts exactly the links its grudge names, both ways,
    // and nothing else.
    let order = [2, 4, 0, 3, 1];
    for shape in [Shape::Isolate, Shape::MajorityMinority, Shape::Bridge, Shape::MajoritiesRing] {
        let g = grudge(shape, &order);
        apply_grudge(&cs, &g).unwrap();
        for a in 0..5 {
            for b in (0..5).filter(|b| *b != a) {
                assert_eq!(cs[a].can_connect(&cs[b].ip, 7000), connected(&g, a, b), "{shape:?}: peer{} to peer{}", a + 1, b + 1);
            }
        }
        heal_all(&cs.iter().collect::<Vec<_>>()).unwrap();
    }

    // The bridge is the only way between the halves: without it no side
    // has a majority and nothing commits.
    let g = grudge(Shape::Bridge, &order);
    apply_grudge(&cs, &g).unwrap();
    let bridge = order[2];
    assert_eq!((0..5).filter(|p| connected(&g, bridge, *p)).count(), 5);
    docker(&["kill", "--signal", "KILL", &cs[bridge].name]);
    let survivor = order[0] as u64 + 1;
    assert!(!commits_through(&project, survivor, "bridge-down", Duration::from_secs(5)).await, "a write committed with the bridge down");
    docker(&["start", &cs[bridge].name]);
    cs = containers(&project);
    heal_all(&cs.iter().collect::<Vec<_>>()).unwrap();
    commit(&project, survivor, "bridge-back").await;

    // SIGKILL of the leader: another peer leads, in a later term.
    let leader = agreed_leader(&project, &[1, 2, 3, 4, 5]).await;
    let term_before = Client::connect(&project.addr(leader)).await.unwrap().status().await.unwrap().term;
    docker(&["kill", "--signal", "KILL", &cs[leader as usize - 1].name]);
    let others: Vec<u64> = (1..=5).filter(|p| *p != leader).collect();
    let new_leader = agreed_leader(&project, &others).await;
    let term_after = Client::connect(&project.addr(new_leader)).await.unwrap().status().await.unwrap().term;
    assert!(new_leader != leader && term_after > term_before, "leader {leader} term {term_before} -> {new_leader} term {term_after}");

    // SIGKILL of a minority (the old leader and one more): the killed
    // peers answer nothing, the other three commit.
    let second = others[0];
    docker(&["kill", "--signal", "KILL", &cs[second as usize - 1].name]);
    for dead in [leader, second] {
        assert!(Client::connect(&project.addr(dead)).await.is_err(), "killed peer {dead} still answers");
    }
    let alive = others[1];
    commit(&project, alive, "minority-killed").await;
    for dead in [leader, second] {
        docker(&["start", &cs[dead as usize - 1].name]);
    }
    agreed_leader(&project, &[1, 2, 3, 4, 5]).await;
    cs = containers(&project);

    // A paused peer answers nothing until it is thawed.
    let paused = alive;
    docker(&["pause", &cs[paused as usize - 1].name]);
    let asked = async { Client::connect(&project.addr(paused)).await.ok()?.local_status().await.ok() };
    assert!(tokio::time::timeout(Duration::from_secs(2), asked).await.is_err(), "a paused peer answered");
    docker(&["unpause", &cs[paused as usize - 1].name]);
    let asked = async { Client::connect(&project.addr(paused)).await.ok()?.local_status().await.ok() };
    assert!(matches!(tokio::time::timeout(Duration::from_secs(10), asked).await, Ok(Some(_))), "a thawed peer stays silent");

    // SIGKILL of the peer process alone (kill-peer): its container, the
    // machine, runs on, yet no process of its Pods outlives the fence
    // window; the keeper starts the peer again once the fault is lifted.
    let victim = 3u64;
    let name = &cs[victim as usize - 1].name;
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: forker}}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: peer{victim}}}\n  containers:\n  - name: main\n    image: flotilla:local\n    command: [\"sh\", \"-c\", \"sleep 3611 & sleep 3612 & wait\"]\n"
    );
    ok(&cli(&project.addr(1), &["apply", "-f", "-"], Some(&pod)), "apply the forking Pod");
    let sleeps = |name: &str| {
        let top = ok(&Command::new("docker").args(["top", name]).output().expect("docker top"), "docker top");
        top.lines().filter(|l| l.contains("sleep 3611") || l.contains("sleep 3612")).count()
    };
    let deadline = Instant::now() + SETTLE;
    while sleeps(name) < 2 {
        assert!(Instant::now() < deadline, "the forking Pod never ran on peer{victim}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    docker(&["exec", name, "sh", "-c", "touch /tmp/peer-down && kill -KILL $(cat /tmp/peer.pid)"]);
    let killed = Instant::now();
    while sleeps(name) > 0 {
        assert!(killed.elapsed() < Duration::from_millis(1_200), "the Pod's processes outlived their peer's fence window");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let running = ok(&Command::new("docker").args(["inspect", "-f", "{{.State.Running}}", name]).output().expect("docker inspect"), "docker inspect");
    assert_eq!(running.trim(), "true", "the container went down with its peer");
    let asked = async { Client::connect(&project.addr(victim)).await.ok()?.local_status().await.ok() };
    assert!(!matches!(tokio::time::timeout(Duration::from_secs(2), asked).await, Ok(Some(_))), "the killed peer still answers");
    docker(&["exec", name, "rm", "-f", "/tmp/peer-down"]);
    agreed_leader(&project, &[1, 2, 3, 4, 5]).await;

    // Clocks an hour ahead stamp an hour ahead; set back, the cluster's
    // time does not go back with them.
    let real_before = std::time::SystemTime::now();
    for c in &cs {
        c.skew_clock(3_600_000).unwrap();
    }
    // The peers read their offset files a few times a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ahead = commit(&project, 1, "clock-ahead").await;
    let ahead_at = ahead["metadata"]["creationTimestamp"].as_str().unwrap().to_string();
    let hour_from_now = rfc3339(real_before + Duration::from_secs(3_540));
    assert!(ahead_at >= hour_from_now, "{ahead_at} is not an hour ahead ({hour_from_now})");
    for c in &cs {
        c.skew_clock(0).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = commit(&project, 2, "clock-back").await;
    let after_at = after["metadata"]["creationTimestamp"].as_str().unwrap();
    assert!(after_at >= ahead_at.as_str(), "the cluster's time went back: {after_at} < {ahead_at}");
}

/// RFC 3339 in UTC to the second, as the store writes it.
fn rfc3339(t: std::time::SystemTime) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{}", t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs the chaos binary against a compose project of its own.
fn chaos(project: &Project, out: &Path, extra: &[&str]) -> Output {
    let program = flotilla_bin().with_file_name("flotilla-chaos");
    Command::new(program)
        .args(["--seed", "1", "--clients", "6", "--project", &project.name, "--host-ip", &project.host_ip])
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("running flotilla-chaos")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chaos_smoke_run_is_valid_and_stale_reads_are_caught() {
    // The chaos runner brings the project up and down itself.
    let Some(project) = prepare() else { return };
    let out = tempfile::tempdir().unwrap();
    let run = chaos(&project, out.path(), &["--time-limit", "40", "--nemesis", "all"]);
    let text = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{text}");
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("1/results.json")).unwrap()).unwrap();
    assert_eq!(results["valid"], "valid", "{results}");
    for workload in ["register", "statefulset", "deployment", "job"] {
        assert_eq!(results["workloads"][workload]["valid"], "valid", "{workload}: {results}");
    }
    let register = &results["workloads"]["register"];
    assert!(register["ok"].as_u64().unwrap() > 100, "{results}");
    assert!(results["faults"].as_u64().unwrap() >= 3, "{results}");
    assert!(results["workloads"]["job"]["check"]["completed"].as_u64().unwrap() >= 1, "{results}");
    assert!(results["workloads"]["statefulset"]["ordinals"]["runs"].as_u64().unwrap() >= 3, "{results}");
    let history = std::fs::read_to_string(out.path().join("1/history.jsonl")).unwrap();
    assert!(history.lines().count() as u64 >= 2 * register["ok"].as_u64().unwrap());
    let report = std::fs::read_to_string(out.path().join("1/report.html")).unwrap();
    assert!(report.starts_with("<!DOCTYPE html>") && report.contains("<svg"), "{}", &report[..report.len().min(500)]);

    // Reads from a replica's own state are not linearizable: the checker
    // must say so, with a counter-example.
    let stale_out = tempfile::tempdir().unwrap();
    let run = chaos(&project, stale_out.path(), &["--time-limit", "15", "--workload", "register", "--nemesis", "partition", "--stale-reads"]);
    assert!(!run.status.success(), "stale reads passed the checker");
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(stale_out.path().join("1/results.json")).unwrap()).unwrap();
    assert_eq!(results["workloads"]["register"]["valid"], "invalid", "{results}");
    assert_eq!(results["workloads"]["register"]["linearizability"]["counter_example"]["f"], "read", "{results}");
}
