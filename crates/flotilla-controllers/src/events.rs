//! Expiry of Events. Every scheduling decision, container start and probe
//! failure leaves one, so without expiry they would fill the store; as
//! Kubernetes does, they live an hour, and the oldest go first beyond a
//! cap.

use flotilla_api::Kind;
use flotilla_api::cluster::Event;

use crate::Action;

/// How long an Event lives (Kubernetes' default `--event-ttl`).
pub const EVENT_TTL_MS: u64 = 60 * 60 * 1000;
/// Events kept at most, whatever their age.
pub const MAX_EVENTS: usize = 10_000;

fn last_seen_ms(e: &Event) -> u64 {
    e.last_timestamp
        .as_deref()
        .or(e.first_timestamp.as_deref())
        .or(e.metadata.creation_timestamp.as_deref())
        .and_then(flotilla_api::time::parse_rfc3339)
        .unwrap_or(0)
}

/// Deletes of the Events older than `ttl_ms`, and of the oldest beyond
/// `max_events`: at most `limit`, oldest first.
pub fn expire_events(events: &[Event], now_unix_ms: u64, ttl_ms: u64, max_events: usize, limit: usize) -> Vec<Action> {
    let mut by_age: Vec<(u64, &Event)> = events.iter().map(|e| (last_seen_ms(e), e)).collect();
    by_age.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.metadata.name.cmp(&b.1.metadata.name)));
    let over_cap = events.len().saturating_sub(max_events);
    by_age
        .into_iter()
        .enumerate()
        .take_while(|(i, (seen, _))| *i < over_cap || now_unix_ms.saturating_sub(*seen) > ttl_ms)
        .take(limit)
        .map(|(_, (_, e))| Action::Delete {
            kind: Kind::Event,
            namespace: e.metadata.namespace.clone(),
            name: e.metadata.name.clone(),
            resource_version: e.metadata.resource_version.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, at_s: u64) -> Event {
        let mut e = Event::default();
        e.metadata.name = name.into();
        e.metadata.namespace = "default".into();
        e.metadata.resource_version = "1".into();
        e.last_timestamp = Some(flotilla_api::time::format_rfc3339(at_s * 1000));
        e
    }

    fn names(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Delete { name, .. } => name.clone(),
                other => panic!("not a delete: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn events_expire_by_age_and_by_count_oldest_first() {
        let now = 10_000 * 1000;
        let events = vec![event("new", 9_990), event("old", 1_000), event("older", 500), event("mid", 9_000)];
        let cases: &[(u64, usize, usize, &[&str])] = &[
            // ttl 1 h: only those last seen more than an hour ago.
            (3_600_000, 100, 100, &["older", "old"]),
            // A cap of 1 removes the three oldest whatever their age.
            (u64::MAX, 1, 100, &["older", "old", "mid"]),
            // The limit bounds one round's deletes.
            (3_600_000, 100, 1, &["older"]),
            // Nothing old and under the cap: nothing to do.
            (u64::MAX, 100, 100, &[]),
        ];
        for (ttl, cap, limit, want) in cases {
            let got = names(&expire_events(&events, now, *ttl, *cap, *limit));
            assert_eq!(got, want.to_vec(), "ttl {ttl} cap {cap} limit {limit}");
        }
    }
}
