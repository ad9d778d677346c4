//! `cluster init`, `id`, `cert issue|show|revoke|publish` and `api-token`:
//! the operator's side of trust. Everything but `publish` works offline,
//! without a running node.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, bail};
use libp2p::PeerId;

use crate::cli::{CertCommand, NodeArgs};
use crate::clock::unix_ms;
use crate::trust::cert::{
    CertBody, Certificate, ClusterId, RevocationBody, Revocations, Serial, signer_of, unix_text,
};
use crate::trust::files::{self, load_cluster_id, load_operator_key, load_signed};

pub fn init(dir: &Path) -> anyhow::Result<()> {
    let made = files::init_cluster(dir)?;
    println!("cluster {}", made.cluster);
    println!(
        "operator key  {}  (mode 0600: keep it offline; it signs certificates)",
        made.key.display()
    );
    println!(
        "public key    {}  (give it to every node: [trust] operator_key)",
        made.public.display()
    );
    println!(
        "swarm key     {}  (optional private network: [trust] swarm_key; mode 0600)",
        made.swarm_key.display()
    );
    println!(
        "next: on each machine `ipfs-kit-p2p id --data-dir DIR`, then `ipfs-kit-p2p cert issue \
         --operator-key {} --peer ID --role worker --out node.cert`",
        made.key.display()
    );
    Ok(())
}

pub fn id(args: &NodeArgs) -> anyhow::Result<()> {
    let dir = super::data_dir(args)?;
    println!("{}", crate::store::DataDir::peer_id(&dir)?);
    Ok(())
}

pub fn api_token(args: &NodeArgs) -> anyhow::Result<()> {
    let dir = super::data_dir(args)?;
    let path = super::token_file(args, &dir)?;
    let (token, created) = files::ensure_token(&path)?;
    if created {
        eprintln!("created {} (mode 0600)", path.display());
    }
    println!("{token}");
    Ok(())
}

/// The operator key pair in `path` and the cluster it is the identity of.
fn operator(path: &Path) -> anyhow::Result<(libp2p::identity::Keypair, ClusterId)> {
    let op = load_operator_key(path)?;
    let cluster = ClusterId::of(&op.public())?;
    Ok((op, cluster))
}

fn now_secs() -> u64 {
    unix_ms() / 1000
}

pub async fn cert(args: &NodeArgs, cmd: CertCommand) -> anyhow::Result<()> {
    match cmd {
        CertCommand::Issue {
            operator_key,
            peer,
            role,
            days,
            out,
        } => {
            let (op, cluster) = operator(&operator_key)?;
            let peer: PeerId = peer
                .trim()
                .parse()
                .with_context(|| format!("--peer {peer:?} is not a peer ID"))?;
            if days == 0 {
                bail!("--days must be at least 1");
            }
            let now = now_secs();
            let cert = Certificate::issue(
                &op,
                CertBody {
                    cluster: cluster.0,
                    peer: peer.to_bytes(),
                    role,
                    serial: Serial(rand::random()),
                    not_before: now,
                    not_after: now + u64::from(days) * 86_400,
                },
            )?;
            crate::store::write_atomic(&out, cert.to_text().as_bytes(), 0o644)?;
            print!("{}", describe_cert(&cert, now));
            println!("written to {}", out.display());
            Ok(())
        }
        CertCommand::Show {
            file,
            operator_key,
            json,
        } => show(&file, operator_key.as_deref(), json),
        CertCommand::Revoke {
            operator_key,
            serials,
            previous,
            out,
        } => {
            let (op, cluster) = operator(&operator_key)?;
            let mut set: BTreeSet<Serial> = serials
                .iter()
                .map(|s| s.parse().map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<_>>()?;
            let mut version = unix_ms();
            if let Some(prev) = previous {
                let old = Revocations::decode(&load_signed(&prev)?, &cluster)
                    .with_context(|| format!("{}", prev.display()))?;
                set.extend(old.body.serials.iter().copied());
                version = version.max(old.body.version.saturating_add(1));
            }
            if set.len() > crate::trust::cert::MAX_REVOKED {
                bail!(
                    "{} serials: at most {}",
                    set.len(),
                    crate::trust::cert::MAX_REVOKED
                );
            }
            let list = Revocations::issue(
                &op,
                RevocationBody {
                    cluster: cluster.0,
                    version,
                    issued: now_secs(),
                    serials: set,
                },
            );
            crate::store::write_atomic(&out, list.to_text().as_bytes(), 0o644)?;
            print!("{}", describe_list(&list));
            println!(
                "written to {}; give it to a running node with `ipfs-kit-p2p cert publish {}`",
                out.display(),
                out.display()
            );
            Ok(())
        }
        CertCommand::Publish { file } => {
            let bytes = load_signed(&file)?;
            let (answer, _) = super::client(args)?.publish_revocations(&bytes).await?;
            println!("{}", answer["result"].as_str().unwrap_or("taken"));
            Ok(())
        }
    }
}

fn show(file: &Path, key: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let bytes = load_signed(file)?;
    // With no key given, the signer's own key is used to read the contents
    // (the signature still binds them), and the output says it is unchecked.
    let cluster = match key {
        Some(k) => Some(load_cluster_id(k).or_else(|_| {
            load_operator_key(k).and_then(|op| {
                ClusterId::of(&op.public()).map_err(|e| files::FileError::Invalid {
                    path: k.to_owned(),
                    message: e.to_string(),
                })
            })
        })?),
        None => None,
    };
    let signer = signer_of(&bytes).context("not a certificate or revocation list")?;
    let checked = cluster.as_ref().unwrap_or(&signer);
    let now = now_secs();
    let note = match &cluster {
        Some(c) if *c == signer => "signature checked against the given operator key".to_string(),
        Some(c) => bail!(
            "signed by another operator key ({}), not {}",
            signer.short(),
            c.short()
        ),
        None => "signature not checked against a cluster: pass --operator-key".to_string(),
    };
    if let Ok(cert) = Certificate::decode(&bytes, checked) {
        if json {
            let b = &cert.body;
            let v = serde_json::json!({
                "kind": "certificate", "cluster": signer.to_string(), "peer": cert.peer.to_base58(),
                "role": b.role, "serial": b.serial.to_string(), "not_before": b.not_before,
                "not_after": b.not_after, "valid_now": cert.valid_at(now).is_ok(), "checked": cluster.is_some(),
            });
            println!("{v}");
        } else {
            print!("{}", describe_cert(&cert, now));
            println!("note       {note}");
        }
        return Ok(());
    }
    let list = Revocations::decode(&bytes, checked)?;
    if json {
        let b = &list.body;
        let v = serde_json::json!({
            "kind": "revocations", "cluster": signer.to_string(), "version": b.version,
            "issued": b.issued, "serials": b.serials.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "checked": cluster.is_some(),
        });
        println!("{v}");
    } else {
        print!("{}", describe_list(&list));
        println!("note       {note}");
    }
    Ok(())
}

fn describe_cert(cert: &Certificate, now: u64) -> String {
    let b = &cert.body;
    let validity = match cert.valid_at(now) {
        Ok(()) => format!(
            "valid, {} days left",
            b.not_after.saturating_sub(now) / 86_400
        ),
        Err(e) => e.to_string(),
    };
    format!(
        "certificate\ncluster    ed25519:{}\npeer       {}\nrole       {}\nserial     {}\nnot before {}\nnot after  {}\nnow        {validity}\n",
        hex::encode(b.cluster),
        cert.peer,
        b.role,
        b.serial,
        unix_text(b.not_before),
        unix_text(b.not_after),
    )
}

fn describe_list(list: &Revocations) -> String {
    let b = &list.body;
    let serials: Vec<String> = b.serials.iter().map(|s| s.to_string()).collect();
    format!(
        "revocation list\ncluster    ed25519:{}\nversion    {}\nissued     {}\nrevoked    {}\n",
        hex::encode(b.cluster),
        b.version,
        unix_text(b.issued),
        serials.join(" ")
    )
}
