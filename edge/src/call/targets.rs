//! Where a Dial goes: Dial nouns to a Request-URI, and URIs to the next hop's address.

use std::net::SocketAddr;

use crate::call::record::Peer;
use crate::rcml::DialTarget;
use crate::sip::message::{host_ip, parse_uri};
use crate::sip::transport::Protocol;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("client {0:?} is not registered (registration is not supported yet)")]
    ClientNotRegistered(String),
    #[error("invalid SIP URI {0:?}")]
    InvalidUri(String),
    #[error("URI scheme of {0:?} is not sip")]
    UnsupportedScheme(String),
    #[error("cannot resolve {0:?}")]
    Unresolvable(String),
}

/// The Request-URI a Dial noun calls. `<Number>` goes to the outbound proxy.
pub fn request_uri(target: &DialTarget, outbound_proxy: &str) -> Result<String, TargetError> {
    match target {
        DialTarget::Number(number) => {
            let user: String = number.chars().filter(|c| !c.is_whitespace()).collect();
            Ok(format!("sip:{user}@{outbound_proxy}"))
        }
        DialTarget::Sip(uri) => Ok(uri.trim().to_owned()),
        DialTarget::Client(name) => Err(TargetError::ClientNotRegistered(name.clone())),
    }
}

/// The address and transport of a SIP URI's host (RFC 3263 without NAPTR/SRV: the host's
/// A/AAAA records, port 5060 by default, `transport=tcp` honoured).
pub async fn resolve(uri: &str) -> Result<Peer, TargetError> {
    let parsed = parse_uri(uri).ok_or_else(|| TargetError::InvalidUri(uri.to_owned()))?;
    let scheme = uri
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if scheme != "sip" {
        return Err(TargetError::UnsupportedScheme(uri.to_owned()));
    }
    let protocol = if uri.to_ascii_lowercase().contains("transport=tcp") {
        Protocol::Tcp
    } else {
        Protocol::Udp
    };
    let port = parsed
        .host_with_port
        .port
        .map(|p| *p.value())
        .unwrap_or(5060);
    let host = parsed.host_with_port.host.to_string();
    let addr = match host_ip(&host) {
        Some(ip) => SocketAddr::new(ip, port),
        None => tokio::net::lookup_host((host.as_str(), port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| TargetError::Unresolvable(host.clone()))?,
    };
    Ok(Peer { protocol, addr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_go_to_the_outbound_proxy_and_clients_are_refused() {
        assert_eq!(
            request_uri(&DialTarget::Number("+1 555 0002".into()), "proxy:5060"),
            Ok("sip:+15550002@proxy:5060".into())
        );
        assert_eq!(
            request_uri(&DialTarget::Sip(" sip:bob@h ".into()), "p"),
            Ok("sip:bob@h".into())
        );
        assert!(request_uri(&DialTarget::Client("alice".into()), "p").is_err());
    }

    #[tokio::test]
    async fn resolves_literals_ports_and_transports() {
        let peer = resolve("sip:bob@127.0.0.1:5071").await.unwrap();
        assert_eq!(peer.addr, "127.0.0.1:5071".parse().unwrap());
        assert_eq!(peer.protocol, Protocol::Udp);
        let peer = resolve("sip:bob@[::1];transport=tcp").await.unwrap();
        assert_eq!(peer.addr, "[::1]:5060".parse().unwrap());
        assert_eq!(peer.protocol, Protocol::Tcp);
        assert!(resolve("tel:+1555").await.is_err());
        assert!(matches!(
            resolve("sip:bob@no-such-host.invalid").await,
            Err(TargetError::Unresolvable(_))
        ));
    }
}
