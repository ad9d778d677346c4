//! `pin add|rm|ls|status` and `add`: the cluster pinset through a running
//! node's control API; `--wait` follows an item until enough holders have it.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::client;
use crate::api::Client;
use crate::api::pins::{PinRequest, PinView};
use crate::cli::{AddArgs, NodeArgs, PinCommand, WaitArgs};
use crate::ipfs_rpc::IpfsClient;

pub async fn pin(args: &NodeArgs, cmd: PinCommand) -> anyhow::Result<()> {
    let c = client(args)?;
    match cmd {
        PinCommand::Add {
            cid,
            replication_min,
            replication_max,
            name,
            peers,
            wait,
        } => {
            let req = PinRequest {
                cid,
                replication_min,
                replication_max,
                name,
                peers,
            };
            let (p, _) = c.pin_add(&req).await?;
            println!(
                "pinned {} (replication {}..{}, stored on {} nodes)",
                p.cid,
                p.replication_min,
                p.replication_max,
                p.copies.unwrap_or_default()
            );
            if wait.wait {
                wait_pinned(&c, &p, wait).await?;
            }
        }
        PinCommand::Rm { cid } => {
            c.pin_rm(&cid).await?;
            println!("unpinned {cid}");
        }
        PinCommand::Ls { json } => {
            let (pins, raw) = c.pins().await?;
            if json {
                println!("{raw}");
            } else {
                for p in pins {
                    println!(
                        "{} {}..{} {}",
                        p.cid, p.replication_min, p.replication_max, p.name
                    );
                }
            }
        }
        PinCommand::Status { cid, json } => {
            let (p, raw) = c.pin(&cid).await?;
            if json {
                println!("{raw}");
            } else {
                print!("{}", render_pin(&p));
            }
        }
    }
    Ok(())
}

pub fn render_pin(p: &PinView) -> String {
    let mut out = format!(
        "cid          {}\nname         {}\nreplication  {}..{}\n",
        p.cid, p.name, p.replication_min, p.replication_max
    );
    if let Some(list) = &p.allocation {
        out.push_str(&format!("allocation   peer list {list}\n"));
    }
    if let Some(w) = &p.allocation_warning {
        out.push_str(&format!("WARNING      {w}\n"));
    }
    match (&p.peers, &p.peers_error) {
        (Some(peers), _) if peers.is_empty() => out.push_str("peers        none yet\n"),
        (Some(peers), _) => {
            out.push_str("peers\n");
            for (id, st) in peers {
                match &st.error {
                    Some(e) => out.push_str(&format!("  {id}  {}: {e}\n", st.state)),
                    None => out.push_str(&format!("  {id}  {}\n", st.state)),
                }
            }
        }
        (None, Some(e)) => out.push_str(&format!("peers        unknown ({e})\n")),
        (None, None) => {}
    }
    out
}

fn pinned_count(p: &PinView) -> usize {
    p.peers
        .as_ref()
        .map_or(0, |m| m.values().filter(|s| s.state == "pinned").count())
}

/// The pin is durable in the pinset, but the cluster cannot hold
/// `replication_min` copies now (exit status 3): the leader adds the rest
/// as masters and workers join.
#[derive(Debug, thiserror::Error)]
#[error("{cid}: {pinned} of {want} copies; {why}")]
pub struct UnderReplicated {
    pub cid: String,
    pub pinned: usize,
    pub want: usize,
    pub why: String,
}

/// Live masters and workers, this node included: who can hold copies now.
async fn holders_now(c: &Client) -> anyhow::Result<usize> {
    let (s, _) = c.status().await?;
    let others = s
        .peers
        .iter()
        .filter(|p| p.healthy && p.role.can_lead())
        .count();
    Ok(others + usize::from(s.role.can_lead()))
}

/// Polls the pin until `replication_min` holders have it pinned, printing
/// each change of the count; an error after `timeout`. A cluster with
/// fewer live masters and workers than that is said at once; once the
/// copies it can hold are pinned, [`UnderReplicated`].
async fn wait_pinned(c: &Client, p: &PinView, wait: WaitArgs) -> anyhow::Result<PinView> {
    let mut want = usize::from(p.replication_min);
    let deadline = Instant::now() + Duration::from_secs(wait.timeout);
    let mut shown = None;
    let mut short: Option<String> = None;
    if let Some(w) = c
        .pin(&p.cid)
        .await
        .ok()
        .and_then(|(v, _)| v.allocation_warning)
    {
        short = Some(w);
        want = 0;
    } else {
        let holders = holders_now(c).await?;
        if holders < want {
            short = Some(format!(
                "the cluster has {holders} live master(s) and worker(s); the other copies \
                 follow as nodes join (`pin status {}` shows them)",
                p.cid
            ));
            want = holders;
        }
    }
    if let Some(why) = &short {
        eprintln!(
            "cannot reach {} copies now: {why}; waiting for {want}",
            p.replication_min
        );
    }
    loop {
        let view = match c.pin(&p.cid).await {
            Ok((v, _)) => Some(v),
            // The node may be between leaders: keep asking until the deadline.
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting: {e}");
                None
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(view) = view {
            let n = pinned_count(&view);
            if shown != Some(n) {
                println!("{n}/{want} pinned");
                shown = Some(n);
            }
            if n >= want {
                return match short {
                    None => Ok(view),
                    Some(why) => Err(UnderReplicated {
                        cid: p.cid.clone(),
                        pinned: n,
                        want: usize::from(p.replication_min),
                        why,
                    }
                    .into()),
                };
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "{}: {}/{want} holders after {} s",
                p.cid,
                shown.unwrap_or(0),
                wait.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `add FILE`: into this node's IPFS (pinned there, so it is safe until
/// the cluster has it), then into the cluster pinset. With `--wait`, once
/// the holders have it, the local pin is dropped unless this node is one.
pub async fn add(args: &NodeArgs, a: AddArgs) -> anyhow::Result<()> {
    let meta = std::fs::metadata(&a.path).with_context(|| format!("{}", a.path.display()))?;
    if !meta.is_file() {
        bail!(
            "{}: not a regular file (directories are not supported)",
            a.path.display()
        );
    }
    let c = client(args)?;
    let (status, _) = c.status().await?;
    let api = match (&status.ipfs.api, status.ipfs.is_ready()) {
        (Some(api), true) => api.clone(),
        _ => bail!(
            "this node's IPFS is not ready (state {}, mode {})",
            status.ipfs.state,
            status.ipfs.mode
        ),
    };
    let ipfs = IpfsClient::new(api);
    let added = ipfs.add_file(&a.path).await?;
    println!("added {} ({} bytes)", added.hash, meta.len());
    let req = PinRequest {
        cid: added.hash.clone(),
        replication_min: a.replication.or(a.replication_min),
        replication_max: a.replication.or(a.replication_max),
        name: a.name.or_else(|| Some(added.name.clone())),
        peers: a.peers,
    };
    let (p, _) = c.pin_add(&req).await?;
    println!(
        "pinned {} cluster-wide (replication {}..{})",
        p.cid, p.replication_min, p.replication_max
    );
    if !a.wait.wait {
        return Ok(());
    }
    let done = wait_pinned(&c, &p, a.wait).await?;
    let holds_it = done
        .peers
        .as_ref()
        .is_some_and(|m| m.contains_key(&status.peer_id));
    if !holds_it {
        // The cluster's copies are in place; ours was only a stopgap.
        ipfs.pin_rm(&p.cid).await?;
    }
    Ok(())
}
