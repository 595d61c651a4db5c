//! The agent's reports on their way to the IO layer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};

use crate::{MAX_QUEUED_EVENTS, Report, lock};

/// Reports waiting for the IO layer: statuses coalesce per Pod, events are
/// capped, so the workers never wait on a slow consumer.
pub(crate) struct Sink {
    pub(crate) queue: Mutex<SinkQueue>,
    pub(crate) notify: Notify,
}

#[derive(Default)]
pub(crate) struct SinkQueue {
    reports: VecDeque<Report>,
    events: usize,
    closed: bool,
}

impl Sink {
    pub(crate) fn push(&self, report: Report) {
        let mut q = lock(&self.queue);
        match &report {
            Report::Status(new) => {
                let queued = q
                    .reports
                    .iter_mut()
                    .find(|r| matches!(r, Report::Status(old) if old.uid == new.uid));
                if let Some(slot) = queued {
                    *slot = report;
                    return;
                }
            }
            Report::Event(_) => {
                if q.events >= MAX_QUEUED_EVENTS
                    && let Some(oldest) =
                        q.reports.iter().position(|r| matches!(r, Report::Event(_)))
                {
                    q.reports.remove(oldest);
                    q.events -= 1;
                }
                q.events += 1;
            }
            Report::Stopped { .. } => {}
        }
        q.reports.push_back(report);
        drop(q);
        self.notify.notify_one();
    }

    fn pop(&self) -> Option<Report> {
        let mut q = lock(&self.queue);
        let report = q.reports.pop_front()?;
        if matches!(report, Report::Event(_)) {
            q.events -= 1;
        }
        Some(report)
    }

    pub(crate) fn close(&self) {
        lock(&self.queue).closed = true;
        self.notify.notify_one();
    }
}

pub(crate) async fn forward(sink: Arc<Sink>, tx: mpsc::Sender<Report>) {
    loop {
        match sink.pop() {
            Some(report) => {
                if tx.send(report).await.is_err() {
                    return;
                }
            }
            None if lock(&sink.queue).closed => return,
            None => sink.notify.notified().await,
        }
    }
}
