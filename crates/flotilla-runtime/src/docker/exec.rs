//! Running a command in a running container, and killing what one that
//! timed out left behind.

use std::collections::HashMap;
use std::time::Duration;

use bollard::exec::StartExecResults;
use bollard::models::ExecConfig;
use futures::StreamExt;

use super::engine::state_of;
use super::{DockerRuntime, docker_error, other};
use crate::logs::push_capped;
use crate::{ContainerId, ContainerState, ExecOutput, RuntimeError, blocking};

impl DockerRuntime {
    pub(super) async fn run_exec(
        &self,
        container: &ContainerId,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        if command.is_empty() {
            return Err(other("exec needs a command"));
        }
        let state = self.inspect_owned(container).await?;
        if !matches!(state_of(&state), ContainerState::Running { .. }) {
            return Err(other(format!("container {} is not running", container.0)));
        }
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(command.to_vec()),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(&container.0, config)
            .await
            .map_err(|e| docker_error(&format!("cannot exec in container {}", container.0), e))?
            .id;
        let run = async {
            let mut output = match self.docker.start_exec(&exec, None).await? {
                StartExecResults::Attached { output, .. } => output,
                // Only asked for with `detach`, which this call does not.
                StartExecResults::Detached => return Ok(None),
            };
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            while let Some(chunk) = output.next().await {
                match chunk? {
                    bollard::container::LogOutput::StdErr { message } => {
                        push_capped(&mut stderr, &message)
                    }
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => {
                        push_capped(&mut stdout, &message)
                    }
                    bollard::container::LogOutput::StdIn { .. } => {}
                }
            }
            // The output ends with the command; its exit code lands a
            // moment later.
            loop {
                let inspect = self.docker.inspect_exec(&exec).await?;
                if inspect.running != Some(true) {
                    let exit_code = inspect
                        .exit_code
                        .map_or(-1, |c| i32::try_from(c).unwrap_or(-1));
                    return Ok::<_, bollard::errors::Error>(Some(ExecOutput {
                        exit_code,
                        stdout,
                        stderr,
                    }));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(Some(output))) => Ok(output),
            Ok(Ok(None)) => Err(other(format!(
                "exec in container {} did not attach its output",
                container.0
            ))),
            Ok(Err(e)) => Err(docker_error(
                &format!("exec in container {}", container.0),
                e,
            )),
            Err(_) => {
                self.kill_exec(&container.0, &exec).await;
                Err(other(format!(
                    "exec in container {} timed out after {} ms",
                    container.0,
                    timeout.as_millis()
                )))
            }
        }
    }

    /// Kills what an exec that timed out still runs. The engine cannot
    /// stop an exec, but its processes are the host's: the peer (root,
    /// beside the engine) kills them, those of the container only.
    pub(super) async fn kill_exec(&self, container: &str, exec: &str) {
        let Ok(inspect) = self.docker.inspect_exec(exec).await else {
            return;
        };
        let Some(pid) = inspect.pid.and_then(|p| i32::try_from(p).ok()) else {
            return;
        };
        let container = container.to_owned();
        let _ = blocking(move || {
            kill_tree(pid, &container);
            Ok(())
        })
        .await;
    }
}

/// Kills `root` and every process descended from it that belongs to
/// `container` (by its cgroup), so a pid reused by now is never hit.
/// Descendants are found before any dies, as orphans move to the
/// container's init.
fn kill_tree(root: i32, container: &str) {
    let in_container = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(container))
    };
    if root <= 1 || !in_container(root) {
        return;
    }
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: the fields
        // after it are the state, then the parent's pid.
        let parent = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse().ok());
        if let Some(parent) = parent {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut doomed = vec![root];
    let mut next = 0;
    while let Some(&pid) = doomed.get(next) {
        doomed.extend(children.get(&pid).into_iter().flatten());
        next += 1;
    }
    for pid in doomed {
        if pid > 1 && in_container(pid) {
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
