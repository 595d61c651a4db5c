//! Reading what the engine writes: times and image references.

/// An image reference as the pull API wants it: name, and tag or digest
/// (`latest` if none), as an empty tag would pull every tag.
pub(crate) fn split_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    let last = image.rfind('/').map_or(0, |i| i + 1);
    match image[last..].rfind(':') {
        Some(i) => (&image[..last + i], &image[last + i + 1..]),
        None => (image, "latest"),
    }
}

/// Milliseconds since the epoch of an RFC 3339 time as the engine writes
/// them (`2024-05-01T12:00:00.123456789Z`); 0 for "never" (the year 1) or
/// anything unreadable.
pub(crate) fn unix_ms_of(text: &str) -> u64 {
    parse_rfc3339(text).unwrap_or(0)
}

fn parse_rfc3339(text: &str) -> Option<u64> {
    let (date, rest) = text.split_once(['T', 't'])?;
    let mut date = date.splitn(3, '-');
    let year: i64 = date.next()?.parse().ok()?;
    let month: usize = date.next()?.parse().ok()?;
    let day: i64 = date.next()?.parse().ok()?;
    let (clock, offset_secs) = match rest.strip_suffix(['Z', 'z']) {
        Some(clock) => (clock, 0),
        None => {
            let at = rest.rfind(['+', '-'])?;
            let (clock, zone) = rest.split_at(at);
            let (hours, minutes) = zone[1..].split_once(':')?;
            let secs = (hours.parse::<i64>().ok()? * 60 + minutes.parse::<i64>().ok()?) * 60;
            (clock, if zone.starts_with('-') { -secs } else { secs })
        }
    };
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut clock = clock.splitn(3, ':');
    let hour: i64 = clock.next()?.parse().ok()?;
    let minute: i64 = clock.next()?.parse().ok()?;
    let second: i64 = clock.next()?.parse().ok()?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis: i64 = format!("{:0<3}", &fraction[..fraction.len().min(3)])
        .parse()
        .ok()?;
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    const DAYS_BEFORE_MONTH: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let mut days: i64 = (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum();
    days += DAYS_BEFORE_MONTH[month - 1] + day - 1;
    if month > 2 && leap(year) {
        days += 1;
    }
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_secs;
    u64::try_from(secs * 1_000 + millis).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_times_read_as_unix_ms() {
        let cases: &[(&str, u64)] = &[
            ("1970-01-01T00:00:00Z", 0),
            ("2026-11-24T15:23:05.535945102Z", 1_795_533_785_535),
            ("2000-03-01T00:00:00.5Z", 951_868_800_500),
            ("2000-03-01T01:00:00+01:00", 951_868_800_000),
            ("0001-01-01T00:00:00Z", 0),
            ("garbage", 0),
        ];
        for (text, want) in cases {
            assert_eq!(unix_ms_of(text), *want, "{text}");
        }
    }

    #[test]
    fn references_get_a_tag() {
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_reference("localhost:5000/team/app"),
            ("localhost:5000/team/app", "latest")
        );
        assert_eq!(
            split_reference("localhost:5000/app:v2"),
            ("localhost:5000/app", "v2")
        );
        assert_eq!(split_reference("app@sha256:abc"), ("app", "sha256:abc"));
    }
}
