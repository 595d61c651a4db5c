//! The Pod's phase, conditions and container statuses, as kubelet
//! reports them.

use super::*;

/// The phase from the containers alone, as kubelet computes it.
pub(super) fn phase_of(policy: Policy, init: &[Ctr], app: &[Ctr]) -> &'static str {
    if init
        .iter()
        .any(|c| matches!(&c.run, Run::Exited(t) if t.exit_code != 0))
    {
        return "Failed";
    }
    if !init.iter().all(Ctr::succeeded) || app.iter().any(|c| !c.has_run) {
        return "Pending";
    }
    let exited: Vec<&Terminated> = app
        .iter()
        .filter_map(|c| match &c.run {
            Run::Exited(t) => Some(t),
            _ => None,
        })
        .collect();
    if app.is_empty() || exited.len() < app.len() || policy == Policy::Always {
        return "Running";
    }
    if exited.iter().all(|t| t.exit_code == 0) {
        "Succeeded"
    } else {
        "Failed"
    }
}

impl PodWorker {
    pub(super) fn phase(&self) -> &'static str {
        if let Some(f) = &self.frozen {
            return if f.phase == "Succeeded" {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        if let Some((phase, ..)) = &self.terminal {
            return phase;
        }
        if self.stopping.is_some() {
            return self.phase_at_stop;
        }
        phase_of(self.policy, &self.init, &self.app)
    }

    /// Notes a terminal phase, readiness and the conditions' transitions.
    pub(super) fn refresh(&mut self, now: u64) {
        if self.terminal.is_none() && self.stopping.is_none() {
            let phase = phase_of(self.policy, &self.init, &self.app);
            if phase == "Succeeded" || phase == "Failed" {
                self.terminal = Some((phase, String::new(), String::new()));
            }
        }
        for c in self.init.iter_mut().chain(self.app.iter_mut()) {
            let has_readiness = c.spec.readiness_probe.is_some();
            c.ready = matches!(c.run, Run::Running { .. })
                && c.started
                && (!has_readiness || c.readiness_ok);
        }
        let pending_init: Vec<&str> = self
            .init
            .iter()
            .filter(|c| !c.succeeded())
            .map(|c| c.spec.name.as_str())
            .collect();
        let unready: Vec<&str> = self
            .app
            .iter()
            .filter(|c| !c.ready)
            .map(|c| c.spec.name.as_str())
            .collect();
        let completed = matches!(self.terminal, Some(("Succeeded", ..)));
        let list = |names: &[&str]| format!("[{}]", names.join(" "));
        let initialized = if pending_init.is_empty() {
            (true, "", String::new())
        } else {
            (
                false,
                "ContainersNotInitialized",
                format!("containers with incomplete status: {}", list(&pending_init)),
            )
        };
        let ready = if unready.is_empty() {
            (true, "", String::new())
        } else if completed {
            (false, "PodCompleted", String::new())
        } else {
            (
                false,
                "ContainersNotReady",
                format!("containers with unready status: {}", list(&unready)),
            )
        };
        let wanted = [
            ("Initialized", initialized.clone()),
            ("Ready", ready.clone()),
            ("ContainersReady", ready),
            ("PodScheduled", (true, "", String::new())),
        ];
        let old = std::mem::take(&mut self.conditions);
        self.conditions = wanted
            .into_iter()
            .map(|(type_, (ok, reason, message))| {
                let status = if ok { "True" } else { "False" };
                let previous = old.iter().find(|c| c.type_ == type_ && c.status == status);
                Condition {
                    type_: type_.into(),
                    status: status.into(),
                    last_transition_time: previous
                        .and_then(|c| c.last_transition_time.clone())
                        .or_else(|| Some(rfc3339(now))),
                    reason: reason.into(),
                    message,
                }
            })
            .collect();
    }

    pub(super) fn container_status(&self, c: &Ctr, default_waiting: &str) -> ContainerStatus {
        let waiting = |reason: &str, message: String| ApiContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: reason.into(),
                message,
            }),
            ..Default::default()
        };
        let state = match &c.run {
            Run::Waiting | Run::Starting if c.last.is_some() && !self.halted() => {
                let message = format!(
                    "back-off {} restarting failed container={} pod={}",
                    go_duration(c.backoff_ms),
                    c.spec.name,
                    self.pod_label()
                );
                waiting("CrashLoopBackOff", message)
            }
            Run::Waiting | Run::Starting => waiting(default_waiting, String::new()),
            Run::Running { started_at_ms, .. } | Run::Killing { started_at_ms, .. } => {
                ApiContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(rfc3339(*started_at_ms)),
                    }),
                    ..Default::default()
                }
            }
            Run::Exited(t) => ApiContainerState {
                terminated: Some(t.to_api()),
                ..Default::default()
            },
        };
        let running = matches!(c.run, Run::Running { .. } | Run::Killing { .. });
        ContainerStatus {
            name: c.spec.name.clone(),
            state,
            last_state: c
                .last
                .as_ref()
                .map(|t| ApiContainerState {
                    terminated: Some(t.to_api()),
                    ..Default::default()
                })
                .unwrap_or_default(),
            ready: c.ready,
            restart_count: i32::try_from(c.restart_count).unwrap_or(i32::MAX),
            image: c.spec.image.clone(),
            started: Some(running && c.started),
        }
    }

    /// The Pod's status as of the last step.
    pub fn status(&self) -> PodStatus {
        if let Some(f) = &self.frozen {
            return f.clone();
        }
        let init_done = self.init.iter().all(Ctr::succeeded);
        let app_waiting = if init_done {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let (reason, message) = match &self.terminal {
            Some((_, reason, message)) => (reason.clone(), message.clone()),
            None => (String::new(), String::new()),
        };
        PodStatus {
            phase: self.phase().into(),
            conditions: self.conditions.clone(),
            reason,
            message,
            host_ip: String::new(),
            pod_ip: String::new(),
            start_time: self.start_time.clone(),
            init_container_statuses: self
                .init
                .iter()
                .map(|c| self.container_status(c, "PodInitializing"))
                .collect(),
            container_statuses: self
                .app
                .iter()
                .map(|c| self.container_status(c, app_waiting))
                .collect(),
        }
    }
}
