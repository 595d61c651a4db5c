//! Checks of what the agent asks for, the same in every runtime: names
//! become path components, labels and cgroup names, so they are held to
//! one safe alphabet before anything is made of them.

use crate::{RuntimeError, SandboxSpec};

/// Longest name (pod uid, container, volume, owner) used as a path
/// component.
pub(crate) const MAX_NAME_BYTES: usize = 128;
/// The kernel's HOST_NAME_MAX.
pub(crate) const MAX_HOSTNAME_BYTES: usize = 64;

/// Which hostnames a runtime can give a sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hostnames {
    /// Whatever `sethostname` takes: any bytes but NUL.
    Kernel,
    /// What the Docker engine takes: letters, digits, '-' and '.'.
    Dns,
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

pub(crate) fn check_name(what: &str, name: &str) -> Result<(), RuntimeError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(RuntimeError::Other(format!(
            "{what} {name:?} must be 1 to {MAX_NAME_BYTES} letters, digits, '-', '_' or '.'"
        )))
    }
}

fn check_hostname(hostname: &str, hostnames: Hostnames) -> Result<(), RuntimeError> {
    let sized = !hostname.is_empty() && hostname.len() <= MAX_HOSTNAME_BYTES;
    let (valid, alphabet) = match hostnames {
        Hostnames::Kernel => (sized && !hostname.contains('\0'), "bytes"),
        Hostnames::Dns => (
            sized
                && hostname
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
            "letters, digits, '-' or '.'",
        ),
    };
    if valid {
        Ok(())
    } else {
        Err(RuntimeError::Other(format!(
            "hostname {hostname:?} must be 1 to {MAX_HOSTNAME_BYTES} {alphabet}"
        )))
    }
}

/// The pod uid and volume names are usable names, and the hostname one
/// the runtime can give.
pub(crate) fn check_sandbox(spec: &SandboxSpec, hostnames: Hostnames) -> Result<(), RuntimeError> {
    check_name("pod uid", &spec.pod_uid)?;
    for volume in &spec.volumes {
        check_name("volume name", &volume.name)?;
    }
    check_hostname(&spec.hostname, hostnames)
}

pub(crate) fn start_error(container: &str, message: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Start {
        container: container.to_owned(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_hostnames() {
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        for (name, ok) in [
            ("web-1_a.b", true),
            ("", false),
            (".", false),
            ("..", false),
            ("a/b", false),
            ("a b", false),
            (long.as_str(), false),
        ] {
            assert_eq!(valid_name(name), ok, "{name:?}");
        }
        let long = "h".repeat(MAX_HOSTNAME_BYTES + 1);
        let cases = [
            ("pod-1.local", Hostnames::Kernel, true),
            ("pod-1.local", Hostnames::Dns, true),
            ("pod_1", Hostnames::Kernel, true),
            ("pod_1", Hostnames::Dns, false),
            ("a\0b", Hostnames::Kernel, false),
            ("", Hostnames::Kernel, false),
            (long.as_str(), Hostnames::Dns, false),
        ];
        for (hostname, rule, ok) in cases {
            assert_eq!(
                check_hostname(hostname, rule).is_ok(),
                ok,
                "{hostname:?} {rule:?}"
            );
        }
    }
}
