//! A sandbox: its directories and volumes, the holder of its namespaces,
//! its host ports, and its removal with everything in it.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::proxy::{loopback, proxy};
use super::records::{ProcRecord, SandboxRecord, write_json};
use super::spawn::{PidNamespace, parent_pid, spawn_child};
use super::sys::{self, ChildSetup};
use super::{Container, Holder, KILL_WAIT, ProcessRuntime, Sandbox, SandboxState};
use crate::spec::{self, Hostnames};
use crate::{NetworkCheck, RuntimeError, SandboxId, SandboxSpec, blocking, volumes};

impl ProcessRuntime {
    /// Starts the process holding a Pod's namespaces; with
    /// `shareProcessNamespace` it is also the first process of the Pod's
    /// pid namespace, which the containers join.
    async fn spawn_holder(&self, spec: &SandboxSpec) -> Result<Holder, RuntimeError> {
        let program = self
            .inner
            .holder_program
            .clone()
            .ok_or_else(|| RuntimeError::Other("namespaces are not available".into()))?;
        let mut setup = ChildSetup {
            parent_pid: parent_pid(),
            in_pid_namespace: spec.share_process_namespace,
            unshare: libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC,
            hostname: Some(sys::cstring(&spec.hostname)?),
            loopback_up: true,
            ..ChildSetup::default()
        };
        if let Some(cgroups) = self.inner.cgroups.clone() {
            let uid = spec.pod_uid.clone();
            let holder = blocking(move || cgroups.create_holder(&uid)).await;
            setup.cgroup_procs = holder
                .and_then(|h| h.open_procs())
                .map_err(|e| RuntimeError::Other(format!("the sandbox's cgroup: {e}")))?;
        }
        let pid_ns = if spec.share_process_namespace {
            PidNamespace::New
        } else {
            PidNamespace::Peer
        };
        let mut command = tokio::process::Command::new(program);
        command
            .arg("infinity")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: ChildSetup::run makes only async-signal-safe calls.
        unsafe { command.pre_exec(move || setup.run()) };
        let child = spawn_child(command, pid_ns).await.map_err(|e| {
            RuntimeError::Other(format!("cannot start the sandbox's namespace holder: {e}"))
        })?;
        let pid = child.id().ok_or_else(|| {
            RuntimeError::Other("the sandbox's namespace holder exited at once".into())
        })? as i32;
        Ok(Holder { pid, child })
    }

    pub(super) async fn make_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxId, RuntimeError> {
        spec::check_sandbox(spec, Hostnames::Kernel)?;
        let id = SandboxId(spec.pod_uid.clone());
        // A sandbox being removed is out of the map once its lock is free.
        let (sandbox, _ops) = loop {
            let sandbox = self
                .inner
                .sandboxes()
                .entry(spec.pod_uid.clone())
                .or_insert_with(|| {
                    Arc::new(Sandbox {
                        uid: spec.pod_uid.clone(),
                        dir: self.inner.state_dir.join(&spec.pod_uid),
                        ops: Arc::default(),
                        state: Mutex::new(SandboxState::default()),
                    })
                })
                .clone();
            let ops = sandbox.ops.clone().lock_owned().await;
            if !sandbox.state().removed {
                break (sandbox, ops);
            }
        };
        {
            let mut state = sandbox.state();
            let holder_ok = match state.holder.as_mut() {
                Some(holder) => holder.alive(),
                None => !self.inner.isolated(),
            };
            if holder_ok && state.spec.as_ref() == Some(spec) {
                return Ok(id);
            }
        }
        let dir = sandbox.dir.clone();
        let volume_spec = spec.clone();
        blocking(move || {
            for sub in ["volumes", "logs", "rootfs", "containers"] {
                std::fs::create_dir_all(dir.join(sub))?;
            }
            volumes::make(&dir, &volume_spec)
        })
        .await?;
        let old_holder = sandbox.state().holder.take();
        if let Some(mut old) = old_holder {
            sys::kill_group(old.pid, libc::SIGKILL);
            let _ = tokio::time::timeout(KILL_WAIT, old.child.wait()).await;
        }
        let holder = if self.inner.isolated() {
            Some(self.spawn_holder(spec).await?)
        } else {
            None
        };
        let holder_record = holder.as_ref().and_then(|h| {
            sys::start_ticks(h.pid).map(|start_ticks| ProcRecord {
                pid: h.pid,
                start_ticks,
            })
        });
        let netns = holder
            .as_ref()
            .map(|h| PathBuf::from(format!("/proc/{}/ns/net", h.pid)));
        let record = SandboxRecord {
            pod_uid: spec.pod_uid.clone(),
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            hostname: spec.hostname.clone(),
            holder: holder_record,
        };
        {
            let mut state = sandbox.state();
            state.holder = holder;
            state.spec = Some(spec.clone());
            for proxy in state.proxies.drain(..) {
                proxy.abort();
            }
        }
        write_json(&sandbox.dir.join("sandbox.json"), &record)?;
        let mut proxies = Vec::new();
        for &(container_port, host_port) in &spec.host_ports {
            if netns.is_none() && container_port == host_port {
                // Without a network namespace the container binds the host port itself.
                continue;
            }
            match tokio::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, host_port)).await {
                Ok(listener) => {
                    proxies.push(tokio::spawn(proxy(listener, netns.clone(), container_port)))
                }
                Err(e) => {
                    proxies.iter().for_each(JoinHandle::abort);
                    return Err(RuntimeError::Other(format!("host port {host_port}: {e}")));
                }
            }
        }
        sandbox.state().proxies = proxies;
        Ok(id)
    }

    pub(super) async fn remove(&self, sandbox_id: &SandboxId) -> Result<(), RuntimeError> {
        let Ok(sandbox) = self.inner.sandbox(sandbox_id) else {
            return Ok(());
        };
        let _ops = sandbox.ops.lock().await;
        let containers: Vec<Arc<Container>> =
            sandbox.state().containers.values().cloned().collect();
        for container in &containers {
            self.stop(container, Duration::ZERO).await?;
        }
        let (holder, proxies) = {
            let mut state = sandbox.state();
            (state.holder.take(), std::mem::take(&mut state.proxies))
        };
        proxies.iter().for_each(JoinHandle::abort);
        if let Some(mut holder) = holder {
            sys::kill_group(holder.pid, libc::SIGKILL);
            if tokio::time::timeout(KILL_WAIT, holder.child.wait())
                .await
                .is_err()
            {
                return Err(RuntimeError::Other(format!(
                    "the namespace holder of sandbox {} did not die",
                    sandbox.uid
                )));
            }
        }
        let pod_cgroup = self.inner.cgroups.as_ref().map(|c| c.pod(&sandbox.uid));
        let dir = sandbox.dir.clone();
        blocking(move || {
            if let Some(cgroup) = pod_cgroup {
                cgroup.remove()?;
            }
            sys::remove_tree(&dir)
        })
        .await?;
        sandbox.state().removed = true;
        self.inner.sandboxes().remove(&sandbox.uid);
        Ok(())
    }

    pub(super) async fn probe_network(
        &self,
        sandbox_id: &SandboxId,
        check: &NetworkCheck,
        timeout: Duration,
    ) -> Result<bool, RuntimeError> {
        let sandbox = self.inner.sandbox(sandbox_id)?;
        let netns = if self.inner.isolated() {
            Some(sandbox.holder_netns().ok_or_else(|| {
                RuntimeError::Other(format!("sandbox {} has no network namespace", sandbox.uid))
            })?)
        } else {
            None
        };
        let socket = sys::tcp_socket_in(netns).await?;
        let port = match check {
            NetworkCheck::Tcp { port } | NetworkCheck::Http { port, .. } => *port,
        };
        let probe = async {
            let stream = socket.connect(loopback(port)).await?;
            match check {
                NetworkCheck::Tcp { .. } => Ok(true),
                NetworkCheck::Http { path, .. } => {
                    crate::http_ok(stream, &format!("127.0.0.1:{port}"), path).await
                }
            }
        };
        Ok(matches!(
            tokio::time::timeout(timeout, probe).await,
            Ok(Ok(true))
        ))
    }
}
