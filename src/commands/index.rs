//! `index ...`: the cluster's indexes through a running node's control API.
//! Output is the API's JSON with `--json`, else short lines; imports read
//! JSON Lines from a file or stdin and send them in parts, with progress on
//! stderr.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};

use super::client;
use crate::api::Client;
use crate::cli::NodeArgs;
use crate::cli::index::{
    GraphCommand, IndexCommand, MetaCommand, PatternArgs, PeersListCommand, TripleArgs,
    VectorsCommand,
};

/// Lines an import sends per request.
const IMPORT_PART: usize = 1000;

pub async fn run(args: &NodeArgs, cmd: IndexCommand) -> anyhow::Result<()> {
    let c = client(args)?;
    match cmd {
        IndexCommand::Status { json } => {
            let (v, raw) = c.json(Method::GET, "/v1/index", None).await?;
            print(json, &raw, || {
                format!(
                    "{} vectors in {} collections, {} triples, {} metadata documents, {} peer lists\n\
                     replica: {} changes seen (digest {}), in sync with {} of {} members\n",
                    v["vectors"],
                    v["collections"],
                    v["triples"],
                    v["documents"],
                    v["peer_lists"],
                    v["changes"],
                    v["digest"].as_str().unwrap_or(""),
                    v["in_sync_with"],
                    v["members"]
                )
            });
        }
        IndexCommand::Vectors(cmd) => vectors(&c, cmd).await?,
        IndexCommand::Graph(cmd) => graph(&c, cmd).await?,
        IndexCommand::Meta(cmd) => meta(&c, cmd).await?,
        IndexCommand::Peers(cmd) => peers(&c, cmd).await?,
    }
    Ok(())
}

fn print(json: bool, raw: &str, human: impl FnOnce() -> String) {
    if json {
        println!("{raw}");
    } else {
        print!("{}", human());
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

fn parse_json(what: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{what} is not valid JSON: {text:?}"))
}

/// A path segment, percent-encoded (item keys may hold `/`, `?`, spaces).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn wrote(v: &Value) -> String {
    format!(
        "{} records written, on {} nodes\n",
        v["written"], v["copies"]
    )
}

async fn vectors(c: &Client, cmd: VectorsCommand) -> anyhow::Result<()> {
    const BASE: &str = "/v1/index/embeddings";
    match cmd {
        VectorsCommand::Create { name, dim, metric } => {
            let body = json!({ "dim": dim, "metric": metric });
            let (v, _) = c
                .json(Method::PUT, &format!("{BASE}/{}", seg(&name)), Some(body))
                .await?;
            if v["created"] == json!(true) {
                println!(
                    "created {name} (dim {dim}, {metric}), on {} nodes",
                    v["copies"]
                );
            } else {
                println!("{name} exists already with that definition");
            }
        }
        VectorsCommand::Ls(j) => {
            let (v, raw) = c.json(Method::GET, BASE, None).await?;
            print(j.json, &raw, || {
                let mut out = String::new();
                for col in v.as_array().into_iter().flatten() {
                    out += &format!(
                        "{} dim {} {} {} items\n",
                        col["name"].as_str().unwrap_or(""),
                        col["dim"],
                        col["metric"].as_str().unwrap_or(""),
                        col["items"]
                    );
                }
                out
            });
        }
        VectorsCommand::Show { name, json } => {
            let (v, raw) = c
                .json(Method::GET, &format!("{BASE}/{}", seg(&name)), None)
                .await?;
            print(json.json, &raw, || pretty(&v));
        }
        VectorsCommand::Drop { name } => {
            let (v, _) = c
                .json(Method::DELETE, &format!("{BASE}/{}", seg(&name)), None)
                .await?;
            print!("{}", wrote(&v));
        }
        VectorsCommand::Put {
            collection,
            key,
            vector,
            meta,
        } => {
            let mut item = json!({ "key": key, "vector": parse_json("--vector", &vector)? });
            if let Some(m) = meta {
                item["meta"] = parse_json("--meta", &m)?;
            }
            let path = format!("{BASE}/{}/items", seg(&collection));
            let (v, _) = c
                .json(Method::POST, &path, Some(json!({ "items": [item] })))
                .await?;
            print!("{}", wrote(&v));
        }
        VectorsCommand::Get { collection, key } => {
            let path = format!("{BASE}/{}/items/{}", seg(&collection), seg(&key));
            let (v, _) = c.json(Method::GET, &path, None).await?;
            print!("{}", pretty(&v));
        }
        VectorsCommand::Rm { collection, key } => {
            let path = format!("{BASE}/{}/items/{}", seg(&collection), seg(&key));
            let (v, _) = c.json(Method::DELETE, &path, None).await?;
            print!("{}", wrote(&v));
        }
        VectorsCommand::Search {
            collection,
            vector,
            k,
            filter,
            mode,
            json,
        } => {
            let mut body =
                json!({ "vector": parse_json("--vector", &vector)?, "k": k, "mode": mode });
            if let Some(f) = filter {
                body["filter"] = parse_json("--filter", &f)?;
            }
            let path = format!("{BASE}/{}/search", seg(&collection));
            let (v, raw) = c.json(Method::POST, &path, Some(body)).await?;
            print(json.json, &raw, || {
                let mut out = format!("{} search\n", v["method"].as_str().unwrap_or(""));
                for h in v["hits"].as_array().into_iter().flatten() {
                    out += &format!(
                        "{:.6} {}\n",
                        h["score"].as_f64().unwrap_or(f64::NAN),
                        h["key"].as_str().unwrap_or("")
                    );
                }
                out
            });
        }
        VectorsCommand::Import { collection, file } => {
            import(c, &format!("{BASE}/{}/import", seg(&collection)), &file).await?;
        }
        VectorsCommand::Export { collection } => {
            export(c, &format!("{BASE}/{}/export", seg(&collection))).await?;
        }
    }
    Ok(())
}

fn term(text: &str, literal: bool, datatype: Option<&str>, lang: Option<&str>) -> Value {
    if literal {
        json!({ "literal": { "value": text, "datatype": datatype, "lang": lang } })
    } else {
        json!(text)
    }
}

fn triple(t: &TripleArgs) -> Value {
    json!({
        "s": t.s,
        "p": t.p,
        "o": term(&t.o, t.literal, t.datatype.as_deref(), t.lang.as_deref()),
        "graph": t.graph,
    })
}

fn pattern(p: &PatternArgs) -> Value {
    json!({
        "s": p.s,
        "p": p.p,
        "o": p.o.as_deref().map(|o| term(o, p.literal, None, None)),
        "graph": p.graph,
    })
}

fn show_term(t: &Value) -> String {
    if let Some(i) = t.get("iri").and_then(Value::as_str) {
        format!("<{i}>")
    } else if let Some(c) = t.get("cid").and_then(Value::as_str) {
        c.to_owned()
    } else if let Some(l) = t.get("literal") {
        let mut s = format!("{:?}", l["value"].as_str().unwrap_or(""));
        if let Some(d) = l["datatype"].as_str() {
            s += &format!("^^<{d}>");
        }
        if let Some(g) = l["lang"].as_str() {
            s += &format!("@{g}");
        }
        s
    } else {
        t.to_string()
    }
}

fn show_triples(v: &Value) -> String {
    let mut out = String::new();
    for t in v.as_array().into_iter().flatten() {
        out += &format!(
            "{} <{}> {}",
            show_term(&t["s"]),
            t["p"].as_str().unwrap_or(""),
            show_term(&t["o"])
        );
        if let Some(g) = t["graph"].as_str() {
            out += &format!(" <{g}>");
        }
        out += "\n";
    }
    out
}

async fn graph(c: &Client, cmd: GraphCommand) -> anyhow::Result<()> {
    const BASE: &str = "/v1/index/graph";
    match cmd {
        GraphCommand::Add(t) => {
            let (v, _) = c
                .json(
                    Method::POST,
                    &format!("{BASE}/triples"),
                    Some(json!({ "add": [triple(&t)] })),
                )
                .await?;
            print!("{}", wrote(&v));
        }
        GraphCommand::Rm(t) => {
            let (v, _) = c
                .json(
                    Method::POST,
                    &format!("{BASE}/triples"),
                    Some(json!({ "remove": [triple(&t)] })),
                )
                .await?;
            print!("{}", wrote(&v));
        }
        GraphCommand::Query {
            pattern: p,
            paging,
            json,
        } => {
            let body =
                json!({ "pattern": pattern(&p), "after": paging.after, "limit": paging.limit });
            let (v, raw) = c
                .json(Method::POST, &format!("{BASE}/query"), Some(body))
                .await?;
            print(json.json, &raw, || {
                let mut out = show_triples(&v["triples"]);
                if let Some(n) = v["next"].as_str() {
                    out += &format!("(more: --after {n})\n");
                }
                out
            });
        }
        GraphCommand::Count { pattern: p } => {
            let (v, _) = c
                .json(Method::POST, &format!("{BASE}/count"), Some(pattern(&p)))
                .await?;
            println!("{}", v["count"]);
        }
        GraphCommand::Neighbours {
            node,
            depth,
            predicates,
            limit,
            json,
        } => {
            let body = json!({
                "node": node, "depth": depth, "limit": limit,
                "predicates": (!predicates.is_empty()).then_some(predicates),
            });
            let (v, raw) = c
                .json(Method::POST, &format!("{BASE}/neighbourhood"), Some(body))
                .await?;
            print(json.json, &raw, || {
                let mut out = show_triples(&v["triples"]);
                if v["truncated"] == json!(true) {
                    out += "(truncated: raise --limit)\n";
                }
                out
            });
        }
        GraphCommand::Stats => {
            let (v, _) = c.json(Method::GET, &format!("{BASE}/stats"), None).await?;
            print!("{}", pretty(&v));
        }
        GraphCommand::Import { file } => import(c, &format!("{BASE}/import"), &file).await?,
        GraphCommand::Export => export(c, &format!("{BASE}/export")).await?,
    }
    Ok(())
}

async fn meta(c: &Client, cmd: MetaCommand) -> anyhow::Result<()> {
    const BASE: &str = "/v1/index/metadata";
    match cmd {
        MetaCommand::Put { cid, doc } => {
            let (v, _) = c
                .json(
                    Method::PUT,
                    &format!("{BASE}/{}", seg(&cid)),
                    Some(parse_json("the document", &doc)?),
                )
                .await?;
            print!("{}", wrote(&v));
        }
        MetaCommand::Merge { cid, doc } => {
            let (v, _) = c
                .json(
                    Method::PATCH,
                    &format!("{BASE}/{}", seg(&cid)),
                    Some(parse_json("the document", &doc)?),
                )
                .await?;
            print!("{}", wrote(&v));
        }
        MetaCommand::Get { cid } => {
            let (v, _) = c
                .json(Method::GET, &format!("{BASE}/{}", seg(&cid)), None)
                .await?;
            print!("{}", pretty(&v));
        }
        MetaCommand::Rm { cid } => {
            let (v, _) = c
                .json(Method::DELETE, &format!("{BASE}/{}", seg(&cid)), None)
                .await?;
            print!("{}", wrote(&v));
        }
        MetaCommand::Find {
            field,
            value,
            tag,
            name_prefix,
            paging,
            json,
        } => {
            let mut q = vec![format!("limit={}", paging.limit)];
            let pairs = [
                ("field", field),
                ("value", value),
                ("tag", tag),
                ("name_prefix", name_prefix),
                ("after", paging.after),
            ];
            for (k, v) in pairs {
                if let Some(v) = v {
                    q.push(format!("{k}={}", seg(&v)));
                }
            }
            let (v, raw) = c
                .json(Method::GET, &format!("{BASE}?{}", q.join("&")), None)
                .await?;
            print(json.json, &raw, || {
                let mut out = String::new();
                for item in v["items"].as_array().into_iter().flatten() {
                    out += &format!("{} {}\n", item[0].as_str().unwrap_or(""), item[1]);
                }
                if let Some(n) = v["next"].as_str() {
                    out += &format!("(more: --after {n})\n");
                }
                out
            });
        }
        MetaCommand::Import { file } => import(c, &format!("{BASE}/import"), &file).await?,
        MetaCommand::Export => export(c, &format!("{BASE}/export")).await?,
    }
    Ok(())
}

async fn peers(c: &Client, cmd: PeersListCommand) -> anyhow::Result<()> {
    const BASE: &str = "/v1/index/peers";
    let (v, raw) = match cmd {
        PeersListCommand::Ls(j) => {
            let (v, raw) = c.json(Method::GET, BASE, None).await?;
            print(j.json, &raw, || {
                let mut out = String::new();
                for l in v.as_array().into_iter().flatten() {
                    let peers: Vec<&str> = l["peers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    out += &format!(
                        "{} ({}): {}\n",
                        l["name"].as_str().unwrap_or(""),
                        peers.len(),
                        peers.join(" ")
                    );
                }
                out
            });
            return Ok(());
        }
        PeersListCommand::Show { list } => {
            c.json(Method::GET, &format!("{BASE}/{}", seg(&list)), None)
                .await?
        }
        PeersListCommand::Set { list, peers } => {
            c.json(
                Method::PUT,
                &format!("{BASE}/{}", seg(&list)),
                Some(json!({ "peers": peers })),
            )
            .await?
        }
        PeersListCommand::Add { list, peer } => {
            c.json(
                Method::PUT,
                &format!("{BASE}/{}/{}", seg(&list), seg(&peer)),
                None,
            )
            .await?
        }
        PeersListCommand::Rm {
            list,
            peer: Some(peer),
        } => {
            c.json(
                Method::DELETE,
                &format!("{BASE}/{}/{}", seg(&list), seg(&peer)),
                None,
            )
            .await?
        }
        PeersListCommand::Rm { list, peer: None } => {
            c.json(Method::DELETE, &format!("{BASE}/{}", seg(&list)), None)
                .await?
        }
    };
    if v.get("written").is_some() {
        print!("{}", wrote(&v));
    } else {
        println!("{raw}");
    }
    Ok(())
}

/// Sends a JSON Lines file (or stdin for `-`) in parts, showing progress.
async fn import(c: &Client, path: &str, file: &Path) -> anyhow::Result<()> {
    let input: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("{}", file.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let started = Instant::now();
    let (mut sent, mut part) = (0usize, String::new());
    let mut lines = input.lines();
    loop {
        let mut n = 0;
        part.clear();
        for line in lines.by_ref() {
            let line = line.context("reading the input")?;
            if line.trim().is_empty() {
                continue;
            }
            part.push_str(&line);
            part.push('\n');
            n += 1;
            if n == IMPORT_PART {
                break;
            }
        }
        if n == 0 {
            break;
        }
        if let Err(e) = c.post_lines(path, part.clone()).await {
            bail!("after {sent} lines imported: {e}");
        }
        sent += n;
        let rate = sent as f64 / started.elapsed().as_secs_f64().max(1e-3);
        eprint!("\rimported {sent} lines ({rate:.0}/s)");
        let _ = std::io::stderr().flush();
    }
    eprintln!();
    println!(
        "imported {sent} lines in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn export(c: &Client, path: &str) -> anyhow::Result<()> {
    let text = c.text(path).await?;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}
