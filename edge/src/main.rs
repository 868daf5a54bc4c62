//! `switchyard-edge`: the stateless SIP edge.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use switchyard_edge::auth::Authenticator;
use switchyard_edge::call::Services;
use switchyard_edge::ratelimit::SourceLimiter;
use switchyard_edge::rcml::Fetcher;
use switchyard_edge::store::{AnyCallStore, MemoryCallStore, RedisCallStore};
use switchyard_routing::manifests::{LoadedPhoneNumber, load_paths};
use switchyard_routing::{CacheOptions, CachedRoutes, MemoryRoutes, RedisRoutes, RouteLookup};
use tracing::{error, info, warn};

use switchyard_edge::config::Config;
use switchyard_edge::sip::endpoint::Endpoint;
use switchyard_edge::sip::transaction::{Context, TransactionTable};
use switchyard_edge::sip::transport::Transport;
use switchyard_edge::{app, http, telemetry};

// A call allocates and frees many small buffers (SIP messages, JSON records, Redis
// commands) on two tokio workers; with glibc's allocator that was the largest user-space
// cost in the benchmark's profile (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init();
    if let Err(e) = config.validate() {
        eprintln!("switchyard-edge: {e}");
        return ExitCode::from(2);
    }

    let manifests = if config.phone_numbers.is_empty() {
        None
    } else {
        match load_paths(&config.phone_numbers) {
            Ok(loaded) => Some(loaded),
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
        }
    };
    if config.check {
        let table = MemoryRoutes::new(manifests.into_iter().flatten().map(|l| l.route)).snapshot();
        for route in table.routes() {
            println!("{}", describe(&route));
        }
        return ExitCode::SUCCESS;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(switchyard_edge::allocator::collect_when_idle)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("switchyard-edge: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, manifests))
}

fn describe(route: &switchyard_routing::Route) -> String {
    let refer = route
        .refer
        .as_ref()
        .map(|r| format!(" refer={} {}", r.method, r.url));
    format!(
        "{:<28} owner={:<24} voice={} {}{}",
        route.key.to_string(),
        route.owner.to_string(),
        route.voice.method,
        route.voice.url,
        refer.unwrap_or_default()
    )
}

async fn run(config: Config, manifests: Option<Vec<LoadedPhoneNumber>>) -> ExitCode {
    // Routes and call state: in Redis, shared by every edge process; or standalone.
    // Ready once routes are known: at once in standalone mode, after the first load of the
    // routing table from Redis otherwise.
    let mut first_table = None;
    let (routes, store): (Arc<dyn RouteLookup>, AnyCallStore) = match config.redis_target() {
        Some(Err(e)) => {
            eprintln!("switchyard-edge: --redis-url: {e}");
            return ExitCode::from(2);
        }
        Some(Ok(target)) => {
            let table = match RedisRoutes::new(target.clone()) {
                Ok(table) => table,
                Err(e) => {
                    eprintln!("switchyard-edge: --redis-url: {e}");
                    return ExitCode::from(2);
                }
            };
            let (cache, _follower) = CachedRoutes::follow(table, CacheOptions::default());
            first_table = Some(cache.versions());
            let store = match RedisCallStore::new(target.clone(), config.redis_timeout) {
                Ok(store) => store,
                Err(e) => {
                    eprintln!("switchyard-edge: --redis-url: {e}");
                    return ExitCode::from(2);
                }
            };
            info!(redis = %target, "routes and call state in Redis");
            (cache, AnyCallStore::Redis(store))
        }
        None => {
            let routes = MemoryRoutes::new(manifests.into_iter().flatten().map(|l| l.route));
            let table = routes.snapshot();
            info!(
                routes = table.len(),
                "standalone: routes from manifests, call state in memory"
            );
            for route in table.routes() {
                info!("route {}", describe(&route));
            }
            (
                Arc::new(routes),
                AnyCallStore::Memory(MemoryCallStore::default()),
            )
        }
    };

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
    let bound = transport.local_addrs();
    let advertise = config.advertised(&bound);
    let via = config.via_sent_by(&bound, &advertise);
    let outbound_proxy = config
        .outbound_proxy
        .clone()
        .unwrap_or_else(|| advertise.clone());
    // Several edges may share a host outside Kubernetes: the pid keeps their names apart.
    let pod = config.pod_name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        format!(
            "{}-{}",
            if host.is_empty() { "edge" } else { &host },
            std::process::id()
        )
    });
    info!(%advertise, %via, %outbound_proxy, %pod, "SIP identity");
    let fetcher = match Fetcher::new(config.rcml_timeout) {
        Ok(fetcher) => fetcher,
        Err(e) => {
            eprintln!("switchyard-edge: --rcml-timeout: {e}");
            return ExitCode::from(2);
        }
    };
    // Already checked by validate(); compiled once here for every REFER.
    let refer_target_allow = match config.refer_target_policy() {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("switchyard-edge: {e}");
            return ExitCode::from(2);
        }
    };
    // Also checked by validate(); built here once (the credentials file is read again).
    let (auth, source_limits, refer_limit) = match (
        config.auth_config(),
        config.source_limits(),
        config.refer_limit(),
    ) {
        (Ok(auth), Ok(limits), Ok(refer)) => (auth, limits, refer),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("switchyard-edge: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(auth) = &auth {
        info!(
            realm = %auth.realm,
            clients = auth.credentials.len(),
            methods = ?auth.methods,
            trusted = auth.trusted.len(),
            "digest authentication on"
        );
    }
    let ctx = Context {
        wire: Arc::new(transport.clone()),
        timers: config.timers(),
        table: Arc::new(TransactionTable::default()),
    };
    let services = Services::new(
        ctx.clone(),
        via,
        advertise,
        fetcher,
        store,
        routes,
        outbound_proxy,
        pod,
        config.account_sid.clone(),
        refer_target_allow,
        refer_limit,
    );
    tokio::spawn(switchyard_edge::call::timers::run(services.clone()));
    let app = app::EdgeApp::new(services.clone(), auth.map(Authenticator::new));
    let endpoint = Endpoint::new(ctx.clone(), app, source_limits.and_then(SourceLimiter::new));
    tokio::spawn(endpoint.run(inbound));
    match first_table {
        None => {
            health.set_ready(true);
            info!("switchyard-edge ready");
        }
        Some(mut versions) => {
            let health = health.clone();
            tokio::spawn(async move {
                if versions.wait_for(|v| v.is_some()).await.is_ok() {
                    health.set_ready(true);
                    info!("routing table loaded from Redis: switchyard-edge ready");
                }
            });
        }
    }

    shutdown_signal().await;
    info!("shutting down: refusing new calls, draining transactions in flight");
    health.set_ready(false);
    services.start_draining();
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
