//! Durations as kubelet's messages print them.

/// A duration as Go prints it, which is how kubelet's messages show
/// back-off: `10s`, `5m0s`, `1m20s`, `500ms`.
pub fn go_duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let seconds = if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000 % 60)
    } else {
        let text = format!("{}.{:03}", ms / 1000 % 60, ms % 1000);
        format!("{}s", text.trim_end_matches('0'))
    };
    let minutes = ms / 60_000;
    match (minutes / 60, minutes % 60) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        let cases = [
            (500, "500ms"),
            (1_500, "1.5s"),
            (10_000, "10s"),
            (80_000, "1m20s"),
            (300_000, "5m0s"),
            (3_600_000, "1h0m0s"),
        ];
        for (ms, text) in cases {
            assert_eq!(go_duration(ms), text, "{ms}");
        }
    }
}
