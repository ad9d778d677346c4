//! The pinset task's recovery paths: catching up before leading (from the
//! log, or a snapshot when far behind), checking that what this node
//! committed is a prefix of the cluster's log, and the rescue of pins only
//! this node kept, written again through the leader.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::{Actor, ClusterView, MAX_FORWARDS, Msg, PeerView, SNAPSHOT_LAG, Transport, pos_of};
use crate::pinset::snapshot::{Stager, pull};
use crate::pinset::store::{Appended, PinStoreError};
use crate::pinset::{LogPos, Op};
use crate::wire::{MAX_WRITE_BATCH, PinsetRequest, PinsetResponse};

/// Rescued pins written again per round, and the wait after a failed round.
const RESUBMIT_BATCH: usize = MAX_WRITE_BATCH * MAX_FORWARDS;
pub(super) const RESUBMIT_RETRY: Duration = Duration::from_secs(2);

impl<T: Transport> Actor<T> {
    /// Keeps the pins of this node's committed entries from `from` on
    /// aside and empties the log, to follow the leader's from scratch.
    pub(super) fn rescue_from(&mut self, from: u64) -> Result<(), PinStoreError> {
        let n = self.store.rescue_and_reset(from)?;
        warn!(
            from,
            rescued = n,
            "pinset: log emptied to follow the cluster's; pins only this node kept will be written again"
        );
        self.rescue_due = true;
        Ok(())
    }

    /// Writes rescued pins again through the leader, a round at a time;
    /// they leave the rescued table once committed.
    pub(super) fn resubmit(&mut self, v: &ClusterView) {
        if !self.rescue_due
            || self.resubmitting
            || v.leader.is_none()
            || self.resubmit_after.is_some_and(|t| Instant::now() < t)
        {
            return;
        }
        let pins = match self.store.rescued(RESUBMIT_BATCH) {
            Ok(p) => p,
            Err(e) => {
                warn!("pinset: {e}");
                self.resubmit_after = Some(Instant::now() + RESUBMIT_RETRY);
                return;
            }
        };
        if pins.is_empty() {
            self.rescue_due = false;
            return;
        }
        self.resubmitting = true;
        let mut waits = Vec::with_capacity(pins.len());
        for spec in pins {
            let (reply, rx) = oneshot::channel();
            waits.push((spec.cid.clone(), rx));
            // Leechers keep rescued pins too: written like any node's.
            match self.leading.as_mut() {
                Some(l) => l.queued.push((Op::Pin(spec), reply)),
                None => self.forward.push((Op::Pin(spec), reply)),
            }
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let (mut done, mut failed) = (Vec::new(), false);
            for (cid, rx) in waits {
                match rx.await {
                    Ok(Ok(_)) => done.push(cid),
                    _ => failed = true,
                }
            }
            let _ = tx.send(Msg::Resubmitted { done, failed }).await;
        });
    }

    /// Before leading: take what the most advanced live peer has beyond our commit.
    pub(super) async fn catch_up(&mut self, v: &ClusterView) -> Result<(), PinStoreError> {
        let mut best: Option<(LogPos, String)> = None;
        for PeerView { id, role, .. } in &v.peers {
            if *id == v.me || !role.can_lead() {
                continue;
            }
            if let Ok(PinsetResponse::Position { last, .. }) =
                self.transport.request(id, PinsetRequest::Position).await
                && last > self.store.last()
                && best.as_ref().is_none_or(|(b, _)| last > *b)
            {
                best = Some((last, id.clone()));
            }
        }
        let Some((target, peer)) = best else {
            return Ok(());
        };
        info!(%peer, ?target, "pinset: catching up before leading");
        self.check_prefix(&peer, target).await?;
        // Far behind: the peer's state first, then its log from there.
        let mut pulled = false;
        if target.index > self.store.commit_index() + SNAPSHOT_LAG {
            self.pull_from(&peer).await?;
            pulled = true;
        }
        let mut from = self.store.commit_index() + 1;
        loop {
            let entries = match self
                .transport
                .request(&peer, PinsetRequest::Fetch { from })
                .await
            {
                Ok(PinsetResponse::Entries { entries }) => entries,
                // Most likely compacted away there: its state instead.
                other if !pulled => {
                    debug!(%peer, ?other, "pinset catch-up: fetch failed, pulling a snapshot");
                    self.pull_from(&peer).await?;
                    pulled = true;
                    from = self.store.commit_index() + 1;
                    continue;
                }
                other => {
                    warn!(%peer, ?other, "pinset catch-up stopped");
                    return Ok(());
                }
            };
            let Some(tail) = entries.last().map(pos_of) else {
                return Ok(());
            };
            let prev = self.pos_at(from - 1)?;
            match self.store.append(prev, &entries)? {
                Appended::Ok(_) => from = tail.index + 1,
                Appended::Gap { .. } => {
                    warn!(%peer, "pinset catch-up: logs do not line up");
                    return Ok(());
                }
            }
            if tail >= target {
                return Ok(());
            }
        }
    }

    /// What this node committed must be a prefix of the more advanced
    /// `peer`'s log. If it is not (the cluster went on without entries
    /// only this node kept), the pins of what differs are rescued and the
    /// log emptied, to take the peer's from scratch.
    async fn check_prefix(&mut self, peer: &str, target: LogPos) -> Result<(), PinStoreError> {
        let (base, commit) = (self.store.base().index, self.store.commit_index());
        if commit <= base {
            return Ok(());
        }
        // If the peer holds our last committed entry, it holds all before it.
        let probe = commit.min(target.index);
        if probe <= base {
            // Its log ends inside what we folded into our state: there is
            // nothing to compare entry by entry. We lead with our log; the
            // peer, meeting our entries, rescues what it committed.
            debug!(%peer, ?target, base, "pinset: cannot compare committed entries");
            return Ok(());
        }
        let ours = self.pos_at(probe)?;
        match self
            .transport
            .request(peer, PinsetRequest::Fetch { from: probe })
            .await
        {
            Ok(PinsetResponse::Entries { entries }) => {
                let same = entries.first().map(pos_of) == Some(ours);
                if same && probe == commit {
                    return Ok(());
                }
            }
            // Compacted there (or unreachable): cannot tell; as Raft
            // assumes, what is committed is the cluster's.
            other => {
                debug!(%peer, ?other, "pinset: cannot compare committed entries");
                return Ok(());
            }
        }
        // Where the logs part: the first of ours the peer lacks or differs on.
        let mut from = base + 1;
        let parted = loop {
            let theirs = match self
                .transport
                .request(peer, PinsetRequest::Fetch { from })
                .await
            {
                Ok(PinsetResponse::Entries { entries }) => entries,
                // Cannot tell where: everything beyond the base.
                _ => break base + 1,
            };
            let mine = self
                .store
                .entries(from, theirs.len().max(1))?
                .unwrap_or_default();
            let differs = mine
                .iter()
                .zip(theirs.iter().map(Some).chain(std::iter::repeat(None)))
                .find(|(m, t)| t.is_none_or(|t| pos_of(t) != pos_of(m)));
            if let Some((m, _)) = differs {
                break m.index;
            }
            if mine.is_empty() {
                break from;
            }
            from += mine.len() as u64;
        };
        if parted <= commit {
            warn!(%peer, parted, commit, "pinset: committed entries the cluster's log lacks");
            self.rescue_from(parted)?;
        }
        Ok(())
    }

    /// Pulls `peer`'s snapshot and makes it the state (a failed pull is
    /// logged and leaves the state as it was).
    async fn pull_from(&mut self, peer: &str) -> Result<(), PinStoreError> {
        info!(%peer, "pinset: pulling a snapshot");
        match pull(&self.transport, peer, Stager::new(&self.store)).await {
            Ok((id, at)) => {
                self.store.install_staged(id, at)?;
                info!(?at, "pinset: snapshot installed");
            }
            Err(e) => warn!(%peer, "pinset: snapshot pull failed: {e}"),
        }
        Ok(())
    }
}
