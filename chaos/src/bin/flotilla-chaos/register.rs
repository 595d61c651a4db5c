//! The register workload: clients read, write and compare-and-set a few
//! keys through the client API, each operation recorded as it starts and
//! as it ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flotilla_chaos::history::{Entry, EntryType, Function};
use flotilla_client::{ClientError, Code, Expect, key};
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::cluster::{Clock, PEERS, connect};

/// How long one client operation may take before its outcome is unknown.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a failed write certainly took no effect.
fn definitely_not_applied(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } => true,
        ClientError::Status(s) => match s.code() {
            Code::Unavailable => s.message().contains("not applied"),
            Code::ResourceExhausted | Code::FailedPrecondition | Code::Aborted | Code::AlreadyExists | Code::NotFound => true,
            _ => false,
        },
    }
}

fn register_object(value: i64) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"v": value.to_string()}}).to_string()
}

/// The register's value in a stored object, and its revision.
fn register_value(json: &str) -> (Value, u64) {
    let object: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    let value = object["data"]["v"].as_str().and_then(|v| v.parse::<i64>().ok()).map_or(Value::Null, Value::from);
    let revision = object["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok()).unwrap_or(0);
    (value, revision)
}

pub struct ClientTask {
    pub process: u64,
    pub keys: u64,
    pub stale_reads: bool,
    pub clock: Clock,
    pub stop: Arc<AtomicBool>,
    pub history: mpsc::Sender<Entry>,
    pub rng: StdRng,
}

impl ClientTask {
    fn entry(&self, entry_type: EntryType, f: Function, key: &str, value: Value, error: Option<String>) -> Entry {
        Entry { entry_type, process: self.process, time: self.clock.ns(), f, key: key.to_string(), value, error }
    }

    fn peer(&self) -> u64 {
        1 + self.process % PEERS
    }

    pub async fn run(mut self) {
        let mut client = None;
        let mut written = 0i64;
        while !self.stop.load(Ordering::Relaxed) {
            if client.is_none() {
                client = connect(self.peer(), OPERATION_TIMEOUT).await;
                if client.is_none() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            let c = client.as_mut().expect("connected");
            let name = format!("r{}", self.rng.random_range(0..self.keys));
            let k = key("ConfigMap", "chaos", &name);
            let (f, invoked) = match self.rng.random_range(0..4) {
                0 | 1 => (Function::Read, Value::Null),
                2 => {
                    written += 1;
                    (Function::Write, Value::from(self.process as i64 * 1_000_000 + written))
                }
                _ => (Function::Cas, json!([self.rng.random_range(0..5), self.rng.random_range(0..5)])),
            };
            let _ = self.history.send(self.entry(EntryType::Invoke, f, &name, invoked.clone(), None)).await;
            let done = match f {
                Function::Read => match tokio::time::timeout(OPERATION_TIMEOUT, c.get(k, self.stale_reads)).await {
                    Ok(Ok(found)) => {
                        let value = found.map_or(Value::Null, |j| register_value(&j).0);
                        self.entry(EntryType::Ok, f, &name, value, None)
                    }
                    // A read changes nothing: whatever happened, it failed.
                    Ok(Err(e)) => self.entry(EntryType::Fail, f, &name, Value::Null, Some(e.to_string())),
                    Err(_) => self.entry(EntryType::Fail, f, &name, Value::Null, Some("timed out".into())),
                },
                Function::Write => {
                    let object = register_object(invoked.as_i64().unwrap_or(0));
                    match tokio::time::timeout(OPERATION_TIMEOUT, c.put(k, object, Expect::Anything)).await {
                        Ok(Ok(_)) => self.entry(EntryType::Ok, f, &name, invoked, None),
                        Ok(Err(e)) if definitely_not_applied(&e) => self.entry(EntryType::Fail, f, &name, invoked, Some(e.to_string())),
                        Ok(Err(e)) => self.entry(EntryType::Info, f, &name, invoked, Some(e.to_string())),
                        Err(_) => self.entry(EntryType::Info, f, &name, invoked, Some("timed out".into())),
                    }
                }
                Function::Cas => self.cas(&name, invoked).await,
            };
            let failed_to_reach = done.entry_type != EntryType::Ok;
            let _ = self.history.send(done).await;
            if failed_to_reach {
                // A fresh connection after trouble: the old one may be to a
                // peer that was restarted.
                client = None;
            }
        }
    }

    /// Compare-and-set on the value: a linearizable read, then a write
    /// conditional on the revision read, so it lands only if nothing
    /// changed in between.
    async fn cas(&mut self, name: &str, invoked: Value) -> Entry {
        let f = Function::Cas;
        let [expected, new] = [invoked[0].clone(), invoked[1].clone()];
        let k = key("ConfigMap", "chaos", name);
        let Some(mut client) = connect(self.peer(), OPERATION_TIMEOUT).await else {
            return self.entry(EntryType::Fail, f, name, invoked, Some("cannot connect".into()));
        };
        let current = match tokio::time::timeout(OPERATION_TIMEOUT, client.get(k.clone(), false)).await {
            Ok(Ok(found)) => found.map(|j| register_value(&j)),
            Ok(Err(e)) => return self.entry(EntryType::Fail, f, name, invoked, Some(e.to_string())),
            Err(_) => return self.entry(EntryType::Fail, f, name, invoked, Some("read timed out".into())),
        };
        let Some((_, revision)) = current.filter(|(v, _)| *v == expected) else {
            return self.entry(EntryType::Fail, f, name, invoked, Some("value differs".into()));
        };
        let object = register_object(new.as_i64().unwrap_or(0));
        match tokio::time::timeout(OPERATION_TIMEOUT, client.put(k, object, Expect::Revision(revision))).await {
            Ok(Ok(_)) => self.entry(EntryType::Ok, f, name, invoked, None),
            Ok(Err(e)) if definitely_not_applied(&e) => self.entry(EntryType::Fail, f, name, invoked, Some(e.to_string())),
            Ok(Err(e)) => self.entry(EntryType::Info, f, name, invoked, Some(e.to_string())),
            Err(_) => self.entry(EntryType::Info, f, name, invoked, Some("timed out".into())),
        }
    }
}
