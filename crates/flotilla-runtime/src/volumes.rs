//! A sandbox's volumes on the host, the same in every runtime that keeps
//! them in directories: emptyDir directories and files volumes under
//! `<dir>/volumes/<name>`; host paths are used as they are.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::spec::start_error;
use crate::{MountSpec, RuntimeError, SandboxSpec, VolumeSource};

/// Writes a sandbox's volumes under `dir`: emptyDir directories, and files
/// once.
pub(crate) fn make(dir: &Path, spec: &SandboxSpec) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let volumes = dir.join("volumes");
    std::fs::create_dir_all(&volumes)?;
    for volume in &spec.volumes {
        let path = volumes.join(&volume.name);
        match &volume.source {
            VolumeSource::EmptyDir => {
                if !path.exists() {
                    std::fs::create_dir(&path)?;
                    // Containers may run as any user.
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
                }
            }
            VolumeSource::Files { files } => {
                if path.exists() {
                    continue;
                }
                // Left by a crash midway: nothing is mounted in it.
                let tmp = volumes.join(format!(".{}.tmp", volume.name));
                if tmp.exists() {
                    std::fs::remove_dir_all(&tmp)?;
                }
                write_files(&volume.name, files, &tmp, &path)?;
            }
            VolumeSource::HostPath { .. } => {}
        }
    }
    Ok(())
}

/// Where on the host the volume `mount` names lives: a host path as it
/// is, any other under `<dir>/volumes/`. Starting `container` fails when
/// the Pod has no such volume.
pub(crate) fn mount_source(
    dir: &Path,
    sandbox: &SandboxSpec,
    container: &str,
    mount: &MountSpec,
) -> Result<PathBuf, RuntimeError> {
    let volume = sandbox
        .volumes
        .iter()
        .find(|v| v.name == mount.volume)
        .ok_or_else(|| {
            start_error(
                container,
                format!(
                    "mount names volume {:?} that the Pod does not have",
                    mount.volume
                ),
            )
        })?;
    Ok(match &volume.source {
        VolumeSource::HostPath { path } => path.clone(),
        _ => dir.join("volumes").join(&volume.name),
    })
}

/// Writes a files volume (a configMap's) into the empty directory `tmp`,
/// then renames it to `path`: whole or not at all, so a crash midway
/// leaves no half volume. File names must be relative paths without `.`
/// or `..`, so that nothing is written outside the volume.
fn write_files(
    volume: &str,
    files: &BTreeMap<String, String>,
    tmp: &Path,
    path: &Path,
) -> io::Result<()> {
    std::fs::create_dir_all(tmp)?;
    for (name, content) in files {
        let relative = Path::new(name);
        if name.is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(io::Error::other(format!(
                "volume {volume}: file name {name:?} must be a relative path without . or .."
            )));
        }
        let file = tmp.join(relative);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(file, content)?;
    }
    std::fs::rename(tmp, path)
}
