//! The process runtime against real processes, namespaces and cgroups.
//! Needs root to isolate; tests that need isolation or cgroups say why
//! they skip where the machine does not allow them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_runtime::process::{ProcessOptions, ProcessRuntime};
use flotilla_runtime::{
    ContainerSpec, ContainerState, ExecOutput, PodRuntime, RuntimeError, VolumeSource,
};

mod behaviour;
mod common;
use behaviour::{Act, Commands, Subject};
use common::{container_of, logs, mount, sandbox, volume, wait_exit};

const PYTHON: &str = "/usr/bin/python3";
const WAIT: Duration = Duration::from_secs(30);

fn runtime(dir: &Path) -> ProcessRuntime {
    ProcessRuntime::new(dir.join("pods"), ProcessOptions::default()).expect("runtime")
}

/// The runtime, or `None` (with the reason printed) where this machine
/// cannot isolate Pods.
fn isolated_runtime(dir: &Path) -> Option<ProcessRuntime> {
    let rt = runtime(dir);
    if rt.capabilities().network_isolation {
        Some(rt)
    } else {
        println!(
            "skipped: no namespaces here: {:?}",
            rt.capabilities().limitations
        );
        None
    }
}

/// The host's Python does what the shell cannot.
const COMMANDS: Commands = Commands {
    allocate: |mib| {
        vec![
            PYTHON.into(),
            "-c".into(),
            format!("x = b'a' * ({mib} << 20)"),
        ]
    },
    serve: |port, dir| {
        let port = port.to_string();
        [
            PYTHON,
            "-m",
            "http.server",
            &port,
            "--bind",
            "127.0.0.1",
            "--directory",
            dir,
        ]
        .map(String::from)
        .to_vec()
    },
    fetch: |port, path| {
        let fetch = format!(
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}{path}').read().decode().strip())"
        );
        vec![PYTHON.into(), "-c".into(), fetch]
    },
};

/// The process runtime before the behaviour suite, in a directory of the
/// test's own.
struct Process {
    rt: ProcessRuntime,
    dir: tempfile::TempDir,
}

impl Process {
    /// In the environment of every container of this subject, so that its
    /// processes are found on the host whatever they run.
    fn marker(&self) -> String {
        format!("FLOTILLA_TEST_RUN={}", self.dir.path().display())
    }
}

impl Subject for Process {
    type Runtime = ProcessRuntime;

    fn runtime(&self) -> &ProcessRuntime {
        &self.rt
    }

    fn container(&self, name: &str, act: Act<'_>) -> ContainerSpec {
        let mut spec = behaviour::program("busybox", name, act, &COMMANDS);
        let marker = self.marker();
        let (key, value) = marker.split_once('=').unwrap();
        spec.env.push((key.into(), value.into()));
        spec
    }

    fn pod_dir(&self, uid: &str) -> Option<PathBuf> {
        Some(self.dir.path().join("pods").join(uid))
    }

    /// No process of the subject's containers lives on, nor the Pod's
    /// cgroups.
    async fn check_removed(&self, uid: &str) {
        let marker = self.marker();
        let left: Vec<i32> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
            })
            .filter(|pid| alive(*pid))
            .collect();
        assert!(
            left.is_empty(),
            "the container's processes {left:?} live on"
        );
        for hierarchy in ["memory", "cpu", "freezer", ""] {
            let parent = Path::new("/sys/fs/cgroup").join(hierarchy).join("flotilla");
            for peer in std::fs::read_dir(parent).into_iter().flatten().flatten() {
                assert!(!peer.path().join(uid).exists(), "{}", peer.path().display());
            }
        }
    }

    /// As a shell reports a command it cannot find.
    fn check_exec_of_a_missing_program(&self, out: &ExecOutput) {
        assert_eq!(out.exit_code, 127, "{out:?}");
    }
}

async fn subject(_test: &str) -> Option<Process> {
    let dir = tempfile::tempdir().unwrap();
    let options = ProcessOptions {
        log_limit_bytes: behaviour::LOG_LIMIT_BYTES,
        ..ProcessOptions::default()
    };
    let rt = ProcessRuntime::new(dir.path().join("pods"), options).unwrap();
    Some(Process { rt, dir })
}

behaviour::suite!(subject);

fn container(name: &str, command: &[&str]) -> ContainerSpec {
    container_of("busybox", name, command)
}

fn sh(name: &str, script: &str) -> ContainerSpec {
    container(name, &["/bin/sh", "-c", script])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_shadow_the_hosts_directories_without_touching_them() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) = isolated_runtime(dir.path()) else {
        return;
    };
    let files = BTreeMap::from([("app.conf".to_string(), "level=debug\n".to_string())]);
    let spec = sandbox(
        "root-1",
        vec![
            volume("shared", VolumeSource::EmptyDir),
            volume("conf", VolumeSource::Files { files }),
        ],
    );
    let pod = rt.create_sandbox(&spec).await.unwrap();
    let mut main = sh("main", "exec sleep 1000");
    main.mounts = vec![
        mount("shared", "/flotilla-data", false),
        mount("conf", "/etc/flotilla-test-conf", true),
    ];
    let id = rt.start_container(&pod, &main, 0).await.unwrap();

    // The config volume shadows the host's /etc without hiding it or
    // touching it, and mount paths are never made on the host.
    let out = rt
        .exec(
            &id,
            &["/bin/sh".into(), "-c".into(), "cat /etc/flotilla-test-conf/app.conf; test -r /etc/passwd && echo passwd-visible; touch /flotilla-data/x && echo writable".into()],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("level=debug")
            && text.contains("passwd-visible")
            && text.contains("writable"),
        "{text}"
    );
    assert!(!Path::new("/flotilla-data").exists());
    assert!(!Path::new("/etc/flotilla-test-conf").exists());
    rt.remove_sandbox(&pod).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_working_dirs_and_commands_fail_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) = isolated_runtime(dir.path()) else {
        return;
    };
    let pod = rt
        .create_sandbox(&sandbox("env-1", Vec::new()))
        .await
        .unwrap();
    let mut bad_dir = sh("baddir", "true");
    bad_dir.working_dir = Some("/no/such/dir".into());
    let missing = container("missing", &["/no/such/program"]);
    for spec in [bad_dir, missing, container("empty", &[])] {
        let result = rt.start_container(&pod, &spec, 0).await;
        assert!(
            matches!(result, Err(RuntimeError::Start { .. })),
            "{}: {result:?}",
            spec.name
        );
        let cgroup = format!("/sys/fs/cgroup/memory/flotilla/env-1-{}", spec.name);
        assert!(
            !Path::new(&cgroup).exists(),
            "a failed start leaves no cgroup"
        );
    }
    rt.remove_sandbox(&pod).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_keep_both_streams_in_order_and_the_previous_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let pod = rt
        .create_sandbox(&sandbox("logs-1", Vec::new()))
        .await
        .unwrap();

    let first = rt
        .start_container(
            &pod,
            &sh("app", "for i in 1 2 3 4 5; do echo $i; done; echo oops >&2"),
            0,
        )
        .await
        .unwrap();
    wait_exit(&rt, &first).await;
    assert_eq!(logs(&rt, &first).await, "1\n2\n3\n4\n5\noops\n");
    assert!(
        rt.read_logs(&first, true, None).await.is_err(),
        "attempt 0 has no previous"
    );

    let second = rt
        .start_container(&pod, &sh("app", "echo second"), 1)
        .await
        .unwrap();
    wait_exit(&rt, &second).await;
    assert_eq!(logs(&rt, &second).await, "second\n");
    assert_eq!(
        rt.read_logs(&second, true, Some(2)).await.unwrap(),
        b"5\noops\n"
    );
    assert_eq!(
        rt.read_logs_from(&second, 0).await.unwrap(),
        (b"second\n".to_vec(), 7)
    );
    assert_eq!(
        rt.read_logs_from(&second, 7).await.unwrap(),
        (Vec::new(), 7)
    );

    rt.remove_sandbox(&pod).await.unwrap();
}

/// The host's pid of the one process running `cmdline` (arguments joined
/// by spaces), waiting for it to appear: a container's own `$$` is its pid
/// in its pid namespace.
fn host_pid(cmdline: &str) -> i32 {
    let deadline = Instant::now() + WAIT;
    loop {
        let found: Vec<i32> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(&c)
                        .split('\0')
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                        == cmdline
                })
            })
            .filter(|pid| alive(*pid))
            .collect();
        if let [pid] = found[..] {
            return pid;
        }
        assert!(Instant::now() < deadline, "{cmdline}: {found:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat[stat.rfind(')').unwrap() + 1..]
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_kills_leftovers_and_reports_them_exited() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let pod = rt
        .create_sandbox(&sandbox("restart-1", Vec::new()))
        .await
        .unwrap();
    let id = rt
        .start_container(&pod, &sh("main", "echo started; exec sleep 1002"), 2)
        .await
        .unwrap();
    let pid = host_pid("sleep 1002");
    drop(rt);
    assert!(
        alive(pid),
        "dropping the runtime alone leaves the container (the peer process lives on)"
    );

    let rt = runtime(dir.path());
    let deadline = Instant::now() + WAIT;
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the leftover {pid} was not killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let found = rt.list_sandboxes().await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].pod_uid, "restart-1");
    assert_eq!(found[0].containers.len(), 1);
    let info = &found[0].containers[0];
    assert_eq!(
        (info.id.clone(), info.name.as_str(), info.attempt),
        (id.clone(), "main", 2)
    );
    assert!(
        matches!(&info.state, ContainerState::Exited(e) if e.signal == Some(9)),
        "{:?}",
        info.state
    );
    assert!(logs(&rt, &id).await.starts_with("started"));
    assert!(matches!(
        rt.start_container(&pod, &sh("main", "true"), 3).await,
        Err(RuntimeError::Start { .. })
    ));

    // Made again, it runs containers.
    rt.create_sandbox(&sandbox("restart-1", Vec::new()))
        .await
        .unwrap();
    let again = rt
        .start_container(&pod, &sh("main", "exit 0"), 3)
        .await
        .unwrap();
    assert_eq!(wait_exit(&rt, &again).await.exit_code, 0);
    rt.remove_sandbox(&pod).await.unwrap();
    assert!(!dir.path().join("pods/restart-1").exists());
}

#[test]
fn capabilities_name_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let options = ProcessOptions {
        isolation: false,
        cgroups: false,
        ..ProcessOptions::default()
    };
    let rt = ProcessRuntime::new(dir.path().join("pods"), options).unwrap();
    let caps = rt.capabilities();
    assert_eq!(rt.name(), "process");
    assert!(
        !caps.network_isolation
            && !caps.filesystem_isolation
            && !caps.memory_limits
            && !caps.cpu_limits
    );
    assert!(
        caps.limitations.iter().any(|l| l.contains("network")),
        "{:?}",
        caps.limitations
    );
    assert!(
        caps.limitations.iter().any(|l| l.contains("memory")),
        "{:?}",
        caps.limitations
    );
    let full = runtime(dir.path());
    if full.capabilities().network_isolation {
        assert!(
            !full
                .capabilities()
                .limitations
                .iter()
                .any(|l| l.contains("network"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_is_held_in_its_pid_namespace_and_killed_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) = isolated_runtime(dir.path()) else {
        return;
    };
    let pod = rt
        .create_sandbox(&sandbox("pidns-1", Vec::new()))
        .await
        .unwrap();
    // The program is the second process of its namespace: the first is
    // the init that holds it. It detaches a grandchild and ignores SIGTERM.
    let script = "echo pid $$; grep SigBlk /proc/self/status; trap '' TERM; (setsid sleep 1021 &); sleep 1022 & wait";
    let id = rt
        .start_container(&pod, &sh("main", script), 0)
        .await
        .unwrap();
    let (detached, child) = (host_pid("sleep 1021"), host_pid("sleep 1022"));
    assert!(
        // The init blocks every signal to wait for them; its program
        // starts with none blocked.
        logs(&rt, &id)
            .await
            .starts_with("pid 2\nSigBlk:\t0000000000000000\n"),
        "{}",
        logs(&rt, &id).await
    );
    rt.stop_container(&id, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(wait_exit(&rt, &id).await.signal, Some(libc::SIGKILL));
    assert!(
        !alive(detached) && !alive(child),
        "a process of the container outlived it"
    );

    // Containers of one Pod see each other's processes only when the Pod
    // shares its namespace.
    let sees = "for i in $(seq 100); do cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -q 'sleep 102[3]' && exit 0; sleep 0.05; done; exit 1";
    for (uid, shared, seen) in [("pidns-2", false, 1), ("pidns-3", true, 0)] {
        let mut spec = sandbox(uid, Vec::new());
        spec.share_process_namespace = shared;
        let pod = rt.create_sandbox(&spec).await.unwrap();
        rt.start_container(&pod, &container("a", &["sleep", "1023"]), 0)
            .await
            .unwrap();
        let b = rt.start_container(&pod, &sh("b", sees), 0).await.unwrap();
        assert_eq!(
            wait_exit(&rt, &b).await.exit_code,
            seen,
            "shareProcessNamespace: {shared}"
        );
        rt.remove_sandbox(&pod).await.unwrap();
    }
    rt.remove_sandbox(&pod).await.unwrap();
}
