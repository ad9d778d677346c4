//! The `status` and `peers` subcommands: ask a running node through its
//! control API and print a table, or the API's JSON with `--json`.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::api::{Client, PeerView, StatusView, locate};
use crate::cli::NodeArgs;
use crate::config::{NodeConfig, default_data_dir};

pub mod index;
pub mod pins;
pub mod trust;

/// The data directory the flags, the config file or the platform name.
pub(crate) fn data_dir(args: &NodeArgs) -> anyhow::Result<PathBuf> {
    Ok(match &args.data_dir {
        Some(d) => d.clone(),
        None if args.config.is_some() => NodeConfig::load(args)?.data_dir,
        None => default_data_dir().context("no data directory: pass --data-dir")?,
    })
}

/// The control API token file the node uses.
pub(crate) fn token_file(args: &NodeArgs, data_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    Ok(match &args.api_token_file {
        Some(f) => f.clone(),
        None if args.config.is_some() => NodeConfig::load(args)?.api_token_file,
        None => data_dir.join(crate::trust::files::API_TOKEN),
    })
}

/// A client of the running node's API, with its token if there is one.
pub(crate) fn client(args: &NodeArgs) -> anyhow::Result<Client> {
    let data_dir = data_dir(args)?;
    let token = crate::trust::files::read_token(&token_file(args, &data_dir)?)?;
    Ok(Client::new(locate(args.api.as_deref(), &data_dir)?).with_token(token))
}

pub async fn status(args: &NodeArgs, json: bool) -> anyhow::Result<()> {
    let (status, raw) = client(args)?.status().await?;
    if json {
        println!("{raw}");
    } else {
        print!("{}", render_status(&status));
    }
    Ok(())
}

pub async fn peers(args: &NodeArgs, json: bool) -> anyhow::Result<()> {
    let (peers, raw) = client(args)?.peers().await?;
    if json {
        println!("{raw}");
    } else {
        print!("{}", render_peers(&peers));
    }
    Ok(())
}

/// `peers rm PEER_ID`.
pub async fn peers_rm(args: &NodeArgs, peer: &str) -> anyhow::Result<()> {
    client(args)?.remove_member(peer).await?;
    println!("removed {peer}: it no longer counts for pins.write_copies");
    Ok(())
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

pub fn render_status(s: &StatusView) -> String {
    let mut out = String::new();
    let leader = match &s.leader {
        Some(l) if l.peer_id == s.peer_id && s.isolated => format!(
            "this node (epoch {}), ISOLATED: no other master or worker reachable; \
             no orders given, no write acknowledged alone",
            l.epoch
        ),
        Some(l) if l.peer_id == s.peer_id => format!("this node (epoch {})", l.epoch),
        Some(l) => format!("{} ({}, epoch {})", l.peer_id, l.role, l.epoch),
        None => "none".into(),
    };
    let healthy = s.peers.iter().filter(|p| p.healthy).count();
    let _ = writeln!(out, "peer id    {}", s.peer_id);
    let _ = writeln!(out, "role       {}", s.role);
    if let Some(why) = &s.role_auto {
        let _ = writeln!(out, "           {why}");
    }
    let _ = writeln!(out, "cluster    {}", s.cluster);
    let t = &s.trust;
    match (&t.cluster_id, &t.certificate) {
        (Some(id), Some(c)) => {
            let _ = writeln!(
                out,
                "trust      secured: cluster {id}; {} members admitted",
                t.members
            );
            let _ = writeln!(
                out,
                "cert       {} ({}), valid until {} ({} days)",
                c.serial, c.role, c.not_after, c.expires_in_days
            );
        }
        _ => {
            let _ = writeln!(out, "trust      OPEN");
        }
    }
    if let Some(w) = &t.warning {
        let _ = writeln!(out, "WARNING    {w}");
    }
    if let Some(f) = &t.swarm_key {
        let _ = writeln!(out, "private    swarm key {f} (TCP only)");
    }
    if !t.dropped.is_empty() || s.api_unauthorized > 0 {
        let d: Vec<String> = t.dropped.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(
            out,
            "dropped    {}{}",
            d.join(", "),
            if s.api_unauthorized > 0 {
                format!("; API requests without the token: {}", s.api_unauthorized)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(out, "leader     {leader}");
    let _ = writeln!(out, "epoch      {} (highest seen)", s.epoch);
    let _ = writeln!(out, "uptime     {:.1} s", s.uptime_ms as f64 / 1000.0);
    for a in &s.listen_addrs {
        let _ = writeln!(out, "listening  {a}");
    }
    let d = &s.probe_datagrams;
    if d.port == 0 {
        let _ = writeln!(
            out,
            "probes     over the connections only (probe datagrams off)"
        );
    } else {
        let _ = writeln!(
            out,
            "probes     datagrams on UDP port {}: {} answers to this node's probes, {} members' probes answered, {} sent, {} dropped, {} refused",
            d.port, d.acked, d.answered, d.sent, d.dropped, d.refused
        );
    }
    let _ = writeln!(
        out,
        "           over the connections: {} members' probes answered, {} of this node's sent after no datagram answer; {} times it asked others to probe",
        d.pings_answered, d.pinged_after, d.asked_others
    );
    let i = &s.ipfs;
    let _ = writeln!(out, "ipfs       {} {} ({})", i.mode, i.state, i.why);
    if i.mode != crate::ipfs::Mode::Off {
        let _ = writeln!(
            out,
            "ipfs api   {} (pid {}, {} restarts){}",
            i.api.as_deref().unwrap_or("-"),
            i.pid.map_or("-".into(), |p| p.to_string()),
            i.restarts,
            i.last_error
                .as_deref()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default()
        );
    }
    for sv in &s.services {
        let pid = sv.pid.map_or("-".into(), |p| p.to_string());
        let err = sv.last_error.as_deref().unwrap_or("");
        let _ = writeln!(
            out,
            "service    {} {:?} (pid {pid}, {} restarts) {err}",
            sv.name, sv.state, sv.restarts
        );
    }
    let p = &s.pinset;
    let in_sync = s
        .peers
        .iter()
        .filter(|peer| peer.healthy && peer.pinset == Some(p.digest))
        .count();
    let _ = writeln!(
        out,
        "pinset     {} pins, {} removals kept, {} changes seen (digest {:016x}); in sync with {in_sync} of {healthy} healthy peers; {} writes waiting for copies; {} members count for copies",
        p.pins, p.tombstones, p.changes, p.digest, p.pending_writes, p.members
    );
    let ix = &s.indexes;
    let _ = writeln!(
        out,
        "indexes    {} vectors in {} collections, {} triples, {} metadata documents, {} peer lists (replicated with the pinset: in sync as above)",
        ix.vectors, ix.collections, ix.triples, ix.documents, ix.peer_lists
    );
    if p.tombstones > 0 && !p.collect_waits_for.is_empty() {
        let _ = writeln!(
            out,
            "removals   kept until these members are heard from (or removed with `peers rm`): {}",
            p.collect_waits_for.join(", ")
        );
    }
    if p.stale {
        let _ = writeln!(
            out,
            "WARNING    peers know changes of this replica ({}) that it does not hold: its pinset.redb is an old copy",
            p.replica_id
        );
    }
    let _ = writeln!(out, "peers      {} ({healthy} healthy)", s.peers.len());
    if !s.peers.is_empty() {
        out.push('\n');
        out.push_str(&render_peers(&s.peers));
    }
    out
}

pub fn render_peers(peers: &[PeerView]) -> String {
    let mut out = format!(
        "{:<54} {:<8} {:<8} {:<5} {:>10} {:>6} {:>11}\n",
        "PEER ID", "ROLE", "STATE", "IPFS", "LAST SEEN", "CPU", "FREE DISK"
    );
    for p in peers {
        let ipfs = match &p.ipfs {
            None => "off",
            Some(i) if i.ready => "ready",
            Some(_) => "down",
        };
        let _ = writeln!(
            out,
            "{:<54} {:<8} {:<8} {:<5} {:>8.1} s {:>5.1}% {:>11}",
            p.peer_id,
            p.role.as_str(),
            p.state,
            ipfs,
            p.last_seen_ms as f64 / 1000.0,
            f64::from(p.health.cpu_permille) / 10.0,
            bytes(p.health.disk_free)
        );
    }
    out
}
