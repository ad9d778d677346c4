use super::*;

struct Setup {
    op: Keypair,
    cluster: ClusterId,
    node: PeerId,
}

fn setup() -> Setup {
    let op = Keypair::generate_ed25519();
    let cluster = ClusterId::of(&op.public()).unwrap();
    Setup {
        op,
        cluster,
        node: Keypair::generate_ed25519().public().to_peer_id(),
    }
}

fn body(s: &Setup, serial: u64) -> CertBody {
    CertBody {
        cluster: s.cluster.0,
        peer: s.node.to_bytes(),
        role: Role::Worker,
        serial: Serial(serial),
        not_before: 1_000,
        not_after: 2_000,
    }
}

fn revoking(s: &Setup, serials: &[u64]) -> Revocations {
    Revocations::issue(
        &s.op,
        RevocationBody {
            cluster: s.cluster.0,
            version: 1,
            issued: 1_400,
            serials: serials.iter().map(|n| Serial(*n)).collect(),
        },
    )
}

#[test]
fn a_certificate_verifies_for_its_peer_within_its_window() {
    let s = setup();
    let cert = Certificate::issue(&s.op, body(&s, 7)).unwrap();
    let got = Certificate::verify(&cert.bytes, &s.cluster, &s.node, 1_500, None).unwrap();
    assert_eq!(got.body.role, Role::Worker);
    assert_eq!(got.peer, s.node);
    // Text form round-trips.
    assert_eq!(unarmor(cert.to_text().as_bytes()).unwrap(), cert.bytes);
}

#[test]
fn every_refusal_names_its_reason() {
    let s = setup();
    let cert = Certificate::issue(&s.op, body(&s, 7)).unwrap();
    let v = |bytes: &[u8], cluster: &ClusterId, peer: &PeerId, now| {
        Certificate::verify(bytes, cluster, peer, now, None).unwrap_err()
    };
    let other = setup();
    assert!(matches!(
        v(&cert.bytes, &other.cluster, &s.node, 1_500),
        CertError::WrongSigner { .. }
    ));
    let e = v(&cert.bytes, &s.cluster, &other.node, 1_500);
    assert!(matches!(e, CertError::WrongPeer { .. }), "{e}");
    let e = v(&cert.bytes, &s.cluster, &s.node, 2_001);
    assert!(
        e.to_string().contains("expired at 1970-01-01 00:33:20"),
        "{e}"
    );
    let e = v(
        &cert.bytes,
        &s.cluster,
        &s.node,
        1_000 - CLOCK_SKEW_SECS - 1,
    );
    assert!(matches!(e, CertError::NotYetValid { .. }), "{e}");
    // Within the skew: accepted.
    Certificate::verify(
        &cert.bytes,
        &s.cluster,
        &s.node,
        1_000 - CLOCK_SKEW_SECS,
        None,
    )
    .unwrap();
    // Revoked.
    let list = revoking(&s, &[7]);
    let e = Certificate::verify(&cert.bytes, &s.cluster, &s.node, 1_500, Some(&list)).unwrap_err();
    assert_eq!(e, CertError::Revoked(Serial(7)));
}

#[test]
fn a_forged_or_mangled_certificate_is_refused() {
    let s = setup();
    // The right body signed by someone else's key.
    let thief = Keypair::generate_ed25519();
    let forged = Certificate::issue(&thief, body(&s, 7)).unwrap();
    assert!(matches!(
        Certificate::verify(&forged.bytes, &s.cluster, &s.node, 1_500, None),
        Err(CertError::WrongSigner { .. })
    ));
    // A signed revocation list is not a certificate (domain separation).
    let list = revoking(&s, &[]);
    assert!(Certificate::decode(&list.bytes, &s.cluster).is_err());
    assert!(Revocations::decode(&list.bytes, &s.cluster).is_ok());
    // Every single-bit flip is refused, never accepted as something else.
    let cert = Certificate::issue(&s.op, body(&s, 7)).unwrap();
    for i in (0..cert.bytes.len()).map(|byte| byte * 8 + byte % 8) {
        let mut b = cert.bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        if let Ok(c) = Certificate::decode(&b, &s.cluster) {
            // Protobuf may tolerate a flip in a tag it skips; what is signed
            // must then be exactly the same.
            assert_eq!(c.body, cert.body, "bit {i}");
        }
    }
    assert!(matches!(
        Certificate::decode(&vec![0u8; MAX_CERT_BYTES + 1], &s.cluster),
        Err(CertError::TooLarge(..))
    ));
}

#[test]
fn cluster_ids_and_serials_parse_back() {
    let s = setup();
    assert_eq!(ClusterId::parse(&s.cluster.to_string()).unwrap(), s.cluster);
    assert!(ClusterId::parse("ed25519:abcd").is_err());
    assert!(ClusterId::parse(&s.cluster.to_string()[8..]).is_err());
    assert_eq!("00000000000000ff".parse::<Serial>().unwrap(), Serial(255));
    assert_eq!(Serial(255).to_string(), "00000000000000ff");
    assert!("xyz".parse::<Serial>().is_err());
    assert_eq!(unix_text(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(unix_text(1_796_054_400), "2026-11-30 16:00:00 UTC");
}
