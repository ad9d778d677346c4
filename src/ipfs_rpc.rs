//! A typed client for the IPFS RPC API (`/api/v0/…`, HTTP POST, as kubo
//! serves it): the calls the cluster needs, each with a deadline, and typed
//! errors that tell a daemon that is down from one that refused the call.

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("IPFS API at {addr} is not reachable: {message}")]
    Unreachable { addr: String, message: String },
    #[error("IPFS {call} did not answer within {after:?}")]
    Timeout { call: &'static str, after: Duration },
    /// The daemon answered with kubo's error shape (`{"Message","Code","Type"}`).
    #[error("IPFS {call} failed: {message}")]
    Rpc {
        call: &'static str,
        status: u16,
        message: String,
        code: i64,
    },
    #[error("IPFS {call}: unexpected answer ({status}): {message}")]
    Protocol {
        call: &'static str,
        status: u16,
        message: String,
    },
}

/// kubo's error body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KuboError {
    message: String,
    #[serde(default)]
    code: i64,
}

/// `id`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Id {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub addresses: Option<Vec<String>>,
    #[serde(default)]
    pub agent_version: String,
}

/// `version`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    pub version: String,
    #[serde(default)]
    pub commit: String,
}

/// One line of `add`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Added {
    pub name: String,
    pub hash: String,
    pub size: String,
}

/// `repo/stat`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RepoStat {
    pub repo_size: u64,
    pub storage_max: u64,
    pub num_objects: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Pins {
    #[serde(default)]
    pins: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PinLs {
    #[serde(default)]
    keys: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SwarmPeers {
    #[serde(default)]
    peers: Option<Vec<SwarmPeer>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SwarmPeer {
    peer: String,
}

/// A client for one daemon's RPC API.
#[derive(Debug, Clone)]
pub struct IpfsClient {
    http: reqwest::Client,
    addr: String,
    /// Deadline for quick calls; content calls (`add`, `cat`, `pin/add`) get `transfer_timeout`.
    pub timeout: Duration,
    pub transfer_timeout: Duration,
}

impl IpfsClient {
    /// `addr` is `HOST:PORT`.
    pub fn new(addr: impl Into<String>) -> IpfsClient {
        IpfsClient {
            http: reqwest::Client::new(),
            addr: addr.into(),
            timeout: Duration::from_secs(10),
            transfer_timeout: Duration::from_secs(600),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn post(
        &self,
        call: &'static str,
        query: &[(&str, &str)],
        body: Option<reqwest::multipart::Form>,
        after: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let url = format!("http://{}/api/v0/{call}", self.addr);
        let mut req = self.http.post(url).query(query);
        if let Some(form) = body {
            req = req.multipart(form);
        }
        let run = async {
            let resp = req.send().await.map_err(|e| self.transport(e))?;
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
            Ok::<_, RpcError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(after, run)
            .await
            .map_err(|_| RpcError::Timeout { call, after })??;
        if status >= 400 {
            return Err(match serde_json::from_slice::<KuboError>(&bytes) {
                Ok(e) => RpcError::Rpc {
                    call,
                    status,
                    message: e.message,
                    code: e.code,
                },
                Err(_) => RpcError::Protocol {
                    call,
                    status,
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                },
            });
        }
        Ok(bytes.to_vec())
    }

    fn transport(&self, e: reqwest::Error) -> RpcError {
        RpcError::Unreachable {
            addr: self.addr.clone(),
            message: e.to_string(),
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        call: &'static str,
        query: &[(&str, &str)],
        after: Duration,
    ) -> Result<T, RpcError> {
        let bytes = self.post(call, query, None, after).await?;
        serde_json::from_slice(&bytes).map_err(|e| RpcError::Protocol {
            call,
            status: 200,
            message: e.to_string(),
        })
    }

    pub async fn id(&self) -> Result<Id, RpcError> {
        self.json("id", &[], self.timeout).await
    }

    pub async fn version(&self) -> Result<Version, RpcError> {
        self.json("version", &[], self.timeout).await
    }

    /// Adds one file; returns its CID (kubo's defaults: CIDv0, 256 KiB chunks).
    pub async fn add(&self, name: &str, data: Vec<u8>) -> Result<Added, RpcError> {
        let part = reqwest::multipart::Part::bytes(data).file_name(name.to_owned());
        self.add_part(part, true).await
    }

    /// Adds one file without pinning it: the blocks stay until a GC.
    pub async fn add_unpinned(&self, name: &str, data: Vec<u8>) -> Result<Added, RpcError> {
        let part = reqwest::multipart::Part::bytes(data).file_name(name.to_owned());
        self.add_part(part, false).await
    }

    /// Adds one file from disk, streamed.
    pub async fn add_file(&self, path: &std::path::Path) -> Result<Added, RpcError> {
        let io = |e: std::io::Error| RpcError::Protocol {
            call: "add",
            status: 0,
            message: format!("{}: {e}", path.display()),
        };
        let file = tokio::fs::File::open(path).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        let name = path
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
        let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::from(file), len)
            .file_name(name);
        self.add_part(part, true).await
    }

    async fn add_part(&self, part: reqwest::multipart::Part, pin: bool) -> Result<Added, RpcError> {
        let form = reqwest::multipart::Form::new().part("file", part);
        let pin = if pin { "true" } else { "false" };
        let bytes = self
            .post("add", &[("pin", pin)], Some(form), self.transfer_timeout)
            .await?;
        // One JSON object per line; the last names the file added.
        let last = bytes
            .split(|b| *b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap_or_default();
        serde_json::from_slice(last).map_err(|e| RpcError::Protocol {
            call: "add",
            status: 200,
            message: e.to_string(),
        })
    }

    pub async fn cat(&self, cid: &str) -> Result<Vec<u8>, RpcError> {
        self.post("cat", &[("arg", cid)], None, self.transfer_timeout)
            .await
    }

    /// Pins recursively, fetching missing blocks.
    pub async fn pin_add(&self, cid: &str) -> Result<Vec<String>, RpcError> {
        let pins: Pins = self
            .json(
                "pin/add",
                &[("arg", cid), ("recursive", "true")],
                self.transfer_timeout,
            )
            .await?;
        Ok(pins.pins.unwrap_or_default())
    }

    pub async fn pin_rm(&self, cid: &str) -> Result<Vec<String>, RpcError> {
        let pins: Pins = self.json("pin/rm", &[("arg", cid)], self.timeout).await?;
        Ok(pins.pins.unwrap_or_default())
    }

    /// CIDs pinned recursively.
    pub async fn pin_ls(&self) -> Result<Vec<String>, RpcError> {
        let ls: PinLs = self
            .json("pin/ls", &[("type", "recursive")], self.timeout)
            .await?;
        Ok(ls.keys.map(|k| k.into_keys().collect()).unwrap_or_default())
    }

    /// Whether `cid` is pinned itself, recursively or directly (kubo and
    /// the built-in engine answer an error saying "not pinned" when it is
    /// not). An indirect pin (inside another pinned DAG) does not count:
    /// it is not a pin of this item, and asking for it makes kubo walk
    /// every recursive pin.
    pub async fn is_pinned(&self, cid: &str) -> Result<bool, RpcError> {
        for kind in ["recursive", "direct"] {
            let ls: Result<PinLs, RpcError> = self
                .json("pin/ls", &[("arg", cid), ("type", kind)], self.timeout)
                .await;
            match ls {
                Ok(ls) if ls.keys.as_ref().is_some_and(|k| !k.is_empty()) => return Ok(true),
                Ok(_) => {}
                Err(RpcError::Rpc { message, .. }) if message.contains("not pinned") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    pub async fn repo_stat(&self) -> Result<RepoStat, RpcError> {
        self.json("repo/stat", &[], self.timeout).await
    }

    pub async fn swarm_connect(&self, addr: &str) -> Result<(), RpcError> {
        self.post("swarm/connect", &[("arg", addr)], None, self.timeout)
            .await
            .map(drop)
    }

    /// Peer IDs the daemon is connected to.
    pub async fn swarm_peers(&self) -> Result<Vec<String>, RpcError> {
        let peers: SwarmPeers = self.json("swarm/peers", &[], self.timeout).await?;
        Ok(peers
            .peers
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.peer)
            .collect())
    }

    pub async fn shutdown(&self) -> Result<(), RpcError> {
        self.post("shutdown", &[], None, self.timeout)
            .await
            .map(drop)
    }
}
