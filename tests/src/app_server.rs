//! An RCML application server inside the test: serves documents by path and records
//! every request (method, path, parameters) so tests can assert what the edge sent.
//!
//! It speaks just enough HTTP/1.1 for the edge's client (one request per connection,
//! Content-Length bodies); tests need to see requests, not to test HTTP.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the edge made.
#[derive(Debug, Clone)]
pub struct AppRequest {
    pub method: String,
    pub path: String,
    pub params: HashMap<String, String>,
}

/// What the server answers for a path.
#[derive(Debug, Clone)]
pub enum Reply {
    Rcml(String),
    Status(u16),
    /// Accept the connection and never answer (a hung app server).
    Hang,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Reply>,
    requests: Vec<AppRequest>,
}

pub struct AppServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_params(text: &str, into: &mut HashMap<String, String>) {
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        into.insert(decode(k), decode(v));
    }
}

impl AppServer {
    pub fn start() -> AppServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the app server");
        let addr = listener.local_addr().expect("its address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || serve(stream, shared));
            }
        });
        AppServer { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn route(&self, path: &str, reply: Reply) {
        self.lock().routes.insert(path.to_owned(), reply);
    }

    pub fn rcml(&self, path: &str, document: &str) {
        self.route(path, Reply::Rcml(document.to_owned()));
    }

    /// Serves at `path` an application that dials `sip:callee@<callee>` (a sipp UAS or a
    /// test UA).
    pub fn dials(&self, path: &str, callee: std::net::SocketAddr) {
        self.rcml(
            path,
            &format!("<Response><Dial><Sip>sip:callee@{callee}</Sip></Dial></Response>"),
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn requests(&self) -> Vec<AppRequest> {
        self.lock().requests.clone()
    }

    /// Waits (bounded) for a request to `path` and returns it.
    pub fn wait_for(&self, path: &str, timeout: Duration) -> Option<AppRequest> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(r) = self.requests().into_iter().find(|r| r.path == path) {
                return Some(r);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn serve(stream: TcpStream, state: Arc<Mutex<State>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut params = HashMap::new();
    parse_params(query, &mut params);
    parse_params(&String::from_utf8_lossy(&body), &mut params);
    let reply = {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        state.requests.push(AppRequest {
            method,
            path: path.to_owned(),
            params,
        });
        state
            .routes
            .get(path)
            .cloned()
            .unwrap_or(Reply::Status(404))
    };
    let mut stream = stream;
    let response = match reply {
        Reply::Rcml(document) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{document}",
            document.len()
        ),
        Reply::Status(code) => {
            format!("HTTP/1.1 {code} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
        Reply::Hang => {
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
    };
    let _ = stream.write_all(response.as_bytes());
}
