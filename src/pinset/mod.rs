//! The cluster pinset: what the cluster keeps pinned, as a convergent
//! replicated state every node holds, and the replication that turns it
//! into pins on the masters' and workers' own IPFS.
//!
//! # The contract
//! 1. **An acknowledged change is durable on `write_copies` masters or
//!    workers** (default 2) before the answer, fewer only when this node
//!    knows fewer members ([`replica`]).
//! 2. **No acknowledged change is lost or undone** except by a later change
//!    to the same CID (*later*: a higher stamp, [`model`]); a change is gone
//!    only if every node that held it is lost for good before passing it on.
//!    Removals are collected once every member has seen them and the
//!    removal horizon has passed ([`replica`], *Collecting removals*); a node
//!    no collector counted that returns after longer than the horizon can
//!    undo a removal with an older pin, never lose a pin.
//! 3. **Writes stay available** on any side of a partition holding
//!    `write_copies` masters or workers; reads everywhere, leechers included.
//! 4. **Convergence:** once the network heals every node holds the same
//!    pinset (pushes, then anti-entropy by version vector, [`sync`]).
//! 5. **The keeper unpins a copy only for a removal it holds** (or a copy
//!    beyond a pinned item's `replication_max`), never for an item it does
//!    not know, and plans only once its replica has synced with every live
//!    master and worker since it leads ([`keeper`]; its core is a
//!    synchronous state machine the simulator runs).
//! 6. **Authority:** changes only from masters and workers; orders only from
//!    the leader a holder follows, at its epoch ([`holder`]); every bound on
//!    the wire is checked in [`crate::wire`].
//! 7. **A user's own pin is never taken over**: a holder that finds the item
//!    already pinned on its IPFS before the order reports it without owning it.
//!
//! # Parts
//! * [`model`]: pins, changes, stamps, version vectors (a leaf).
//! * [`replica`]: the replica as a pure state machine; [`actor`] drives it
//!   with the database and the network.
//! * [`sync`]: anti-entropy pages, pure; [`db`]: the replica in redb.
//! * [`plan`]: which peers should hold which items, pure.
//! * [`keeper`]: on the leader, orders holders to pin and unpin so every
//!   item keeps its replication factor ([`plan`] decides); `keeper::Core`
//!   is the state machine, `keeper.rs` its shell.
//! * [`holder`]: on every node, carries out orders on the local IPFS and
//!   reports what it holds; [`held::HeldStore`] remembers it across restarts.

pub mod actor;
pub mod db;
pub mod held;
pub mod holder;
pub mod keeper;
pub mod model;
pub mod plan;
pub mod replica;
pub mod sync;

pub use model::{Entry, MAX_NAME, MAX_REPLICATION, Op, PinSpec, canonical_cid};

/// Runs a pinset task on a thread of its own, with a current-thread
/// runtime: its redb transactions end in an fsync and planning over a
/// large pinset is CPU-bound, and neither may hold up the node loop and the
/// API on the main runtime's two worker threads. Joining the thread after
/// the task's stop token is cancelled waits until it has dropped its
/// databases (closed cleanly, so the next start needs no repair).
pub(crate) fn spawn_task(
    name: &str,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || runtime.block_on(task))
}
