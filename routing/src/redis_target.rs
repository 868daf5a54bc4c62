//! Which Redis a binary talks to: one server, a Redis Cluster, or a Sentinel-managed
//! master. Both binaries take the same `--redis-url` grammar, parsed here:
//!
//! | URL | deployment |
//! |-----|------------|
//! | `redis://[user[:password]@]host[:port][/db]` | one server (`rediss://` for TLS) |
//! | `redis+unix:///path/to/socket[?db=N]` | one server on a Unix socket |
//! | `redis+cluster://[user[:password]@]host:port[,host:port...]` | Redis Cluster: seed nodes, the rest is discovered (`rediss+cluster://` for TLS) |
//! | `redis+sentinel://[user[:password]@]host:port[,host:port...]/master-name[/db]` | the master Sentinel names `master-name` (`rediss+sentinel://`: TLS to sentinels and data nodes) |
//!
//! Credentials in the URL (and a password given apart from it, e.g. from a Kubernetes
//! Secret, which wins) are those of the data nodes. Sentinels often have no password, or
//! one of their own: that is given apart too. Default ports: 6379 for data nodes, 26379
//! for sentinels.
//!
//! The redis crate parses the single-server forms but has no URL for a cluster or for
//! Sentinel, hence this module.

use std::fmt;

use redis::{ConnectionInfo, IntoConnectionInfo};
use thiserror::Error;

/// `--help` text of `--redis-url`, the same for both binaries.
pub const REDIS_URL_HELP: &str = "\
Redis holding the routing table (and, for the edge, all call state). One of:
  redis://[user[:password]@]host[:port][/db]     one server (rediss:// for TLS)
  redis+unix:///path/to/socket[?db=N]             one server on a Unix socket
  redis+cluster://[user[:password]@]host:port[,host:port...]
                                                  Redis Cluster: a few seed nodes, the
                                                  rest is discovered (rediss+cluster://
                                                  for TLS; database 0 only)
  redis+sentinel://[user[:password]@]host:port[,host:port...]/master-name[/db]
                                                  the master that these sentinels name,
                                                  followed across failovers
                                                  (rediss+sentinel:// for TLS to both)
Credentials in the URL are the data nodes'; --redis-password overrides them and
--redis-sentinel-password authenticates to the sentinels. Default ports: 6379, and
26379 for sentinels. TLS verifies certificates against the system's roots.";

/// Passwords kept out of the URL (Kubernetes Secrets), applied on top of it.
#[derive(Debug, Clone, Default)]
pub struct RedisAuth {
    /// For the data nodes (single server, cluster nodes, Sentinel's master and replicas).
    pub password: Option<String>,
    /// For the sentinels themselves.
    pub sentinel_password: Option<String>,
}

#[derive(Debug, Error)]
pub enum RedisUrlError {
    #[error(
        "unsupported scheme in {0:?}: use redis://, rediss://, redis+unix://, redis+cluster://, rediss+cluster://, redis+sentinel:// or rediss+sentinel://"
    )]
    Scheme(String),
    #[error("no host in {0:?}")]
    NoHost(String),
    #[error("bad host {host:?}: {why}")]
    Host { host: String, why: &'static str },
    #[error(
        "a Sentinel URL names its master after the hosts: redis+sentinel://host:26379/<master-name>"
    )]
    NoMasterName,
    #[error("bad database {0:?}: a number, and 0 in cluster mode")]
    Database(String),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
}

/// A parsed `--redis-url`. Does not connect; [`crate::redis_connection`] does.
#[derive(Clone)]
pub enum RedisTarget {
    Single(ConnectionInfo),
    Cluster {
        /// Seed nodes; the client learns the others from `CLUSTER SLOTS`.
        nodes: Vec<ConnectionInfo>,
    },
    Sentinel {
        sentinels: Vec<ConnectionInfo>,
        master_name: String,
        /// Credentials, database and TLS for the master and replicas.
        node: redis::RedisConnectionInfo,
        tls: bool,
    },
}

/// One `host[:port]` of a URL's host list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPort {
    host: String,
    port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn parse_host(text: &str, default_port: u16) -> Result<HostPort, RedisUrlError> {
    let bad = |why| RedisUrlError::Host {
        host: text.to_owned(),
        why,
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("junk after ']'"))?,
                ),
            ),
        }
    } else if text.matches(':').count() > 1 {
        return Err(bad("an IPv6 address goes in brackets: [::1]:6379"));
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(bad("empty host name"));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || "/?#@,".contains(c))
    {
        return Err(bad("not a host name"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
    };
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

/// The parts of a multi-host URL: `scheme://[userinfo@]hosts[/path]`.
struct MultiHostUrl<'a> {
    userinfo: Option<&'a str>,
    hosts: Vec<HostPort>,
    path: Vec<&'a str>,
}

fn split_multi_host<'a>(
    url: &str,
    rest: &'a str,
    default_port: u16,
) -> Result<MultiHostUrl<'a>, RedisUrlError> {
    // Query strings and fragments have no meaning here: refuse them rather than guess.
    if rest.contains(['?', '#']) {
        return Err(RedisUrlError::Host {
            host: rest.to_owned(),
            why: "query strings and fragments are not supported in cluster and Sentinel URLs",
        });
    }
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, path),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let hosts = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| parse_host(h, default_port))
        .collect::<Result<Vec<_>, _>>()?;
    if hosts.is_empty() {
        return Err(RedisUrlError::NoHost(redact(url)));
    }
    let path = path.split('/').filter(|p| !p.is_empty()).collect();
    Ok(MultiHostUrl {
        userinfo,
        hosts,
        path,
    })
}

/// A single-node ConnectionInfo for `host`, parsed by the redis crate from a URL we build,
/// so percent-encoding and TLS are handled as for any `redis://` URL.
fn node_info(
    tls: bool,
    userinfo: Option<&str>,
    host: &HostPort,
    db: i64,
) -> Result<ConnectionInfo, RedisUrlError> {
    let scheme = if tls { "rediss" } else { "redis" };
    let credentials = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    Ok(format!("{scheme}://{credentials}{host}/{db}").into_connection_info()?)
}

fn with_password(info: ConnectionInfo, password: Option<&str>) -> ConnectionInfo {
    match password {
        Some(password) => {
            let settings = info.redis_settings().clone().set_password(password);
            info.set_redis_settings(settings)
        }
        None => info,
    }
}

fn parse_db(text: &str) -> Result<i64, RedisUrlError> {
    text.parse::<i64>()
        .ok()
        .filter(|db| *db >= 0)
        .ok_or_else(|| RedisUrlError::Database(text.to_owned()))
}

/// The URL with any password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            let shown = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{shown}{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

impl RedisTarget {
    /// Parses a `--redis-url` (see the module docs) and applies `auth` on top of it.
    pub fn parse(url: &str, auth: &RedisAuth) -> Result<Self, RedisUrlError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| RedisUrlError::Scheme(redact(url)))?;
        match scheme {
            "redis" | "rediss" | "redis+unix" | "unix" => {
                let info = url.into_connection_info()?;
                Ok(RedisTarget::Single(with_password(
                    info,
                    auth.password.as_deref(),
                )))
            }
            "redis+cluster" | "rediss+cluster" => {
                let tls = scheme.starts_with("rediss");
                let parts = split_multi_host(url, rest, 6379)?;
                // Redis Cluster has database 0 only.
                if let Some(db) = parts.path.first()
                    && (parts.path.len() > 1 || parse_db(db)? != 0)
                {
                    return Err(RedisUrlError::Database(parts.path.join("/")));
                }
                let nodes = parts
                    .hosts
                    .iter()
                    .map(|h| {
                        node_info(tls, parts.userinfo, h, 0)
                            .map(|i| with_password(i, auth.password.as_deref()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(RedisTarget::Cluster { nodes })
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let tls = scheme.starts_with("rediss");
                let parts = split_multi_host(url, rest, 26379)?;
                let (master_name, db) = match parts.path.as_slice() {
                    [] => return Err(RedisUrlError::NoMasterName),
                    [name] => (*name, 0),
                    [name, db] => (*name, parse_db(db)?),
                    _ => return Err(RedisUrlError::Database(parts.path.join("/"))),
                };
                // The URL's credentials are the data nodes'; parse them through a
                // throw-away node URL so their percent-encoding is undone the usual way.
                let node = with_password(
                    node_info(tls, parts.userinfo, &parts.hosts[0], db)?,
                    auth.password.as_deref(),
                )
                .redis_settings()
                .clone();
                let sentinels = parts
                    .hosts
                    .iter()
                    .map(|h| {
                        node_info(tls, None, h, 0)
                            .map(|i| with_password(i, auth.sentinel_password.as_deref()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(RedisTarget::Sentinel {
                    sentinels,
                    master_name: master_name.to_owned(),
                    node,
                    tls,
                })
            }
            _ => Err(RedisUrlError::Scheme(redact(url))),
        }
    }

    /// A name for logs and errors, without credentials.
    pub fn kind(&self) -> &'static str {
        match self {
            RedisTarget::Single(_) => "server",
            RedisTarget::Cluster { .. } => "cluster",
            RedisTarget::Sentinel { .. } => "sentinel",
        }
    }
}

impl From<redis::Client> for RedisTarget {
    fn from(client: redis::Client) -> Self {
        RedisTarget::Single(client.get_connection_info().clone())
    }
}

impl From<ConnectionInfo> for RedisTarget {
    fn from(info: ConnectionInfo) -> Self {
        RedisTarget::Single(info)
    }
}

/// Addresses without credentials.
impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |infos: &[ConnectionInfo]| {
            infos
                .iter()
                .map(|i| i.addr().to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            RedisTarget::Single(info) => write!(f, "server {}", info.addr()),
            RedisTarget::Cluster { nodes } => write!(f, "cluster seeded by {}", list(nodes)),
            RedisTarget::Sentinel {
                sentinels,
                master_name,
                ..
            } => write!(f, "master {master_name:?} of sentinels {}", list(sentinels)),
        }
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTarget({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::ConnectionAddr;

    fn parse(url: &str) -> Result<RedisTarget, RedisUrlError> {
        RedisTarget::parse(url, &RedisAuth::default())
    }

    fn tcp(info: &ConnectionInfo) -> (String, u16, bool) {
        match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port, false),
            ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port, true),
            other => panic!("not TCP: {other:?}"),
        }
    }

    #[test]
    fn single_server_urls_are_the_redis_crate_s() {
        let RedisTarget::Single(info) = parse("redis://:pw@db.example:6380/3").unwrap() else {
            panic!("not single");
        };
        assert_eq!(tcp(&info), ("db.example".into(), 6380, false));
        assert_eq!(info.redis_settings().password(), Some("pw"));
        assert_eq!(info.redis_settings().db(), 3);
        let RedisTarget::Single(info) = parse("rediss://db.example").unwrap() else {
            panic!("not single");
        };
        assert_eq!(tcp(&info), ("db.example".into(), 6379, true));
        assert!(matches!(
            parse("redis+unix:///run/redis.sock").unwrap(),
            RedisTarget::Single(_)
        ));
    }

    #[test]
    fn cluster_urls_list_seed_nodes_with_shared_credentials() {
        let RedisTarget::Cluster { nodes } =
            parse("redis+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,[fd00::3]:7002").unwrap()
        else {
            panic!("not cluster");
        };
        let addrs: Vec<_> = nodes.iter().map(tcp).collect();
        assert_eq!(
            addrs,
            [
                ("10.0.0.1".into(), 7000, false),
                ("10.0.0.2".into(), 6379, false),
                ("fd00::3".into(), 7002, false),
            ]
        );
        for node in &nodes {
            assert_eq!(node.redis_settings().username(), Some("app"));
            assert_eq!(node.redis_settings().password(), Some("s@cret"));
        }
        let RedisTarget::Cluster { nodes } = parse("rediss+cluster://h:7000/0").unwrap() else {
            panic!("not cluster");
        };
        assert!(tcp(&nodes[0]).2, "rediss+cluster is TLS");
    }

    #[test]
    fn sentinel_urls_name_the_master_after_the_sentinels() {
        let auth = RedisAuth {
            password: Some("data-secret".into()),
            sentinel_password: Some("sentinel-secret".into()),
        };
        let RedisTarget::Sentinel {
            sentinels,
            master_name,
            node,
            tls,
        } = RedisTarget::parse("redis+sentinel://:inurl@s1,s2:5000,s3/mymaster/2", &auth).unwrap()
        else {
            panic!("not sentinel");
        };
        assert_eq!(master_name, "mymaster");
        assert!(!tls);
        let addrs: Vec<_> = sentinels.iter().map(tcp).collect();
        assert_eq!(
            addrs,
            [
                ("s1".into(), 26379, false),
                ("s2".into(), 5000, false),
                ("s3".into(), 26379, false),
            ]
        );
        // The separate password wins over the URL's; sentinels get their own.
        assert_eq!(node.password(), Some("data-secret"));
        assert_eq!(node.db(), 2);
        assert_eq!(
            sentinels[0].redis_settings().password(),
            Some("sentinel-secret")
        );
        let RedisTarget::Sentinel { node, .. } = parse("redis+sentinel://:inurl@s1/m").unwrap()
        else {
            panic!("not sentinel");
        };
        assert_eq!(node.password(), Some("inurl"));
    }

    #[test]
    fn a_separate_password_overrides_the_url_s() {
        let auth = RedisAuth {
            password: Some("from-secret".into()),
            sentinel_password: None,
        };
        for url in ["redis://:old@h/1", "redis+cluster://:old@h:7000"] {
            let target = RedisTarget::parse(url, &auth).unwrap();
            let info = match &target {
                RedisTarget::Single(info) => info,
                RedisTarget::Cluster { nodes } => &nodes[0],
                RedisTarget::Sentinel { .. } => unreachable!(),
            };
            assert_eq!(
                info.redis_settings().password(),
                Some("from-secret"),
                "{url}"
            );
        }
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("http://h", "unsupported scheme"),
            ("h:6379", "unsupported scheme"),
            ("redis+cluster://", "no host"),
            ("redis+cluster://h:notaport", "port"),
            ("redis+cluster://h:0", "port"),
            ("redis+cluster://::1:7000", "brackets"),
            ("redis+cluster://[::1:7000", "unclosed"),
            ("redis+cluster://h:7000/1", "database"),
            ("redis+cluster://h:7000?x=1", "query"),
            ("redis+sentinel://s1:26379", "names its master"),
            ("redis+sentinel://s1/m/x", "database"),
            ("redis+sentinel://s1/m/1/2", "database"),
        ];
        for (url, expected) in cases {
            match parse(url) {
                Ok(target) => panic!("{url} parsed as {target}"),
                Err(e) => assert!(
                    e.to_string().to_lowercase().contains(expected),
                    "{url}: {e} (expected {expected:?})"
                ),
            }
        }
    }

    #[test]
    fn messages_do_not_show_passwords() {
        assert_eq!(redact("redis://user:pw@h:1/0"), "redis://user:***@h:1/0");
        assert_eq!(redact("redis://pw@h"), "redis://***@h");
        assert_eq!(redact("redis://h/0"), "redis://h/0");
        let err = parse("redis+cloud://u:topsecret@h")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("topsecret"), "{err}");
        let shown = parse("redis+cluster://u:topsecret@h:1,h:2")
            .unwrap()
            .to_string();
        assert!(!shown.contains("topsecret"), "{shown}");
        assert_eq!(shown, "cluster seeded by h:1,h:2");
    }
}
