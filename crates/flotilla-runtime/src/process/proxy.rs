//! Host ports: a listener on the host forwarding each connection to the
//! port inside the Pod's network namespace.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinSet;

use super::{MAX_PROXY_CONNECTIONS, sys};

pub(super) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Forwards a host port to `port` inside the sandbox (or on the host,
/// without isolation).
pub(super) async fn proxy(listener: tokio::net::TcpListener, netns: Option<PathBuf>, port: u16) {
    let mut connections = JoinSet::new();
    loop {
        let mut inbound = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of fds and the like: back off rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_PROXY_CONNECTIONS {
            continue;
        }
        let netns = netns.clone();
        connections.spawn(async move {
            let Ok(socket) = sys::tcp_socket_in(netns).await else {
                return;
            };
            let Ok(mut outbound) = socket.connect(loopback(port)).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}
