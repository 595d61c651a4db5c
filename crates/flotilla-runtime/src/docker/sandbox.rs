//! A sandbox: its volumes and its pause container, which holds the Pod's
//! network and IPC namespaces and publishes its host ports.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, PortBinding};
use bollard::query_parameters::{BuildImageOptionsBuilder, CreateContainerOptions};
use futures::TryStreamExt;

use super::engine::summary_running;
use super::{
    DockerRuntime, LABEL_NETWORK, LABEL_POD, LABEL_POD_UID, LABEL_ROLE, PAUSE_REPOSITORY,
    REQUEST_TIMEOUT, ROLE_SANDBOX, docker_error, label, not_found, other, pause,
};
use crate::spec::{self, Hostnames, valid_name};
use crate::{NetworkCheck, RuntimeError, SandboxId, SandboxSpec, blocking, volumes};

impl DockerRuntime {
    pub(super) async fn start_pause(
        &self,
        spec: &SandboxSpec,
        network: &str,
    ) -> Result<(), RuntimeError> {
        let mut labels = self.labels(&spec.pod_uid, ROLE_SANDBOX);
        labels.insert(LABEL_NETWORK.into(), network.into());
        labels.insert(
            LABEL_POD.into(),
            format!("{}/{}", spec.namespace, spec.name),
        );
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for (container_port, host_port) in &spec.host_ports {
            let key = format!("{container_port}/tcp");
            exposed.push(key.clone());
            bindings
                .entry(key)
                .or_default()
                .get_or_insert_default()
                .push(PortBinding {
                    host_ip: None,
                    host_port: Some(host_port.to_string()),
                });
        }
        let body = ContainerCreateBody {
            image: Some(self.pause_image.clone()),
            hostname: Some(spec.hostname.clone()),
            labels: Some(labels),
            exposed_ports: Some(exposed),
            // The pause program handles no signal: stopping it is killing it.
            stop_signal: Some("SIGKILL".into()),
            host_config: Some(HostConfig {
                network_mode: Some("bridge".into()),
                // The Pod's containers join its IPC namespace.
                ipc_mode: Some("shareable".into()),
                port_bindings: Some(bindings),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| docker_error("cannot create the sandbox's pause container", e))?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            // Most often a host port already taken; nothing half-made stays.
            let _ = self.remove_container(&created.id).await;
            return Err(docker_error(
                "cannot start the sandbox's pause container",
                e,
            ));
        }
        Ok(())
    }

    pub(super) async fn make_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxId, RuntimeError> {
        spec::check_sandbox(spec, Hostnames::Dns)?;
        let uid = spec.pod_uid.clone();
        let pod = self.pods().entry(uid.clone()).or_default().clone();
        let mut made = pod.lock().await;
        let (dir, volumes) = (self.pod_dir(&uid), spec.clone());
        blocking(move || volumes::make(&dir, &volumes)).await?;
        let network = network_label(spec);
        let mut kept = false;
        for pause in self
            .find(&[(LABEL_ROLE, ROLE_SANDBOX), (LABEL_POD_UID, &uid)])
            .await?
        {
            let Some(id) = &pause.id else { continue };
            let same = summary_running(&pause)
                && label(pause.labels.as_ref(), LABEL_NETWORK) == Some(network.as_str());
            if same && !kept {
                kept = true;
            } else {
                self.remove_container(id).await?;
            }
        }
        if !kept {
            self.start_pause(spec, &network).await?;
        }
        *made = Some(spec.clone());
        Ok(SandboxId(uid))
    }

    pub(super) async fn remove(&self, sandbox_id: &SandboxId) -> Result<(), RuntimeError> {
        let uid = &sandbox_id.0;
        if !valid_name(uid) {
            // Nothing of this runtime's can have it.
            return Ok(());
        }
        let pod = self.pods().get(uid).cloned();
        let mut made = match &pod {
            Some(pod) => Some(pod.lock().await),
            None => None,
        };
        let found = self.find(&[(LABEL_POD_UID, uid)]).await?;
        // The Pod's containers go before the pause container whose
        // namespaces they use.
        let (pauses, containers): (Vec<_>, Vec<_>) = found
            .iter()
            .partition(|c| label(c.labels.as_ref(), LABEL_ROLE) == Some(ROLE_SANDBOX));
        for c in containers.into_iter().chain(pauses) {
            if let Some(id) = &c.id {
                self.remove_container(id).await?;
            }
        }
        let left = self.find(&[(LABEL_POD_UID, uid)]).await?;
        if !left.is_empty() {
            return Err(other(format!(
                "{} containers of sandbox {uid} are still there after their removal",
                left.len()
            )));
        }
        let dir = self.pod_dir(uid);
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            done => done,
        })
        .await?;
        if let (Some(made), Some(pod)) = (made.as_mut(), &pod) {
            **made = None;
            self.release(uid, pod);
        }
        Ok(())
    }

    pub(super) async fn probe_network(
        &self,
        sandbox_id: &SandboxId,
        check: &NetworkCheck,
        timeout: Duration,
    ) -> Result<bool, RuntimeError> {
        let uid = &sandbox_id.0;
        if !valid_name(uid) {
            return Err(RuntimeError::NoSandbox(sandbox_id.clone()));
        }
        let pause = self
            .find_pause(uid)
            .await?
            .ok_or_else(|| RuntimeError::NoSandbox(sandbox_id.clone()))?;
        let ip = pause
            .network_settings
            .and_then(|n| n.networks)
            .into_iter()
            .flat_map(HashMap::into_values)
            .filter_map(|endpoint| endpoint.ip_address?.parse::<IpAddr>().ok())
            .next()
            .filter(|_| pause.state == Some(ContainerSummaryStateEnum::RUNNING))
            .ok_or_else(|| {
                other(format!(
                    "sandbox {uid} has no network address: its pause container is not running"
                ))
            })?;
        let port = match check {
            NetworkCheck::Tcp { port } | NetworkCheck::Http { port, .. } => *port,
        };
        let probe = async {
            let stream = tokio::net::TcpStream::connect((ip, port)).await?;
            match check {
                NetworkCheck::Tcp { .. } => Ok(true),
                NetworkCheck::Http { path, .. } => {
                    let host = match ip {
                        IpAddr::V4(ip) => format!("{ip}:{port}"),
                        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
                    };
                    crate::http_ok(stream, &host, path).await
                }
            }
        };
        Ok(matches!(
            tokio::time::timeout(timeout, probe).await,
            Ok(Ok(true))
        ))
    }
}

/// Builds the pause image for the engine's architecture unless it is there.
pub(super) async fn ensure_pause_image(
    docker: &Docker,
    arch: &str,
) -> Result<String, RuntimeError> {
    let program = pause::program(arch).ok_or_else(|| {
        other(format!(
            "the docker runtime has a pause program for x86_64 and aarch64 only, and the engine runs on {arch:?}"
        ))
    })?;
    let image = format!("{PAUSE_REPOSITORY}:{}", pause::image_tag(&program));
    match docker.inspect_image(&image).await {
        Ok(_) => return Ok(image),
        Err(e) if !not_found(&e) => {
            return Err(docker_error(&format!("cannot inspect image {image}"), e));
        }
        Err(_) => {}
    }
    let context = pause::build_context(&program)?;
    let options = BuildImageOptionsBuilder::new()
        .t(&image)
        .rm(true)
        .forcerm(true)
        .build();
    let build = docker
        .build_image(options, None, Some(bollard::body_full(context.into())))
        .try_for_each(|_| async { Ok(()) });
    tokio::time::timeout(REQUEST_TIMEOUT, build)
        .await
        .map_err(|_| other(format!("building image {image} timed out")))?
        .map_err(|e| docker_error(&format!("cannot build image {image}"), e))?;
    Ok(image)
}

/// What a pause container is made with and cannot change: a sandbox asked
/// for with other values needs a new one.
pub(super) fn network_label(spec: &SandboxSpec) -> String {
    let mut ports: Vec<String> = spec
        .host_ports
        .iter()
        .map(|(c, h)| format!("{c}:{h}"))
        .collect();
    ports.sort();
    format!("{} {}", spec.hostname, ports.join(","))
}
