//! Containers' logs: the engine's json-file logs of an attempt, and of the
//! attempt before it.

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::LogsOptionsBuilder;
use futures::StreamExt;

use super::{
    DockerRuntime, LABEL_CONTAINER, LABEL_POD_UID, LABEL_ROLE, REQUEST_TIMEOUT, ROLE_CONTAINER,
    attempt_of, docker_error, label, not_found, other,
};
use crate::{ContainerId, RuntimeError, logs};

impl DockerRuntime {
    /// The container of the attempt before `container`'s.
    pub(super) async fn previous_attempt(
        &self,
        id: &ContainerId,
        container: &ContainerInspectResponse,
    ) -> Result<ContainerId, RuntimeError> {
        let labels = container.config.as_ref().and_then(|c| c.labels.as_ref());
        let (Some(uid), Some(name), Some(attempt)) = (
            label(labels, LABEL_POD_UID),
            label(labels, LABEL_CONTAINER),
            attempt_of(labels),
        ) else {
            return Err(RuntimeError::NoContainer(id.clone()));
        };
        self.find(&[
            (LABEL_ROLE, ROLE_CONTAINER),
            (LABEL_POD_UID, uid),
            (LABEL_CONTAINER, name),
        ])
        .await?
        .into_iter()
        .filter_map(|c| Some((attempt_of(c.labels.as_ref())?, c.id?)))
        .filter(|(a, _)| *a < attempt)
        .max_by_key(|(a, _)| *a)
        .map(|(_, id)| ContainerId(id))
        .ok_or_else(|| other(format!("container {} has no previous attempt's log", id.0)))
    }

    /// The container's log (stdout and stderr as they came), its newest
    /// `log_limit_bytes` at most.
    pub(super) async fn logs_of(&self, id: &ContainerId) -> Result<Vec<u8>, RuntimeError> {
        let cap = usize::try_from(self.log_limit_bytes).unwrap_or(usize::MAX);
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
        let read = async {
            let mut stream = self.docker.logs(&id.0, Some(options));
            let mut data = Vec::new();
            while let Some(chunk) = stream.next().await {
                data.extend_from_slice(chunk?.as_ref());
                // Only a log driver ignoring its limit sends more.
                if data.len() > cap.saturating_mul(2) {
                    data.drain(..data.len() - cap);
                }
            }
            Ok::<_, bollard::errors::Error>(data)
        };
        let data = tokio::time::timeout(REQUEST_TIMEOUT, read)
            .await
            .map_err(|_| other(format!("reading the log of {} timed out", id.0)))?
            .map_err(|e| match not_found(&e) {
                true => RuntimeError::NoContainer(id.clone()),
                false => docker_error(&format!("cannot read the log of {}", id.0), e),
            })?;
        Ok(logs::newest(&data, cap).to_vec())
    }

    pub(super) async fn read_log(
        &self,
        container: &ContainerId,
        previous: bool,
        tail_lines: Option<usize>,
    ) -> Result<Vec<u8>, RuntimeError> {
        let found = self.inspect_owned(container).await?;
        let data = if previous {
            let before = self.previous_attempt(container, &found).await?;
            self.logs_of(&before).await?
        } else {
            self.logs_of(container).await?
        };
        Ok(logs::tail_of(data, tail_lines))
    }

    pub(super) async fn read_log_from(
        &self,
        container: &ContainerId,
        offset: u64,
    ) -> Result<(Vec<u8>, u64), RuntimeError> {
        self.inspect_owned(container).await?;
        let data = self.logs_of(container).await?;
        Ok(logs::after(&data, offset))
    }
}
