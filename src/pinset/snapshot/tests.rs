use std::sync::Mutex;

use super::*;
use crate::pinset::Op;
use crate::pinset::store::Appended;
use crate::testkit::cid_of;

fn spec(n: u64) -> PinSpec {
    PinSpec {
        cid: cid_of(n),
        name: format!("item {n}"),
        replication_min: 2,
        replication_max: 3,
        added_unix_ms: n,
    }
}

/// A store that serves its snapshots, as a peer over the wire would
/// (answers are checked as the node checks them); `on_page` runs after
/// every answer, to change the store mid-pull.
#[derive(Clone)]
struct Peer {
    inner: Arc<Mutex<(PinStore, Served)>>,
    on_page: Arc<dyn Fn(&mut PinStore) + Send + Sync>,
}

impl Transport for Peer {
    async fn request(&self, _peer: &str, req: PinsetRequest) -> Result<PinsetResponse, String> {
        let mut guard = self.inner.lock().unwrap();
        let (store, served) = &mut *guard;
        let resp = match req {
            PinsetRequest::ReadSnapshot { id, after } => {
                served.read(store, id, after, Instant::now())
            }
            other => panic!("unexpected {other:?}"),
        };
        (self.on_page)(store);
        resp.check().map_err(|e| e.to_string())?;
        Ok(resp)
    }
}

fn leader_with(dir: &std::path::Path, n: u64) -> PinStore {
    let mut s = PinStore::open(&dir.join("leader.redb")).unwrap();
    s.append_local(1, (0..n).map(|i| Op::Pin(spec(i))).collect())
        .unwrap();
    s.commit_to(n).unwrap();
    s
}

#[tokio::test]
async fn a_pulled_snapshot_is_the_state_at_one_commit_and_the_log_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    // More than two pages, and writes land on the leader during the pull.
    let n = 2 * MAX_SNAPSHOT_CHUNK as u64 + 100;
    let leader = leader_with(dir.path(), n);
    let expected = leader.pins().unwrap();
    let at = LogPos { epoch: 1, index: n };
    let peer = Peer {
        inner: Arc::new(Mutex::new((leader, Served::default()))),
        on_page: Arc::new(|s: &mut PinStore| {
            let next = s.last().index;
            s.append_local(
                2,
                vec![Op::Unpin { cid: cid_of(0) }, Op::Pin(spec(next + 1))],
            )
            .unwrap();
            s.commit_to(next + 2).unwrap();
        }),
    };

    // The follower had a log of its own, nothing of it committed.
    let mut follower = PinStore::open(&dir.path().join("follower.redb")).unwrap();
    follower
        .append(
            LogPos::default(),
            &[crate::pinset::Entry {
                index: 1,
                epoch: 1,
                op: Op::Pin(spec(999_999)),
            }],
        )
        .unwrap();
    let (id, got_at) = pull(&peer, "leader", Stager::new(&follower)).await.unwrap();
    assert_eq!(got_at, at, "the commit index when the pull started");
    follower.install_staged(id, got_at).unwrap();
    assert_eq!(follower.pins().unwrap(), expected);
    assert_eq!(follower.last(), at);
    assert_eq!(follower.commit_index(), n);

    // What the leader wrote meanwhile follows as log entries.
    let guard = peer.inner.lock().unwrap();
    let tail = guard.0.entries(n + 1, usize::MAX).unwrap().unwrap();
    assert!(!tail.is_empty());
    assert_eq!(
        follower.append(at, &tail).unwrap(),
        Appended::Ok(guard.0.last())
    );
    follower.commit_to(guard.0.commit_index()).unwrap();
    let now = guard.0.pins().unwrap();
    assert_eq!(follower.pins().unwrap(), now);
    assert!(guard.1.is_empty(), "a finished snapshot is closed");
    drop(guard);

    // And survives a reopen.
    drop(follower);
    let follower = PinStore::open(&dir.path().join("follower.redb")).unwrap();
    assert_eq!(follower.pins().unwrap(), now);
}

#[tokio::test]
async fn an_interrupted_pull_leaves_the_old_state() {
    let dir = tempfile::tempdir().unwrap();
    let leader = leader_with(dir.path(), 10);
    let path = dir.path().join("follower.redb");
    let mut follower = PinStore::open(&path).unwrap();
    follower.append_local(1, vec![Op::Pin(spec(500))]).unwrap();
    follower.commit_to(1).unwrap();

    let stager = Stager::new(&follower);
    stager.begin(7).unwrap();
    stager.add(7, &leader.pins().unwrap()).unwrap();
    assert!(matches!(
        stager.add(8, &[spec(1)]),
        Err(PinStoreError::NotStaged { id: 8 })
    ));
    // The process dies before installing.
    drop((stager, follower));
    let mut follower = PinStore::open(&path).unwrap();
    assert_eq!(follower.pins().unwrap(), vec![spec(500)]);
    assert!(matches!(
        follower.install_staged(
            7,
            LogPos {
                epoch: 1,
                index: 10
            }
        ),
        Err(PinStoreError::NotStaged { id: 7 })
    ));
    // Nor is a snapshot behind what is committed here installed.
    let stager = Stager::new(&follower);
    stager.begin(9).unwrap();
    follower
        .append_local(1, vec![Op::Barrier, Op::Barrier])
        .unwrap();
    follower.commit_to(3).unwrap();
    assert!(matches!(
        follower.install_staged(9, LogPos { epoch: 1, index: 2 }),
        Err(PinStoreError::SnapshotBehind { at: 2, commit: 3 })
    ));
    assert_eq!(follower.pins().unwrap(), vec![spec(500)]);
}

#[test]
fn served_snapshots_are_bounded_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let leader = leader_with(dir.path(), MAX_SNAPSHOT_CHUNK as u64 + 1);
    let mut served = Served::default();
    let now = Instant::now();
    let first = |r: PinsetResponse| match r {
        PinsetResponse::SnapshotChunk { pins, done, .. } => {
            (pins.last().unwrap().cid.clone(), done)
        }
        other => panic!("{other:?}"),
    };
    for id in 0..MAX_OPEN as u64 + 2 {
        let (_, done) = first(served.read(&leader, id, None, now));
        assert!(!done);
    }
    assert_eq!(served.len(), MAX_OPEN, "the least recently read give way");
    let (last, _) = first(served.read(&leader, 100, None, now));
    let refused = served.read(&leader, 0, Some(last.clone()), now);
    assert!(
        matches!(refused, PinsetResponse::Refused { .. }),
        "{refused:?}"
    );
    let (_, done) = first(served.read(&leader, 100, Some(last.clone()), now));
    assert!(done);
    // Unread for longer than IDLE: closed.
    served.read(&leader, 200, None, now);
    let late = served.read(&leader, 200, Some(last), now + IDLE);
    assert!(matches!(late, PinsetResponse::Refused { .. }), "{late:?}");
}

#[test]
fn hostile_pages_are_refused_on_receipt() {
    let mut pins = vec![spec(1), spec(2)];
    pins.sort_by(|a, b| a.cid.cmp(&b.cid));
    let ok = PinsetResponse::SnapshotChunk {
        at: LogPos::default(),
        pins: pins.clone(),
        done: true,
    };
    assert!(ok.check().is_ok());
    pins.reverse();
    let unordered = PinsetResponse::SnapshotChunk {
        at: LogPos::default(),
        pins,
        done: true,
    };
    assert!(unordered.check().is_err());
    let bad_cid = PinsetResponse::SnapshotChunk {
        at: LogPos::default(),
        pins: vec![PinSpec {
            cid: "not a cid".into(),
            ..spec(1)
        }],
        done: true,
    };
    assert!(bad_cid.check().is_err());
    let too_many = PinsetResponse::SnapshotChunk {
        at: LogPos::default(),
        pins: vec![spec(1); MAX_SNAPSHOT_CHUNK + 1],
        done: true,
    };
    assert!(too_many.check().is_err());
}
