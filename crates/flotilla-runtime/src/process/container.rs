//! Starting a container (its init, namespaces, root and cgroup), watching
//! it to its end, and stopping it.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::cgroup::Group;
use super::records::{ContainerRecord, ExitRecord, ProcRecord, container_id, write_json};
use super::spawn::{PidNamespace, parent_pid, spawn_child};
use super::sys::{self, ChildSetup};
use super::{
    Container, DEFAULT_PATH, GROUP_GONE_POLLS, KILL_WAIT, LOG_DRAIN, ProcessRuntime, logs, rootfs,
};
use crate::spec::{check_name, start_error};
use crate::{ContainerId, ContainerSpec, RuntimeError, SandboxId, blocking, volumes};

pub(super) fn container_env(spec: &ContainerSpec, hostname: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("PATH", DEFAULT_PATH),
        ("HOME", "/root"),
        ("HOSTNAME", hostname),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (key, value) in &spec.env {
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.clone(),
            None => env.push((key.clone(), value.clone())),
        }
    }
    env
}

pub(super) fn exit_of(status: io::Result<std::process::ExitStatus>) -> (i32, Option<i32>) {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => (code, None),
            (None, Some(signal)) => (128 + signal, Some(signal)),
            (None, None) => (-1, None),
        },
        Err(_) => (-1, None),
    }
}

/// Waits for a container's process, then finishes it off: kills what it
/// forked, lets its output reach the log, and records how it ended.
async fn reap(
    mut child: tokio::process::Child,
    program_status: Option<io::PipeReader>,
    container: Arc<Container>,
    log_task: JoinHandle<io::Result<()>>,
    oom_baseline: Option<u64>,
    record_path: PathBuf,
    mut record: ContainerRecord,
) {
    let mut status = child.wait().await;
    let finished_at_unix_ms = sys::unix_ms();
    // An init reports how its program ended; if the init itself was
    // killed, its own end is the container's.
    if let Some(mut reader) = program_status {
        use std::io::Read;
        use std::os::unix::process::ExitStatusExt;
        let mut raw = [0u8; 4];
        // The init is gone, so the pipe holds its word or is at its end.
        if reader.read_exact(&mut raw).is_ok() {
            status = Ok(std::process::ExitStatus::from_raw(i32::from_ne_bytes(raw)));
        }
    }
    // What the container forked ends with it, as it would with a
    // container's own pid namespace.
    sys::kill_group(container.pid, libc::SIGKILL);
    if let Some(cgroup) = container.cgroup.clone() {
        let _ = tokio::task::spawn_blocking(move || cgroup.kill_all()).await;
    }
    // Killed processes linger until reaped by whoever inherited them; wait
    // a bounded while so that "exited" means gone.
    for _ in 0..GROUP_GONE_POLLS {
        if !sys::group_alive(container.pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Ok(Ok(Err(e))) = tokio::time::timeout(LOG_DRAIN, log_task).await {
        tracing::warn!(container = %container.id.0, error = %e, "container log copy failed");
    }
    let (exit_code, signal) = exit_of(status);
    let oom_killed = match (&container.cgroup, oom_baseline) {
        (Some(cgroup), Some(before)) => cgroup.oom_kills().is_some_and(|now| now > before),
        _ => false,
    };
    let exit = ExitRecord {
        exit_code,
        signal,
        oom_killed,
        finished_at_unix_ms,
    };
    record.exit = Some(exit);
    if let Err(e) = write_json(&record_path, &record) {
        tracing::warn!(container = %container.id.0, error = %e, "cannot record container exit");
    }
    container.exit.send_replace(record.exit_status());
}

impl ProcessRuntime {
    pub(super) async fn start(
        &self,
        sandbox_id: &SandboxId,
        spec: &ContainerSpec,
        attempt: u32,
    ) -> Result<ContainerId, RuntimeError> {
        check_name("container name", &spec.name)?;
        let sandbox = self.inner.sandbox(sandbox_id)?;
        let _ops = sandbox.ops.lock().await;
        let uid = sandbox.uid.clone();
        let (sandbox_spec, holder_pid) = {
            let mut state = sandbox.state();
            if state.removed {
                return Err(RuntimeError::NoSandbox(sandbox_id.clone()));
            }
            let Some(sandbox_spec) = state.spec.clone() else {
                return Err(start_error(
                    &spec.name,
                    format!("sandbox {uid} was left from before a restart: create it again"),
                ));
            };
            if state
                .containers
                .get(&spec.name)
                .is_some_and(|c| c.running())
            {
                return Err(start_error(
                    &spec.name,
                    "a previous attempt is still running",
                ));
            }
            let holder_pid = match state.holder.as_mut() {
                Some(holder) => {
                    if !holder.alive() {
                        return Err(start_error(
                            &spec.name,
                            "the sandbox's namespace holder is gone: create the sandbox again",
                        ));
                    }
                    Some(holder.pid)
                }
                None => None,
            };
            (sandbox_spec, holder_pid)
        };
        let mut argv = spec.command.iter().chain(&spec.args);
        let program = argv
            .next()
            .ok_or_else(|| start_error(&spec.name, "no command: the process runtime runs host programs and has no image entrypoint"))?
            .clone();
        let args: Vec<String> = argv.cloned().collect();
        let env = container_env(spec, &sandbox_spec.hostname);

        let mut volumes = Vec::new();
        for mount in &spec.mounts {
            let source = volumes::mount_source(&sandbox.dir, &sandbox_spec, &spec.name, mount)?;
            let dir = std::fs::metadata(&source)
                .map(|m| m.is_dir())
                .unwrap_or(true);
            volumes.push(rootfs::VolumeMount {
                source,
                target: mount.mount_path.clone(),
                read_only: mount.read_only,
                dir,
            });
        }

        let log_dir = self.log_dir(&uid, &spec.name);
        let log_path = logs::attempt_path(&log_dir, attempt);
        {
            let (log_dir, log_path) = (log_dir.clone(), log_path.clone());
            blocking(move || {
                std::fs::create_dir_all(&log_dir)?;
                logs::prune(&log_dir, attempt)?;
                std::fs::write(&log_path, b"")
            })
            .await?;
        }

        let cgroup = match &self.inner.cgroups {
            Some(cgroups) => {
                let (cgroups, uid, name) = (cgroups.clone(), uid.clone(), spec.name.clone());
                let (memory, cpu) = (spec.memory_limit_bytes, spec.cpu_limit_millis);
                let made =
                    blocking(move || cgroups.create_container(&uid, &name, memory, cpu)).await;
                Some(made.map_err(|e| start_error(&spec.name, format!("cgroup: {e}")))?)
            }
            None => None,
        };
        let oom_baseline = cgroup.as_ref().and_then(Group::oom_kills);

        let launched: Result<
            (
                tokio::process::Child,
                Option<String>,
                io::PipeReader,
                Option<io::PipeReader>,
            ),
            RuntimeError,
        > = async {
            let mut setup = ChildSetup {
                parent_pid: parent_pid(),
                ..ChildSetup::default()
            };
            if let Some(cgroup) = &cgroup {
                setup.cgroup_procs = cgroup
                    .open_procs()
                    .map_err(|e| start_error(&spec.name, format!("cgroup: {e}")))?;
            }
            let mut pid_ns = PidNamespace::Peer;
            let mut status_reader = None;
            let working_dir = match holder_pid {
                Some(holder) => {
                    pid_ns = if sandbox_spec.share_process_namespace {
                        PidNamespace::Join(sys::open_namespace(holder, "pid").map_err(|e| {
                            start_error(&spec.name, format!("sandbox namespace: {e}"))
                        })?)
                    } else {
                        PidNamespace::New
                    };
                    let (reader, writer) = io::pipe()?;
                    status_reader = Some(reader);
                    setup.init_status = Some(writer.into());
                    setup.command_line = sys::command_line_region();
                    setup.in_pid_namespace = true;
                    for (kind, flag) in [
                        ("net", libc::CLONE_NEWNET),
                        ("uts", libc::CLONE_NEWUTS),
                        ("ipc", libc::CLONE_NEWIPC),
                    ] {
                        let fd = sys::open_namespace(holder, kind).map_err(|e| {
                            start_error(&spec.name, format!("sandbox namespace: {e}"))
                        })?;
                        setup.join.push((fd, flag));
                    }
                    setup.unshare = libc::CLONE_NEWNS;
                    let root = sandbox.dir.join("rootfs").join(&spec.name);
                    let planned = root.clone();
                    let mounts = blocking(move || {
                        sys::remove_tree(&planned)?;
                        let plan =
                            rootfs::plan(Path::new("/"), &volumes).map_err(io::Error::other)?;
                        plan.build(&planned)?;
                        plan.child_mounts(&planned)
                    })
                    .await
                    .map_err(|e| start_error(&spec.name, e))?;
                    setup.root = Some((sys::cstring(&root)?, mounts));
                    Some(spec.working_dir.clone().unwrap_or_else(|| "/".into()))
                }
                None => spec.working_dir.clone(),
            };
            setup.working_dir = working_dir.as_ref().map(sys::cstring).transpose()?;

            let (reader, writer) = io::pipe()?;
            let mut command = tokio::process::Command::new(&program);
            command
                .args(&args)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::from(writer.try_clone()?))
                .stderr(Stdio::from(writer));
            // SAFETY: ChildSetup::run makes only async-signal-safe calls.
            unsafe { command.pre_exec(move || setup.run()) };
            let child = spawn_child(command, pid_ns).await.map_err(|e| {
                let dir = working_dir.as_deref().unwrap_or("(the peer's)");
                start_error(
                    &spec.name,
                    format!("{e} (command {program:?}, working directory {dir})"),
                )
            })?;
            Ok((child, working_dir, reader, status_reader))
        }
        .await;
        let (child, working_dir, reader, status_reader) = match launched {
            Ok(launched) => launched,
            Err(e) => {
                // A cgroup no attempt ever ran in would be left behind.
                if let Some(cgroup) = cgroup.clone()
                    && !sandbox.state().containers.contains_key(&spec.name)
                {
                    let _ = blocking(move || cgroup.remove()).await;
                }
                return Err(e);
            }
        };
        let started_at_unix_ms = sys::unix_ms();
        let pid = child
            .id()
            .ok_or_else(|| start_error(&spec.name, "exited before it could be watched"))?
            as i32;
        let start_ticks = sys::start_ticks(pid).unwrap_or(0);
        let log_task = tokio::spawn(logs::copy(
            reader.into(),
            log_path,
            self.inner.log_limit_bytes,
        ));

        let id = container_id(&uid, &spec.name, attempt);
        let container = Arc::new(Container {
            id: id.clone(),
            name: spec.name.clone(),
            attempt,
            pid,
            has_init: status_reader.is_some(),
            start_ticks,
            started_at_unix_ms,
            env,
            working_dir,
            cgroup,
            exit: watch::Sender::new(None),
        });
        let record = ContainerRecord {
            name: spec.name.clone(),
            attempt,
            image: spec.image.clone(),
            process: Some(ProcRecord { pid, start_ticks }),
            started_at_unix_ms,
            exit: None,
        };
        let record_path = sandbox
            .dir
            .join("containers")
            .join(format!("{}.json", spec.name));
        if let Err(e) = write_json(&record_path, &record) {
            tracing::warn!(container = %id.0, error = %e, "cannot record container start");
        }
        sandbox
            .state()
            .containers
            .insert(spec.name.clone(), container.clone());
        tokio::spawn(reap(
            child,
            status_reader,
            container,
            log_task,
            oom_baseline,
            record_path,
            record,
        ));
        Ok(id)
    }

    pub(super) async fn stop(
        &self,
        container: &Arc<Container>,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        if !container.running() {
            return Ok(());
        }
        let mut exit = container.exit.subscribe();
        if container.has_init {
            // The init passes it on to the program alone, as a container
            // engine signals a container's first process.
            sys::kill_pid(container.pid, libc::SIGTERM);
        } else {
            sys::kill_group(container.pid, libc::SIGTERM);
        }
        if tokio::time::timeout(grace, exit.wait_for(Option::is_some))
            .await
            .is_err()
        {
            sys::kill_group(container.pid, libc::SIGKILL);
            if let Some(cgroup) = container.cgroup.clone() {
                let _ = tokio::task::spawn_blocking(move || cgroup.kill_all()).await;
            }
        }
        match tokio::time::timeout(KILL_WAIT, exit.wait_for(Option::is_some)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(RuntimeError::Other(format!(
                "container {} did not stop within {} ms of SIGKILL",
                container.id.0,
                KILL_WAIT.as_millis()
            ))),
        }
    }
}
