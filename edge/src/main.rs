//! `switchyard-edge`: the stateless SIP edge.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use switchyard_routing::manifests::load_paths;
use switchyard_routing::{MemoryRoutes, RouteLookup};
use tracing::{error, info, warn};

use switchyard_edge::config::Config;
use switchyard_edge::sip::endpoint::Endpoint;
use switchyard_edge::sip::transaction::{Context, TransactionTable};
use switchyard_edge::sip::transport::Transport;
use switchyard_edge::{app, http, telemetry};

fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init();
    if let Err(e) = config.validate() {
        eprintln!("switchyard-edge: {e}");
        return ExitCode::from(2);
    }

    let loaded = match load_paths(&config.phone_numbers) {
        Ok(loaded) => loaded,
        Err(errors) => {
            for e in &errors {
                error!("--phone-numbers: {e}");
            }
            eprintln!(
                "switchyard-edge: --phone-numbers: {} problem(s) in the PhoneNumber manifests (see above)",
                errors.len()
            );
            return ExitCode::from(2);
        }
    };
    let routes = Arc::new(MemoryRoutes::new(loaded.into_iter().map(|l| l.route)));
    let table = routes.snapshot();
    info!(
        routes = table.len(),
        "routing table loaded (standalone, in-memory)"
    );
    for route in table.routes() {
        let refer = route
            .refer
            .as_ref()
            .map(|r| format!(" refer={} {}", r.method, r.url));
        let line = format!(
            "{:<28} owner={:<24} voice={} {}{}",
            route.key.to_string(),
            route.owner.to_string(),
            route.voice.method,
            route.voice.url,
            refer.unwrap_or_default()
        );
        if config.check {
            println!("{line}");
        } else {
            info!("route {line}");
        }
    }
    if config.check {
        return ExitCode::SUCCESS;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("switchyard-edge: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, routes))
}

async fn run(config: Config, routes: Arc<dyn RouteLookup>) -> ExitCode {
    let health = http::Health::default();
    if let Err(e) = http::serve(config.metrics_listen, health.clone()).await {
        eprintln!(
            "switchyard-edge: --metrics-listen {}: {e}",
            config.metrics_listen
        );
        return ExitCode::from(2);
    }
    let (transport, inbound) = match Transport::bind(&config.sip_listen, config.limits()).await {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!("switchyard-edge: --sip-listen: {e}");
            return ExitCode::from(2);
        }
    };
    let advertise = config.advertised(&transport.local_addrs());
    info!(%advertise, "advertising");
    let ctx = Context {
        wire: Arc::new(transport.clone()),
        timers: config.timers(),
        table: Arc::new(TransactionTable::default()),
    };
    let app = app::EdgeApp::new(routes);
    let endpoint = Endpoint::new(ctx.clone(), app);
    tokio::spawn(endpoint.run(inbound));
    health.set_ready(true);
    info!("switchyard-edge ready");

    shutdown_signal().await;
    info!("shutting down: not ready any more, draining transactions in flight");
    health.set_ready(false);
    let deadline = tokio::time::Instant::now() + config.drain_timeout;
    while !ctx.table.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ctx.table.is_empty() {
        warn!(
            transactions = ctx.table.len(),
            "drain timeout: exiting with transactions in flight"
        );
    }
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
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
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
