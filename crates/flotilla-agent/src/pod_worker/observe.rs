//! What the runtime answered: sandboxes made or failed, containers started,
//! exited or gone, probe results; each moves the Pod's state on.

use super::*;

impl PodWorker {
    pub(super) fn observe(&mut self, now: u64, o: Observation) {
        match o {
            Observation::SandboxCreated(id) => {
                if self.sandbox == Sandbox::Creating {
                    self.sandbox = Sandbox::Ready(id);
                    self.sandbox_failures = 0;
                }
            }
            Observation::SandboxFailed(message) => {
                if self.sandbox == Sandbox::Creating {
                    self.sandbox = Sandbox::Absent;
                    self.sandbox_failed(
                        now,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {message}"),
                    );
                }
            }
            Observation::ContainerStarted {
                target,
                id,
                started_at_ms,
            } => {
                let Some(c) = self.ctr(target) else { return };
                if c.run != Run::Starting {
                    return;
                }
                if c.has_run {
                    c.restart_count += 1;
                }
                c.has_run = true;
                c.run = Run::Running {
                    id: id.clone(),
                    started_at_ms,
                };
                c.id = Some(id);
                c.reset_probes(started_at_ms);
                let (name, image) = (c.spec.name.clone(), c.spec.image.clone());
                self.event(
                    "Pulled",
                    format!("Container image {image:?} already present on machine"),
                    false,
                );
                self.event("Created", format!("Created container {name}"), false);
                self.event("Started", format!("Started container {name}"), false);
            }
            Observation::ContainerStartFailed { target, message } => {
                let Some(c) = self.ctr(target) else { return };
                if c.run != Run::Starting {
                    return;
                }
                if c.has_run {
                    c.restart_count += 1;
                }
                c.has_run = true;
                self.event("Failed", format!("Error: {message}"), true);
                let t = Terminated {
                    exit_code: START_ERROR_EXIT_CODE,
                    signal: None,
                    reason: "StartError".into(),
                    message,
                    started_at_ms: now,
                    finished_at_ms: now,
                };
                self.on_exit(target, t, true);
            }
            Observation::ContainerState { id, state } => {
                if let (Some(target), ContainerState::Exited(status)) =
                    (self.find_running(&id), state)
                {
                    self.on_exit(target, Terminated::from_exit(&status), true);
                }
            }
            Observation::ContainerGone { id } => {
                if let Some(target) = self.find_running(&id) {
                    let started_at_ms = match self.ctr(target).map(|c| &c.run) {
                        Some(
                            Run::Running { started_at_ms, .. } | Run::Killing { started_at_ms, .. },
                        ) => *started_at_ms,
                        _ => now,
                    };
                    let t = Terminated {
                        exit_code: UNKNOWN_EXIT_CODE,
                        signal: None,
                        reason: "ContainerStatusUnknown".into(),
                        message: "The container could not be located".into(),
                        started_at_ms,
                        finished_at_ms: now,
                    };
                    self.on_exit(target, t, true);
                }
            }
            Observation::ProbeResult {
                id,
                kind,
                success,
                detail,
            } => {
                if let Some(target) = self.find_running(&id) {
                    self.on_probe(now, target, kind, success, &detail);
                }
            }
            Observation::StopFailed { id, message } => {
                let retry = now + self.config.sync_interval_ms.max(1);
                if let Some(target) = self.find_running(&id) {
                    let c = self.ctr(target).expect("found");
                    if let Run::Killing {
                        in_flight,
                        retry_at_ms,
                        ..
                    } = &mut c.run
                    {
                        *in_flight = false;
                        *retry_at_ms = retry;
                    }
                    let name = c.spec.name.clone();
                    self.event(
                        "FailedKillPod",
                        format!("error killing container {name}: {message}"),
                        true,
                    );
                }
            }
            Observation::SandboxRemoved => {
                if matches!(self.sandbox, Sandbox::Removing(_)) {
                    self.sandbox = Sandbox::Removed;
                }
            }
            Observation::SandboxRemoveFailed(message) => {
                if let Sandbox::Removing(id) = &self.sandbox {
                    self.sandbox = Sandbox::Ready(id.clone());
                    self.sandbox_retry_at_ms = now + self.config.sync_interval_ms.max(1);
                    self.event(
                        "FailedKillPod",
                        format!("error removing pod sandbox: {message}"),
                        true,
                    );
                }
            }
        }
    }

    pub(super) fn backoff_for(&self, failures: u32) -> u64 {
        let doublings = failures.saturating_sub(1).min(63);
        let base = self.config.backoff_base_ms;
        base.saturating_mul(1u64 << doublings)
            .min(self.config.backoff_max_ms)
    }

    pub(super) fn sandbox_failed(&mut self, now: u64, reason: &str, message: String) {
        self.sandbox_failures += 1;
        self.sandbox_retry_at_ms = now + self.backoff_for(self.sandbox_failures);
        self.event(reason, message, true);
    }

    /// A container's run ended: restart it after back-off if its policy
    /// says so and the Pod still runs, else it stays exited.
    pub(super) fn on_exit(&mut self, target: ContainerRef, t: Terminated, announce: bool) {
        let policy = self.policy;
        let halted = self.halted();
        let reset_after = self.config.backoff_reset_after_ms;
        let label = self.pod_label();
        let Some(c) = self.ctr(target) else { return };
        c.ready = false;
        c.started = false;
        c.readiness_ok = false;
        c.probes.clear();
        let restart = !halted
            && match (target.init, policy) {
                (_, Policy::Never) => false,
                (true, _) | (false, Policy::OnFailure) => t.exit_code != 0,
                (false, Policy::Always) => true,
            };
        if !restart {
            c.run = Run::Exited(t);
            return;
        }
        if t.finished_at_ms.saturating_sub(t.started_at_ms) >= reset_after {
            c.consecutive_restarts = 0;
        }
        c.consecutive_restarts += 1;
        let failures = c.consecutive_restarts;
        let finished = t.finished_at_ms;
        let name = c.spec.name.clone();
        c.last = Some(t);
        c.run = Run::Waiting;
        let backoff = self.backoff_for(failures);
        let c = self.ctr(target).expect("present");
        c.backoff_ms = backoff;
        c.backoff_until_ms = finished.saturating_add(backoff);
        if announce {
            self.event(
                "BackOff",
                format!("Back-off restarting failed container {name} in pod {label}"),
                true,
            );
        }
    }

    pub(super) fn on_probe(
        &mut self,
        now: u64,
        target: ContainerRef,
        kind: ProbeKind,
        success: bool,
        detail: &str,
    ) {
        let Some(c) = self.ctr(target) else { return };
        let Some(p) = c.probes.iter_mut().find(|p| p.kind == kind) else {
            return;
        };
        p.in_flight = false;
        if success {
            p.successes += 1;
            p.failures = 0;
        } else {
            p.failures += 1;
            p.successes = 0;
        }
        let (successes, failures) = (p.successes, p.failures);
        let (success_threshold, failure_threshold) = (p.success_threshold(), p.failure_threshold());
        let name = c.spec.name.clone();
        let mut kill = false;
        match kind {
            ProbeKind::Startup if success => {
                c.started = true;
                for p in c.probes.iter_mut().filter(|p| p.kind != ProbeKind::Startup) {
                    p.next_at_ms = p.next_at_ms.max(now);
                }
            }
            ProbeKind::Startup | ProbeKind::Liveness => kill = failures >= failure_threshold,
            ProbeKind::Readiness => {
                if successes >= success_threshold {
                    c.readiness_ok = true;
                } else if failures >= failure_threshold {
                    c.readiness_ok = false;
                }
            }
        }
        if !success {
            self.event(
                "Unhealthy",
                format!("{} probe failed: {detail}", kind.title()),
                true,
            );
        }
        if kill {
            let what = kind.title().to_lowercase();
            self.event(
                "Killing",
                format!("Container {name} failed {what} probe, will be restarted"),
                false,
            );
            self.kill(target);
        }
    }
}
