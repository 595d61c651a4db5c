//! Waiting for the applied changes a loop cares about.

use flotilla_raft::AppliedEvent;
use tokio::sync::broadcast;

/// Waits for an applied change to an object of a kind `relevant` accepts
/// (or for anything a watcher must treat as a change: a snapshot install,
/// lagging behind). `seen` is shown every event received on the way, or
/// `None` when some were missed. False when the store is gone.
pub async fn next_change(
    events: &mut broadcast::Receiver<AppliedEvent>,
    relevant: impl Fn(&str) -> bool,
    mut seen: impl FnMut(Option<&AppliedEvent>),
) -> bool {
    loop {
        match events.recv().await {
            Ok(event) => {
                seen(Some(&event));
                match &event {
                    AppliedEvent::Changes(changes) if !changes.iter().any(|e| relevant(&e.key.kind)) => {}
                    _ => return true,
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                seen(None);
                return true;
            }
            Err(broadcast::error::RecvError::Closed) => return false,
        }
    }
}
