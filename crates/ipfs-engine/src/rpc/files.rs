//! `add` and `cat`: files in and out, with kubo's options and bodies.

use axum::extract::{Multipart, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use futures::TryStreamExt;
use serde_json::json;

use super::query::{Opt, Query};
use super::{FETCH, Shared, ndjson, stream};
use crate::Error;
use crate::add::Layout;
use crate::engine::{Fetch, Keep, parse_cid};

/// Every option kubo's `add` defines (one-letter aliases too), and what the
/// engine does with it. Anything else is refused as kubo's CLI refuses it:
/// a misspelt option must not pass for a default.
const ADD_OPTIONS: &[(&str, Opt)] = &[
    ("pin", Opt::Honoured),
    ("cid-version", Opt::Honoured),
    ("raw-leaves", Opt::Honoured),
    ("chunker", Opt::Honoured),
    ("s", Opt::Honoured),
    ("hash", Opt::Honoured),
    ("only-hash", Opt::Honoured),
    ("n", Opt::Honoured),
    ("progress", Opt::Honoured),
    ("p", Opt::Honoured),
    // Output shaping kubo's CLI does after the HTTP answer.
    ("quiet", Opt::Harmless),
    ("q", Opt::Harmless),
    ("quieter", Opt::Harmless),
    ("Q", Opt::Harmless),
    ("silent", Opt::Harmless),
    // Directory walking and naming a client does before it uploads.
    ("recursive", Opt::Harmless),
    ("r", Opt::Harmless),
    ("dereference-args", Opt::Harmless),
    ("dereference-symlinks", Opt::Harmless),
    ("stdin-name", Opt::Harmless),
    ("hidden", Opt::Harmless),
    ("H", Opt::Harmless),
    ("ignore", Opt::Harmless),
    ("ignore-rules-path", Opt::Harmless),
    ("empty-dirs", Opt::Harmless),
    ("E", Opt::Harmless),
    // Limits of directory layouts (files only here), the filestore cache
    // (only with nocopy), the inline limit (only with inline), DHT announcing
    // (the engine has no DHT).
    ("max-directory-links", Opt::Harmless),
    ("max-hamt-fanout", Opt::Harmless),
    ("fscache", Opt::Harmless),
    ("inline-limit", Opt::Harmless),
    ("fast-provide-root", Opt::Harmless),
    ("fast-provide-dag", Opt::Harmless),
    ("fast-provide-wait", Opt::Harmless),
    // js-ipfs options kubo-rpc-client's types offer; kubo ignores them.
    ("preload", Opt::Harmless),
    ("block-write-concurrency", Opt::Harmless),
    ("file-import-concurrency", Opt::Harmless),
    ("enable-sharding-experiment", Opt::Harmless),
    ("shard-split-threshold", Opt::Harmless),
    ("verbose", Opt::Harmless),
    // What the engine cannot do: refused unless at kubo's default.
    ("wrap-with-directory", Opt::OnlyDefault("false")),
    ("w", Opt::OnlyDefault("false")),
    ("trickle", Opt::OnlyDefault("false")),
    ("t", Opt::OnlyDefault("false")),
    ("inline", Opt::OnlyDefault("false")),
    ("nocopy", Opt::OnlyDefault("false")),
    ("preserve-mode", Opt::OnlyDefault("false")),
    ("preserve-mtime", Opt::OnlyDefault("false")),
    ("to-files", Opt::OnlyDefault("")),
    ("pin-name", Opt::OnlyDefault("")),
    ("mode", Opt::OnlyDefault("")),
    ("mtime", Opt::OnlyDefault("")),
    ("mtime-nsecs", Opt::OnlyDefault("0")),
    ("max-file-links", Opt::OnlyDefault("174")),
];

pub async fn add(
    State(api): State<Shared>,
    RawQuery(q): RawQuery,
    form: Multipart,
) -> Result<Response, Error> {
    let q = Query::parse(q);
    q.check(ADD_OPTIONS)?;
    let hash = q
        .get("hash")
        .filter(|h| !h.is_empty())
        .unwrap_or("sha2-256");
    if hash != "sha2-256" {
        return Err(Error::BadArg(format!(
            "hash {hash:?} is not supported by the built-in engine (only sha2-256)"
        )));
    }
    let mut layout = Layout::default();
    if let Some(v) = q.get("cid-version").filter(|v| !v.is_empty()) {
        layout.cid_version = v
            .parse()
            .map_err(|_| Error::BadArg(format!("invalid cid-version {v:?}")))?;
    }
    if q.get("raw-leaves").is_some_and(|v| !v.is_empty()) {
        layout.raw_leaves = Some(q.flag("raw-leaves", false)?);
    }
    if let Some(c) = q.get("chunker").or(q.get("s")).filter(|c| !c.is_empty()) {
        layout.chunk = Layout::parse_chunker(c).map_err(Error::BadArg)?;
    }
    let keep = if q.flag("only-hash", false)? || q.flag("n", false)? {
        Keep::Nothing
    } else if q.flag("pin", true)? {
        Keep::Pinned
    } else {
        Keep::Unpinned
    };
    let progress = q.flag("progress", false)? || q.flag("p", false)?;
    let work = add_files(&api, layout, keep, progress, form);
    match q.timeout()? {
        None => work.await,
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .map_err(|_| Error::Timeout(format!("add: not done within {limit:?}")))?,
    }
}

async fn add_files(
    api: &Shared,
    layout: Layout,
    keep: Keep,
    progress: bool,
    mut form: Multipart,
) -> Result<Response, Error> {
    let mut lines = String::new();
    let mut files = 0;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| Error::BadArg(format!("malformed multipart body: {e}")))?
    {
        if field.content_type() == Some("application/x-directory") {
            return Err(Error::BadArg(
                "directories are not supported by the built-in engine".into(),
            ));
        }
        let name = field
            .file_name()
            .map(|n| n.rsplit('/').next().unwrap_or(n).to_string());
        let data = field.map_err(|e| Error::BadArg(format!("reading the upload: {e}")));
        let (root, size, written) = api.engine.add(layout, keep, data).await?;
        let hash = root.to_string();
        let name = name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| hash.clone());
        if progress {
            // kubo streams these while it reads; one at the end of each
            // file says the same to a client that counts bytes.
            lines.push_str(&json!({ "Name": name, "Bytes": written }).to_string());
            lines.push('\n');
        }
        let line = json!({ "Name": name, "Hash": hash, "Size": size.to_string() });
        lines.push_str(&line.to_string());
        lines.push('\n');
        files += 1;
    }
    if files == 0 {
        return Err(Error::BadArg("argument \"path\" is required".into()));
    }
    Ok(ndjson(lines))
}

/// `cat`: the file's bytes, or the range `offset`/`length` of them, fetched
/// block by block. Errors before the first byte are kubo's error answers;
/// after it, an `X-Stream-Error` trailer (see [`super::stream`]).
pub async fn cat(
    State(api): State<Shared>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let q = Query::parse(q);
    let cid = parse_cid(q.one_arg("ipfs-path")?)?;
    let offset = q.int("offset")?.unwrap_or(0);
    let length = q.int("length")?;
    if offset < 0 {
        return Err(Error::BadArg("cannot specify negative offset".into()));
    }
    if length.is_some_and(|l| l < 0) {
        return Err(Error::BadArg("cannot specify negative length".into()));
    }
    let fetch = fetch_mode(&q)?;
    let file = api.engine.open_file(cid, fetch).await?;
    let size = file.size();
    // kubo: an offset past the end gives nothing; the length is a maximum.
    let start = (offset as u64).min(size);
    let end = length.map_or(size, |l| start.saturating_add(l as u64).min(size));
    let mut r = stream::streamed(
        file.read(start..end),
        stream::accepts_trailers(&headers),
        "text/plain",
    );
    r.headers_mut()
        .insert("X-Content-Length", HeaderValue::from(end - start));
    Ok(r)
}

/// kubo's `offline` (alias `local`): the repo only. Otherwise bitswap, each
/// block within `timeout` (default [`FETCH`]).
pub(super) fn fetch_mode(q: &Query) -> Result<Fetch, Error> {
    if q.flag("offline", false)? || q.flag("local", false)? {
        return Ok(Fetch::Offline);
    }
    Ok(Fetch::Within(q.timeout()?.unwrap_or(FETCH)))
}
