//! Where every process of the runtime is forked: one thread that lives as
//! long as the peer, so that `PR_SET_PDEATHSIG` (which follows the forking
//! thread) fires only when the peer dies, and that enters a container's
//! pid namespace for the one fork that needs it.

use std::io;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use super::sys::ChildSetup;

type SpawnJob = Box<dyn FnOnce(&SpawnerNamespaces) + Send>;

/// Which pid namespace a child is forked into.
pub(super) enum PidNamespace {
    /// The peer's own: without isolation.
    Peer,
    /// A new one, whose first process the child is: a container, or the
    /// holder of a Pod whose containers share one.
    New,
    /// An existing one (`/proc/<pid>/ns/pid`): a container of a Pod
    /// sharing its namespace, or an exec.
    Join(std::os::fd::OwnedFd),
}

/// The spawner thread's view of its pid namespaces.
struct SpawnerNamespaces {
    /// The peer's own pid namespace, to return to after each spawn.
    own: Option<std::fs::File>,
    /// Set when a return failed: children would be forked into a Pod's
    /// namespace, so no child is forked any more.
    stranded: std::cell::Cell<bool>,
}

impl SpawnerNamespaces {
    /// Forks `command` in `pid_ns`: `setns` and `unshare` of a pid
    /// namespace change where this thread's *children* go, so the thread
    /// enters it for the one spawn and returns.
    fn spawn(
        &self,
        mut command: tokio::process::Command,
        pid_ns: PidNamespace,
    ) -> io::Result<tokio::process::Child> {
        use std::os::fd::AsRawFd;
        if self.stranded.get() {
            return Err(io::Error::other(
                "the spawner could not return to the peer's pid namespace",
            ));
        }
        let entered = match &pid_ns {
            PidNamespace::Peer => return command.spawn(),
            // SAFETY: changes this thread's namespace for children only.
            PidNamespace::New => unsafe { libc::unshare(libc::CLONE_NEWPID) },
            // SAFETY: as above, to a namespace the fd names.
            PidNamespace::Join(fd) => unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWPID) },
        };
        if entered != 0 {
            return Err(io::Error::last_os_error());
        }
        let spawned = command.spawn();
        let own = self.own.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
        // SAFETY: back to the namespace this thread started in.
        if unsafe { libc::setns(own, libc::CLONE_NEWPID) } != 0 {
            self.stranded.set(true);
            tracing::error!(error = %io::Error::last_os_error(), "the spawner cannot return to the peer's pid namespace: no more Pods start");
        }
        spawned
    }
}

/// The one thread every child is forked from. It never exits, so
/// `PR_SET_PDEATHSIG` (which follows the forking thread) fires only when
/// the peer process itself dies.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnJob>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("flotilla-spawner".into())
            .spawn(move || {
                let namespaces = SpawnerNamespaces {
                    own: std::fs::File::open("/proc/thread-self/ns/pid").ok(),
                    stranded: std::cell::Cell::new(false),
                };
                for job in rx {
                    // A panicking job must not end the thread: its death
                    // would kill every container.
                    let run = std::panic::AssertUnwindSafe(|| job(&namespaces));
                    let _ = std::panic::catch_unwind(run);
                }
            })
            .expect("the spawner thread starts");
        Mutex::new(tx)
    })
}

pub(super) async fn spawn_child(
    command: tokio::process::Command,
    pid_ns: PidNamespace,
) -> io::Result<tokio::process::Child> {
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: SpawnJob = Box::new(move |namespaces| {
        let _runtime = handle.enter();
        let _ = tx.send(namespaces.spawn(command, pid_ns));
    });
    spawner()
        .lock()
        .map_err(|_| io::Error::other("the spawner is poisoned"))?
        .send(job)
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("the spawner thread dropped a spawn"))?
}

pub(super) fn parent_pid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// Proves namespaces can be made here by making them in a short-lived
/// child, which runs as a container does: the init of a new pid namespace,
/// handing its program's exit status back.
pub(super) fn probe_namespaces(program: &Path) -> io::Result<()> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let (mut status_reader, status_writer) = io::pipe()?;
    let setup = ChildSetup {
        parent_pid: parent_pid(),
        in_pid_namespace: true,
        unshare: libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWNS,
        hostname: Some(c"flotilla-probe".to_owned()),
        loopback_up: true,
        init_status: Some(status_writer.into()),
        command_line: super::sys::command_line_region(),
        ..ChildSetup::default()
    };
    let mut command = std::process::Command::new(program);
    command
        .arg("0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: ChildSetup::run makes only async-signal-safe calls.
    unsafe { command.pre_exec(move || setup.run()) };
    // On a thread of its own: entering a pid namespace changes where the
    // thread's children go for good.
    let status = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: changes this short-lived thread's namespace for children only.
                if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                command.status()
            })
            .join()
            .map_err(|_| io::Error::other("the probe's thread panicked"))?
    })?;
    let mut reported = Vec::new();
    status_reader.read_to_end(&mut reported)?;
    if status.success() && reported == 0i32.to_ne_bytes() {
        Ok(())
    } else {
        Err(io::Error::other(format!("the probe exited with {status}")))
    }
}
