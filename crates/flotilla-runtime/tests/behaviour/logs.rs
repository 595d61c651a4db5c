//! Logs: the previous attempt's, their tail, reading on from an offset,
//! both streams, and the bound on what is kept; what restarts keep.

use std::time::Duration;

use flotilla_runtime::{PodRuntime, RuntimeError, VolumeSource};

use super::{Act, LOG_LIMIT_BYTES, Subject, runs_programs};
use crate::common::{logs, mount, sandbox, volume, wait_exit};

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

pub async fn restarts_keep_the_empty_dir_and_the_previous_log(subject: &impl Subject) {
    if !runs_programs(subject, "restarts_keep_the_empty_dir_and_the_previous_log") {
        return;
    }
    let rt = subject.runtime();
    let pod = rt
        .create_sandbox(&sandbox(
            "restart-1",
            vec![volume("data", VolumeSource::EmptyDir)],
        ))
        .await
        .unwrap();
    let script = "echo run >> /data/runs; cat /data/runs; echo done";
    let mut app = subject.container("app", Act::Shell(script));
    app.mounts = vec![mount("data", "/data", false)];

    let first = rt.start_container(&pod, &app, 0).await.unwrap();
    wait_exit(rt, &first).await;
    assert_eq!(logs(rt, &first).await, "run\ndone\n");
    assert!(
        rt.read_logs(&first, true, None).await.is_err(),
        "attempt 0 has no previous"
    );

    let second = rt.start_container(&pod, &app, 1).await.unwrap();
    wait_exit(rt, &second).await;
    assert_eq!(
        logs(rt, &second).await,
        "run\nrun\ndone\n",
        "the emptyDir stays"
    );
    assert_eq!(
        rt.read_logs(&second, true, None).await.unwrap(),
        b"run\ndone\n"
    );
    assert_eq!(
        rt.read_logs(&second, false, Some(2)).await.unwrap(),
        b"run\ndone\n"
    );
    assert_eq!(
        rt.read_logs_from(&second, 0).await.unwrap(),
        (b"run\nrun\ndone\n".to_vec(), 13)
    );
    assert_eq!(
        rt.read_logs_from(&second, 13).await.unwrap(),
        (Vec::new(), 13)
    );

    let third = rt.start_container(&pod, &app, 2).await.unwrap();
    wait_exit(rt, &third).await;
    assert_eq!(
        rt.read_logs(&third, true, Some(1)).await.unwrap(),
        b"done\n"
    );
    assert!(
        matches!(
            rt.container_state(&first).await,
            Err(RuntimeError::NoContainer(_))
        ),
        "attempts before the previous one are removed"
    );

    // A running attempt is never replaced.
    let mut long = subject.container("long", Act::Shell("sleep 1000"));
    long.mounts = app.mounts.clone();
    let running = rt.start_container(&pod, &long, 0).await.unwrap();
    assert!(matches!(
        rt.start_container(&pod, &long, 1).await,
        Err(RuntimeError::Start { .. })
    ));
    rt.stop_container(&running, Duration::ZERO).await.unwrap();
    rt.remove_sandbox(&pod).await.unwrap();
}
