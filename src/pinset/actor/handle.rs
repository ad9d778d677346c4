//! The pinset task's handle: what the node, the API and the keeper use to
//! reach it (writes, peers' requests, members, progress, reads).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::super::db::PinDb;
use super::super::model::Op;
use super::super::replica::{Input, WriteError, Written};
use crate::wire::{PinsetRequest, PinsetResponse};

/// Sends a pinset request to a peer and waits for the answer (the
/// transport bounds the wait).
pub trait Transport: Clone + Send + Sync + 'static {
    fn request(
        &self,
        peer: &str,
        req: PinsetRequest,
    ) -> impl Future<Output = Result<PinsetResponse, String>> + Send;
}

/// Where this node's replica stands: `status` shows it, heartbeats carry
/// the digest, the keeper waits on `synced`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The digest and number of the changes seen.
    pub digest: u64,
    pub changes: u64,
    pub pins: u64,
    /// Removals kept so older pins cannot come back (collected once every
    /// master and worker has seen them).
    pub tombstones: u64,
    /// Masters and workers not heard since this node started: removals are
    /// kept until they are (or an operator removes them).
    #[serde(default)]
    pub collect_waits_for: Vec<String>,
    /// Writes waiting for their copies.
    pub pending_writes: usize,
    /// Masters and workers (this node excluded) counting for `write_copies`.
    pub members: usize,
    /// A peer knows changes under this replica's ID beyond what it holds:
    /// this database is an old copy.
    pub stale: bool,
    /// This replica's ID.
    pub replica_id: String,
    /// When each peer was last known in sync (a finished anti-entropy
    /// session's start, or equal digests).
    #[serde(skip)]
    pub synced: BTreeMap<String, Option<Instant>>,
}

pub(super) enum Msg {
    Write {
        op: Op,
        reply: oneshot::Sender<Result<Written, WriteError>>,
    },
    Inbound {
        from: String,
        req: PinsetRequest,
        reply: oneshot::Sender<PinsetResponse>,
    },
    /// A push's or a page's answer ([`Input::Pushed`], [`Input::Page`]).
    Step(Input),
    RemoveMember {
        id: String,
        reply: oneshot::Sender<bool>,
    },
}

/// Talks to the pinset task and reads the replica.
#[derive(Clone)]
pub struct PinsetHandle {
    pub(super) tx: mpsc::Sender<Msg>,
    pub(super) db: PinDb,
    pub(super) progress: watch::Receiver<Progress>,
}

impl PinsetHandle {
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    pub fn watch_progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// The replica's database, to read.
    pub fn db(&self) -> &PinDb {
        &self.db
    }

    /// Applies `op` cluster-wide: answered once it is durable on enough
    /// copies (see [`replica`]).
    pub async fn write(&self, op: Op) -> Result<Written, WriteError> {
        let (reply, rx) = oneshot::channel();
        let stopped = || WriteError::Stopped;
        self.tx
            .send(Msg::Write { op, reply })
            .await
            .map_err(|_| stopped())?;
        // The core answers every write within its write timeout; this is a
        // backstop against a stuck task.
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .map_err(|_| stopped())?
            .map_err(|_| stopped())?
    }

    /// Applies every op of `ops` cluster-wide, as separate changes sent
    /// together (they travel in the same batches); each answer in order.
    pub async fn write_many(&self, ops: Vec<Op>) -> Vec<Result<Written, WriteError>> {
        let mut waiting = Vec::with_capacity(ops.len());
        for op in ops {
            let (reply, rx) = oneshot::channel();
            if self.tx.send(Msg::Write { op, reply }).await.is_err() {
                break;
            }
            waiting.push(rx);
        }
        let mut out = Vec::with_capacity(waiting.len());
        for rx in waiting {
            let answer = tokio::time::timeout(Duration::from_secs(60), rx).await;
            out.push(match answer {
                Ok(Ok(r)) => r,
                _ => Err(WriteError::Stopped),
            });
        }
        out
    }

    /// A peer's request; the answer comes on the receiver. `None` when the
    /// task is overloaded or gone (the peer retries).
    pub fn inbound(
        &self,
        from: String,
        req: PinsetRequest,
    ) -> Option<oneshot::Receiver<PinsetResponse>> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Msg::Inbound { from, req, reply }).ok()?;
        Some(rx)
    }

    /// Forgets a member (it no longer counts for `write_copies`); `false`
    /// if it was not one.
    pub async fn remove_member(&self, id: String) -> Result<bool, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::RemoveMember { id, reply })
            .await
            .map_err(|_| "the pinset task stopped".to_string())?;
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .map_err(|_| "the pinset task did not answer".to_string())?
            .map_err(|_| "the pinset task stopped".to_string())
    }
}
