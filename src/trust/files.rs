//! The trust files an operator handles: the operator key pair, the
//! cluster's swarm key (kubo's `swarm.key` format), certificates,
//! revocation lists and the control API token. Every write is atomic and
//! secrets are written mode 0600; nothing here logs a secret.

use std::io;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;
use sha2::{Digest, Sha256};

use super::cert::{CertError, ClusterId, unarmor};
use crate::store::{StoreError, write_atomic};

pub const OPERATOR_KEY: &str = "operator.key";
pub const OPERATOR_PUB: &str = "operator.pub";
pub const SWARM_KEY: &str = "swarm.key";
pub const API_TOKEN: &str = "api.token";

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0} already exists; move it away first (it may be the only copy of a key)")]
    Exists(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|source| FileError::Io {
        path: path.to_owned(),
        source,
    })
}

fn invalid(path: &Path, message: impl ToString) -> FileError {
    FileError::Invalid {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// A pre-shared key of a private network: 32 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SwarmKey(pub [u8; 32]);

impl SwarmKey {
    pub fn generate() -> SwarmKey {
        SwarmKey(rand::random())
    }

    /// kubo's format: `/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits.
    pub fn parse(text: &str) -> Result<SwarmKey, String> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some("/key/swarm/psk/1.0.0/") {
            return Err("the first line must be /key/swarm/psk/1.0.0/".into());
        }
        match lines.next() {
            Some("/base16/") => {}
            Some(other) => {
                return Err(format!(
                    "encoding {other:?} is not supported: only /base16/ (as kubo writes)"
                ));
            }
            None => return Err("the second line must be /base16/".into()),
        }
        let hex = lines.next().ok_or("the key (64 hex digits) is missing")?;
        if lines.next().is_some() {
            return Err("unexpected text after the key".into());
        }
        let bytes = hex::decode(hex).map_err(|_| "the key must be 64 hex digits".to_string())?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "the key must be 64 hex digits (32 bytes)".to_string())?;
        Ok(SwarmKey(key))
    }

    pub fn to_text(&self) -> String {
        format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", hex::encode(self.0))
    }

    /// What may be logged: a hash of the key (libp2p's own fingerprint).
    pub fn fingerprint(&self) -> String {
        libp2p::pnet::PreSharedKey::new(self.0)
            .fingerprint()
            .to_string()
    }

    pub fn load(path: &Path) -> Result<SwarmKey, FileError> {
        let bytes = read(path)?;
        let text =
            String::from_utf8(bytes).map_err(|_| invalid(path, "not a swarm key (not text)"))?;
        SwarmKey::parse(&text).map_err(|m| invalid(path, format!("not a swarm key: {m}")))
    }
}

impl std::fmt::Debug for SwarmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SwarmKey({})", self.fingerprint())
    }
}

/// What `cluster init` made.
pub struct Created {
    pub cluster: ClusterId,
    pub key: PathBuf,
    pub public: PathBuf,
    pub swarm_key: PathBuf,
}

/// `cluster init DIR`: a new operator key pair and swarm key. Never
/// overwrites a file.
pub fn init_cluster(dir: &Path) -> Result<Created, FileError> {
    std::fs::create_dir_all(dir).map_err(|source| FileError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let key = dir.join(OPERATOR_KEY);
    let public = dir.join(OPERATOR_PUB);
    let swarm_key = dir.join(SWARM_KEY);
    for p in [&key, &public, &swarm_key] {
        if p.exists() {
            return Err(FileError::Exists(p.clone()));
        }
    }
    let op = Keypair::generate_ed25519();
    let cluster = ClusterId::of(&op.public()).map_err(|e| invalid(&key, e))?;
    let encoded = op.to_protobuf_encoding().map_err(|e| invalid(&key, e))?;
    write_atomic(&key, &encoded, 0o600)?;
    write_atomic(&public, public_text(&cluster).as_bytes(), 0o644)?;
    write_atomic(&swarm_key, SwarmKey::generate().to_text().as_bytes(), 0o600)?;
    Ok(Created {
        cluster,
        key,
        public,
        swarm_key,
    })
}

fn public_text(cluster: &ClusterId) -> String {
    format!(
        "# ipfs-kit-p2p operator public key: this cluster's identity. Give it to every node\n\
         # ([trust] operator_key); keep operator.key offline.\n{cluster}\n"
    )
}

pub fn load_operator_key(path: &Path) -> Result<Keypair, FileError> {
    let bytes = read(path)?;
    let key = Keypair::from_protobuf_encoding(&bytes).map_err(|_| {
        invalid(
            path,
            "not an operator key (pass operator.key from `cluster init`, not operator.pub)",
        )
    })?;
    ClusterId::of(&key.public()).map_err(|e| invalid(path, e))?;
    Ok(key)
}

/// `operator.pub`: its one line that is not a comment.
pub fn load_cluster_id(path: &Path) -> Result<ClusterId, FileError> {
    let bytes = read(path)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        invalid(
            path,
            "not an operator public key (pass operator.pub, not operator.key)",
        )
    })?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| invalid(path, "empty"))?;
    ClusterId::parse(line).map_err(|m| invalid(path, m))
}

/// A certificate or revocation list file: its signed bytes.
pub fn load_signed(path: &Path) -> Result<Vec<u8>, FileError> {
    let bytes = read(path)?;
    unarmor(&bytes).map_err(|e: CertError| invalid(path, e))
}

/// The control API token in `path`, if the file exists.
pub fn read_token(path: &Path) -> Result<Option<String>, FileError> {
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().len() >= 16 => Ok(Some(t.trim().to_string())),
        Ok(_) => Err(invalid(path, "the API token is shorter than 16 characters")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FileError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// `api-token`: the token in `path`, created (32 random bytes in hex,
/// mode 0600) if missing. Returns it and whether it was created.
pub fn ensure_token(path: &Path) -> Result<(String, bool), FileError> {
    if let Some(t) = read_token(path)? {
        return Ok((t, false));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| FileError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    write_atomic(path, format!("{token}\n").as_bytes(), 0o600)?;
    Ok((token, true))
}

/// Compares two tokens in time independent of where they differ (and of
/// their lengths: both are hashed first).
pub fn token_matches(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_writes_private_keys_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let made = init_cluster(dir.path()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&made.key), 0o600);
        assert_eq!(mode(&made.swarm_key), 0o600);
        let key = load_operator_key(&made.key).unwrap();
        assert_eq!(ClusterId::of(&key.public()).unwrap(), made.cluster);
        assert_eq!(load_cluster_id(&made.public).unwrap(), made.cluster);
        SwarmKey::load(&made.swarm_key).unwrap();
        let again = init_cluster(dir.path()).err().unwrap().to_string();
        assert!(again.contains("already exists"), "{again}");
        // The two files mixed up: the message says which is which.
        let e = load_operator_key(&made.public).unwrap_err().to_string();
        assert!(e.contains("not operator.pub"), "{e}");
        let e = load_cluster_id(&made.key).unwrap_err().to_string();
        assert!(e.contains("operator.pub"), "{e}");
    }

    #[test]
    fn swarm_keys_parse_as_kubo_writes_them() {
        let k = SwarmKey::generate();
        assert_eq!(SwarmKey::parse(&k.to_text()).unwrap(), k);
        let hex64 = "ab".repeat(32);
        for (text, why) in [
            ("", "first line"),
            ("/key/swarm/psk/1.0.0/\n", "second line"),
            ("/key/swarm/psk/1.0.0/\n/base64/\nxx", "only /base16/"),
            ("/key/swarm/psk/1.0.0/\n/base16/\n", "missing"),
            ("/key/swarm/psk/1.0.0/\n/base16/\nabcd", "64 hex digits"),
            ("/key/swarm/psk/1.0.0/\n/base16/\nzz", "64 hex digits"),
        ] {
            let e = SwarmKey::parse(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let extra = format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex64}\nmore");
        assert!(SwarmKey::parse(&extra).is_err());
        // Windows line ends and surrounding blanks are fine.
        let crlf = format!("/key/swarm/psk/1.0.0/\r\n/base16/\r\n{hex64}\r\n");
        assert!(SwarmKey::parse(&crlf).is_ok());
        // Never the key in the debug form.
        assert!(!format!("{k:?}").contains(&hex::encode(k.0)));
    }

    #[test]
    fn tokens_are_created_once_and_compared_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(API_TOKEN);
        assert_eq!(read_token(&path).unwrap(), None);
        let (t, created) = ensure_token(&path).unwrap();
        assert!(created);
        assert_eq!(ensure_token(&path).unwrap(), (t.clone(), false));
        assert!(token_matches(&t, &t));
        assert!(!token_matches(&t[1..], &t));
        assert!(!token_matches("", &t));
        std::fs::write(&path, "short").unwrap();
        assert!(read_token(&path).is_err());
    }
}
