//! The walk-through: a five-node cluster on one machine, taken through what
//! the product promises, each step checked rather than assumed. A step that
//! does not hold stops the walk with an error saying which.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::nodes::{Node, NodeSpec, free_base, say_cmd, wait};

/// The cluster of the original system's example.
const NAMES: [(&str, &str); 5] = [
    ("master-primary", "master"),
    ("master-secondary", "master"),
    ("worker-alpha", "worker"),
    ("worker-beta", "worker"),
    ("leecher-gamma", "leecher"),
];
const PRIMARY: usize = 0;
const SECONDARY: usize = 1;
const ALPHA: usize = 2;
const BETA: usize = 3;
const GAMMA: usize = 4;

/// Copies the example's file asks for.
const REPLICATION: usize = 3;

/// How long any one step may take before the walk gives up (generous: a
/// debug build on a busy two-core machine).
const STEP: Duration = Duration::from_secs(120);

pub struct Options {
    /// The `ipfs-kit-p2p` binary.
    pub bin: PathBuf,
    /// Where the nodes' data directories go (must not exist, or be empty).
    pub dir: PathBuf,
    /// The first port to try; each node takes a block of ten above it.
    pub base_port: u16,
    /// Keep the data directories (and logs) afterwards.
    pub keep: bool,
}

/// What the walk measured, for whoever runs it (the test checks these).
#[derive(Debug, Default)]
pub struct Report {
    pub cid: String,
    /// Holders of the file before the primary died, and after the cluster healed.
    pub holders_before: Vec<String>,
    pub holders_after: Vec<String>,
    /// What the leecher answered to a write.
    pub leecher_refusal: String,
    /// From the SIGKILL of the leader until every survivor followed its successor.
    pub failover_ms: u64,
    /// From the primary's restart until every node followed it again.
    pub failback_ms: u64,
    pub vector_hits: usize,
    pub pinning_status: String,
    pub metrics_lines: usize,
    /// Exit statuses of the graceful stops (0 expected for all).
    pub stop_codes: Vec<Option<i32>>,
}

pub async fn run(opts: Options) -> Result<Report, String> {
    if opts.dir.exists()
        && std::fs::read_dir(&opts.dir)
            .map_err(|e| format!("{}: {e}", opts.dir.display()))?
            .next()
            .is_some()
    {
        return Err(format!(
            "{} exists and is not empty: give another --dir",
            opts.dir.display()
        ));
    }
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let result = walk(&opts).await;
    match &result {
        Ok(_) if !opts.keep => {
            let _ = std::fs::remove_dir_all(&opts.dir);
        }
        Ok(_) => println!("\nData directories and logs kept in {}", opts.dir.display()),
        Err(_) => println!(
            "\nThe walk stopped; each node's log is in {}/<name>/node.log",
            opts.dir.display()
        ),
    }
    result
}

async fn walk(opts: &Options) -> Result<Report, String> {
    let mut report = Report::default();
    let base = free_base(opts.base_port, NAMES.len())?;

    // ── 1. The election ────────────────────────────────────────────────
    step(1, "Five nodes, and a leader elected with no coordinator");
    println!(
        "  Each node gets its own data directory, built-in IPFS and a block of ten\n  \
         ports from {base} (swarm, IPFS swarm +1, API +5, IPFS API +6), all on 127.0.0.1."
    );
    let mut specs: Vec<NodeSpec> = NAMES
        .iter()
        .enumerate()
        .map(|(i, (name, role))| NodeSpec {
            name,
            role,
            dir: opts.dir.join(name),
            base: base + 10 * i as u16,
        })
        .collect();
    name_the_primary(&mut specs, &opts.bin)?;
    let mut nodes: Vec<Node> = Vec::new();
    for spec in specs {
        let bootstrap = nodes.first().map(Node::addr);
        let node = Node::start(spec, &opts.bin, bootstrap.as_deref()).await?;
        println!("  {} is up: {}", node.spec.name, node.peer_id);
        nodes.push(node);
    }
    let all: Vec<usize> = (0..nodes.len()).collect();
    agree_on(&mut nodes, &all, PRIMARY).await?;
    println!(
        "  Every node follows master-primary: the live master with the lowest peer ID.\n  \
         Leechers never lead; workers would only if no master were left."
    );
    show(&nodes[GAMMA].cli_ok(&["status"])?);

    // ── 2. Replication ─────────────────────────────────────────────────
    step(2, "A real file, replicated to its factor");
    let file = opts.dir.join("report.txt");
    let content = sample_file();
    std::fs::write(&file, &content).map_err(|e| e.to_string())?;
    println!(
        "  {} ({} bytes) is added on worker-alpha and pinned cluster-wide with {REPLICATION} copies:",
        file.display(),
        content.len()
    );
    let out = nodes[ALPHA].cli_ok(&[
        "add",
        &file.display().to_string(),
        "--replication",
        &REPLICATION.to_string(),
        "--name",
        "report.txt",
        "--wait",
        "--timeout",
        "120",
    ])?;
    show(&out);
    let cid = out
        .lines()
        .find_map(|l| l.strip_prefix("added ")?.split_whitespace().next())
        .ok_or_else(|| format!("add printed no CID: {out}"))?
        .to_string();
    report.cid = cid.clone();
    let holders = pinned_holders(&nodes, &cid, REPLICATION).await?;
    show(&nodes[GAMMA].cli_ok(&["pin", "status", &cid])?);
    for h in &holders {
        let node = by_peer(&nodes, h)?;
        let pins = node
            .ipfs(&format!("pin/ls?arg={cid}&type=recursive"))
            .await?;
        if pins["Keys"].get(&cid).is_none() {
            return Err(format!(
                "{} says pinned but its IPFS has no pin of {cid}",
                node.spec.name
            ));
        }
    }
    report.holders_before = names(&nodes, &holders);
    println!(
        "  Held on {} (checked on each one's own IPFS with pin/ls).",
        report.holders_before.join(", ")
    );
    let got = nodes[GAMMA].ipfs_cat(&cid).await?;
    if got != content {
        return Err("leecher-gamma's IPFS read back other bytes than the file's".into());
    }
    println!(
        "  leecher-gamma holds no copy, yet its IPFS reads the file back byte for byte over bitswap."
    );

    // ── 3. A leecher refuses writes ────────────────────────────────────
    step(3, "A leecher reads, but never writes");
    let out = nodes[GAMMA].cli(&["pin", "rm", &cid])?;
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status.success() {
        return Err("leecher-gamma accepted a write".into());
    }
    show(&said);
    report.leecher_refusal = said;
    if !nodes[SECONDARY].cli_ok(&["pin", "ls"])?.contains(&cid) {
        return Err("the refused removal changed the pinset".into());
    }
    println!("  The pin is untouched everywhere.");

    // ── 4. The indexes ─────────────────────────────────────────────────
    step(4, "The indexes: written on masters, read on every node");
    let m = &nodes[PRIMARY];
    m.cli_ok(&["index", "vectors", "create", "docs", "--dim", "3"])?;
    for (key, v, what) in [
        ("report", "[0.9, 0.1, 0.0]", "report"),
        ("notes", "[0.7, 0.7, 0.1]", "notes"),
        ("photo", "[0.0, 0.1, 0.9]", "image"),
    ] {
        m.cli_ok(&[
            "index",
            "vectors",
            "put",
            "docs",
            key,
            "--vector",
            v,
            "--meta",
            &json!({ "kind": what }).to_string(),
        ])?;
    }
    m.cli_ok(&[
        "index",
        "meta",
        "put",
        &cid,
        &json!({ "name": "report.txt", "tags": ["example"] }).to_string(),
    ])?;
    println!("  leecher-gamma searches its own replica (once it has caught up):");
    let gamma = &nodes[GAMMA];
    let hits = wait(
        STEP,
        "leecher-gamma's replica has the vectors",
        || async move {
            let out = gamma.cli_quiet(&[
                "index",
                "vectors",
                "search",
                "docs",
                "--vector",
                "[1, 0, 0]",
                "--k",
                "2",
                "--json",
            ]);
            Ok(out
                .ok()
                .and_then(|o| serde_json::from_str::<Value>(&o).ok())
                .filter(|v| hits_of(v).len() == 2))
        },
    )
    .await?;
    say_cmd(&format!(
        "ipfs-kit-p2p --api {} index vectors search docs --vector '[1, 0, 0]' --k 2 --json",
        nodes[GAMMA].spec.api()
    ));
    show(&serde_json::to_string_pretty(&hits).unwrap_or_default());
    let keys = hits_of(&hits);
    if keys.first().map(String::as_str) != Some("report") {
        return Err(format!(
            "the nearest vector to [1,0,0] should be 'report', got {keys:?}"
        ));
    }
    report.vector_hits = keys.len();
    let c = cid.as_str();
    let meta = wait(STEP, "leecher-gamma has the metadata", || async move {
        Ok(gamma
            .cli_quiet(&["index", "meta", "get", c])
            .ok()
            .filter(|t| t.contains("report.txt")))
    })
    .await?;
    say_cmd(&format!(
        "ipfs-kit-p2p --api {} index meta get {cid}",
        nodes[GAMMA].spec.api()
    ));
    show(&meta);
    let out = nodes[ALPHA].cli(&["index", "vectors", "rm", "docs", "photo"])?;
    if out.status.success() {
        return Err("worker-alpha wrote to an index".into());
    }
    println!("  A worker may not write them either:");
    show(String::from_utf8_lossy(&out.stderr).trim());

    // ── 5. The IPFS Pinning Service API ────────────────────────────────
    step(
        5,
        "The IPFS Pinning Service API (what `ipfs pin remote` speaks)",
    );
    let note = b"A note that starts in worker-beta's IPFS only.\n".to_vec();
    let note_cid = nodes[BETA].ipfs_add(&note).await?;
    let beta_ipfs = nodes[BETA].ipfs("id").await?;
    let origin = format!(
        "/ip4/127.0.0.1/tcp/{}/p2p/{}",
        nodes[BETA].spec.base + 1,
        beta_ipfs["ID"].as_str().unwrap_or_default()
    );
    let body = json!({ "cid": note_cid, "name": "note.txt", "origins": [origin] });
    say_cmd(&format!(
        "curl -X POST -H 'Authorization: Bearer TOKEN' -d '{body}' http://{}/pinning/pins",
        nodes[ALPHA].spec.api()
    ));
    let (code, answer) = nodes[ALPHA]
        .send(reqwest::Method::POST, "/pinning/pins", Some(body))
        .await?;
    if code != 202 {
        return Err(format!("POST /pinning/pins answered {code}: {answer}"));
    }
    println!("  202: {answer}");
    let id = answer["requestid"].as_str().unwrap_or_default().to_string();
    let (alpha, path) = (&nodes[ALPHA], format!("/pinning/pins/{id}"));
    let path = path.as_str();
    let status = wait(STEP, "the Pinning Service API says pinned", || async move {
        let (code, v) = alpha.send(reqwest::Method::GET, path, None).await?;
        Ok((code == 200 && v["status"] == "pinned").then_some(v))
    })
    .await?;
    say_cmd(&format!(
        "curl -H 'Authorization: Bearer TOKEN' http://{}/pinning/pins/{id}",
        nodes[ALPHA].spec.api()
    ));
    show(&serde_json::to_string_pretty(&status).unwrap_or_default());
    report.pinning_status = status["status"].as_str().unwrap_or_default().to_string();

    // ── 6. Metrics and health ──────────────────────────────────────────
    step(6, "Metrics and health, for Prometheus and load balancers");
    let leader = &nodes[PRIMARY];
    say_cmd(&format!("curl http://{}/metrics", leader.spec.api()));
    let metrics = leader.get_text("/metrics").await?;
    let picked: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            [
                "ipfs_kit_is_leader ",
                "ipfs_kit_epoch ",
                "pins ",
                "ipfs_kit_ipfs_up ",
            ]
            .iter()
            .any(|p| l.starts_with(p))
                || (l.starts_with("ipfs_kit_peers{") && !l.ends_with(" 0"))
        })
        .collect();
    show(&picked.join("\n"));
    report.metrics_lines = metrics.lines().count();
    println!(
        "  … {} lines in all, libp2p's own metrics among them.",
        report.metrics_lines
    );
    say_cmd(&format!("curl http://{}/health", leader.spec.api()));
    show(&leader.get_text("/health").await?);

    // ── 7. Failover ────────────────────────────────────────────────────
    step(7, "The primary dies (SIGKILL: no goodbye)");
    let killed_at = unix_ms();
    println!("    $ kill -9 {}", nodes[PRIMARY].pid().unwrap_or_default());
    nodes[PRIMARY].kill();
    let survivors = [SECONDARY, ALPHA, BETA, GAMMA];
    let since = agree_on(&mut nodes, &survivors, SECONDARY).await?;
    report.failover_ms = since.saturating_sub(killed_at);
    println!(
        "  Every survivor follows master-secondary {} ms after the kill (its connections\n  \
         closed at once; a machine that goes silent instead is caught by missed heartbeats).",
        report.failover_ms
    );

    // ── 8. Self-healing ────────────────────────────────────────────────
    step(8, "The cluster heals: the dead holder's copy moves");
    let live: Vec<&Node> = survivors.iter().map(|&i| &nodes[i]).collect();
    if report.holders_before.iter().any(|n| n == "master-primary") {
        println!(
            "  master-primary held a copy. The new leader builds its picture from what the live\n  \
             holders report (a dead node cannot be asked), sees two copies of three and orders\n  \
             a third at once. (A holder that dies under a running leader still counts for\n  \
             pins.grace_secs, 30 s, so a quick restart moves nothing.)"
        );
        let (gamma, live, c) = (&nodes[GAMMA], &live, cid.as_str());
        let holders = wait(STEP, "three live holders have the file", || async move {
            let h = pinned_on(gamma, c).await;
            Ok(h.filter(|h| {
                h.len() >= REPLICATION && h.iter().all(|p| live.iter().any(|n| &n.peer_id == p))
            }))
        })
        .await?;
        report.holders_after = names(&nodes, &holders);
    } else {
        println!("  master-primary held no copy of the file, so its {REPLICATION} copies stand.");
        report.holders_after = report.holders_before.clone();
    }
    show(&nodes[GAMMA].cli_ok(&["pin", "status", &cid])?);
    println!("  Held on {}.", report.holders_after.join(", "));

    // ── 9. The primary returns ─────────────────────────────────────────
    step(9, "The primary returns with its disk, and leads again");
    let spec = nodes[PRIMARY].spec.clone();
    let port = spec.ipfs_api();
    wait(
        Duration::from_secs(30),
        "the old IPFS has let go of its ports",
        || async move { Ok(std::net::TcpListener::bind(port).is_ok().then_some(())) },
    )
    .await?;
    let started = unix_ms();
    let back = Node::start(spec, &opts.bin, Some(&nodes[SECONDARY].addr())).await?;
    nodes[PRIMARY] = back;
    let since = agree_on(&mut nodes, &all, PRIMARY).await?;
    report.failback_ms = since.saturating_sub(started);
    println!(
        "  Same peer ID (its identity key is in its data directory); every node follows it\n  \
         again {} ms after it was started.",
        report.failback_ms
    );

    // ── 10. Stop ───────────────────────────────────────────────────────
    step(
        10,
        "Stopping everything (SIGTERM: each node hands over and leaves)",
    );
    for node in nodes.iter_mut().rev() {
        let st = node.stop(Duration::from_secs(30)).await;
        let code = st.and_then(|s| s.code());
        println!(
            "  {} exited with {}",
            node.spec.name,
            code.map_or("a signal".into(), |c| c.to_string())
        );
        report.stop_codes.push(code);
    }
    println!(
        "\nDone: the election, replication, refusals, indexes, the Pinning Service API,\nmetrics, failover, healing and failback, all checked on five real nodes."
    );
    Ok(report)
}

/// Makes the master with the lower peer ID `master-primary` (the election's
/// order), so the names say who leads: both identities are made first
/// (`ipfs-kit-p2p id`), and the two directories swapped if need be.
fn name_the_primary(specs: &mut [NodeSpec], bin: &std::path::Path) -> Result<(), String> {
    let id = |dir: &std::path::Path| -> Result<String, String> {
        let out = std::process::Command::new(bin)
            .arg("id")
            .arg("--data-dir")
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let (p, s) = (id(&specs[PRIMARY].dir)?, id(&specs[SECONDARY].dir)?);
    if s < p {
        let tmp = specs[PRIMARY].dir.with_extension("swap");
        std::fs::rename(&specs[PRIMARY].dir, &tmp).map_err(|e| e.to_string())?;
        std::fs::rename(&specs[SECONDARY].dir, &specs[PRIMARY].dir).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &specs[SECONDARY].dir).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Waits until every node in `who` follows `nodes[leader]`; when the last
/// of them accepted it (Unix ms, the nodes' own clocks).
async fn agree_on(nodes: &mut [Node], who: &[usize], leader: usize) -> Result<u64, String> {
    let want = nodes[leader].peer_id.clone();
    let name = nodes[leader].spec.name;
    for &i in who {
        nodes[i].exited()?;
    }
    let (nodes, want) = (&*nodes, want.as_str());
    wait(STEP, &format!("every node follows {name}"), || async move {
        let mut last = 0;
        for &i in who {
            let Some(s) = nodes[i].status().await else {
                return Ok(None);
            };
            if s["leader"]["peer_id"] != want {
                return Ok(None);
            }
            last = last.max(s["leader"]["since_unix_ms"].as_u64().unwrap_or(0));
        }
        Ok(Some(last))
    })
    .await
}

/// The holders that have the CID pinned, as the leader reports through
/// `GET /v1/pins/{cid}` on `node`.
async fn pinned_on(node: &Node, cid: &str) -> Option<Vec<String>> {
    let v = node.get_json(&format!("/v1/pins/{cid}")).await?;
    let peers = v["peers"].as_object()?;
    Some(
        peers
            .iter()
            .filter(|(_, p)| p["state"] == "pinned")
            .map(|(id, _)| id.clone())
            .collect(),
    )
}

async fn pinned_holders(nodes: &[Node], cid: &str, want: usize) -> Result<Vec<String>, String> {
    let gamma = &nodes[GAMMA];
    wait(
        STEP,
        &format!("{want} holders have {cid} pinned"),
        || async move { Ok(pinned_on(gamma, cid).await.filter(|h| h.len() >= want)) },
    )
    .await
}

fn by_peer<'a>(nodes: &'a [Node], peer: &str) -> Result<&'a Node, String> {
    nodes
        .iter()
        .find(|n| n.peer_id == peer)
        .ok_or_else(|| format!("{peer} is not one of the example's nodes"))
}

fn names(nodes: &[Node], peers: &[String]) -> Vec<String> {
    let mut v: Vec<String> = peers
        .iter()
        .map(|p| by_peer(nodes, p).map_or(p.clone(), |n| n.spec.name.to_string()))
        .collect();
    v.sort();
    v
}

fn hits_of(v: &Value) -> Vec<String> {
    v["hits"]
        .as_array()
        .or_else(|| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|h| h["key"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// About 1.2 MiB of text: several IPFS blocks, so copies really move block by block.
fn sample_file() -> Vec<u8> {
    let mut s = String::new();
    let mut i = 0u64;
    while s.len() < 1_200_000 {
        s.push_str(&format!(
            "line {i:07}: the cluster keeps this file at its replication factor through failures\n"
        ));
        i += 1;
    }
    s.into_bytes()
}

fn step(n: u32, title: &str) {
    println!("\n{n}. {title}");
}

fn show(text: &str) {
    for line in text.trim_end().lines() {
        println!("      {line}");
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
