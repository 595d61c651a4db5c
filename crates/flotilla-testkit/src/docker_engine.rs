//! The local Docker engine, for tests of the docker runtime. The engine may
//! have no images and no registry to pull from, so the tests run a tools
//! image built FROM scratch out of this machine's programs (dash as
//! `/bin/sh`, sleep, cat, perl with its base modules) and the libraries
//! they load. Everything goes through the `docker` CLI.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The image every test Pod and container runs.
pub const TOOLS_IMAGE: &str = "flotilla-test-tools:latest";

/// The label the docker runtime puts its owner (the node's name) in: the
/// same as `flotilla_runtime::docker::LABEL_OWNER`, which its tests check.
pub const LABEL_OWNER: &str = "io.flotilla.owner";

/// Serves the files under a directory over HTTP/1.0 on a port: `perl -e
/// HTTP_SERVER <port> <dir>`.
pub const HTTP_SERVER: &str = r#"
use IO::Socket::INET;
$| = 1;
my ($port, $root) = @ARGV;
my $server = IO::Socket::INET->new(LocalAddr => "0.0.0.0", LocalPort => $port, Listen => 16, ReuseAddr => 1)
    or die "cannot listen on $port: $!\n";
print "listening on $port\n";
while (my $client = $server->accept) {
    my $request = <$client> // "";
    while (my $line = <$client>) { last if $line =~ /^\r?\n$/ }
    my ($path) = $request =~ m{^GET (/\S*)};
    my $file = defined $path && $path !~ /\.\./ ? "$root$path" : "";
    if ($file ne "" && -f $file && open(my $fh, "<", $file)) {
        local $/;
        my $body = <$fh>;
        print $client "HTTP/1.0 200 OK\r\nContent-Length: " . length($body) . "\r\n\r\n" . $body;
    } else {
        print $client "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    }
    close $client;
}
"#;

/// Fetches `http://127.0.0.1:<port><path>` and prints the body: `perl -e
/// HTTP_CLIENT <port> <path>`.
pub const HTTP_CLIENT: &str = r#"
use IO::Socket::INET;
my ($port, $path) = @ARGV;
my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $port) or die "cannot connect: $!\n";
print $s "GET $path HTTP/1.0\r\n\r\n";
my $answer = do { local $/; <$s> };
my ($body) = $answer =~ /\r\n\r\n(.*)/s;
print $body;
"#;

/// How long the engine may take to answer at all.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long building the tools image may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
/// How long force-removing containers may take.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `docker <args>`, killing it after `timeout`: an engine that hangs
/// must fail a test, not stall it.
fn docker(args: &[&str], timeout: Duration) -> Result<Output, String> {
    let child = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("no docker CLI: {e}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(timeout) {
        Ok(out) => out.map_err(|e| format!("docker {}: {e}", args.join(" "))),
        Err(_) => {
            // Not reaped yet (the thread waits for it), so the pid is still ours.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            Err(format!("docker {} did not finish within {timeout:?}", args.join(" ")))
        }
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// The engine's version, or why no engine answers.
pub fn engine() -> Result<String, String> {
    let out = docker(&["version", "--format", "{{.Server.Version}}"], ANSWER_TIMEOUT)
        .map_err(|e| format!("no Docker engine answers: {e}"))?;
    if !out.status.success() {
        return Err(format!("no Docker engine answers: {}", stderr_of(&out)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Builds the tools image, once per process (from the engine's cache, a
/// rebuild of the same files is quick and yields the same image), and returns
/// its name; or why it cannot be had: no engine answers, or a program is
/// missing. Blocks.
pub fn tools_image() -> Result<&'static str, String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(build_tools_image).clone().map(|()| TOOLS_IMAGE)
}

fn build_tools_image() -> Result<(), String> {
    engine()?;
    let context = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    write_tools_context(context.path())?;
    let dir = context.path().to_string_lossy().to_string();
    // One build at a time on this machine: builds running at once all miss
    // the cache, and all but the last leave an untagged image behind.
    let lock_path = std::env::temp_dir().join("flotilla-test-tools.lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!("locking {}: {}", lock_path.display(), std::io::Error::last_os_error()));
    }
    let out = docker(&["build", "--quiet", "--tag", TOOLS_IMAGE, &dir], BUILD_TIMEOUT)?;
    if !out.status.success() {
        return Err(format!("cannot build {TOOLS_IMAGE}: {}", stderr_of(&out)));
    }
    Ok(())
}

fn find_program(name: &str) -> Option<PathBuf> {
    ["/bin", "/usr/bin"].iter().map(|dir| Path::new(dir).join(name)).find(|p| p.exists())
}

/// The shared libraries `ldd` says `program` loads.
fn libraries(program: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd").arg(program).output().map_err(|e| format!("ldd: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().filter(|word| word.starts_with('/')).map(PathBuf::from).collect())
}

/// Copies `src` (following links) to `<rootfs>/<dst>`, with its mode.
fn copy_into(rootfs: &Path, src: &Path, dst: &Path) -> Result<(), String> {
    let to = rootfs.join(dst.strip_prefix("/").unwrap_or(dst));
    let fail = |e: std::io::Error| format!("{} -> {}: {e}", src.display(), to.display());
    if std::fs::metadata(src).map_err(fail)?.is_dir() {
        std::fs::create_dir_all(&to).map_err(fail)?;
        for entry in std::fs::read_dir(src).map_err(fail)? {
            let name = entry.map_err(fail)?.file_name();
            copy_into(rootfs, &src.join(&name), &dst.join(&name))?;
        }
        return Ok(());
    }
    std::fs::create_dir_all(to.parent().expect("a file has a parent")).map_err(fail)?;
    std::fs::copy(src, &to).map_err(fail)?;
    Ok(())
}

/// The build context of the tools image under `dir`: a Dockerfile, and in
/// `rootfs/` the programs and what they load at their own paths, perl's
/// base modules and a world-writable /tmp.
fn write_tools_context(dir: &Path) -> Result<(), String> {
    let rootfs = dir.join("rootfs");
    let mut libs = Vec::new();
    for (name, dst) in [("dash", "/bin/sh"), ("sleep", "/bin/sleep"), ("cat", "/bin/cat"), ("perl", "/bin/perl")] {
        let src = find_program(name).ok_or_else(|| format!("no {name} on this machine"))?;
        copy_into(&rootfs, &src, Path::new(dst))?;
        libs.extend(libraries(&src)?);
    }
    libs.sort();
    libs.dedup();
    for lib in &libs {
        copy_into(&rootfs, lib, lib)?;
    }
    let out = Command::new("perl")
        .args(["-MIO::Socket::INET", "-e", "print $INC{'IO/Socket/INET.pm'}"])
        .output()
        .map_err(|e| format!("perl: {e}"))?;
    let module = String::from_utf8_lossy(&out.stdout).into_owned();
    let modules = module.strip_suffix("/IO/Socket/INET.pm").ok_or_else(|| "perl has no IO::Socket::INET".to_string())?;
    copy_into(&rootfs, Path::new(modules), Path::new(modules))?;
    let tmp = rootfs.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let dockerfile = concat!(
        "FROM scratch\n",
        "COPY rootfs/ /\n",
        "LABEL io.flotilla.test=tools\n",
        "ENTRYPOINT [\"/bin/sh\", \"-c\"]\n",
        "CMD [\"echo image-default\"]\n",
    );
    std::fs::write(dir.join("Dockerfile"), dockerfile).map_err(|e| format!("Dockerfile: {e}"))
}

/// The ids of every container, running or not, labelled as `owner`'s.
pub fn containers_of(owner: &str) -> Result<Vec<String>, String> {
    list_containers_of(owner, "--all")
}

/// The ids of the running containers labelled as `owner`'s.
pub fn running_containers_of(owner: &str) -> Result<Vec<String>, String> {
    list_containers_of(owner, "--filter=status=running")
}

fn list_containers_of(owner: &str, which: &str) -> Result<Vec<String>, String> {
    let filter = format!("label={LABEL_OWNER}={owner}");
    let out = docker(&["ps", which, "--quiet", "--no-trunc", "--filter", &filter], ANSWER_TIMEOUT)?;
    if !out.status.success() {
        return Err(format!("cannot list the containers of {owner}: {}", stderr_of(&out)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect())
}

/// Removes every container labelled as `owner`'s, with its anonymous
/// volumes: containers outlive the peer or runtime that made them.
pub fn remove_containers_of(owner: &str) -> Result<(), String> {
    let ids = containers_of(owner)?;
    if ids.is_empty() {
        return Ok(());
    }
    let mut args = vec!["rm", "--force", "--volumes"];
    args.extend(ids.iter().map(String::as_str));
    let out = docker(&args, REMOVE_TIMEOUT)?;
    if !out.status.success() {
        return Err(format!("cannot remove the containers of {owner}: {}", stderr_of(&out)));
    }
    Ok(())
}
