//! Node roles: `master` > `worker` > `leecher`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a node is for. The derived order is the election order: a master
/// outranks a worker, a worker outranks a leecher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only member: follows the cluster, never leads, never holds replicas.
    Leecher,
    /// Holds replicas; leads only when no master is alive.
    Worker,
    /// Preferred leader.
    Master,
}

impl Role {
    /// Leechers never lead.
    pub fn can_lead(self) -> bool {
        self != Role::Leecher
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker => "worker",
            Role::Leecher => "leecher",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "master" => Ok(Role::Master),
            "worker" => Ok(Role::Worker),
            "leecher" => Ok(Role::Leecher),
            other => Err(format!(
                "unknown role {other:?}: expected master, worker or leecher"
            )),
        }
    }
}
