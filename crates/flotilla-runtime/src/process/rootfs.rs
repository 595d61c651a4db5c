//! The root a container sees: assembled under the state directory from
//! read-only binds of the host's system directories, fresh `/tmp`, `/proc`
//! and a minimal `/dev`, and the Pod's volumes at their mount paths.
//!
//! A mount path that does not exist on the host is never created there.
//! Where it falls into a bound host directory (`/etc/app` with `/etc`
//! bound), that directory is *shadowed*: the root gets a real directory in
//! its place holding one bind per host entry plus the new mount point, so
//! the host's files stay visible and the host stays untouched.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::sys::{ChildMount, cstring};

/// Host directories every container sees read-only (those that exist).
const SYSTEM_DIRS: &[&str] = &[
    "bin", "sbin", "usr", "lib", "lib32", "lib64", "libx32", "etc", "opt",
];
/// Device nodes bound into the container's `/dev`; no other host device is
/// reachable.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// Symbolic links followed at most while placing one mount path.
const MAX_LINK_HOPS: usize = 16;
/// Host entries shadowed at most per root, which bounds its mounts.
const MAX_SHADOWED_ENTRIES: usize = 4096;

/// A volume to mount: `source` on the host at `target` in the container.
#[derive(Clone, Debug)]
pub(crate) struct VolumeMount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
    /// The source is a directory (else a file).
    pub dir: bool,
}

#[derive(Debug, PartialEq)]
pub(crate) enum Entry {
    Dir(u32),
    File,
    Symlink(PathBuf),
}

#[derive(Debug, PartialEq)]
pub(crate) enum MountKind {
    Bind { read_only: bool, recursive: bool },
    Proc,
}

#[derive(Debug, PartialEq)]
pub(crate) struct PlannedMount {
    pub source: PathBuf,
    /// Relative to the root.
    pub target: PathBuf,
    pub kind: MountKind,
}

/// What to make under the root (in order) and what the child mounts.
#[derive(Debug, Default)]
pub(crate) struct RootPlan {
    pub entries: Vec<(PathBuf, Entry)>,
    pub mounts: Vec<PlannedMount>,
}

#[derive(Debug)]
enum Node {
    Dir {
        mode: u32,
        children: BTreeMap<OsString, Node>,
    },
    Bind {
        source: PathBuf,
        dir: bool,
        read_only: bool,
        recursive: bool,
    },
    File,
    Symlink(PathBuf),
    Proc,
}

fn dir(mode: u32, children: impl IntoIterator<Item = (&'static str, Node)>) -> Node {
    Node::Dir {
        mode,
        children: children
            .into_iter()
            .map(|(k, v)| (OsString::from(k), v))
            .collect(),
    }
}

/// Plans the root for a container with `volumes`, taking system
/// directories from `host` (`/` but in tests).
pub(crate) fn plan(host: &Path, volumes: &[VolumeMount]) -> Result<RootPlan, String> {
    let mut tree = Tree {
        root: base(host),
        shadowed: 0,
    };
    let mut placed = Vec::new();
    for volume in volumes {
        let parts = super::sys::absolute_components(&volume.target).ok_or_else(|| {
            format!(
                "mount path {:?} must be absolute, without . or ..",
                volume.target
            )
        })?;
        if parts.is_empty() {
            return Err("mount path \"/\" would hide the whole root".into());
        }
        let target = tree
            .place(parts.into_iter().map(OsString::from).collect(), volume.dir)
            .map_err(|e| format!("mount path {:?}: {e}", volume.target))?;
        placed.push((target, volume));
    }
    let mut plan = RootPlan::default();
    if let Node::Dir { children, .. } = &tree.root {
        emit(Path::new(""), children, &mut plan);
    }
    // Parents before what is mounted inside them.
    placed.sort_by_key(|(target, _)| target.components().count());
    for (target, volume) in placed {
        plan.mounts.push(PlannedMount {
            source: volume.source.clone(),
            target,
            kind: MountKind::Bind {
                read_only: volume.read_only,
                recursive: true,
            },
        });
    }
    Ok(plan)
}

fn base(host: &Path) -> Node {
    let mut root = dir(
        0o755,
        [
            ("proc", Node::Proc),
            ("tmp", dir(0o1777, [])),
            ("root", dir(0o700, [])),
            ("home", dir(0o755, [])),
            ("run", dir(0o755, [])),
            (
                "var",
                dir(
                    0o755,
                    [
                        ("tmp", dir(0o1777, [])),
                        ("run", Node::Symlink("/run".into())),
                    ],
                ),
            ),
            (
                "dev",
                dir(
                    0o755,
                    [
                        ("shm", dir(0o1777, [])),
                        ("fd", Node::Symlink("/proc/self/fd".into())),
                        ("stdin", Node::Symlink("/proc/self/fd/0".into())),
                        ("stdout", Node::Symlink("/proc/self/fd/1".into())),
                        ("stderr", Node::Symlink("/proc/self/fd/2".into())),
                    ],
                ),
            ),
        ],
    );
    let Node::Dir { children, .. } = &mut root else {
        unreachable!("base is a directory")
    };
    for name in SYSTEM_DIRS {
        if let Some(node) = host_node(&host.join(name), true) {
            children.insert(name.into(), node);
        }
    }
    if host.join("sys").is_dir() {
        children.insert(
            "sys".into(),
            Node::Bind {
                source: host.join("sys"),
                dir: true,
                read_only: true,
                recursive: false,
            },
        );
    }
    if let Some(Node::Dir { children: dev, .. }) = children.get_mut(std::ffi::OsStr::new("dev")) {
        for name in DEVICES {
            let source = host.join("dev").join(name);
            if std::fs::metadata(&source).is_ok() {
                dev.insert(
                    name.into(),
                    Node::Bind {
                        source,
                        dir: false,
                        read_only: false,
                        recursive: false,
                    },
                );
            }
        }
    }
    root
}

/// The node mirroring one host entry; sockets, fifos and devices are left out.
fn host_node(path: &Path, read_only: bool) -> Option<Node> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        Some(Node::Symlink(std::fs::read_link(path).ok()?))
    } else if meta.is_dir() {
        Some(Node::Bind {
            source: path.to_owned(),
            dir: true,
            read_only,
            recursive: true,
        })
    } else if meta.is_file() {
        Some(Node::Bind {
            source: path.to_owned(),
            dir: false,
            read_only,
            recursive: false,
        })
    } else {
        None
    }
}

struct Tree {
    root: Node,
    shadowed: usize,
}

impl Tree {
    /// Makes sure the root has a mount point at `parts` (a directory or a
    /// file) and returns its path relative to the root, links resolved.
    fn place(&mut self, parts: Vec<OsString>, want_dir: bool) -> Result<PathBuf, String> {
        let Tree { root, shadowed } = self;
        let mut pending: VecDeque<OsString> = parts.into();
        let mut hops = 0;
        'restart: loop {
            let mut resolved = PathBuf::new();
            let mut node = &mut *root;
            while let Some(name) = pending.pop_front() {
                let last = pending.is_empty();
                let Node::Dir { children, .. } = node else {
                    return Err(format!("{} is not a directory", resolved.display()));
                };
                let child = children.entry(name.clone()).or_insert_with(|| {
                    if last && !want_dir {
                        Node::File
                    } else {
                        Node::Dir {
                            mode: 0o755,
                            children: BTreeMap::new(),
                        }
                    }
                });
                resolved.push(&name);
                match child {
                    Node::Symlink(link) => {
                        hops += 1;
                        if hops > MAX_LINK_HOPS {
                            return Err("too many symbolic links".into());
                        }
                        let parent = resolved.parent().unwrap_or(Path::new(""));
                        let full = Path::new("/").join(parent).join(&*link);
                        let mut rest = lexical_components(&full);
                        rest.extend(pending.drain(..));
                        pending = rest.into();
                        continue 'restart;
                    }
                    Node::Bind {
                        source,
                        dir: true,
                        read_only,
                        ..
                    } => {
                        if last {
                            return if want_dir {
                                Ok(resolved)
                            } else {
                                Err(format!("{} is a directory", resolved.display()))
                            };
                        }
                        if exists_without_links(source, pending.iter(), want_dir) {
                            resolved.extend(pending.iter());
                            return Ok(resolved);
                        }
                        let (source, read_only) = (source.clone(), *read_only);
                        *child = shadow(&source, read_only, shadowed)?;
                        node = child;
                    }
                    Node::Dir { .. } => {
                        if last {
                            return if want_dir {
                                Ok(resolved)
                            } else {
                                Err(format!("{} is a directory", resolved.display()))
                            };
                        }
                        node = child;
                    }
                    Node::Bind { dir: false, .. } | Node::File => {
                        return if last && !want_dir {
                            Ok(resolved)
                        } else {
                            Err(format!("{} is not a directory", resolved.display()))
                        };
                    }
                    Node::Proc => return Err("cannot mount under /proc".into()),
                }
            }
            return Err("empty mount path".into());
        }
    }
}

/// A real directory in place of the bind of host directory `source`, with
/// one node per host entry; `shadowed` counts entries across the root.
fn shadow(source: &Path, read_only: bool, shadowed: &mut usize) -> Result<Node, String> {
    let meta = std::fs::metadata(source).map_err(|e| format!("{}: {e}", source.display()))?;
    let mut children = BTreeMap::new();
    for entry in std::fs::read_dir(source).map_err(|e| format!("{}: {e}", source.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", source.display()))?;
        *shadowed += 1;
        if *shadowed > MAX_SHADOWED_ENTRIES {
            return Err(format!(
                "more than {MAX_SHADOWED_ENTRIES} host entries to shadow"
            ));
        }
        if let Some(node) = host_node(&entry.path(), read_only) {
            children.insert(entry.file_name(), node);
        }
    }
    Ok(Node::Dir {
        mode: meta.mode() & 0o7777,
        children,
    })
}

/// The parts of an absolute path with `.` and `..` applied.
fn lexical_components(path: &Path) -> Vec<OsString> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts
}

/// True when `base/rest...` exists on the host as the wanted kind with no
/// symbolic link on the way (links are resolved in the root instead).
fn exists_without_links<'a>(
    base: &Path,
    rest: impl Iterator<Item = &'a OsString>,
    want_dir: bool,
) -> bool {
    let mut path = base.to_owned();
    let mut meta = None;
    for part in rest {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.file_type().is_symlink() => meta = Some(m),
            _ => return false,
        }
    }
    meta.is_some_and(|m| m.is_dir() == want_dir)
}

fn emit(at: &Path, children: &BTreeMap<OsString, Node>, plan: &mut RootPlan) {
    for (name, node) in children {
        let path = at.join(name);
        match node {
            Node::Dir { mode, children } => {
                plan.entries.push((path.clone(), Entry::Dir(*mode)));
                emit(&path, children, plan);
            }
            Node::Bind {
                source,
                dir,
                read_only,
                recursive,
            } => {
                plan.entries.push((
                    path.clone(),
                    if *dir { Entry::Dir(0o755) } else { Entry::File },
                ));
                plan.mounts.push(PlannedMount {
                    source: source.clone(),
                    target: path,
                    kind: MountKind::Bind {
                        read_only: *read_only,
                        recursive: *recursive,
                    },
                });
            }
            Node::File => plan.entries.push((path, Entry::File)),
            Node::Symlink(link) => plan.entries.push((path, Entry::Symlink(link.clone()))),
            Node::Proc => {
                plan.entries.push((path.clone(), Entry::Dir(0o555)));
                plan.mounts.push(PlannedMount {
                    source: "proc".into(),
                    target: path,
                    kind: MountKind::Proc,
                });
            }
        }
    }
}

impl RootPlan {
    /// Makes the root's directories, placeholders and links under `root`,
    /// which must not exist yet. Everything made here is inside `root`.
    pub(crate) fn build(&self, root: &Path) -> io::Result<()> {
        std::fs::create_dir(root)?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
        for (path, entry) in &self.entries {
            let path = root.join(path);
            match entry {
                Entry::Dir(mode) => {
                    std::fs::create_dir(&path)?;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))?;
                }
                Entry::File => drop(std::fs::File::create(&path)?),
                Entry::Symlink(link) => std::os::unix::fs::symlink(link, &path)?,
            }
        }
        Ok(())
    }

    /// The mounts as the child makes them, with absolute targets.
    pub(crate) fn child_mounts(&self, root: &Path) -> io::Result<Vec<ChildMount>> {
        self.mounts
            .iter()
            .map(|m| {
                let target = cstring(root.join(&m.target))?;
                Ok(match m.kind {
                    MountKind::Bind {
                        read_only,
                        recursive,
                    } => ChildMount::Bind {
                        source: cstring(&m.source)?,
                        target,
                        read_only,
                        recursive,
                    },
                    MountKind::Proc => ChildMount::Proc { target },
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake host: /etc with a file and a subdirectory, /usr/bin, and
    /// /bin -> usr/bin.
    fn host() -> tempfile::TempDir {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        std::fs::create_dir_all(h.join("etc/ssl")).unwrap();
        std::fs::write(h.join("etc/passwd"), "root").unwrap();
        std::fs::create_dir_all(h.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", h.join("bin")).unwrap();
        host
    }

    fn volume(target: &str) -> VolumeMount {
        VolumeMount {
            source: "/vol".into(),
            target: target.into(),
            read_only: false,
            dir: true,
        }
    }

    fn mount_targets(plan: &RootPlan) -> Vec<String> {
        plan.mounts
            .iter()
            .map(|m| m.target.display().to_string())
            .collect()
    }

    #[test]
    fn system_dirs_are_bound_and_links_copied() {
        let host = host();
        let plan = plan(host.path(), &[]).unwrap();
        let etc = plan
            .mounts
            .iter()
            .find(|m| m.target == Path::new("etc"))
            .unwrap();
        assert_eq!(
            etc.kind,
            MountKind::Bind {
                read_only: true,
                recursive: true
            }
        );
        assert_eq!(etc.source, host.path().join("etc"));
        assert!(
            plan.entries
                .contains(&(PathBuf::from("bin"), Entry::Symlink("usr/bin".into())))
        );
        assert!(
            plan.entries
                .contains(&(PathBuf::from("tmp"), Entry::Dir(0o1777)))
        );
        assert!(
            plan.mounts
                .iter()
                .any(|m| m.kind == MountKind::Proc && m.target == Path::new("proc"))
        );
    }

    #[test]
    fn volume_targets_are_placed() {
        let host = host();
        let cases: &[(&str, &str, bool)] = &[
            // (mount path, placed at, /etc shadowed)
            ("/data/shared", "data/shared", false),
            ("/etc/ssl", "etc/ssl", false),
            ("/etc/app/conf", "etc/app/conf", true),
            ("/bin/tool", "usr/bin/tool", false),
            ("/tmp/x", "tmp/x", false),
        ];
        for (target, placed, shadowed) in cases {
            let plan = plan(host.path(), &[volume(target)]).unwrap();
            let last = plan.mounts.last().unwrap();
            assert_eq!(last.target, Path::new(placed), "{target}");
            assert_eq!(last.source, Path::new("/vol"), "{target}");
            let etc_bound = mount_targets(&plan).contains(&"etc".to_string());
            assert_eq!(etc_bound, !shadowed, "{target}");
            if *shadowed {
                let targets = mount_targets(&plan);
                assert!(targets.contains(&"etc/passwd".to_string()), "{targets:?}");
                assert!(targets.contains(&"etc/ssl".to_string()), "{targets:?}");
                assert!(
                    plan.entries
                        .contains(&(PathBuf::from("etc/app/conf"), Entry::Dir(0o755)))
                );
            }
        }
        assert!(!host.path().join("etc/app").exists());
        assert!(!host.path().join("usr/bin/tool").exists());
    }

    #[test]
    fn bad_mount_paths_are_refused() {
        let host = host();
        for target in ["relative", "/", "/a/../b", "/proc/x", "/etc/passwd/x"] {
            assert!(plan(host.path(), &[volume(target)]).is_err(), "{target}");
        }
    }

    #[test]
    fn build_makes_entries_under_the_root_only() {
        let host = host();
        let state = tempfile::tempdir().unwrap();
        let root = state.path().join("root");
        let plan = plan(host.path(), &[volume("/etc/app")]).unwrap();
        plan.build(&root).unwrap();
        assert!(root.join("etc/app").is_dir());
        assert!(root.join("etc/passwd").is_file());
        assert_eq!(
            std::fs::read_link(root.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert_eq!(
            std::fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
            0o1777
        );
        let mounts = plan.child_mounts(&root).unwrap();
        assert_eq!(mounts.len(), plan.mounts.len());
    }
}
