//! Probes: their counters and thresholds, and when each is due.

use super::*;

#[derive(Clone, Debug)]
pub(super) struct ProbeState {
    pub(super) kind: ProbeKind,
    pub(super) probe: Probe,
    pub(super) next_at_ms: u64,
    pub(super) in_flight: bool,
    pub(super) successes: u32,
    pub(super) failures: u32,
}

impl ProbeState {
    pub(super) fn period_ms(&self) -> u64 {
        seconds_ms(self.probe.period_seconds.unwrap_or(10)).max(1)
    }
    pub(super) fn success_threshold(&self) -> u32 {
        self.probe.success_threshold.unwrap_or(1).max(1) as u32
    }
    pub(super) fn failure_threshold(&self) -> u32 {
        self.probe.failure_threshold.unwrap_or(3).max(1) as u32
    }
}

impl PodWorker {
    pub(super) fn probe(
        &mut self,
        now: u64,
        sandbox: &SandboxId,
        actions: &mut Vec<RuntimeAction>,
    ) {
        let mut unresolved = Vec::new();
        for (target, c) in self
            .init
            .iter_mut()
            .enumerate()
            .map(|(index, c)| (ContainerRef { init: true, index }, c))
            .chain(
                self.app
                    .iter_mut()
                    .enumerate()
                    .map(|(index, c)| (ContainerRef { init: false, index }, c)),
            )
        {
            let Run::Running { id, .. } = &c.run else {
                continue;
            };
            let started = c.started;
            for p in &mut c.probes {
                let gated = if p.kind == ProbeKind::Startup {
                    started
                } else {
                    !started
                };
                if gated || p.in_flight || now < p.next_at_ms {
                    continue;
                }
                p.next_at_ms = now + p.period_ms();
                match probe_check(&c.spec, &p.probe) {
                    Ok(check) => {
                        p.in_flight = true;
                        let timeout_ms = seconds_ms(p.probe.timeout_seconds.unwrap_or(1)).max(1);
                        actions.push(RuntimeAction::Probe {
                            id: id.clone(),
                            sandbox: sandbox.clone(),
                            kind: p.kind,
                            check,
                            timeout_ms,
                        });
                    }
                    Err(detail) => unresolved.push((target, p.kind, detail)),
                }
            }
        }
        for (target, kind, detail) in unresolved {
            self.on_probe(now, target, kind, false, &detail);
        }
    }
}
