//! Container output: copied from a pipe into one file per attempt, bounded
//! by dropping the older half whenever it would outgrow its limit.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes read from a container's pipe at a time.
const CHUNK_BYTES: usize = 64 << 10;
/// Bytes `read_from` returns at most per call.
pub(crate) const MAX_READ_BYTES: u64 = 1 << 20;

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
        let kept = newest_half(&content, limit_bytes);
        file.set_len(0).await?;
        file.write_all(kept).await?;
        size = kept.len() as u64;
    }
}

/// The newest part of `content` no longer than half of `limit_bytes`,
/// starting at a line where one starts within it.
fn newest_half(content: &[u8], limit_bytes: u64) -> &[u8] {
    let keep = (limit_bytes / 2) as usize;
    if content.len() <= keep {
        return content;
    }
    let tail = &content[content.len() - keep..];
    match tail.iter().position(|b| *b == b'\n') {
        Some(i) if i + 1 < tail.len() => &tail[i + 1..],
        _ => tail,
    }
}

/// The last `lines` lines of `data` (a final line without newline counts).
pub(crate) fn tail(data: &[u8], lines: usize) -> &[u8] {
    if lines == 0 {
        return &data[data.len()..];
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    match body
        .iter()
        .rev()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(lines - 1)
    {
        Some((i, _)) => &data[body.len() - i..],
        None => data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_takes_last_lines() {
        let cases: &[(&str, usize, &str)] = &[
            ("a\nb\nc\n", 2, "b\nc\n"),
            ("a\nb\nc", 2, "b\nc"),
            ("a\nb\nc\n", 5, "a\nb\nc\n"),
            ("a\nb\nc\n", 1, "c\n"),
            ("a\nb\n", 0, ""),
            ("", 3, ""),
        ];
        for (data, n, want) in cases {
            assert_eq!(tail(data.as_bytes(), *n), want.as_bytes(), "{data:?} {n}");
        }
    }

    #[test]
    fn newest_half_cuts_at_a_line() {
        assert_eq!(newest_half(b"0123456789\nabcdef\n", 16), b"abcdef\n");
        assert_eq!(newest_half(b"short\n", 100), b"short\n");
        assert_eq!(newest_half(b"0123456789", 8), b"6789");
    }

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
