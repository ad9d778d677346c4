//! `block/put`, `block/get`, `block/stat`, `block/rm` and `dag/get`, with
//! kubo's options, bodies and headers.

use axum::extract::{Multipart, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use serde_json::json;

use super::files::fetch_mode;
use super::query::{Opt, Query};
use super::{Shared, ndjson};
use crate::Error;
use crate::engine::{PutAs, codec_named, parse_cid};

/// kubo's limit for a block (bitswap's): larger ones could not be exchanged.
const MAX_BLOCK: usize = 2 * 1024 * 1024;

/// Every option kubo's `block put` defines, and the ones kubo-rpc-client's
/// types add (kubo ignores those).
const PUT_OPTIONS: &[(&str, Opt)] = &[
    ("cid-codec", Opt::Honoured),
    ("mhtype", Opt::Honoured),
    ("mhlen", Opt::Honoured),
    ("pin", Opt::Honoured),
    ("format", Opt::Honoured),
    ("f", Opt::Honoured),
    ("allow-big-block", Opt::OnlyDefault("false")),
    ("version", Opt::Harmless),
    ("verbose", Opt::Harmless),
];

/// The CID options of `block/put`: codec and version.
fn put_as(q: &Query) -> Result<PutAs, Error> {
    let codec_name = q.get("cid-codec").filter(|c| !c.is_empty());
    let format = q.get("format").or(q.get("f")).filter(|f| !f.is_empty());
    let unknown = |what: &str, name: &str| {
        Error::BadArg(format!(
            "{what} {name:?} is not supported by the built-in engine \
             (raw, dag-pb, dag-cbor or dag-json)"
        ))
    };
    let (codec, v0) = match (format, codec_name) {
        (Some(_), Some(c)) if c != "raw" => {
            return Err(Error::BadArg(
                "unable to use \"format\" (deprecated) and a custom \"cid-codec\" at the same time"
                    .into(),
            ));
        }
        (Some("v0"), _) => (0x70, true),
        (Some(f), _) => {
            let name = match f {
                "protobuf" => "dag-pb",
                "cbor" => "dag-cbor",
                f => f,
            };
            (
                codec_named(name).ok_or_else(|| unknown("format", f))?,
                false,
            )
        }
        (None, Some(c)) => (
            codec_named(c).ok_or_else(|| unknown("cid-codec", c))?,
            false,
        ),
        (None, None) => (0x55, false),
    };
    let mhtype = q
        .get("mhtype")
        .filter(|m| !m.is_empty())
        .unwrap_or("sha2-256");
    if mhtype != "sha2-256" {
        return Err(Error::BadArg(format!(
            "mhtype {mhtype:?} is not supported by the built-in engine (only sha2-256)"
        )));
    }
    match q.int("mhlen")? {
        None | Some(-1) | Some(32) => {}
        Some(n) => {
            return Err(Error::BadArg(format!(
                "mhlen {n} is not supported by the built-in engine (sha2-256 is 32 bytes)"
            )));
        }
    }
    Ok(PutAs {
        codec,
        v0,
        pin: q.flag("pin", false)?,
    })
}

/// `block/put`: each multipart file becomes one block; NDJSON `{"Key","Size"}`.
pub async fn put(
    State(api): State<Shared>,
    RawQuery(q): RawQuery,
    mut form: Multipart,
) -> Result<Response, Error> {
    let q = Query::parse(q);
    q.check(PUT_OPTIONS)?;
    let how = put_as(&q)?;
    let mut lines = String::new();
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| Error::BadArg(format!("malformed multipart body: {e}")))?
    {
        let mut data = BytesMut::new();
        let mut too_big = false;
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| Error::BadArg(format!("reading the upload: {e}")))?
        {
            // Read to the end before refusing: a client still sending would
            // see a reset instead of the answer.
            too_big |= data.len() + chunk.len() > MAX_BLOCK;
            if !too_big {
                data.extend_from_slice(&chunk);
            }
        }
        if too_big {
            return Err(Error::BadArg(
                "produced block is over 2MiB: big blocks can't be exchanged with other \
                 peers. consider using UnixFS for automatic chunking of bigger files"
                    .into(),
            ));
        }
        let size = data.len();
        let cid = api.engine.block_put(data.freeze(), how).await?;
        lines.push_str(&json!({ "Key": cid.to_string(), "Size": size }).to_string());
        lines.push('\n');
    }
    if lines.is_empty() {
        return Err(Error::BadArg("argument \"data\" is required".into()));
    }
    Ok(ndjson(lines))
}

/// `block/get`: the block's bytes (kubo's `application/vnd.ipld.raw`).
pub async fn get(State(api): State<Shared>, RawQuery(q): RawQuery) -> Result<Response, Error> {
    let q = Query::parse(q);
    let cid = parse_cid(q.one_arg("cid")?)?;
    let data = api.engine.block_get(cid, fetch_mode(&q)?).await?;
    Ok(raw_output(data, "application/vnd.ipld.raw"))
}

/// `block/stat`: `{"Key","Size"}`, fetching the block if needed (as kubo).
pub async fn stat(State(api): State<Shared>, RawQuery(q): RawQuery) -> Result<Response, Error> {
    let q = Query::parse(q);
    let cid = parse_cid(q.one_arg("cid")?)?;
    let data = api.engine.block_get(cid, fetch_mode(&q)?).await?;
    Ok(axum::Json(json!({ "Key": cid.to_string(), "Size": data.len() })).into_response())
}

/// `block/rm`: one NDJSON line per CID, `{"Hash"}` when removed and
/// `{"Hash","Error"}` when not (kubo omits an empty `Error`); `quiet` leaves
/// out the removed ones, `force` lets an absent block pass.
pub async fn rm(State(api): State<Shared>, RawQuery(q): RawQuery) -> Result<Response, Error> {
    let q = Query::parse(q);
    let cids = q.some_cids("cid")?;
    let force = q.flag("force", false)? || q.flag("f", false)?;
    let quiet = q.flag("quiet", false)? || q.flag("q", false)?;
    let mut lines = String::new();
    for cid in cids {
        let line = match api.engine.block_rm(cid, force).await? {
            Ok(()) if quiet => continue,
            Ok(()) => json!({ "Hash": cid.to_string() }),
            Err(why) => json!({ "Hash": cid.to_string(), "Error": why.0 }),
        };
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    Ok(ndjson(lines))
}

/// `dag/get`: one node, re-encoded as `output-codec` (default dag-json, as
/// go-ipld-prime writes it: sorted keys, `{"/":cid}` links,
/// `{"/":{"bytes":...}}` bytes).
pub async fn dag_get(State(api): State<Shared>, RawQuery(q): RawQuery) -> Result<Response, Error> {
    let q = Query::parse(q);
    let cid = parse_cid(q.one_arg("ref")?)?;
    let name = q
        .get("output-codec")
        .filter(|c| !c.is_empty())
        .unwrap_or("dag-json");
    let codec = codec_named(name).ok_or_else(|| {
        Error::BadArg(format!(
            "output-codec {name:?} is not supported by the built-in engine \
             (dag-json, dag-cbor, or the node's own codec)"
        ))
    })?;
    let data = api.engine.dag_get(cid, codec, fetch_mode(&q)?).await?;
    Ok(raw_output(Bytes::from(data), "text/plain"))
}

/// A whole answer sent as kubo sends a reader's output.
fn raw_output(data: Bytes, content_type: &'static str) -> Response {
    let mut r = data.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("X-Stream-Output", HeaderValue::from_static("1"));
    h.insert(header::TRAILER, HeaderValue::from_static("X-Stream-Error"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Query {
        Query::parse(Some(s.to_string()))
    }

    #[test]
    fn cid_options_follow_kubo() {
        let p = |s: &str| put_as(&q(s)).map(|p| (p.codec, p.v0, p.pin));
        assert_eq!(p("").unwrap(), (0x55, false, false));
        assert_eq!(p("cid-codec=dag-pb&pin=true").unwrap(), (0x70, false, true));
        assert_eq!(p("cid-codec=dag-cbor").unwrap(), (0x71, false, false));
        assert_eq!(p("format=v0").unwrap(), (0x70, true, false));
        assert_eq!(p("format=protobuf").unwrap(), (0x70, false, false));
        assert_eq!(
            p("format=cbor&cid-codec=raw").unwrap(),
            (0x71, false, false)
        );
        assert_eq!(p("mhtype=sha2-256&mhlen=-1").unwrap(), (0x55, false, false));
        assert!(p("format=cbor&cid-codec=dag-pb").is_err());
        assert!(p("cid-codec=git-raw").is_err());
        assert!(p("mhtype=blake3").is_err());
        assert!(p("mhlen=20").is_err());
        assert!(
            q("cid-codec=raw&allow-big-block=true")
                .check(PUT_OPTIONS)
                .is_err()
        );
        assert!(q("cid-kodec=raw").check(PUT_OPTIONS).is_err());
    }
}
