//! The pod worker's runtime actions performed on the [`PodRuntime`], each
//! bounded in time and in how many run at once, with what came of them as
//! observations for the worker.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flotilla_runtime::{ContainerState, ExecOutput, NetworkCheck, RuntimeError};
use tokio::task::JoinSet;

use crate::pod_worker::{Observation, ProbeCheck, RuntimeAction};
use crate::{CALL_TIMEOUT, MAX_PROBE_DETAIL_BYTES, STOP_SLACK, Shared, lock};

pub(crate) async fn perform_all(shared: &Arc<Shared>, actions: Vec<RuntimeAction>) -> Vec<Observation> {
    let mut set = JoinSet::new();
    for action in actions {
        let shared = shared.clone();
        set.spawn(async move { perform(&shared, action).await });
    }
    let mut observations = Vec::new();
    while let Some(done) = set.join_next().await {
        match done {
            Ok(o) => observations.extend(o),
            Err(e) => tracing::error!("runtime call panicked: {e}"),
        }
    }
    observations
}

async fn limited<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, RuntimeError>>,
) -> Result<T, RuntimeError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(RuntimeError::Other(format!(
            "runtime call timed out after {}s",
            limit.as_secs()
        ))),
    }
}

fn detail(output: &ExecOutput) -> String {
    let bytes = if output.stderr.is_empty() {
        &output.stdout
    } else {
        &output.stderr
    };
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_PROBE_DETAIL_BYTES)])
        .trim()
        .to_string();
    if text.is_empty() {
        format!("command exited with {}", output.exit_code)
    } else {
        text
    }
}

impl Shared {
    /// Whether a sandbox or container may start now.
    fn may_start(&self) -> bool {
        let until = lock(&self.lease_until).map(tokio::time::Instant::into_std);
        flotilla_fence::fence::may_start(self.fenced.load(Ordering::SeqCst), until, tokio::time::Instant::now().into_std())
    }
}

/// Why a start was refused when the node holds no lease.
const NO_LEASE: &str = "not started: this node holds no lease from a leader (fencing)";

async fn perform(shared: &Shared, action: RuntimeAction) -> Vec<Observation> {
    let rt = &shared.runtime;
    match action {
        RuntimeAction::CreateSandbox(_) if !shared.may_start() => vec![Observation::SandboxFailed(NO_LEASE.into())],
        RuntimeAction::StartContainer { target, .. } if !shared.may_start() => {
            vec![Observation::ContainerStartFailed { target, message: NO_LEASE.into() }]
        }
        RuntimeAction::CreateSandbox(spec) => {
            let _permit = shared.calls.acquire().await;
            match limited(CALL_TIMEOUT, rt.create_sandbox(&spec)).await {
                Ok(id) => vec![Observation::SandboxCreated(id)],
                Err(e) => vec![Observation::SandboxFailed(e.to_string())],
            }
        }
        RuntimeAction::StartContainer {
            target,
            sandbox,
            spec,
            attempt,
        } => {
            let _permit = shared.calls.acquire().await;
            let id = match limited(CALL_TIMEOUT, rt.start_container(&sandbox, &spec, attempt)).await
            {
                Ok(id) => id,
                Err(RuntimeError::Start { message, .. }) => {
                    return vec![Observation::ContainerStartFailed { target, message }];
                }
                Err(e) => {
                    return vec![Observation::ContainerStartFailed {
                        target,
                        message: e.to_string(),
                    }];
                }
            };
            match limited(CALL_TIMEOUT, rt.container_state(&id)).await {
                Ok(ContainerState::Running { started_at_unix_ms }) => {
                    vec![Observation::ContainerStarted {
                        target,
                        id,
                        started_at_ms: started_at_unix_ms,
                    }]
                }
                Ok(ContainerState::Exited(status)) => vec![
                    Observation::ContainerStarted {
                        target,
                        id: id.clone(),
                        started_at_ms: status.started_at_unix_ms,
                    },
                    Observation::ContainerState {
                        id,
                        state: ContainerState::Exited(status),
                    },
                ],
                Err(_) => vec![Observation::ContainerStarted {
                    target,
                    id,
                    started_at_ms: (shared.now)(),
                }],
            }
        }
        RuntimeAction::Inspect { id } => {
            let _permit = shared.calls.acquire().await;
            match limited(CALL_TIMEOUT, rt.container_state(&id)).await {
                Ok(state) => vec![Observation::ContainerState { id, state }],
                Err(RuntimeError::NoContainer(_)) => vec![Observation::ContainerGone { id }],
                Err(e) => {
                    tracing::warn!(container = ?id, "cannot inspect container: {e}");
                    Vec::new()
                }
            }
        }
        RuntimeAction::Probe {
            id,
            sandbox,
            kind,
            check,
            timeout_ms,
        } => {
            let _permit = shared.calls.acquire().await;
            let timeout = Duration::from_millis(timeout_ms);
            // The runtime enforces the timeout; this bounds a runtime that does not.
            let limit = timeout + Duration::from_secs(1);
            let (success, detail) = match &check {
                ProbeCheck::Exec(command) => {
                    match limited(limit, rt.exec(&id, command, timeout)).await {
                        Ok(out) => (out.exit_code == 0, detail(&out)),
                        Err(e) => (false, e.to_string()),
                    }
                }
                ProbeCheck::Network(net) => {
                    match limited(limit, rt.check_network(&sandbox, net, timeout)).await {
                        Ok(true) => (true, String::new()),
                        Ok(false) => (
                            false,
                            match net {
                                NetworkCheck::Tcp { port } => {
                                    format!("dial tcp port {port}: no answer")
                                }
                                NetworkCheck::Http { port, path } => {
                                    format!("HTTP probe failed on port {port} path {path}")
                                }
                            },
                        ),
                        Err(e) => (false, e.to_string()),
                    }
                }
            };
            vec![Observation::ProbeResult {
                id,
                kind,
                success,
                detail,
            }]
        }
        RuntimeAction::StopContainer { id, grace_ms } => {
            let _permit = shared.stops.acquire().await;
            let grace = Duration::from_millis(grace_ms);
            match limited(grace + STOP_SLACK, rt.stop_container(&id, grace)).await {
                Ok(()) => {}
                Err(RuntimeError::NoContainer(_)) => {
                    return vec![Observation::ContainerGone { id }];
                }
                Err(e) => {
                    return vec![Observation::StopFailed {
                        id,
                        message: e.to_string(),
                    }];
                }
            }
            match limited(CALL_TIMEOUT, rt.container_state(&id)).await {
                Ok(state @ ContainerState::Exited(_)) => {
                    vec![Observation::ContainerState { id, state }]
                }
                Ok(ContainerState::Running { .. }) => {
                    vec![Observation::StopFailed {
                        id,
                        message: "still running after stop".into(),
                    }]
                }
                Err(RuntimeError::NoContainer(_)) => vec![Observation::ContainerGone { id }],
                Err(e) => vec![Observation::StopFailed {
                    id,
                    message: e.to_string(),
                }],
            }
        }
        RuntimeAction::RemoveSandbox(id) => {
            let _permit = shared.calls.acquire().await;
            match limited(CALL_TIMEOUT, rt.remove_sandbox(&id)).await {
                Ok(()) | Err(RuntimeError::NoSandbox(_)) => vec![Observation::SandboxRemoved],
                Err(e) => vec![Observation::SandboxRemoveFailed(e.to_string())],
            }
        }
    }
}
