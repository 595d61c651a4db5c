//! The guard: a process beside the peer that kills the owner's
//! containers once the peer is gone, however it ended (see the module
//! documentation of `docker`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::query_parameters::ListContainersOptionsBuilder;

use super::{GuardCommand, LABEL_OWNER, connect, docker_error, not_found, other};
use crate::RuntimeError;

/// Starts the guard with a pipe as its standard input, in a process group
/// of its own so that a Ctrl-C meant for the peer does not end it first.
pub(super) fn start_guard(command: &GuardCommand) -> Result<std::process::Child, RuntimeError> {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(&command.program)
        .args(&command.args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| {
            other(format!(
                "cannot start the container guard {}: {e}",
                command.program.display()
            ))
        })
}

/// Attempts at killing a dead peer's containers while the engine fails.
const GUARD_ATTEMPTS: usize = 20;

/// The guard's work: waits until standard input ends, which happens when
/// the peer that started this process is gone, then kills every running
/// container of `owner` created before that moment (a restarted peer's
/// new ones are spared). Returns how many it killed.
pub async fn guard(owner: &str, socket: Option<&Path>) -> Result<usize, RuntimeError> {
    tokio::task::spawn_blocking(|| {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        // Nothing is ever written: this returns at the end of input, or
        // on an error, which means the same.
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
    })
    .await
    .map_err(|e| other(format!("waiting for the peer to end: {e}")))?;
    let peer_gone_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut last_error = None;
    for _ in 0..GUARD_ATTEMPTS {
        match kill_owned(owner, socket, peer_gone_unix_s).await {
            Ok(killed) => return Ok(killed),
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last_error.unwrap_or_else(|| other("no attempt made")))
}

async fn kill_owned(
    owner: &str,
    socket: Option<&Path>,
    created_by_unix_s: i64,
) -> Result<usize, RuntimeError> {
    let (docker, _) = connect(socket).await?;
    let filters = HashMap::from([("label", vec![format!("{LABEL_OWNER}={owner}")])]);
    let options = ListContainersOptionsBuilder::new()
        .filters(&filters)
        .build();
    let running = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| docker_error("cannot list containers", e))?;
    let mut killed = 0;
    for c in running
        .iter()
        .filter(|c| c.created.is_some_and(|t| t <= created_by_unix_s))
    {
        let Some(id) = &c.id else { continue };
        match docker
            .kill_container(id, None::<bollard::query_parameters::KillContainerOptions>)
            .await
        {
            Ok(()) => killed += 1,
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(docker_error(&format!("cannot kill container {id}"), e)),
        }
    }
    Ok(killed)
}
