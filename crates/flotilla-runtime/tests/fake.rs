//! The fake runtime before the behaviour suite that the real runtimes
//! run: its containers follow scripts in their environment, on the
//! host's clock.

use std::sync::Arc;

use flotilla_runtime::ContainerSpec;
use flotilla_runtime::fake::FakeRuntime;

// Both are shared with the real runtimes' tests, which use all of them.
#[allow(dead_code)]
mod behaviour;
#[allow(dead_code)]
mod common;
use behaviour::{Act, Subject};
use common::container_of;

struct Fake(FakeRuntime);

impl Subject for Fake {
    type Runtime = FakeRuntime;

    fn runtime(&self) -> &FakeRuntime {
        &self.0
    }

    fn container(&self, name: &str, act: Act<'_>) -> ContainerSpec {
        let mut spec = container_of("fake", name, &[]);
        let script: Vec<(&str, String)> = match act {
            Act::Exit { out, code } => vec![
                ("FAKE_LOG", out.into()),
                ("FAKE_EXIT_CODE", code.to_string()),
            ],
            Act::Run { out } => vec![("FAKE_LOG", out.into())],
            // The fake decides as the kernel's out-of-memory killer would.
            Act::Allocate { mib, limit_mib } => {
                spec.memory_limit_bytes = Some(limit_mib << 20);
                match mib > limit_mib {
                    true => vec![("FAKE_OOM", "1".into())],
                    false => vec![("FAKE_EXIT_CODE", "0".into())],
                }
            }
            Act::Missing => vec![("FAKE_START_ERROR", "no such program".into())],
            Act::Shell(_) | Act::Serve { .. } | Act::Fetch { .. } => vec![(
                "FAKE_START_ERROR",
                "the fake runtime runs no programs".into(),
            )],
        };
        spec.env = script.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        spec
    }
}

async fn subject(_test: &str) -> Option<Fake> {
    let now_unix_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    Some(Fake(FakeRuntime::new(Arc::new(now_unix_ms))))
}

behaviour::suite!(subject);
