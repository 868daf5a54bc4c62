//! Command-line flags and environment variables of `switchyard-edge`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use switchyard_routing::{RedisAuth, RedisTarget, RedisUrlError};

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

    /// PhoneNumber manifests (files or directories of *.yaml) to serve in standalone mode
    /// (no Redis: routes and call state stay in this process). Repeatable.
    #[arg(
        long = "phone-numbers",
        env = "SWITCHYARD_PHONE_NUMBERS",
        value_name = "FILE|DIR",
        value_delimiter = ',',
        required_unless_present = "redis_url"
    )]
    pub phone_numbers: Vec<PathBuf>,

    /// Redis holding the routing table (written by the operator) and all call state,
    /// shared by every edge process: one server (redis://, rediss:// for TLS), a Redis
    /// Cluster (redis+cluster://host:port,host:port) or a Sentinel-managed master
    /// (redis+sentinel://host:26379,.../master-name). Absent: standalone mode with an
    /// in-memory store.
    #[arg(
        long = "redis-url",
        env = "SWITCHYARD_REDIS_URL",
        value_name = "URL",
        long_help = switchyard_routing::redis_target::REDIS_URL_HELP
    )]
    pub redis_url: Option<String>,

    /// Redis password of the data nodes, overriding the URL's (the Helm chart passes it
    /// from a Secret).
    #[arg(
        long = "redis-password",
        env = "SWITCHYARD_REDIS_PASSWORD",
        hide_env_values = true
    )]
    pub redis_password: Option<String>,

    /// Password of the sentinels themselves, with a redis+sentinel:// URL (none by
    /// default).
    #[arg(
        long = "redis-sentinel-password",
        env = "SWITCHYARD_REDIS_SENTINEL_PASSWORD",
        hide_env_values = true
    )]
    pub redis_sentinel_password: Option<String>,

    /// How long a Redis command may take before the edge treats Redis as unavailable
    /// (new calls then get 503 with Retry-After).
    #[arg(long = "redis-timeout", value_parser = humantime::parse_duration, default_value = "1s")]
    pub redis_timeout: Duration,

    /// `host[:port]` where `<Number>` dials are sent. Default: the edge itself, so numbers
    /// declared as PhoneNumbers run their own voiceUrl (the seed's number B).
    #[arg(long = "outbound-proxy", env = "SWITCHYARD_OUTBOUND_PROXY")]
    pub outbound_proxy: Option<String>,

    /// This process's address for Via (responses come back to it); in Kubernetes the pod
    /// IP. Default: the --sip-listen address, or the advertised host when that is a
    /// wildcard.
    #[arg(long = "pod-ip", env = "POD_IP")]
    pub pod_ip: Option<std::net::IpAddr>,

    /// This process's name, owner of the calls it sets up. Default: hostname and process id.
    #[arg(long = "pod-name", env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// AccountSid sent to RCML applications.
    #[arg(
        long = "account-sid",
        env = "SWITCHYARD_ACCOUNT_SID",
        default_value = "ACswitchyard"
    )]
    pub account_sid: String,

    /// Timeout of one RCML fetch.
    #[arg(long = "rcml-timeout", value_parser = humantime::parse_duration, default_value = "5s")]
    pub rcml_timeout: Duration,

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

    /// Install-wide REFER target policy: a regular expression (Rust `regex` syntax, matched
    /// against the whole ReferTarget and the whole Refer-To URI, see the PhoneNumber field
    /// `referTargetAllow`) for the numbers whose own `referTargetAllow` is empty.
    /// Repeatable. Env `SWITCHYARD_REFER_TARGET_ALLOW`, comma-separated, is read only when
    /// no flag is given (the flag takes no delimiter, so patterns like `\d{1,3}` keep their
    /// comma). None at all: every target is allowed.
    #[arg(long = "refer-target-allow", value_name = "REGEX")]
    pub refer_target_allow: Vec<String>,

    /// Validate the configuration and manifests, print the routing table, and exit.
    #[arg(long)]
    pub check: bool,
}

/// The environment variable behind --refer-target-allow.
pub const REFER_TARGET_ALLOW_ENV: &str = "SWITCHYARD_REFER_TARGET_ALLOW";

/// A comma-separated list, items trimmed, empty items dropped.
fn split_env_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
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
        if let Some(Err(e)) = self.redis_target() {
            return Err(error("--redis-url", &e.to_string()));
        }
        if let Some(proxy) = &self.outbound_proxy
            && (proxy.is_empty() || proxy.contains(['<', '>', ';', ' ', '@']))
        {
            return Err(error("--outbound-proxy", "expected host or host:port"));
        }
        if self.sip_listen.is_empty() {
            return Err(error("--sip-listen", "at least one address is needed"));
        }
        self.refer_target_policy()?;
        Ok(())
    }

    /// The install-wide REFER target patterns, compiled (anchored to the whole string),
    /// from --refer-target-allow or else `SWITCHYARD_REFER_TARGET_ALLOW`.
    pub fn refer_target_policy(&self) -> Result<Vec<regex::Regex>, ConfigError> {
        let from_env;
        let patterns: &[String] = if self.refer_target_allow.is_empty() {
            from_env = std::env::var(REFER_TARGET_ALLOW_ENV)
                .map(|v| split_env_list(&v))
                .unwrap_or_default();
            &from_env
        } else {
            &self.refer_target_allow
        };
        patterns
            .iter()
            .map(|pattern| {
                switchyard_routing::validate::compile_pattern(pattern).map_err(|e| ConfigError {
                    flag: "--refer-target-allow",
                    message: format!("{pattern:?} is not a valid regular expression: {e}"),
                })
            })
            .collect()
    }

    /// The Redis that --redis-url names, with the passwords applied; `None` in
    /// standalone mode. Does not connect.
    pub fn redis_target(&self) -> Option<Result<RedisTarget, RedisUrlError>> {
        let url = self.redis_url.as_ref()?;
        let auth = RedisAuth {
            password: self.redis_password.clone(),
            sentinel_password: self.redis_sentinel_password.clone(),
        };
        Some(RedisTarget::parse(url, &auth))
    }

    /// The address for Via headers.
    pub fn via_sent_by(&self, bound: &[SocketAddr], advertised: &str) -> String {
        let first = bound.first().copied();
        let port = first.map(|a| a.port()).unwrap_or(5060);
        let ip = self
            .pod_ip
            .or_else(|| first.map(|a| a.ip()).filter(|ip| !ip.is_unspecified()));
        match ip {
            Some(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
            Some(ip) => format!("{ip}:{port}"),
            None => {
                let host = advertised
                    .rsplit_once(':')
                    .map(|(h, _)| h)
                    .unwrap_or(advertised);
                format!("{host}:{port}")
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut argv = vec!["switchyard-edge", "--phone-numbers", "examples"];
        argv.extend_from_slice(args);
        Config::parse_from(argv)
    }

    #[test]
    fn refer_target_allow_flags_compile_anchored_and_keep_their_commas() {
        let policy = config(&[
            "--refer-target-allow",
            r"\+1555\d{1,7}",
            "--refer-target-allow",
            "bob",
        ])
        .refer_target_policy()
        .unwrap();
        assert_eq!(policy.len(), 2);
        assert!(policy[0].is_match("+1555123"));
        assert!(!policy[1].is_match("bobby"), "anchored to the whole target");
    }

    #[test]
    fn a_refer_target_allow_that_does_not_compile_names_the_flag() {
        let error = config(&["--refer-target-allow", "(+"])
            .validate()
            .unwrap_err();
        assert_eq!(error.flag, "--refer-target-allow");
    }

    #[test]
    fn the_env_list_is_comma_separated() {
        assert_eq!(split_env_list(" a, b ,,c"), ["a", "b", "c"]);
        assert!(split_env_list("").is_empty());
    }
}
