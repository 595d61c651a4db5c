//! The docker runtime against the machine's real Docker engine. The engine
//! has no images and no registry, so the tests run the tools image of the
//! black-box tests' `docker_engine`, built FROM scratch out of this
//! machine's programs. Each test skips, saying why, where no engine answers
//! or those programs are missing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use flotilla_testkit::docker_engine::{
    HTTP_CLIENT, HTTP_SERVER, TOOLS_IMAGE, remove_containers_of, tools_image,
};
use flotilla_runtime::docker::{DockerOptions, DockerRuntime, LABEL_OWNER, LABEL_ROLE};
use flotilla_runtime::{
    ContainerSpec, ContainerState, ExecOutput, PodRuntime, RuntimeError, SandboxId, VolumeSource,
};

mod behaviour;
mod common;
use behaviour::{Act, Commands, Subject};
use common::{container_of, logs, mount, sandbox, volume, wait_exit, wait_log};

async fn engine() -> Option<Docker> {
    let docker = match Docker::connect_with_local_defaults() {
        Ok(docker) => docker,
        Err(e) => {
            eprintln!("skipped: no Docker engine: {e}");
            return None;
        }
    };
    let answer = async {
        let docker = docker.negotiate_version().await?;
        docker.ping().await?;
        Ok::<_, bollard::errors::Error>(docker)
    };
    match tokio::time::timeout(Duration::from_secs(10), answer).await {
        Ok(Ok(docker)) => Some(docker),
        Ok(Err(e)) => {
            eprintln!("skipped: no Docker engine answers: {e}");
            None
        }
        Err(_) => {
            eprintln!("skipped: the Docker engine does not answer");
            None
        }
    }
}

/// Removes every container of an owner when a test ends, passed or not.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = remove_containers_of(&self.0) {
            eprintln!("containers left behind: {e}");
        }
    }
}

struct Setup {
    docker: Docker,
    rt: DockerRuntime,
    dir: tempfile::TempDir,
    owner: String,
    _cleanup: Cleanup,
}

/// An engine, the tools image and a runtime with an owner of this test's
/// own, or `None` (with the reason printed).
async fn setup(test: &str) -> Option<Setup> {
    setup_with(test, |_| {}).await
}

async fn setup_with(test: &str, adjust: impl FnOnce(&mut DockerOptions)) -> Option<Setup> {
    let docker = engine().await?;
    if let Err(e) = tokio::task::spawn_blocking(tools_image).await.unwrap() {
        eprintln!("skipped: {e}");
        return None;
    }
    let owner = format!("test-{test}-{}", std::process::id());
    let cleanup = Cleanup(owner.clone());
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(&owner, dir.path(), adjust).await;
    Some(Setup {
        docker,
        rt,
        dir,
        owner,
        _cleanup: cleanup,
    })
}

async fn runtime(
    owner: &str,
    dir: &Path,
    adjust: impl FnOnce(&mut DockerOptions),
) -> DockerRuntime {
    let mut options = DockerOptions::new(owner, dir.join("pods"));
    adjust(&mut options);
    DockerRuntime::new(options).await.expect("runtime")
}

/// The tools image's Perl does what the shell cannot.
const COMMANDS: Commands = Commands {
    allocate: |mib| {
        let script = format!("my $x = 'a' x ({mib} << 20); print length($x), qq(\\n);");
        vec!["/bin/perl".into(), "-e".into(), script]
    },
    serve: |port, dir| {
        vec![
            "/bin/perl".into(),
            "-e".into(),
            HTTP_SERVER.into(),
            port.to_string(),
            dir.into(),
        ]
    },
    fetch: |port, path| {
        vec![
            "/bin/perl".into(),
            "-e".into(),
            HTTP_CLIENT.into(),
            port.to_string(),
            path.into(),
        ]
    },
};

impl Subject for Setup {
    type Runtime = DockerRuntime;

    fn runtime(&self) -> &DockerRuntime {
        &self.rt
    }

    fn container(&self, name: &str, act: Act<'_>) -> ContainerSpec {
        behaviour::program(TOOLS_IMAGE, name, act, &COMMANDS)
    }

    fn pod_dir(&self, uid: &str) -> Option<PathBuf> {
        Some(self.dir.path().join("pods").join(uid))
    }

    /// No container of the owner is left, nor its pause container.
    async fn check_removed(&self, _uid: &str) {
        for role in ["container", "sandbox"] {
            assert!(
                containers_of(&self.docker, &self.owner, role)
                    .await
                    .is_empty(),
                "{role}"
            );
        }
    }

    /// The engine says so in the output.
    fn check_exec_of_a_missing_program(&self, out: &ExecOutput) {
        let said = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
        assert!(
            out.exit_code != 0 && String::from_utf8_lossy(&said).contains("not found"),
            "{}: {}",
            out.exit_code,
            String::from_utf8_lossy(&said)
        );
    }

    /// The engine's clock is the host's; allow for its rounding.
    fn clock_slack_ms(&self) -> u64 {
        1_000
    }
}

async fn subject(test: &str) -> Option<Setup> {
    setup_with(test, |o| o.log_limit_bytes = behaviour::LOG_LIMIT_BYTES).await
}

behaviour::suite!(subject);

/// The ids of an owner's containers with `role`, as the engine lists them.
async fn containers_of(docker: &Docker, owner: &str, role: &str) -> Vec<String> {
    let filters = HashMap::from([(
        "label",
        vec![
            format!("{LABEL_OWNER}={owner}"),
            format!("{LABEL_ROLE}={role}"),
        ],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

fn container(name: &str, command: &[&str]) -> ContainerSpec {
    container_of(TOOLS_IMAGE, name, command)
}

fn sh(name: &str, script: &str) -> ContainerSpec {
    container(name, &["/bin/sh", "-c", script])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_entrypoints_and_bad_starts() {
    let Some(s) = setup("env").await else {
        return;
    };
    let rt = &s.rt;
    let pod = rt
        .create_sandbox(&sandbox("env-1", Vec::new()))
        .await
        .unwrap();
    let run = |spec: ContainerSpec| async move {
        let id = rt
            .start_container(&pod_id("env-1"), &spec, 0)
            .await
            .unwrap();
        let exit = wait_exit(rt, &id).await;
        assert_eq!(exit.exit_code, 0, "{}: {}", spec.name, logs(rt, &id).await);
        logs(rt, &id).await
    };

    // The image's ENTRYPOINT is `sh -c` and its CMD `echo image-default`.
    assert_eq!(run(container("defaults", &[])).await, "image-default\n");
    let mut args_only = container("args", &[]);
    args_only.args = vec!["echo from-args".into()];
    assert_eq!(run(args_only).await, "from-args\n");
    // A command alone runs without the image's CMD.
    assert_eq!(
        run(sh("command", r#"echo "from-command $# $1""#)).await,
        "from-command 0 \n"
    );

    let missing_program = container("missing", &["/no/such/program"]);
    let missing_in_path = container("notinpath", &["no-such-program"]);
    let mut missing_image = sh("noimage", "true");
    missing_image.image = "flotilla-test-no-such-image:1".into();
    let mut bad_mount = sh("badmount", "true");
    bad_mount.mounts = vec![mount("nope", "/x", false)];
    let mut bad_host_path = sh("badhost", "true");
    bad_host_path.mounts = vec![mount("gone", "/x", false)];
    let bad_pod = rt
        .create_sandbox(&sandbox(
            "env-2",
            vec![volume(
                "gone",
                VolumeSource::HostPath {
                    path: s.dir.path().join("no-such-dir"),
                },
            )],
        ))
        .await
        .unwrap();
    for (pod, spec) in [
        (&pod, missing_program),
        (&pod, missing_in_path),
        (&pod, missing_image),
        (&pod, bad_mount),
        (&bad_pod, bad_host_path),
    ] {
        let result = rt.start_container(pod, &spec, 0).await;
        assert!(
            matches!(result, Err(RuntimeError::Start { .. })),
            "{}: {result:?}",
            spec.name
        );
    }
    assert!(
        !s.dir.path().join("no-such-dir").exists(),
        "a host path is never made"
    );
    assert_eq!(
        containers_of(&s.docker, &s.owner, "container").await.len(),
        3,
        "failed starts leave no container: the three that ran are all there is"
    );
    assert!(matches!(
        rt.start_container(&pod_id("nobody"), &sh("x", "true"), 0)
            .await,
        Err(RuntimeError::NoSandbox(_))
    ));
    rt.remove_sandbox(&pod).await.unwrap();
    rt.remove_sandbox(&bad_pod).await.unwrap();
}

fn pod_id(uid: &str) -> SandboxId {
    SandboxId(uid.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_are_found_again_by_their_owner_only() {
    let Some(s) = setup("adopt").await else {
        return;
    };
    let spec = sandbox("adopt-1", Vec::new());
    let pod = s.rt.create_sandbox(&spec).await.unwrap();
    assert_eq!(s.rt.create_sandbox(&spec).await.unwrap(), pod, "idempotent");
    assert_eq!(
        containers_of(&s.docker, &s.owner, "sandbox").await.len(),
        1,
        "one pause container"
    );
    let first =
        s.rt.start_container(&pod, &sh("main", "exit 4"), 1)
            .await
            .unwrap();
    wait_exit(&s.rt, &first).await;
    let id =
        s.rt.start_container(&pod, &sh("main", "echo up; exec sleep 1000"), 2)
            .await
            .unwrap();
    wait_log(&s.rt, &id, "up").await;
    // The engine keeps the attempt before, stopped, with its state.
    assert!(matches!(
        s.rt.container_state(&first).await.unwrap(),
        ContainerState::Exited(_)
    ));

    // Another owner on the same engine sees and touches nothing of it.
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger_owner = format!("{}-stranger", s.owner);
    let _stranger_cleanup = Cleanup(stranger_owner.clone());
    let stranger = runtime(&stranger_owner, stranger_dir.path(), |_| {}).await;
    assert!(stranger.list_sandboxes().await.unwrap().is_empty());
    assert!(matches!(
        stranger.container_state(&id).await,
        Err(RuntimeError::NoContainer(_))
    ));
    stranger.stop_container(&id, Duration::ZERO).await.unwrap();
    stranger.remove_sandbox(&pod).await.unwrap();
    assert!(matches!(
        s.rt.container_state(&id).await.unwrap(),
        ContainerState::Running { .. }
    ));

    // The same owner, as after a peer restart, finds it.
    let again = runtime(&s.owner, s.dir.path(), |_| {}).await;
    let found = again.list_sandboxes().await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].id.clone(), found[0].pod_uid.as_str()),
        (pod.clone(), "adopt-1")
    );
    assert_eq!(found[0].containers.len(), 1, "the latest attempt only");
    let info = &found[0].containers[0];
    assert_eq!(
        (info.id.clone(), info.name.as_str(), info.attempt),
        (id.clone(), "main", 2)
    );
    assert!(matches!(info.state, ContainerState::Running { .. }));
    assert_eq!(again.read_logs(&id, false, None).await.unwrap(), b"up\n");
    assert!(matches!(
        again.start_container(&pod, &sh("main", "true"), 3).await,
        Err(RuntimeError::Start { .. })
    ));

    // Made again with the same spec, the running pause container is kept.
    let pauses = containers_of(&s.docker, &s.owner, "sandbox").await;
    again.create_sandbox(&spec).await.unwrap();
    assert_eq!(containers_of(&s.docker, &s.owner, "sandbox").await, pauses);
    again.stop_container(&id, Duration::ZERO).await.unwrap();
    let next = again
        .start_container(&pod, &sh("main", "exit 0"), 3)
        .await
        .unwrap();
    assert_eq!(wait_exit(&again, &next).await.exit_code, 0);
    assert_eq!(again.read_logs(&next, true, None).await.unwrap(), b"up\n");
    again.remove_sandbox(&pod).await.unwrap();
    assert!(s.rt.list_sandboxes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_and_a_missing_engine() {
    let Some(s) = setup("caps").await else {
        return;
    };
    assert_eq!(s.rt.name(), "docker");
    // The black-box tests remove what their peers leave by this label.
    assert_eq!(flotilla_testkit::docker_engine::LABEL_OWNER, LABEL_OWNER);
    assert!(s.rt.pause_image().starts_with("flotilla-pause:"));
    let caps = s.rt.capabilities();
    assert!(caps.network_isolation && caps.filesystem_isolation);
    assert!(caps.memory_limits && caps.cpu_limits && caps.runs_programs);
    assert!(
        caps.limitations.iter().any(|l| l.contains("outlive")),
        "{:?}",
        caps.limitations
    );

    let mut options = DockerOptions::new("nobody", s.dir.path().join("other"));
    options.socket = Some(s.dir.path().join("no-such.sock"));
    let Err(e) = DockerRuntime::new(options).await else {
        panic!("a runtime without an engine");
    };
    assert!(e.to_string().contains("no Docker engine answers"), "{e}");
    let Err(e) = DockerRuntime::new(DockerOptions::new("bad owner", s.dir.path())).await else {
        panic!("an owner with a space");
    };
    assert!(e.to_string().contains("owner"), "{e}");
}
