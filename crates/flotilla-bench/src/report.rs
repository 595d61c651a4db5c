//! Writes the measured parts of `docs/BENCHMARKS.md` from the raw results:
//! every table, the distribution plots and the machine section sit between
//! `<!-- measured:NAME -->` and `<!-- /measured:NAME -->` and are rewritten
//! whole, so the page never shows a figure its JSON does not hold. The
//! prose around them is the reader's guide and is left alone.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::plot::{Axis, Series, line_chart};

/// The sections the page must carry, in the order they appear.
const SECTIONS: [&str; 10] = ["machine", "summary", "etcd", "writes", "failover", "heal", "start", "swarm", "schedule", "footprint"];

/// The raw results in `dir`, by bench name; absent ones are `None`.
struct Results {
    dir: std::path::PathBuf,
}

impl Results {
    fn get(&self, name: &str) -> Option<Value> {
        let text = std::fs::read_to_string(self.dir.join(format!("{name}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn all(&self) -> Vec<Value> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut names: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names.iter().filter_map(|p| serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()).collect()
    }
}

pub(crate) fn write(dir: &Path, page: &Path) -> anyhow::Result<()> {
    let results = Results { dir: dir.to_path_buf() };
    let mut text = std::fs::read_to_string(page).with_context(|| format!("reading {}", page.display()))?;
    // Plots are linked relative to the page.
    let link_dir = pathdiff(dir, page.parent().unwrap_or(Path::new(".")));
    for name in SECTIONS {
        let body = match name {
            "machine" => machine(&results),
            "summary" => summary(&results),
            "etcd" => etcd(&results, &link_dir),
            "writes" => writes(&results),
            "failover" => distribution(&results, "failover", "leader killed to the next acknowledged write", &link_dir)?,
            "heal" => distribution(&results, "heal", "peer killed to all its Pods Running elsewhere", &link_dir)?,
            "start" => start(&results, &link_dir)?,
            "swarm" => swarm(&results),
            "schedule" => schedule(&results, &link_dir),
            "footprint" => footprint(&results),
            _ => unreachable!("every section has a writer"),
        };
        text = replace_section(&text, name, &body).with_context(|| format!("in {}", page.display()))?;
    }
    std::fs::write(page, text)?;
    Ok(())
}

/// `dir` as seen from `base`, for links: both are relative to the working
/// directory in practice (docs/bench from docs/).
fn pathdiff(dir: &Path, base: &Path) -> String {
    dir.strip_prefix(base).map_or_else(|_| dir.display().to_string(), |p| p.display().to_string())
}

fn replace_section(text: &str, name: &str, body: &str) -> anyhow::Result<String> {
    let open = format!("<!-- measured:{name} -->");
    let close = format!("<!-- /measured:{name} -->");
    let Some(start) = text.find(&open) else { bail!("no {open} marker") };
    let Some(end) = text[start..].find(&close).map(|i| start + i) else { bail!("{open} has no {close}") };
    Ok(format!("{}{open}\n{}\n{}", &text[..start], body.trim_end(), &text[end..]))
}

fn num(v: &Value, path: &str) -> Option<f64> {
    v.pointer(path).and_then(Value::as_f64)
}

/// Thousands separated, as the page prints counts and rates.
fn count(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

/// Milliseconds to three significant digits.
fn millis(x: f64) -> String {
    if x >= 1000.0 {
        format!("{} ms", count(x))
    } else if x >= 100.0 {
        format!("{x:.0} ms")
    } else if x >= 10.0 {
        format!("{x:.1} ms")
    } else {
        format!("{x:.2} ms")
    }
}

fn mib(bytes: f64) -> String {
    format!("{} MiB", count(bytes / (1u64 << 20) as f64))
}

fn missing(what: &str, command: &str) -> String {
    format!("*{what}: not measured yet; run `{command}`.*\n")
}

const REPRODUCE: &str = "cargo run --release -p flotilla-bench -- --out docs/bench";

/// The command that produced a result, as it recorded it.
fn command_of(v: &Value) -> String {
    v.pointer("/run/command").and_then(Value::as_str).unwrap_or("(not recorded)").to_string()
}

fn commands(results: &[&Value]) -> String {
    let lines: Vec<String> = results.iter().map(|v| command_of(v)).collect();
    format!("```\n{}\n```\n", lines.join("\n"))
}

fn machine(results: &Results) -> String {
    let all = results.all();
    let runs: Vec<&Value> = all.iter().filter_map(|v| v.get("run")).collect();
    let dates: BTreeSet<String> =
        runs.iter().filter_map(|r| r["date_utc"].as_str()).map(|d| d.get(..10).unwrap_or(d).to_string()).collect();
    let commits: BTreeSet<&str> = runs.iter().filter_map(|r| r["commit"].as_str()).collect();
    let mut out = String::new();
    match (dates.first(), dates.last()) {
        (Some(first), Some(last)) if first == last => out += &format!("Measured on {first}"),
        (Some(first), Some(last)) => out += &format!("Measured between {first} and {last}"),
        _ => out += "Measurement dates were not recorded",
    }
    if !commits.is_empty() {
        out += &format!(", at commit {}", commits.into_iter().collect::<Vec<_>>().join(", "));
    }
    out += ".";
    let undated = all.len() - runs.len();
    if undated > 0 {
        out += &format!(" {undated} of the results carry no date (measured before results recorded it).");
    }
    out += "\n\n";
    if let Some(m) = runs.iter().filter_map(|r| r.get("machine")).next_back() {
        out += &format!(
            "- {} vCPUs ({}), {} GiB of memory\n- Linux {}, cgroups {}\n",
            m["cpus"],
            m["cpu_model"].as_str().unwrap_or("model unknown"),
            m["memory_gib"],
            m["kernel"].as_str().unwrap_or("?"),
            m["cgroups"].as_str().unwrap_or("?"),
        );
    }
    if let Some(v) = results.get("etcd-comparison").and_then(|e| e["etcd_version"].as_str().map(str::to_string)) {
        out += &format!("- {v} (Debian's `etcd-server`)\n");
    }
    if let Some(v) = results.get("swarm-comparison").and_then(|e| e["docker_version"].as_str().map(str::to_string)) {
        out += &format!("- Docker Engine {v}\n");
    }
    out += "- release build; the peers (or etcd members) and the load generator share the machine\n";
    out
}

/// The etcd comparison's row for an operation and client count.
fn etcd_row(etcd: &Value, op: &str, clients: u64) -> Option<Value> {
    etcd["results"].as_array()?.iter().find(|r| r["op"] == op && r["clients"].as_u64() == Some(clients)).cloned()
}

fn yes_no(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "",
    }
}

fn summary(results: &Results) -> String {
    let mut rows: Vec<[String; 5]> = Vec::new();
    let etcd = results.get("etcd-comparison");
    for (op, label, aim) in [("write", "replicated writes/s, 64 clients", Some(1.5)), ("read", "linearizable reads/s, 64 clients", None)] {
        if let Some(r) = etcd.as_ref().and_then(|e| etcd_row(e, op, 64)) {
            let ratio = r["ratio"].as_f64().unwrap_or(0.0);
            rows.push([
                label.into(),
                aim.map_or(String::new(), |a| format!("{a} × etcd")),
                format!("{} (p99 {})", count(num(&r, "/flotilla/per_sec").unwrap_or(0.0)), millis(num(&r, "/flotilla/p99_ms").unwrap_or(0.0))),
                format!("etcd {} (p99 {}): {ratio:.2} ×", count(num(&r, "/etcd/per_sec").unwrap_or(0.0)), millis(num(&r, "/etcd/p99_ms").unwrap_or(0.0))),
                yes_no(aim.map(|a| ratio >= a)).into(),
            ]);
        }
    }
    if let Some(r) = results.get("writes-via-all").and_then(|w| w["results"].as_array()?.iter().find(|r| r["clients"] == 64).cloned()) {
        let per_sec = num(&r, "/per_sec").unwrap_or(0.0);
        rows.push([
            "replicated writes/s, 64 clients through every peer".into(),
            "20,000".into(),
            format!("{} (p99 {})", count(per_sec), millis(num(&r, "/p99_ms").unwrap_or(0.0))),
            String::new(),
            yes_no(Some(per_sec >= 20_000.0)).into(),
        ]);
    }
    if let Some(s) = results.get("swarm-comparison") {
        for r in s["results"].as_array().into_iter().flatten().rev() {
            let (f, w) = (num(r, "/flotilla_ms").unwrap_or(0.0), num(r, "/swarm_ms").unwrap_or(0.0));
            rows.push([
                format!("time to {} running containers", r["replicas"]),
                String::new(),
                format!("{:.1} s", f / 1e3),
                format!("Swarm {:.1} s: {:.2} × as fast", w / 1e3, w / f),
                String::new(),
            ]);
        }
    }
    let dist = |name: &str, label: &str, aim_ms: f64, aim: &str, anchor: &str, rows: &mut Vec<[String; 5]>| {
        if let Some(v) = results.get(name) {
            let p99 = num(&v, "/p99_ms").unwrap_or(f64::INFINITY);
            rows.push([
                label.into(),
                format!("p99 < {aim}"),
                format!("{} p50, {} p99", millis(num(&v, "/p50_ms").unwrap_or(0.0)), millis(p99)),
                anchor.into(),
                yes_no(Some(p99 < aim_ms)).into(),
            ]);
        }
    };
    dist("failover", "leader killed to the next acknowledged write", 1000.0, "1 s", "", &mut rows);
    dist(
        "heal",
        "peer killed to all its Pods Running elsewhere",
        3000.0,
        "3 s",
        "Kubernetes about 6 min, Nomad 20 to 30 s, Swarm about 15 s (their defaults)",
        &mut rows,
    );
    dist("start-process", "Pod create to Running, process runtime", 50.0, "50 ms", "", &mut rows);
    if let Some(v) = results.get("start-docker") {
        rows.push([
            "Pod create to Running, docker runtime".into(),
            String::new(),
            format!("{} p50, {} p99", millis(num(&v, "/p50_ms").unwrap_or(0.0)), millis(num(&v, "/p99_ms").unwrap_or(0.0))),
            String::new(),
            String::new(),
        ]);
    }
    if let Some(v) = results.get("schedule-1000-nodes-10000-pods") {
        let bound = num(&v, "/bound_per_sec").unwrap_or(0.0);
        rows.push([
            "Pods bound/s, 1,000 nodes".into(),
            "10,000".into(),
            count(bound),
            "Kubernetes' scheduler_perf 680 to 810, Nomad's C1M 3,750 (published, other hardware)".into(),
            yes_no(Some(bound >= 10_000.0)).into(),
        ]);
        rows.push(["Pods Running/s, 1,000 hollow nodes".into(), String::new(), count(num(&v, "/running_per_sec").unwrap_or(0.0)), String::new(), String::new()]);
    }
    if let Some(v) = results.get("schedule-5000-nodes-150000-pods") {
        rows.push([
            "150,000 Pods on 5,000 nodes".into(),
            String::new(),
            format!(
                "all Running after {:.0} s ({}/s), leader {:.1} GiB",
                num(&v, "/seconds").unwrap_or(0.0),
                count(num(&v, "/running_per_sec").unwrap_or(0.0)),
                num(&v, "/leader_max_rss_bytes").unwrap_or(0.0) / (1u64 << 30) as f64
            ),
            "Kubernetes' published limit".into(),
            String::new(),
        ]);
    }
    if let (Some(start), Some(big)) = (results.get("start-process"), results.get("schedule-1000-nodes-10000-pods")) {
        rows.push([
            "peer RSS idle / with 100 Pods / with 10,000 Pods".into(),
            String::new(),
            format!(
                "{} / {} / {} (leader)",
                mib(num(&start, "/rss_idle_bytes").unwrap_or(0.0)),
                mib(num(&start, "/rss_with_100_pods_bytes").unwrap_or(0.0)),
                mib(num(&big, "/leader_max_rss_bytes").unwrap_or(0.0))
            ),
            String::new(),
            String::new(),
        ]);
    }
    if let Some(v) = results.get("footprint") {
        rows.push(["binary size".into(), String::new(), format!("{} stripped", mib(num(&v, "/stripped_bytes").unwrap_or(0.0))), String::new(), String::new()]);
    }
    let mut out = String::from("| figure | aim | measured | anchor, same run | aim met |\n|---|---|---|---|---|\n");
    for r in rows {
        out += &format!("| {} |\n", r.join(" | "));
    }
    out
}

fn etcd(results: &Results, link_dir: &str) -> String {
    let Some(e) = results.get("etcd-comparison") else {
        return missing("the etcd comparison", &format!("{REPRODUCE} etcd --clients 1,16,64,256 --seconds 5 --runs 3"));
    };
    let mut out = commands(&[&e]);
    out += "\n| op | clients | Flotilla/s | p50 | p99 | CPU/op | etcd/s | p50 | p99 | CPU/op | ratio |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in e["results"].as_array().into_iter().flatten() {
        let side = |s: &str| {
            format!(
                "{} | {} | {} | {}",
                count(num(r, &format!("/{s}/per_sec")).unwrap_or(0.0)),
                millis(num(r, &format!("/{s}/p50_ms")).unwrap_or(0.0)),
                millis(num(r, &format!("/{s}/p99_ms")).unwrap_or(0.0)),
                micros(num(r, &format!("/{s}/server_cpu_us_per_op")))
            )
        };
        out += &format!(
            "| {} | {} | {} | {} | {:.2} |\n",
            r["op"].as_str().unwrap_or("?"),
            r["clients"],
            side("flotilla"),
            side("etcd"),
            r["ratio"].as_f64().unwrap_or(0.0)
        );
    }
    out += &format!("\n![operations per second]({link_dir}/etcd-comparison-throughput.svg)\n![p99 latency]({link_dir}/etcd-comparison-p99.svg)\n");
    out
}

fn writes(results: &Results) -> String {
    let (Some(all), Some(leader)) = (results.get("writes-via-all"), results.get("writes-via-leader")) else {
        return missing("writes through every peer and through the leader", &format!("{REPRODUCE} writes --clients 1,16,64 --seconds 10 --runs 3 [--via leader]"));
    };
    let mut out = commands(&[&all, &leader]);
    out += "\n| clients | via every peer: writes/s | p50 | p99 | peers' CPU/write | via the leader: writes/s | p50 | p99 | peers' CPU/write | load generator's CPU/write |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    let rows = |v: &Value| v["results"].as_array().cloned().unwrap_or_default();
    for (a, l) in rows(&all).iter().zip(rows(&leader).iter()) {
        let cells = |r: &Value| {
            format!(
                "{} | {} | {} | {}",
                count(num(r, "/per_sec").unwrap_or(0.0)),
                millis(num(r, "/p50_ms").unwrap_or(0.0)),
                millis(num(r, "/p99_ms").unwrap_or(0.0)),
                micros(num(r, "/server_cpu_us_per_op"))
            )
        };
        out += &format!("| {} | {} | {} | {} |\n", a["clients"], cells(a), cells(l), micros(num(a, "/client_cpu_us_per_op")));
    }
    out
}

/// CPU time per operation; a dash where the result predates its measure.
fn micros(us: Option<f64>) -> String {
    us.map_or("–".into(), |us| format!("{} µs", count(us)))
}

/// The share of samples at or below each latency: the whole distribution
/// in one line, where a table shows three points of it.
fn cdf(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    sorted.iter().enumerate().map(|(i, x)| (*x, 100.0 * (i + 1) as f64 / n)).collect()
}

fn samples(v: &Value) -> Vec<f64> {
    v["samples_ms"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect()
}

fn write_cdf(results: &Results, file: &str, title: &str, series: Vec<Series>) -> anyhow::Result<()> {
    std::fs::write(results.dir.join(file), line_chart(title, Axis::Span("milliseconds"), &series))?;
    Ok(())
}

fn distribution(results: &Results, name: &str, title: &str, link_dir: &str) -> anyhow::Result<String> {
    let Some(v) = results.get(name) else {
        return Ok(missing(title, &format!("{REPRODUCE} {name} --kills 20")));
    };
    let file = format!("{name}-cdf.svg");
    write_cdf(results, &file, &format!("{title} (% of kills within)"), vec![Series {
        name: format!("{} kills", v["kills"]),
        colour: "#1f77b4",
        dashed: false,
        points: cdf(&samples(&v)),
    }])?;
    let mut out = commands(&[&v]);
    out += &format!(
        "\n| kills | p50 | p99 | max |\n|---:|---:|---:|---:|\n| {} | {} | {} | {} |\n\n![{title}]({link_dir}/{file})\n",
        v["kills"],
        millis(num(&v, "/p50_ms").unwrap_or(0.0)),
        millis(num(&v, "/p99_ms").unwrap_or(0.0)),
        millis(num(&v, "/max_ms").unwrap_or(0.0)),
    );
    Ok(out)
}

fn start(results: &Results, link_dir: &str) -> anyhow::Result<String> {
    let found: Vec<Value> = ["start-process", "start-docker"].iter().filter_map(|n| results.get(n)).collect();
    if found.is_empty() {
        return Ok(missing("Pod start latency", &format!("{REPRODUCE} start --pods 200")));
    }
    // One plot per runtime: their latencies differ tenfold.
    let mut plots = Vec::new();
    for v in &found {
        let runtime = v["runtime"].as_str().unwrap_or("unknown");
        let file = format!("start-{runtime}-cdf.svg");
        write_cdf(results, &file, &format!("Pod create to Running, {runtime} runtime (% of Pods within)"), vec![Series {
            name: format!("{} Pods", v["pods"]),
            colour: "#1f77b4",
            dashed: false,
            points: cdf(&samples(v)),
        }])?;
        plots.push(format!("![Pod create to Running, {runtime} runtime]({link_dir}/{file})\n"));
    }
    let mut out = commands(&found.iter().collect::<Vec<_>>());
    out += "\n| runtime | Pods | p50 | p99 | max | peer RSS idle | peer RSS, 100 Pods |\n|---|---:|---:|---:|---:|---:|---:|\n";
    for v in &found {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            v["runtime"].as_str().unwrap_or("?"),
            v["pods"],
            millis(num(v, "/p50_ms").unwrap_or(0.0)),
            millis(num(v, "/p99_ms").unwrap_or(0.0)),
            millis(num(v, "/max_ms").unwrap_or(0.0)),
            mib(num(v, "/rss_idle_bytes").unwrap_or(0.0)),
            mib(num(v, "/rss_with_100_pods_bytes").unwrap_or(0.0)),
        );
    }
    out += "\n";
    out += &plots.concat();
    Ok(out)
}

fn swarm(results: &Results) -> String {
    let Some(s) = results.get("swarm-comparison") else {
        return missing("the Swarm comparison", &format!("{REPRODUCE} swarm --replicas 10,100 --runs 3"));
    };
    let mut out = commands(&[&s]);
    out += "\n| replicas | Flotilla | Swarm | Swarm / Flotilla |\n|---:|---:|---:|---:|\n";
    for r in s["results"].as_array().into_iter().flatten() {
        out += &format!(
            "| {} | {:.2} s | {:.2} s | {:.2} |\n",
            r["replicas"],
            num(r, "/flotilla_ms").unwrap_or(0.0) / 1e3,
            num(r, "/swarm_ms").unwrap_or(0.0) / 1e3,
            num(r, "/swarm_over_flotilla").unwrap_or(0.0)
        );
    }
    out
}

fn schedule(results: &Results, link_dir: &str) -> String {
    let found: Vec<Value> = [(100, 10_000), (1000, 10_000), (5000, 10_000), (5000, 150_000)]
        .iter()
        .filter_map(|(n, p)| results.get(&format!("schedule-{n}-nodes-{p}-pods")))
        .collect();
    if found.is_empty() {
        return missing("scheduling", &format!("{REPRODUCE} schedule --nodes 1000 --pods 10000 --runs 3"));
    }
    let mut out = commands(&found.iter().collect::<Vec<_>>());
    out += "\n| nodes | Pods | runs | all bound after | Pods bound/s | all Running after | Pods Running/s | leader CPU | leader peak RSS |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for v in &found {
        let seconds = num(v, "/seconds").unwrap_or(0.0);
        let cpu = num(v, "/leader_cpu_seconds").unwrap_or(0.0);
        out += &format!(
            "| {} | {} | {} | {:.2} s | {} | {:.2} s | {} | {:.1} s ({:.0} % of a core) | {} |\n",
            count(num(v, "/nodes").unwrap_or(0.0)),
            count(num(v, "/pods").unwrap_or(0.0)),
            v["runs"].as_array().map_or(0, Vec::len),
            num(v, "/all_bound_ms").unwrap_or(0.0) / 1e3,
            count(num(v, "/bound_per_sec").unwrap_or(0.0)),
            seconds,
            count(num(v, "/running_per_sec").unwrap_or(0.0)),
            cpu,
            100.0 * cpu / seconds.max(1e-9),
            mib(num(v, "/leader_max_rss_bytes").unwrap_or(0.0)),
        );
    }
    out += "\n";
    for v in &found {
        if let Some(plot) = v["plot"].as_str().and_then(|p| Path::new(p).file_name()).and_then(|f| f.to_str()) {
            out += &format!("![{} Pods on {} nodes]({link_dir}/{plot})\n", count(num(v, "/pods").unwrap_or(0.0)), count(num(v, "/nodes").unwrap_or(0.0)));
        }
    }
    out
}

fn footprint(results: &Results) -> String {
    let Some(v) = results.get("footprint") else {
        return missing("the binary's size", &format!("{REPRODUCE} footprint --binary target/release/flotilla"));
    };
    format!(
        "{}\n| as built (line tables kept) | stripped |\n|---:|---:|\n| {} | {} |\n",
        commands(&[&v]),
        mib(num(&v, "/binary_bytes").unwrap_or(0.0)),
        mib(num(&v, "/stripped_bytes").unwrap_or(0.0))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_the_page_prints_them() {
        assert_eq!(count(1234567.4), "1,234,567");
        assert_eq!(count(999.0), "999");
        assert_eq!(millis(0.934), "0.93 ms");
        assert_eq!(millis(18.04), "18.0 ms");
        assert_eq!(millis(107.4), "107 ms");
        assert_eq!(millis(2118.4), "2,118 ms");
    }

    #[test]
    fn a_section_is_replaced_whole_and_a_missing_marker_is_an_error() {
        let page = "intro\n<!-- measured:etcd -->\nold table\n<!-- /measured:etcd -->\nprose\n";
        let new = replace_section(page, "etcd", "new table\n").unwrap();
        assert_eq!(new, "intro\n<!-- measured:etcd -->\nnew table\n<!-- /measured:etcd -->\nprose\n");
        assert_eq!(replace_section(&new, "etcd", "new table\n").unwrap(), new, "rewriting is idempotent");
        assert!(replace_section(page, "heal", "x").unwrap_err().to_string().contains("<!-- measured:heal -->"));
    }

    #[test]
    fn the_cdf_ends_at_every_sample() {
        let points = cdf(&[30.0, 10.0, 20.0, 40.0]);
        assert_eq!(points, vec![(10.0, 25.0), (20.0, 50.0), (30.0, 75.0), (40.0, 100.0)]);
    }

    #[test]
    fn the_page_carries_every_section() {
        let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/BENCHMARKS.md")).unwrap();
        for name in SECTIONS {
            assert!(page.contains(&format!("<!-- measured:{name} -->")), "docs/BENCHMARKS.md lacks the {name} section");
            assert!(page.contains(&format!("<!-- /measured:{name} -->")), "docs/BENCHMARKS.md does not close the {name} section");
        }
    }
}
