//! Running a command inside a running container, as `exec` and exec
//! probes do.

use std::io;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::container::exit_of;
use super::spawn::{PidNamespace, parent_pid, spawn_child};
use super::sys::{self, ChildSetup};
use super::{KILL_WAIT, ProcessRuntime};
use crate::{ContainerId, ExecOutput, RuntimeError};

async fn read_capped(reader: Option<impl AsyncRead + Unpin>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let Some(mut reader) = reader else {
        return Ok(out);
    };
    let mut buf = [0u8; 8192];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(out);
        }
        // Past the cap the output is read and dropped, so the command never
        // blocks on a full pipe.
        crate::logs::push_capped(&mut out, &buf[..n]);
    }
}

impl ProcessRuntime {
    pub(super) async fn run_exec(
        &self,
        container: &ContainerId,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let c = self.inner.container(container)?;
        if !c.running() || !sys::is_same_process(c.pid, c.start_ticks) {
            return Err(RuntimeError::Other(format!(
                "container {} is not running",
                container.0
            )));
        }
        let (program, args) = command
            .split_first()
            .ok_or_else(|| RuntimeError::Other("exec needs a command".into()))?;
        let mut setup = ChildSetup {
            parent_pid: parent_pid(),
            ..ChildSetup::default()
        };
        if let Some(cgroup) = &c.cgroup {
            setup.cgroup_procs = cgroup.open_procs()?;
        }
        let mut pid_ns = PidNamespace::Peer;
        if self.inner.isolated() {
            for (kind, flag) in [
                ("net", libc::CLONE_NEWNET),
                ("uts", libc::CLONE_NEWUTS),
                ("ipc", libc::CLONE_NEWIPC),
                ("mnt", libc::CLONE_NEWNS),
            ] {
                setup.join.push((sys::open_namespace(c.pid, kind)?, flag));
            }
            if c.has_init {
                pid_ns = PidNamespace::Join(sys::open_namespace(c.pid, "pid")?);
                setup.in_pid_namespace = true;
            }
        }
        setup.working_dir = c.working_dir.as_ref().map(sys::cstring).transpose()?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(c.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: ChildSetup::run makes only async-signal-safe calls.
        unsafe { cmd.pre_exec(move || setup.run()) };
        let mut child = match spawn_child(cmd, pid_ns).await {
            Ok(child) => child,
            // As a shell reports a command it cannot find.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(ExecOutput {
                    exit_code: 127,
                    stdout: Vec::new(),
                    stderr: format!("{program}: {e}\n").into_bytes(),
                });
            }
            // The kernel refuses a fork into a pid namespace whose first
            // process is ending: the container is being killed.
            Err(e) if c.has_init && e.raw_os_error() == Some(libc::ENOMEM) => {
                return Err(RuntimeError::Other(format!(
                    "container {} is not running: it is being killed",
                    container.0
                )));
            }
            Err(e) => {
                return Err(RuntimeError::Other(format!(
                    "cannot exec in container {}: {e}",
                    container.0
                )));
            }
        };
        let pid = child.id().unwrap_or(0) as i32;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let run = async { tokio::join!(read_capped(stdout), read_capped(stderr), child.wait()) };
        match tokio::time::timeout(timeout, run).await {
            Ok((stdout, stderr, status)) => Ok(ExecOutput {
                exit_code: exit_of(status).0,
                stdout: stdout?,
                stderr: stderr?,
            }),
            Err(_) => {
                sys::kill_group(pid, libc::SIGKILL);
                let _ = tokio::time::timeout(KILL_WAIT, child.wait()).await;
                Err(RuntimeError::Other(format!(
                    "exec in container {} timed out after {} ms",
                    container.0,
                    timeout.as_millis()
                )))
            }
        }
    }
}
