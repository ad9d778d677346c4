//! The pinset task's side of anti-entropy: serving pages to a peer from a
//! read transaction held for its session, and asking a peer for them.

use std::time::Instant;

use super::{Actor, MAX_SERVED, SERVED_IDLE, Transport};
use crate::pinset::model::Vv;
use crate::pinset::replica::{Input, PageAnswer};
use crate::pinset::sync::{Cursor, ReadView, behind, page};
use crate::wire::{MAX_PINSET_BATCH, MAX_PINSET_BATCH_BYTES, PinsetRequest, PinsetResponse};

use super::handle::Msg;

impl<T: Transport> Actor<T> {
    /// One anti-entropy page for a live peer, from the read transaction its
    /// session holds.
    pub(super) fn serve(
        &mut self,
        from: String,
        session: u64,
        vv: Option<Vv>,
        at: Cursor,
    ) -> PinsetResponse {
        let refused = |reason: String| PinsetResponse::Refused { reason };
        if self.view.peer(&from).is_none() {
            return refused(format!("{from} is not a live member"));
        }
        let now = Instant::now();
        self.served
            .retain(|_, (_, _, used)| now.saturating_duration_since(*used) < SERVED_IDLE);
        let key = (from, session);
        // A first request opens the session's snapshot; the same one again
        // (duplicated on the way) must not freeze a second one mid-session.
        if let Some(want) = vv
            && self.served.get(&key).is_none_or(|(_, w, _)| *w != want)
        {
            if self.served.len() >= MAX_SERVED && !self.served.contains_key(&key) {
                return refused("busy: too many anti-entropy sessions; retry later".into());
            }
            match self.db.view() {
                Ok(view) if behind(&view, &want) => return PinsetResponse::Behind,
                Ok(view) => {
                    self.served.insert(key.clone(), (view, want, now));
                }
                Err(e) => return refused(e.to_string()),
            }
        }
        let Some((view, want, used)) = self.served.get_mut(&key) else {
            return refused("no such anti-entropy session (expired?)".into());
        };
        *used = now;
        match page(&*view, want, &at, MAX_PINSET_BATCH, MAX_PINSET_BATCH_BYTES) {
            Ok(p) => {
                // The vector goes with the last page, and with the first of
                // a session in CID order (the receiver's index floor).
                let first_by_cid = at == Cursor::default() && p.by_cid;
                let vv = (p.next.is_none() || first_by_cid).then(|| view.vv_owned());
                let collected = vv.as_ref().map(|_| view.collected().clone());
                if p.next.is_none() {
                    self.served.remove(&key);
                }
                PinsetResponse::Page {
                    entries: p.entries,
                    next: p.next,
                    vv,
                    by_cid: p.by_cid,
                    collected,
                }
            }
            Err(e) => {
                self.served.remove(&key);
                refused(e.to_string())
            }
        }
    }

    pub(super) fn pull(&self, to: String, session: u64, vv: Option<Vv>, from: Cursor) {
        let (transport, tx) = (self.transport.clone(), self.tx.clone());
        self.net.spawn(async move {
            let req = PinsetRequest::Pull { session, vv, from };
            let result = match transport.request(&to, req).await {
                Ok(PinsetResponse::Page {
                    entries,
                    next,
                    vv,
                    by_cid,
                    collected,
                }) => Ok(PageAnswer {
                    entries,
                    next,
                    vv,
                    by_cid,
                    behind: false,
                    collected,
                }),
                Ok(PinsetResponse::Behind) => Ok(PageAnswer {
                    entries: Vec::new(),
                    next: None,
                    vv: None,
                    by_cid: false,
                    behind: true,
                    collected: None,
                }),
                Ok(PinsetResponse::Refused { reason }) => Err(reason),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e),
            };
            let page = Input::Page {
                from: to,
                session,
                result,
            };
            let _ = tx.send(Msg::Step(page)).await;
        });
    }
}
