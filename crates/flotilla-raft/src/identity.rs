//! What a data directory belongs to: the cluster (its name and its unique
//! id) and the peer. Checked at start so that a directory copied from another
//! cluster or another peer is refused before it can mix two logs.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FILE_NAME: &str = "IDENTITY.json";
/// The format of the identity file this build writes. Files written
/// before it had a format read as format 1.
pub const IDENTITY_FORMAT: u32 = 1;

fn first_format() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    #[serde(default = "first_format")]
    pub format: u32,
    pub cluster: String,
    /// Unique per cluster, made by the peer that bootstrapped it. Empty until
    /// this peer has learned it.
    pub cluster_id: String,
    pub peer_id: u64,
    /// Unique per data directory, made with it: tells the directory a member
    /// joined with from a wiped one that took its place under the same id.
    pub incarnation: String,
}

/// 128 random bits as hex, from the OS's entropy (the seed's, in the
/// simulator).
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    crate::entropy::fill(&mut b);
    format!("{:032x}", u128::from_be_bytes(b))
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("data directory {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
    #[error("data directory {dir}: {file} is unreadable: {reason}")]
    Corrupt { dir: String, file: String, reason: String },
    #[error("data directory {dir} belongs to cluster {found:?}, but the config names cluster {expected:?}: point data_dir at this cluster's directory or an empty one")]
    OtherCluster { dir: String, found: String, expected: String },
    #[error("data directory {dir} belongs to peer {found}, but the config says id = {expected}: each peer needs its own directory")]
    OtherPeer { dir: String, found: u64, expected: u64 },
    #[error("data directory {dir} was written by a newer Flotilla (identity format {found}; this build reads up to {known}): run that version or a newer one")]
    NewerFormat { dir: String, found: u32, known: u32 },
    #[error("data directory {dir} holds Raft data but no {file}: it was not made by Flotilla, or is damaged")]
    Unmarked { dir: String, file: String },
}

pub struct IdentityFile {
    path: PathBuf,
    dir: String,
}

impl IdentityFile {
    pub fn new(data_dir: &Path) -> Self {
        Self { path: data_dir.join(FILE_NAME), dir: data_dir.display().to_string() }
    }

    /// Loads the identity, creating it for a new directory. Refuses a
    /// directory that belongs to another cluster or peer.
    pub fn load_or_create(&self, cluster: &str, peer_id: u64, has_raft_data: bool) -> Result<Identity, IdentityError> {
        if !self.path.exists() {
            if has_raft_data {
                return Err(IdentityError::Unmarked { dir: self.dir.clone(), file: FILE_NAME.into() });
            }
            let identity =
                Identity {
                    format: IDENTITY_FORMAT,
                    cluster: cluster.to_string(),
                    cluster_id: String::new(),
                    peer_id,
                    incarnation: random_id(),
                };
            self.save(&identity)?;
            return Ok(identity);
        }
        let text = std::fs::read_to_string(&self.path).map_err(|source| IdentityError::Io { dir: self.dir.clone(), source })?;
        let identity: Identity = serde_json::from_str(&text).map_err(|e| IdentityError::Corrupt {
            dir: self.dir.clone(),
            file: FILE_NAME.into(),
            reason: e.to_string(),
        })?;
        if identity.format > IDENTITY_FORMAT {
            return Err(IdentityError::NewerFormat { dir: self.dir.clone(), found: identity.format, known: IDENTITY_FORMAT });
        }
        if identity.cluster != cluster {
            return Err(IdentityError::OtherCluster { dir: self.dir.clone(), found: identity.cluster, expected: cluster.into() });
        }
        if identity.peer_id != peer_id {
            return Err(IdentityError::OtherPeer { dir: self.dir.clone(), found: identity.peer_id, expected: peer_id });
        }
        Ok(identity)
    }

    /// Writes atomically and durably: a crash leaves the old or new file.
    pub fn save(&self, identity: &Identity) -> Result<(), IdentityError> {
        let io = |source| IdentityError::Io { dir: self.dir.clone(), source };
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(serde_json::to_string_pretty(identity).expect("identity serializes").as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(parent) = self.path.parent() {
            std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_keeps_its_cluster_and_peer() {
        let dir = tempfile::tempdir().unwrap();
        let f = IdentityFile::new(dir.path());
        let mut id = f.load_or_create("alpha", 1, false).unwrap();
        assert_eq!(id.incarnation.len(), 32, "a new directory gets its incarnation");
        id.cluster_id = "c-123".into();
        f.save(&id).unwrap();
        assert_eq!(f.load_or_create("alpha", 1, true).unwrap(), id);
        let err = f.load_or_create("beta", 1, true).unwrap_err().to_string();
        assert!(err.contains("belongs to cluster \"alpha\", but the config names cluster \"beta\""), "{err}");
        let err = f.load_or_create("alpha", 2, true).unwrap_err().to_string();
        assert!(err.contains("belongs to peer 1, but the config says id = 2"), "{err}");
    }

    #[test]
    fn a_file_without_a_format_is_format_1_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, r#"{"cluster":"alpha","cluster_id":"c","peer_id":1,"incarnation":"i"}"#).unwrap();
        let f = IdentityFile::new(dir.path());
        assert_eq!(f.load_or_create("alpha", 1, true).unwrap().format, 1);
        std::fs::write(&path, r#"{"format":2,"cluster":"alpha","cluster_id":"c","peer_id":1,"incarnation":"i"}"#).unwrap();
        let err = f.load_or_create("alpha", 1, true).unwrap_err().to_string();
        assert!(err.contains("identity format 2; this build reads up to 1"), "{err}");
    }

    #[test]
    fn raft_data_without_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = IdentityFile::new(dir.path()).load_or_create("alpha", 1, true).unwrap_err().to_string();
        assert!(err.contains("holds Raft data but no IDENTITY.json"), "{err}");
    }
}
