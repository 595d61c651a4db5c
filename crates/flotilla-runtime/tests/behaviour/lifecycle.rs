//! Containers start, end, stop and go with their sandbox; exits, signals
//! and out-of-memory kills are reported; bad names and missing sandboxes
//! are refused.

use std::time::{Duration, Instant};

use flotilla_runtime::{
    ContainerId, ContainerState, ExitStatus, NetworkCheck, PodRuntime, RuntimeError, SandboxId,
    VolumeSource,
};

use super::{Act, Subject, check_exit, now_ms, runs_programs};
use crate::common::{logs, mount, sandbox, volume, wait_exit, wait_log};

pub async fn exit_codes_are_reported(subject: &impl Subject) {
    let rt = subject.runtime();
    let pod = rt
        .create_sandbox(&sandbox("exit-0", Vec::new()))
        .await
        .unwrap();
    let cases: &[(&str, i32)] = &[("hello\n", 0), ("", 3)];
    for (i, (out, code)) in cases.iter().enumerate() {
        let before = now_ms();
        let spec = subject.container(&format!("c{i}"), Act::Exit { out, code: *code });
        let id = rt.start_container(&pod, &spec, 0).await.unwrap();
        let exit = wait_exit(rt, &id).await;
        check_exit(subject, out, &exit, *code, None, before);
        assert_eq!(logs(rt, &id).await, *out);
    }
    assert!(matches!(
        rt.container_state(&ContainerId("nobody".into())).await,
        Err(RuntimeError::NoContainer(_))
    ));
    rt.remove_sandbox(&pod).await.unwrap();
}

pub async fn signals_are_reported(subject: &impl Subject) {
    if !runs_programs(subject, "signals_are_reported") {
        return;
    }
    let rt = subject.runtime();
    let pod = rt
        .create_sandbox(&sandbox("exit-1", Vec::new()))
        .await
        .unwrap();
    let cases: &[(&str, i32, Option<i32>)] = &[
        ("true", 0, None),
        ("exit 3", 3, None),
        ("kill -TERM $$", 143, Some(15)),
        ("kill -KILL $$", 137, Some(9)),
    ];
    for (i, (script, code, signal)) in cases.iter().enumerate() {
        let before = now_ms();
        let spec = subject.container(&format!("c{i}"), Act::Shell(script));
        let id = rt.start_container(&pod, &spec, 0).await.unwrap();
        let exit = wait_exit(rt, &id).await;
        check_exit(subject, script, &exit, *code, *signal, before);
    }
    rt.remove_sandbox(&pod).await.unwrap();
}

pub async fn stop_terms_a_container_and_stopping_again_succeeds(subject: &impl Subject) {
    let rt = subject.runtime();
    let pod = rt
        .create_sandbox(&sandbox("stop-0", Vec::new()))
        .await
        .unwrap();
    let id = rt
        .start_container(
            &pod,
            &subject.container("main", Act::Run { out: "ready\n" }),
            0,
        )
        .await
        .unwrap();
    wait_log(rt, &id, "ready").await;
    assert!(matches!(
        rt.container_state(&id).await.unwrap(),
        ContainerState::Running { .. }
    ));
    let started = Instant::now();
    rt.stop_container(&id, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let ContainerState::Exited(exit) = rt.container_state(&id).await.unwrap() else {
        panic!("a stopped container still runs");
    };
    assert_eq!((exit.exit_code, exit.signal), (143, Some(15)));
    assert!(
        rt.exec(&id, &["true".into()], Duration::from_secs(1))
            .await
            .is_err(),
        "no exec in an exited container"
    );

    // Stopping what is stopped or gone succeeds, whatever the id.
    rt.stop_container(&id, Duration::ZERO).await.unwrap();
    for unknown in [
        "stop-0/nobody/0".to_owned(),
        "0".repeat(64),
        "not-an-id".into(),
    ] {
        rt.stop_container(&ContainerId(unknown), Duration::ZERO)
            .await
            .unwrap();
    }
    rt.remove_sandbox(&pod).await.unwrap();
}

pub async fn stop_waits_for_a_polite_container_and_kills_a_stubborn_one(subject: &impl Subject) {
    if !runs_programs(
        subject,
        "stop_waits_for_a_polite_container_and_kills_a_stubborn_one",
    ) {
        return;
    }
    let rt = subject.runtime();
    let pod = rt
        .create_sandbox(&sandbox("stop-1", Vec::new()))
        .await
        .unwrap();
    let polite =
        Act::Shell("trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done");
    let stubborn = Act::Shell("trap '' TERM; echo ready; while true; do sleep 0.1; done");
    let polite_id = rt
        .start_container(&pod, &subject.container("polite", polite), 0)
        .await
        .unwrap();
    let stubborn_id = rt
        .start_container(&pod, &subject.container("stubborn", stubborn), 0)
        .await
        .unwrap();
    wait_log(rt, &polite_id, "ready").await;
    wait_log(rt, &stubborn_id, "ready").await;

    let started = Instant::now();
    rt.stop_container(&polite_id, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let exit = wait_exit(rt, &polite_id).await;
    assert_eq!((exit.exit_code, exit.signal), (0, None));
    assert!(logs(rt, &polite_id).await.contains("bye"));

    let started = Instant::now();
    rt.stop_container(&stubborn_id, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(matches!(
        rt.container_state(&stubborn_id).await.unwrap(),
        ContainerState::Exited(ExitStatus {
            exit_code: 137,
            signal: Some(9),
            ..
        })
    ));
    rt.stop_container(&stubborn_id, Duration::ZERO)
        .await
        .unwrap();
    rt.remove_sandbox(&pod).await.unwrap();
}

pub async fn failed_starts_and_bad_names_are_refused(subject: &impl Subject) {
    let rt = subject.runtime();
    let pod = rt
        .create_sandbox(&sandbox("bad-0", Vec::new()))
        .await
        .unwrap();
    let result = rt
        .start_container(&pod, &subject.container("missing", Act::Missing), 0)
        .await;
    assert!(
        matches!(result, Err(RuntimeError::Start { .. })),
        "{result:?}"
    );
    let run = subject.container("main", Act::Run { out: "" });
    assert!(matches!(
        rt.start_container(&SandboxId("nobody".into()), &run, 0)
            .await,
        Err(RuntimeError::NoSandbox(_))
    ));
    assert!(matches!(
        rt.check_network(
            &SandboxId("nobody".into()),
            &NetworkCheck::Tcp { port: 80 },
            Duration::from_secs(1)
        )
        .await,
        Err(RuntimeError::NoSandbox(_))
    ));
    let mut bad_container = run.clone();
    bad_container.name = "a b".into();
    assert!(rt.start_container(&pod, &bad_container, 0).await.is_err());

    let mut bad_hostname = sandbox("bad-1", Vec::new());
    bad_hostname.hostname = String::new();
    for spec in [
        sandbox("a/b", Vec::new()),
        sandbox("..", Vec::new()),
        sandbox("bad-2", vec![volume("../up", VolumeSource::EmptyDir)]),
        bad_hostname,
    ] {
        let result = rt.create_sandbox(&spec).await;
        assert!(result.is_err(), "{spec:?}: {result:?}");
    }
    rt.remove_sandbox(&pod).await.unwrap();
}

pub async fn remove_sandbox_takes_its_containers(subject: &impl Subject) {
    let rt = subject.runtime();
    let spec = sandbox("rm-0", vec![volume("scratch", VolumeSource::EmptyDir)]);
    let pod = rt.create_sandbox(&spec).await.unwrap();
    let id = rt
        .start_container(
            &pod,
            &subject.container("main", Act::Run { out: "up\n" }),
            0,
        )
        .await
        .unwrap();
    wait_log(rt, &id, "up").await;
    let found = rt.list_sandboxes().await.unwrap();
    let mine: Vec<_> = found.iter().filter(|s| s.pod_uid == "rm-0").collect();
    assert_eq!(mine.len(), 1, "{found:?}");
    assert_eq!(mine[0].id, pod);
    let [info] = &mine[0].containers[..] else {
        panic!("{:?}", mine[0].containers);
    };
    assert_eq!(
        (&info.id, info.name.as_str(), info.attempt),
        (&id, "main", 0)
    );
    assert!(matches!(info.state, ContainerState::Running { .. }));

    rt.remove_sandbox(&pod).await.unwrap();
    assert!(matches!(
        rt.container_state(&id).await,
        Err(RuntimeError::NoContainer(_))
    ));
    rt.remove_sandbox(&pod).await.unwrap();
    assert!(
        rt.list_sandboxes()
            .await
            .unwrap()
            .iter()
            .all(|s| s.pod_uid != "rm-0")
    );
    let again = subject.container("main", Act::Run { out: "" });
    assert!(matches!(
        rt.start_container(&pod, &again, 1).await,
        Err(RuntimeError::NoSandbox(_))
    ));
}

pub async fn remove_sandbox_removes_its_volumes_and_spares_host_paths(subject: &impl Subject) {
    if !runs_programs(
        subject,
        "remove_sandbox_removes_its_volumes_and_spares_host_paths",
    ) {
        return;
    }
    let rt = subject.runtime();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("keep.txt"), "precious").unwrap();
    let host_path = VolumeSource::HostPath {
        path: host.path().to_owned(),
    };
    let spec = sandbox(
        "rm-1",
        vec![
            volume("host", host_path),
            volume("scratch", VolumeSource::EmptyDir),
        ],
    );
    let pod = rt.create_sandbox(&spec).await.unwrap();
    let script = "echo x > /scratch/x; cat /host/keep.txt; echo; exec sleep 1000";
    let mut main = subject.container("main", Act::Shell(script));
    main.mounts = vec![
        mount("host", "/host", false),
        mount("scratch", "/scratch", false),
    ];
    let id = rt.start_container(&pod, &main, 0).await.unwrap();
    wait_log(rt, &id, "precious").await;
    let pod_dir = subject.pod_dir("rm-1");
    if let Some(dir) = &pod_dir {
        assert!(dir.join("volumes/scratch/x").exists());
    }

    rt.remove_sandbox(&pod).await.unwrap();
    if let Some(dir) = &pod_dir {
        assert!(!dir.exists());
    }
    subject.check_removed("rm-1").await;
    assert_eq!(
        std::fs::read_to_string(host.path().join("keep.txt")).unwrap(),
        "precious"
    );
    assert!(matches!(
        rt.container_state(&id).await,
        Err(RuntimeError::NoContainer(_))
    ));
    rt.remove_sandbox(&pod).await.unwrap();
    assert!(rt.list_sandboxes().await.unwrap().is_empty());
}

pub async fn memory_limit_kills_a_hog_and_reports_it(subject: &impl Subject) {
    let rt = subject.runtime();
    if !rt.capabilities().memory_limits {
        println!(
            "skipped: no memory limits here: {:?}",
            rt.capabilities().limitations
        );
        return;
    }
    let pod = rt
        .create_sandbox(&sandbox("oom-1", Vec::new()))
        .await
        .unwrap();
    let cases: &[(&str, u64, bool)] = &[("hog", 200, true), ("modest", 10, false)];
    for (name, mib, oom) in cases {
        let spec = subject.container(
            name,
            Act::Allocate {
                mib: *mib,
                limit_mib: 50,
            },
        );
        let id = rt.start_container(&pod, &spec, 0).await.unwrap();
        let exit = wait_exit(rt, &id).await;
        assert_eq!(exit.oom_killed, *oom, "{name}: {exit:?}");
        if *oom {
            assert_eq!((exit.exit_code, exit.signal), (137, Some(9)), "{name}");
        } else {
            assert_eq!(exit.exit_code, 0, "{name}: {}", logs(rt, &id).await);
        }
    }
    rt.remove_sandbox(&pod).await.unwrap();
}
