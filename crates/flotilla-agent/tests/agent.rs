//! The agent driving the fake runtime, on tokio's paused clock: the agent,
//! the fake and the test all read the same simulated time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_agent::{Agent, AgentConfig, AgentError, DesiredPod, NowFn, Report};
use flotilla_api::meta::ObjectMeta;
use flotilla_api::pod::{
    Container, ContainerState, ContainerStateRunning, ContainerStatus, EnvVar, Pod, PodSpec,
    PodStatus,
};
use flotilla_runtime::fake::FakeRuntime;
use flotilla_runtime::{ContainerSpec, PodRuntime, SandboxSpec};
use tokio::sync::mpsc::Receiver;

const T0: u64 = 1_700_000_000_000;

fn clock() -> NowFn {
    let origin = tokio::time::Instant::now();
    Arc::new(move || T0 + origin.elapsed().as_millis() as u64)
}

fn config() -> AgentConfig {
    AgentConfig {
        backoff_base_ms: 1_000,
        backoff_max_ms: 8_000,
        sync_interval_ms: 100,
        ..AgentConfig::new("node-1")
    }
}

fn start(config: AgentConfig) -> (Agent, Receiver<Report>, Arc<FakeRuntime>) {
    let now = clock();
    let runtime = Arc::new(FakeRuntime::new(now.clone()));
    let (agent, rx) = Agent::start(config, runtime.clone(), now);
    (agent, rx, runtime)
}

fn pod(uid: &str, policy: &str, env: &[(&str, &str)]) -> DesiredPod {
    let container = Container {
        name: "app".into(),
        image: "registry/app:1".into(),
        env: env
            .iter()
            .map(|(k, v)| EnvVar {
                name: k.to_string(),
                value: v.to_string(),
                value_from: None,
            })
            .collect(),
        ..Default::default()
    };
    let pod = Pod {
        metadata: ObjectMeta {
            name: format!("pod-{uid}"),
            namespace: "default".into(),
            uid: uid.into(),
            ..Default::default()
        },
        spec: PodSpec {
            containers: vec![container],
            restart_policy: policy.into(),
            termination_grace_period_seconds: Some(30),
            node_name: "node-1".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    DesiredPod {
        pod,
        config_maps: BTreeMap::new(),
    }
}

async fn until(rx: &mut Receiver<Report>, mut wanted: impl FnMut(&Report) -> bool) -> Report {
    let wait = async {
        loop {
            let report = rx.recv().await.expect("report channel open");
            if wanted(&report) {
                return report;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(600), wait)
        .await
        .expect("the report came in time")
}

fn phase(uid: &str, phase: &str) -> impl FnMut(&Report) -> bool {
    let (uid, phase) = (uid.to_string(), phase.to_string());
    move |r| matches!(r, Report::Status(s) if s.uid == uid && s.status.phase == phase)
}

/// Waits until every one of `uids` has reported phase Running.
async fn running(rx: &mut Receiver<Report>, uids: &[&str]) {
    let mut waiting: Vec<String> = uids.iter().map(|u| u.to_string()).collect();
    while !waiting.is_empty() {
        let Report::Status(s) = until(rx, |r| {
            matches!(r, Report::Status(s) if s.status.phase == "Running" && waiting.contains(&s.uid))
        })
        .await
        else {
            unreachable!()
        };
        waiting.retain(|u| *u != s.uid);
    }
}

fn stopped(uid: &str) -> impl FnMut(&Report) -> bool {
    let uid = uid.to_string();
    move |r| matches!(r, Report::Stopped { uid: u, .. } if *u == uid)
}

#[tokio::test(start_paused = true)]
async fn a_pod_runs_then_succeeds_with_logs_and_exec() {
    let (agent, mut rx, _runtime) = start(config());
    let env = [
        ("FAKE_EXIT_AFTER_MS", "5000"),
        ("FAKE_LOG", "hello\nworld\n"),
    ];
    agent.sync(vec![pod("u1", "Never", &env)]);
    let Report::Status(running) = until(&mut rx, phase("u1", "Running")).await else {
        unreachable!()
    };
    assert_eq!(
        (running.namespace.as_str(), running.name.as_str()),
        ("default", "pod-u1")
    );
    assert!(running.status.container_statuses[0].ready);

    assert_eq!(
        agent.logs("u1", "", false, None).await.unwrap(),
        b"hello\nworld\n"
    );
    assert_eq!(
        agent.logs("u1", "app", false, Some(1)).await.unwrap(),
        b"world\n"
    );
    assert_eq!(
        agent.logs_from("u1", "app", 6).await.unwrap(),
        (b"world\n".to_vec(), 12)
    );
    let out = agent
        .exec(
            "u1",
            "",
            &["echo".into(), "hi".into()],
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert_eq!((out.exit_code, out.stdout), (0, b"echo hi\n".to_vec()));
    assert!(matches!(
        agent.logs("u1", "nope", false, None).await,
        Err(AgentError::NoContainer { .. })
    ));
    assert!(matches!(
        agent.logs("u9", "", false, None).await,
        Err(AgentError::NoPod(_))
    ));

    let Report::Status(done) = until(&mut rx, phase("u1", "Succeeded")).await else {
        unreachable!()
    };
    let terminated = done.status.container_statuses[0]
        .state
        .terminated
        .clone()
        .unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_str()),
        (0, "Completed")
    );
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn events_are_reported_like_kubelets() {
    let (agent, mut rx, _runtime) = start(config());
    agent.sync(vec![pod(
        "u1",
        "Always",
        &[("FAKE_EXIT_AFTER_MS", "500"), ("FAKE_EXIT_CODE", "1")],
    )]);
    let started = until(
        &mut rx,
        |r| matches!(r, Report::Event(e) if e.reason == "Started"),
    )
    .await;
    let Report::Event(e) = started else {
        unreachable!()
    };
    assert_eq!(
        (e.pod.as_str(), e.message.as_str(), e.warning),
        ("pod-u1", "Started container app", false)
    );
    let Report::Event(b) = until(
        &mut rx,
        |r| matches!(r, Report::Event(e) if e.reason == "BackOff"),
    )
    .await
    else {
        unreachable!()
    };
    assert!(b.warning);
    until(
        &mut rx,
        |r| matches!(r, Report::Status(s) if s.status.container_statuses[0].restart_count >= 2),
    )
    .await;
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn removal_and_deletion_stop_the_pod_and_report_stopped() {
    let (agent, mut rx, runtime) = start(config());
    let mut deleted = pod("u2", "Always", &[]);
    agent.sync(vec![pod("u1", "Always", &[]), deleted.clone()]);
    running(&mut rx, &["u1", "u2"]).await;
    assert_eq!(runtime.sandbox_count(), 2);

    deleted.pod.metadata.deletion_timestamp = Some("2023-11-14T22:13:20Z".into());
    agent.sync(vec![pod("u1", "Always", &[]), deleted.clone()]);
    until(&mut rx, stopped("u2")).await;
    assert_eq!(runtime.sandbox_count(), 1);

    agent.sync(vec![]);
    until(&mut rx, stopped("u1")).await;
    assert_eq!(runtime.sandbox_count(), 0);
    assert_eq!(runtime.running_container_count(), 0);
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn fence_stops_everything_until_unfenced() {
    let (agent, mut rx, runtime) = start(config());
    let pods = vec![pod("u1", "Always", &[]), pod("u2", "Always", &[])];
    agent.sync(pods.clone());
    running(&mut rx, &["u1", "u2"]).await;

    agent.fence().await;
    assert!(agent.is_fenced());
    assert_eq!(
        (runtime.sandbox_count(), runtime.running_container_count()),
        (0, 0)
    );
    agent.sync(pods.clone());
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(runtime.sandbox_count(), 0, "nothing starts while fenced");
    while let Ok(report) = rx.try_recv() {
        assert!(
            !matches!(report, Report::Stopped { .. }),
            "a fenced pod is not deleted: {report:?}"
        );
    }

    let started = runtime.containers_started();
    agent.unfence();
    assert!(!agent.is_fenced());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(runtime.containers_started(), started, "nothing starts before the next sync");
    agent.sync(pods);
    until(
        &mut rx,
        |r| matches!(r, Report::Event(e) if e.reason == "Started"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(runtime.containers_started(), started + 2);
    assert_eq!(runtime.running_container_count(), 2);
    agent.shutdown().await;
    assert_eq!(runtime.sandbox_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn leftovers_are_removed_at_start_and_pods_restart_by_policy() {
    let now = clock();
    let runtime = Arc::new(FakeRuntime::new(now.clone()));
    let spec = SandboxSpec {
        pod_uid: "u1".into(),
        namespace: "default".into(),
        name: "pod-u1".into(),
        hostname: "pod-u1".into(),
        volumes: vec![],
        host_ports: vec![],
        share_process_namespace: false,
    };
    let sandbox = runtime.create_sandbox(&spec).await.unwrap();
    let container = ContainerSpec {
        name: "app".into(),
        image: "registry/app:1".into(),
        command: vec![],
        args: vec![],
        env: vec![],
        working_dir: None,
        mounts: vec![],
        memory_limit_bytes: None,
        cpu_limit_millis: None,
    };
    runtime
        .start_container(&sandbox, &container, 2)
        .await
        .unwrap();
    runtime
        .create_sandbox(&SandboxSpec {
            pod_uid: "gone".into(),
            ..spec
        })
        .await
        .unwrap();

    let (agent, mut rx) = Agent::start(config(), runtime.clone(), now);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(runtime.sandbox_count(), 0, "no orphan survives the start");

    let mut desired = pod("u1", "Always", &[]);
    desired.pod.status = Some(PodStatus {
        phase: "Running".into(),
        container_statuses: vec![ContainerStatus {
            name: "app".into(),
            state: ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            },
            restart_count: 2,
            ..Default::default()
        }],
        ..Default::default()
    });
    agent.sync(vec![desired]);
    let report = until(&mut rx, |r| {
        matches!(r, Report::Status(s) if s.status.container_statuses[0].state.running.is_some())
    })
    .await;
    let Report::Status(s) = report else {
        unreachable!()
    };
    assert_eq!(s.status.container_statuses[0].restart_count, 3);
    assert_eq!(s.status.phase, "Running");
    assert_eq!(runtime.sandbox_count(), 1);
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_consumer_gets_the_latest_status_not_every_one() {
    let (agent, mut rx, _runtime) = start(AgentConfig {
        max_status_batch: 1,
        ..config()
    });
    agent.sync(vec![pod(
        "u1",
        "Always",
        &[("FAKE_EXIT_AFTER_MS", "200"), ("FAKE_EXIT_CODE", "1")],
    )]);
    // Many restarts happen while nobody reads.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let mut statuses = Vec::new();
    loop {
        // The 1 ms timer fires only once the forwarder has nothing left to send.
        tokio::select! {
            biased;
            report = rx.recv() => {
                if let Some(Report::Status(s)) = report {
                    statuses.push(s.status.container_statuses[0].restart_count);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(1)) => break,
        }
    }
    assert!(statuses.len() <= 3, "coalesced: {statuses:?}");
    assert!(
        *statuses.last().unwrap() >= 8,
        "the newest status arrives: {statuses:?}"
    );
    agent.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_every_pod_and_closes_the_reports() {
    let (agent, mut rx, runtime) = start(config());
    agent.sync(vec![pod("u1", "Always", &[]), pod("u2", "OnFailure", &[])]);
    until(&mut rx, phase("u2", "Running")).await;
    agent.shutdown().await;
    assert_eq!(
        (runtime.sandbox_count(), runtime.running_container_count()),
        (0, 0)
    );
    let rest = async {
        while let Some(report) = rx.recv().await {
            assert!(
                !matches!(report, Report::Stopped { .. }),
                "shutdown deletes nothing"
            );
        }
    };
    tokio::time::timeout(Duration::from_secs(10), rest)
        .await
        .expect("the channel closes");
}

#[tokio::test(start_paused = true)]
async fn no_container_starts_once_the_lease_has_run_out() {
    let (agent, mut rx, runtime) = start(config());
    agent.renew_lease(tokio::time::Instant::now() + Duration::from_secs(10));
    // Exits a second after each start; restarted by policy after back-off.
    agent.sync(vec![pod("u1", "Always", &[("FAKE_EXIT_AFTER_MS", "1000"), ("FAKE_EXIT_CODE", "1")])]);
    running(&mut rx, &["u1"]).await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    let started = runtime.containers_started();
    assert!(started >= 2, "restarted while the lease held: {started}");

    // The lease runs out without a fence (the watchdog has not run yet, as
    // when a frozen machine thaws): back-offs that end now start nothing.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(runtime.containers_started(), started, "a container started without a lease");
    assert_eq!(runtime.running_container_count(), 0);

    agent.renew_lease(tokio::time::Instant::now() + Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(runtime.containers_started() > started, "a renewed lease lets the Pod run again");
    agent.shutdown().await;
}
