//! What the runtime tests of every runtime share: spec builders and waits.

use std::time::{Duration, Instant};

use flotilla_runtime::{
    ContainerId, ContainerSpec, ContainerState, ExitStatus, MountSpec, NetworkCheck, PodRuntime,
    SandboxId, SandboxSpec, VolumeSource, VolumeSpec,
};

/// Longest any wait of a test may take.
const WAIT: Duration = Duration::from_secs(60);

pub fn sandbox(uid: &str, volumes: Vec<VolumeSpec>) -> SandboxSpec {
    SandboxSpec {
        pod_uid: uid.into(),
        namespace: "default".into(),
        name: format!("pod-{uid}"),
        hostname: format!("pod-{uid}"),
        volumes,
        host_ports: Vec::new(),
        share_process_namespace: false,
    }
}

pub fn volume(name: &str, source: VolumeSource) -> VolumeSpec {
    VolumeSpec {
        name: name.into(),
        source,
    }
}

pub fn mount(volume: &str, path: &str, read_only: bool) -> MountSpec {
    MountSpec {
        volume: volume.into(),
        mount_path: path.into(),
        read_only,
    }
}

pub fn container_of(image: &str, name: &str, command: &[&str]) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: image.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        args: Vec::new(),
        env: Vec::new(),
        working_dir: None,
        mounts: Vec::new(),
        memory_limit_bytes: None,
        cpu_limit_millis: None,
    }
}

pub async fn wait_exit(rt: &impl PodRuntime, id: &ContainerId) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let ContainerState::Exited(exit) = rt.container_state(id).await.expect("state") {
            return exit;
        }
        assert!(Instant::now() < deadline, "{id:?} did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_listening(rt: &impl PodRuntime, sandbox: &SandboxId, port: u16) {
    let deadline = Instant::now() + WAIT;
    while !rt
        .check_network(sandbox, &NetworkCheck::Tcp { port }, Duration::from_secs(1))
        .await
        .expect("check")
    {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {port} in {sandbox:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn logs(rt: &impl PodRuntime, id: &ContainerId) -> String {
    String::from_utf8(rt.read_logs(id, false, None).await.expect("logs")).expect("utf-8")
}

pub async fn wait_log(rt: &impl PodRuntime, id: &ContainerId, text: &str) {
    let deadline = Instant::now() + WAIT;
    while !logs(rt, id).await.contains(text) {
        assert!(
            Instant::now() < deadline,
            "{text:?} not in {:?}",
            logs(rt, id).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
