//! The operator key, node certificates and revocation lists: what they
//! say, how they are signed (libp2p signed envelopes, each kind with a
//! domain string of its own) and how they are checked. Pure: time is
//! passed in, nothing here touches the network.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use libp2p::PeerId;
use libp2p::core::SignedEnvelope;
use libp2p::identity::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};

use crate::role::Role;

/// Domain strings and payload types: a signature over one kind of thing
/// can never be taken for another (nor for a libp2p peer record).
const CERT_DOMAIN: &str = "ipfs-kit-p2p-node-certificate";
const CERT_TYPE: &[u8] = b"/ipfs-kit-p2p/certificate/1";
const REVOKE_DOMAIN: &str = "ipfs-kit-p2p-revocation-list";
const REVOKE_TYPE: &[u8] = b"/ipfs-kit-p2p/revocations/1";

/// Largest encoded certificate and revocation list accepted.
pub const MAX_CERT_BYTES: usize = 1024;
pub const MAX_REVOCATIONS_BYTES: usize = 256 * 1024;
/// Most serials one revocation list names (8 bytes each, within the bound above).
pub const MAX_REVOKED: usize = 16 * 1024;
/// How far a peer's clock may run ahead of this node's: a certificate
/// issued "now" on a machine a little ahead is still accepted.
pub const CLOCK_SKEW_SECS: u64 = 300;

const PEM_CERT: &str = "IPFS-KIT-P2P CERTIFICATE";
const PEM_REVOKE: &str = "IPFS-KIT-P2P REVOCATION LIST";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("not a certificate or revocation list ({0})")]
    Malformed(String),
    #[error("{0} bytes, over the {1}-byte limit")]
    TooLarge(usize, usize),
    #[error("signed by another operator key (signer {signer}, this cluster is {cluster})")]
    WrongSigner { signer: String, cluster: String },
    #[error("issued for peer {issued_for}, but presented by {presented_by}")]
    WrongPeer {
        issued_for: String,
        presented_by: String,
    },
    #[error("expired at {} ({} ago)", unix_text(*not_after), ago(*now, *not_after))]
    Expired { not_after: u64, now: u64 },
    #[error("not valid before {} (this node's clock says {})", unix_text(*not_before), unix_text(*now))]
    NotYetValid { not_before: u64, now: u64 },
    #[error("certificate {0} is revoked")]
    Revoked(Serial),
    #[error("the operator key must be ed25519")]
    NotEd25519,
    #[error("no certificate presented (the peer runs as an open cluster, without [trust])")]
    Missing,
}

/// A certificate's serial number: random, shown in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Serial(pub u64);

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for Serial {
    type Err = String;
    fn from_str(s: &str) -> Result<Serial, String> {
        u64::from_str_radix(s.trim(), 16)
            .map(Serial)
            .map_err(|e| format!("serial {s:?}: expected up to 16 hex digits ({e})"))
    }
}

/// The cluster's identity: the operator's ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterId(pub [u8; 32]);

impl ClusterId {
    pub fn of(key: &PublicKey) -> Result<ClusterId, CertError> {
        let ed = key
            .clone()
            .try_into_ed25519()
            .map_err(|_| CertError::NotEd25519)?;
        Ok(ClusterId(ed.to_bytes()))
    }

    /// Parses the text form, `ed25519:<64 hex digits>`.
    pub fn parse(text: &str) -> Result<ClusterId, String> {
        let hex = text
            .trim()
            .strip_prefix("ed25519:")
            .ok_or_else(|| "an operator public key reads ed25519:<64 hex digits>".to_string())?;
        let bytes = hex::decode(hex).map_err(|e| format!("operator public key: {e}"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "operator public key: expected 32 bytes".to_string())?;
        libp2p::identity::ed25519::PublicKey::try_from_bytes(&bytes)
            .map_err(|e| format!("operator public key: {e}"))?;
        Ok(ClusterId(bytes))
    }

    /// The first 8 bytes in hex: enough to tell clusters apart in logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({})", self.short())
    }
}

/// What a certificate says. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertBody {
    pub cluster: [u8; 32],
    pub peer: Vec<u8>,
    pub role: Role,
    pub serial: Serial,
    pub not_before: u64,
    pub not_after: u64,
}

/// A certificate as received: the signed bytes, and what they say once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub body: CertBody,
    pub peer: PeerId,
    /// The signed envelope, as presented to peers.
    pub bytes: Vec<u8>,
}

/// A signed list of revoked serials; a higher `version` replaces a lower.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationBody {
    pub cluster: [u8; 32],
    pub version: u64,
    pub issued: u64,
    pub serials: BTreeSet<Serial>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocations {
    pub body: RevocationBody,
    pub bytes: Vec<u8>,
}

fn bincode_cfg() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_REVOCATIONS_BYTES>()
}

fn to_bytes<T: Serialize>(t: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(t, bincode_cfg()).unwrap_or_default()
}

fn from_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CertError> {
    let (t, read) = bincode::serde::decode_from_slice(bytes, bincode_cfg())
        .map_err(|e| CertError::Malformed(e.to_string()))?;
    if read != bytes.len() {
        return Err(CertError::Malformed("trailing bytes".into()));
    }
    Ok(t)
}

fn sign(key: &Keypair, domain: &str, kind: &[u8], payload: Vec<u8>) -> Vec<u8> {
    // Signing with an ed25519 key cannot fail.
    SignedEnvelope::new(key, domain.to_string(), kind.to_vec(), payload)
        .map(SignedEnvelope::into_protobuf_encoding)
        .unwrap_or_default()
}

/// Opens an envelope of `kind` signed by `cluster`'s key; returns its payload.
fn open(
    bytes: &[u8],
    limit: usize,
    cluster: &ClusterId,
    domain: &str,
    kind: &[u8],
) -> Result<Vec<u8>, CertError> {
    if bytes.len() > limit {
        return Err(CertError::TooLarge(bytes.len(), limit));
    }
    let env = SignedEnvelope::from_protobuf_encoding(bytes)
        .map_err(|e| CertError::Malformed(e.to_string()))?;
    let (payload, signer) = env
        .payload_and_signing_key(domain.to_string(), kind)
        .map_err(|e| CertError::Malformed(e.to_string()))?;
    let signer_id = ClusterId::of(signer)?;
    if signer_id != *cluster {
        return Err(CertError::WrongSigner {
            signer: signer_id.short(),
            cluster: cluster.short(),
        });
    }
    Ok(payload.to_vec())
}

impl Certificate {
    /// Signs a certificate with the operator key.
    pub fn issue(operator: &Keypair, body: CertBody) -> Result<Certificate, CertError> {
        let peer =
            PeerId::from_bytes(&body.peer).map_err(|e| CertError::Malformed(e.to_string()))?;
        let bytes = sign(operator, CERT_DOMAIN, CERT_TYPE, to_bytes(&body));
        Ok(Certificate { body, peer, bytes })
    }

    /// Checks the signature and what is signed, not the time nor the holder.
    pub fn decode(bytes: &[u8], cluster: &ClusterId) -> Result<Certificate, CertError> {
        let payload = open(bytes, MAX_CERT_BYTES, cluster, CERT_DOMAIN, CERT_TYPE)?;
        let body: CertBody = from_bytes(&payload)?;
        if body.cluster != cluster.0 {
            return Err(CertError::Malformed(
                "names another cluster than its signer".into(),
            ));
        }
        if body.not_after < body.not_before {
            return Err(CertError::Malformed("ends before it begins".into()));
        }
        let peer =
            PeerId::from_bytes(&body.peer).map_err(|e| CertError::Malformed(e.to_string()))?;
        Ok(Certificate {
            body,
            peer,
            bytes: bytes.to_vec(),
        })
    }

    /// Everything a peer's certificate must pass: signed by the operator,
    /// for the peer Noise authenticated, within its validity, not revoked.
    pub fn verify(
        bytes: &[u8],
        cluster: &ClusterId,
        presenter: &PeerId,
        now: u64,
        revoked: Option<&Revocations>,
    ) -> Result<Certificate, CertError> {
        let cert = Certificate::decode(bytes, cluster)?;
        if cert.peer != *presenter {
            return Err(CertError::WrongPeer {
                issued_for: cert.peer.to_base58(),
                presented_by: presenter.to_base58(),
            });
        }
        cert.valid_at(now)?;
        if revoked.is_some_and(|r| r.revokes(cert.body.serial)) {
            return Err(CertError::Revoked(cert.body.serial));
        }
        Ok(cert)
    }

    pub fn valid_at(&self, now: u64) -> Result<(), CertError> {
        let b = &self.body;
        if now > b.not_after {
            return Err(CertError::Expired {
                not_after: b.not_after,
                now,
            });
        }
        if now.saturating_add(CLOCK_SKEW_SECS) < b.not_before {
            return Err(CertError::NotYetValid {
                not_before: b.not_before,
                now,
            });
        }
        Ok(())
    }

    pub fn to_text(&self) -> String {
        pem(PEM_CERT, &self.bytes)
    }
}

impl Revocations {
    pub fn issue(operator: &Keypair, body: RevocationBody) -> Revocations {
        let bytes = sign(operator, REVOKE_DOMAIN, REVOKE_TYPE, to_bytes(&body));
        Revocations { body, bytes }
    }

    pub fn decode(bytes: &[u8], cluster: &ClusterId) -> Result<Revocations, CertError> {
        let payload = open(
            bytes,
            MAX_REVOCATIONS_BYTES,
            cluster,
            REVOKE_DOMAIN,
            REVOKE_TYPE,
        )?;
        let body: RevocationBody = from_bytes(&payload)?;
        if body.cluster != cluster.0 {
            return Err(CertError::Malformed(
                "names another cluster than its signer".into(),
            ));
        }
        if body.serials.len() > MAX_REVOKED {
            return Err(CertError::Malformed(format!(
                "{} serials, over the limit of {MAX_REVOKED}",
                body.serials.len()
            )));
        }
        Ok(Revocations {
            body,
            bytes: bytes.to_vec(),
        })
    }

    pub fn revokes(&self, serial: Serial) -> bool {
        self.body.serials.contains(&serial)
    }

    pub fn to_text(&self) -> String {
        pem(PEM_REVOKE, &self.bytes)
    }
}

/// The key that signed a certificate or revocation list (not checked
/// against any cluster: for showing a file).
pub fn signer_of(bytes: &[u8]) -> Option<ClusterId> {
    let env = SignedEnvelope::from_protobuf_encoding(bytes).ok()?;
    [(CERT_DOMAIN, CERT_TYPE), (REVOKE_DOMAIN, REVOKE_TYPE)]
        .into_iter()
        .find_map(|(domain, kind)| {
            let (_, key) = env.payload_and_signing_key(domain.into(), kind).ok()?;
            ClusterId::of(key).ok()
        })
}

fn pem(label: &str, bytes: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The bytes inside a text file written by [`Certificate::to_text`] or
/// [`Revocations::to_text`] (raw bytes are taken as they are).
pub fn unarmor(file: &[u8]) -> Result<Vec<u8>, CertError> {
    let Ok(text) = std::str::from_utf8(file) else {
        return Ok(file.to_vec());
    };
    if !text.trim_start().starts_with("-----BEGIN ") {
        return Ok(file.to_vec());
    }
    let b64: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| CertError::Malformed(format!("base64: {e}")))
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn unix_text(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn ago(now: u64, then: u64) -> String {
    let s = now.saturating_sub(then);
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests;
