//! The pinset task's writes: a batch's persists, prunes and collections,
//! carried out in the order the core asked for them.

use tracing::{error, warn};

use super::{Actor, Transport};
use crate::pinset::db::PinDbError;
use crate::pinset::replica::{Effect, Persist};

impl<T: Transport> Actor<T> {
    /// Carries out the storage effects in order (consecutive persists in
    /// one transaction; a prune after the persists before it, before those
    /// after it); returns the other effects, or `None` when a write failed
    /// and the core was restarted (nothing of the batch may then be sent).
    pub(super) fn store(&mut self, fx: Vec<Effect>) -> Option<Vec<Effect>> {
        let mut batch: Vec<Persist> = Vec::new();
        let mut rest = Vec::new();
        for e in fx {
            match e {
                Effect::Persist(p) => batch.push(p),
                Effect::Prune {
                    from,
                    to,
                    keep,
                    seen,
                } => {
                    self.persist(&mut batch)?;
                    let pruned = self.db.prune(&from, to.as_deref(), &keep, &seen);
                    match pruned {
                        Ok((counts, gone)) => {
                            self.counts = counts;
                            self.tell_holder(gone);
                        }
                        Err(e) => return self.failed("pruning what a peer collected", e),
                    }
                }
                other => rest.push(other),
            }
        }
        self.persist(&mut batch)?;
        for e in &rest {
            if let Effect::Collect { upto, before } = e {
                let held = |cid: &str| self.held.contains(cid);
                match self.db.collect(upto, *before, &held) {
                    Ok((counts, kept)) => {
                        self.counts = counts;
                        self.tell_holder(kept);
                    }
                    // Harmless: tried again with the next collection.
                    Err(e) => warn!("pinset: collecting removals: {e}"),
                }
            }
            if let Effect::Confirm { at, upto } = e
                && let Err(e) = self.db.confirm(*at, upto)
            {
                warn!("pinset: storing a confirmed snapshot: {e}");
            }
        }
        Some(rest)
    }

    fn persist(&mut self, batch: &mut Vec<Persist>) -> Option<()> {
        if batch.is_empty() {
            return Some(());
        }
        match self.db.persist(batch) {
            Ok(counts) => {
                self.counts = counts;
                batch.clear();
                Some(())
            }
            Err(e) => self.failed("cannot store changes", e),
        }
    }

    fn failed<X>(&mut self, what: &str, e: PinDbError) -> Option<X> {
        error!("pinset: {what}: {e}");
        self.restart(&e.to_string());
        None
    }

    /// Items this node's holder holds whose removal is about to go, or
    /// went: it unpins them. A removal kept back for the holder is told
    /// again with every collection; a pruned item only once (a message lost
    /// in a crash then leaves its copy pinned: see the README).
    fn tell_holder(&self, cids: Vec<String>) {
        let held: Vec<String> = cids.into_iter().filter(|c| self.held.contains(c)).collect();
        if held.is_empty() {
            return;
        }
        if let Err(e) = self.removed.try_send(held) {
            let cids = match e {
                tokio::sync::mpsc::error::TrySendError::Full(c)
                | tokio::sync::mpsc::error::TrySendError::Closed(c) => c,
            };
            warn!(
                ?cids,
                "pinset: the holder could not be told of these removed items; unpin them from \
                 this node's IPFS by hand if it keeps them"
            );
        }
    }
}
