//! Command-line flags and environment variables of `switchyard-edge`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rsip::Method;
use switchyard_routing::{RedisAuth, RedisTarget, RedisUrlError};

use crate::auth::AuthConfig;
use crate::auth::credentials::Credentials;
use crate::auth::digest::Algorithm;
use crate::cidr::Cidr;
use crate::ratelimit::{CallLimit, SourceLimits};
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

    /// Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760) for the clients in this
    /// file: one `user:password` line each (or `user:md5:HA1` / `user:sha-256:HA1`), e.g.
    /// a Kubernetes Secret mounted as a file. Given: new calls (INVITE) and REFERs must
    /// authenticate (see --auth-methods, --auth-trusted). Absent: no authentication.
    #[arg(
        long = "auth-credentials",
        env = "SWITCHYARD_AUTH_CREDENTIALS",
        value_name = "FILE"
    )]
    pub auth_credentials: Option<PathBuf>,

    /// Realm of the digest challenges (an HA1 in --auth-credentials is for this realm).
    #[arg(
        long = "auth-realm",
        env = "SWITCHYARD_AUTH_REALM",
        default_value = "switchyard"
    )]
    pub auth_realm: String,

    /// Secret signing the nonces, at least 16 bytes; the same for every edge process, so
    /// any of them verifies a nonce another issued. Required with --auth-credentials.
    #[arg(
        long = "auth-nonce-secret",
        env = "SWITCHYARD_AUTH_NONCE_SECRET",
        hide_env_values = true
    )]
    pub auth_nonce_secret: Option<String>,

    /// How long a nonce is accepted. A captured request can be replayed within it (no
    /// state is shared between processes to count nonce uses): keep it short.
    #[arg(
        long = "auth-nonce-lifetime",
        env = "SWITCHYARD_AUTH_NONCE_LIFETIME",
        value_parser = humantime::parse_duration,
        default_value = "5m"
    )]
    pub auth_nonce_lifetime: Duration,

    /// Requests that must authenticate: INVITE (new calls; re-INVITEs are not
    /// challenged) and REFER. Comma-separated.
    #[arg(
        long = "auth-methods",
        env = "SWITCHYARD_AUTH_METHODS",
        value_delimiter = ',',
        default_value = "INVITE,REFER"
    )]
    pub auth_methods: Vec<String>,

    /// Digest algorithms offered, in order of preference: SHA-256 and/or MD5.
    #[arg(
        long = "auth-algorithms",
        env = "SWITCHYARD_AUTH_ALGORITHMS",
        value_delimiter = ',',
        default_value = "SHA-256,MD5"
    )]
    pub auth_algorithms: Vec<String>,

    /// Sources that need not authenticate: IP addresses or CIDR ranges (a SIP trunk).
    /// Repeatable or comma-separated.
    #[arg(
        long = "auth-trusted",
        env = "SWITCHYARD_AUTH_TRUSTED",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub auth_trusted: Vec<String>,

    /// Requests a second that one source address may send to this process, on average
    /// (0: no limit). Over it, requests get 503 with Retry-After before any Redis or RCML
    /// work. The limit is per edge process: N pods accept N times as much.
    #[arg(
        long = "rate-limit-per-source",
        env = "SWITCHYARD_RATE_LIMIT_PER_SOURCE",
        default_value_t = 50.0
    )]
    pub rate_limit_per_source: f64,

    /// Requests one source address may send at once before --rate-limit-per-source
    /// applies.
    #[arg(
        long = "rate-limit-burst",
        env = "SWITCHYARD_RATE_LIMIT_BURST",
        default_value_t = 100.0
    )]
    pub rate_limit_burst: f64,

    /// Most source addresses tracked at once (memory bound: ~100 bytes each). When full,
    /// new sources share one bucket.
    #[arg(
        long = "rate-limit-sources",
        env = "SWITCHYARD_RATE_LIMIT_SOURCES",
        default_value_t = 65_536
    )]
    pub rate_limit_sources: usize,

    /// Sources never rate limited: IP addresses or CIDR ranges (a trunk, a load balancer
    /// that sends everything from one address). Repeatable or comma-separated.
    #[arg(
        long = "rate-limit-exempt",
        env = "SWITCHYARD_RATE_LIMIT_EXEMPT",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub rate_limit_exempt: Vec<String>,

    /// REFERs one call may send per --refer-limit-window, through any edge process (0: no
    /// limit). Past it, REFERs get 503 with Retry-After (REFER storms).
    #[arg(
        long = "refer-limit-per-call",
        env = "SWITCHYARD_REFER_LIMIT_PER_CALL",
        default_value_t = 10
    )]
    pub refer_limit_per_call: u32,

    /// The window of --refer-limit-per-call.
    #[arg(
        long = "refer-limit-window",
        env = "SWITCHYARD_REFER_LIMIT_WINDOW",
        value_parser = humantime::parse_duration,
        default_value = "60s"
    )]
    pub refer_limit_window: Duration,

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

/// IP addresses or CIDR ranges given to `flag`.
fn parse_cidrs(flag: &'static str, values: &[String]) -> Result<Vec<Cidr>, ConfigError> {
    values
        .iter()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.parse().map_err(|e: crate::cidr::CidrError| ConfigError {
                flag,
                message: e.to_string(),
            })
        })
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
        self.auth_config()?;
        self.source_limits()?;
        self.refer_limit()?;
        Ok(())
    }

    /// Digest authentication from the --auth-* flags (reads --auth-credentials); `None`
    /// without --auth-credentials.
    pub fn auth_config(&self) -> Result<Option<AuthConfig>, ConfigError> {
        let Some(path) = &self.auth_credentials else {
            return Ok(None);
        };
        let error = |flag, message: String| ConfigError { flag, message };
        let credentials = Credentials::load(path)
            .map_err(|e| error("--auth-credentials", format!("{}: {e}", path.display())))?;
        let secret = self.auth_nonce_secret.as_deref().unwrap_or_default();
        if secret.len() < 16 {
            return Err(error(
                "--auth-nonce-secret",
                "required with --auth-credentials, at least 16 bytes (the same on every edge)"
                    .into(),
            ));
        }
        let realm = self.auth_realm.trim();
        if realm.is_empty() || realm.contains(['"', '\\', '\r', '\n']) {
            return Err(error(
                "--auth-realm",
                "expected a non-empty realm without quotes or backslashes".into(),
            ));
        }
        if self.auth_nonce_lifetime < Duration::from_secs(1) {
            return Err(error("--auth-nonce-lifetime", "at least 1s".into()));
        }
        let mut methods = Vec::new();
        for name in self.auth_methods.iter().map(|m| m.trim()) {
            let method = match name.to_ascii_uppercase().as_str() {
                "INVITE" => Method::Invite,
                "REFER" => Method::Refer,
                _ => {
                    return Err(error(
                        "--auth-methods",
                        format!("{name:?}: expected INVITE and/or REFER"),
                    ));
                }
            };
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        if methods.is_empty() {
            return Err(error(
                "--auth-methods",
                "expected INVITE and/or REFER".into(),
            ));
        }
        let mut algorithms = Vec::new();
        for name in self.auth_algorithms.iter().map(|a| a.trim()) {
            let algorithm = Algorithm::from_name(name).ok_or_else(|| {
                error(
                    "--auth-algorithms",
                    format!("{name:?}: expected SHA-256 and/or MD5"),
                )
            })?;
            if !algorithms.contains(&algorithm) {
                algorithms.push(algorithm);
            }
        }
        if algorithms.is_empty() {
            return Err(error(
                "--auth-algorithms",
                "expected SHA-256 and/or MD5".into(),
            ));
        }
        Ok(Some(AuthConfig {
            realm: realm.to_owned(),
            credentials,
            nonce_secret: secret.as_bytes().to_vec(),
            nonce_lifetime: self.auth_nonce_lifetime,
            methods,
            trusted: parse_cidrs("--auth-trusted", &self.auth_trusted)?,
            algorithms,
        }))
    }

    /// The per-source rate limits; `None` when --rate-limit-per-source is 0.
    pub fn source_limits(&self) -> Result<Option<SourceLimits>, ConfigError> {
        let error = |flag, message: &str| ConfigError {
            flag,
            message: message.to_owned(),
        };
        let rate = self.rate_limit_per_source;
        if !rate.is_finite() || rate < 0.0 {
            return Err(error(
                "--rate-limit-per-source",
                "expected requests per second, 0 or more",
            ));
        }
        let exempt = parse_cidrs("--rate-limit-exempt", &self.rate_limit_exempt)?;
        if rate == 0.0 {
            return Ok(None);
        }
        if !self.rate_limit_burst.is_finite() || self.rate_limit_burst < 1.0 {
            return Err(error("--rate-limit-burst", "expected 1 or more requests"));
        }
        if self.rate_limit_sources == 0 {
            return Err(error("--rate-limit-sources", "expected 1 or more sources"));
        }
        Ok(Some(SourceLimits {
            rate,
            burst: self.rate_limit_burst,
            max_sources: self.rate_limit_sources,
            exempt,
        }))
    }

    /// The per-call REFER limit.
    pub fn refer_limit(&self) -> Result<CallLimit, ConfigError> {
        if self.refer_limit_per_call == 0 {
            return Ok(CallLimit::OFF);
        }
        if self.refer_limit_window < Duration::from_secs(1) {
            return Err(ConfigError {
                flag: "--refer-limit-window",
                message: "at least 1s".to_owned(),
            });
        }
        Ok(CallLimit {
            per_window: self.refer_limit_per_call,
            window: self.refer_limit_window,
        })
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

    fn credentials_file(text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "switchyard-credentials-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn auth_is_off_without_credentials_and_configured_with_them() {
        assert!(config(&[]).auth_config().unwrap().is_none());
        let path = credentials_file("alice:pw\n");
        let auth = config(&[
            "--auth-credentials",
            path.to_str().unwrap(),
            "--auth-nonce-secret",
            "0123456789abcdef",
            "--auth-methods",
            "refer",
            "--auth-algorithms",
            "md5",
            "--auth-trusted",
            "192.0.2.0/24,198.51.100.7",
        ])
        .auth_config()
        .unwrap()
        .unwrap();
        assert_eq!(auth.methods, [Method::Refer]);
        assert_eq!(auth.algorithms, [Algorithm::Md5]);
        assert_eq!(auth.trusted.len(), 2);
        assert_eq!(auth.realm, "switchyard");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn bad_auth_settings_name_their_flag() {
        let path = credentials_file("alice:pw\n");
        let file = path.to_str().unwrap();
        let secret = ["--auth-nonce-secret", "0123456789abcdef"];
        let cases: [(&[&str], &str); 7] = [
            (
                &["--auth-credentials", "/nonexistent/credentials"],
                "--auth-credentials",
            ),
            (&["--auth-credentials", file], "--auth-nonce-secret"),
            (
                &["--auth-credentials", file, "--auth-nonce-secret", "short"],
                "--auth-nonce-secret",
            ),
            (
                &[
                    "--auth-credentials",
                    file,
                    secret[0],
                    secret[1],
                    "--auth-methods",
                    "BYE",
                ],
                "--auth-methods",
            ),
            (
                &[
                    "--auth-credentials",
                    file,
                    secret[0],
                    secret[1],
                    "--auth-algorithms",
                    "SHA-1",
                ],
                "--auth-algorithms",
            ),
            (
                &[
                    "--auth-credentials",
                    file,
                    secret[0],
                    secret[1],
                    "--auth-trusted",
                    "trunk",
                ],
                "--auth-trusted",
            ),
            (
                &[
                    "--auth-credentials",
                    file,
                    secret[0],
                    secret[1],
                    "--auth-realm",
                    "a\"b",
                ],
                "--auth-realm",
            ),
        ];
        for (args, flag) in cases {
            let error = config(args).validate().unwrap_err();
            assert_eq!(error.flag, flag, "{args:?}: {error}");
        }
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn rate_limits_have_defaults_can_be_switched_off_and_refuse_bad_values() {
        let limits = config(&[]).source_limits().unwrap().unwrap();
        assert_eq!((limits.rate, limits.burst), (50.0, 100.0));
        assert!(
            config(&["--rate-limit-per-source", "0"])
                .source_limits()
                .unwrap()
                .is_none()
        );
        assert_eq!(config(&[]).refer_limit().unwrap().per_window, 10);
        assert!(
            config(&["--refer-limit-per-call", "0"])
                .refer_limit()
                .unwrap()
                .is_off()
        );
        for (arg, flag) in [
            ("--rate-limit-per-source=-1", "--rate-limit-per-source"),
            ("--rate-limit-burst=0.5", "--rate-limit-burst"),
            ("--rate-limit-sources=0", "--rate-limit-sources"),
            ("--rate-limit-exempt=10.0.0.0/40", "--rate-limit-exempt"),
            ("--refer-limit-window=0s", "--refer-limit-window"),
        ] {
            assert_eq!(config(&[arg]).validate().unwrap_err().flag, flag, "{arg}");
        }
    }

    #[test]
    fn the_env_list_is_comma_separated() {
        assert_eq!(split_env_list(" a, b ,,c"), ["a", "b", "c"]);
        assert!(split_env_list("").is_empty());
    }
}
