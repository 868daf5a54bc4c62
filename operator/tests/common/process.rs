//! The `switchyard-operator` binary as a process, for tests that run it against the fake
//! API server over HTTP (a kubeconfig) and a real Redis.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use switchyard_operator::controller::ready_condition;
use switchyard_routing::RedisRoutes;
use switchyard_tests::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::FakeApi;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard-operator");

/// The binary with none of its environment variables inherited from the test runner.
pub fn operator() -> Command {
    let mut command = Command::new(BIN);
    for var in [
        "SWITCHYARD_REDIS_URL",
        "SWITCHYARD_REDIS_PASSWORD",
        "SWITCHYARD_REDIS_SENTINEL_PASSWORD",
        "SWITCHYARD_NAMESPACES",
        "SWITCHYARD_RESYNC_INTERVAL",
        "SWITCHYARD_METRICS_LISTEN",
        "SWITCHYARD_LEASE_NAME",
        "SWITCHYARD_LEASE_DURATION",
        "POD_NAME",
        "POD_NAMESPACE",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
    ] {
        command.env_remove(var);
    }
    command
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-operator-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn kubeconfig(dir: &Path, api: std::net::SocketAddr) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: fake, cluster: {{server: \"http://{api}\"}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: switchyard-system}}}}]\n\
             current-context: fake\n"
        ),
    )
    .unwrap();
    path
}

pub struct Replica {
    child: std::process::Child,
    metrics: String,
    log: PathBuf,
}

impl Replica {
    pub fn start(identity: &str, dir: &Path, kubeconfig: &Path, redis_url: &str) -> Replica {
        let metrics = format!("127.0.0.1:{}", free_port());
        let log = dir.join(format!("{identity}.log"));
        let child = operator()
            .args(["--redis-url", redis_url, "--identity", identity])
            .args(["--metrics-listen", &metrics, "--lease-duration", "3s"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Replica {
            child,
            metrics,
            log,
        }
    }

    pub async fn get(&self, path: &str) -> Option<String> {
        let mut stream = tokio::net::TcpStream::connect(&self.metrics).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        Some(response)
    }

    pub async fn is_leader(&self) -> Option<bool> {
        let metrics = self.get("/metrics").await?;
        Some(metrics.contains("\nswitchyard_operator_is_leader 1\n"))
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn holder(api: &FakeApi) -> Option<String> {
    api.lease("switchyard-system", "switchyard-operator")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

pub fn programmed(api: &FakeApi, name: &str) -> bool {
    api.get("telephony", name)
        .is_some_and(|pn| ready_condition(&pn).is_some_and(|c| c.reason == "Programmed"))
}

pub async fn owner(routes: &RedisRoutes, field: &str) -> Option<String> {
    let (_, routes) = routes.load().await.ok()?;
    routes
        .into_iter()
        .find(|r| r.key.field() == field)
        .map(|r| r.owner.0)
}
