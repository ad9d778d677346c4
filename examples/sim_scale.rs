//! The election, probe and membership cores of N simulated nodes in one
//! deterministic simulation (see `crates/testkit/src/scale.rs` for the model
//! of the network): convergence after the last start, detection of a
//! failed leader, and each node's idle messages a second, as JSON.
//!
//! ```sh
//! cargo run --release --example sim_scale -- --nodes 100,1000 --seeds 3
//! ```
//!
//! Options: `--nodes N[,N...]` (100,1000), `--seeds S` (3), `--first-seed F`
//! (0: seeds F..F+S), `--loss P` (0; percent on every link), `--hop-us U`
//! (500; one network hop), `--start-every-ms M` (20; nodes start this far
//! apart), `--idle-secs S` (a quiet follower's interval at N plus 10 s: the
//! traffic window), `--kill` (the leader crashes instead of freezing),
//! `--in-order` (direct messages on a link arrive in order, as over one TCP
//! connection: one held up by retransmissions holds up those behind it,
//! and is sent again a round trip after a later one gets through),
//! `--datagrams-ms M` (probes also go by datagram, sent again every M ms,
//! as the node's `probe_datagram_resend_ms`: see `Params::datagrams`; off
//! by default), `--connection-after-ms M` (with datagrams, a probe of a
//! peer that has answered one goes over the connection only if unanswered
//! M ms later, as the node's `probe_connection_after_ms`: see
//! `Params::connection_after`; off by default: both at once), `--check-attempts N`, `--check-spacing-ms M` (`election.check_attempts`
//! and `check_spacing_ms`; 3 and 100).
//! `SIM_TRACE=1` prints every node's leader changes and silence verdicts
//! with their simulated time.

use std::time::{Duration, Instant};

use testkit::scale::{Fault, Params, Sim};

fn main() {
    let mut nodes = vec![100, 1000];
    let mut seeds = 3u64;
    let mut first_seed = 0u64;
    let mut loss = 0.0;
    let mut hop_us = 500u64;
    let mut start_every_ms = 20u64;
    let mut idle_secs = 0u64;
    let mut fault = Fault::Freeze;
    let mut in_order = false;
    let mut datagrams: Option<u64> = None;
    let mut connection_after: Option<u64> = None;
    let mut check: (Option<u64>, Option<u64>) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next().unwrap_or_else(|| {
                eprintln!("sim_scale: {a} needs a value");
                std::process::exit(2)
            })
        };
        let num = |s: String| -> u64 {
            s.parse().unwrap_or_else(|e| {
                eprintln!("sim_scale: {s}: {e}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--nodes" => nodes = val().split(',').map(|s| num(s.into()) as usize).collect(),
            "--seeds" => seeds = num(val()),
            "--first-seed" => first_seed = num(val()),
            "--loss" => loss = num(val()) as f64 / 100.0,
            "--hop-us" => hop_us = num(val()),
            "--start-every-ms" => start_every_ms = num(val()),
            "--idle-secs" => idle_secs = num(val()),
            "--kill" => fault = Fault::Kill,
            "--in-order" => in_order = true,
            "--datagrams-ms" => datagrams = Some(num(val())),
            "--connection-after-ms" => connection_after = Some(num(val())),
            "--check-attempts" => {
                let a = num(val());
                if !(1..=10).contains(&a) {
                    eprintln!("sim_scale: --check-attempts must be 1 to 10");
                    std::process::exit(2)
                }
                check.0 = Some(a)
            }
            "--check-spacing-ms" => check.1 = Some(num(val())),
            other => {
                eprintln!("sim_scale: unknown option {other}");
                std::process::exit(2)
            }
        }
    }
    let ms = |d: Option<Duration>| {
        d.map_or("null".to_string(), |d| {
            format!("{:.1}", d.as_secs_f64() * 1000.0)
        })
    };
    let mut rows = Vec::new();
    for &n in &nodes {
        for seed in first_seed..first_seed + seeds {
            let mut p = Params::defaults(n, seed);
            p.loss = loss;
            p.hop = Duration::from_micros(hop_us);
            p.start_every = Duration::from_millis(start_every_ms);
            // By default one quiet follower's interval and 10 s more, so
            // that every node sends its share of heartbeats in the window.
            p.idle = if idle_secs > 0 {
                Duration::from_secs(idle_secs)
            } else {
                (p.timing.quiet_per_member * n as u32).max(p.timing.heartbeat)
                    + Duration::from_secs(10)
            };
            p.fault = fault;
            p.in_order = in_order;
            p.datagrams = datagrams.map(Duration::from_millis);
            p.connection_after = connection_after.map(Duration::from_millis);
            if let Some(a) = check.0 {
                p.probe.check_attempts = a as u32;
            }
            if let Some(ms) = check.1 {
                p.probe.check_spacing = Duration::from_millis(ms);
            }
            let wall = Instant::now();
            let o = match Sim::run(p) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("nodes {n} seed {seed}: CONTRACT BROKEN: {e}");
                    std::process::exit(1)
                }
            };
            let row = format!(
                "{{\"nodes\":{n},\"seed\":{seed},\"loss\":{loss},\"convergence_ms\":{},\"detection_ms\":{},\
                 \"gossip_in_per_node_s\":{:.3},\"gossip_out_per_node_s\":{:.4},\"direct_out_per_node_s\":{:.3},\
                 \"leader_direct_out_s\":{:.2},\"member_pulls_s\":{:.3},\"converged_epoch\":{},\"fault_epoch\":{},\"max_epoch\":{},\"split_epochs\":{},\"events\":{},\"wall_s\":{:.1}}}",
                ms(o.convergence),
                ms(o.detection),
                o.gossip_in_per_node_s,
                o.gossip_out_per_node_s,
                o.direct_out_per_node_s,
                o.leader_direct_out_s,
                o.member_pulls_s,
                o.converged_epoch,
                o.fault_epoch,
                o.max_epoch,
                o.split_epochs,
                o.events,
                wall.elapsed().as_secs_f64()
            );
            eprintln!("{row}");
            rows.push(row);
        }
    }
    println!("[{}]", rows.join(",\n"));
}
