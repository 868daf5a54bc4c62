//! A real Sentinel deployment for one test: a master, one replica and three sentinels
//! (`redis-server <conf> --sentinel`), all on free ports, failing over in seconds.

use std::time::{Duration, Instant};

use crate::RedisServer;
use crate::redis_server::{connect, wait_for_replica, wait_until};

/// The name the sentinels monitor the master by.
pub const MASTER_NAME: &str = "switchyard";

pub struct RedisSentinel {
    data: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
}

fn replication(port: u16) -> String {
    connect(port)
        .and_then(|mut c| {
            redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut c)
                .ok()
        })
        .unwrap_or_default()
}

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        let no_persistence = ["--save", "", "--appendonly", "no"];
        let master = RedisServer::start_with(&no_persistence);
        let master_port = master.port().to_string();
        let replica = RedisServer::start_with(&[
            "--save",
            "",
            "--appendonly",
            "no",
            "--replicaof",
            "127.0.0.1",
            &master_port,
        ]);
        wait_until("the replica is in sync", Duration::from_secs(20), || {
            replication(replica.port()).contains("master_link_status:up")
        });
        let sentinels: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with_config(&["--sentinel"], |_| {
                    format!(
                        "sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 10000\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n"
                    )
                })
            })
            .collect();
        let deployment = RedisSentinel {
            data: vec![master, replica],
            sentinels,
        };
        wait_until(
            "every sentinel knows the replica and the other sentinels",
            Duration::from_secs(30),
            || {
                deployment.sentinels.iter().all(|s| {
                    let Some(mut con) = connect(s.port()) else {
                        return false;
                    };
                    let mut count = |what: &str| {
                        redis::cmd("SENTINEL")
                            .arg(what)
                            .arg(MASTER_NAME)
                            .query::<Vec<redis::Value>>(&mut con)
                            .map(|v| v.len())
                            .unwrap_or(0)
                    };
                    count("replicas") == 1 && count("sentinels") == 2
                })
            },
        );
        deployment
    }

    /// `redis+sentinel://` with the three sentinels and the master's name.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The master the sentinels name now.
    pub fn master(&self) -> u16 {
        self.sentinels
            .iter()
            .filter(|s| s.is_running())
            .find_map(|s| {
                let mut con = connect(s.port())?;
                let (_, port): (String, u16) = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(MASTER_NAME)
                    .query(&mut con)
                    .ok()?;
                Some(port)
            })
            .expect("a sentinel names the master")
    }

    /// Blocks until the replica has every write the master has taken so far.
    pub fn sync_replica(&self) {
        wait_for_replica(self.master(), "sy:test:marker");
    }

    /// Kills the master (SIGKILL); returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master();
        self.data
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("the master is one of ours")
            .kill();
        port
    }

    /// Waits until the sentinels name a master other than `old` and it takes writes;
    /// returns it and how long that took.
    pub fn wait_for_failover(&self, old: u16, within: Duration) -> (u16, Duration) {
        let started = Instant::now();
        let mut promoted = old;
        wait_until("the sentinels promote the replica", within, || {
            promoted = self.master();
            promoted != old && replication(promoted).contains("role:master")
        });
        (promoted, started.elapsed())
    }
}
