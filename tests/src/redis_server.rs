//! A real `redis-server` for one test: spawned on a free port, killed when dropped, and
//! stoppable and restartable on the same port so tests can take Redis away and bring it
//! back the way an outage does.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` process owned by a test.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    /// A configuration file given before the flags (sentinels need one they can rewrite).
    config: Option<PathBuf>,
    /// Flags after the port, bind address and directory.
    args: Vec<String>,
    child: Option<Child>,
}

/// Asks the kernel for a port nobody is listening on (TCP and UDP), never the same one
/// twice in one test process: the kernel may hand a just-released port out again before
/// the server it was meant for binds it.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// A port `p` such that `p .. p + count` are all free (TCP and UDP) and handed out to
/// nobody else: for a program that binds neighbours of its port (baresip listens for
/// SIP over TLS on its SIP port + 1, whatever its configured transports).
pub fn free_ports(count: u16) -> u16 {
    let free = |port: u16| {
        TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
    };
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free TCP port on 127.0.0.1");
        let Some(last) = port.checked_add(count - 1) else {
            continue;
        };
        if (port..=last).all(free) && (port..=last).all(reserve) {
            return port;
        }
    }
}

/// Marks `port` handed out; false if it already was.
fn reserve(port: u16) -> bool {
    use std::collections::HashSet;
    use std::sync::{LazyLock, Mutex};
    static HANDED_OUT: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(Default::default);
    HANDED_OUT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(port)
}

/// A port for a Redis Cluster node: its cluster bus listens 10,000 higher, so that port
/// is free and handed out too (and the node's port is at most 55535, as Redis requires).
pub fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port > 55_535 {
            continue;
        }
        let bus = port + 10_000;
        if TcpListener::bind(("127.0.0.1", bus)).is_ok() && reserve(bus) {
            return port;
        }
    }
}

/// No persistence, so a restart comes back empty.
const NO_PERSISTENCE: [&str; 4] = ["--save", "", "--appendonly", "no"];

impl RedisServer {
    /// Starts a server with no persistence, so a restart comes back empty.
    pub fn start() -> Self {
        Self::start_with(&NO_PERSISTENCE)
    }

    /// Starts a server with `args` (e.g. `--cluster-enabled yes`, `--replicaof ...`) after
    /// the port, bind address and directory, and waits until it answers PING.
    pub fn start_with(args: &[&str]) -> Self {
        Self::launch(free_port(), None::<fn(&Path) -> String>, args)
    }

    /// A Redis Cluster node with `args`: on a port whose cluster bus port is free too.
    pub fn start_cluster_node(args: &[&str]) -> Self {
        Self::launch(free_cluster_port(), None::<fn(&Path) -> String>, args)
    }

    /// A server whose configuration file `write_config` writes into the server's own
    /// directory first (given the directory), then started with `args`.
    pub fn start_with_config(args: &[&str], write_config: impl FnOnce(&Path) -> String) -> Self {
        Self::launch(free_port(), Some(write_config), args)
    }

    fn launch(
        port: u16,
        write_config: Option<impl FnOnce(&Path) -> String>,
        args: &[&str],
    ) -> Self {
        let dir =
            std::env::temp_dir().join(format!("switchyard-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory for redis-server");
        let config = write_config.map(|write| {
            let path = dir.join("redis.conf");
            std::fs::write(&path, write(&dir)).expect("a redis configuration file");
            path
        });
        let mut server = RedisServer {
            port,
            dir,
            config,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        server.restart();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Whether the process is running (not killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL: an outage, not a clean shutdown) and waits until it is
    /// gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: there is no persistence) and waits
    /// until it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        let mut command = Command::new("redis-server");
        if let Some(config) = &self.config {
            command.arg(config);
        }
        let child = command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server on PATH (Debian package redis-server; .ci/run installs it)");
        self.child = Some(child);
        self.wait_until_ready();
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url()).expect("a valid redis URL");
        loop {
            let pong = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            match pong {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("redis-server on port {} did not start: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// A synchronous connection for test assertions and sabotage (FLUSHALL, DEL).
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("a connection to the test redis-server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A synchronous connection to the Redis on `port` of 127.0.0.1, or `None` if it does not
/// answer within half a second (a killed node, one still starting).
/// Writes `marker` on the master at `port`, then blocks (`WAIT`, up to 5 s) until a
/// replica has it. Replication is one ordered stream per master, so every earlier write
/// is on the replica too.
pub(crate) fn wait_for_replica(port: u16, marker: &str) {
    let mut con = connect(port).expect("the master answers");
    let _: () = redis::cmd("SET")
        .arg(marker)
        .arg("1")
        .query(&mut con)
        .expect("SET");
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut con)
        .expect("WAIT");
    assert!(acked >= 1, "no replica of :{port} acknowledged its writes");
}

pub(crate) fn connect(port: u16) -> Option<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .ok()?
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after `within`.
pub(crate) fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
