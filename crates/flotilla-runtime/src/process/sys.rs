//! Thin wrappers over the system calls the process runtime needs, and the
//! work a child does between `fork` and `exec`.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Nesting depth the tree remover descends at most.
const MAX_REMOVE_DEPTH: usize = 128;

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Fields of `/proc/<pid>/stat` after the command name, which may itself
/// hold spaces and parentheses.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The process's start time in clock ticks since boot: with the pid it
/// names one process for good, as pids are reused.
pub(crate) fn start_ticks(pid: i32) -> Option<u64> {
    // Field 22 of stat; the fields after ")" start at field 3.
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// True when `pid` is alive, not a zombie, and started at `ticks`.
pub(crate) fn is_same_process(pid: i32, ticks: u64) -> bool {
    match stat_fields(pid) {
        Some(fields) => {
            fields.first().map(String::as_str) != Some("Z")
                && fields.get(19).and_then(|t| t.parse().ok()) == Some(ticks)
        }
        None => false,
    }
}

/// Signals every process of the group led by `pgid`; false when none is left.
pub(crate) fn kill_group(pgid: i32, signal: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill has no memory effects; a negative pid names a group.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

pub(crate) fn group_alive(pgid: i32) -> bool {
    kill_group(pgid, 0)
}

pub(crate) fn kill_pid(pid: i32, signal: i32) {
    if pid > 1 {
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(pid, signal) };
    }
}

pub(crate) fn cstring(path: impl AsRef<Path>) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_ref().as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path holds a nul byte"))
}

pub(crate) fn open_namespace(pid: i32, kind: &str) -> io::Result<OwnedFd> {
    Ok(File::open(format!("/proc/{pid}/ns/{kind}"))?.into())
}

/// Opens a file for writing with close-on-exec, as the fds a child uses in
/// `pre_exec` must be open before the fork.
pub(crate) fn open_write(path: &Path) -> io::Result<OwnedFd> {
    Ok(std::fs::OpenOptions::new().write(true).open(path)?.into())
}

/// A non-blocking TCP socket of the network namespace at `netns` (the
/// peer's own when `None`). A socket stays in the namespace it was made
/// in, so only its creation runs on a short-lived thread that joins the
/// namespace: `setns` changes the calling thread only, and pool threads
/// must never be left in a Pod's namespace.
pub(crate) async fn tcp_socket_in(netns: Option<PathBuf>) -> io::Result<tokio::net::TcpSocket> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("flotilla-netns".into())
        .spawn(move || {
            let _ = tx.send(make_socket(netns.as_deref()));
        })?;
    let fd = rx
        .await
        .map_err(|_| io::Error::other("the network namespace thread died"))??;
    // SAFETY: fd is a fresh TCP socket that nothing else owns.
    let stream =
        unsafe { std::net::TcpStream::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
    Ok(tokio::net::TcpSocket::from_std_stream(stream))
}

fn make_socket(netns: Option<&Path>) -> io::Result<OwnedFd> {
    if let Some(netns) = netns {
        let ns = File::open(netns)?;
        // SAFETY: joins a namespace on this thread only; it ends right after.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: plain socket creation; the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket().
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One mount a child makes in its own mount namespace.
#[derive(Debug)]
pub(crate) enum ChildMount {
    Bind {
        source: CString,
        target: CString,
        read_only: bool,
        recursive: bool,
    },
    Proc {
        target: CString,
    },
}

/// Everything a child does between `fork` and `exec`, prepared before the
/// fork: after it only async-signal-safe calls are allowed, so nothing in
/// [`ChildSetup::run`] allocates.
#[derive(Debug, Default)]
pub(crate) struct ChildSetup {
    pub parent_pid: libc::pid_t,
    /// The child was forked into a pid namespace the parent is outside of,
    /// where `getppid` reads 0: the parent's liveness is then read off
    /// [`peer_pidfd`] alone.
    pub in_pid_namespace: bool,
    /// `cgroup.procs` files to write `0` to, joining the cgroups.
    pub cgroup_procs: Vec<OwnedFd>,
    /// Namespaces to join, with their `CLONE_*` type.
    pub join: Vec<(OwnedFd, libc::c_int)>,
    /// Namespaces to make anew.
    pub unshare: libc::c_int,
    pub hostname: Option<CString>,
    pub loopback_up: bool,
    /// The assembled root and what to mount into it before entering it.
    pub root: Option<(CString, Vec<ChildMount>)>,
    pub working_dir: Option<CString>,
    /// Makes the child the container's init: it forks the program and
    /// stays to forward signals, reap orphans and end with the program,
    /// writing the program's wait status here first (see [`run_init`]).
    pub init_status: Option<OwnedFd>,
    /// Where the peer's command line lies in memory ([`command_line_region`]):
    /// the init writes its own name over its copy.
    pub command_line: Option<(usize, usize)>,
}

/// Where this process's command line lies in its memory (`arg_start` and
/// `arg_end` of `/proc/self/stat`), read once, before any fork.
pub(crate) fn command_line_region() -> Option<(usize, usize)> {
    static REGION: OnceLock<Option<(usize, usize)>> = OnceLock::new();
    *REGION.get_or_init(|| {
        let fields = stat_fields(std::process::id() as i32)?;
        // Fields 48 and 49; those after the name start at field 3.
        Some((fields.get(45)?.parse().ok()?, fields.get(46)?.parse().ok()?))
    })
}

/// A pidfd of this process, opened once: a child polls it to learn whether
/// the peer died before the child asked for `PR_SET_PDEATHSIG` (`None`
/// where the kernel has no pidfds, before 5.3).
pub(crate) fn peer_pidfd() -> Option<RawFd> {
    static PIDFD: OnceLock<Option<OwnedFd>> = OnceLock::new();
    PIDFD
        .get_or_init(|| {
            // SAFETY: pidfd_open returns a new close-on-exec fd or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
            // SAFETY: fd was just returned to us and nothing else owns it.
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
        })
        .as_ref()
        .map(AsRawFd::as_raw_fd)
}

/// True when the process behind `pidfd` has ended.
unsafe fn ended(pidfd: RawFd) -> bool {
    let mut poll = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut poll, 1, 0) == 1 && poll.revents & libc::POLLIN != 0 }
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl ChildSetup {
    /// Runs in the child after `fork`.
    ///
    /// # Safety
    /// Only to be called from `pre_exec`: it changes the calling process's
    /// namespaces, mounts, session and root.
    pub(crate) unsafe fn run(&self) -> io::Result<()> {
        unsafe {
            // SAFETY property: the peer is the only one that could stop
            // these processes (it fences its Pods when cut off from the
            // leader). If it dies, nobody would, and a replacement Pod could
            // run beside the old one; so the kernel kills the child when its
            // parent goes. The spawning thread never exits (PDEATHSIG follows
            // the thread), and the getppid check closes the race with a
            // parent that died before prctl.
            check(libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ))?;
            let parent_gone = match peer_pidfd() {
                Some(fd) => ended(fd),
                None => !self.in_pid_namespace && libc::getppid() != self.parent_pid,
            };
            if parent_gone {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            // Its own session and process group: stop and cleanup signal the
            // whole group, reaching what the container forked.
            check(libc::setsid())?;
            for fd in &self.cgroup_procs {
                if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (fd, kind) in &self.join {
                check(libc::setns(fd.as_raw_fd(), *kind))?;
            }
            if self.unshare != 0 {
                check(libc::unshare(self.unshare))?;
            }
            if let Some(name) = &self.hostname {
                check(libc::sethostname(name.as_ptr(), name.as_bytes().len()))?;
            }
            if self.loopback_up {
                loopback_up()?;
            }
            if let Some((root, mounts)) = &self.root {
                enter_root(root, mounts)?;
            }
            if let Some(dir) = &self.working_dir {
                check(libc::chdir(dir.as_ptr()))?;
            }
            if let Some(status) = &self.init_status {
                run_init(status.as_raw_fd(), self.command_line)?;
            }
        }
        Ok(())
    }
}

/// The name and command line of a container's init.
static INIT_NAME: &[u8] = b"flotilla-init\0";

/// Forks the container's program and, in the original child, stays as
/// the container's init until the program ends; returns only in the
/// program's process, which then execs.
///
/// The init is the first process of the container's pid namespace (or,
/// with a namespace shared by the Pod, a subreaper in it), so everything
/// the program forks, however it detaches, ends when the init ends: the
/// kernel kills a pid namespace with its first process. The init never
/// changes its credentials and never execs, so its `PR_SET_PDEATHSIG`
/// holds whatever the program does (a setuid would clear the program's
/// own). Signals sent to it go to the program, so a program needs no
/// handler of its own to stop on SIGTERM, as if it were not an init.
///
/// # Safety
/// Only from [`ChildSetup::run`]: it forks, and the init half never returns.
unsafe fn run_init(status_fd: RawFd, command_line: Option<(usize, usize)>) -> io::Result<()> {
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        check(libc::sigprocmask(libc::SIG_SETMASK, &all, &mut before))?;
        check(libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))?;
        // A raw clone: glibc's fork runs atfork handlers, which may lock.
        let program = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0);
        if program < 0 {
            return Err(io::Error::last_os_error());
        }
        if program == 0 {
            check(libc::sigprocmask(
                libc::SIG_SETMASK,
                &before,
                std::ptr::null_mut(),
            ))?;
            return Ok(());
        }
        let program = program as libc::pid_t;
        // Shown by ps and top instead of the peer's name and command line,
        // which a fork keeps: an init is not a peer. The command line is
        // this process's own copy of the peer's, overwritten in place.
        libc::prctl(libc::PR_SET_NAME, INIT_NAME.as_ptr(), 0, 0, 0);
        if let Some((start, end)) = command_line
            && end > start
        {
            let region = std::slice::from_raw_parts_mut(start as *mut u8, end - start);
            region.fill(0);
            let name = &INIT_NAME[..INIT_NAME.len().min(region.len()) - 1];
            region[..name.len()].copy_from_slice(name);
        }
        // Only the status pipe stays open: the log pipe and the spawn's
        // error pipe must reach their end when the program's copies close.
        if status_fd > 0 {
            libc::syscall(libc::SYS_close_range, 0, status_fd - 1, 0);
        }
        libc::syscall(libc::SYS_close_range, status_fd + 1, libc::c_uint::MAX, 0);
        loop {
            let signal = libc::sigwaitinfo(&all, std::ptr::null_mut());
            if signal == libc::SIGCHLD {
                loop {
                    let mut status = 0;
                    let reaped = libc::waitpid(-1, &mut status, libc::WNOHANG);
                    if reaped <= 0 {
                        break;
                    }
                    if reaped == program {
                        let bytes = status.to_ne_bytes();
                        libc::write(status_fd, bytes.as_ptr().cast(), bytes.len());
                        let code = if libc::WIFEXITED(status) {
                            libc::WEXITSTATUS(status)
                        } else {
                            128 + libc::WTERMSIG(status)
                        };
                        libc::_exit(code);
                    }
                }
            } else if signal > 0 {
                libc::kill(program, signal);
            }
        }
    }
}

/// Sets `lo` up in the current network namespace, as a new namespace has
/// it down.
unsafe fn loopback_up() -> io::Result<()> {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check(fd)?;
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
            *dst = *src as libc::c_char;
        }
        let mut result = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if result == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            result = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let error = io::Error::last_os_error();
        libc::close(fd);
        if result < 0 { Err(error) } else { Ok(()) }
    }
}

/// Makes the mounts in the (already private) mount namespace and moves the
/// process's root to `root`.
unsafe fn enter_root(root: &CString, mounts: &[ChildMount]) -> io::Result<()> {
    unsafe {
        let null = std::ptr::null::<libc::c_char>();
        // Nothing mounted from here on may propagate back to the host.
        check(libc::mount(
            null,
            c"/".as_ptr(),
            null,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        // pivot_root needs the new root to be a mount point.
        check(libc::mount(
            root.as_ptr(),
            root.as_ptr(),
            null,
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ))?;
        for mount in mounts {
            match mount {
                ChildMount::Bind {
                    source,
                    target,
                    read_only,
                    recursive,
                } => {
                    let rec = if *recursive { libc::MS_REC } else { 0 };
                    check(libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        null,
                        libc::MS_BIND | rec,
                        std::ptr::null(),
                    ))?;
                    if *read_only {
                        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                        check(libc::mount(
                            null,
                            target.as_ptr(),
                            null,
                            flags,
                            std::ptr::null(),
                        ))?;
                    }
                }
                ChildMount::Proc { target } => {
                    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                    check(libc::mount(
                        c"proc".as_ptr(),
                        target.as_ptr(),
                        c"proc".as_ptr(),
                        flags,
                        std::ptr::null(),
                    ))?;
                }
            }
        }
        check(libc::chdir(root.as_ptr()))?;
        // pivot_root(".", ".") stacks the old root under the new one, and
        // the detach drops it; chroot is the fallback where pivot_root is
        // refused (a root that is not a mount, as in an initramfs).
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == 0 {
            check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
        } else {
            check(libc::chroot(c".".as_ptr()))?;
        }
        check(libc::chdir(c"/".as_ptr()))
    }
}

/// Mount points of this mount namespace at or under `dir`.
pub(crate) fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|point| point.starts_with(dir))
        .collect())
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            out.push(
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'),
            );
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes `dir` and everything in it without ever deleting through a
/// mount: whatever is mounted under it is detached first, and the removal
/// refuses to descend into a directory that is still a mount point or lies
/// on another filesystem. Symbolic links are removed, never followed.
pub(crate) fn remove_tree(dir: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(dir);
    }
    let mut points = mounts_under(dir)?;
    // Deepest first, so a mount is never detached from under another.
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in &points {
        let c = cstring(point)?;
        // SAFETY: umount2 has no memory effects.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    if let Some(point) = mounts_under(dir)?.first() {
        return Err(io::Error::other(format!(
            "refusing to remove {}: {} is still mounted",
            dir.display(),
            point.display()
        )));
    }
    use std::os::unix::fs::MetadataExt;
    remove_within(dir, meta.dev(), 0)?;
    std::fs::remove_dir(dir)
}

fn remove_within(dir: &Path, dev: u64, depth: usize) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if depth > MAX_REMOVE_DEPTH {
        return Err(io::Error::other(format!(
            "refusing to remove {}: nested too deep",
            dir.display()
        )));
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            if meta.dev() != dev {
                return Err(io::Error::other(format!(
                    "refusing to remove {}: another filesystem is mounted there",
                    path.display()
                )));
            }
            remove_within(&path, dev, depth + 1)?;
            std::fs::remove_dir(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// An absolute path without `.`/`..` parts, as its components.
pub(crate) fn absolute_components(path: &str) -> Option<Vec<String>> {
    let path = Path::new(path);
    if !path.is_absolute() {
        return None;
    }
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(part) => parts.push(part.to_str()?.to_owned()),
            _ => return None,
        }
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }

    #[test]
    fn absolute_components_reject_relative_and_dots() {
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("/data/x", Some(&["data", "x"])),
            ("/", Some(&[])),
            ("data", None),
            ("/a/../b", None),
            ("//a//b/", Some(&["a", "b"])),
        ];
        for (input, want) in cases {
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(absolute_components(input), want, "{input}");
        }
    }

    #[test]
    fn own_start_ticks_identify_this_process() {
        let pid = std::process::id() as i32;
        let ticks = start_ticks(pid).expect("own stat");
        assert!(is_same_process(pid, ticks));
        assert!(!is_same_process(pid, ticks + 1));
    }

    #[test]
    fn remove_tree_removes_links_without_following_them() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "x").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), "y").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("a/link")).unwrap();
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert!(outside.path().join("keep").exists());
        remove_tree(&root).unwrap();
    }
}
