//! gRPC messages and services generated from the files in `proto/`.

pub mod raft {
    tonic::include_proto!("flotilla.raft.v1");
}

pub mod api {
    tonic::include_proto!("flotilla.api.v1");
}

pub mod node {
    tonic::include_proto!("flotilla.node.v1");
}
