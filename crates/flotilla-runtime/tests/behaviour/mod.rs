//! The behaviour of the `PodRuntime` contract, one suite that every
//! runtime runs (`suite!` makes one test of each for a runtime).
//!
//! A runtime comes to the suite as a [`Subject`], which turns what the
//! suite wants a container to do ([`Act`]) into a container of its own:
//! a shell script for the process and docker runtimes, a script in the
//! environment for the fake. What a runtime cannot do it says in its
//! [`Capabilities`](flotilla_runtime::Capabilities), and the tests that
//! need it say they skip and why.

mod exec;
mod lifecycle;
mod logs;
mod network;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use flotilla_runtime::{ContainerSpec, ExecOutput, ExitStatus, PodRuntime};

use crate::common::container_of;

pub use exec::*;
pub use lifecycle::*;
pub use logs::*;
pub use network::*;

/// Longest a test waits for something to change.
const WAIT: Duration = Duration::from_secs(60);

/// Bytes of each attempt's log a runtime under the suite keeps at most:
/// small, so that a test sees the bound at work.
pub const LOG_LIMIT_BYTES: u64 = 4096;

/// What a container of the suite does.
#[derive(Clone, Copy, Debug)]
pub enum Act<'a> {
    /// Prints `out`, then exits with `code`.
    Exit { out: &'a str, code: i32 },
    /// Prints `out`, then runs until a signal ends it; SIGTERM does.
    Run { out: &'a str },
    /// Takes `mib` MiB of memory under a limit of `limit_mib`, then exits
    /// 0, unless the out-of-memory killer ends it first.
    Allocate { mib: u64, limit_mib: u64 },
    /// Serves the files under `dir` over HTTP on `port` until stopped.
    Serve { port: u16, dir: &'a str },
    /// Prints the body of `http://127.0.0.1:<port><path>`, then exits 0.
    Fetch { port: u16, path: &'a str },
    /// Runs a program that does not exist.
    Missing,
    /// Runs `script` with `/bin/sh -c`: only asked of a runtime whose
    /// capabilities say it runs programs.
    Shell(&'a str),
}

/// A runtime under test.
pub trait Subject: Sync {
    type Runtime: PodRuntime;

    fn runtime(&self) -> &Self::Runtime;

    /// A container named `name` that does `act`.
    fn container(&self, name: &str, act: Act<'_>) -> ContainerSpec;

    /// How far the runtime's times may be from the test's clock: the
    /// Docker engine rounds them.
    fn clock_slack_ms(&self) -> u64 {
        0
    }

    /// Where the runtime keeps the files of the Pod `uid` (its volumes),
    /// if it keeps them on this machine.
    fn pod_dir(&self, _uid: &str) -> Option<PathBuf> {
        None
    }

    /// Checks that nothing of the removed sandbox `uid` is left where the
    /// runtime keeps things of its own: processes, cgroups, containers of
    /// the engine.
    fn check_removed(&self, _uid: &str) -> impl Future<Output = ()> {
        async {}
    }

    /// Checks what an exec of a program that does not exist answered: at
    /// least that it failed; a runtime says more of its own.
    fn check_exec_of_a_missing_program(&self, out: &ExecOutput) {
        assert_ne!(out.exit_code, 0, "{out:?}");
    }
}

/// The commands of a runtime that runs programs for what its shell
/// cannot do.
pub struct Commands {
    /// Takes that many MiB of memory, then exits 0.
    pub allocate: fn(u64) -> Vec<String>,
    /// Serves a directory over HTTP on a port.
    pub serve: fn(u16, &str) -> Vec<String>,
    /// Prints the body of a path of `127.0.0.1:<port>`.
    pub fetch: fn(u16, &str) -> Vec<String>,
}

/// A container of a runtime that runs programs from `image`.
pub fn program(image: &str, name: &str, act: Act<'_>, commands: &Commands) -> ContainerSpec {
    let run = |command: Vec<String>| {
        let mut spec = container_of(image, name, &[]);
        spec.command = command;
        spec
    };
    // The output comes in as $0, so that the script needs no quoting.
    let with_out = |script: &str, out: &str| {
        let mut spec = container_of(image, name, &["/bin/sh", "-c", script]);
        spec.args = vec![out.to_owned()];
        spec
    };
    match act {
        Act::Exit { out, code } => with_out(&format!("printf '%s' \"$0\"; exit {code}"), out),
        Act::Run { out } => with_out("printf '%s' \"$0\"; exec sleep 1000", out),
        Act::Allocate { mib, limit_mib } => {
            let mut spec = run((commands.allocate)(mib));
            spec.memory_limit_bytes = Some(limit_mib << 20);
            spec.cpu_limit_millis = Some(500);
            spec
        }
        Act::Serve { port, dir } => run((commands.serve)(port, dir)),
        Act::Fetch { port, path } => run((commands.fetch)(port, path)),
        Act::Missing => container_of(image, name, &["/no/such/program"]),
        Act::Shell(script) => container_of(image, name, &["/bin/sh", "-c", script]),
    }
}

/// Makes one test of each behaviour for the runtime that `$make` (an
/// async fn of the test's name, `None` where the runtime cannot run here,
/// having said why) makes a subject of.
macro_rules! suite {
    ($make:path) => {
        $crate::behaviour::suite!(@tests $make;
            exit_codes_are_reported,
            signals_are_reported,
            stop_terms_a_container_and_stopping_again_succeeds,
            stop_waits_for_a_polite_container_and_kills_a_stubborn_one,
            logs_keep_the_previous_attempt_their_tail_and_offsets,
            failed_starts_and_bad_names_are_refused,
            remove_sandbox_takes_its_containers,
            remove_sandbox_removes_its_volumes_and_spares_host_paths,
            memory_limit_kills_a_hog_and_reports_it,
            containers_of_a_pod_share_localhost_and_volumes_and_pods_do_not_collide,
            host_ports_reach_the_pod,
            logs_take_both_streams_and_are_bounded,
            restarts_keep_the_empty_dir_and_the_previous_log,
            command_args_env_and_working_dir_are_honoured,
            exec_runs_inside_the_container,
        );
    };
    (@tests $make:path; $($test:ident,)*) => {
        mod contract {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(subject) = $make(stringify!($test)).await {
                        $crate::behaviour::$test(&subject).await;
                    }
                }
            )*
        }
    };
}
pub(crate) use suite;

/// Whether the runtime runs programs; if not, says the test skips.
fn runs_programs(subject: &impl Subject, test: &str) -> bool {
    let runs = subject.runtime().capabilities().runs_programs;
    if !runs {
        println!(
            "skipped {test}: the {} runtime runs no programs (Capabilities::runs_programs)",
            subject.runtime().name()
        );
    }
    runs
}

/// Whether the runtime runs programs each in the network, hostname and
/// filesystem of its Pod; if not, says the test skips.
fn isolates(subject: &impl Subject, test: &str) -> bool {
    let caps = subject.runtime().capabilities();
    let isolated = caps.network_isolation && caps.filesystem_isolation;
    if !isolated {
        println!(
            "skipped {test}: Pods are not isolated here: {:?}",
            caps.limitations
        );
    }
    isolated && runs_programs(subject, test)
}
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Checks an exit against the table's code and signal, and its times
/// against the test's clock.
fn check_exit(
    subject: &impl Subject,
    what: &str,
    exit: &ExitStatus,
    code: i32,
    signal: Option<i32>,
    before_ms: u64,
) {
    assert_eq!(
        (exit.exit_code, exit.signal, exit.oom_killed),
        (code, signal, false),
        "{what}"
    );
    let slack = subject.clock_slack_ms();
    assert!(
        exit.started_at_unix_ms + slack >= before_ms
            && exit.finished_at_unix_ms >= exit.started_at_unix_ms
            && exit.finished_at_unix_ms <= now_ms() + slack,
        "{what}: {exit:?} (before {before_ms})"
    );
}
