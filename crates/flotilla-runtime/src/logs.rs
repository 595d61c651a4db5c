//! Reading containers' output the same way in every runtime: the last
//! lines of a log, its newest part under a bound, what came after an
//! offset, and an exec's output under a cap.

/// Bytes `read_logs_from` returns at most per call.
pub(crate) const MAX_READ_BYTES: u64 = 1 << 20;
/// Bytes of an exec's stdout and of its stderr kept at most.
pub(crate) const MAX_EXEC_OUTPUT_BYTES: usize = 1 << 20;

/// The last `lines` lines of `data` (a final line without newline counts).
pub(crate) fn tail(data: &[u8], lines: usize) -> &[u8] {
    if lines == 0 {
        return &[];
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    match body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(lines - 1)
    {
        Some((i, _)) => &data[i + 1..],
        None => data,
    }
}

/// `data`, or its last `lines` lines if given: what `read_logs` answers.
pub(crate) fn tail_of(data: Vec<u8>, lines: Option<usize>) -> Vec<u8> {
    match lines {
        Some(lines) => tail(&data, lines).to_vec(),
        None => data,
    }
}

/// The newest `limit` bytes of `data` at most, from the start of a line
/// where one starts within them.
pub(crate) fn newest(data: &[u8], limit: usize) -> &[u8] {
    if data.len() <= limit {
        return data;
    }
    let kept = &data[data.len() - limit..];
    match kept.iter().position(|b| *b == b'\n') {
        Some(i) if i + 1 < kept.len() => &kept[i + 1..],
        _ => kept,
    }
}

/// Where reading a log of `len` bytes resumes after `offset`: past its
/// end the log shrank (its older part was dropped), so from its start.
pub(crate) fn resume_at(offset: u64, len: u64) -> u64 {
    if offset > len { 0 } else { offset }
}

/// What `data` holds after `offset` (`MAX_READ_BYTES` at most), and the
/// offset to read from next: what `read_logs_from` answers.
pub(crate) fn after(data: &[u8], offset: u64) -> (Vec<u8>, u64) {
    let start = resume_at(offset, data.len() as u64) as usize;
    let end = data.len().min(start + MAX_READ_BYTES as usize);
    (data[start..end].to_vec(), end as u64)
}

/// Appends `bytes` to an exec's output, dropping what goes past the cap.
pub(crate) fn push_capped(out: &mut Vec<u8>, bytes: &[u8]) {
    let room = MAX_EXEC_OUTPUT_BYTES.saturating_sub(out.len());
    out.extend_from_slice(&bytes[..bytes.len().min(room)]);
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
        assert_eq!(tail_of(b"a\nb\n".to_vec(), None), b"a\nb\n");
        assert_eq!(tail_of(b"a\nb\n".to_vec(), Some(1)), b"b\n");
    }

    #[test]
    fn newest_keeps_whole_lines() {
        assert_eq!(newest(b"0123456789\nabcdef\n", 8), b"abcdef\n");
        assert_eq!(newest(b"short\n", 100), b"short\n");
        assert_eq!(newest(b"0123456789", 4), b"6789");
    }

    #[test]
    fn after_resumes_or_starts_over() {
        assert_eq!(after(b"abcdef", 2), (b"cdef".to_vec(), 6));
        assert_eq!(after(b"abcdef", 6), (Vec::new(), 6));
        assert_eq!(after(b"abc", 6), (b"abc".to_vec(), 3), "the log shrank");
    }

    #[test]
    fn exec_output_is_capped() {
        let mut out = vec![0; MAX_EXEC_OUTPUT_BYTES - 2];
        push_capped(&mut out, b"abcd");
        assert_eq!(out.len(), MAX_EXEC_OUTPUT_BYTES);
        assert!(out.ends_with(b"ab"));
    }
}
