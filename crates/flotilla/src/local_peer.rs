//! A peer of `flotilla up` (and of its demo) as a child process that
//! stops when `up` dies, however it dies.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock, mpsc};

use anyhow::Context;
use tokio::process::{Child, Command};

pub struct LocalPeer {
    pub id: u64,
    pub addr: String,
    pub config: PathBuf,
    pub log: PathBuf,
    pub child: Child,
}

impl LocalPeer {
    pub fn start(exe: &Path, id: u64, addr: &str, config: PathBuf, log: PathBuf) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let mut command = std::process::Command::new(exe);
        command.arg("peer").arg("--config").arg(&config).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Out of the terminal's process group: a hangup or a Ctrl-C
                // reaches `up`, which stops the peers in order.
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // When `up` dies, however it dies, its peers are told to
                // stop (SIGTERM: they stop their Pods on the way out). The
                // getppid check closes the race with an `up` that died
                // before prctl.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let mut command = Command::from(command);
        command.kill_on_drop(true);
        let child = spawn_from_lasting_thread(command).with_context(|| format!("starting peer {id}"))?;
        Ok(Self { id, addr: addr.to_string(), config, log, child })
    }
}

type SpawnJob = Box<dyn FnOnce() + Send>;

/// Forks `command` from one thread that lives as long as `up`:
/// `PR_SET_PDEATHSIG` follows the forking thread, so a peer forked from a
/// runtime worker that later exits would be told to stop while `up` runs.
fn spawn_from_lasting_thread(mut command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        // Ends with the process: the sender is never dropped.
        std::thread::Builder::new()
            .name("flotilla-up-spawner".into())
            .spawn(move || rx.into_iter().for_each(|job| job()))
            .expect("the spawner thread starts");
        Mutex::new(tx)
    });
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = mpsc::channel();
    let job: SpawnJob = Box::new(move || {
        let _runtime = handle.enter();
        let _ = tx.send(command.spawn());
    });
    spawner.lock().expect("the spawner lock").send(job).map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    rx.recv().map_err(|_| std::io::Error::other("the spawner thread dropped a spawn"))?
}
