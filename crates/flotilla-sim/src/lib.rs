//! Deterministic simulation of a whole Flotilla cluster in one process.
//!
//! Each simulated host runs a real peer (openraft, the object store, the
//! leader's scheduler and controllers, the node agent) on turmoil's
//! simulated network and clock, with an in-memory disk that forgets unsynced
//! writes when the host crashes and the `fake` Pod runtime. A seed decides
//! everything: the faults, message latencies, election timeouts, object
//! uids, and the order in which tasks run, so a failing seed replays
//! exactly. Invariants are checked between steps; after the faults heal,
//! the cluster must converge within a bound.

pub mod check;
mod config;
pub mod faults;
pub mod net;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use flotilla_api::Pod;
use flotilla_peer::clock::Clock;
use flotilla_peer::config::PeerConfig;
use flotilla_peer::Seams;
use flotilla_proto::api::cluster_client::ClusterClient;
use flotilla_proto::api::objects_client::ObjectsClient;
use flotilla_proto::api::{ApplyRequest, ObjectKey, Precondition, PreconditionKind, PutRequest, StatusRequest};
use flotilla_raft::backend::{Batch, Cf, KeyValue};
use flotilla_raft::inspect;
use flotilla_raft::{Backend, IoMode, MemoryBackend};
use flotilla_runtime::fake::FakeRuntime;
use tonic::transport::Endpoint;

use crate::check::{Checker, PeerView, STATEFULSET};
use crate::config::peer_config;
use crate::faults::{Fault, Scheduled};

/// The port every simulated peer serves on.
pub const PORT: u16 = 7100;
/// Simulated time per step: the resolution of every timer in the cluster.
const TICK: Duration = Duration::from_millis(1);
/// When faults may begin: the cluster has elected a leader, registered its
/// nodes and started the workloads.
const BOOT_MS: u64 = 5_000;
/// After the faults heal, how long the cluster has to converge.
pub const CONVERGE_WITHIN_MS: u64 = 60_000;
/// How often the costlier checks (committed entries, capacity,
/// convergence) run, in steps.
const SLOW_CHECK_EVERY_STEPS: u64 = 100;
/// Simulated wall-clock time at the start: fixed, so that timestamps in
/// objects are the same on every replay.
const EPOCH_UNIX_S: u64 = 1_795_000_000;
/// The Deployment's and StatefulSet's sizes, and what each Pod asks for
/// (nodes have 2,000m: four Pods each; twice that in clusters of one or two
/// peers, so that every Pod fits on one node).
pub const DEPLOYMENT_REPLICAS: usize = 4;
pub const STATEFULSET_REPLICAS: usize = 3;
const POD_CPU: &str = "500m";
const NODE_CPU_MILLIS: u64 = 2_000;
/// Time between two writes of the client.
const WRITE_INTERVAL: Duration = Duration::from_millis(25);
/// How long one client call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The liveness windows every peer runs with (the same as the shipped
/// configurations): a node fences its Pods 1.2 s after it last heard a
/// leader; the leader replaces them after 2 s.
const FENCE_AFTER_MS: u64 = 1_200;
const LOST_AFTER_MS: u64 = 2_000;

/// A deliberate bug, to show the invariants catch what they should.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// The leader declares a silent node lost after 300 ms, long before the
    /// node fences its own Pods (1.2 s): a StatefulSet Pod can then run on
    /// a cut-off node and on its replacement at once.
    EarlyNodeLoss,
    /// Every disk claims to sync and never does, so a crash takes with it
    /// votes and log entries the peer had acknowledged as durable.
    UnsyncedDisk,
}

/// A disk that acknowledges syncs it never made (the planted
/// [`PlantedBug::UnsyncedDisk`]).
struct UnsyncedDisk(MemoryBackend);

impl Backend for UnsyncedDisk {
    fn write(&self, batch: Batch, _sync: bool) -> io::Result<()> {
        self.0.write(batch, false)
    }

    fn get(&self, cf: Cf, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.0.get(cf, key)
    }

    fn scan(
        &self,
        cf: Cf,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> io::Result<Vec<KeyValue>> {
        self.0.scan(cf, from, to, limit)
    }

    fn last(&self, cf: Cf) -> io::Result<Option<KeyValue>> {
        self.0.last(cf)
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    pub peers: usize,
    /// How long faults are injected, after the cluster has booted.
    pub faults_ms: u64,
    pub planted_bug: Option<PlantedBug>,
}

impl SimOptions {
    pub fn new(seed: u64) -> Self {
        Self { seed, peers: 3, faults_ms: 30_000, planted_bug: None }
    }
}

/// What one seed did.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub peers: usize,
    pub sim_ms: u64,
    pub steps: u64,
    pub faults: usize,
    pub writes_acked: usize,
    pub committed_entries: usize,
    /// Time from the heal to a converged cluster.
    pub converged_after_ms: Option<u64>,
    /// The first invariant that broke, if any.
    pub violation: Option<String>,
    /// Everything that happened, one event per line, in order.
    pub trace: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violation.is_none()
    }
}

thread_local! {
    /// Simulated time as the driver last saw it, for clocks read between
    /// steps (the fake runtimes, when the driver asks what runs).
    static DRIVER_NOW_MS: Cell<u64> = const { Cell::new(EPOCH_UNIX_S * 1000) };
}

thread_local! {
    /// The first panic on this thread since the seed began: the runtime
    /// that catches a peer's panic re-raises it with a message of its own.
    static FIRST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Remembers each thread's first panic, then reports it as before.
fn record_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            FIRST_PANIC.with(|p| {
                p.borrow_mut().get_or_insert_with(|| info.to_string().replace('\n', " "));
            });
            previous(info);
        }));
    });
}

fn sim_now_ms() -> u64 {
    turmoil::since_epoch().map_or_else(|| DRIVER_NOW_MS.with(Cell::get), |d| d.as_millis() as u64)
}

/// The simulated clock: turmoil's, the same on every host.
struct SimClock;

impl Clock for SimClock {
    fn now_unix_ms(&self) -> u64 {
        sim_now_ms()
    }
}

/// One simulated peer's lasting parts: what survives its crashes.
struct Slot {
    name: String,
    dir: PathBuf,
    backend: MemoryBackend,
    sync_delay_ms: Arc<AtomicU64>,
    /// The runtime of the running incarnation; its Pods die with it.
    runtime: Option<Arc<FakeRuntime>>,
    down: bool,
}

/// What the driver, the hosts and the client share. Everything runs on one
/// thread, so a `RefCell` suffices.
struct Shared {
    slots: Vec<Slot>,
    planted_bug: Option<PlantedBug>,
    /// Writes the cluster acknowledged: (ConfigMap name, revision).
    acked: Vec<(String, u64)>,
    trace: Vec<String>,
    /// The client stops writing when set, after one last acknowledged write.
    stop_writes: Arc<AtomicBool>,
    /// Set when the client's last write was acknowledged after the heal.
    final_write_acked: bool,
}

impl Shared {
    fn log(&mut self, event: String) {
        let ms = sim_now_ms() - EPOCH_UNIX_S * 1000;
        self.trace.push(format!("{ms:>7} {event}"));
    }
}

/// Starts one incarnation of peer `index` (at boot and after each crash).
fn boot(shared: &Rc<RefCell<Shared>>, index: usize) -> (PeerConfig, Seams) {
    let mut s = shared.borrow_mut();
    let (peers, bug) = (s.slots.len(), s.planted_bug);
    let runtime = Arc::new(FakeRuntime::new(Arc::new(sim_now_ms)));
    let slot = &mut s.slots[index];
    slot.runtime = Some(runtime.clone());
    let config = peer_config(index, peers, &slot.dir, bug);
    let backend: Arc<dyn Backend> = match bug {
        Some(PlantedBug::UnsyncedDisk) => Arc::new(UnsyncedDisk(slot.backend.clone())),
        _ => Arc::new(slot.backend.clone()),
    };
    let seams = Seams {
        backend,
        io: IoMode::Inline { sync_delay_ms: slot.sync_delay_ms.clone() },
        channels: net::channels(),
        clock: Arc::new(SimClock),
        runtime,
    };
    let name = slot.name.clone();
    s.log(format!("{name} starts"));
    (config, seams)
}

fn manifests() -> [String; 2] {
    let pod_spec = format!(
        r#"{{"containers": [{{"name": "main", "image": "sim", "resources": {{"requests": {{"cpu": "{POD_CPU}"}}}}}}]}}"#
    );
    [
        format!(
            r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "web", "namespace": "default"}},
               "spec": {{"replicas": {DEPLOYMENT_REPLICAS}, "selector": {{"matchLabels": {{"app": "web"}}}},
                        "template": {{"metadata": {{"labels": {{"app": "web"}}}}, "spec": {pod_spec}}}}}}}"#
        ),
        format!(
            r#"{{"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {{"name": "{STATEFULSET}", "namespace": "default"}},
               "spec": {{"replicas": {STATEFULSET_REPLICAS}, "serviceName": "{STATEFULSET}", "podManagementPolicy": "Parallel",
                        "selector": {{"matchLabels": {{"app": "{STATEFULSET}"}}}},
                        "template": {{"metadata": {{"labels": {{"app": "{STATEFULSET}"}}}}, "spec": {pod_spec}}}}}}}"#
        ),
    ]
}

fn endpoint(peer: usize) -> Endpoint {
    Endpoint::from_shared(format!("http://peer-{}:{PORT}", peer + 1)).expect("a valid address").timeout(CALL_TIMEOUT)
}

/// The client: waits for a leader, applies the workloads, then writes
/// ConfigMaps through peers the seed picks, each once, until told to stop;
/// its last write must be acknowledged.
async fn client(shared: Rc<RefCell<Shared>>) -> turmoil::Result {
    let peers = shared.borrow().slots.len();
    let objects: Vec<_> = (0..peers).map(|p| ObjectsClient::new(net::channel(endpoint(p)))).collect();
    loop {
        let p = flotilla_raft::entropy::below(peers as u64) as usize;
        let mut cluster = ClusterClient::new(net::channel(endpoint(p)));
        if let Ok(r) = cluster.status(StatusRequest { local: false, ..Default::default() }).await {
            if r.get_ref().has_leader {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for manifest in manifests() {
        loop {
            let p = flotilla_raft::entropy::below(peers as u64) as usize;
            let request = ApplyRequest { object_json: manifest.clone(), namespace: "default".into(), ..Default::default() };
            if objects[p].clone().apply(request).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    shared.borrow_mut().log("client applied the Deployment and the StatefulSet".into());
    let stop = shared.borrow().stop_writes.clone();
    let mut stopping_since_ack = false;
    for n in 0u64.. {
        let p = flotilla_raft::entropy::below(peers as u64) as usize;
        let name = format!("w-{n}");
        let request = PutRequest {
            key: Some(ObjectKey { kind: "ConfigMap".into(), namespace: "default".into(), name: name.clone() }),
            object_json: format!(r#"{{"data": {{"n": "{n}"}}}}"#),
            precondition: Some(Precondition { kind: PreconditionKind::MustNotExist as i32, revision: 0 }),
        };
        let stopping = stop.load(Ordering::Relaxed);
        match objects[p].clone().put(request).await {
            Ok(reply) => {
                let revision = reply.get_ref().revision;
                let mut s = shared.borrow_mut();
                s.acked.push((name.clone(), revision));
                s.log(format!("client: {name} acknowledged by peer-{} at revision {revision}", p + 1));
                if stopping {
                    stopping_since_ack = true;
                }
            }
            Err(status) => {
                shared.borrow_mut().log(format!("client: {name} through peer-{}: {:?}", p + 1, status.code()));
            }
        }
        if stopping_since_ack {
            shared.borrow_mut().final_write_acked = true;
            return Ok(());
        }
        tokio::time::sleep(WRITE_INTERVAL).await;
    }
    Ok(())
}

/// Runs one seed to the end: boot, faults, heal, convergence.
pub fn run(options: &SimOptions) -> Report {
    record_panics();
    FIRST_PANIC.with(|p| p.borrow_mut().take());
    flotilla_raft::entropy::seed_thread(Some(options.seed));
    DRIVER_NOW_MS.with(|n| n.set(EPOCH_UNIX_S * 1000));
    let report = run_seeded(options);
    flotilla_raft::entropy::seed_thread(None);
    report
}

fn run_seeded(options: &SimOptions) -> Report {
    let peers = options.peers;
    let base = tempfile::tempdir().expect("a temporary directory");
    let shared = Rc::new(RefCell::new(Shared {
        slots: (0..peers)
            .map(|i| Slot {
                name: format!("peer-{}", i + 1),
                dir: base.path().join(format!("peer-{}", i + 1)),
                backend: MemoryBackend::default(),
                sync_delay_ms: Arc::default(),
                runtime: None,
                down: false,
            })
            .collect(),
        planted_bug: options.planted_bug,
        acked: Vec::new(),
        trace: Vec::new(),
        stop_writes: Arc::default(),
        final_write_acked: false,
    }));
    let mut sim = turmoil::Builder::new()
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_UNIX_S))
        .simulation_duration(Duration::from_secs(3_600))
        .tick_duration(TICK)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5))
        // Snapshots and append batches are larger than turmoil's default
        // socket buffer of 64 segments.
        .tcp_capacity(16_384)
        .rng_seed(options.seed)
        .build();
    for index in 0..peers {
        let shared = shared.clone();
        sim.host(format!("peer-{}", index + 1), move || {
            let shared = shared.clone();
            async move {
                let (config, seams) = boot(&shared, index);
                let listener = turmoil::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)).await?;
                flotilla_peer::run_with(config, seams, net::incoming(listener), std::future::pending::<()>()).await?;
                Ok(())
            }
        });
    }
    sim.client("client", client(shared.clone()));

    let schedule = faults::schedule(options.seed, peers, BOOT_MS, BOOT_MS + options.faults_ms, LOST_AFTER_MS);
    let heal_ms = schedule.last().map_or(BOOT_MS, |f| f.end_ms) + 1;
    let mut driver = Driver {
        shared: shared.clone(),
        checker: Checker::default(),
        schedule,
        next_fault: 0,
        active: None,
        running: BTreeMap::new(),
    };
    let mut steps = 0u64;
    let mut violation = None;
    let mut converged_after_ms = None;
    loop {
        // A peer's panic (an assertion in openraft, say) ends the seed as a
        // violation, not the whole run of seeds.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.step()));
        steps += 1;
        let now_ms = sim.elapsed().as_millis() as u64;
        DRIVER_NOW_MS.with(|n| n.set(EPOCH_UNIX_S * 1000 + now_ms));
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                violation = Some(format!("a host stopped: {e}"));
                break;
            }
            Err(_) => {
                let first = FIRST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default();
                violation = Some(format!("a peer panicked: {first}"));
                break;
            }
        }
        driver.faults(&mut sim, now_ms);
        if now_ms == heal_ms {
            let mut s = shared.borrow_mut();
            s.stop_writes.store(true, Ordering::Relaxed);
            s.log("every fault has healed".into());
        }
        if let Err(v) = driver.every_step() {
            violation = Some(v);
            break;
        }
        if steps % SLOW_CHECK_EVERY_STEPS == 0 {
            if let Err(v) = driver.slow_checks() {
                violation = Some(v);
                break;
            }
            if now_ms > heal_ms {
                let missing = driver.why_not_converged();
                if missing.is_empty() {
                    converged_after_ms = Some(now_ms - heal_ms);
                    shared.borrow_mut().log("converged".into());
                    break;
                }
            }
        }
        if now_ms > heal_ms + CONVERGE_WITHIN_MS {
            violation = Some(format!("not converged {CONVERGE_WITHIN_MS} ms after the faults healed: {}", driver.why_not_converged()));
            break;
        }
    }
    if let Some(v) = &violation {
        shared.borrow_mut().log(format!("VIOLATION: {v}"));
    }
    let sim_ms = sim.elapsed().as_millis() as u64;
    drop(sim);
    let committed_entries = driver.checker.committed_count();
    let faults = driver.schedule.len();
    drop(driver);
    let shared = Rc::try_unwrap(shared).ok().expect("the simulation is gone").into_inner();
    Report {
        seed: options.seed,
        peers,
        sim_ms,
        steps,
        faults,
        writes_acked: shared.acked.len(),
        committed_entries,
        converged_after_ms,
        violation,
        trace: shared.trace,
    }
}

struct Driver {
    shared: Rc<RefCell<Shared>>,
    checker: Checker,
    schedule: Vec<Scheduled>,
    next_fault: usize,
    /// The fault in force, with the peer a leader crash chose.
    active: Option<(Scheduled, Option<usize>)>,
    /// What each peer's runtime ran at the last look, for the trace.
    running: BTreeMap<String, BTreeSet<(String, String, String)>>,
}

impl Driver {
    fn names(&self) -> Vec<String> {
        self.shared.borrow().slots.iter().map(|s| s.name.clone()).collect()
    }

    /// Runs `f` on the checker with a view of every peer's storage.
    fn check<T>(&mut self, f: impl FnOnce(&mut Checker, &[PeerView<'_>]) -> T) -> T {
        let shared = self.shared.clone();
        let s = shared.borrow();
        let views: Vec<PeerView<'_>> = s.slots.iter().map(|slot| PeerView { name: &slot.name, backend: &slot.backend }).collect();
        f(&mut self.checker, &views)
    }

    /// Starts and ends faults whose time has come.
    fn faults(&mut self, sim: &mut turmoil::Sim<'_>, now_ms: u64) {
        if let Some((fault, chosen)) = &self.active {
            if now_ms >= fault.end_ms {
                let (fault, chosen) = (fault.clone(), *chosen);
                self.active = None;
                self.end(sim, &fault.fault, chosen);
                self.shared.borrow_mut().log(format!("heal: {}", fault.fault));
            }
        }
        if self.active.is_none() {
            if let Some(next) = self.schedule.get(self.next_fault).cloned() {
                if now_ms >= next.start_ms {
                    self.next_fault += 1;
                    let chosen = self.start(sim, &next.fault);
                    let what = match chosen {
                        Some(p) if next.fault == Fault::CrashLeader => format!("fault: {} (peer-{})", next.fault, p + 1),
                        _ => format!("fault: {}", next.fault),
                    };
                    self.shared.borrow_mut().log(what);
                    self.active = Some((next, chosen));
                }
            }
        }
    }

    fn pairs(groups: (&[usize], &[usize])) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for a in groups.0 {
            for b in groups.1 {
                if a != b {
                    out.push((format!("peer-{}", a + 1), format!("peer-{}", b + 1)));
                }
            }
        }
        out
    }

    fn others(&self, p: usize) -> Vec<usize> {
        (0..self.shared.borrow().slots.len()).filter(|q| *q != p).collect()
    }

    fn crash(&mut self, sim: &mut turmoil::Sim<'_>, p: usize) {
        let mut s = self.shared.borrow_mut();
        let slot = &mut s.slots[p];
        sim.crash(slot.name.as_str());
        // What was written but not synced is lost with the host.
        slot.backend.crash();
        slot.runtime = None;
        slot.down = true;
    }

    /// The peer leading now: the newest committed vote for itself.
    fn leader(&self) -> Option<usize> {
        let s = self.shared.borrow();
        let mut best: Option<(u64, usize)> = None;
        for (i, slot) in s.slots.iter().enumerate() {
            if slot.down {
                continue;
            }
            let Ok(Some(vote)) = inspect::vote(&slot.backend) else { continue };
            if vote.committed && vote.leader_id.voted_for == i as u64 + 1 && best.is_none_or(|(t, _)| vote.leader_id.term > t) {
                best = Some((vote.leader_id.term, i));
            }
        }
        best.map(|(_, i)| i)
    }

    fn start(&mut self, sim: &mut turmoil::Sim<'_>, fault: &Fault) -> Option<usize> {
        match fault {
            Fault::Isolate(p) => {
                for (a, b) in Self::pairs((&[*p], &self.others(*p))) {
                    sim.partition(a.as_str(), b.as_str());
                }
                None
            }
            Fault::Split(minority, majority) => {
                for (a, b) in Self::pairs((minority, majority)) {
                    sim.partition(a.as_str(), b.as_str());
                }
                None
            }
            Fault::Drop(a, b) => {
                sim.partition(format!("peer-{}", a + 1).as_str(), format!("peer-{}", b + 1).as_str());
                None
            }
            Fault::Delay(p) => {
                for (a, b) in Self::pairs((&[*p], &self.others(*p))) {
                    sim.hold(a.as_str(), b.as_str());
                }
                None
            }
            Fault::Crash(p) | Fault::NodeLoss(p) => {
                self.crash(sim, *p);
                None
            }
            Fault::Wipe(p) => {
                self.crash(sim, *p);
                let mut s = self.shared.borrow_mut();
                let slot = &mut s.slots[*p];
                // The log, the vote and the applied state, then the identity
                // and snapshot files: nothing of the old directory is left.
                slot.backend = MemoryBackend::default();
                if let Err(e) = std::fs::remove_dir_all(&slot.dir) {
                    panic!("wiping {}: {e}", slot.dir.display());
                }
                None
            }
            Fault::CrashLeader => {
                let p = self.leader().unwrap_or(0);
                self.crash(sim, p);
                Some(p)
            }
            Fault::SlowDisk(p, ms) => {
                self.shared.borrow().slots[*p].sync_delay_ms.store(*ms, Ordering::Relaxed);
                None
            }
        }
    }

    fn end(&mut self, sim: &mut turmoil::Sim<'_>, fault: &Fault, chosen: Option<usize>) {
        match fault {
            Fault::Isolate(p) => {
                for (a, b) in Self::pairs((&[*p], &self.others(*p))) {
                    sim.repair(a.as_str(), b.as_str());
                }
            }
            Fault::Split(minority, majority) => {
                for (a, b) in Self::pairs((minority, majority)) {
                    sim.repair(a.as_str(), b.as_str());
                }
            }
            Fault::Drop(a, b) => {
                sim.repair(format!("peer-{}", a + 1).as_str(), format!("peer-{}", b + 1).as_str());
            }
            Fault::Delay(p) => {
                for (a, b) in Self::pairs((&[*p], &self.others(*p))) {
                    sim.release(a.as_str(), b.as_str());
                }
            }
            Fault::Crash(p) | Fault::NodeLoss(p) | Fault::Wipe(p) => self.restart(sim, *p),
            Fault::CrashLeader => self.restart(sim, chosen.expect("a leader crash chose its peer")),
            Fault::SlowDisk(p, _) => self.shared.borrow().slots[*p].sync_delay_ms.store(0, Ordering::Relaxed),
        }
    }

    fn restart(&mut self, sim: &mut turmoil::Sim<'_>, p: usize) {
        let name = {
            let mut s = self.shared.borrow_mut();
            s.slots[p].down = false;
            s.slots[p].name.clone()
        };
        sim.bounce(name.as_str());
    }

    /// The cheap invariants, after every step: one leader per term, one
    /// running copy of each StatefulSet Pod.
    fn every_step(&mut self) -> Result<(), String> {
        let shared = self.shared.clone();
        let new_leaders = self.check(|c, v| c.leaders(v))?;
        for (term, leader) in new_leaders {
            shared.borrow_mut().log(format!("{leader} leads term {term}"));
        }
        let names = self.names();
        let mut now_running: BTreeMap<String, BTreeSet<(String, String, String)>> = BTreeMap::new();
        {
            let s = shared.borrow();
            for slot in &s.slots {
                if let (false, Some(rt)) = (slot.down, &slot.runtime) {
                    now_running.insert(slot.name.clone(), rt.running_pods());
                }
            }
        }
        for name in &names {
            let before = self.running.get(name).cloned().unwrap_or_default();
            let after = now_running.get(name).cloned().unwrap_or_default();
            for (_, pod, uid) in before.difference(&after) {
                shared.borrow_mut().log(format!("{name} no longer runs {pod} ({uid})"));
            }
            for (_, pod, uid) in after.difference(&before) {
                shared.borrow_mut().log(format!("{name} runs {pod} ({uid})"));
            }
        }
        self.running = now_running;
        check::one_instance_per_ordinal(self.running.iter().flat_map(|(peer, pods)| pods.iter().map(move |p| (peer.as_str(), p))))
    }

    /// The costlier invariants: committed entries never change, no node
    /// over its capacity.
    fn slow_checks(&mut self) -> Result<(), String> {
        self.check(|c, v| c.committed_entries(v))?;
        let s = self.shared.borrow();
        for slot in s.slots.iter().filter(|s| !s.down) {
            check::capacity(&slot.backend).map_err(|e| format!("on {}'s state: {e}", slot.name))?;
            check::acknowledged_writes(&PeerView { name: &slot.name, backend: &slot.backend }, &s.acked)?;
        }
        Ok(())
    }

    /// What the cluster still lacks to be converged: empty when it is.
    fn why_not_converged(&self) -> String {
        let s = self.shared.borrow();
        if !s.final_write_acked {
            return "no write has been acknowledged since the heal".into();
        }
        let applied: Vec<u64> = s
            .slots
            .iter()
            .map(|slot| inspect::last_applied(&slot.backend).ok().flatten().map_or(0, |l| l.index))
            .collect();
        if applied.iter().any(|a| *a != applied[0]) {
            return format!("peers applied different prefixes: {applied:?}");
        }
        // The workloads, as the store has them and as the runtimes run them.
        let Ok(pods) = inspect::objects(&s.slots[0].backend, "Pod") else { return "unreadable Pods".into() };
        let mut ready_web = 0;
        let mut running_db = BTreeSet::new();
        let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
        for (key, stored) in &pods {
            let Ok(pod) = serde_json::from_str::<Pod>(&stored.json) else { continue };
            let status = pod.status.clone().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() || status.phase != "Running" {
                continue;
            }
            let ready = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            if key.name.starts_with("web-") && ready {
                ready_web += 1;
            }
            if key.name.starts_with(&format!("{STATEFULSET}-")) {
                running_db.insert(key.name.clone());
            }
            expected.insert((pod.spec.node_name.clone(), pod.metadata.uid.clone()));
        }
        if ready_web != DEPLOYMENT_REPLICAS || running_db.len() != STATEFULSET_REPLICAS {
            return format!("{ready_web} of {DEPLOYMENT_REPLICAS} web Pods ready, {} of {STATEFULSET_REPLICAS} db Pods running", running_db.len());
        }
        let actual: BTreeSet<(String, String)> =
            self.running.iter().flat_map(|(peer, pods)| pods.iter().map(move |(_, _, uid)| (peer.clone(), uid.clone()))).collect();
        if actual != expected {
            return format!("the runtimes run {actual:?} but the store has {expected:?} running");
        }
        String::new()
    }
}
