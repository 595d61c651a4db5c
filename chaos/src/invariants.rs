//! Checkers for the Pod workloads: a StatefulSet ordinal never runs twice
//! at once, a Deployment's ready replicas come back after the faults heal,
//! and a Job's completions are counted exactly once. Pure: records in,
//! verdicts out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::report::{FaultWindow, ReplicaSample};

/// Silence, in a run that stamps every 100 ms, long enough to say its
/// instance was not running: frozen with its machine (a pause) or stalled.
pub const FROZEN_MIN_NS: u128 = 2_000_000_000;
/// How long a thawed instance may go on trying after its first refused
/// stamp before its peer's fence stops it: the peer notices its lease is
/// gone at its first tick after the thaw, then gives the Pod its grace
/// period (1 s in the workload) before SIGKILL.
pub const REFUSALS_WITHIN_NS: u128 = 5_000_000_000;

/// One run of a StatefulSet ordinal, from the stamps its Pod appended to a
/// file of its own while it ran (host clock, ns since the Unix epoch).
/// Every stamp went through the ordinal's fence: under a lock, a Pod
/// stamps only if its fencing token is at least the largest any instance
/// of the ordinal has shown, and otherwise records the stamp as refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrdinalRun {
    pub ordinal: String,
    /// The run's file: `<ordinal>.<start ns>`.
    pub instance: String,
    /// How many stamps the fence accepted, the first and the last; a run
    /// refused from its start is placed at its first refused stamp.
    pub accepted: usize,
    pub first_ns: u128,
    pub last_ns: u128,
    /// Stamps the fence refused, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusals>,
}

/// The stamps a run's fence refused: an older instance writing after a
/// newer one had written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusals {
    pub count: usize,
    pub first_ns: u128,
    pub last_ns: u128,
    /// Time between the run's previous stamp (or its start) and its first
    /// refused one.
    pub silent_before_ns: u128,
    /// The fence accepted a stamp of this run after refusing one: the
    /// tokens went backwards.
    pub accepted_after: bool,
}

/// The runs in record files named `<ordinal>.<start ns>`, each holding one
/// stamp per line, `<ns>` when the fence accepted it and `<ns> refused`
/// when not. A file with no whole line yet is no run; a torn last line (the
/// Pod killed mid-write) is ignored.
pub fn ordinal_runs<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<OrdinalRun> {
    let mut runs = Vec::new();
    for (file, text) in files {
        let Some((ordinal, start)) = file.rsplit_once('.') else { continue };
        let Ok(started_ns) = start.parse::<u128>() else { continue };
        // Only whole lines: a torn one could parse as a smaller number.
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        let mut accepted: Option<(u128, u128)> = None;
        let mut accepted_count = 0;
        let mut refused: Option<Refusals> = None;
        let mut previous_ns = started_ns;
        for line in whole.lines() {
            let mut words = line.split_whitespace();
            let Some(Ok(ns)) = words.next().map(str::parse::<u128>) else { continue };
            match words.next() {
                None => {
                    accepted_count += 1;
                    accepted = Some(accepted.map_or((ns, ns), |(first, _)| (first, ns)));
                    if let Some(r) = &mut refused {
                        r.accepted_after = true;
                    }
                }
                Some("refused") => match &mut refused {
                    Some(r) => {
                        r.count += 1;
                        r.last_ns = ns;
                    }
                    None => {
                        let silent_before_ns = ns.saturating_sub(previous_ns);
                        refused = Some(Refusals { count: 1, first_ns: ns, last_ns: ns, silent_before_ns, accepted_after: false });
                    }
                },
                Some(_) => continue,
            }
            previous_ns = ns;
        }
        let (first_ns, last_ns) = match (accepted, &refused) {
            (Some(span), _) => span,
            (None, Some(r)) => (r.first_ns, r.first_ns),
            (None, None) => continue,
        };
        runs.push(OrdinalRun {
            ordinal: ordinal.to_string(),
            instance: file.to_string(),
            accepted: accepted_count,
            first_ns,
            last_ns,
            refused,
        });
    }
    runs.sort_by(|a, b| (&a.ordinal, a.first_ns, &a.instance).cmp(&(&b.ordinal, b.first_ns, &b.instance)));
    runs
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrdinalCheck {
    pub valid: bool,
    pub ordinals: usize,
    pub runs: usize,
    /// Pairs of runs of one ordinal whose accepted stamps interleave.
    pub overlaps: Vec<(OrdinalRun, OrdinalRun)>,
    /// Runs the fence had to stop that were not thawing: an older instance
    /// still running beside its replacement, or tokens going backwards.
    pub unfenced: Vec<OrdinalRun>,
    /// Runs whose stamps the fence refused after they thawed, and how many
    /// stamps it refused in all.
    pub fenced_runs: usize,
    pub refused_stamps: usize,
    /// The shortest gap between one run's last stamp and the next run's
    /// first, per ordinal: how close the handovers came.
    pub closest_handover_ms: Option<f64>,
}

/// At most one running instance per ordinal, as a fenced resource sees
/// it: the stamps the fence accepted never interleave between runs, and
/// the only instances it refused are ones that had been frozen, refused
/// within a bound after they thawed (their peer's fence then stops them).
/// An instance that ran on, unfrozen, beside its replacement is a
/// violation even though the fence refused its writes.
///
/// A run is known from its first to its last accepted stamp; it may have
/// gone on for up to one stamp interval after the last, which this cannot
/// see, so the interval bounds what an overlap shorter than it can hide.
pub fn check_ordinals(runs: &[OrdinalRun]) -> OrdinalCheck {
    let mut by_ordinal: BTreeMap<&str, Vec<&OrdinalRun>> = BTreeMap::new();
    for r in runs {
        by_ordinal.entry(&r.ordinal).or_default().push(r);
    }
    let mut overlaps = Vec::new();
    let mut closest: Option<u128> = None;
    for list in by_ordinal.values_mut() {
        list.sort_by_key(|r| (r.first_ns, r.last_ns));
        // The run that has reached furthest so far: any later run starting
        // before its end overlaps it.
        let mut furthest: Option<&OrdinalRun> = None;
        // A run refused from its start never held the ordinal.
        for r in list.iter().filter(|r| r.accepted > 0) {
            if let Some(f) = furthest {
                if r.first_ns <= f.last_ns {
                    overlaps.push((f.clone(), (*r).clone()));
                } else {
                    let gap = r.first_ns - f.last_ns;
                    closest = Some(closest.map_or(gap, |c| c.min(gap)));
                }
            }
            if furthest.is_none_or(|f| r.last_ns > f.last_ns) {
                furthest = Some(r);
            }
        }
    }
    let fenced: Vec<&OrdinalRun> = runs.iter().filter(|r| r.refused.is_some()).collect();
    let unfenced: Vec<OrdinalRun> = fenced
        .iter()
        .filter(|r| {
            let f = r.refused.as_ref().expect("filtered");
            f.accepted_after || f.silent_before_ns < FROZEN_MIN_NS || f.last_ns - f.first_ns > REFUSALS_WITHIN_NS
        })
        .map(|r| (*r).clone())
        .collect();
    OrdinalCheck {
        valid: overlaps.is_empty() && unfenced.is_empty(),
        ordinals: by_ordinal.len(),
        runs: runs.len(),
        overlaps,
        unfenced,
        fenced_runs: fenced.len(),
        refused_stamps: fenced.iter().map(|r| r.refused.as_ref().map_or(0, |f| f.count)).sum(),
        closest_handover_ms: closest.map(|ns| ns as f64 / 1e6),
    }
}

/// How a workload's ready replicas came back after one heal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// When the faults of this window ended (ns since the run started).
    pub healed_ns: u64,
    /// Time from the heal to the first sample with every replica ready;
    /// `None` if that never happened before the next fault or the end.
    pub converged_after_ms: Option<f64>,
    /// The next fault began before the workload converged.
    pub interrupted: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvergenceCheck {
    pub valid: bool,
    pub workload: String,
    pub bound_ms: u64,
    pub recoveries: Vec<Recovery>,
    pub slowest_ms: Option<f64>,
    /// Why the check failed, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The windows during which at least one fault was in force, merged where
/// they overlap or touch: heals are their ends.
pub fn fault_spans(faults: &[FaultWindow]) -> Vec<(u64, u64)> {
    let mut windows: Vec<(u64, u64)> = faults.iter().map(|f| (f.start_ns, f.end_ns.max(f.start_ns))).collect();
    windows.sort();
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for (start, end) in windows {
        match spans.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => spans.push((start, end)),
        }
    }
    spans
}

/// Ready replicas of `workload` return to the desired count after every
/// heal; after the last heal they must do so within `bound_ms`, and that is
/// what makes the check valid (earlier heals may be cut short by the next
/// fault, and their times are recorded for people).
pub fn check_convergence(workload: &str, samples: &[ReplicaSample], faults: &[FaultWindow], bound_ms: u64) -> ConvergenceCheck {
    let mut samples: Vec<&ReplicaSample> = samples.iter().filter(|s| s.workload == workload).collect();
    samples.sort_by_key(|s| s.time_ns);
    let spans = fault_spans(faults);
    let mut recoveries = Vec::new();
    for (i, (_, healed_ns)) in spans.iter().enumerate() {
        let next_fault_ns = spans.get(i + 1).map_or(u64::MAX, |s| s.0);
        let converged = samples
            .iter()
            .find(|s| s.time_ns >= *healed_ns && s.time_ns < next_fault_ns && s.desired > 0 && s.ready >= s.desired);
        let converged_after_ms = converged.map(|s| (s.time_ns - healed_ns) as f64 / 1e6);
        recoveries.push(Recovery {
            healed_ns: *healed_ns,
            converged_after_ms,
            interrupted: converged.is_none() && next_fault_ns != u64::MAX,
        });
    }
    let slowest_ms = recoveries.iter().filter_map(|r| r.converged_after_ms).reduce(f64::max);
    let last_heal_ns = spans.last().map_or(0, |s| s.1);
    let error = match recoveries.last() {
        _ if samples.is_empty() => Some("no samples of ready replicas".to_string()),
        Some(Recovery { converged_after_ms: Some(ms), .. }) if *ms > bound_ms as f64 => {
            Some(format!("ready again {ms:.0} ms after the last heal, over the bound of {bound_ms} ms"))
        }
        Some(Recovery { converged_after_ms: None, .. }) => Some(format!("not all replicas ready within {bound_ms} ms of the last heal")),
        None if !samples.iter().any(|s| s.time_ns >= last_heal_ns && s.desired > 0 && s.ready >= s.desired) => {
            Some("never had every replica ready".to_string())
        }
        _ => None,
    };
    ConvergenceCheck { valid: error.is_none(), workload: workload.to_string(), bound_ms, recoveries, slowest_ms, error }
}

/// What a Job ended with, as the chaos runner read it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobOutcome {
    pub name: String,
    pub completions: u64,
    /// The Job's own count, `status.succeeded`.
    pub status_succeeded: u64,
    /// Its Pods in phase Succeeded.
    pub succeeded_pods: u64,
    /// Runs its Pods recorded (a Pod whose node was lost may have run
    /// once more elsewhere: at-least-once execution is expected).
    pub recorded_runs: u64,
    pub complete: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobsCheck {
    pub valid: bool,
    pub jobs: usize,
    pub completed: usize,
    /// Jobs whose count disagrees with their Pods or their completions.
    pub miscounted: Vec<JobOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Each completion counted exactly once: a complete Job's
/// `status.succeeded` equals its completions and its Succeeded Pods, and no
/// Job, complete or not, ever counts more than it has Succeeded Pods or
/// more than its completions. Every Job must have completed.
pub fn check_jobs(outcomes: &[JobOutcome]) -> JobsCheck {
    let miscounted: Vec<JobOutcome> = outcomes
        .iter()
        .filter(|j| {
            let over = j.status_succeeded > j.completions || j.status_succeeded > j.succeeded_pods;
            let wrong_at_end = j.complete && (j.status_succeeded != j.completions || j.succeeded_pods != j.completions);
            over || wrong_at_end
        })
        .cloned()
        .collect();
    let completed = outcomes.iter().filter(|j| j.complete).count();
    let error = if !miscounted.is_empty() {
        Some(format!("{} Job(s) miscounted their completions", miscounted.len()))
    } else if outcomes.is_empty() {
        Some("no Job ran".to_string())
    } else if completed < outcomes.len() {
        Some(format!("{} Job(s) did not complete", outcomes.len() - completed))
    } else {
        None
    };
    JobsCheck { valid: error.is_none(), jobs: outcomes.len(), completed, miscounted, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ordinal: &str, first_ns: u128, last_ns: u128) -> OrdinalRun {
        OrdinalRun { ordinal: ordinal.into(), instance: format!("{ordinal}.{first_ns}"), accepted: 2, first_ns, last_ns, refused: None }
    }

    #[test]
    fn runs_are_read_from_record_files_and_torn_lines_ignored() {
        let files = [("rec-0.300", "300\n350\n35"), ("rec-0.100", "100\n150\n200\n"), ("rec-1.5", "5"), ("junk", "1\n")];
        let runs = ordinal_runs(files);
        assert_eq!(runs, vec![
            OrdinalRun { ordinal: "rec-0".into(), instance: "rec-0.100".into(), accepted: 3, first_ns: 100, last_ns: 200, refused: None },
            OrdinalRun { ordinal: "rec-0".into(), instance: "rec-0.300".into(), accepted: 2, first_ns: 300, last_ns: 350, refused: None },
        ]);
    }

    #[test]
    fn handovers_in_turn_are_valid_and_any_overlap_is_caught() {
        let good = [run("a", 0, 100), run("a", 150, 300), run("b", 0, 1000), run("a", 400, 500)];
        let check = check_ordinals(&good);
        assert!(check.valid, "{check:?}");
        assert_eq!((check.ordinals, check.runs), (2, 4));
        assert_eq!(check.closest_handover_ms, Some(50.0 / 1e6));

        // A long run with two later ones starting inside it, the second
        // after the first has ended.
        let bad = [run("a", 0, 1000), run("a", 900, 1200), run("a", 500, 600)];
        let check = check_ordinals(&bad);
        assert!(!check.valid);
        assert_eq!(check.overlaps.len(), 2, "{check:?}");
        assert_eq!(check.overlaps[0].1.first_ns, 500);
        // Touching stamps overlap: both were running at that instant.
        assert!(!check_ordinals(&[run("a", 0, 10), run("a", 10, 20)]).valid);
    }

    const S: u128 = 1_000_000_000;

    /// Stamps every 100 ms from `from` to `to` (seconds), accepted or not.
    fn stamps(from: u128, to: u128, suffix: &str) -> String {
        (from * 10..=to * 10).map(|t| format!("{}{suffix}\n", t * S / 10)).collect()
    }

    #[test]
    fn a_thawed_instance_refused_by_the_fence_is_no_overlap() {
        // The old instance stamps until it freezes at 10 s; its replacement
        // runs from 20 s; the old one thaws at 27 s, is refused, and is
        // stopped a second later.
        let old = stamps(0, 10, "") + &stamps(27, 28, " refused");
        let new = stamps(20, 40, "");
        let files = [("db-0.0", old.as_str()), ("db-0.19000000000", new.as_str())];
        let runs = ordinal_runs(files);
        let refused = runs[0].refused.clone().expect("refusals read");
        assert_eq!((refused.count, refused.silent_before_ns, refused.accepted_after), (11, 17 * S, false));
        assert_eq!((runs[0].first_ns, runs[0].last_ns), (0, 10 * S));
        let check = check_ordinals(&runs);
        assert!(check.valid, "{check:?}");
        assert_eq!((check.fenced_runs, check.refused_stamps), (1, 11));

        // Without the fence's refusal, the same stamps overlap.
        let unfenced_old = stamps(0, 10, "") + &stamps(27, 28, "");
        let files = [("db-0.0", unfenced_old.as_str()), ("db-0.19000000000", new.as_str())];
        assert_eq!(check_ordinals(&ordinal_runs(files)).overlaps.len(), 1);
    }

    #[test]
    fn an_instance_running_on_beside_its_replacement_is_caught_though_fenced() {
        // Never frozen: it stamps without a pause and is refused from the
        // moment the replacement first writes.
        let old = stamps(0, 20, "") + &stamps(21, 30, " refused");
        let new = stamps(21, 40, "");
        let check = check_ordinals(&ordinal_runs([("db-0.0", old.as_str()), ("db-0.20500000000", new.as_str())]));
        assert!(!check.valid);
        assert!(check.overlaps.is_empty());
        assert_eq!(check.unfenced.len(), 1);

        // Thawed but never stopped: refused for longer than a fence takes.
        let old = stamps(0, 10, "") + &stamps(27, 40, " refused");
        let new = stamps(20, 40, "");
        let check = check_ordinals(&ordinal_runs([("db-0.0", old.as_str()), ("db-0.19000000000", new.as_str())]));
        assert_eq!(check.unfenced.len(), 1, "{check:?}");

        // Tokens going backwards: accepted again after a refusal.
        let old = stamps(0, 10, "") + &stamps(27, 27, " refused") + &stamps(28, 29, "");
        let check = check_ordinals(&ordinal_runs([("db-0.0", old.as_str())]));
        assert!(check.unfenced[0].refused.as_ref().unwrap().accepted_after);
        assert!(!check.valid);
    }

    fn sample(time_ns: u64, ready: u64) -> ReplicaSample {
        ReplicaSample { time_ns, workload: "deployment".into(), ready, desired: 5 }
    }

    fn fault(start_ns: u64, end_ns: u64) -> FaultWindow {
        FaultWindow { fault: "kill".into(), peers: vec![1], start_ns, end_ns }
    }

    #[test]
    fn convergence_is_timed_from_each_heal_and_judged_on_the_last() {
        let ms = 1_000_000;
        let samples = [sample(0, 5), sample(1_500 * ms, 3), sample(2_500 * ms, 4), sample(3_000 * ms, 5), sample(6_000 * ms, 2), sample(9_000 * ms, 5)];
        let faults = [fault(1_000 * ms, 2_000 * ms), fault(1_800 * ms, 2_200 * ms), fault(5_000 * ms, 6_500 * ms)];
        let check = check_convergence("deployment", &samples, &faults, 5_000);
        assert!(check.valid, "{check:?}");
        assert_eq!(check.recoveries.len(), 2, "overlapping windows are one span");
        assert_eq!(check.recoveries[0].converged_after_ms, Some(800.0));
        assert_eq!(check.recoveries[1].converged_after_ms, Some(2_500.0));
        assert_eq!(check.slowest_ms, Some(2_500.0));

        let check = check_convergence("deployment", &samples, &faults, 2_000);
        assert!(!check.valid);
        assert!(check.error.unwrap().contains("over the bound"));

        let stuck = [sample(0, 5), sample(7_000 * ms, 4)];
        let check = check_convergence("deployment", &stuck, &faults, 60_000);
        assert!(!check.valid);
        assert!(check.recoveries[0].interrupted);
        assert!(check.error.unwrap().contains("not all replicas ready"));

        assert!(!check_convergence("statefulset", &samples, &faults, 60_000).valid, "no samples of that workload");
        assert!(check_convergence("deployment", &samples, &[], 60_000).valid, "no faults: it only has to be ready");
    }

    fn job(status_succeeded: u64, succeeded_pods: u64, complete: bool) -> JobOutcome {
        JobOutcome { name: "j".into(), completions: 4, status_succeeded, succeeded_pods, recorded_runs: succeeded_pods + 1, complete }
    }

    #[test]
    fn a_job_counted_twice_or_left_unfinished_is_caught() {
        assert!(check_jobs(&[job(4, 4, true), job(4, 4, true)]).valid);
        let twice = check_jobs(&[job(4, 4, true), job(4, 3, true)]);
        assert!(!twice.valid);
        assert_eq!(twice.miscounted.len(), 1);
        assert!(!check_jobs(&[job(5, 5, true)]).valid, "more than its completions");
        assert!(!check_jobs(&[job(3, 2, false)]).valid, "more than its Pods, even unfinished");
        let unfinished = check_jobs(&[job(4, 4, true), job(2, 2, false)]);
        assert!(!unfinished.valid);
        assert!(unfinished.miscounted.is_empty());
        assert!(!check_jobs(&[]).valid);
    }
}
