//! A Pod's network: its containers share localhost and volumes, Pods do
//! not collide on ports, and host ports reach the Pod.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_runtime::{
    ContainerSpec, ContainerState, NetworkCheck, PodRuntime, SandboxId, VolumeSource,
};

use super::{Act, Subject, isolates};
use crate::common::{logs, mount, sandbox, volume, wait_exit, wait_listening};

/// A server on port 8080 of the files of the Pod's volume `www`.
fn www_server(subject: &impl Subject) -> ContainerSpec {
    let serve = Act::Serve {
        port: 8080,
        dir: "/www",
    };
    let mut server = subject.container("server", serve);
    server.mounts = vec![mount("www", "/www", false)];
    server
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
    let other_server_id = rt
        .start_container(&other, &www_server(subject), 0)
        .await
        .unwrap();
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
    rt.start_container(&pod, &www_server(subject), 0)
        .await
        .unwrap();
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
