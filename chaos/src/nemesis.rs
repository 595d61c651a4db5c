//! Faults injected into a cluster of containers from the host. Partitions
//! are nftables rules inside each container's network namespace, entered
//! with `nsenter`: they drop traffic between the two sides of the cut in
//! both directions, while the host still reaches every peer.

use std::io::Write;
use std::process::{Command, Stdio};

/// The nftables table the nemesis owns in each namespace; healing deletes
/// it whole.
const TABLE: &str = "flotilla_chaos";

#[derive(Debug, thiserror::Error)]
pub enum NemesisError {
    #[error("{command}: {message}")]
    Command { command: String, message: String },
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, NemesisError> {
    let command = format!("{program} {}", args.join(" "));
    let failed = |message: String| NemesisError::Command { command: command.clone(), message };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let Some(text) = stdin {
        child.stdin.take().expect("piped").write_all(text.as_bytes()).map_err(|e| failed(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A container of the cluster, as the host sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub name: String,
    /// Its main process's pid on the host: the way into its namespaces.
    pub pid: u32,
    /// Its address on the cluster's network.
    pub ip: String,
}

impl Container {
    pub fn inspect(name: &str) -> Result<Container, NemesisError> {
        let format = "{{.State.Pid}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}";
        let out = run("docker", &["inspect", "--format", format, name], None)?;
        let mut words = out.split_whitespace();
        let bad = |what: &str| NemesisError::Command { command: format!("docker inspect {name}"), message: format!("no {what} in {out:?}") };
        let pid = words.next().and_then(|p| p.parse().ok()).filter(|p| *p > 0).ok_or_else(|| bad("running process"))?;
        let ip = words.next().ok_or_else(|| bad("address"))?.to_string();
        Ok(Container { name: name.to_string(), pid, ip })
    }

    fn nft(&self, script: Option<&str>, args: &[&str]) -> Result<String, NemesisError> {
        let pid = self.pid.to_string();
        let mut all = vec!["--target", pid.as_str(), "--net", "nft"];
        all.extend_from_slice(args);
        run("nsenter", &all, script)
    }

    /// Drops every packet from or to `others` in this container.
    pub fn cut_off_from(&self, others: &[&Container]) -> Result<(), NemesisError> {
        self.heal()?;
        if others.is_empty() {
            return Ok(());
        }
        let ips: Vec<&str> = others.iter().map(|c| c.ip.as_str()).collect();
        let set = ips.join(", ");
        let script = format!(
            "table inet {TABLE} {{\n\
             chain input {{ type filter hook input priority -10; ip saddr {{ {set} }} drop; }}\n\
             chain output {{ type filter hook output priority -10; ip daddr {{ {set} }} drop; }}\n\
             }}\n"
        );
        self.nft(Some(&script), &["-f", "-"]).map(|_| ())
    }

    /// Removes this nemesis's rules, if any.
    pub fn heal(&self) -> Result<(), NemesisError> {
        let tables = self.nft(None, &["list", "tables"])?;
        if tables.lines().any(|l| l.trim() == format!("table inet {TABLE}")) {
            self.nft(None, &["delete", "table", "inet", TABLE])?;
        }
        Ok(())
    }
}

/// Cuts the cluster in two: no traffic crosses between `side` and `rest`.
pub fn partition(side: &[&Container], rest: &[&Container]) -> Result<(), NemesisError> {
    for c in side {
        c.cut_off_from(rest)?;
    }
    for c in rest {
        c.cut_off_from(side)?;
    }
    Ok(())
}

/// Removes every partition rule.
pub fn heal_all(containers: &[&Container]) -> Result<(), NemesisError> {
    for c in containers {
        c.heal()?;
    }
    Ok(())
}
