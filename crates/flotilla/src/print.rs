//! kubectl-style output: tables per kind, `-o json|yaml|wide|name`.

use std::time::{SystemTime, UNIX_EPOCH};

use flotilla_api::Kind;
use flotilla_api::yaml_out::to_yaml;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
    Name,
}

/// Prints one object as JSON or YAML, or a list as `{"items": [...]}`.
pub fn document(format: Format, kind: Kind, items: &[Value], single: bool) -> String {
    let value = if single && items.len() == 1 {
        items[0].clone()
    } else {
        serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items })
    };
    match format {
        Format::Json => serde_json::to_string_pretty(&value).expect("JSON prints") + "\n",
        Format::Yaml => to_yaml(&value),
        Format::Name => items.iter().map(|o| format!("{}/{}\n", resource_name(kind), name(o))).collect(),
        Format::Table | Format::Wide => table(kind, items, format == Format::Wide, false),
    }
}

/// `pod`, `deployment.apps`, `job.batch`: how kubectl names a resource.
pub fn resource_name(kind: Kind) -> String {
    let lower = kind.name().to_ascii_lowercase();
    match kind.api_version().split_once('/') {
        Some((group, _)) => format!("{lower}.{group}"),
        None => lower,
    }
}

fn name(o: &Value) -> &str {
    o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

fn s<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn n(o: &Value, pointer: &str) -> i64 {
    o.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

pub fn table(kind: Kind, items: &[Value], wide: bool, all_namespaces: bool) -> String {
    let (mut header, rows): (Vec<&str>, Vec<Vec<String>>) = match kind {
        Kind::Pod => {
            let mut h = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE", "NODE"];
            if wide {
                h.push("IP");
            }
            let rows = items
                .iter()
                .map(|o| {
                    let statuses = o.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
                    let total = o.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
                    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
                    let restarts: i64 = statuses.iter().map(|c| c["restartCount"].as_i64().unwrap_or(0)).sum();
                    let node = s(o, "/spec/nodeName");
                    let mut row = vec![
                        name(o).to_string(),
                        format!("{ready}/{total}"),
                        pod_status(o),
                        restarts.to_string(),
                        age(o),
                        if node.is_empty() { "<none>".into() } else { node.to_string() },
                    ];
                    if wide {
                        let ip = s(o, "/status/podIP");
                        row.push(if ip.is_empty() { "<none>".into() } else { ip.to_string() });
                    }
                    row
                })
                .collect();
            (h, rows)
        }
        Kind::Deployment => (
            vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            items
                .iter()
                .map(|o| {
                    vec![
                        name(o).into(),
                        format!("{}/{}", n(o, "/status/readyReplicas"), n(o, "/spec/replicas")),
                        n(o, "/status/updatedReplicas").to_string(),
                        n(o, "/status/availableReplicas").to_string(),
                        age(o),
                    ]
                })
                .collect(),
        ),
        Kind::ReplicaSet | Kind::DaemonSet => {
            let (desired, current, ready) = if kind == Kind::ReplicaSet {
                ("/spec/replicas", "/status/replicas", "/status/readyReplicas")
            } else {
                ("/status/desiredNumberScheduled", "/status/currentNumberScheduled", "/status/numberReady")
            };
            (
                vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
                items
                    .iter()
                    .map(|o| vec![name(o).into(), n(o, desired).to_string(), n(o, current).to_string(), n(o, ready).to_string(), age(o)])
                    .collect(),
            )
        }
        Kind::StatefulSet => (
            vec!["NAME", "READY", "AGE"],
            items
                .iter()
                .map(|o| vec![name(o).into(), format!("{}/{}", n(o, "/status/readyReplicas"), n(o, "/spec/replicas")), age(o)])
                .collect(),
        ),
        Kind::Job => (
            vec!["NAME", "STATUS", "COMPLETIONS", "AGE"],
            items
                .iter()
                .map(|o| {
                    let conditions = o.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
                    let status = conditions
                        .iter()
                        .find(|c| c["status"] == "True" && (c["type"] == "Complete" || c["type"] == "Failed"))
                        .map_or("Running".to_string(), |c| c["type"].as_str().unwrap_or("").to_string());
                    vec![
                        name(o).into(),
                        status,
                        format!("{}/{}", n(o, "/status/succeeded"), n(o, "/spec/completions")),
                        age(o),
                    ]
                })
                .collect(),
        ),
        Kind::Node => (
            vec!["NAME", "STATUS", "AGE"],
            items
                .iter()
                .map(|o| {
                    let ready = o
                        .pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                        .map_or("Unknown", |c| if c["status"] == "True" { "Ready" } else { "NotReady" });
                    let status = if o.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
                        format!("{ready},SchedulingDisabled")
                    } else {
                        ready.to_string()
                    };
                    vec![name(o).into(), status, age(o)]
                })
                .collect(),
        ),
        Kind::Namespace => (
            vec!["NAME", "STATUS", "AGE"],
            items
                .iter()
                .map(|o| {
                    let phase = s(o, "/status/phase");
                    vec![name(o).into(), if phase.is_empty() { "Active".into() } else { phase.into() }, age(o)]
                })
                .collect(),
        ),
        Kind::ConfigMap => (
            vec!["NAME", "DATA", "AGE"],
            items
                .iter()
                .map(|o| vec![name(o).into(), o.get("data").and_then(Value::as_object).map_or(0, |d| d.len()).to_string(), age(o)])
                .collect(),
        ),
        Kind::Event => (
            vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
            items
                .iter()
                .map(|o| {
                    let when = o.pointer("/lastTimestamp").and_then(Value::as_str).map_or_else(|| age(o), since);
                    vec![
                        when,
                        s(o, "/type").into(),
                        s(o, "/reason").into(),
                        format!("{}/{}", s(o, "/involvedObject/kind").to_ascii_lowercase(), s(o, "/involvedObject/name")),
                        s(o, "/message").into(),
                    ]
                })
                .collect(),
        ),
    };
    let mut rows = rows;
    if all_namespaces {
        header.insert(0, "NAMESPACE");
        for (row, o) in rows.iter_mut().zip(items) {
            row.insert(0, s(o, "/metadata/namespace").to_string());
        }
    }
    render(&header, &rows)
}

fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// The STATUS column of `kubectl get pods`.
pub fn pod_status(o: &Value) -> String {
    if o.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
        return "Terminating".into();
    }
    let reason = s(o, "/status/reason");
    if !reason.is_empty() {
        return reason.into();
    }
    let statuses = o.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
    for c in &statuses {
        if let Some(r) = c.pointer("/state/waiting/reason").and_then(Value::as_str).filter(|r| !r.is_empty()) {
            return r.into();
        }
    }
    let inits = o.pointer("/status/initContainerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
    let total_init = o.pointer("/spec/initContainers").and_then(Value::as_array).map_or(0, Vec::len);
    if total_init > 0 && s(o, "/status/phase") == "Pending" {
        let done = inits.iter().filter(|c| c.pointer("/state/terminated/exitCode") == Some(&Value::from(0))).count();
        if done < total_init {
            return format!("Init:{done}/{total_init}");
        }
    }
    for c in &statuses {
        if let Some(r) = c.pointer("/state/terminated/reason").and_then(Value::as_str).filter(|r| !r.is_empty()) {
            return r.into();
        }
    }
    let phase = s(o, "/status/phase");
    if phase.is_empty() { "Pending".into() } else { phase.into() }
}

fn age(o: &Value) -> String {
    o.pointer("/metadata/creationTimestamp").and_then(Value::as_str).map_or_else(|| "<unknown>".into(), since)
}

/// How long ago an RFC 3339 UTC time was, as kubectl prints it.
pub fn since(ts: &str) -> String {
    let Some(then) = parse_rfc3339(ts) else { return "<unknown>".into() };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    human_duration((now - then).max(0))
}

pub fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (fractions allowed) to Unix seconds.
pub fn parse_rfc3339(ts: &str) -> Option<i64> {
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.trim_end_matches('Z');
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from civil date (proleptic Gregorian), eras of 400 years.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_and_print_like_kubectl() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(parse_rfc3339("2026-11-23T22:53:09.5Z"), Some(1_795_474_389));
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(3 * 3600 + 5), "3h0m");
        assert_eq!(human_duration(3 * 86_400), "3d");
    }

    #[test]
    fn pod_tables_read_like_kubectl() {
        let pod = serde_json::json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2000-01-01T00:00:00Z"},
            "spec": {"nodeName": "peer-2", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        });
        let t = table(Kind::Pod, &[pod], false, false);
        let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[0], vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE", "NODE"]);
        assert_eq!(lines[1][..4], ["web-1", "1/2", "CrashLoopBackOff", "3"]);
        assert_eq!(lines[1][5], "peer-2");
    }
}
