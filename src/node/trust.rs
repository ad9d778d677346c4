//! The node's side of trust (see [`crate::trust`]): the files read at
//! start, the certificate exchange in `Hello`, revocation lists, and
//! dropping peers that are not (or no longer) members.

use std::path::Path;
use std::time::Instant;

use libp2p::PeerId;
use tracing::{error, info, warn};

use super::Node;
use crate::clock::unix_ms;
use crate::config::{ConfigError, NodeConfig};
use crate::election::Input;
use crate::store::write_atomic;
use crate::trust::cert::{Certificate, Revocations, unix_text};
use crate::trust::files::{SwarmKey, load_cluster_id, load_signed};
use crate::trust::{Gate, Kind, Secured};
use crate::wire::{Hello, Request};

/// Where a node keeps the newest revocation list it has taken.
const REVOCATIONS_FILE: &str = "revocations";

fn bad(field: &'static str, message: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.to_string(),
    }
}

fn unix_secs() -> u64 {
    unix_ms() / 1000
}

/// Reads and checks the trust files: a node whose own certificate would be
/// refused by its peers does not start (exit 2, naming the problem).
/// The role this node's certificate grants, if it runs secured (for
/// `--role auto`, which never claims more).
pub(super) fn certified_role(cfg: &NodeConfig) -> Result<Option<crate::role::Role>, ConfigError> {
    let t = &cfg.trust;
    let (Some(op), Some(cert_path)) = (&t.operator_key, &t.certificate) else {
        return Ok(None);
    };
    let cluster = load_cluster_id(op).map_err(|e| bad("trust.operator_key", e))?;
    let bytes = load_signed(cert_path).map_err(|e| bad("trust.certificate", e))?;
    let own = Certificate::decode(&bytes, &cluster)
        .map_err(|e| bad("trust.certificate", format!("{}: {e}", cert_path.display())))?;
    Ok(Some(own.body.role))
}

pub(super) fn load(
    cfg: &NodeConfig,
    me: &PeerId,
    data: &Path,
) -> Result<(Gate, Option<SwarmKey>), ConfigError> {
    let t = &cfg.trust;
    let swarm_key = match &t.swarm_key {
        Some(p) => Some(SwarmKey::load(p).map_err(|e| bad("trust.swarm_key", e))?),
        None => None,
    };
    let (Some(op), Some(cert_path)) = (&t.operator_key, &t.certificate) else {
        return Ok((Gate::open(), swarm_key));
    };
    let cluster = load_cluster_id(op).map_err(|e| bad("trust.operator_key", e))?;
    let bytes = load_signed(cert_path).map_err(|e| bad("trust.certificate", e))?;
    let cert_err = |e| bad("trust.certificate", format!("{}: {e}", cert_path.display()));
    let own = Certificate::decode(&bytes, &cluster).map_err(cert_err)?;
    if own.peer != *me {
        return Err(bad(
            "trust.certificate",
            format!(
                "{} is issued for peer {}, but this node is {me} (data dir {})",
                cert_path.display(),
                own.peer,
                cfg.data_dir.display()
            ),
        ));
    }
    own.valid_at(unix_secs()).map_err(cert_err)?;
    if cfg.role > own.body.role {
        return Err(bad(
            "role",
            format!(
                "this node's certificate allows at most {}, not {}",
                own.body.role, cfg.role
            ),
        ));
    }
    let mut gate = Gate::secured(Secured {
        cluster,
        own,
        revocations: None,
    });
    let stored = data.join(REVOCATIONS_FILE);
    if stored.exists() {
        let bytes = load_signed(&stored).map_err(|e| bad("trust.revocations", e))?;
        if let Err(e) = gate.take_revocations(&bytes) {
            // Another operator key's list (the key was replaced): kept aside.
            let aside = stored.with_extension(format!("old.{}", unix_secs()));
            warn!(error = %e, aside = %aside.display(), "the stored revocation list is not this cluster's; moved aside");
            std::fs::rename(&stored, &aside)
                .map_err(|e| bad("trust.revocations", format!("{}: {e}", stored.display())))?;
        }
    }
    if let Some(path) = &t.revocations {
        let bytes = load_signed(path).map_err(|e| bad("trust.revocations", e))?;
        let newer = gate
            .take_revocations(&bytes)
            .map_err(|e| bad("trust.revocations", format!("{}: {e}", path.display())))?;
        if newer.is_some() {
            write_atomic(&stored, &bytes, 0o644).map_err(|e| bad("trust.revocations", e))?;
        }
    }
    if gate.own_revoked() {
        return Err(bad(
            "trust.certificate",
            "this node's certificate is revoked: issue a new one",
        ));
    }
    Ok((gate, swarm_key))
}

impl Node {
    /// This node's greeting: its heartbeat, certificate and revocation list.
    pub(super) fn hello(&mut self) -> Hello {
        let (cert, revocations) = self.gate.credentials();
        Hello {
            heartbeat: self.heartbeat(),
            cert,
            revocations,
        }
    }

    /// A peer's certificate and revocation list, from its `Hello` (either
    /// way). `Err`: why it is not a member; it is dropped shortly.
    pub(super) fn on_credentials(
        &mut self,
        peer: PeerId,
        cert: Option<&[u8]>,
        revocations: Option<&[u8]>,
    ) -> Result<(), String> {
        match self.gate.admit(peer, cert, unix_secs()) {
            Ok(()) => {
                self.foreign.remove(&peer);
                if let Some(addrs) = self.unadmitted_addrs.remove(&peer) {
                    self.learn_member_addrs(peer, addrs);
                }
                // Only a member's list is taken (it is signed by the
                // operator either way; this keeps strangers from making
                // the node check and store lists). A newer one may revoke
                // this very peer, which is then dropped.
                if let Some(list) = revocations
                    && let Err(e) = self.take_revocations(list, Some(peer))
                {
                    tracing::debug!(%peer, "{e}");
                }
                Ok(())
            }
            Err(e) => {
                if self.once_a_minute(format!("refused {peer}")) {
                    warn!(%peer, "refused as a member: {e}");
                }
                self.refuse(peer);
                Err(format!(
                    "not a member of cluster {}: {e}",
                    self.cluster_short()
                ))
            }
        }
    }

    /// Whether to log about `key` now: at most once a minute each, so a
    /// peer that keeps dialling does not flood the log.
    pub(super) fn once_a_minute(&mut self, key: String) -> bool {
        let now = Instant::now();
        if self
            .warned
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < std::time::Duration::from_secs(60))
        {
            return false;
        }
        if self.warned.len() >= 1024 {
            self.warned.clear();
        }
        self.warned.insert(key, now);
        true
    }

    fn cluster_short(&self) -> String {
        self.gate
            .settings()
            .map_or_else(String::new, |s| s.cluster.short())
    }

    /// Not dialled again; out of the election if it was in it;
    /// disconnected at the next sweep (after the answer telling it why has
    /// gone out).
    fn refuse(&mut self, peer: PeerId) {
        self.not_dialled(peer);
        self.leave_election(peer);
        self.drop_soon.push(peer);
    }

    /// Whether `peer` may send this; if not, it is counted (and logged at
    /// debug level: a stranger can send many).
    pub(super) fn allowed(&mut self, peer: &PeerId, kind: Kind) -> bool {
        match self.gate.check(peer, kind) {
            Ok(()) => true,
            Err(reason) => {
                tracing::debug!(%peer, ?kind, reason, "dropped");
                false
            }
        }
    }

    /// A revocation list from a file, the API or a peer: taken if newer,
    /// stored, passed on to every connected member, and its revoked peers
    /// dropped at once. Returns what happened, in words.
    pub(super) fn take_revocations(
        &mut self,
        bytes: &[u8],
        from: Option<PeerId>,
    ) -> Result<String, String> {
        let revoked = match self.gate.take_revocations(bytes) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok("not newer than the list in force; nothing changed".into()),
            Err(e) => {
                self.gate.count("revocation list invalid");
                return Err(format!("revocation list refused: {e}"));
            }
        };
        let list = self
            .gate
            .settings()
            .and_then(|s| s.revocations.clone())
            .map(|r: Revocations| r.body);
        if let Some(l) = &list {
            info!(
                version = l.version,
                serials = l.serials.len(),
                revoked = revoked.len(),
                "revocation list taken"
            );
        }
        let path = self.data.path().join(REVOCATIONS_FILE);
        if let Err(e) = write_atomic(&path, bytes, 0o644) {
            error!(error = %e, "cannot store the revocation list; it holds until restart");
        }
        if self.gate.own_revoked() {
            error!(
                "this node's certificate is revoked: its peers drop it; issue a new certificate"
            );
        }
        for peer in &revoked {
            warn!(%peer, "certificate revoked: dropping the peer");
            self.expel(*peer);
        }
        let members: Vec<PeerId> = self
            .swarm
            .connected_peers()
            .copied()
            .filter(|p| Some(*p) != from && self.gate.member(p).is_some())
            .collect();
        for p in members {
            self.swarm
                .behaviour_mut()
                .rpc
                .send_request(&p, Request::Revocations(bytes.to_vec()));
        }
        Ok(format!(
            "taken: version {}, {} peer(s) dropped",
            list.map_or(0, |l| l.version),
            revoked.len()
        ))
    }

    /// No longer a member: disconnected at once, and gone from the election
    /// (as if it had left) so a successor is chosen without waiting.
    fn expel(&mut self, peer: PeerId) {
        self.not_dialled(peer);
        let _ = self.swarm.disconnect_peer_id(peer);
        self.leave_election(peer);
    }

    /// As if it had left: a successor is chosen without waiting.
    fn leave_election(&mut self, peer: PeerId) {
        let id = peer.to_base58();
        if let Some(incarnation) = self.election.peer(&id).map(|p| p.incarnation) {
            self.input(Input::Left {
                from: id,
                incarnation,
            });
        }
    }

    /// Drops refused peers, strangers that presented no certificate in
    /// time, and members whose certificate expired.
    pub(super) fn sweep_trust(&mut self) {
        for peer in std::mem::take(&mut self.drop_soon) {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let swept = self.gate.sweep(Instant::now(), unix_secs());
        for (peer, not_after) in swept.expired {
            warn!(%peer, "certificate expired at {}: dropping the peer", unix_text(not_after));
            self.expel(peer);
        }
        for peer in swept.late {
            if self.once_a_minute(format!("late {peer}")) {
                warn!(%peer, "presented no certificate within {:?}: disconnected", crate::trust::HELLO_DEADLINE);
            }
            self.mark_foreign(peer);
        }
        let own_end = self.gate.settings().map(|s| s.own.body.not_after);
        if let Some(end) = own_end.filter(|end| unix_secs() > *end)
            && self.once_a_minute("own certificate".into())
        {
            error!(
                "this node's certificate expired at {}: its peers drop it; issue a new one and restart",
                unix_text(end)
            );
        }
    }
}
