//! `switchyard-edge`: the stateless SIP edge.
//!
//! This first cut loads the routing table the edge would serve (PhoneNumber manifests in
//! standalone mode) and prints it; the SIP layers land on top of it.

use std::process::ExitCode;

use clap::Parser;
use switchyard_routing::manifests::load_paths;
use switchyard_routing::{MemoryRoutes, RouteLookup};
use tracing::{error, info};

mod config;
mod telemetry;

use config::Config;

fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init();

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
    let routes = MemoryRoutes::new(loaded.into_iter().map(|l| l.route));
    let table = routes.snapshot();
    info!(
        routes = table.len(),
        "routing table loaded (standalone, in-memory)"
    );
    for route in table.routes() {
        println!(
            "{:<28} owner={:<24} voice={} {}{}",
            route.key.to_string(),
            route.owner.to_string(),
            route.voice.method,
            route.voice.url,
            route
                .refer
                .as_ref()
                .map(|r| format!(" refer={} {}", r.method, r.url))
                .unwrap_or_default()
        );
    }
    ExitCode::SUCCESS
}
