//! Command-line flags and environment variables of `switchyard-edge`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::sip::transaction::TimerConfig;
use crate::sip::transport::Limits;

#[derive(Debug, Parser)]
#[command(
    name = "switchyard-edge",
    version,
    about = "Stateless SIP edge for Switchyard: answers SIP, runs RCML, carries blind transfers"
)]
pub struct Config {
    /// Address for SIP over UDP and TCP (same port). Repeatable, e.g. once for IPv4 and
    /// once for IPv6 (`[::]:5060`).
    #[arg(
        long = "sip-listen",
        env = "SWITCHYARD_SIP_LISTEN",
        value_delimiter = ',',
        default_value = "0.0.0.0:5060"
    )]
    pub sip_listen: Vec<SocketAddr>,

    /// `host[:port]` that phones can reach this edge at (the SIP Service's address), put in
    /// Contact and Record-Route. Default: the first --sip-listen address, or 127.0.0.1 when
    /// that is a wildcard.
    #[arg(long, env = "SWITCHYARD_ADVERTISE")]
    pub advertise: Option<String>,

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

    /// Address for `/metrics`, `/healthz` and `/readyz`.
    #[arg(
        long = "metrics-listen",
        env = "SWITCHYARD_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: SocketAddr,

    /// RFC 3261 T1: round-trip estimate; retransmission and timeout timers derive from it.
    #[arg(long = "timer-t1", value_parser = humantime::parse_duration, default_value = "500ms")]
    pub t1: Duration,

    /// RFC 3261 T2: longest retransmission interval.
    #[arg(long = "timer-t2", value_parser = humantime::parse_duration, default_value = "4s")]
    pub t2: Duration,

    /// RFC 3261 T4: how long a message may stay in the network.
    #[arg(long = "timer-t4", value_parser = humantime::parse_duration, default_value = "5s")]
    pub t4: Duration,

    /// Close a SIP TCP connection after this long without traffic.
    #[arg(long = "tcp-idle-timeout", value_parser = humantime::parse_duration, default_value = "300s")]
    pub tcp_idle_timeout: Duration,

    /// Largest SIP message body accepted.
    #[arg(long = "max-body-bytes", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// On SIGTERM, how long to let transactions in flight finish before exiting.
    #[arg(long = "drain-timeout", value_parser = humantime::parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,

    /// Validate the configuration and manifests, print the routing table, and exit.
    #[arg(long)]
    pub check: bool,
}

/// A configuration problem, naming the flag.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {message}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub message: String,
}

impl Config {
    /// Checks what clap's types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let error = |flag, message: &str| ConfigError {
            flag,
            message: message.to_owned(),
        };
        if self.t1.is_zero() || self.t2 < self.t1 || self.t4.is_zero() {
            return Err(error(
                "--timer-t1",
                "timers must be positive, with T2 >= T1",
            ));
        }
        if let Some(advertise) = &self.advertise
            && (advertise.is_empty() || advertise.contains(['<', '>', ';', ' ', '@']))
        {
            return Err(error("--advertise", "expected host or host:port"));
        }
        if self.sip_listen.is_empty() {
            return Err(error("--sip-listen", "at least one address is needed"));
        }
        Ok(())
    }

    pub fn timers(&self) -> TimerConfig {
        TimerConfig {
            t1: self.t1,
            t2: self.t2,
            t4: self.t4,
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            tcp_idle_timeout: self.tcp_idle_timeout,
            ..Limits::default()
        }
    }

    /// The address to advertise, given the bound SIP addresses.
    pub fn advertised(&self, bound: &[SocketAddr]) -> String {
        if let Some(advertise) = &self.advertise {
            return advertise.clone();
        }
        match bound.first() {
            Some(addr) if !addr.ip().is_unspecified() => addr.to_string(),
            Some(addr) => format!("127.0.0.1:{}", addr.port()),
            None => "127.0.0.1:5060".to_owned(),
        }
    }
}
