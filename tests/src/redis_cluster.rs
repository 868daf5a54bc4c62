//! A real Redis Cluster for one test: `redis-server --cluster-enabled yes` nodes on free
//! ports, joined by `redis-cli --cluster create`, with replicas where a test fails a
//! master over. Nodes are killed with SIGKILL, as an outage does.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::RedisServer;
use crate::redis_server::{connect, wait_for_replica, wait_until};

/// How long a node may be unreachable before the cluster marks it failed and a replica
/// takes over: short, so failover tests take seconds.
const NODE_TIMEOUT_MS: &str = "1000";

pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodeLine {
    port: u16,
    master: bool,
    failed: bool,
    slots: Vec<(u16, u16)>,
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let address = fields.get(1)?;
            let port = address
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags = fields.get(2)?;
            let slots = fields
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|range| {
                    let (start, end) = range.split_once('-').unwrap_or((range, range));
                    Some((start.parse().ok()?, end.parse().ok()?))
                })
                .collect();
            Some(NodeLine {
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                slots,
            })
        })
        .collect()
}

impl RedisCluster {
    /// `masters` masters (at least 3, as `redis-cli --cluster create` wants) and
    /// `replicas` replicas of each; returns once every slot is served and every replica
    /// is in sync.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                RedisServer::start_cluster_node(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    NODE_TIMEOUT_MS,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli on PATH (Debian package redis-tools)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        let cluster = RedisCluster { nodes };
        wait_until("the cluster is ok", Duration::from_secs(30), || {
            cluster.live().all(|n| {
                cluster
                    .info(n.port())
                    .is_some_and(|i| i.contains("cluster_state:ok"))
            })
        });
        wait_until("every replica is in sync", Duration::from_secs(30), || {
            cluster.replicas_in_sync()
        });
        cluster
    }

    fn live(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    fn info(&self, port: u16) -> Option<String> {
        let mut con = connect(port)?;
        redis::cmd("CLUSTER").arg("INFO").query(&mut con).ok()
    }

    fn node_lines(&self) -> Vec<NodeLine> {
        self.live()
            .find_map(|n| {
                let mut con = connect(n.port())?;
                redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query::<String>(&mut con)
                    .ok()
            })
            .map(|text| parse_nodes(&text))
            .unwrap_or_default()
    }

    fn replicas_in_sync(&self) -> bool {
        self.live().all(|n| {
            let Some(mut con) = connect(n.port()) else {
                return false;
            };
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut con)
                .unwrap_or_default();
            info.contains("role:master") || info.contains("master_link_status:up")
        })
    }

    /// `redis+cluster://` with every node as a seed, as a Helm values file would list
    /// the cluster's Service endpoints.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The ports of the masters serving slots now.
    pub fn masters(&self) -> Vec<u16> {
        self.node_lines()
            .into_iter()
            .filter(|n| n.master && !n.failed && !n.slots.is_empty())
            .map(|n| n.port)
            .collect()
    }

    /// The slot of a hash tag (or key).
    pub fn slot(&self, key: &str) -> u16 {
        self.live()
            .find_map(|n| {
                let mut con = connect(n.port())?;
                redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(key)
                    .query::<u16>(&mut con)
                    .ok()
            })
            .expect("a live node answers CLUSTER KEYSLOT")
    }

    /// The master serving the slot of `key` now, if a live master does.
    pub fn master_of(&self, key: &str) -> Option<u16> {
        let slot = self.slot(key);
        self.node_lines()
            .into_iter()
            .filter(|n| n.master && !n.failed)
            .find(|n| n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|n| n.port)
            .filter(|port| self.is_live(*port))
    }

    fn is_live(&self, port: u16) -> bool {
        self.live().any(|n| n.port() == port)
    }

    /// Blocks until the replicas of `master` have every write it has taken so far: a
    /// marker written to one of its slots, then `WAIT`. Replication is one ordered stream
    /// per master, so the edges' earlier writes are in the replicas too.
    pub fn sync_replicas_of(&self, master: u16) {
        let marker = (0..10_000)
            .map(|n| format!("sy:test:marker:{{m{n}}}"))
            .find(|key| self.master_of(key) == Some(master))
            .expect("a key in one of the master's slots");
        wait_for_replica(master, &marker);
    }

    /// Kills the node on `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node on {port}"))
            .kill();
    }

    /// Waits until another live master serves the slot of `key` and the cluster is ok;
    /// returns that master and how long the failover took from now.
    pub fn wait_for_failover(&self, key: &str, within: Duration) -> (u16, Duration) {
        let started = Instant::now();
        let mut promoted = None;
        wait_until("a replica takes over the slot", within, || {
            promoted = self.master_of(key);
            promoted.is_some()
                && self.live().all(|n| {
                    self.info(n.port())
                        .is_some_and(|i| i.contains("cluster_state:ok"))
                })
        });
        (
            promoted.expect("a master after failover"),
            started.elapsed(),
        )
    }

    /// The live masters holding a hash key matching `pattern` whose `field` contains
    /// `needle`.
    pub fn masters_holding(&self, pattern: &str, field: &str, needle: &str) -> Vec<u16> {
        self.masters()
            .into_iter()
            .filter(|port| {
                let Some(mut con) = connect(*port) else {
                    return false;
                };
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(pattern)
                    .query(&mut con)
                    .unwrap_or_default();
                keys.iter().any(|key| {
                    redis::cmd("HGET")
                        .arg(key)
                        .arg(field)
                        .query::<Option<String>>(&mut con)
                        .ok()
                        .flatten()
                        .is_some_and(|value| value.contains(needle))
                })
            })
            .collect()
    }

    /// How many keys matching `pattern` each live master holds.
    pub fn keys_by_master(&self, pattern: &str) -> BTreeMap<u16, usize> {
        self.masters()
            .into_iter()
            .filter_map(|port| {
                let mut con = connect(port)?;
                let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut con).ok()?;
                Some((port, keys.len()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_parse() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 10923 [5461->-67ed2db8]
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 master,fail - 1426238316232 0 5 disconnected
";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 4);
        assert!(!nodes[0].master);
        assert_eq!(nodes[1].slots, vec![(5461, 10922)]);
        assert_eq!(nodes[2].port, 30001);
        assert_eq!(nodes[2].slots, vec![(0, 5460), (10923, 10923)]);
        assert!(nodes[3].failed && nodes[3].slots.is_empty());
    }
}
