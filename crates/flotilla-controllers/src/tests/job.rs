use flotilla_api::workloads::JobStatus;
use flotilla_api::{Kind, Object};

use super::active_of;
use crate::common::condition_true;
use crate::sim::*;
use crate::{Action, reconcile};

fn status(sim: &Sim) -> JobStatus {
    sim.job("work").status.clone().expect("status written")
}

fn finish(sim: &mut Sim, name: &str, phase: &str) {
    sim.pods_where(|p| p.metadata.name == name, |p| set_phase(p, phase));
}

/// The Job status an action list would write, if any.
fn written_status(actions: &[Action]) -> Option<JobStatus> {
    actions.iter().find_map(|a| match a {
        Action::Update(Object::Job(j)) => j.status.clone(),
        _ => None,
    })
}

#[test]
fn completions_are_counted_exactly_once() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(job("work", 3, 2, 6));
    let first = sim.round();
    assert_eq!(created(&first, Kind::Pod).len(), 2, "parallelism 2");
    sim.agents(usize::MAX);
    let mut finished = Vec::new();
    for step in 1..=3 {
        let running = active_of(&sim, "work-")[0].metadata.name.clone();
        finish(&mut sim, &running, "Succeeded");
        finished.push(running);
        // The same view reconciled twice, as two leaders would, counts the same.
        let a = reconcile(&sim.view, &sim.limits);
        let b = reconcile(&sim.view, &sim.limits);
        assert_eq!(a, b, "step {step}");
        assert_eq!(
            written_status(&a).expect("status changes").succeeded,
            step,
            "step {step}"
        );
        sim.apply(&a);
        assert_eq!(status(&sim).succeeded, step);
        let active = active_of(&sim, "work-").len() as i32;
        assert!(
            active <= 2 && active <= 3 - step,
            "step {step}: {active} active"
        );
        sim.agents(usize::MAX);
        // Reconciling the result does not count the completion again.
        sim.settle(0);
        assert_eq!(status(&sim).succeeded, step, "step {step} after settling");
    }
    let s = status(&sim);
    assert!(condition_true(&s.conditions, "Complete"));
    assert!(s.completion_time.is_some() && s.start_time.is_some());
    assert_eq!((s.active, s.failed), (0, 0));
    assert_eq!(sim.pods_of("work-").len(), 3, "three pods ran, none more");
    for name in &finished {
        assert!(
            sim.pod(name).is_some(),
            "succeeded pod {name} kept while the job exists"
        );
    }
    assert!(reconcile(&sim.view, &sim.limits).is_empty());
}

#[test]
fn failures_beyond_the_backoff_limit_fail_the_job() {
    for backoff_limit in [0, 1, 3] {
        let mut sim = Sim::new();
        sim.add(node("n1", true));
        sim.add(job("work", 2, 1, backoff_limit));
        sim.settle(usize::MAX);
        for failure in 1..=backoff_limit + 1 {
            let running = active_of(&sim, "work-");
            assert_eq!(
                running.len(),
                1,
                "limit {backoff_limit}, failure {failure}: a pod runs"
            );
            let name = running[0].metadata.name.clone();
            finish(&mut sim, &name, "Failed");
            sim.settle(usize::MAX);
            assert_eq!(status(&sim).failed, failure);
        }
        let s = status(&sim);
        let failed = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Failed")
            .expect("failed condition");
        assert_eq!(
            (failed.status.as_str(), failed.reason.as_str()),
            ("True", "BackoffLimitExceeded"),
            "limit {backoff_limit}"
        );
        assert!(
            active_of(&sim, "work-").is_empty(),
            "no replacement after failing"
        );
        assert_eq!(
            sim.pods_of("work-").len() as i32,
            backoff_limit + 1,
            "failed pods are kept and counted"
        );
        assert!(sim.events.iter().any(|(r, _)| r == "BackoffLimitExceeded"));
        assert!(reconcile(&sim.view, &sim.limits).is_empty());
    }
}

#[test]
fn the_active_deadline_fails_the_job_and_stops_its_pods() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(job("work", 4, 2, 6));
    sim.edit(Kind::Job, "work", |o| {
        if let Object::Job(j) = o {
            j.spec.active_deadline_seconds = Some(60)
        }
    });
    sim.settle(usize::MAX);
    sim.advance_ms(59_000);
    assert!(
        reconcile(&sim.view, &sim.limits).is_empty(),
        "before the deadline nothing happens"
    );
    sim.advance_ms(1_000);
    let actions = sim.round();
    assert_eq!(
        deleted(&actions, Kind::Pod).len(),
        2,
        "active pods are stopped"
    );
    let failed = status(&sim)
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .expect("failed");
    assert_eq!(failed.reason, "DeadlineExceeded");
    sim.settle(usize::MAX);
    assert_eq!(status(&sim).active, 0);
    assert!(sim.view.pods.is_empty());
}

#[test]
fn lower_parallelism_stops_extra_pods() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(job("work", 10, 4, 6));
    sim.settle(usize::MAX);
    assert_eq!(active_of(&sim, "work-").len(), 4);
    sim.edit(Kind::Job, "work", |o| {
        if let Object::Job(j) = o {
            j.spec.parallelism = Some(1)
        }
    });
    sim.settle(usize::MAX);
    assert_eq!(active_of(&sim, "work-").len(), 1);
    assert_eq!(status(&sim).active, 1);
}

#[test]
fn job_pods_carry_the_job_labels() {
    let mut sim = Sim::new();
    sim.add(job("work", 1, 1, 6));
    let actions = reconcile(&sim.view, &sim.limits);
    let pod = actions
        .iter()
        .find_map(|a| match a {
            Action::Create(Object::Pod(p)) => Some(p),
            _ => None,
        })
        .expect("a pod");
    assert!(pod.metadata.name.starts_with("work-") && pod.metadata.name.len() == "work-".len() + 5);
    assert_eq!(
        pod.metadata.labels.get("job-name").map(String::as_str),
        Some("work")
    );
    assert_eq!(
        pod.metadata.labels.get("app").map(String::as_str),
        Some("work")
    );
    assert_eq!(pod.spec.restart_policy, "Never");
    let status = written_status(&actions).expect("status");
    assert_eq!(
        status.start_time.as_deref(),
        Some(flotilla_api::time::format_rfc3339(START_MS).as_str())
    );
    sim.apply(&actions);
    assert_eq!(
        status.active, 0,
        "the status written with the creates counts the pods seen"
    );
    assert_eq!(
        written_status(&reconcile(&sim.view, &sim.limits))
            .expect("updated")
            .active,
        1
    );
}

#[test]
fn container_restarts_count_against_the_backoff_limit_with_on_failure() {
    let mut sim = Sim::new();
    sim.add(node("n1", true));
    sim.add(job("work", 1, 1, 2));
    sim.edit(Kind::Job, "work", |o| {
        if let Object::Job(j) = o {
            j.spec.template.spec.restart_policy = "OnFailure".into()
        }
    });
    sim.settle(usize::MAX);
    for (restarts, failed) in [(2, false), (3, true)] {
        sim.pods_where(
            |_| true,
            |p| {
                let status = p.status.as_mut().expect("running");
                status.container_statuses = vec![flotilla_api::pod::ContainerStatus {
                    name: "main".into(),
                    restart_count: restarts,
                    ..Default::default()
                }];
            },
        );
        sim.settle(usize::MAX);
        assert_eq!(
            condition_true(&status(&sim).conditions, "Failed"),
            failed,
            "{restarts} restarts"
        );
    }
    assert!(active_of(&sim, "work-").is_empty());
}
