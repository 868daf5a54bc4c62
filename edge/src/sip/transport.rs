//! SIP over UDP and TCP on the same ports (RFC 3261 §18), IPv4 and IPv6.
//!
//! The transport moves bytes: it frames TCP streams by Content-Length, enforces size
//! limits and idle timeouts, and hands each message to the core with where it came from.
//! It never interprets SIP beyond framing.
//!
//! Sending is synchronous and never blocks the caller (a transaction timer, a dispatch
//! loop): UDP uses `try_send_to`, TCP queues on the connection's writer task. A message
//! that cannot be queued is counted and dropped; SIP's retransmissions and transaction
//! timeouts take care of the rest.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::metrics::METRICS;
use crate::sip::message::{MAX_HEAD_BYTES, RawHead, head_end, parse_head, response_to_raw};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    Udp,
    Tcp,
}

impl Protocol {
    /// The Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Protocol::Udp => "UDP",
            Protocol::Tcp => "TCP",
        }
    }

    /// Reliable transports disable retransmission timers (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        matches!(self, Protocol::Tcp)
    }
}

pub type ConnectionId = u64;

/// Where a message goes (or came from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination {
    pub protocol: Protocol,
    pub addr: SocketAddr,
    /// The TCP connection a request arrived on: responses go back on it (§18.2.2).
    pub connection: Option<ConnectionId>,
}

impl Destination {
    pub fn udp(addr: SocketAddr) -> Self {
        Destination {
            protocol: Protocol::Udp,
            addr,
            connection: None,
        }
    }

    pub fn tcp(addr: SocketAddr) -> Self {
        Destination {
            protocol: Protocol::Tcp,
            addr,
            connection: None,
        }
    }
}

/// One message received, with its origin.
#[derive(Debug)]
pub struct Inbound {
    pub bytes: Vec<u8>,
    pub source: Destination,
    /// The local address it arrived on.
    pub local: SocketAddr,
}

/// Anything transactions can send through: the real transport, or a recorder in tests.
pub trait Wire: Send + Sync {
    fn send(&self, to: &Destination, bytes: Vec<u8>);
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest body accepted on TCP (UDP is bounded by the datagram).
    pub max_body_bytes: usize,
    /// A TCP connection with no traffic for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Most simultaneous TCP connections; more are refused at accept.
    pub max_tcp_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            tcp_idle_timeout: Duration::from_secs(300),
            max_tcp_connections: 10_000,
        }
    }
}

struct Connection {
    peer: SocketAddr,
    writer: mpsc::Sender<Vec<u8>>,
}

/// The bound sockets and open TCP connections of one edge process.
pub struct Transport {
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    tcp_local: Vec<SocketAddr>,
    connections: Mutex<HashMap<ConnectionId, Connection>>,
    next_connection: AtomicU64,
    inbound: mpsc::Sender<Inbound>,
    limits: Limits,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

impl Transport {
    /// Binds UDP and TCP on each address and starts receiving. Port 0 picks one free port
    /// for both protocols.
    pub async fn bind(
        listen: &[SocketAddr],
        limits: Limits,
    ) -> Result<(Arc<Self>, mpsc::Receiver<Inbound>), BindError> {
        let (inbound, receiver) = mpsc::channel(4096);
        let mut udp = Vec::new();
        let mut listeners = Vec::new();
        for &addr in listen {
            let (socket, listener) = bind_pair(addr).await?;
            let local = socket
                .local_addr()
                .map_err(|source| BindError { addr, source })?;
            info!(%local, "listening for SIP on UDP and TCP");
            udp.push((local, Arc::new(socket)));
            listeners.push((local, listener));
        }
        let transport = Arc::new(Transport {
            udp,
            tcp_local: listeners.iter().map(|(a, _)| *a).collect(),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
            inbound,
            limits,
        });
        for (local, socket) in &transport.udp {
            tokio::spawn(receive_udp(transport.clone(), *local, socket.clone()));
        }
        for (local, listener) in listeners {
            tokio::spawn(accept_tcp(transport.clone(), local, listener));
        }
        Ok((transport, receiver))
    }

    /// The bound addresses (one per `--sip-listen`).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().map(|(a, _)| *a).collect()
    }

    /// The local address to put in Via for a message to `to`.
    pub fn local_for(&self, to: &SocketAddr) -> SocketAddr {
        let addrs = match self.udp.is_empty() {
            true => &self.tcp_local,
            false => &self.udp.iter().map(|(a, _)| *a).collect(),
        };
        addrs
            .iter()
            .find(|a| a.is_ipv4() == to.is_ipv4())
            .or(addrs.first())
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    fn register(&self, peer: SocketAddr, writer: mpsc::Sender<Vec<u8>>) -> ConnectionId {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        self.lock_connections()
            .insert(id, Connection { peer, writer });
        METRICS.tcp_connections.inc();
        id
    }

    fn unregister(&self, id: ConnectionId) {
        if self.lock_connections().remove(&id).is_some() {
            METRICS.tcp_connections.dec();
        }
    }

    fn lock_connections(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Connection>> {
        // The map stays consistent across a panic elsewhere (single inserts and removes).
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send_udp(&self, to: &SocketAddr, bytes: &[u8]) {
        let socket = self
            .udp
            .iter()
            .find(|(a, _)| a.is_ipv4() == to.is_ipv4())
            .or(self.udp.first());
        let Some((_, socket)) = socket else {
            return;
        };
        if let Err(error) = socket.try_send_to(bytes, *to) {
            debug!(%to, %error, "UDP send failed");
            METRICS
                .messages_dropped
                .with_label_values(&["udp_send_failed"])
                .inc();
        }
    }

    fn send_tcp(self: &Arc<Self>, to: &Destination, bytes: Vec<u8>) {
        let writer = {
            let connections = self.lock_connections();
            to.connection
                .and_then(|id| connections.get(&id))
                .or_else(|| connections.values().find(|c| c.peer == to.addr))
                .map(|c| c.writer.clone())
        };
        match writer {
            Some(writer) => {
                if writer.try_send(bytes).is_err() {
                    METRICS
                        .messages_dropped
                        .with_label_values(&["tcp_queue_full"])
                        .inc();
                }
            }
            None => {
                let transport = self.clone();
                let addr = to.addr;
                tokio::spawn(async move {
                    match TcpStream::connect(addr).await {
                        Ok(stream) => {
                            let (id, writer) = transport.clone().serve_connection(stream, addr);
                            debug!(%addr, connection = id, "connected");
                            let _ = writer.send(bytes).await;
                        }
                        Err(error) => {
                            warn!(%addr, %error, "TCP connect failed");
                            METRICS
                                .messages_dropped
                                .with_label_values(&["tcp_connect_failed"])
                                .inc();
                        }
                    }
                });
            }
        }
    }

    /// Starts the reader and writer tasks of a connection; returns its id and writer.
    fn serve_connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> (ConnectionId, mpsc::Sender<Vec<u8>>) {
        let local = stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let (queue, outgoing) = mpsc::channel(256);
        let id = self.register(peer, queue.clone());
        tokio::spawn(write_tcp(writer, outgoing));
        tokio::spawn(async move {
            let source = Destination {
                protocol: Protocol::Tcp,
                addr: peer,
                connection: Some(id),
            };
            if let Err(reason) = read_tcp(&self, reader, source, local).await {
                debug!(%peer, connection = id, %reason, "TCP connection closed");
            }
            self.unregister(id);
        });
        (id, queue)
    }
}

impl Wire for Arc<Transport> {
    fn send(&self, to: &Destination, bytes: Vec<u8>) {
        match to.protocol {
            Protocol::Udp => self.send_udp(&to.addr, &bytes),
            Protocol::Tcp => self.send_tcp(to, bytes),
        }
    }
}

/// Binds UDP and TCP to the same address; with port 0, retries until one port is free
/// for both.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), BindError> {
    let mut last_error = None;
    for _ in 0..16 {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| BindError { addr, source })?;
        let local = socket
            .local_addr()
            .map_err(|source| BindError { addr, source })?;
        match TcpListener::bind(local).await {
            Ok(listener) => return Ok((socket, listener)),
            Err(source) if addr.port() == 0 => last_error = Some(source),
            Err(source) => return Err(BindError { addr, source }),
        }
    }
    Err(BindError {
        addr,
        source: last_error.unwrap_or_else(|| std::io::Error::other("no free port")),
    })
}

async fn receive_udp(transport: Arc<Transport>, local: SocketAddr, socket: Arc<UdpSocket>) {
    let mut buffer = vec![0u8; 65_536];
    loop {
        let (length, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                // ICMP port unreachable surfaces here on some systems; keep serving.
                debug!(%error, "UDP receive error");
                continue;
            }
        };
        let bytes = &buffer[..length];
        if bytes.iter().all(|b| matches!(b, b'\r' | b'\n' | b' ' | 0)) {
            continue; // keep-alive
        }
        let inbound = Inbound {
            bytes: bytes.to_vec(),
            source: Destination::udp(peer),
            local,
        };
        if transport.inbound.try_send(inbound).is_err() {
            METRICS
                .messages_dropped
                .with_label_values(&["overload"])
                .inc();
        }
    }
}

async fn accept_tcp(transport: Arc<Transport>, local: SocketAddr, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if transport.lock_connections().len() >= transport.limits.max_tcp_connections {
                    METRICS
                        .messages_dropped
                        .with_label_values(&["tcp_connection_limit"])
                        .inc();
                    continue; // dropping the stream closes it
                }
                transport.clone().serve_connection(stream, peer);
            }
            Err(error) => {
                warn!(%local, %error, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn write_tcp(mut writer: OwnedWriteHalf, mut outgoing: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = outgoing.recv().await {
        if writer.write_all(&bytes).await.is_err() {
            break;
        }
    }
}

/// What is wrong with a TCP stream; each closes the connection (the stream cannot be
/// re-synchronised after a framing error).
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("closed by peer")]
    Closed,
    #[error("idle timeout")]
    Idle,
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("framing: {0}")]
    Framing(&'static str),
}

async fn read_tcp(
    transport: &Arc<Transport>,
    mut reader: tokio::net::tcp::OwnedReadHalf,
    source: Destination,
    local: SocketAddr,
) -> Result<(), StreamError> {
    let mut buffer: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Frame every complete message already buffered.
        loop {
            // CRLF keep-alives between messages (RFC 5626 §4.4.1): answer a double CRLF
            // ping with a single CRLF pong.
            let blank = buffer
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            if blank > 0 {
                if buffer[..blank].windows(4).any(|w| w == b"\r\n\r\n") {
                    transport.send_tcp(&source, b"\r\n".to_vec());
                }
                buffer.drain(..blank);
            }
            match frame(&buffer, transport.limits.max_body_bytes) {
                Frame::Incomplete => break,
                Frame::Message(length) => {
                    let bytes: Vec<u8> = buffer.drain(..length).collect();
                    let inbound = Inbound {
                        bytes,
                        source,
                        local,
                    };
                    if transport.inbound.send(inbound).await.is_err() {
                        return Err(StreamError::Closed);
                    }
                }
                Frame::Reject { head, code, reason } => {
                    METRICS
                        .messages_dropped
                        .with_label_values(&["tcp_framing"])
                        .inc();
                    if let Some(response) = head.and_then(|h| response_to_raw(&h, code, reason)) {
                        transport.send_tcp(&source, response);
                        // Let the writer flush the answer before the connection goes.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    return Err(StreamError::Framing(reason));
                }
            }
        }
        let read = tokio::time::timeout(transport.limits.tcp_idle_timeout, reader.read(&mut chunk))
            .await
            .map_err(|_| StreamError::Idle)??;
        if read == 0 {
            return Err(StreamError::Closed);
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

pub enum Frame {
    Incomplete,
    /// A whole message of this many bytes is at the start of the buffer.
    Message(usize),
    /// The stream is unusable; answer `code` if the head allows it, then close.
    Reject {
        head: Option<RawHead>,
        code: u16,
        reason: &'static str,
    },
}

/// Cuts the first message off a TCP stream's buffer (RFC 3261 §18.3: by Content-Length).
pub fn frame(buffer: &[u8], max_body: usize) -> Frame {
    let Some(head_length) = head_end(buffer) else {
        if buffer.len() > MAX_HEAD_BYTES {
            return Frame::Reject {
                head: None,
                code: 400,
                reason: "message head too long",
            };
        }
        return Frame::Incomplete;
    };
    if head_length > MAX_HEAD_BYTES {
        return Frame::Reject {
            head: None,
            code: 400,
            reason: "message head too long",
        };
    }
    let head = std::str::from_utf8(&buffer[..head_length])
        .ok()
        .map(parse_head);
    let content_length = head
        .as_ref()
        .and_then(|h| h.get("Content-Length"))
        .map(|v| v.parse::<usize>());
    match content_length {
        None => Frame::Reject {
            head,
            code: 400,
            reason: "Content-Length is required on TCP",
        },
        Some(Err(_)) => Frame::Reject {
            head,
            code: 400,
            reason: "invalid Content-Length",
        },
        Some(Ok(length)) if length > max_body => Frame::Reject {
            head,
            code: 413,
            reason: "message body too large",
        },
        Some(Ok(length)) if buffer.len() >= head_length + length => {
            Frame::Message(head_length + length)
        }
        Some(Ok(_)) => Frame::Incomplete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n";

    #[test]
    fn frames_by_content_length() {
        let message = format!("{HEAD}Content-Length: 3\r\n\r\nabc");
        let two = format!("{message}{message}");
        assert!(matches!(frame(two.as_bytes(), 100), Frame::Message(n) if n == message.len()));
        assert!(matches!(
            frame(&message.as_bytes()[..message.len() - 1], 100),
            Frame::Incomplete
        ));
    }

    #[test]
    fn refuses_missing_content_length_and_oversized_bodies() {
        let missing = format!("{HEAD}\r\n");
        assert!(matches!(
            frame(missing.as_bytes(), 100),
            Frame::Reject {
                code: 400,
                head: Some(_),
                ..
            }
        ));
        let big = format!("{HEAD}Content-Length: 101\r\n\r\n");
        assert!(matches!(
            frame(big.as_bytes(), 100),
            Frame::Reject { code: 413, .. }
        ));
        let endless = vec![b'a'; MAX_HEAD_BYTES + 1];
        assert!(matches!(
            frame(&endless, 100),
            Frame::Reject { head: None, .. }
        ));
    }
}
