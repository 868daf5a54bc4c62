//! `switchyard-operator`: watches PhoneNumber resources and keeps the Redis routing table
//! equal to them. Run `switchyard-operator --help` for the flags; `docs/operator.md`
//! explains statuses, metrics and operations.
//!
//! Life cycle: serve `/metrics`, `/healthz`, `/readyz`; stand by until this replica holds
//! the Lease; lead (controllers and resync) until the Lease is lost or SIGTERM arrives;
//! on SIGTERM stop leading, release the Lease, exit 0.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use switchyard_operator::config::{Config, ConfigError};
use switchyard_operator::controller::LeaderWork;
use switchyard_operator::http::{self, Health};
use switchyard_operator::leader::{LeaderElector, LeaseSettings};
use switchyard_operator::metrics::Metrics;
use switchyard_operator::telemetry;
use switchyard_routing::{RedisRoutes, StoreError};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// How long in-flight reconciles get to finish on SIGTERM (a lost Lease stops them at
/// once).
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
enum MainError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("--redis-url: {0}")]
    Redis(#[from] StoreError),
    #[error("--metrics-listen {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("Kubernetes client configuration (in-cluster or KUBECONFIG): {0}")]
    Kube(#[from] kube::Error),
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init();
    if let Err(e) = config.validate() {
        eprintln!("switchyard-operator: {e}");
        return ExitCode::from(2);
    }
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "switchyard-operator cannot run");
            eprintln!("switchyard-operator: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn terminate_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the operator");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(config: Config) -> Result<(), MainError> {
    let target = config.redis_target()?;
    info!(redis = %target, "routing table in Redis");
    let routes = RedisRoutes::new(target)?;
    let listener = TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|source| MainError::Listen {
            addr: config.metrics_listen,
            source,
        })?;
    let client = kube::Client::try_default().await?;
    let identity = config.identity()?;
    let lease_namespace = config
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let settings = LeaseSettings::new(
        &config.lease_name,
        &lease_namespace,
        &identity,
        config.lease_duration,
    );
    info!(
        %identity,
        lease = %format!("{lease_namespace}/{}", config.lease_name),
        namespaces = ?config.namespaces,
        resync_interval = ?config.resync_interval,
        metrics_listen = %config.metrics_listen,
        "switchyard-operator starting"
    );

    let metrics = Arc::new(Metrics::new());
    let health = Health::default();
    // A standby replica is ready: it is doing its job, waiting for the Lease.
    health.set_ready(true);
    let (server_stop_tx, mut server_stop_rx) = watch::channel(false);
    let server = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        async move {
            let _ = server_stop_rx.wait_for(|s| *s).await;
        },
    ));

    let (leading_tx, mut leading_rx) = watch::channel(false);
    let (elector_stop_tx, elector_stop_rx) = watch::channel(false);
    let elector = LeaderElector::new(client.clone(), settings);
    let elector_task = tokio::spawn(elector.run(leading_tx, elector_stop_rx));

    let terminate = terminate_signal();
    tokio::pin!(terminate);
    loop {
        tokio::select! {
            leading = leading_rx.wait_for(|l| *l) => if leading.is_err() { break },
            () = &mut terminate => break,
        }
        metrics.set_leader(true);
        health.set_ready(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let work = LeaderWork {
            client: client.clone(),
            routes: routes.clone(),
            metrics: metrics.clone(),
            namespaces: config.namespaces.clone(),
            resync_interval: config.resync_interval,
            identity: identity.clone(),
        };
        let synced = health.clone();
        let mut task = tokio::spawn(work.run(stop_rx, move || synced.set_ready(true)));
        let (terminating, finished) = tokio::select! {
            _ = leading_rx.wait_for(|l| !*l) => (false, false),
            () = &mut terminate => (true, false),
            _ = &mut task => (false, true),
        };
        if finished {
            warn!("leader work ended by itself; starting it again");
            tokio::time::sleep(Duration::from_secs(1)).await;
        } else if terminating {
            // Shutting down while leading: let in-flight reconciles finish, briefly.
            let _ = stop_tx.send(true);
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        } else {
            // The Lease is lost: another replica may be writing already. Stop at once.
            warn!("no longer leading: stopping the controllers");
            task.abort();
            let _ = task.await;
        }
        metrics.set_leader(false);
        health.set_ready(true);
        if terminating {
            break;
        }
    }

    info!("shutting down");
    health.set_ready(false);
    let _ = elector_stop_tx.send(true);
    let _ = elector_task.await;
    let _ = server_stop_tx.send(true);
    let _ = server.await;
    info!("stopped");
    Ok(())
}
