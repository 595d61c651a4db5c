//! A container: each attempt a new engine container joined to the pause
//! container's namespaces, its image made sure of, its program looked
//! for, and its state and stop as the engine tells them.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType};
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, CreateContainerOptions, CreateImageOptionsBuilder,
    InspectContainerOptions, StopContainerOptionsBuilder,
};
use futures::TryStreamExt;

use super::engine::{state_of, summary_running};
use super::text::split_reference;
use super::{
    DEFAULT_PATH, DockerRuntime, KILL_WAIT, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_POD_UID,
    LABEL_ROLE, LABEL_SANDBOX, MAX_PATH_DIRS, OOM_SETTLE_MS, POLL, PULL_TIMEOUT, REQUEST_TIMEOUT,
    ROLE_CONTAINER, attempt_of, docker_error, label, not_found, other,
};
use crate::spec::{check_name, start_error, valid_name};
use crate::{
    ContainerId, ContainerInfo, ContainerSpec, ContainerState, RuntimeError, SandboxId,
    SandboxInfo, SandboxSpec, volumes,
};

impl DockerRuntime {
    /// Makes room for attempt `attempt` of container `name`: refuses while
    /// an earlier one runs, keeps the latest attempt before it (for
    /// `--previous`) and removes every other.
    pub(super) async fn prune_attempts(
        &self,
        uid: &str,
        name: &str,
        attempt: u32,
    ) -> Result<(), RuntimeError> {
        let found = self
            .find(&[
                (LABEL_ROLE, ROLE_CONTAINER),
                (LABEL_POD_UID, uid),
                (LABEL_CONTAINER, name),
            ])
            .await?;
        if found.iter().any(summary_running) {
            return Err(start_error(name, "a previous attempt is still running"));
        }
        let keep = found
            .iter()
            .filter_map(|c| attempt_of(c.labels.as_ref()))
            .filter(|a| *a < attempt)
            .max();
        for c in &found {
            if let Some(id) = &c.id
                && (keep.is_none() || attempt_of(c.labels.as_ref()) != keep)
            {
                self.remove_container(id).await?;
            }
        }
        Ok(())
    }

    /// Makes sure the engine has `image`, pulling it if allowed.
    pub(super) async fn ensure_image(
        &self,
        image: &str,
        container: &str,
    ) -> Result<(), RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if !not_found(&e) => {
                return Err(start_error(container, format!("image {image}: {e}")));
            }
            Err(_) => {}
        }
        if !self.pull_images {
            return Err(start_error(
                container,
                format!("image {image} is not on this machine and pulling is turned off"),
            ));
        }
        let (name, tag) = split_reference(image);
        let options = CreateImageOptionsBuilder::new()
            .from_image(name)
            .tag(tag)
            .build();
        let pull = self
            .docker
            .create_image(Some(options), None, None)
            .try_for_each(|_| async { Ok(()) });
        match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(start_error(
                container,
                format!("cannot pull image {image}: {e}"),
            )),
            Err(_) => Err(start_error(
                container,
                format!(
                    "pulling image {image} took longer than {} s",
                    PULL_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    /// What the engine is asked to create for attempt `attempt` of `spec`.
    pub(super) fn container_body(
        &self,
        sandbox: &SandboxSpec,
        pause_id: &str,
        spec: &ContainerSpec,
        attempt: u32,
    ) -> Result<ContainerCreateBody, RuntimeError> {
        let fail = |message: String| start_error(&spec.name, message);
        if spec.image.is_empty() {
            return Err(fail("no image".into()));
        }
        let mut mounts = Vec::new();
        for mount in &spec.mounts {
            let source =
                volumes::mount_source(&self.pod_dir(&sandbox.pod_uid), sandbox, &spec.name, mount)?;
            if !mount.mount_path.starts_with('/') {
                return Err(fail(format!(
                    "mount path {:?} is not absolute",
                    mount.mount_path
                )));
            }
            let source = source
                .to_str()
                .ok_or_else(|| fail(format!("volume path {source:?} is not UTF-8")))?
                .to_owned();
            mounts.push(Mount {
                target: Some(mount.mount_path.clone()),
                source: Some(source),
                typ: Some(MountType::BIND),
                read_only: Some(mount.read_only),
                ..Default::default()
            });
        }
        let memory = spec
            .memory_limit_bytes
            .map(i64::try_from)
            .transpose()
            .map_err(|_| fail("memory limit is too large".into()))?;
        let nano_cpus = spec
            .cpu_limit_millis
            .map(|m| {
                m.checked_mul(1_000_000)
                    .and_then(|n| i64::try_from(n).ok())
                    .ok_or_else(|| fail("cpu limit is too large".into()))
            })
            .transpose()?;
        let mut env = vec![("HOSTNAME".to_owned(), sandbox.hostname.clone())];
        for (key, value) in &spec.env {
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(fail(format!(
                    "environment variable name {key:?} is not valid"
                )));
            }
            match env.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value.clone(),
                None => env.push((key.clone(), value.clone())),
            }
        }
        // As Kubernetes does: command replaces the image's ENTRYPOINT and
        // args its CMD; a command without args runs without the image's CMD.
        let (entrypoint, cmd) = match (spec.command.is_empty(), spec.args.is_empty()) {
            (false, _) => (Some(spec.command.clone()), Some(spec.args.clone())),
            (true, false) => (None, Some(spec.args.clone())),
            (true, true) => (None, None),
        };
        let mut labels = self.labels(&sandbox.pod_uid, ROLE_CONTAINER);
        labels.insert(LABEL_SANDBOX.into(), pause_id.into());
        labels.insert(LABEL_CONTAINER.into(), spec.name.clone());
        labels.insert(LABEL_ATTEMPT.into(), attempt.to_string());
        // Two files of half the limit each: the engine drops the older one
        // when the newer is full, so the log never holds more.
        let log_config = HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".into(), (self.log_limit_bytes / 2).to_string()),
                ("max-file".into(), "2".into()),
            ])),
        };
        let joined = format!("container:{pause_id}");
        Ok(ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint,
            cmd,
            env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: spec.working_dir.clone().filter(|d| !d.is_empty()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(joined.clone()),
                // The pause container is the Pod's first process, as in
                // Kubernetes: each container has a pid namespace of its own
                // unless the Pod shares one.
                pid_mode: sandbox.share_process_namespace.then(|| joined.clone()),
                ipc_mode: Some(joined),
                mounts: Some(mounts),
                memory,
                // Swap would let a container outgrow its limit unseen.
                memory_swap: memory,
                nano_cpus,
                init: Some(self.init),
                log_config: Some(log_config),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Under an init the engine starts a container whose program is
    /// missing (the init fails to run it later, as an exit): look for the
    /// program in the created container first, so that it is a failed start
    /// as without an init. Only a definite "not there" fails.
    pub(super) async fn check_program(
        &self,
        id: &str,
        container: &str,
    ) -> Result<(), RuntimeError> {
        let Ok(found) = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        else {
            return Ok(());
        };
        let Some(program) = found.path.filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        let config = found.config.unwrap_or_default();
        let candidates: Vec<String> = if program.starts_with('/') {
            vec![program.clone()]
        } else if program.contains('/') {
            let dir = config.working_dir.filter(|d| !d.is_empty());
            vec![format!(
                "{}/{program}",
                dir.as_deref().unwrap_or("").trim_end_matches('/')
            )]
        } else {
            let path = config
                .env
                .unwrap_or_default()
                .into_iter()
                .find_map(|e| e.strip_prefix("PATH=").map(str::to_owned))
                .unwrap_or_else(|| DEFAULT_PATH.to_owned());
            path.split(':')
                .filter(|dir| dir.starts_with('/'))
                .take(MAX_PATH_DIRS)
                .map(|dir| format!("{}/{program}", dir.trim_end_matches('/')))
                .collect()
        };
        for candidate in &candidates {
            let options = ContainerArchiveInfoOptionsBuilder::new()
                .path(candidate)
                .build();
            match self
                .docker
                .get_container_archive_info(id, Some(options))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if not_found(&e) => {}
                Err(_) => return Ok(()),
            }
        }
        Err(start_error(
            container,
            format!(
                "executable file {program:?} not found (looked at {})",
                candidates.join(", ")
            ),
        ))
    }

    pub(super) async fn start(
        &self,
        sandbox_id: &SandboxId,
        spec: &ContainerSpec,
        attempt: u32,
    ) -> Result<ContainerId, RuntimeError> {
        check_name("container name", &spec.name)?;
        let uid = &sandbox_id.0;
        let pod = self.pods().get(uid).cloned();
        let made = match &pod {
            Some(pod) => pod.lock().await,
            None if valid_name(uid) && self.find_pause(uid).await?.is_some() => {
                return Err(start_error(
                    &spec.name,
                    format!("sandbox {uid} was made before this runtime started: create it again"),
                ));
            }
            None => return Err(RuntimeError::NoSandbox(sandbox_id.clone())),
        };
        let Some(sandbox) = made.clone() else {
            // Removed while this call waited.
            return Err(RuntimeError::NoSandbox(sandbox_id.clone()));
        };
        let pause = self
            .find_pause(uid)
            .await?
            .filter(summary_running)
            .and_then(|p| p.id)
            .ok_or_else(|| {
                start_error(
                    &spec.name,
                    "the sandbox's pause container is not running: create the sandbox again",
                )
            })?;
        self.prune_attempts(uid, &spec.name, attempt).await?;
        self.ensure_image(&spec.image, &spec.name).await?;
        let body = self.container_body(&sandbox, &pause, spec, attempt)?;
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| start_error(&spec.name, e))?;
        let started = match self.init {
            true => self.check_program(&created.id, &spec.name).await,
            false => Ok(()),
        };
        let started = match started {
            Ok(()) => self
                .docker
                .start_container(&created.id, None)
                .await
                .map_err(|e| start_error(&spec.name, e)),
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            // No program, a bad mount...: nothing half-made stays.
            let _ = self.remove_container(&created.id).await;
            return Err(e);
        }
        Ok(ContainerId(created.id))
    }

    pub(super) async fn state(
        &self,
        container: &ContainerId,
    ) -> Result<ContainerState, RuntimeError> {
        let mut found = self.inspect_owned(container).await?;
        loop {
            let state = state_of(&found);
            let ContainerState::Exited(exit) = &state else {
                return Ok(state);
            };
            let limited = found
                .host_config
                .as_ref()
                .and_then(|h| h.memory)
                .is_some_and(|bytes| bytes > 0);
            let now_unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let settled = now_unix_ms >= exit.finished_at_unix_ms + OOM_SETTLE_MS;
            if exit.oom_killed || exit.signal != Some(9) || !limited || settled {
                return Ok(state);
            }
            tokio::time::sleep(POLL).await;
            found = self.inspect_owned(container).await?;
        }
    }

    pub(super) async fn stop(
        &self,
        container: &ContainerId,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        match self.inspect_owned(container).await {
            Ok(_) => {}
            Err(RuntimeError::NoContainer(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        // The engine counts whole seconds: round up, never cut the grace.
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let options = StopContainerOptionsBuilder::new()
            .t(i32::try_from(secs).unwrap_or(i32::MAX))
            .build();
        // The engine answers once the container is stopped, after the grace.
        let docker = self
            .docker
            .clone()
            .with_timeout(Duration::from_secs(secs) + KILL_WAIT + REQUEST_TIMEOUT);
        match docker.stop_container(&container.0, Some(options)).await {
            Ok(()) => {}
            Err(e) if not_found(&e) => return Ok(()),
            Err(e) => {
                return Err(docker_error(
                    &format!("cannot stop container {}", container.0),
                    e,
                ));
            }
        }
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        loop {
            match self.state(container).await {
                Ok(ContainerState::Exited(_)) | Err(RuntimeError::NoContainer(_)) => return Ok(()),
                Err(e) => return Err(e),
                Ok(ContainerState::Running { .. }) if tokio::time::Instant::now() >= deadline => {
                    return Err(other(format!(
                        "container {} still runs {} s after it was killed",
                        container.0,
                        KILL_WAIT.as_secs()
                    )));
                }
                Ok(ContainerState::Running { .. }) => tokio::time::sleep(POLL).await,
            }
        }
    }

    pub(super) async fn list(&self) -> Result<Vec<SandboxInfo>, RuntimeError> {
        let mut found = self.find(&[]).await?;
        // Newest attempts first: only the latest of each container is told.
        found.sort_by_key(|c| std::cmp::Reverse(attempt_of(c.labels.as_ref())));
        let mut pods: BTreeMap<String, BTreeMap<String, ContainerInfo>> = BTreeMap::new();
        for c in found {
            let labels = c.labels.as_ref();
            let (Some(id), Some(uid)) = (&c.id, label(labels, LABEL_POD_UID)) else {
                continue;
            };
            let containers = pods.entry(uid.to_owned()).or_default();
            let (Some(ROLE_CONTAINER), Some(name), Some(attempt)) = (
                label(labels, LABEL_ROLE),
                label(labels, LABEL_CONTAINER),
                attempt_of(labels),
            ) else {
                continue;
            };
            if containers.contains_key(name) {
                continue;
            }
            let id = ContainerId(id.clone());
            let state = match self.inspect_owned(&id).await {
                Ok(found) => state_of(&found),
                Err(RuntimeError::NoContainer(_)) => continue,
                Err(e) => return Err(e),
            };
            containers.insert(
                name.to_owned(),
                ContainerInfo {
                    id,
                    name: name.to_owned(),
                    attempt,
                    state,
                },
            );
        }
        Ok(pods
            .into_iter()
            .map(|(uid, containers)| SandboxInfo {
                id: SandboxId(uid.clone()),
                pod_uid: uid,
                containers: containers.into_values().collect(),
            })
            .collect())
    }
}
