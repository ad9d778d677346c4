//! What a node keeps in its data directory: an exclusive lock, the identity
//! key, the election state and the control API's address file. Every write
//! is atomic (temporary file, fsync, rename), so a crash never leaves a
//! half-written file, and an unreadable file is an error naming it, never a
//! silent reset.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use data directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error(
        "data directory {0} is in use by another running ipfs-kit-p2p node; stop it or pass a different --data-dir"
    )]
    Locked(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is corrupt: {message} (move it away to start afresh)")]
    Corrupt { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Election state that must survive restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Highest epoch ever seen: a restart never regresses it.
    pub max_epoch: u64,
    /// Starts of this node so far.
    pub incarnation: u64,
    /// The leader this node last accepted and at which epoch: a restart
    /// accepts no other at that epoch. Absent in files of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voted: Option<(String, u64)>,
}

/// An open, locked data directory. The lock is held until this is dropped.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates the directory if needed and takes its lock.
    pub fn open(path: &Path) -> Result<DataDir, StoreError> {
        let dir_err = |source| StoreError::Dir {
            path: path.to_owned(),
            source,
        };
        fs::create_dir_all(path).map_err(dir_err)?;
        let lock_path = path.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(dir_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::Locked(path.to_owned())),
            Err(TryLockError::Error(e)) => return Err(dir_err(e)),
        }
        Ok(DataDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the ed25519 identity, creating it (mode 0600) on first start.
    pub fn identity(&self) -> Result<Keypair, StoreError> {
        let path = self.path.join("identity.key");
        match fs::read(&path) {
            Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| StoreError::Corrupt {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = Keypair::generate_ed25519();
                let bytes = key
                    .to_protobuf_encoding()
                    .map_err(|e| StoreError::Corrupt {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                write_atomic(&path, &bytes, 0o600)?;
                Ok(key)
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// The identity's peer ID without taking the lock when the key exists
    /// (a running node holds it); else opens the directory and creates it.
    pub fn peer_id(path: &Path) -> Result<libp2p::PeerId, StoreError> {
        let key = path.join("identity.key");
        if key.exists() {
            let bytes = fs::read(&key).map_err(io_err(&key))?;
            let k = Keypair::from_protobuf_encoding(&bytes).map_err(|e| StoreError::Corrupt {
                path: key,
                message: e.to_string(),
            })?;
            return Ok(k.public().to_peer_id());
        }
        Ok(DataDir::open(path)?.identity()?.public().to_peer_id())
    }

    /// The persisted election state (default on first start).
    pub fn load_state(&self) -> Result<State, StoreError> {
        let path = self.path.join("state.json");
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                Ok(s) if s.max_epoch > crate::election::MAX_EPOCH => Err(StoreError::Corrupt {
                    path,
                    message: format!(
                        "max_epoch {} is beyond the limit of {}",
                        s.max_epoch,
                        crate::election::MAX_EPOCH
                    ),
                }),
                Ok(s) => Ok(s),
                Err(e) => Err(StoreError::Corrupt {
                    path,
                    message: e.to_string(),
                }),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    pub fn save_state(&self, state: &State) -> Result<(), StoreError> {
        let path = self.path.join("state.json");
        let bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
        write_atomic(&path, &bytes, 0o644)
    }

    /// Path of the file naming the control API's address.
    pub fn api_file(&self) -> PathBuf {
        api_file(&self.path)
    }
}

/// The text written to `<data_dir>/api`: a multiaddr, like kubo's.
pub fn api_file_text(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("/ip4/{}/tcp/{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("/ip6/{}/tcp/{}", a.ip(), a.port()),
    }
}

/// `<data_dir>/api`, like kubo's `$IPFS_PATH/api`.
pub fn api_file(data_dir: &Path) -> PathBuf {
    data_dir.join("api")
}

/// Writes `bytes` to `path` so that readers see the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all()?,
            _ => File::open(".")?.sync_all()?,
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(path)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stable_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let id1 = DataDir::open(dir.path())
            .unwrap()
            .identity()
            .unwrap()
            .public()
            .to_peer_id();
        let id2 = DataDir::open(dir.path())
            .unwrap()
            .identity()
            .unwrap()
            .public()
            .to_peer_id();
        assert_eq!(id1, id2);
        let mode = fs::metadata(dir.path().join("identity.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn second_open_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(dir.path()).unwrap();
        let err = DataDir::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
        drop(first);
        DataDir::open(dir.path()).unwrap();
    }

    #[test]
    fn state_round_trips_and_corruption_names_the_file() {
        use crate::election::MAX_EPOCH;
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open(dir.path()).unwrap();
        assert_eq!(d.load_state().unwrap(), State::default());
        let with_vote = State {
            max_epoch: 9,
            incarnation: 4,
            voted: Some(("12D3KooWLeader".into(), 9)),
        };
        d.save_state(&with_vote).unwrap();
        assert_eq!(d.load_state().unwrap(), with_vote);
        // A file of an earlier version, without the vote, still reads.
        fs::write(
            dir.path().join("state.json"),
            b"{\"max_epoch\": 9, \"incarnation\": 4}",
        )
        .unwrap();
        assert_eq!(d.load_state().unwrap().voted, None);
        fs::write(dir.path().join("state.json"), b"{\"max_ep").unwrap();
        let err = d.load_state().unwrap_err().to_string();
        assert!(err.contains("state.json"), "{err}");
        let at = |max_epoch| {
            d.save_state(&State {
                max_epoch,
                incarnation: 1,
                voted: None,
            })
            .unwrap();
            d.load_state()
        };
        assert_eq!(at(MAX_EPOCH).unwrap().max_epoch, MAX_EPOCH);
        let err = at(MAX_EPOCH + 1).unwrap_err().to_string();
        assert!(err.contains("beyond the limit"), "{err}");
        fs::write(dir.path().join("identity.key"), b"junk").unwrap();
        assert!(
            d.identity()
                .unwrap_err()
                .to_string()
                .contains("identity.key")
        );
    }
}
