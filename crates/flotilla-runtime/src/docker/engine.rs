//! Finding, inspecting and removing this owner's containers, and reading
//! their state as the engine reports it.

use bollard::models::{ContainerInspectResponse, ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use std::collections::HashMap;

use super::text::unix_ms_of;
use super::{
    DockerRuntime, KILL_WAIT, LABEL_OWNER, LABEL_POD_UID, LABEL_ROLE, POLL, ROLE_CONTAINER,
    ROLE_SANDBOX, docker_error, is_docker_id, label, not_found, status_of,
};
use crate::{ContainerId, ContainerState, ExitStatus, RuntimeError};

impl DockerRuntime {
    /// This owner's containers (of any state) with all of `labels`.
    pub(super) async fn find(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let mut wanted = vec![format!("{LABEL_OWNER}={}", self.owner)];
        wanted.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
        let filters = HashMap::from([("label", wanted)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| docker_error("cannot list containers", e))
    }

    /// The sandbox's pause container, preferring a running one.
    pub(super) async fn find_pause(
        &self,
        uid: &str,
    ) -> Result<Option<ContainerSummary>, RuntimeError> {
        let mut found = self
            .find(&[(LABEL_ROLE, ROLE_SANDBOX), (LABEL_POD_UID, uid)])
            .await?;
        found.sort_by_key(|c| !summary_running(c));
        Ok(found.into_iter().find(|c| c.id.is_some()))
    }

    /// A container of this owner's Pods, by id.
    pub(super) async fn inspect_owned(
        &self,
        id: &ContainerId,
    ) -> Result<ContainerInspectResponse, RuntimeError> {
        if !is_docker_id(&id.0) {
            return Err(RuntimeError::NoContainer(id.clone()));
        }
        let found = match self
            .docker
            .inspect_container(&id.0, None::<InspectContainerOptions>)
            .await
        {
            Ok(found) => found,
            Err(e) if not_found(&e) => return Err(RuntimeError::NoContainer(id.clone())),
            Err(e) => {
                return Err(docker_error(
                    &format!("cannot inspect container {}", id.0),
                    e,
                ));
            }
        };
        let labels = found.config.as_ref().and_then(|c| c.labels.as_ref());
        if label(labels, LABEL_OWNER) == Some(self.owner.as_str())
            && label(labels, LABEL_ROLE) == Some(ROLE_CONTAINER)
        {
            Ok(found)
        } else {
            Err(RuntimeError::NoContainer(id.clone()))
        }
    }

    /// Force-removes a container with its anonymous volumes; gone already
    /// is fine.
    pub(super) async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            // Another call is removing it: wait for that.
            Err(e) if status_of(&e) == Some(409) => {
                let deadline = tokio::time::Instant::now() + KILL_WAIT;
                loop {
                    match self
                        .docker
                        .inspect_container(id, None::<InspectContainerOptions>)
                        .await
                    {
                        Err(e) if not_found(&e) => return Ok(()),
                        _ if tokio::time::Instant::now() >= deadline => {
                            return Err(docker_error(&format!("cannot remove container {id}"), e));
                        }
                        _ => tokio::time::sleep(POLL).await,
                    }
                }
            }
            Err(e) => Err(docker_error(&format!("cannot remove container {id}"), e)),
        }
    }
}

/// The engine may still run it (or is about to).
pub(super) fn summary_running(c: &ContainerSummary) -> bool {
    matches!(
        c.state,
        Some(
            ContainerSummaryStateEnum::RUNNING
                | ContainerSummaryStateEnum::RESTARTING
                | ContainerSummaryStateEnum::PAUSED
        )
    )
}

pub(super) fn state_of(container: &ContainerInspectResponse) -> ContainerState {
    let state = container.state.clone().unwrap_or_default();
    let started_at_unix_ms = state.started_at.as_deref().map_or(0, unix_ms_of);
    if state.running == Some(true) {
        return ContainerState::Running { started_at_unix_ms };
    }
    let exit_code = state
        .exit_code
        .map_or(-1, |c| i32::try_from(c).unwrap_or(-1));
    ContainerState::Exited(ExitStatus {
        exit_code,
        // 128 + n is how an init and the engine report death by signal n.
        signal: (129..=192).contains(&exit_code).then(|| exit_code - 128),
        oom_killed: state.oom_killed == Some(true),
        started_at_unix_ms,
        // The engine stamps the start once the program runs, which a quick
        // one can outlast by a millisecond or two.
        finished_at_unix_ms: state
            .finished_at
            .as_deref()
            .map_or(0, unix_ms_of)
            .max(started_at_unix_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_above_128_read_as_signals() {
        let exited = |code: i64, oom: bool| ContainerInspectResponse {
            state: Some(bollard::models::ContainerState {
                running: Some(false),
                exit_code: Some(code),
                oom_killed: Some(oom),
                started_at: Some("1970-01-01T00:00:01Z".into()),
                finished_at: Some("1970-01-01T00:00:02Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let status = |c: &ContainerInspectResponse| match state_of(c) {
            ContainerState::Exited(e) => {
                (e.exit_code, e.signal, e.oom_killed, e.finished_at_unix_ms)
            }
            running => panic!("{running:?}"),
        };
        assert_eq!(status(&exited(0, false)), (0, None, false, 2000));
        assert_eq!(status(&exited(3, false)), (3, None, false, 2000));
        assert_eq!(status(&exited(143, false)), (143, Some(15), false, 2000));
        assert_eq!(status(&exited(137, true)), (137, Some(9), true, 2000));
    }
}
