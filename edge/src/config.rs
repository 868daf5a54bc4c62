//! Command-line flags and environment variables of `switchyard-edge`.

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "switchyard-edge",
    version,
    about = "Stateless SIP edge for Switchyard"
)]
pub struct Config {
    /// PhoneNumber manifests (files or directories of *.yaml) to serve in standalone mode.
    /// Repeatable.
    #[arg(
        long = "phone-numbers",
        env = "SWITCHYARD_PHONE_NUMBERS",
        value_name = "FILE|DIR",
        required = true,
        value_delimiter = ','
    )]
    pub phone_numbers: Vec<PathBuf>,
}
