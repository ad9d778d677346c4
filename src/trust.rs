//! Trust: who is a member of the cluster and what each member may send.
//!
//! # The contract
//! * **Open mode** (no `[trust] operator_key`): any peer that speaks this
//!   cluster's protocols (its name) is a member, with the role it claims.
//!   The status and the start-up log say so.
//! * **Secured mode** (`[trust] operator_key` and `certificate`): the
//!   cluster's identity is the operator's ed25519 public key. A peer is a
//!   member only once it has presented a certificate signed by that key,
//!   issued for the peer ID its Noise handshake authenticated, within its
//!   validity window and not revoked ([`cert`]). Certificates travel in the
//!   `Hello` exchange that opens every connection; a peer that presents none
//!   within [`HELLO_DEADLINE`], or a bad one, is disconnected and not
//!   dialled again (it may dial in again with a good one).
//! * **Roles come from certificates.** A heartbeat claiming a role above
//!   the sender's certificate is dropped, so such a peer never enters the
//!   election. Only master and worker certificates may push pinset changes,
//!   serve pinset pages or answer as holders; orders are taken only from
//!   the elected leader at its epoch (the holder's fence), and the leader is
//!   elected only among certified peers.
//! * Everything else from a peer that is not a member (gossip, requests,
//!   answers) is dropped and counted by reason ([`Gate::dropped`]).
//! * **Revocation:** a revocation list signed by the operator, with a
//!   version, replaces a lower version. A node given one (file at start,
//!   `POST /v1/trust/revocations`, or a member) stores it, passes it to every
//!   member it is connected to, and drops connections of revoked peers at
//!   once; members tell newcomers in `Hello`.
//! * **Private network** (`[trust] swarm_key`): an outer fence, the libp2p
//!   pnet handshake over TCP (QUIC is off: pnet cannot wrap it). A peer
//!   without the key cannot complete a connection at all.
//!
//! What the gate does not stop is written in the README (threat model): a
//! leaked master or worker key is a member until its certificate is
//! revoked or expires; without a swarm key, strangers can open connections
//! (and see gossip) for up to [`HELLO_DEADLINE`] before they are dropped.

pub mod cert;
pub mod files;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::role::Role;
use cert::{CertError, Certificate, ClusterId, Revocations, Serial};

/// A connected peer must present a valid certificate within this long.
pub const HELLO_DEADLINE: Duration = Duration::from_secs(10);
/// Most connected peers waiting to present a certificate.
pub const MAX_PENDING: usize = 1024;
/// `status` warns this long before this node's certificate expires.
pub const EXPIRY_WARNING_SECS: u64 = 30 * 86_400;

/// What a peer sent, as far as the gate is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A heartbeat (gossip, Hello or Update) claiming this role.
    Heartbeat(Role),
    /// A departure notice.
    Leaving,
    /// Pinset changes pushed to this node.
    PinsetPush,
    /// A pinset pull (read) from this node.
    PinsetPull,
    /// A pinset page answering this node's pull.
    PinsetAnswer,
    /// Orders, or a poll of this node's holder states (the leader's).
    HolderOrders,
    /// Holder states answering this node's poll, or a status answer.
    HolderAnswer,
    /// A question about one item's holders (any member may ask).
    HolderStatus,
    /// A revocation list.
    Revocations,
    /// A probe, direct or indirect (any member may send one).
    Probe,
    /// A member list, to compare views of the membership (any member).
    Members,
}

/// Why a message was dropped (the key under which it is counted).
pub type Reason = &'static str;

/// A peer admitted on its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub role: Role,
    pub serial: Serial,
    pub not_after: u64,
}

#[derive(Debug, Clone)]
pub struct Secured {
    pub cluster: ClusterId,
    pub own: Certificate,
    pub revocations: Option<Revocations>,
}

/// The membership gate: pure, time passed in. In open mode it admits
/// everything.
#[derive(Debug)]
pub struct Gate {
    secured: Option<Secured>,
    members: HashMap<PeerId, Member>,
    /// Connected peers that have not presented a certificate yet, since when.
    pending: HashMap<PeerId, Instant>,
    dropped: BTreeMap<Reason, u64>,
}

impl Gate {
    pub fn open() -> Gate {
        Gate {
            secured: None,
            members: HashMap::new(),
            pending: HashMap::new(),
            dropped: BTreeMap::new(),
        }
    }

    pub fn secured(s: Secured) -> Gate {
        Gate {
            secured: Some(s),
            ..Gate::open()
        }
    }

    pub fn is_secured(&self) -> bool {
        self.secured.is_some()
    }

    pub fn settings(&self) -> Option<&Secured> {
        self.secured.as_ref()
    }

    /// This node's certificate and revocation list, as it presents them.
    pub fn credentials(&self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        match &self.secured {
            Some(s) => (
                Some(s.own.bytes.clone()),
                s.revocations.as_ref().map(|r| r.bytes.clone()),
            ),
            None => (None, None),
        }
    }

    /// A new connection. `false`: too many peers are waiting to present a
    /// certificate already; drop this one now.
    pub fn connected(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.secured.is_none() || self.members.contains_key(&peer) {
            return true;
        }
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&peer) {
            self.count("too many peers without a certificate");
            return false;
        }
        self.pending.entry(peer).or_insert(now);
        true
    }

    pub fn disconnected(&mut self, peer: &PeerId) {
        self.pending.remove(peer);
        // Members stay admitted: their certificate does not change with a
        // connection (a reconnect presents it again anyway).
    }

    /// A peer's certificate, from its `Hello`.
    pub fn admit(
        &mut self,
        peer: PeerId,
        cert: Option<&[u8]>,
        unix_now: u64,
    ) -> Result<(), CertError> {
        let Some(s) = &self.secured else {
            return Ok(());
        };
        let Some(bytes) = cert else {
            self.members.remove(&peer);
            self.count("no certificate");
            return Err(CertError::Missing);
        };
        match Certificate::verify(bytes, &s.cluster, &peer, unix_now, s.revocations.as_ref()) {
            Ok(c) => {
                self.pending.remove(&peer);
                self.members.insert(
                    peer,
                    Member {
                        role: c.body.role,
                        serial: c.body.serial,
                        not_after: c.body.not_after,
                    },
                );
                Ok(())
            }
            Err(e) => {
                self.members.remove(&peer);
                self.count(match e {
                    CertError::Expired { .. } | CertError::NotYetValid { .. } => {
                        "certificate out of its validity"
                    }
                    CertError::Revoked(_) => "certificate revoked",
                    _ => "certificate invalid",
                });
                Err(e)
            }
        }
    }

    /// `Ok` if `peer` may send this; else the reason, counted.
    pub fn check(&mut self, peer: &PeerId, kind: Kind) -> Result<(), Reason> {
        let Some(_) = &self.secured else {
            return Ok(());
        };
        let verdict = match self.members.get(peer) {
            None => Err("not a certified member"),
            Some(m) => match kind {
                Kind::Heartbeat(claimed) if claimed > m.role => Err("role above its certificate"),
                Kind::PinsetPush | Kind::PinsetAnswer | Kind::HolderOrders | Kind::HolderAnswer
                    if !m.role.can_lead() =>
                {
                    Err("leecher certificate: may not write or serve")
                }
                _ => Ok(()),
            },
        };
        if let Err(r) = verdict {
            self.count(r);
        }
        verdict
    }

    pub fn member(&self, peer: &PeerId) -> Option<&Member> {
        self.members.get(peer)
    }

    pub fn count(&mut self, reason: Reason) {
        *self.dropped.entry(reason).or_default() += 1;
    }

    pub fn dropped(&self) -> &BTreeMap<Reason, u64> {
        &self.dropped
    }

    /// A revocation list from the operator (a file, the API or a peer).
    /// A newer one replaces the current list; returns the members it
    /// revokes, or `None` if it is not newer.
    pub fn take_revocations(&mut self, bytes: &[u8]) -> Result<Option<Vec<PeerId>>, CertError> {
        let Some(s) = &mut self.secured else {
            return Err(CertError::Malformed(
                "this node runs in open mode: it has no operator key to check the list with".into(),
            ));
        };
        let list = Revocations::decode(bytes, &s.cluster)?;
        let current = s.revocations.as_ref().map_or(0, |r| r.body.version);
        if list.body.version <= current {
            return Ok(None);
        }
        let revoked: Vec<PeerId> = self
            .members
            .iter()
            .filter(|(_, m)| list.revokes(m.serial))
            .map(|(p, _)| *p)
            .collect();
        for p in &revoked {
            self.members.remove(p);
        }
        s.revocations = Some(list);
        Ok(Some(revoked))
    }

    /// Whether this node's own certificate is revoked.
    pub fn own_revoked(&self) -> bool {
        self.secured.as_ref().is_some_and(|s| {
            s.revocations
                .as_ref()
                .is_some_and(|r| r.revokes(s.own.body.serial))
        })
    }

    /// Members whose certificate has expired (with its end) and connected
    /// peers that presented none in time: to disconnect. Expired members
    /// are forgotten.
    pub fn sweep(&mut self, now: Instant, unix_now: u64) -> Swept {
        if self.secured.is_none() {
            return Swept::default();
        }
        let expired: Vec<(PeerId, u64)> = self
            .members
            .iter()
            .filter(|(_, m)| unix_now > m.not_after)
            .map(|(p, m)| (*p, m.not_after))
            .collect();
        for (p, _) in &expired {
            self.members.remove(p);
            self.count("certificate out of its validity");
        }
        let late: Vec<PeerId> = self
            .pending
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= HELLO_DEADLINE)
            .map(|(p, _)| *p)
            .collect();
        for p in &late {
            self.pending.remove(p);
            self.count("no certificate presented in time");
        }
        Swept { expired, late }
    }

    pub fn view(&self, unix_now: u64) -> TrustView {
        let dropped = self
            .dropped
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect();
        match &self.secured {
            None => TrustView {
                mode: "open".into(),
                warning: Some(
                    "open cluster: no operator key is configured, so any peer that knows the \
                     cluster name can join, claim any role and lead (see `cluster init` and \
                     [trust] in the README)"
                        .into(),
                ),
                dropped,
                ..TrustView::default()
            },
            Some(s) => {
                let b = &s.own.body;
                let left = b.not_after.saturating_sub(unix_now);
                let warning = if self.own_revoked() {
                    Some(format!("this node's certificate {} is revoked", b.serial))
                } else if unix_now > b.not_after {
                    Some(format!(
                        "this node's certificate expired at {}",
                        cert::unix_text(b.not_after)
                    ))
                } else if left < EXPIRY_WARNING_SECS {
                    Some(format!(
                        "this node's certificate expires in {} days ({}): issue a new one",
                        left / 86_400,
                        cert::unix_text(b.not_after)
                    ))
                } else {
                    None
                };
                TrustView {
                    mode: "secured".into(),
                    cluster_id: Some(s.cluster.to_string()),
                    certificate: Some(CertView {
                        serial: b.serial.to_string(),
                        role: b.role,
                        not_before: cert::unix_text(b.not_before),
                        not_after: cert::unix_text(b.not_after),
                        expires_in_days: left / 86_400,
                    }),
                    revocations_version: s.revocations.as_ref().map(|r| r.body.version),
                    revoked: s.revocations.as_ref().map_or(0, |r| r.body.serials.len()),
                    members: self.members.len(),
                    warning,
                    dropped,
                    swarm_key: None,
                }
            }
        }
    }
}

/// What [`Gate::sweep`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Members whose certificate ended, and when it did.
    pub expired: Vec<(PeerId, u64)>,
    /// Connected peers that presented no certificate within [`HELLO_DEADLINE`].
    pub late: Vec<PeerId>,
}

/// Trust, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustView {
    /// open | secured
    pub mode: String,
    pub warning: Option<String>,
    pub cluster_id: Option<String>,
    pub certificate: Option<CertView>,
    pub revocations_version: Option<u64>,
    /// Serials in the revocation list.
    pub revoked: usize,
    /// Peers admitted on their certificates.
    pub members: usize,
    /// Messages and peers dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// The private network's key fingerprint (never the key).
    pub swarm_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertView {
    pub serial: String,
    pub role: Role,
    pub not_before: String,
    pub not_after: String,
    pub expires_in_days: u64,
}

#[cfg(test)]
mod tests;
