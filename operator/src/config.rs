//! Configuration by flags and environment variables (clap).
//!
//! Every flag has an environment variable where a Helm chart or a Pod spec needs one.
//! Anything wrong is reported naming the flag, and the process exits non-zero.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use switchyard_routing::redis_target::{REDIS_URL_HELP, RedisAuth, RedisTarget, RedisUrlError};
use thiserror::Error;

/// Keeps the Redis routing table equal to the PhoneNumber resources the cluster declares.
#[derive(Parser, Debug, Clone)]
#[command(name = "switchyard-operator", version, about, long_about = None)]
pub struct Config {
    /// Redis holding the routing table: one server (redis://, rediss:// for TLS,
    /// redis+unix://), a Redis Cluster (redis+cluster://host:port,host:port) or a
    /// Sentinel-managed master (redis+sentinel://host:26379,.../master-name)
    #[arg(long, env = "SWITCHYARD_REDIS_URL", value_name = "URL", long_help = REDIS_URL_HELP)]
    pub redis_url: String,

    /// Redis password of the data nodes; overrides the password in --redis-url (for a
    /// password kept in a Secret).
    #[arg(
        long,
        env = "SWITCHYARD_REDIS_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub redis_password: Option<String>,

    /// Password of the sentinels themselves, with a redis+sentinel:// URL (none by
    /// default).
    #[arg(
        long,
        env = "SWITCHYARD_REDIS_SENTINEL_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub redis_sentinel_password: Option<String>,

    /// Namespace to watch; repeat the flag (or comma-separate the variable) for several.
    /// Default: all namespaces.
    #[arg(
        long = "namespace",
        env = "SWITCHYARD_NAMESPACES",
        value_name = "NAMESPACE",
        value_delimiter = ',',
        value_parser = parse_namespace
    )]
    pub namespaces: Vec<String>,

    /// How often the whole routing table is compared with the cluster and repaired
    /// (`60s`, `2m`, `500ms`; a bare number is seconds).
    #[arg(
        long,
        env = "SWITCHYARD_RESYNC_INTERVAL",
        value_name = "DURATION",
        default_value = "60s",
        value_parser = parse_duration
    )]
    pub resync_interval: Duration,

    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`.
    #[arg(
        long,
        env = "SWITCHYARD_METRICS_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: SocketAddr,

    /// Name of the coordination.k8s.io/v1 Lease used for leader election.
    #[arg(
        long,
        env = "SWITCHYARD_LEASE_NAME",
        value_name = "NAME",
        default_value = "switchyard-operator",
        value_parser = parse_namespace
    )]
    pub lease_name: String,

    /// Namespace of the Lease. Default: the Pod's namespace (POD_NAMESPACE), else the
    /// namespace of the Kubernetes client configuration.
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE", value_parser = parse_namespace)]
    pub lease_namespace: Option<String>,

    /// This replica's name in the Lease. Default: the Pod name (POD_NAME), else the host
    /// name.
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub identity: Option<String>,

    /// How long a Lease stays valid without renewal; another replica takes over after it.
    /// The leader renews every duration/7 and steps down when it could not renew for 2/3
    /// of it.
    #[arg(
        long,
        env = "SWITCHYARD_LEASE_DURATION",
        value_name = "DURATION",
        default_value = "15s",
        value_parser = parse_duration
    )]
    pub lease_duration: Duration,
}

/// A configuration value that parses but cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("--redis-url: {0}")]
    RedisUrl(#[source] RedisUrlError),
    #[error("--identity: no POD_NAME and no host name found; set --identity")]
    NoIdentity,
    #[error("--resync-interval: must be at least 1s")]
    ResyncTooShort,
    #[error("--lease-duration: must be at least 3s")]
    LeaseTooShort,
}

impl Config {
    /// Checks what clap cannot: the Redis URL, the durations, the identity.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.redis_target()?;
        self.identity()?;
        if self.resync_interval < Duration::from_secs(1) {
            return Err(ConfigError::ResyncTooShort);
        }
        if self.lease_duration < Duration::from_secs(3) {
            return Err(ConfigError::LeaseTooShort);
        }
        Ok(())
    }

    /// The Redis `--redis-url` names, with `--redis-password` and
    /// `--redis-sentinel-password` applied. Does not connect.
    pub fn redis_target(&self) -> Result<RedisTarget, ConfigError> {
        let auth = RedisAuth {
            password: self.redis_password.clone(),
            sentinel_password: self.redis_sentinel_password.clone(),
        };
        RedisTarget::parse(&self.redis_url, &auth).map_err(ConfigError::RedisUrl)
    }

    /// `--identity`, else the host name.
    pub fn identity(&self) -> Result<String, ConfigError> {
        self.identity
            .clone()
            .filter(|i| !i.trim().is_empty())
            .or_else(hostname)
            .ok_or(ConfigError::NoIdentity)
    }
}

fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Parses `500ms`, `60s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 60s, 2m or 500ms"))?;
    let millis = match unit.trim() {
        "ms" => Some(value),
        "" | "s" => value.checked_mul(1_000),
        "m" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use ms, s, m or h"
            ));
        }
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// A Kubernetes object name or namespace: a DNS-1123 label/subdomain.
fn parse_namespace(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a valid Kubernetes name (lower-case letters, digits, '-', '.')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("switchyard-operator").chain(args.iter().copied()))
    }

    #[test]
    fn durations_take_units_and_bare_seconds() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = parse(&["--redis-url", "redis://127.0.0.1:6379/"]).unwrap();
        assert_eq!(c.resync_interval, Duration::from_secs(60));
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.metrics_listen.to_string(), "0.0.0.0:9090");
        assert_eq!(c.lease_name, "switchyard-operator");
        assert!(c.namespaces.is_empty(), "default is every namespace");
    }

    #[test]
    fn namespace_repeats_and_rejects_bad_names() {
        let c = parse(&[
            "--redis-url",
            "redis://r/",
            "--namespace",
            "telephony",
            "--namespace",
            "lab,staging",
        ])
        .unwrap();
        assert_eq!(c.namespaces, ["telephony", "lab", "staging"]);
        let err = parse(&["--redis-url", "redis://r/", "--namespace", "Bad_Name"]).unwrap_err();
        assert!(err.to_string().contains("--namespace"), "{err}");
    }

    #[test]
    fn missing_redis_url_names_the_flag() {
        // SWITCHYARD_REDIS_URL is not set by the test runner.
        if std::env::var_os("SWITCHYARD_REDIS_URL").is_some() {
            return;
        }
        let err = parse(&[]).unwrap_err();
        assert!(err.to_string().contains("--redis-url"), "{err}");
    }

    #[test]
    fn bad_redis_url_and_durations_name_their_flag() {
        let c = parse(&["--redis-url", "http://not-redis/"]).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("--redis-url: "), "{err}");

        let c = parse(&["--redis-url", "redis://r/", "--resync-interval", "10ms"]).unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("--resync-interval")
        );

        let err = parse(&["--redis-url", "redis://r/", "--lease-duration", "fast"]).unwrap_err();
        assert!(err.to_string().contains("--lease-duration"), "{err}");
    }

    #[test]
    fn password_flag_overrides_the_url_password() {
        let c = parse(&[
            "--redis-url",
            "redis://:in-url@127.0.0.1:6379/2",
            "--redis-password",
            "from-secret",
        ])
        .unwrap();
        let RedisTarget::Single(info) = c.redis_target().unwrap() else {
            panic!("a redis:// URL is one server");
        };
        assert_eq!(info.redis_settings().password(), Some("from-secret"));
        assert_eq!(info.redis_settings().db(), 2);

        let c = parse(&["--redis-url", "redis://:in-url@127.0.0.1:6379/"]).unwrap();
        let RedisTarget::Single(info) = c.redis_target().unwrap() else {
            panic!("a redis:// URL is one server");
        };
        assert_eq!(info.redis_settings().password(), Some("in-url"));
    }

    #[test]
    fn tls_unix_socket_cluster_and_sentinel_urls_are_accepted() {
        for (url, kind) in [
            ("rediss://redis.example:6380/0", "server"),
            ("redis+unix:///run/redis.sock", "server"),
            ("redis+cluster://r-0:6379,r-1:6379,r-2:6379", "cluster"),
            ("rediss+sentinel://s-0,s-1,s-2/mymaster", "sentinel"),
        ] {
            let c = parse(&["--redis-url", url]).unwrap();
            assert_eq!(c.redis_target().map(|t| t.kind()).ok(), Some(kind), "{url}");
        }
        let c = parse(&[
            "--redis-url",
            "redis+sentinel://s-0/mymaster",
            "--redis-sentinel-password",
            "sentinel-secret",
        ])
        .unwrap();
        let RedisTarget::Sentinel { sentinels, .. } = c.redis_target().unwrap() else {
            panic!("a redis+sentinel:// URL is Sentinel");
        };
        assert_eq!(
            sentinels[0].redis_settings().password(),
            Some("sentinel-secret")
        );
    }

    #[test]
    fn identity_flag_wins_over_the_host_name() {
        let c = parse(&["--redis-url", "redis://r/", "--identity", "pod-7"]).unwrap();
        assert_eq!(c.identity().unwrap(), "pod-7");
    }
}
