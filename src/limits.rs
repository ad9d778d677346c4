//! The process's limit on open files.
//!
//! The node keeps a connection to every member (a file descriptor each over
//! TCP; QUIC shares one socket), and the built-in engine, a child process
//! with the limit it inherits, one to each of the cluster's daemons. A shell
//! usually leaves the soft limit at 1,024 while the hard limit is far
//! higher, so a cluster near `network.max_peers` members would run out of
//! descriptors mid-run (refused connections, failed dials, a flapping
//! view) with nothing pointing at the cause. So the node raises its soft
//! limit towards the hard one at start, as Go programs (kubo among them)
//! do, and says so in its log when even that is short. Like them it gives
//! the processes it starts the limit it was given ([`restore_in_child`]): a
//! program that uses `select(2)` breaks on descriptors past 1,024. (The
//! built-in engine and kubo raise their own.)

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// The soft limit before [`raise_open_files`] raised it; 0 if it did not.
static ORIGINAL_SOFT: AtomicU64 = AtomicU64::new(0);

/// The soft limit the node asks for, when the hard limit allows it: what
/// the systemd unit sets (`LimitNOFILE`), far above a full cluster's need.
pub const OPEN_FILES_WANTED: u64 = 65_536;

/// Open files a node with `max_peers` members may hold at once: a
/// connection per member, another while a duplicate is being closed, and
/// room for the rest (listeners, the control API's clients, the stores,
/// the child services' pipes).
pub fn open_files_needed(max_peers: usize) -> u64 {
    2 * max_peers as u64 + 512
}

/// The limit on open files before and after [`raise_open_files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub before: u64,
    pub now: u64,
    pub hard: u64,
}

/// Raises the soft limit on open files to [`OPEN_FILES_WANTED`], or to the
/// hard limit if that is lower; never lowers it.
pub fn raise_open_files() -> io::Result<OpenFiles> {
    let mut lim = nofile()?;
    // rlim_t is 64 bits here, 32 on some other targets.
    #[allow(clippy::unnecessary_cast)]
    let (before, hard) = (lim.rlim_cur as u64, lim.rlim_max as u64);
    let target = OPEN_FILES_WANTED.min(hard);
    if before >= target {
        return Ok(OpenFiles {
            before,
            now: before,
            hard,
        });
    }
    lim.rlim_cur = target as libc::rlim_t;
    set_nofile(&lim)?;
    ORIGINAL_SOFT.store(before, Ordering::Relaxed);
    Ok(OpenFiles {
        before,
        now: target,
        hard,
    })
}

/// Puts back the soft limit this process had before [`raise_open_files`],
/// for a child between fork and exec: only an atomic load and two system
/// calls, which are async-signal-safe.
pub fn restore_in_child() -> io::Result<()> {
    let soft = ORIGINAL_SOFT.load(Ordering::Relaxed);
    if soft == 0 {
        return Ok(());
    }
    let mut lim = nofile()?;
    lim.rlim_cur = soft as libc::rlim_t;
    set_nofile(&lim)
}

/// The limit on open files (async-signal-safe: one system call).
fn nofile() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

/// Sets the limit on open files (async-signal-safe: one system call).
fn set_nofile(lim: &libc::rlimit) -> io::Result<()> {
    // SAFETY: setrlimit reads one rlimit through a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the limit and logs the outcome: at `info` when it was raised, a
/// warning when it stays below what `max_peers` members need.
pub fn raise_and_report(max_peers: usize) {
    let needed = open_files_needed(max_peers);
    match raise_open_files() {
        Ok(l) => {
            if l.now > l.before {
                tracing::info!(
                    from = l.before,
                    to = l.now,
                    "raised the limit on open files"
                );
            }
            if l.now < needed {
                tracing::warn!(
                    limit = l.now,
                    hard = l.hard,
                    needed,
                    max_peers,
                    "the open-file limit is below what network.max_peers members need: \
                     raise the hard limit (ulimit -Hn, or LimitNOFILE in a systemd unit) \
                     or lower network.max_peers"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the limit on open files"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_need_grows_with_the_members() {
        assert_eq!(open_files_needed(1), 514);
        assert_eq!(open_files_needed(1024), 2560);
        assert!(open_files_needed(1024) < OPEN_FILES_WANTED);
    }
}
