//! `flotilla`: the peer daemon (`flotilla peer`), a local cluster
//! (`flotilla up`), and the kubectl-style client for everything else.

mod cluster;
mod demo;
mod local_peer;
mod objects;
mod ops;
mod peer;
mod print;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "flotilla", version, about = "A peer-to-peer Pod scheduler: every machine runs one peer.")]
struct Cli {
    /// Any peer's client address, HOST:PORT.
    #[arg(long, global = true, env = "FLOTILLA_SERVER", default_value = "127.0.0.1:7101")]
    server: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(flatten)]
    scope: objects::Scope,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run this machine's peer.
    Peer(peer::PeerArgs),
    /// Started by a peer with the docker runtime: kills the node's
    /// containers once that peer is gone.
    #[command(hide = true)]
    DockerGuard {
        #[arg(long)]
        owner: String,
    },
    /// Start a local cluster of peers on loopback, each its own process.
    Up(up::UpArgs),
    /// Inspect the cluster.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Create or update objects from manifests (files, directories, or -).
    Apply(objects::ApplyArgs),
    /// Create objects from manifests; fails if one exists.
    Create(objects::ApplyArgs),
    /// List or show objects.
    Get(objects::GetArgs),
    /// Show an object in detail, with its events.
    Describe(objects::DescribeArgs),
    /// Delete objects by name or by manifest, and what they own.
    Delete(objects::DeleteArgs),
    /// Set the replicas of a Deployment, ReplicaSet or StatefulSet.
    Scale(ops::ScaleArgs),
    /// Mark a node unschedulable.
    Cordon(ops::NodeArgs),
    /// Mark a node schedulable again.
    Uncordon(ops::NodeArgs),
    /// Cordon a node and move its Pods away (DaemonSet Pods stay).
    Drain(ops::DrainArgs),
    /// List events.
    Events,
    /// Print a container's output, from whichever peer runs the Pod.
    Logs(ops::LogsArgs),
    /// Run a command in a container of a running Pod.
    Exec(ops::ExecArgs),
    /// Follow rollouts.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Wait for a condition of an object, or for its deletion.
    Wait(ops::WaitArgs),
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    Completion { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Wait until a Deployment, StatefulSet or DaemonSet has rolled out,
    /// printing each stage.
    Status(ops::RolloutStatusArgs),
    /// List a Deployment's revisions.
    History(ops::RolloutHistoryArgs),
    /// Roll a Deployment back to an earlier revision.
    Undo(ops::RolloutUndoArgs),
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,h2=warn,tower=warn,hyper=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("starting the async runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Peer(args) => peer::run(args, cli.log_json).await,
            Command::DockerGuard { owner } => {
                let killed = flotilla_peer::docker_guard(&owner).await?;
                if killed > 0 {
                    eprintln!("flotilla docker-guard: the peer of node {owner} is gone; killed its {killed} containers");
                }
                Ok(())
            }
            Command::Up(args) => {
                init_logging(cli.log_json);
                up::run(args).await
            }
            Command::Cluster { command } => cluster::run(command, &cli.server).await,
            Command::Apply(args) => objects::apply(args, &cli.scope, &cli.server, false).await,
            Command::Create(args) => objects::apply(args, &cli.scope, &cli.server, true).await,
            Command::Get(args) => objects::get(args, &cli.scope, &cli.server).await,
            Command::Describe(args) => objects::describe(args, &cli.scope, &cli.server).await,
            Command::Delete(args) => objects::delete(args, &cli.scope, &cli.server).await,
            Command::Scale(args) => ops::scale(args, &cli.scope, &cli.server).await,
            Command::Cordon(args) => ops::cordon(args, &cli.server, true).await,
            Command::Uncordon(args) => ops::cordon(args, &cli.server, false).await,
            Command::Drain(args) => ops::drain(args, &cli.server).await,
            Command::Events => ops::events(&cli.scope, &cli.server).await,
            Command::Logs(args) => ops::logs(args, &cli.scope, &cli.server).await,
            Command::Exec(args) => ops::exec(args, &cli.scope, &cli.server).await,
            Command::Wait(args) => ops::wait(args, &cli.scope, &cli.server).await,
            Command::Rollout { command: RolloutCommand::Status(args) } => ops::rollout_status(args, &cli.scope, &cli.server).await,
            Command::Rollout { command: RolloutCommand::History(args) } => ops::rollout_history(args, &cli.scope, &cli.server).await,
            Command::Rollout { command: RolloutCommand::Undo(args) } => ops::rollout_undo(args, &cli.scope, &cli.server).await,
            Command::Completion { shell } => {
                use clap::CommandFactory;
                clap_complete::generate(shell, &mut Cli::command(), "flotilla", &mut std::io::stdout());
                Ok(())
            }
        }
    });
    if let Err(e) = result {
        // One clear line, as every command promises.
        eprintln!("error: {}", format_error(&e));
        std::process::exit(1);
    }
}

fn format_error(e: &anyhow::Error) -> String {
    e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}
