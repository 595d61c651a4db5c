//! Table-driven: each row is a script of inputs at millisecond offsets
//! from a fixed origin, with the steps each must produce, and the state
//! expected after it.

use super::*;

const FENCE_AFTER: u64 = 1_000;

#[derive(Clone, Copy, Debug)]
enum In {
    /// The heartbeat sent at `.0` answered at `.1`.
    Answer(u64, u64),
    /// The catch-up for the answer sent at `.0` ended with `.1` at `.2`.
    CaughtUp(u64, bool, u64),
    Tick(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Out {
    Fence,
    CatchUp(u64),
    Unfence,
}

use In::*;
use Out::{CatchUp as C, Fence as F, Unfence as U};

/// (input, steps it yields, fenced afterwards)
type Row = (In, &'static [Out], bool);

fn run(name: &str, script: &[Row]) {
    let origin = Instant::now();
    let at = |ms: u64| origin + Duration::from_millis(ms);
    let mut fence = Fence::new(Duration::from_millis(FENCE_AFTER));
    assert!(fence.is_fenced(), "{name}: a node starts fenced");
    for (i, (input, want, fenced)) in script.iter().enumerate() {
        let steps: Vec<Step> = match *input {
            Answer(sent, now) => fence.answered(at(sent), at(now)),
            CaughtUp(sent, ok, now) => fence.caught_up(at(sent), ok, at(now)).into_iter().collect(),
            Tick(now) => fence.tick(at(now)).into_iter().collect(),
        };
        let got: Vec<Out> = steps
            .iter()
            .map(|s| match s {
                Step::Fence(_) => F,
                Step::CatchUp { sent } => C(sent.duration_since(origin).as_millis() as u64),
                Step::Unfence => U,
            })
            .collect();
        assert_eq!(got, *want, "{name}, step {i} ({input:?})");
        assert_eq!(fence.is_fenced(), *fenced, "{name}, after step {i} ({input:?})");
    }
}

#[test]
fn the_fence_follows_answers_and_deadlines() {
    let cases: &[(&str, &[Row])] = &[
        ("no answer yet: ticks change nothing", &[(Tick(0), &[], true), (Tick(5_000), &[], true)]),
        (
            "first answer, caught up in time",
            &[(Answer(0, 10), &[C(0)], true), (CaughtUp(0, true, 50), &[U], false), (Tick(999), &[], false)],
        ),
        ("lease runs out", &[(Answer(0, 10), &[C(0)], true), (CaughtUp(0, true, 50), &[U], false), (Tick(1_000), &[F], true)]),
        ("caught up only after the lease ran out", &[(Answer(0, 10), &[C(0)], true), (CaughtUp(0, true, 1_000), &[], true)]),
        (
            "caught up after a later answer, but past the first answer's lease",
            &[
                (Answer(0, 10), &[C(0)], true),
                (Answer(500, 510), &[], true),
                (CaughtUp(0, true, 1_200), &[], true),
                (Answer(1_100, 1_210), &[C(1_100)], true),
                (CaughtUp(1_100, true, 1_300), &[U], false),
            ],
        ),
        (
            "catch-up fails (node still lost), the next answer tries again",
            &[
                (Answer(0, 10), &[C(0)], true),
                (Answer(200, 210), &[], true),
                (CaughtUp(0, false, 300), &[], true),
                (Answer(400, 410), &[C(400)], true),
                (CaughtUp(400, true, 420), &[U], false),
            ],
        ),
        (
            "answers keep the lease: each extends it",
            &[
                (Answer(0, 10), &[C(0)], true),
                (CaughtUp(0, true, 20), &[U], false),
                (Answer(500, 510), &[], false),
                (Tick(1_200), &[], false),
                (Answer(1_000, 1_300), &[], false),
                (Tick(1_999), &[], false),
                (Tick(2_000), &[F], true),
            ],
        ),
        (
            "an answer out of order does not move the lease back",
            &[
                (Answer(0, 10), &[C(0)], true),
                (CaughtUp(0, true, 20), &[U], false),
                (Answer(600, 620), &[], false),
                (Answer(300, 630), &[], false),
                (Tick(1_599), &[], false),
                (Tick(1_600), &[F], true),
            ],
        ),
        (
            "a late answer after a thaw: fence first, then catch up on its lease",
            &[
                (Answer(0, 10), &[C(0)], true),
                (CaughtUp(0, true, 20), &[U], false),
                // Sent at 900, the machine froze; it thaws at 1,500 with
                // the answer and the deadline both due.
                (Answer(900, 1_500), &[F, C(900)], true),
                (CaughtUp(900, true, 1_600), &[U], false),
                (Tick(1_900), &[F], true),
            ],
        ),
        (
            "an answer too old to give a lease",
            &[(Answer(0, 1_000), &[], true), (Answer(100, 5_000), &[], true), (Tick(6_000), &[], true)],
        ),
        (
            "a late answer to an unfenced node whose lease is gone fences it and gives nothing",
            &[(Answer(0, 10), &[C(0)], true), (CaughtUp(0, true, 20), &[U], false), (Answer(500, 2_000), &[F], true)],
        ),
        (
            "frozen clock: time stands still, nothing fires",
            &[
                (Answer(0, 0), &[C(0)], true),
                (CaughtUp(0, true, 0), &[U], false),
                (Tick(0), &[], false),
                (Tick(0), &[], false),
                (Answer(0, 0), &[], false),
            ],
        ),
        (
            "one catch-up at a time; a stale result is ignored",
            &[
                (Answer(0, 10), &[C(0)], true),
                (Answer(100, 110), &[], true),
                (CaughtUp(100, true, 120), &[], true),
                (CaughtUp(0, true, 130), &[U], false),
                (CaughtUp(0, true, 140), &[], false),
            ],
        ),
        (
            // Leader A answers, leader B takes over and answers too; the
            // catch-up against A still stands for A's answer's lease.
            "a leader change while catching up",
            &[
                (Answer(0, 10), &[C(0)], true),
                (Answer(300, 320), &[], true),
                (CaughtUp(0, true, 400), &[U], false),
                (Tick(1_299), &[], false),
                (Tick(1_300), &[F], true),
            ],
        ),
        (
            "fenced while a catch-up runs: its success cannot unfence past the lease",
            &[
                (Answer(0, 10), &[C(0)], true),
                (CaughtUp(0, true, 20), &[U], false),
                (Answer(900, 950), &[], false),
                (Tick(1_900), &[F], true),
                (Answer(1_850, 1_950), &[C(1_850)], true),
                (Tick(3_000), &[], true),
                (CaughtUp(1_850, true, 3_000), &[], true),
            ],
        ),
    ];
    for (name, script) in cases {
        run(name, script);
    }
}

#[test]
fn containers_start_only_unfenced_and_within_the_lease() {
    let origin = Instant::now();
    let at = |ms: u64| origin + Duration::from_millis(ms);
    let mut fence = Fence::new(Duration::from_millis(FENCE_AFTER));
    assert!(!fence.may_start(at(0)), "fenced at start");
    assert_eq!(fence.deadline(), None);
    fence.answered(at(0), at(10));
    assert!(!fence.may_start(at(20)), "answered but not caught up");
    assert_eq!(fence.caught_up(at(0), true, at(20)), Some(Step::Unfence));
    assert!(fence.may_start(at(999)));
    assert_eq!(fence.deadline(), Some(at(1_000)));
    // Between the lease's end and the tick that fences: no start.
    assert!(!fence.may_start(at(1_000)));
    assert!(may_start(false, None, at(0)), "no lease limit");
    assert!(!may_start(true, None, at(0)));
}
