//! Container output: copied from a pipe into one file per attempt, bounded
//! by dropping the older half whenever it would outgrow its limit, and
//! read back for `logs`.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ProcessRuntime;
use super::records::parse_container_id;
use crate::{ContainerId, RuntimeError};

/// Bytes read from a container's pipe at a time.
const CHUNK_BYTES: usize = 64 << 10;

pub(crate) fn attempt_path(dir: &Path, attempt: u32) -> PathBuf {
    dir.join(format!("{attempt}.log"))
}

/// Attempts that have a log in `dir`, oldest first.
pub(crate) fn attempts(dir: &Path) -> Vec<u32> {
    let mut found: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    found.sort_unstable();
    found
}

/// Removes logs older than the attempt before `attempt`: `--previous`
/// needs only that one.
pub(crate) fn prune(dir: &Path, attempt: u32) -> io::Result<()> {
    let older: Vec<u32> = attempts(dir).into_iter().filter(|a| *a < attempt).collect();
    for old in older.iter().rev().skip(1) {
        std::fs::remove_file(attempt_path(dir, *old))?;
    }
    Ok(())
}

/// Copies `pipe` into `path` until every writer has closed it.
pub(crate) async fn copy(pipe: OwnedFd, path: PathBuf, limit_bytes: u64) -> io::Result<()> {
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(pipe)?;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await?;
    let mut size = file.metadata().await?.len();
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return file.flush().await;
        }
        let chunk = &buf[..n];
        if size + n as u64 <= limit_bytes {
            file.write_all(chunk).await?;
            size += n as u64;
            continue;
        }
        let mut content = tokio::fs::read(&path).await?;
        content.extend_from_slice(chunk);
        // Half the limit, so that the file is not cut again at once.
        let kept = crate::logs::newest(&content, (limit_bytes / 2) as usize);
        file.set_len(0).await?;
        file.write_all(kept).await?;
        size = kept.len() as u64;
    }
}

impl ProcessRuntime {
    pub(super) fn log_dir(&self, uid: &str, name: &str) -> PathBuf {
        self.inner.state_dir.join(uid).join("logs").join(name)
    }

    /// The log file of `id` (or of the attempt before it).
    fn log_path(&self, id: &ContainerId, previous: bool) -> Result<PathBuf, RuntimeError> {
        let (uid, name, attempt) =
            parse_container_id(id).ok_or_else(|| RuntimeError::NoContainer(id.clone()))?;
        if !self.inner.sandboxes().contains_key(uid) {
            return Err(RuntimeError::NoContainer(id.clone()));
        }
        let dir = self.log_dir(uid, name);
        let attempt = if previous {
            attempts(&dir)
                .into_iter()
                .rfind(|a| *a < attempt)
                .ok_or_else(|| {
                    RuntimeError::Other(format!("container {} has no previous attempt's log", id.0))
                })?
        } else {
            attempt
        };
        Ok(attempt_path(&dir, attempt))
    }

    pub(super) async fn read_log(
        &self,
        container: &ContainerId,
        previous: bool,
        tail_lines: Option<usize>,
    ) -> Result<Vec<u8>, RuntimeError> {
        let path = self.log_path(container, previous)?;
        let data = match tokio::fs::read(&path).await {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(crate::logs::tail_of(data, tail_lines))
    }

    pub(super) async fn read_log_from(
        &self,
        container: &ContainerId,
        offset: u64,
    ) -> Result<(Vec<u8>, u64), RuntimeError> {
        use tokio::io::AsyncSeekExt;
        let path = self.log_path(container, false)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata().await?.len();
        let offset = crate::logs::resume_at(offset, len);
        file.seek(io::SeekFrom::Start(offset)).await?;
        let mut data = Vec::new();
        file.take(crate::logs::MAX_READ_BYTES)
            .read_to_end(&mut data)
            .await?;
        let next = offset + data.len() as u64;
        Ok((data, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_previous_attempt() {
        let dir = tempfile::tempdir().unwrap();
        for a in [0, 1, 2] {
            std::fs::write(attempt_path(dir.path(), a), "x").unwrap();
        }
        prune(dir.path(), 3).unwrap();
        assert_eq!(attempts(dir.path()), vec![2]);
    }

    #[tokio::test]
    async fn copy_bounds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let (reader, mut writer) = std::io::pipe().unwrap();
        let task = tokio::spawn(copy(reader.into(), path.clone(), 1000));
        std::thread::spawn(move || {
            use std::io::Write;
            for i in 0..500 {
                writeln!(writer, "line {i:05}").unwrap();
            }
        })
        .join()
        .unwrap();
        task.await.unwrap().unwrap();
        let content = std::fs::read_to_string(&path).unwrap();
        assert!(content.len() <= 1000, "{}", content.len());
        assert!(content.ends_with("line 00499\n"));
        assert!(content.starts_with("line "));
    }
}
