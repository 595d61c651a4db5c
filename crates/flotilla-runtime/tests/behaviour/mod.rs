//! The behaviour of the `PodRuntime` contract, one suite that every
//! runtime runs (`suite!` makes one test of each for a runtime).
//!
//! A runtime comes to the suite as a [`Subject`], which turns what the
//! suite wants a container to do ([`Act`]) into a container of its own:
//! a shell script for the process and docker runtimes, a script in the
//! environment for the fake. What a runtime cannot do it says in its
//! [`Capabilities`](flotilla_runtime::Capabilities), and the tests that
//! need it say they skip and why.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_runtime::{
    ContainerId, ContainerSpec, ContainerState, ExecOutput, ExitStatus, NetworkCheck, PodRuntime,
    RuntimeError, SandboxId, VolumeSource,
};

use crate::common::{
    container_of, logs, mount, sandbox, volume, wait_exit, wait_listening, wait_log,
};

/// Longest a test waits for something to change.
const WAIT: Duration = Duration::from_secs(60);

/// Bytes of each attempt's log a runtime under the suite keeps at most:
/// small, so that a test sees the bound at work.
pub const LOG_LIMIT_BYTES: u64 = 4096;

/// What a container of the suite does.
#[derive(Clone, Copy, Debug)]
pub enum Act<'a> {
    /// Prints `out`, then exits with `code`.
    Exit { out: &'a str, code: i32 },
    /// Prints `out`, then runs until a signal ends it; SIGTERM does.
    Run { out: &'a str },
    /// Takes `mib` MiB of memory under a limit of `limit_mib`, then exits
    /// 0, unless the out-of-memory killer ends it first.
    Allocate { mib: u64, limit_mib: u64 },
    /// Serves the files under `dir` over HTTP on `port` until stopped.
    Serve { port: u16, dir: &'a str },
    /// Prints the body of `http://127.0.0.1:<port><path>`, then exits 0.
    Fetch { port: u16, path: &'a str },
    /// Runs a program that does not exist.
    Missing,
    /// Runs `script` with `/bin/sh -c`: only asked of a runtime whose
    /// capabilities say it runs programs.
    Shell(&'a str),
}

/// A runtime under test.
pub trait Subject: Sync {
    type Runtime: PodRuntime;

    fn runtime(&self) -> &Self::Runtime;

    /// A container named `name` that does `act`.
    fn container(&self, name: &str, act: Act<'_>) -> ContainerSpec;

    /// How far the runtime's times may be from the test's clock: the
    /// Docker engine rounds them.
    fn clock_slack_ms(&self) -> u64 {
        0
    }

    /// Checks what an exec of a program that does not exist answered: at
    /// least that it failed; a runtime says more of its own.
    fn check_exec_of_a_missing_program(&self, out: &ExecOutput) {
        assert_ne!(out.exit_code, 0, "{out:?}");
    }
}

/// The commands of a runtime that runs programs for what its shell
/// cannot do.
pub struct Commands {
    /// Takes that many MiB of memory, then exits 0.
    pub allocate: fn(u64) -> Vec<String>,
    /// Serves a directory over HTTP on a port.
    pub serve: fn(u16, &str) -> Vec<String>,
    /// Prints the body of a path of `127.0.0.1:<port>`.
    pub fetch: fn(u16, &str) -> Vec<String>,
}

/// A container of a runtime that runs programs from `image`.
pub fn program(image: &str, name: &str, act: Act<'_>, commands: &Commands) -> ContainerSpec {
    let run = |command: Vec<String>| {
        let mut spec = container_of(image, name, &[]);
        spec.command = command;
        spec
    };
    // The output comes in as $0, so that the script needs no quoting.
    let with_out = |script: &str, out: &str| {
        let mut spec = container_of(image, name, &["/bin/sh", "-c", script]);
        spec.args = vec![out.to_owned()];
        spec
    };
    match act {
        Act::Exit { out, code } => with_out(&format!("printf '%s' \"$0\"; exit {code}"), out),
        Act::Run { out } => with_out("printf '%s' \"$0\"; exec sleep 1000", out),
        Act::Allocate { mib, limit_mib } => {
            let mut spec = run((commands.allocate)(mib));
            spec.memory_limit_bytes = Some(limit_mib << 20);
            spec.cpu_limit_millis = Some(500);
            spec
        }
        Act::Serve { port, dir } => run((commands.serve)(port, dir)),
        Act::Fetch { port, path } => run((commands.fetch)(port, path)),
        Act::Missing => container_of(image, name, &["/no/such/program"]),
        Act::Shell(script) => container_of(image, name, &["/bin/sh", "-c", script]),
    }
}

/// Makes one test of each behaviour for the runtime that `$make` (an
/// async fn of the test's name, `None` where the runtime cannot run here,
/// having said why) makes a subject of.
macro_rules! suite {
    ($make:path) => {
        $crate::behaviour::suite!(@tests $make;
            exit_codes_are_reported,
            signals_are_reported,
            stop_terms_a_container_and_stopping_again_succeeds,
            stop_waits_for_a_polite_container_and_kills_a_stubborn_one,
            logs_keep_the_previous_attempt_their_tail_and_offsets,
            failed_starts_and_bad_names_are_refused,
            remove_sandbox_takes_its_containers,
            memory_limit_kills_a_hog_and_reports_it,
            containers_of_a_pod_share_localhost_and_volumes_and_pods_do_not_collide,
            host_ports_reach_the_pod,
            logs_take_both_streams_and_are_bounded,
            exec_runs_inside_the_container,
        );
    };
    (@tests $make:path; $($test:ident,)*) => {
        mod contract {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(subject) = $make(stringify!($test)).await {
                        $crate::behaviour::$test(&subject).await;
                    }
                }
            )*
        }
    };
}
pub(crate) use suite;

/// Whether the runtime runs programs; if not, says the test skips.
fn runs_programs(subject: &impl Subject, test: &str) -> bool {
    let runs = subject.runtime().capabilities().runs_programs;
    if !runs {
        println!(
            "skipped {test}: the {} runtime runs no programs (Capabilities::runs_programs)",
            subject.runtime().name()
        );
    }
    runs
}

/// Whether the runtime runs programs each in the network, hostname and
/// filesystem of its Pod; if not, says the test skips.
fn isolates(subject: &impl Subject, test: &str) -> bool {
    let caps = subject.runtime().capabilities();
    let isolated = caps.network_isolation && caps.filesystem_isolation;
    if !isolated {
        println!(
            "skipped {test}: Pods are not isolated here: {:?}",
            caps.limitations
        );
    }
    isolated && runs_programs(subject, test)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Checks an exit against the table's code and signal, and its times
/// against the test's clock.
fn check_exit(
    subject: &impl Subject,
    what: &str,
    exit: &ExitStatus,
    code: i32,
    signal: Option<i32>,
    before_ms: u64,
) {
    assert_eq!(
        (exit.exit_code, exit.signal, exit.oom_killed),
        (code, signal, false),
        "{what}"
    );
    let slack = subject.clock_slack_ms();
    assert!(
        exit.started_at_unix_ms + slack >= before_ms
            && exit.finished_at_unix_ms >= exit.started_at_unix_ms
            && exit.finished_at_unix_ms <= now_ms() + slack,
        "{what}: {exit:?} (before {before_ms})"
    );
}

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

pub async fn logs_keep_the_previous_attempt_their_tail_and_offsets(subject: &impl Subject) {
    let rt = subject.runtime();
    let pod = rt
        .create_sandbox(&sandbox("logs-0", Vec::new()))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for attempt in 0..3u32 {
        let out = format!("a{attempt}\nb{attempt}\n");
        let spec = subject.container("app", Act::Exit { out: &out, code: 1 });
        let id = rt.start_container(&pod, &spec, attempt).await.unwrap();
        wait_exit(rt, &id).await;
        ids.push(id);
        if attempt == 0 {
            assert!(
                rt.read_logs(&ids[0], true, None).await.is_err(),
                "attempt 0 has no previous"
            );
        }
        if attempt == 1 {
            let second = &ids[1];
            assert_eq!(logs(rt, second).await, "a1\nb1\n");
            assert_eq!(rt.read_logs(second, true, None).await.unwrap(), b"a0\nb0\n");
            assert_eq!(rt.read_logs(second, false, Some(1)).await.unwrap(), b"b1\n");
            assert_eq!(rt.read_logs(second, true, Some(0)).await.unwrap(), b"");
            assert_eq!(
                rt.read_logs_from(second, 0).await.unwrap(),
                (b"a1\nb1\n".to_vec(), 6)
            );
            assert_eq!(
                rt.read_logs_from(second, 3).await.unwrap(),
                (b"b1\n".to_vec(), 6)
            );
            assert_eq!(rt.read_logs_from(second, 6).await.unwrap(), (Vec::new(), 6));
        }
    }
    assert_eq!(rt.read_logs(&ids[2], true, Some(1)).await.unwrap(), b"b1\n");
    assert!(
        matches!(
            rt.container_state(&ids[0]).await,
            Err(RuntimeError::NoContainer(_))
        ),
        "attempts before the previous one are gone"
    );
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

pub async fn containers_of_a_pod_share_localhost_and_volumes_and_pods_do_not_collide(
    subject: &impl Subject,
) {
    if !isolates(subject, "containers_of_a_pod_share_localhost_and_volumes") {
        return;
    }
    let rt = subject.runtime();
    let files = BTreeMap::from([("app.conf".to_string(), "level=debug\n".to_string())]);
    let spec = sandbox(
        "share-1",
        vec![
            volume("shared", VolumeSource::EmptyDir),
            volume("conf", VolumeSource::Files { files }),
        ],
    );
    let pod = rt.create_sandbox(&spec).await.unwrap();
    assert_eq!(
        rt.create_sandbox(&spec).await.unwrap(),
        pod,
        "creating again is idempotent"
    );

    let write = "echo hello-from-writer > /flotilla-data/hello.txt";
    let mut writer = subject.container("writer", Act::Shell(write));
    writer.mounts = vec![mount("shared", "/flotilla-data", false)];
    let writer_id = rt.start_container(&pod, &writer, 0).await.unwrap();
    let exit = wait_exit(rt, &writer_id).await;
    assert_eq!(exit.exit_code, 0, "{}", logs(rt, &writer_id).await);

    let serve = Act::Serve {
        port: 8080,
        dir: "/srv/www",
    };
    let mut server = subject.container("server", serve);
    server.mounts = vec![
        mount("shared", "/srv/www", true),
        mount("conf", "/etc/flotilla-test-conf", true),
    ];
    let server_id = rt.start_container(&pod, &server, 0).await.unwrap();
    wait_listening(rt, &pod, 8080).await;

    // Another container of the Pod reaches the server on localhost.
    let fetch = Act::Fetch {
        port: 8080,
        path: "/hello.txt",
    };
    let client_id = rt
        .start_container(&pod, &subject.container("client", fetch), 0)
        .await
        .unwrap();
    let exit = wait_exit(rt, &client_id).await;
    assert_eq!(exit.exit_code, 0, "{}", logs(rt, &client_id).await);
    assert_eq!(logs(rt, &client_id).await, "hello-from-writer\n");

    // The Pod's hostname, its config volume, and a read-only mount that
    // refuses writes.
    let script = "cat /proc/sys/kernel/hostname; echo $HOSTNAME; cat /etc/flotilla-test-conf/app.conf; echo x > /srv/www/x || echo read-only";
    let command = ["/bin/sh".into(), "-c".into(), script.into()];
    let out = rt
        .exec(&server_id, &command, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pod-share-1\npod-share-1\nlevel=debug\nread-only\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let http = |path: &str| NetworkCheck::Http {
        port: 8080,
        path: path.into(),
    };
    let check = |pod: SandboxId, check: NetworkCheck| async move {
        rt.check_network(&pod, &check, Duration::from_secs(5))
            .await
            .unwrap()
    };
    assert!(check(pod.clone(), http("/hello.txt")).await);
    assert!(!check(pod.clone(), http("/missing")).await);
    assert!(!check(pod.clone(), NetworkCheck::Tcp { port: 8081 }).await);

    // Another Pod has a network of its own: the same port is free there.
    let other = rt
        .create_sandbox(&sandbox(
            "share-2",
            vec![volume("www", VolumeSource::EmptyDir)],
        ))
        .await
        .unwrap();
    assert!(!check(other.clone(), NetworkCheck::Tcp { port: 8080 }).await);
    let mut other_server = subject.container(
        "server",
        Act::Serve {
            port: 8080,
            dir: "/www",
        },
    );
    other_server.mounts = vec![mount("www", "/www", false)];
    let other_server_id = rt.start_container(&other, &other_server, 0).await.unwrap();
    wait_listening(rt, &other, 8080).await;
    assert!(!check(other.clone(), http("/hello.txt")).await);
    for id in [&server_id, &other_server_id] {
        assert!(matches!(
            rt.container_state(id).await.unwrap(),
            ContainerState::Running { .. }
        ));
    }
    rt.remove_sandbox(&pod).await.unwrap();
    rt.remove_sandbox(&other).await.unwrap();
}

pub async fn host_ports_reach_the_pod(subject: &impl Subject) {
    if !isolates(subject, "host_ports_reach_the_pod") {
        return;
    }
    let rt = subject.runtime();
    let host_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut spec = sandbox("ports-1", vec![volume("www", VolumeSource::EmptyDir)]);
    spec.host_ports = vec![(8080, host_port)];
    let pod = rt.create_sandbox(&spec).await.unwrap();
    let mut writer = subject.container("writer", Act::Shell("echo served > /www/index.txt"));
    writer.mounts = vec![mount("www", "/www", false)];
    let writer_id = rt.start_container(&pod, &writer, 0).await.unwrap();
    assert_eq!(wait_exit(rt, &writer_id).await.exit_code, 0);
    let mut server = subject.container(
        "server",
        Act::Serve {
            port: 8080,
            dir: "/www",
        },
    );
    server.mounts = vec![mount("www", "/www", false)];
    rt.start_container(&pod, &server, 0).await.unwrap();
    wait_listening(rt, &pod, 8080).await;
    let get = move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", host_port))?;
        stream.write_all(b"GET /index.txt HTTP/1.0\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::task::spawn_blocking(get).await.unwrap().unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 200") && answer.ends_with("served\n"),
        "{answer}"
    );
    rt.remove_sandbox(&pod).await.unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", host_port)).is_err(),
        "the host port is closed with the Pod"
    );
}

pub async fn logs_take_both_streams_and_are_bounded(subject: &impl Subject) {
    if !runs_programs(subject, "logs_take_both_streams_and_are_bounded") {
        return;
    }
    let rt = subject.runtime();
    let pod = rt
        .create_sandbox(&sandbox("logs-1", Vec::new()))
        .await
        .unwrap();
    // Both streams reach the log; their lines keep their order within a
    // stream at least.
    let both = rt
        .start_container(
            &pod,
            &subject.container("both", Act::Shell("echo out; echo err >&2")),
            0,
        )
        .await
        .unwrap();
    wait_exit(rt, &both).await;
    let mut lines: Vec<String> = logs(rt, &both).await.lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines, ["err", "out"]);

    let chatty = Act::Shell("i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done");
    let chatty = rt
        .start_container(&pod, &subject.container("chatty", chatty), 0)
        .await
        .unwrap();
    wait_exit(rt, &chatty).await;
    let text = logs(rt, &chatty).await;
    assert!(
        text.len() as u64 <= LOG_LIMIT_BYTES,
        "{} bytes kept",
        text.len()
    );
    assert!(text.ends_with("line-1999\n"), "{text}");
    assert!(text.starts_with("line-"), "{text}");
    assert_eq!(
        rt.read_logs(&chatty, false, Some(1)).await.unwrap(),
        b"line-1999\n"
    );
    rt.remove_sandbox(&pod).await.unwrap();
}

pub async fn exec_runs_inside_the_container(subject: &impl Subject) {
    if !isolates(subject, "exec_runs_inside_the_container") {
        return;
    }
    let rt = subject.runtime();
    let pod = rt
        .create_sandbox(&sandbox(
            "exec-1",
            vec![volume("data", VolumeSource::EmptyDir)],
        ))
        .await
        .unwrap();
    let script = "echo inside > /flotilla-exec/marker; echo ready; exec sleep 1000";
    let mut spec = subject.container("main", Act::Shell(script));
    spec.env = vec![("FOO".into(), "bar".into())];
    spec.working_dir = Some("/flotilla-exec".into());
    spec.mounts = vec![mount("data", "/flotilla-exec", false)];
    let id = rt.start_container(&pod, &spec, 0).await.unwrap();
    wait_log(rt, &id, "ready").await;
    let cmd = |s: &str| vec!["/bin/sh".to_string(), "-c".to_string(), s.to_string()];

    let out = rt
        .exec(
            &id,
            &cmd("echo $FOO $(pwd) $(cat /proc/sys/kernel/hostname) $(cat marker)"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, String::from_utf8_lossy(&out.stdout).as_ref()),
        (0, "bar /flotilla-exec pod-exec-1 inside\n")
    );
    let out = rt
        .exec(&id, &cmd("echo err >&2; exit 7"), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_slice(), out.stderr.as_slice()),
        (7, b"".as_slice(), b"err\n".as_slice())
    );
    let out = rt
        .exec(&id, &["no-such-program".into()], Duration::from_secs(10))
        .await
        .unwrap();
    subject.check_exec_of_a_missing_program(&out);

    let started = Instant::now();
    assert!(
        rt.exec(&id, &cmd("sleep 30"), Duration::from_millis(500))
            .await
            .is_err()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The timed-out command was killed, with what it forked.
    let deadline = Instant::now() + WAIT;
    loop {
        let out = rt
            .exec(
                &id,
                &cmd("for p in /proc/[0-9]*; do cat $p/cmdline; echo; done"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        if !out.stdout.windows(9).any(|w| w == b"sleep\x0030\x00") {
            break;
        }
        assert!(Instant::now() < deadline, "the exec's sleep still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    rt.stop_container(&id, Duration::ZERO).await.unwrap();
    assert!(
        rt.exec(&id, &cmd("true"), Duration::from_secs(1))
            .await
            .is_err(),
        "no exec in an exited container"
    );
    rt.remove_sandbox(&pod).await.unwrap();
}
