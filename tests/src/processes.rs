//! Switchyard's own binaries, started by tests as real processes.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;
use crate::redis_cluster::RedisCluster;

/// With `SWITCHYARD_TEST_REDIS=cluster`, an edge a test starts standalone
/// (`--phone-numbers DIR`) runs instead on a three-master Redis Cluster of its own, with
/// the manifests' routes programmed into it as the operator would: the end-to-end suites
/// run unchanged against a cluster (`tests/run.sh` runs the calls and transfer suites so).
pub const REDIS_MODE_VAR: &str = "SWITCHYARD_TEST_REDIS";

/// A three-master cluster with the routes of a standalone edge's `--phone-numbers DIR`
/// programmed in it, and the arguments that put the edge on it instead; None when `args`
/// are not a standalone edge's (or its manifests do not load: the edge reports that).
fn on_cluster(args: &[&str]) -> Option<(Vec<String>, RedisCluster)> {
    if args.contains(&"--redis-url") {
        return None;
    }
    let at = args.iter().position(|a| *a == "--phone-numbers")?;
    let dir = args.get(at + 1)?;
    let loaded = switchyard_routing::manifests::load_paths(&[dir]).ok()?;
    let routes: Vec<_> = loaded.into_iter().map(|l| l.route).collect();
    let cluster = RedisCluster::start(3, 0);
    crate::routes::program(&cluster.url(), &routes);
    let mut rewritten: Vec<String> = args[..at].iter().map(|a| a.to_string()).collect();
    rewritten.extend(["--redis-url".to_owned(), cluster.url()]);
    rewritten.extend(args[at + 2..].iter().map(|a| a.to_string()));
    Some((rewritten, cluster))
}

/// A workspace binary next to the running test executable (`target/<profile>/`).
/// `tests/run.sh` builds them before the tests run.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// The repository root (for `examples/` and scenario files).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_owned()
}

/// A running `switchyard-edge`, killed when dropped. Its stderr (logs) is kept in a file
/// so failing tests can show it.
pub struct Edge {
    child: Child,
    pub sip: SocketAddr,
    pub metrics: SocketAddr,
    log: PathBuf,
    /// The cluster this edge runs on in `SWITCHYARD_TEST_REDIS=cluster` mode; stopped with
    /// it.
    _cluster: Option<RedisCluster>,
}

impl Edge {
    /// Starts an edge on free ports with `args` added, and waits until `/readyz` says
    /// ready.
    pub fn start(args: &[&str]) -> Edge {
        Self::start_on("127.0.0.1", args)
    }

    /// Same, listening on `host` (`127.0.0.1` or `[::1]`).
    pub fn start_on(host: &str, args: &[&str]) -> Edge {
        Self::start_logging(host, "debug", args)
    }

    /// Starts an edge logging at `level` (`RUST_LOG`): `info` as deployed, for tests that
    /// measure it under load (debug logging of every message would be what they measure).
    pub fn start_logging(host: &str, level: &str, args: &[&str]) -> Edge {
        let sip: SocketAddr = format!("{host}:{}", free_port())
            .parse()
            .expect("a SIP address");
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("an address");
        let log = std::env::temp_dir().join(format!(
            "switchyard-edge-{}-{}.log",
            std::process::id(),
            sip.port()
        ));
        let log_file = std::fs::File::create(&log).expect("a log file for the edge");
        let on_cluster = match std::env::var(REDIS_MODE_VAR).as_deref() {
            Ok("cluster") => on_cluster(args),
            _ => None,
        };
        let (args, cluster) = match on_cluster {
            Some((rewritten, cluster)) => (rewritten, Some(cluster)),
            None => (args.iter().map(|a| a.to_string()).collect(), None),
        };
        let child = Command::new(binary("switchyard-edge"))
            .arg("--sip-listen")
            .arg(sip.to_string())
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .args(&args)
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("switchyard-edge starts");
        let mut edge = Edge {
            child,
            sip,
            metrics,
            log,
            _cluster: cluster,
        };
        edge.wait_ready();
        if edge._cluster.is_some() {
            let logs = edge.logs();
            assert!(
                logs.contains("cluster seeded by"),
                "{REDIS_MODE_VAR}=cluster, but the edge is not on the cluster:\n{logs}"
            );
        }
        edge
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("switchyard-edge exited with {status}:\n{}", self.logs());
            }
            if self
                .http_get("/readyz")
                .is_some_and(|(code, _)| code == 200)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("switchyard-edge did not become ready:\n{}", self.logs());
    }

    /// `(status, body)` of a GET on the metrics port.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::Write;
        let mut stream =
            TcpStream::connect_timeout(&self.metrics, Duration::from_millis(200)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let code = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((code, body))
    }

    /// The value of a metric sample (`name{labels}` exactly as exposed), or 0.
    pub fn metric(&self, sample: &str) -> f64 {
        let (_, body) = self.http_get("/metrics").unwrap_or_default();
        body.lines()
            .find_map(|line| {
                line.strip_prefix(sample)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    /// The process id (for /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process outright (SIGKILL): a pod lost, not a graceful stop.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM without waiting (a pod being stopped).
    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- switchyard-edge log ---\n{}", self.logs());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
