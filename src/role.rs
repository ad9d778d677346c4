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

/// `--role` / `role` as given: a role, or `auto`, which picks one from the
/// machine ([`choose`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleSetting {
    Fixed(Role),
    Auto,
}

impl FromStr for RoleSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(RoleSetting::Auto),
            other => other.parse().map(RoleSetting::Fixed).map_err(|_| {
                format!("unknown role {other:?}: expected master, worker, leecher or auto")
            }),
        }
    }
}

impl From<Role> for RoleSetting {
    fn from(r: Role) -> RoleSetting {
        RoleSetting::Fixed(r)
    }
}

impl<'de> Deserialize<'de> for RoleSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a machine offers a role: free memory and disk (bytes), cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub free_mem: u64,
    pub free_disk: u64,
    pub cores: u64,
}

const GIB: u64 = 1 << 30;
const GB: u64 = 1_000_000_000;

/// Each role's minimum (the original role manager's): master 2 GiB of
/// memory, 10 GB of disk, 4 cores; worker 1 GiB, 5 GB, 2; leecher 512 MiB,
/// 1 GB, 1.
pub const MINIMUMS: [(Role, Machine); 3] = [
    (
        Role::Master,
        Machine {
            free_mem: 2 * GIB,
            free_disk: 10 * GB,
            cores: 4,
        },
    ),
    (
        Role::Worker,
        Machine {
            free_mem: GIB,
            free_disk: 5 * GB,
            cores: 2,
        },
    ),
    (
        Role::Leecher,
        Machine {
            free_mem: GIB / 2,
            free_disk: GB,
            cores: 1,
        },
    ),
];

/// A role's score on a machine: per resource min(have / minimum, 3) × 33,
/// capped at 100, averaged over memory, disk and cores.
pub fn score(have: &Machine, min: &Machine) -> f64 {
    let one = |have: u64, min: u64| ((have as f64 / min as f64).min(3.0) * 33.0).min(100.0);
    (one(have.free_mem, min.free_mem)
        + one(have.free_disk, min.free_disk)
        + one(have.cores, min.cores))
        / 3.0
}

/// `--role auto`, as the original's role manager chose: a role is
/// considered only if free memory and free disk meet its minimum; the
/// highest [`score`] wins, ties going to master, then worker. `ceiling`
/// (a certificate's role) caps the choice. The role and why, or why none.
pub fn choose(have: &Machine, ceiling: Option<Role>) -> Result<(Role, String), String> {
    let machine = format!(
        "{:.1} GiB free memory, {:.1} GB free disk, {} cores",
        have.free_mem as f64 / GIB as f64,
        have.free_disk as f64 / GB as f64,
        have.cores
    );
    let mut best: Option<(Role, f64)> = None;
    let mut said = Vec::new();
    for (role, min) in &MINIMUMS {
        let s = score(have, min);
        if ceiling.is_some_and(|c| *role > c) {
            said.push(format!("{role} {s:.0} (above the certificate's role)"));
        } else if have.free_mem < min.free_mem || have.free_disk < min.free_disk {
            said.push(format!("{role} {s:.0} (below its minimum memory or disk)"));
        } else {
            said.push(format!("{role} {s:.0}"));
            // Strictly higher only: MINIMUMS is in tie-break order.
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((*role, s));
            }
        }
    }
    match best {
        Some((role, _)) => Ok((
            role,
            format!("auto: {role} (scores {}; {machine})", said.join(", ")),
        )),
        None => Err(format!(
            "--role auto: no role fits this machine ({machine}; a leecher needs 0.5 GiB free \
             memory and 1 GB free disk): set --role"
        )),
    }
}

/// This machine's free memory, free disk under `data_dir` and cores.
pub fn this_machine(data_dir: &std::path::Path) -> Machine {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    // The deepest mount holding the data dir (or what exists of its path).
    let dir = data_dir
        .ancestors()
        .find_map(|p| p.canonicalize().ok())
        .unwrap_or_else(|| data_dir.to_owned());
    let disks = sysinfo::Disks::new_with_refreshed_list();
    let free_disk = disks
        .list()
        .iter()
        .filter(|d| dir.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map_or(0, |d| d.available_space());
    Machine {
        free_mem: sys.available_memory(),
        free_disk,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(mem_gib: f64, disk_gb: u64, cores: u64) -> Machine {
        Machine {
            free_mem: (mem_gib * GIB as f64) as u64,
            free_disk: disk_gb * GB,
            cores,
        }
    }

    #[test]
    fn auto_picks_as_the_original_role_manager() {
        // Far above every minimum: all score 99, the tie goes to master.
        assert_eq!(choose(&m(64.0, 2000, 32), None).unwrap().0, Role::Master);
        // Master's minimum met but little above it: the smaller roles score higher.
        let (r, why) = choose(&m(3.0, 20, 4), None).unwrap();
        assert_eq!(r, Role::Leecher, "{why}");
        assert!(
            why.contains("master 50") && why.contains("worker 88"),
            "{why}"
        );
        // A tie between worker and leecher goes to the worker.
        assert_eq!(choose(&m(16.0, 500, 8), None).unwrap().0, Role::Worker);
        // Below master's memory: not considered, however many cores.
        let (r, why) = choose(&m(1.5, 1000, 64), None).unwrap();
        assert_eq!(r, Role::Leecher, "{why}");
        assert!(
            why.contains("master") && why.contains("below its minimum"),
            "{why}"
        );
        // Below every minimum: an error naming the flag.
        assert!(
            choose(&m(0.25, 100, 8), None)
                .unwrap_err()
                .contains("--role")
        );
        assert!(choose(&m(8.0, 0, 8), None).is_err());
        // A certificate's role caps the choice.
        let (r, why) = choose(&m(64.0, 2000, 32), Some(Role::Worker)).unwrap();
        assert_eq!(r, Role::Worker);
        assert!(why.contains("above the certificate's role"), "{why}");
    }

    /// Every machine on a grid: the choice is eligible, the best score, and
    /// a tie never goes to a lower role.
    #[test]
    fn auto_is_the_best_eligible_score_everywhere() {
        for mem in [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 100.0] {
            for disk in [0, 1, 2, 5, 10, 15, 30, 1000] {
                for cores in [1, 2, 3, 4, 8, 12, 64] {
                    let have = m(mem, disk, cores);
                    let eligible: Vec<(Role, f64)> = MINIMUMS
                        .iter()
                        .filter(|(_, min)| {
                            have.free_mem >= min.free_mem && have.free_disk >= min.free_disk
                        })
                        .map(|(r, min)| (*r, score(&have, min)))
                        .collect();
                    match choose(&have, None) {
                        Err(_) => assert!(eligible.is_empty()),
                        Ok((r, _)) => {
                            let best = eligible.iter().map(|(_, s)| *s).fold(f64::MIN, f64::max);
                            let top: Vec<Role> = eligible
                                .iter()
                                .filter(|(_, s)| *s == best)
                                .map(|(r, _)| *r)
                                .collect();
                            assert_eq!(Some(&r), top.iter().max(), "{have:?}");
                        }
                    }
                }
            }
        }
    }
}
