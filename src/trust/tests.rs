use super::cert::{CertBody, RevocationBody};
use super::*;
use libp2p::identity::Keypair;

const NOW: u64 = 1_000_000;

struct World {
    op: Keypair,
    cluster: ClusterId,
}

impl World {
    fn new() -> World {
        let op = Keypair::generate_ed25519();
        let cluster = ClusterId::of(&op.public()).unwrap();
        World { op, cluster }
    }

    fn cert(&self, peer: PeerId, role: Role, serial: u64) -> Certificate {
        Certificate::issue(
            &self.op,
            CertBody {
                cluster: self.cluster.0,
                peer: peer.to_bytes(),
                role,
                serial: Serial(serial),
                not_before: NOW - 10,
                not_after: NOW + 100,
            },
        )
        .unwrap()
    }

    fn gate(&self) -> Gate {
        let me = PeerId::random();
        Gate::secured(Secured {
            cluster: self.cluster.clone(),
            own: self.cert(me, Role::Master, 1),
            revocations: None,
        })
    }

    fn list(&self, version: u64, serials: &[u64]) -> Vec<u8> {
        Revocations::issue(
            &self.op,
            RevocationBody {
                cluster: self.cluster.0,
                version,
                issued: NOW,
                serials: serials.iter().map(|s| Serial(*s)).collect(),
            },
        )
        .bytes
    }
}

const ROLES: [Role; 3] = [Role::Leecher, Role::Worker, Role::Master];

fn kinds() -> Vec<Kind> {
    let mut k: Vec<Kind> = ROLES.iter().map(|r| Kind::Heartbeat(*r)).collect();
    k.extend([
        Kind::Leaving,
        Kind::PinsetPush,
        Kind::PinsetPull,
        Kind::PinsetAnswer,
        Kind::HolderOrders,
        Kind::HolderAnswer,
        Kind::HolderStatus,
        Kind::Revocations,
        Kind::Probe,
        Kind::Members,
    ]);
    k
}

/// The whole table: for every certificate role (or none) and every kind
/// of message, what the gate lets through.
#[test]
fn roles_come_from_certificates_for_every_kind_of_message() {
    let w = World::new();
    for cert_role in [
        None,
        Some(Role::Leecher),
        Some(Role::Worker),
        Some(Role::Master),
    ] {
        let mut gate = w.gate();
        let peer = PeerId::random();
        if let Some(r) = cert_role {
            gate.admit(peer, Some(&w.cert(peer, r, 9).bytes), NOW)
                .unwrap();
        }
        for kind in kinds() {
            let allowed = gate.check(&peer, kind).is_ok();
            let expected = match (cert_role, kind) {
                (None, _) => false,
                (Some(r), Kind::Heartbeat(claimed)) => claimed <= r,
                (
                    Some(r),
                    Kind::PinsetPush | Kind::PinsetAnswer | Kind::HolderOrders | Kind::HolderAnswer,
                ) => r.can_lead(),
                (Some(_), _) => true,
            };
            assert_eq!(allowed, expected, "{cert_role:?} {kind:?}");
        }
        // Open mode lets everything through.
        let mut open = Gate::open();
        assert!(kinds().into_iter().all(|k| open.check(&peer, k).is_ok()));
    }
}

#[test]
fn a_bad_certificate_admits_nothing_and_is_counted() {
    let w = World::new();
    let mut gate = w.gate();
    let (peer, other) = (PeerId::random(), PeerId::random());
    // No certificate, someone else's, another operator's, expired.
    assert!(gate.admit(peer, None, NOW).is_err());
    assert!(
        gate.admit(peer, Some(&w.cert(other, Role::Master, 2).bytes), NOW)
            .is_err()
    );
    let thief = World::new();
    assert!(
        gate.admit(peer, Some(&thief.cert(peer, Role::Master, 2).bytes), NOW)
            .is_err()
    );
    let e = gate
        .admit(peer, Some(&w.cert(peer, Role::Master, 2).bytes), NOW + 101)
        .unwrap_err();
    assert!(e.to_string().contains("expired at"), "{e}");
    assert!(gate.check(&peer, Kind::Heartbeat(Role::Leecher)).is_err());
    let d = gate.dropped();
    assert_eq!(d["no certificate"], 1);
    assert_eq!(d["certificate invalid"], 2);
    assert_eq!(d["certificate out of its validity"], 1);
    assert_eq!(d["not a certified member"], 1);
}

#[test]
fn a_newer_revocation_list_drops_its_members_an_older_one_is_ignored() {
    let w = World::new();
    let mut gate = w.gate();
    let (a, b) = (PeerId::random(), PeerId::random());
    gate.admit(a, Some(&w.cert(a, Role::Worker, 20).bytes), NOW)
        .unwrap();
    gate.admit(b, Some(&w.cert(b, Role::Worker, 21).bytes), NOW)
        .unwrap();
    assert_eq!(
        gate.take_revocations(&w.list(2, &[20])).unwrap(),
        Some(vec![a])
    );
    assert!(gate.check(&a, Kind::Leaving).is_err());
    assert!(gate.check(&b, Kind::Leaving).is_ok());
    // Not newer: ignored, even though it names b.
    assert_eq!(gate.take_revocations(&w.list(2, &[21])).unwrap(), None);
    assert_eq!(gate.take_revocations(&w.list(1, &[21])).unwrap(), None);
    // A revoked certificate presented again is refused.
    let e = gate
        .admit(a, Some(&w.cert(a, Role::Worker, 20).bytes), NOW)
        .unwrap_err();
    assert_eq!(e, CertError::Revoked(Serial(20)));
    // Another operator's list is refused.
    assert!(gate.take_revocations(&World::new().list(9, &[21])).is_err());
    assert!(gate.check(&b, Kind::Leaving).is_ok());
    assert_eq!(gate.view(NOW).revocations_version, Some(2));
}

#[test]
fn strangers_and_expired_members_are_swept() {
    let w = World::new();
    let mut gate = w.gate();
    let t0 = Instant::now();
    let (member, stranger) = (PeerId::random(), PeerId::random());
    gate.connected(member, t0);
    gate.connected(stranger, t0);
    gate.admit(member, Some(&w.cert(member, Role::Worker, 3).bytes), NOW)
        .unwrap();
    assert_eq!(
        gate.sweep(t0 + Duration::from_secs(1), NOW),
        Swept::default()
    );
    let swept = gate.sweep(t0 + HELLO_DEADLINE, NOW);
    assert_eq!((swept.expired, swept.late), (vec![], vec![stranger]));
    let swept = gate.sweep(t0 + HELLO_DEADLINE, NOW + 101);
    assert_eq!(
        (swept.expired, swept.late),
        (vec![(member, NOW + 100)], vec![])
    );
    assert!(gate.member(&member).is_none());
}

#[test]
fn the_status_warns_of_open_mode_and_of_expiry() {
    let open = Gate::open().view(NOW);
    assert_eq!(open.mode, "open");
    assert!(open.warning.unwrap().contains("any peer"));
    let w = World::new();
    let v = w.gate().view(NOW);
    assert_eq!(v.mode, "secured");
    // The certificate ends 100 s from now: well within 30 days.
    assert!(v.warning.unwrap().contains("expires in 0 days"));
}
