//! A self-contained HTML page about one chaos run, for a person to open in a
//! browser afterwards: the verdicts, the operations on a timeline, their
//! latency, the workloads' ready replicas, all against the faults the
//! nemesis injected. Plots are inline SVG; the page loads nothing and runs
//! no script, so it can be archived with the run and opened anywhere.
//!
//! Rendering is deterministic (the same input gives the same bytes), and
//! its size is bounded however long the run: operations are binned or
//! downsampled, and every list drawn has a cap.
//!
//! Long because the page is one document: its sections share the scales,
//! colours and caps defined here, and split across files they would only
//! pass them back and forth.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::history::{Entry, EntryType, Function};

/// A fault as the nemesis injected it: from `start_ns` to `end_ns` (ns since the run started).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultWindow {
    pub fault: String,
    pub peers: Vec<u64>,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// The ready replicas of one workload (e.g. "deployment", "statefulset") at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSample {
    pub time_ns: u64,
    pub workload: String,
    pub ready: u64,
    pub desired: u64,
}

/// One workload's verdict line: name, "valid" | "invalid" | "unknown", and a short summary for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub workload: String,
    pub valid: String,
    pub summary: String,
}

#[derive(Clone, Debug)]
pub struct ReportInput<'a> {
    pub title: String,
    pub seed: u64,
    /// The command that reproduces the run, shown verbatim (HTML-escaped).
    pub reproduce: String,
    pub duration_ns: u64,
    pub history: &'a [Entry],
    pub faults: &'a [FaultWindow],
    pub replicas: &'a [ReplicaSample],
    pub verdicts: &'a [Verdict],
}

/// Time columns per timeline lane: a column is one rect at most, so the
/// timeline stays small for runs of any length.
pub const MAX_TIMELINE_COLUMNS: usize = 800;
/// Timeline lanes; processes beyond the last but one share the last lane.
pub const MAX_LANES: usize = 64;
/// Points on the latency plot.
pub const MAX_LATENCY_POINTS: usize = 5_000;
/// Fault windows drawn and listed; later ones are counted, not shown.
pub const MAX_FAULTS: usize = 1_000;
/// Workloads on the replica plot; the palette repeats beyond a dozen anyway.
pub const MAX_WORKLOADS: usize = 12;
/// Distinct error messages listed.
pub const MAX_ERROR_ROWS: usize = 20;
/// Characters of a key or an error message shown; the rest is cut.
pub const MAX_TEXT_CHARS: usize = 200;

const PLOT_WIDTH_PX: f64 = 1200.0;
const MARGIN_LEFT_PX: f64 = 70.0;
const MARGIN_RIGHT_PX: f64 = 20.0;
/// Above the plot: room for the fault labels on the timeline.
const MARGIN_TOP_PX: f64 = 20.0;
/// Below the plot: tick labels and the axis title.
const MARGIN_BOTTOM_PX: f64 = 36.0;
const LANE_HEIGHT_PX: f64 = 12.0;
const LATENCY_HEIGHT_PX: f64 = 360.0;
const REPLICA_HEIGHT_PX: f64 = 240.0;
/// So that a fault of a few milliseconds in a long run is still visible.
const MIN_BAND_WIDTH_PX: f64 = 1.0;
/// A rough width of one character of the plots' 11 px font, to decide
/// whether a fault's label fits inside its band.
const CHAR_WIDTH_PX: f64 = 6.5;
const MAX_TIME_TICKS: usize = 12;
const MAX_VALUE_TICKS: usize = 6;
/// The latency plot's log scale; latencies outside it are drawn at its edge.
const LATENCY_MIN_MS: f64 = 0.1;
const LATENCY_MAX_MS: f64 = 10_000.0;

const OK_COLOUR: &str = "#2e9d3a";
const FAIL_COLOUR: &str = "#d9534f";
const INFO_COLOUR: &str = "#f0900a";
const READ_COLOUR: &str = "#1f77b4";
const WRITE_COLOUR: &str = "#9467bd";
const CAS_COLOUR: &str = "#17a3a3";
const FAULT_PALETTE: [&str; 6] = ["#6a5acd", "#d62f8f", "#8c6d1f", "#3b8ec2", "#5b8c2a", "#b04a1a"];
const FAULT_OPACITY: f64 = 0.16;
const WORKLOAD_PALETTE: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"];

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h2{margin-top:1.6em}\
pre.cmd{background:#f4f4f4;padding:.5em;white-space:pre-wrap;word-break:break-all}\
table{border-collapse:collapse;margin:.5em 0}\
th,td{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
tr.valid td{background:#d8f5d8}tr.invalid td{background:#f8d4d4}tr.unknown td{background:#e6e6e6}\
svg{display:block;max-width:100%;height:auto;font:11px sans-serif}\
.legend span{margin-right:1.4em;white-space:nowrap}\
.legend i{display:inline-block;width:14px;height:10px;margin-right:4px;vertical-align:middle}\
.note{color:#666}";

/// How an operation ended, from best to worst: a timeline column shows the
/// worst outcome in it, since one unknown outcome matters more than many
/// good ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    Fail,
    Info,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Outcome::Ok => OK_COLOUR,
            Outcome::Fail => FAIL_COLOUR,
            Outcome::Info => INFO_COLOUR,
        }
    }
}

/// One operation from its invocation to its completion (or the run's end).
#[derive(Clone, Copy, Debug)]
struct Op<'a> {
    process: u64,
    f: Function,
    key: &'a str,
    error: Option<&'a str>,
    invoked_ns: u64,
    completed_ns: u64,
    outcome: Outcome,
}

impl Op<'_> {
    fn latency_ms(&self) -> f64 {
        (self.completed_ns - self.invoked_ns) as f64 / 1e6
    }
}

struct Paired<'a> {
    ops: Vec<Op<'a>>,
    /// Invocations with no completion, counted as `info` at the run's end.
    never_completed: usize,
    /// Completions of processes with nothing invoked: not drawn.
    unmatched_completions: usize,
}

/// Pairs each invocation with the next completion of its process. Unlike
/// `history::operations` it keeps failures and never rejects a history:
/// a report is most needed when something went wrong.
fn pair(history: &[Entry], end_ns: u64) -> Paired<'_> {
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    let mut ops = Vec::new();
    let mut matched = 0;
    let mut unmatched_completions = 0;
    for e in history {
        let outcome = match e.entry_type {
            EntryType::Invoke => {
                // A second invocation leaves the first one without completion.
                open.insert(e.process, ops.len());
                ops.push(Op {
                    process: e.process,
                    f: e.f,
                    key: &e.key,
                    error: None,
                    invoked_ns: e.time,
                    completed_ns: end_ns.max(e.time),
                    outcome: Outcome::Info,
                });
                continue;
            }
            EntryType::Ok => Outcome::Ok,
            EntryType::Fail => Outcome::Fail,
            EntryType::Info => Outcome::Info,
        };
        let Some(index) = open.remove(&e.process) else {
            unmatched_completions += 1;
            continue;
        };
        let op = &mut ops[index];
        op.completed_ns = e.time.max(op.invoked_ns);
        op.outcome = outcome;
        op.error = e.error.as_deref();
        matched += 1;
    }
    Paired { never_completed: ops.len() - matched, ops, unmatched_completions }
}

/// Makes text safe inside HTML and SVG, as content and in quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes text from the history, cut to `MAX_TEXT_CHARS`: an error may
/// carry a whole response body.
fn escape_clipped(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((cut, _)) => format!("{}…", escape(&text[..cut])),
        None => escape(text),
    }
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn function_name(f: Function) -> &'static str {
    match f {
        Function::Read => "read",
        Function::Write => "write",
        Function::Cas => "cas",
    }
}

fn function_colour(f: Function) -> &'static str {
    match f {
        Function::Read => READ_COLOUR,
        Function::Write => WRITE_COLOUR,
        Function::Cas => CAS_COLOUR,
    }
}

/// The smallest step of the form 1, 2 or 5 × 10^k that cuts `span` into
/// at most `max_ticks` intervals.
fn nice_step(span: f64, max_ticks: usize) -> f64 {
    let raw = span / max_ticks as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0].into_iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude)
}

/// Tick values from 0 to `span`, `step` apart, with their labels, with as
/// many decimals as the step needs.
fn ticks(span: f64, step: f64) -> Vec<(f64, String)> {
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
    // The tolerance keeps a tick at `span` itself despite rounding.
    let count = (span / step + 1e-6).floor() as usize;
    (0..=count).map(|i| i as f64 * step).map(|v| (v, format!("{v:.decimals$}"))).collect()
}

/// A legend entry: a swatch styled by `style`, then a label.
fn swatch(style: &str, label: &str) -> String {
    format!("<span><i style=\"{style}\"></i>{}</span>", escape(label))
}

fn legend(out: &mut String, items: &[String]) {
    out.push_str(&format!("<p class=\"legend\">{}</p>\n", items.concat()));
}

/// The faults to draw, in time order, with a colour per kind shared by all plots.
struct Faults<'a> {
    shown: Vec<&'a FaultWindow>,
    omitted: usize,
    colours: BTreeMap<&'a str, &'static str>,
}

impl<'a> Faults<'a> {
    fn new(windows: &'a [FaultWindow]) -> Faults<'a> {
        let mut shown: Vec<&FaultWindow> = windows.iter().collect();
        shown.sort_by_key(|w| (w.start_ns, w.end_ns));
        let omitted = shown.len().saturating_sub(MAX_FAULTS);
        shown.truncate(MAX_FAULTS);
        let kinds: BTreeSet<&str> = shown.iter().map(|w| w.fault.as_str()).collect();
        let colours = kinds.into_iter().enumerate().map(|(i, kind)| (kind, FAULT_PALETTE[i % FAULT_PALETTE.len()])).collect();
        Faults { shown, omitted, colours }
    }

    fn legend_items(&self) -> Vec<String> {
        self.colours.iter().map(|(kind, colour)| swatch(&format!("background:{colour};opacity:.4"), kind)).collect()
    }
}

fn peers_text(peers: &[u64]) -> String {
    peers.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// The drawing area of one plot: time runs left to right over the whole
/// run, the same in every plot so that they line up.
struct Frame {
    end_ns: u64,
    height_px: f64,
}

impl Frame {
    fn x_px(&self, time_ns: u64) -> f64 {
        MARGIN_LEFT_PX + seconds(time_ns.min(self.end_ns)) / seconds(self.end_ns) * PLOT_WIDTH_PX
    }

    fn bottom_px(&self) -> f64 {
        MARGIN_TOP_PX + self.height_px
    }

    fn open(&self, out: &mut String, id: &str, label: &str) {
        let width = MARGIN_LEFT_PX + PLOT_WIDTH_PX + MARGIN_RIGHT_PX;
        let height = self.bottom_px() + MARGIN_BOTTOM_PX;
        out.push_str(&format!(
            "<svg id=\"{id}\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{}\">\n",
            escape(label)
        ));
    }

    /// The time ticks: where they are drawn, and their labels in seconds.
    fn time_ticks(&self) -> Vec<(f64, String)> {
        let end_s = seconds(self.end_ns);
        ticks(end_s, nice_step(end_s, MAX_TIME_TICKS)).into_iter().map(|(t_s, label)| (MARGIN_LEFT_PX + t_s / end_s * PLOT_WIDTH_PX, label)).collect()
    }

    /// Vertical grid lines at the time ticks, behind everything else.
    fn time_grid(&self, out: &mut String) {
        let mut d = String::new();
        for (x, _) in self.time_ticks() {
            d.push_str(&format!("M{x:.1},{MARGIN_TOP_PX:.1}V{:.1}", self.bottom_px()));
        }
        out.push_str(&format!("<path d=\"{d}\" stroke=\"#eee\" fill=\"none\"/>\n"));
    }

    /// Translucent bands over the plot's height, one per fault, with the
    /// fault as hover text and, where it fits before the next band, as a
    /// label above the band.
    fn bands(&self, out: &mut String, faults: &Faults, labelled: bool) {
        for (i, w) in faults.shown.iter().enumerate() {
            let x = self.x_px(w.start_ns);
            let width = (self.x_px(w.end_ns.max(w.start_ns)) - x).max(MIN_BAND_WIDTH_PX);
            let colour = faults.colours[w.fault.as_str()];
            let hover = format!(
                "{} on peers [{}]: {:.3} s to {:.3} s",
                w.fault,
                peers_text(&w.peers),
                seconds(w.start_ns),
                seconds(w.end_ns)
            );
            out.push_str(&format!(
                "<rect class=\"fault\" x=\"{x:.1}\" y=\"{MARGIN_TOP_PX:.1}\" width=\"{width:.1}\" height=\"{:.1}\" fill=\"{colour}\" fill-opacity=\"{FAULT_OPACITY}\"><title>{}</title></rect>\n",
                self.height_px,
                escape(&hover)
            ));
            let room = faults.shown.get(i + 1).map_or(MARGIN_LEFT_PX + PLOT_WIDTH_PX + MARGIN_RIGHT_PX, |next| self.x_px(next.start_ns)) - x;
            if labelled && room >= w.fault.chars().count() as f64 * CHAR_WIDTH_PX + 4.0 {
                out.push_str(&format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{}</text>\n",
                    x + 2.0,
                    MARGIN_TOP_PX - 6.0,
                    escape(&w.fault)
                ));
            }
        }
    }

    /// The time axis under the plot, labelled in seconds.
    fn time_axis(&self, out: &mut String, title: &str) {
        let bottom = self.bottom_px();
        let mut d = format!("M{MARGIN_LEFT_PX:.1},{bottom:.1}H{:.1}", MARGIN_LEFT_PX + PLOT_WIDTH_PX);
        let mut labels = String::new();
        for (x, label) in self.time_ticks() {
            d.push_str(&format!("M{x:.1},{bottom:.1}v4"));
            labels.push_str(&format!("<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>\n", bottom + 15.0));
        }
        out.push_str(&format!("<path d=\"{d}\" stroke=\"#555\" fill=\"none\"/>\n{labels}"));
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            MARGIN_LEFT_PX + PLOT_WIDTH_PX / 2.0,
            bottom + 31.0,
            escape(title)
        ));
    }

    /// Horizontal grid lines and labels for a value axis; `y_px` maps a
    /// tick's value to its height.
    fn value_axis(&self, out: &mut String, ticks: &[(f64, String)], y_px: impl Fn(f64) -> f64, title: &str) {
        let mut d = String::new();
        for (value, label) in ticks {
            let y = y_px(*value);
            d.push_str(&format!("M{MARGIN_LEFT_PX:.1},{y:.1}H{:.1}", MARGIN_LEFT_PX + PLOT_WIDTH_PX));
            out.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>\n", MARGIN_LEFT_PX - 6.0, y + 4.0));
        }
        out.push_str(&format!("<path d=\"{d}\" stroke=\"#eee\" fill=\"none\"/>\n"));
        let middle = MARGIN_TOP_PX + self.height_px / 2.0;
        out.push_str(&format!(
            "<text transform=\"translate(14,{middle:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
            escape(title)
        ));
    }
}

/// The run's end as drawn: its duration, or later if anything happened after it.
fn run_end_ns(input: &ReportInput) -> u64 {
    let history = input.history.iter().map(|e| e.time);
    let faults = input.faults.iter().map(|w| w.end_ns.max(w.start_ns));
    let replicas = input.replicas.iter().map(|s| s.time_ns);
    // At least 1 ns: every plot divides by it.
    history.chain(faults).chain(replicas).fold(input.duration_ns, u64::max).max(1)
}

/// Renders the report page for one run.
pub fn render(input: &ReportInput) -> String {
    let end_ns = run_end_ns(input);
    let paired = pair(input.history, end_ns);
    let faults = Faults::new(input.faults);
    let mut out = String::new();
    out.push_str(&format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{} (seed {})</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&input.title),
        input.seed
    ));
    summary(&mut out, input, &paired);
    timeline(&mut out, &paired.ops, &faults, end_ns);
    latency(&mut out, &paired.ops, &faults, end_ns);
    replicas(&mut out, input.replicas, &faults, end_ns);
    fault_table(&mut out, &faults);
    out.push_str("</body>\n</html>\n");
    out
}

/// Title, seed, how to reproduce, the verdicts and the counts of operations.
fn summary(out: &mut String, input: &ReportInput, paired: &Paired) {
    out.push_str(&format!("<h1>{}</h1>\n", escape(&input.title)));
    out.push_str(&format!(
        "<p>seed <b>{}</b> · duration {:.1} s · {} history entries</p>\n",
        input.seed,
        seconds(input.duration_ns),
        input.history.len()
    ));
    out.push_str(&format!("<p>Reproduce with:</p>\n<pre class=\"cmd\">{}</pre>\n", escape(&input.reproduce)));

    out.push_str("<h2>Verdicts</h2>\n");
    if input.verdicts.is_empty() {
        out.push_str("<p>no verdicts</p>\n");
    } else {
        out.push_str("<table>\n<tr><th>workload</th><th>verdict</th><th>summary</th></tr>\n");
        for v in input.verdicts {
            // The class comes from a fixed set: the caller's string is only shown.
            let class = match v.valid.as_str() {
                "valid" => "valid",
                "invalid" => "invalid",
                _ => "unknown",
            };
            out.push_str(&format!(
                "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&v.workload),
                escape(&v.valid),
                escape(&v.summary)
            ));
        }
        out.push_str("</table>\n");
    }

    out.push_str("<h2>Operations</h2>\n<table>\n");
    let count = |outcome: Outcome| paired.ops.iter().filter(|op| op.outcome == outcome).count();
    out.push_str(&format!("<tr><th>invoked</th><td class=\"n\">{}</td></tr>\n", paired.ops.len()));
    for outcome in [Outcome::Ok, Outcome::Fail, Outcome::Info] {
        out.push_str(&format!("<tr><th>{}</th><td class=\"n\">{}</td></tr>\n", outcome.name(), count(outcome)));
    }
    out.push_str("</table>\n");
    if paired.never_completed > 0 {
        out.push_str(&format!(
            "<p class=\"note\">{} invocations never completed: counted as info, ending at the run's end.</p>\n",
            paired.never_completed
        ));
    }
    if paired.unmatched_completions > 0 {
        out.push_str(&format!(
            "<p class=\"note\">{} completions had no invocation before them and are left out.</p>\n",
            paired.unmatched_completions
        ));
    }
    errors(out, &paired.ops);
}

/// The most frequent error messages of failed and unknown operations.
fn errors(out: &mut String, ops: &[Op]) {
    let mut counts: BTreeMap<(Outcome, &str), u64> = BTreeMap::new();
    for op in ops {
        if let Some(error) = op.error {
            *counts.entry((op.outcome, error)).or_default() += 1;
        }
    }
    if counts.is_empty() {
        return;
    }
    let mut rows: Vec<((Outcome, &str), u64)> = counts.into_iter().collect();
    // Stable: equal counts keep the map's order.
    rows.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    out.push_str("<h3>Errors</h3>\n<table>\n<tr><th>count</th><th>outcome</th><th>error</th></tr>\n");
    for ((outcome, error), n) in rows.iter().take(MAX_ERROR_ROWS) {
        out.push_str(&format!(
            "<tr><td class=\"n\">{n}</td><td>{}</td><td>{}</td></tr>\n",
            outcome.name(),
            escape_clipped(error)
        ));
    }
    out.push_str("</table>\n");
    if rows.len() > MAX_ERROR_ROWS {
        out.push_str(&format!("<p class=\"note\">{} more distinct errors not listed.</p>\n", rows.len() - MAX_ERROR_ROWS));
    }
}

/// The timeline column a moment falls in.
fn column(time_ns: u64, end_ns: u64) -> usize {
    let column = u128::from(time_ns.min(end_ns)) * MAX_TIMELINE_COLUMNS as u128 / u128::from(end_ns);
    (column as usize).min(MAX_TIMELINE_COLUMNS - 1)
}

/// One lane per process, its operations binned into time columns: each
/// column an operation spans shows the worst outcome among them.
fn timeline(out: &mut String, ops: &[Op], faults: &Faults, end_ns: u64) {
    out.push_str("<h2>Timeline</h2>\n");
    if ops.is_empty() {
        out.push_str("<p>no operations</p>\n");
        return;
    }
    let processes: Vec<u64> = ops.iter().map(|op| op.process).collect::<BTreeSet<u64>>().into_iter().collect();
    let lanes = processes.len().min(MAX_LANES);
    let lane_of: BTreeMap<u64, usize> = processes.iter().enumerate().map(|(i, p)| (*p, i.min(MAX_LANES - 1))).collect();
    let mut worst: Vec<Option<Outcome>> = vec![None; lanes * MAX_TIMELINE_COLUMNS];
    let mut lane_counts = vec![[0u64; 3]; lanes];
    for op in ops {
        let lane = lane_of[&op.process];
        lane_counts[lane][op.outcome as usize] += 1;
        let cells = &mut worst[lane * MAX_TIMELINE_COLUMNS..(lane + 1) * MAX_TIMELINE_COLUMNS];
        for cell in &mut cells[column(op.invoked_ns, end_ns)..=column(op.completed_ns, end_ns)] {
            *cell = (*cell).max(Some(op.outcome));
        }
    }

    let column_ms = seconds(end_ns) * 1e3 / MAX_TIMELINE_COLUMNS as f64;
    out.push_str(&format!(
        "<p class=\"note\">One lane per client process; each column ({column_ms:.0} ms) shows the worst outcome of the operations running in it (info, then fail, then ok). Hover over a band for its fault.</p>\n"
    ));
    let mut items = vec![
        swatch(&format!("background:{OK_COLOUR}"), "ok"),
        swatch(&format!("background:{FAIL_COLOUR}"), "fail"),
        swatch(&format!("background:{INFO_COLOUR}"), "info (unknown outcome)"),
    ];
    items.extend(faults.legend_items());
    legend(out, &items);

    let frame = Frame { end_ns, height_px: lanes as f64 * LANE_HEIGHT_PX };
    frame.open(out, "timeline", "operations over time, one lane per process");
    frame.time_grid(out);
    frame.bands(out, faults, true);
    for (lane, counts) in lane_counts.iter().enumerate() {
        let (name, whose) = if lane == MAX_LANES - 1 && processes.len() > MAX_LANES {
            ("others".to_string(), format!("{} processes", processes.len() - lane))
        } else {
            (format!("p{}", processes[lane]), format!("process {}", processes[lane]))
        };
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{name}<title>{whose}: {} ok, {} fail, {} info</title></text>\n",
            MARGIN_LEFT_PX - 6.0,
            MARGIN_TOP_PX + (lane as f64 + 0.5) * LANE_HEIGHT_PX + 4.0,
            counts[0],
            counts[1],
            counts[2]
        ));
    }
    let column_px = PLOT_WIDTH_PX / MAX_TIMELINE_COLUMNS as f64;
    out.push_str("<g id=\"timeline-cells\" shape-rendering=\"crispEdges\">\n");
    for (i, cell) in worst.iter().enumerate() {
        let Some(outcome) = cell else { continue };
        let (lane, column) = (i / MAX_TIMELINE_COLUMNS, i % MAX_TIMELINE_COLUMNS);
        out.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{column_px:.1}\" height=\"{:.1}\" fill=\"{}\"/>\n",
            MARGIN_LEFT_PX + column as f64 * column_px,
            MARGIN_TOP_PX + lane as f64 * LANE_HEIGHT_PX + 1.0,
            LANE_HEIGHT_PX - 2.0,
            outcome.colour()
        ));
    }
    out.push_str("</g>\n");
    frame.time_axis(out, "time since the run started (s)");
    out.push_str("</svg>\n");
}

/// Every k-th item, k chosen so that at most `limit` remain.
fn every_kth<T: Copy>(items: &[T], limit: usize) -> Vec<T> {
    if limit == 0 {
        return Vec::new();
    }
    items.iter().step_by(items.len().div_ceil(limit).max(1)).copied().collect()
}

/// Latency against completion time, log scale: ok operations by function,
/// unknown outcomes as crosses. Unknown outcomes are kept first, since they
/// are the rare, interesting ones.
fn latency(out: &mut String, ops: &[Op], faults: &Faults, end_ns: u64) {
    out.push_str("<h2>Latency</h2>\n");
    let ok: Vec<&Op> = ops.iter().filter(|op| op.outcome == Outcome::Ok).collect();
    let info: Vec<&Op> = ops.iter().filter(|op| op.outcome == Outcome::Info).collect();
    if ok.is_empty() && info.is_empty() {
        out.push_str("<p>no ok or info operations</p>\n");
        return;
    }
    let info_shown = every_kth(&info, MAX_LATENCY_POINTS);
    let ok_shown = every_kth(&ok, MAX_LATENCY_POINTS - info_shown.len());
    out.push_str(&format!(
        "<p class=\"note\">From invocation to completion, by completion time; {} of {} ok and {} of {} info operations shown, failed ones not at all. Latencies outside {LATENCY_MIN_MS} ms to {} s are drawn at the edge.</p>\n",
        ok_shown.len(),
        ok.len(),
        info_shown.len(),
        info.len(),
        LATENCY_MAX_MS / 1e3
    ));
    let mut items: Vec<String> = [Function::Read, Function::Write, Function::Cas]
        .into_iter()
        .map(|f| swatch(&format!("background:{};border-radius:50%;width:8px;height:8px", function_colour(f)), &format!("{} ok", function_name(f))))
        .collect();
    items.push(format!("<span><b style=\"color:{INFO_COLOUR}\">× </b>info (unknown outcome)</span>"));
    items.extend(faults.legend_items());
    legend(out, &items);

    let frame = Frame { end_ns, height_px: LATENCY_HEIGHT_PX };
    let (log_min, log_max) = (LATENCY_MIN_MS.log10(), LATENCY_MAX_MS.log10());
    let y_px = |latency_ms: f64| {
        let log = latency_ms.clamp(LATENCY_MIN_MS, LATENCY_MAX_MS).log10();
        frame.bottom_px() - (log - log_min) / (log_max - log_min) * LATENCY_HEIGHT_PX
    };
    frame.open(out, "latency", "latency of operations over time");
    frame.time_grid(out);
    let decades: Vec<(f64, String)> = ["0.1 ms", "1 ms", "10 ms", "100 ms", "1 s", "10 s"]
        .iter()
        .enumerate()
        .map(|(i, label)| (LATENCY_MIN_MS * 10f64.powi(i as i32), label.to_string()))
        .collect();
    frame.value_axis(out, &decades, y_px, "latency (log scale)");
    frame.bands(out, faults, false);
    out.push_str("<g id=\"latency-points\">\n");
    for op in &ok_shown {
        out.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{}\" fill-opacity=\"0.6\"/>\n",
            frame.x_px(op.completed_ns),
            y_px(op.latency_ms()),
            function_colour(op.f)
        ));
    }
    for op in &info_shown {
        let hover = format!(
            "p{} {} {} invoked at {:.3} s, {:.1} ms: ",
            op.process,
            function_name(op.f),
            op.key,
            seconds(op.invoked_ns),
            op.latency_ms()
        );
        out.push_str(&format!(
            "<path d=\"M{:.1},{:.1}l6,6m0,-6l-6,6\" stroke=\"{INFO_COLOUR}\" stroke-width=\"1.5\"><title>{}{}</title></path>\n",
            frame.x_px(op.completed_ns) - 3.0,
            y_px(op.latency_ms()) - 3.0,
            escape_clipped(&hover),
            escape_clipped(op.error.unwrap_or("no completion"))
        ));
    }
    out.push_str("</g>\n");
    frame.time_axis(out, "completion time since the run started (s)");
    out.push_str("</svg>\n");
}

/// A step line through `(x, y)` points in time order, held to `end_x_px`.
/// Points within one pixel column collapse to a vertical stroke over their
/// range, so the path has a few commands per column however many samples.
fn step_path(points: &[(f64, f64)], end_x_px: f64) -> String {
    let mut d = String::new();
    let mut rest = points;
    while let Some(&(x, first_y)) = rest.first() {
        let in_column = rest.iter().take_while(|(other_x, _)| other_x.floor() == x.floor()).count();
        let (group, next) = rest.split_at(in_column);
        let low = group.iter().map(|(_, y)| *y).fold(f64::INFINITY, f64::min);
        let high = group.iter().map(|(_, y)| *y).fold(f64::NEG_INFINITY, f64::max);
        let last = group[group.len() - 1].1;
        if d.is_empty() {
            d.push_str(&format!("M{x:.1},{first_y:.1}"));
        } else {
            d.push_str(&format!("H{x:.1}"));
        }
        if low < high {
            d.push_str(&format!("V{low:.1}V{high:.1}"));
        }
        d.push_str(&format!("V{last:.1}"));
        rest = next;
    }
    if !d.is_empty() {
        d.push_str(&format!("H{end_x_px:.1}"));
    }
    d
}

/// Ready replicas of each workload as a step line, the desired count dashed.
fn replicas(out: &mut String, samples: &[ReplicaSample], faults: &Faults, end_ns: u64) {
    out.push_str("<h2>Ready replicas</h2>\n");
    if samples.is_empty() {
        out.push_str("<p>no replica samples</p>\n");
        return;
    }
    let mut by_workload: BTreeMap<&str, Vec<&ReplicaSample>> = BTreeMap::new();
    for s in samples {
        by_workload.entry(s.workload.as_str()).or_default().push(s);
    }
    let omitted = by_workload.len().saturating_sub(MAX_WORKLOADS);
    let mut workloads: Vec<(&str, Vec<&ReplicaSample>)> = by_workload.into_iter().take(MAX_WORKLOADS).collect();
    for (_, samples) in &mut workloads {
        samples.sort_by_key(|s| s.time_ns);
    }
    let max_value = workloads.iter().flat_map(|(_, samples)| samples.iter().map(|s| s.ready.max(s.desired))).max().unwrap_or(0).max(1);
    if omitted > 0 {
        out.push_str(&format!("<p class=\"note\">{omitted} more workloads not drawn.</p>\n"));
    }
    let mut items = Vec::new();
    for (i, (name, _)) in workloads.iter().enumerate() {
        let colour = WORKLOAD_PALETTE[i % WORKLOAD_PALETTE.len()];
        items.push(swatch(&format!("height:0;border-top:2px solid {colour}"), &format!("{name} ready")));
        items.push(swatch(&format!("height:0;border-top:2px dashed {colour}"), &format!("{name} desired")));
    }
    items.extend(faults.legend_items());
    legend(out, &items);

    let frame = Frame { end_ns, height_px: REPLICA_HEIGHT_PX };
    let y_px = |value: f64| frame.bottom_px() - value / max_value as f64 * REPLICA_HEIGHT_PX;
    frame.open(out, "replicas", "ready replicas over time");
    frame.time_grid(out);
    // Whole replicas only.
    let step = nice_step(max_value as f64, MAX_VALUE_TICKS).max(1.0);
    frame.value_axis(out, &ticks(max_value as f64, step), y_px, "replicas");
    frame.bands(out, faults, false);
    let end_x_px = frame.x_px(end_ns);
    for (i, (name, samples)) in workloads.iter().enumerate() {
        let colour = WORKLOAD_PALETTE[i % WORKLOAD_PALETTE.len()];
        for desired in [false, true] {
            let (dash, what) = if desired { (" stroke-dasharray=\"6 4\"", "desired") } else { ("", "ready") };
            let value = |s: &ReplicaSample| if desired { s.desired } else { s.ready };
            let points: Vec<(f64, f64)> = samples.iter().map(|s| (frame.x_px(s.time_ns), y_px(value(s) as f64))).collect();
            out.push_str(&format!(
                "<path d=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"{dash}><title>{} {what}</title></path>\n",
                step_path(&points, end_x_px),
                escape(name)
            ));
        }
    }
    frame.time_axis(out, "time since the run started (s)");
    out.push_str("</svg>\n");
}

fn fault_table(out: &mut String, faults: &Faults) {
    out.push_str("<h2>Faults</h2>\n");
    if faults.shown.is_empty() {
        out.push_str("<p>no faults</p>\n");
        return;
    }
    out.push_str("<table>\n<tr><th>start (s)</th><th>end (s)</th><th>duration (s)</th><th>fault</th><th>peers</th></tr>\n");
    for w in &faults.shown {
        out.push_str(&format!(
            "<tr><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td><td>{}</td><td>{}</td></tr>\n",
            seconds(w.start_ns),
            seconds(w.end_ns),
            seconds(w.end_ns.saturating_sub(w.start_ns)),
            escape(&w.fault),
            peers_text(&w.peers)
        ));
    }
    out.push_str("</table>\n");
    if faults.omitted > 0 {
        out.push_str(&format!("<p class=\"note\">{} later faults not shown.</p>\n", faults.omitted));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    fn entry(entry_type: EntryType, process: u64, time: u64, f: Function, key: &str, error: Option<&str>) -> Entry {
        Entry { entry_type, process, time, f, key: key.to_string(), value: Value::Null, error: error.map(str::to_string) }
    }

    /// Appends one operation: its invocation and its completion.
    fn op(history: &mut Vec<Entry>, process: u64, f: Function, invoked_ns: u64, completed_ns: u64, outcome: EntryType) {
        history.push(entry(EntryType::Invoke, process, invoked_ns, f, "r1", None));
        let error = (outcome != EntryType::Ok).then_some("timed out");
        history.push(entry(outcome, process, completed_ns, f, "r1", error));
    }

    fn input<'a>(history: &'a [Entry], faults: &'a [FaultWindow], replicas: &'a [ReplicaSample], duration_ns: u64) -> ReportInput<'a> {
        ReportInput {
            title: "register under partitions".to_string(),
            seed: 1_234_567,
            reproduce: "flotilla-chaos --seed 1234567 --out 'a&b' <results>".to_string(),
            duration_ns,
            history,
            faults,
            replicas,
            verdicts: &[],
        }
    }

    /// `processes` clients, each running `per_process` back-to-back
    /// operations of 10 to 59 ms; every 97th ends in info, every 31st fails.
    fn synthetic(processes: u64, per_process: u64) -> Vec<Entry> {
        let mut history = Vec::new();
        for p in 0..processes {
            let mut t = p * MS;
            for i in 0..per_process {
                let latency = (10 + (i * 7 + p * 13) % 50) * MS;
                let outcome = match i {
                    _ if i % 97 == 5 => EntryType::Info,
                    _ if i % 31 == 3 => EntryType::Fail,
                    _ => EntryType::Ok,
                };
                let f = [Function::Read, Function::Write, Function::Cas][(i % 3) as usize];
                op(&mut history, p, f, t, t + latency, outcome);
                t += latency + MS;
            }
        }
        history
    }

    /// The text of the group `<g id="{id}" …>` up to its end.
    fn group<'a>(page: &'a str, id: &str) -> &'a str {
        let start = page.find(&format!("<g id=\"{id}\"")).expect("group present");
        let end = start + page[start..].find("</g>").expect("group closed");
        &page[start..end]
    }

    fn attribute(tag: &str, name: &str) -> f64 {
        let start = tag.find(&format!(" {name}=\"")).expect("attribute present") + name.len() + 3;
        let len = tag[start..].find('"').expect("attribute closed");
        tag[start..start + len].parse().expect("a number")
    }

    #[test]
    fn page_has_the_summary_escaped() {
        let mut history = Vec::new();
        op(&mut history, 0, Function::Read, 0, 5 * MS, EntryType::Ok);
        let verdicts = [
            Verdict { workload: "register".into(), valid: "valid".into(), summary: "8 keys".into() },
            Verdict { workload: "deployment".into(), valid: "invalid".into(), summary: "2 < 3 ready".into() },
            Verdict { workload: "statefulset".into(), valid: "maybe".into(), summary: String::new() },
        ];
        let page = render(&ReportInput { verdicts: &verdicts, ..input(&history, &[], &[], S) });
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("1234567"));
        assert!(page.contains("flotilla-chaos --seed 1234567 --out &#39;a&amp;b&#39; &lt;results&gt;"));
        assert!(page.contains("<tr class=\"valid\"><td>register</td>"));
        assert!(page.contains("<tr class=\"invalid\"><td>deployment</td><td>invalid</td><td>2 &lt; 3 ready</td>"));
        assert!(page.contains("<tr class=\"unknown\"><td>statefulset</td><td>maybe</td>"));
        assert!(!page.contains("src=") && !page.contains("href="), "nothing external");
        // The sections in the order people read them.
        let order = ["<h2>Verdicts", "<h2>Operations", "<svg id=\"timeline\"", "<svg id=\"latency\"", "<h2>Ready replicas", "<h2>Faults"];
        let positions: Vec<usize> = order.iter().map(|s| page.find(s).expect(s)).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    }

    #[test]
    fn text_from_the_history_is_escaped() {
        let script = "<script>alert(1)</script>";
        let history = [
            entry(EntryType::Invoke, 0, 0, Function::Write, script, None),
            entry(EntryType::Info, 0, 3 * MS, Function::Write, script, Some(script)),
        ];
        let faults = [FaultWindow { fault: script.to_string(), peers: vec![1], start_ns: 0, end_ns: S }];
        let replicas = [ReplicaSample { time_ns: 0, workload: script.to_string(), ready: 1, desired: 1 }];
        let page = render(&ReportInput { title: script.to_string(), ..input(&history, &faults, &replicas, 2 * S) });
        assert!(!page.contains("<script"));
        assert!(page.contains("p0 write &lt;script&gt;alert(1)&lt;/script&gt; invoked"), "the key, in the hover text");
        assert!(page.contains("<td>info</td><td>&lt;script&gt;alert(1)&lt;/script&gt;</td>"), "the error");
    }

    #[test]
    fn a_fault_band_spans_its_window() {
        let mut history = Vec::new();
        op(&mut history, 0, Function::Read, 0, 5 * MS, EntryType::Ok);
        let faults = [FaultWindow { fault: "partition".into(), peers: vec![2, 4], start_ns: 10 * S, end_ns: 25 * S }];
        let replicas = [ReplicaSample { time_ns: S, workload: "deployment".into(), ready: 3, desired: 3 }];
        let page = render(&input(&history, &faults, &replicas, 100 * S));
        let bands: Vec<&str> = page.match_indices("<rect class=\"fault\"").map(|(i, _)| &page[i..i + page[i..].find('>').unwrap()]).collect();
        assert_eq!(bands.len(), 3, "one per plot");
        for band in bands {
            assert!((attribute(band, "x") - (MARGIN_LEFT_PX + 0.10 * PLOT_WIDTH_PX)).abs() < 0.06, "{band}");
            assert!((attribute(band, "width") - 0.15 * PLOT_WIDTH_PX).abs() < 0.06, "{band}");
        }
        assert!(page.contains("<title>partition on peers [2, 4]: 10.000 s to 25.000 s</title>"));
        assert!(page.contains("<td class=\"n\">10.000</td><td class=\"n\">25.000</td><td class=\"n\">15.000</td><td>partition</td><td>2, 4</td>"));
    }

    #[test]
    fn timeline_is_binned() {
        let history = synthetic(10, 10_000);
        let end_ns = history.iter().map(|e| e.time).max().unwrap();
        let page = render(&input(&history, &[], &[], end_ns));
        let cells = group(&page, "timeline-cells").matches("<rect").count();
        // Every lane is busy all the time, so every column is drawn, once.
        assert_eq!(cells, 10 * MAX_TIMELINE_COLUMNS);
        assert!(page.len() < 3_000_000, "{} bytes", page.len());

        let history = synthetic(100, 1_000);
        let page = render(&input(&history, &[], &[], 0));
        assert!(group(&page, "timeline-cells").matches("<rect").count() <= MAX_LANES * MAX_TIMELINE_COLUMNS);
        assert!(page.contains(">others<title>37 processes: "));
    }

    #[test]
    fn latency_points_are_capped() {
        let history = synthetic(10, 10_000);
        let page = render(&input(&history, &[], &[], 0));
        let points = group(&page, "latency-points");
        let info = history.iter().filter(|e| e.entry_type == EntryType::Info).count();
        assert!(info > 0 && info < MAX_LATENCY_POINTS);
        assert_eq!(points.matches("<path").count(), info, "all info kept");
        assert!(points.matches("<circle").count() + info <= MAX_LATENCY_POINTS);
        assert!(points.matches("<circle").count() > MAX_LATENCY_POINTS / 2, "the budget is used");

        // More info than points: info only, still capped.
        let mut history = Vec::new();
        for i in 0..(MAX_LATENCY_POINTS as u64 * 2 + 1) {
            op(&mut history, 0, Function::Write, i * 10 * MS, i * 10 * MS + MS, EntryType::Info);
        }
        let page = render(&input(&history, &[], &[], 0));
        let points = group(&page, "latency-points");
        assert!(points.matches("<path").count() <= MAX_LATENCY_POINTS);
        assert_eq!(points.matches("<circle").count(), 0);
    }

    #[test]
    fn a_column_shows_its_worst_outcome() {
        // Columns of one second: both operations fall in the first.
        let mut history = Vec::new();
        op(&mut history, 0, Function::Read, 100 * MS, 200 * MS, EntryType::Ok);
        op(&mut history, 0, Function::Write, 300 * MS, 400 * MS, EntryType::Info);
        op(&mut history, 0, Function::Cas, 500 * MS, 600 * MS, EntryType::Fail);
        op(&mut history, 1, Function::Read, 100 * MS, 200 * MS, EntryType::Ok);
        op(&mut history, 1, Function::Read, 300 * MS, 400 * MS, EntryType::Fail);
        let page = render(&input(&history, &[], &[], MAX_TIMELINE_COLUMNS as u64 * S));
        let cells: Vec<&str> = group(&page, "timeline-cells").lines().skip(1).collect();
        assert_eq!(cells.len(), 2);
        assert!(cells[0].contains(&format!("fill=\"{INFO_COLOUR}\"")), "{}", cells[0]);
        assert!(cells[1].contains(&format!("fill=\"{FAIL_COLOUR}\"")), "{}", cells[1]);
        assert_eq!(INFO_COLOUR, "#f0900a", "orange");
    }

    #[test]
    fn an_operation_paints_every_column_it_spans() {
        let mut history = Vec::new();
        op(&mut history, 0, Function::Write, S / 2, 10 * S + S / 2, EntryType::Ok);
        let page = render(&input(&history, &[], &[], MAX_TIMELINE_COLUMNS as u64 * S));
        assert_eq!(group(&page, "timeline-cells").matches("<rect").count(), 11);
    }

    #[test]
    fn an_unmatched_invoke_is_info_until_the_end() {
        let mut history = Vec::new();
        op(&mut history, 0, Function::Read, 0, 5 * MS, EntryType::Ok);
        history.push(entry(EntryType::Invoke, 1, 2 * S, Function::Write, "r2", None));
        // A completion nobody invoked is left out, not paired.
        history.push(entry(EntryType::Ok, 2, 3 * S, Function::Read, "r2", None));
        let paired = pair(&history, 10 * S);
        assert_eq!(paired.ops.len(), 2);
        assert_eq!((paired.ops[1].outcome, paired.ops[1].completed_ns), (Outcome::Info, 10 * S));
        assert_eq!((paired.never_completed, paired.unmatched_completions), (1, 1));
        let page = render(&input(&history, &[], &[], 10 * S));
        assert!(page.contains("<tr><th>invoked</th><td class=\"n\">2</td></tr>"));
        assert!(page.contains("<tr><th>ok</th><td class=\"n\">1</td></tr>"));
        assert!(page.contains("<tr><th>info</th><td class=\"n\">1</td></tr>"));
        assert!(page.contains("1 invocations never completed"));
        assert!(page.contains("8000.0 ms: no completion"), "latency to the run's end");
    }

    #[test]
    fn replicas_are_step_lines() {
        let mut history = Vec::new();
        op(&mut history, 0, Function::Read, 0, 5 * MS, EntryType::Ok);
        let page = render(&input(&history, &[], &[], 10 * S));
        assert!(page.contains("<p>no replica samples</p>"));
        assert!(!page.contains("<svg id=\"replicas\""));

        let replicas = [
            ReplicaSample { time_ns: 5 * S, workload: "deployment".into(), ready: 1, desired: 3 },
            ReplicaSample { time_ns: 0, workload: "deployment".into(), ready: 3, desired: 3 },
        ];
        let page = render(&input(&history, &[], &replicas, 10 * S));
        assert!(!page.contains("no replica samples"));
        // Out of order in, in time order out: 3 from 0 s, 1 from 5 s, held to the end.
        let (x0, x5, x10) = (MARGIN_LEFT_PX, MARGIN_LEFT_PX + PLOT_WIDTH_PX / 2.0, MARGIN_LEFT_PX + PLOT_WIDTH_PX);
        let (y3, y1) = (MARGIN_TOP_PX, MARGIN_TOP_PX + REPLICA_HEIGHT_PX * 2.0 / 3.0);
        assert!(page.contains(&format!("d=\"M{x0:.1},{y3:.1}V{y3:.1}H{x5:.1}V{y1:.1}H{x10:.1}\"")), "ready");
        assert!(page.contains(&format!("d=\"M{x0:.1},{y3:.1}V{y3:.1}H{x5:.1}V{y3:.1}H{x10:.1}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" stroke-dasharray")), "desired");
    }

    #[test]
    fn samples_in_one_pixel_collapse() {
        let points: Vec<(f64, f64)> = (0..10_000).map(|i| (100.0 + i as f64 / 10_000.0, (i % 7) as f64)).collect();
        assert_eq!(step_path(&points, 200.0), "M100.0,0.0V0.0V6.0V3.0H200.0");
    }

    #[test]
    fn rendering_is_deterministic() {
        let history = synthetic(7, 500);
        let faults = [
            FaultWindow { fault: "kill".into(), peers: vec![3], start_ns: 4 * S, end_ns: 6 * S },
            FaultWindow { fault: "partition".into(), peers: vec![1, 2], start_ns: S, end_ns: 3 * S },
            FaultWindow { fault: "pause".into(), peers: vec![5], start_ns: S, end_ns: 2 * S },
        ];
        let replicas: Vec<ReplicaSample> = (0..40)
            .flat_map(|i| {
                ["statefulset", "deployment"].map(|w| ReplicaSample { time_ns: i * S / 4, workload: w.into(), ready: i % 4, desired: 3 })
            })
            .collect();
        let first = render(&input(&history, &faults, &replicas, 10 * S));
        assert_eq!(first, render(&input(&history, &faults, &replicas, 10 * S)));
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_step(1800.0, MAX_TIME_TICKS), 200.0);
        assert_eq!(nice_step(60.0, MAX_TIME_TICKS), 5.0);
        let labels: Vec<String> = ticks(1.0, nice_step(1.0, MAX_TIME_TICKS)).into_iter().map(|(_, l)| l).collect();
        assert_eq!(labels, ["0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1.0"]);
    }
}
