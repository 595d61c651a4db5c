//! Kubernetes-shaped API types for Flotilla: Pods, the workloads that make
//! them, Nodes, Namespaces, ConfigMaps and Events; their defaults and
//! validation; and manifest decoding that names every problem by field.
//!
//! Pure: plain data and functions, no IO, so the scheduler, controllers and
//! simulator use the same types the CLI and API do.

pub mod cluster;
pub mod meta;
pub mod object;
pub mod path;
pub mod pod;
pub mod quantity;
pub mod time;
pub mod wellknown;
pub mod workloads;

pub use cluster::{ConfigMap, Node};
pub use object::{Decoded, FieldError, Kind, KindError, Object};
pub use pod::Pod;
pub use path::FieldPath;
pub mod defaults;
pub mod validate;
pub mod manifest;
pub mod yaml;
pub mod yaml_out;
pub mod apply;
