use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use flotilla_client::Client;
use flotilla_client::api::StatusResponse;
use serde_json::json;

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Show the leader, the term, the voters and learners, and each peer.
    Status {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
        /// This peer's own view, without asking the leader.
        #[arg(long)]
        local: bool,
    },
}

pub async fn run(command: ClusterCommand, server: &str) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status { output, local } => {
            let mut client = Client::connect(server).await?;
            let status = if local { client.local_status().await } else { client.status().await }
                .context("cluster status")?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&status_json(&status))?),
                Output::Table => print!("{}", status_table(&status)),
            }
            Ok(())
        }
    }
}

pub fn status_json(s: &StatusResponse) -> serde_json::Value {
    json!({
        "clusterId": s.cluster_id,
        "answeredBy": s.answered_by,
        "leader": if s.has_leader { json!(s.leader) } else { serde_json::Value::Null },
        "term": s.term,
        "commitIndex": s.commit_index,
        "lastApplied": s.last_applied,
        "revision": s.revision,
        "maxVoters": s.max_voters,
        "failuresTolerated": s.failures_tolerated,
        "voters": s.voters,
        "learners": s.learners,
        "peers": s.peers.iter().map(|p| json!({
            "id": p.id,
            "addr": p.addr,
            "state": p.state,
            "voter": p.voter,
            "matchedIndex": p.matched_index,
            "lastAckMs": if p.last_ack_ms < 0 { serde_json::Value::Null } else { json!(p.last_ack_ms) },
            "incarnation": if p.incarnation.is_empty() { serde_json::Value::Null } else { json!(p.incarnation) },
        })).collect::<Vec<_>>(),
    })
}

/// What the cluster survives now, in a sentence.
pub fn survives(s: &StatusResponse) -> String {
    match s.failures_tolerated {
        0 if s.voters.len() == 1 => format!("survives no voter failure: writes stop while peer {} (the one voter) is down", s.voters[0]),
        0 => "survives no voter failure: losing one more voter stops writes".into(),
        1 => "survives 1 voter failure".into(),
        n => format!("survives {n} voter failures"),
    }
}

pub fn status_table(s: &StatusResponse) -> String {
    let mut out = String::new();
    let leader = if s.has_leader { s.leader.to_string() } else { "none".into() };
    out.push_str(&format!(
        "cluster {}  leader {}  term {}  commit {}  revision {}  voters {}/{}\n{}\n",
        s.cluster_id,
        leader,
        s.term,
        s.commit_index,
        s.revision,
        s.voters.len(),
        s.max_voters,
        survives(s)
    ));
    out.push_str(&format!("{:<6} {:<22} {:<12} {:<7} {:>9} {:>9}\n", "PEER", "ADDRESS", "STATE", "VOTER", "MATCHED", "LAST-ACK"));
    for p in &s.peers {
        let ack = if p.last_ack_ms < 0 { "-".to_string() } else { format!("{}ms", p.last_ack_ms) };
        out.push_str(&format!(
            "{:<6} {:<22} {:<12} {:<7} {:>9} {:>9}\n",
            p.id,
            p.addr,
            p.state,
            if p.voter { "yes" } else { "no" },
            p.matched_index,
            ack
        ));
    }
    out
}
