//! What a container runs with (its command, args, env, working directory
//! and hostname), and exec inside a running container.

use std::time::{Duration, Instant};

use flotilla_runtime::{PodRuntime, VolumeSource};

use super::{Act, Subject, WAIT, isolates};
use crate::common::{logs, mount, sandbox, volume, wait_exit, wait_log};

pub async fn command_args_env_and_working_dir_are_honoured(subject: &impl Subject) {
    if !isolates(subject, "command_args_env_and_working_dir_are_honoured") {
        return;
    }
    let rt = subject.runtime();
    let pod = rt
        .create_sandbox(&sandbox("env-1", Vec::new()))
        .await
        .unwrap();
    let script = r#"echo "$(cat /proc/sys/kernel/hostname)|$HOSTNAME|$GREETING|$0|$1|$(pwd)""#;
    let cases = [
        (None, "pod-env-1|pod-env-1|hi there|first|second|/tmp\n"),
        (
            Some("overridden"),
            "pod-env-1|overridden|hi there|first|second|/tmp\n",
        ),
    ];
    for (i, (hostname, want)) in cases.into_iter().enumerate() {
        let mut spec = subject.container(&format!("c{i}"), Act::Shell(script));
        spec.args = vec!["first".into(), "second".into()];
        spec.env = vec![("GREETING".into(), "hi there".into())];
        spec.env
            .extend(hostname.map(|h| ("HOSTNAME".to_owned(), h.to_owned())));
        spec.working_dir = Some("/tmp".into());
        let id = rt.start_container(&pod, &spec, 0).await.unwrap();
        let exit = wait_exit(rt, &id).await;
        assert_eq!(exit.exit_code, 0, "{}", logs(rt, &id).await);
        assert_eq!(logs(rt, &id).await, want);
    }
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
