//! A minimal SIP user agent over UDP, for tests where sipp cannot go: sending the
//! requests of one call to different edge processes (INVITE to one, BYE to another), as
//! a Kubernetes Service may.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

pub struct Ua {
    socket: UdpSocket,
    local: SocketAddr,
    call_id: String,
    from_tag: String,
    user: String,
    cseq: u32,
    /// Methods of the requests the edge sent to this UA, in order.
    seen: std::sync::Mutex<Vec<String>>,
    /// New INVITEs waiting for `accept`, with where they came from.
    pending: std::sync::Mutex<Vec<(String, SocketAddr)>>,
}

/// The UAS side of a call this UA answered.
#[derive(Debug, Clone)]
pub struct Answered {
    pub call_id: String,
    /// Our To header value, tag included: the From of our requests in the dialog.
    pub local: String,
    /// The caller's From header value: the To of our requests.
    pub remote: String,
    /// Where the INVITE came from (the edge).
    pub edge: SocketAddr,
}

/// A response as text, with its status code.
#[derive(Debug, Clone)]
pub struct Answer {
    pub code: u16,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.text.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    pub fn to_tag(&self) -> Option<String> {
        let to = self.header("To")?;
        to.split(';')
            .find_map(|p| p.trim().strip_prefix("tag=").map(str::to_owned))
    }
}

impl Ua {
    pub fn new(user: &str) -> Ua {
        Self::new_on(user, "127.0.0.1")
    }

    /// A UA on another loopback address (`127.0.0.2`, ...): another source to the edge.
    pub fn new_on(user: &str, ip: &str) -> Ua {
        let socket = UdpSocket::bind((ip, 0)).expect("a UDP port for the test UA");
        let local = socket.local_addr().expect("its address");
        Ua {
            socket,
            local,
            call_id: format!("ua-{}-{}@{ip}", std::process::id(), local.port()),
            from_tag: format!("ua{}", local.port()),
            user: user.to_owned(),
            cseq: 0,
            seen: std::sync::Mutex::new(Vec::new()),
            pending: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The Call-ID of the calls this UA places.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// From now on, sends as if in the call `call_id` with From tag `from_tag`: a third
    /// party forging requests in someone else's dialog.
    pub fn impersonate(&mut self, call_id: &str, from_tag: &str) {
        self.call_id = call_id.to_owned();
        self.from_tag = from_tag.to_owned();
    }

    fn send(&self, to: SocketAddr, text: &str) {
        self.socket
            .send_to(text.as_bytes(), to)
            .expect("send to the edge");
    }

    /// Waits for the next response (bounded), skipping requests the edge sends us
    /// (answering BYE with 200).
    pub fn receive(&self, timeout: Duration) -> Option<Answer> {
        let deadline = Instant::now() + timeout;
        let mut buffer = [0u8; 65_536];
        while Instant::now() < deadline {
            let _ = self.socket.set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ));
            let Ok((n, from)) = self.socket.recv_from(&mut buffer) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
            if let Some(rest) = text.strip_prefix("SIP/2.0 ") {
                let code = rest
                    .split_whitespace()
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                return Some(Answer { code, text });
            }
            if let Some(method) = text
                .split_whitespace()
                .next()
                .filter(|m| !m.starts_with("SIP/"))
            {
                self.seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(method.to_owned());
            }
            let copy: String = text
                .lines()
                .filter(|l| {
                    ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                        .iter()
                        .any(|h| l.starts_with(h))
                })
                .map(|l| format!("{l}\r\n"))
                .collect();
            if text.starts_with("BYE ") || text.starts_with("NOTIFY ") {
                self.send(
                    from,
                    &format!("SIP/2.0 200 OK\r\n{copy}Content-Length: 0\r\n\r\n"),
                );
            } else if text.starts_with("INVITE ") {
                let has_to_tag = text
                    .lines()
                    .find(|l| l.starts_with("To:"))
                    .is_some_and(|l| l.contains("tag="));
                if has_to_tag {
                    // A re-INVITE (a transfer bridging us to a new party): answer it where
                    // it came from, as RFC 3261 §18.2.2 sends responses, with our SDP.
                    let sdp = self.sdp("transferee");
                    self.send(
                        from,
                        &format!(
                            "SIP/2.0 200 OK\r\n{copy}Contact: <sip:{}@{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                            self.user,
                            self.local,
                            sdp.len()
                        ),
                    );
                } else {
                    self.pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((text, from));
                }
            }
        }
        None
    }

    fn head(
        &self,
        method: &str,
        uri: &str,
        to_tag: Option<&str>,
        cseq: u32,
        branch: &str,
    ) -> String {
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch}.{port};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@{local}>;tag={from_tag}\r\nTo: <{uri}>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:{user}@{local}>\r\n",
            local = self.local,
            // Branches are unique per UA (RFC 3261 §8.1.1.7), not only per request.
            port = self.local.port(),
            user = self.user,
            from_tag = self.from_tag,
            call_id = self.call_id,
        )
    }

    /// Sends an INVITE with an SDP offer and waits for the final response (ACKing a
    /// non-2xx, as a transaction would).
    pub fn invite(&mut self, edge: SocketAddr, number: &str) -> Answer {
        self.cseq += 1;
        let uri = format!("sip:{number}@{edge}");
        let sdp = format!(
            "v=0\r\no={} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n",
            self.user
        );
        let branch = format!("inv{}", self.cseq);
        let text = format!(
            "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            self.head("INVITE", &uri, None, self.cseq, &branch),
            sdp.len()
        );
        self.send(edge, &text);
        loop {
            let answer = self
                .receive(Duration::from_secs(20))
                .expect("a final response to the INVITE");
            if answer.code >= 200 {
                if answer.code >= 300 {
                    let ack = format!(
                        "{}Content-Length: 0\r\n\r\n",
                        self.head("ACK", &uri, answer.to_tag().as_deref(), self.cseq, &branch)
                    );
                    self.send(edge, &ack);
                }
                return answer;
            }
        }
    }

    fn sdp(&self, origin: &str) -> String {
        format!(
            "v=0\r\no={origin} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
        )
    }

    /// Waits for a new INVITE and answers it 200 with an SDP answer (origin `callee`).
    pub fn accept(&self, timeout: Duration) -> Option<Answered> {
        let deadline = Instant::now() + timeout;
        loop {
            let next = {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                (!pending.is_empty()).then(|| pending.remove(0))
            };
            if let Some((invite, from)) = next {
                let header = |name: &str| {
                    invite.lines().find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.trim()
                            .eq_ignore_ascii_case(name)
                            .then(|| v.trim().to_owned())
                    })
                };
                let local = format!("{};tag={}", header("To")?, self.from_tag);
                let copy: String = invite
                    .lines()
                    .filter(|l| {
                        ["Via:", "From:", "Call-ID:", "CSeq:"]
                            .iter()
                            .any(|h| l.starts_with(h))
                    })
                    .map(|l| format!("{l}\r\n"))
                    .collect();
                let sdp = self.sdp("callee");
                self.send(
                    from,
                    &format!(
                        "SIP/2.0 200 OK\r\n{copy}To: {local}\r\nContact: <sip:{}@{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                        self.user,
                        self.local,
                        sdp.len()
                    ),
                );
                return Some(Answered {
                    call_id: header("Call-ID")?,
                    local,
                    remote: header("From")?,
                    edge: from,
                });
            }
            if Instant::now() >= deadline {
                return None;
            }
            let _ = self.receive(Duration::from_millis(50));
        }
    }

    /// Sends a request inside a call this UA answered, to `to` (any edge), and returns
    /// its final response.
    pub fn request_in(
        &mut self,
        call: &Answered,
        to: SocketAddr,
        method: &str,
        extra: &str,
    ) -> Option<Answer> {
        self.cseq += 1;
        let text = format!(
            "{method} sip:switchyard@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKin{cseq}.{port};rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {remote}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:{user}@{local}>\r\n{extra}Content-Length: 0\r\n\r\n",
            local = self.local,
            port = self.local.port(),
            cseq = self.cseq,
            from = call.local,
            remote = call.remote,
            call_id = call.call_id,
            user = self.user,
        );
        self.send(to, &text);
        loop {
            let answer = self.receive(Duration::from_secs(10))?;
            if answer.code >= 200 {
                return Some(answer);
            }
        }
    }

    /// The methods of the requests received so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keeps answering the edge's requests until `method` has been received (bounded).
    pub fn wait_for_request(&self, method: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.seen().iter().any(|m| m == method) {
                return true;
            }
            let _ = self.receive(Duration::from_millis(100));
        }
        self.seen().iter().any(|m| m == method)
    }

    /// Sends an in-dialog request (`to_tag` empty: outside any dialog) with `extra`
    /// headers, and returns its final response.
    pub fn request(
        &mut self,
        to: SocketAddr,
        method: &str,
        number: &str,
        to_tag: &str,
        extra: &str,
    ) -> Option<Answer> {
        self.cseq += 1;
        let uri = format!("sip:{number}@{to}");
        let tag = (!to_tag.is_empty()).then_some(to_tag);
        let text = format!(
            "{}{extra}Content-Length: 0\r\n\r\n",
            self.head(
                method,
                &uri,
                tag,
                self.cseq,
                &format!("{}{}", method.to_lowercase(), self.cseq)
            )
        );
        self.send(to, &text);
        let cseq = format!("{} {method}", self.cseq);
        loop {
            let answer = self.receive(Duration::from_secs(10))?;
            // Skip what answers something else: a retransmitted 2xx to our INVITE (the
            // callee's ACK was late and the edge relayed its retransmission) is not the
            // answer to this request.
            if answer.code >= 200 && answer.header("CSeq").is_some_and(|c| c == cseq) {
                return Some(answer);
            }
        }
    }

    /// Sends the same request to several edges at once (one CSeq each) and returns the
    /// final status codes in the order of `targets`.
    pub fn race(
        &mut self,
        targets: &[(SocketAddr, u32)],
        method: &str,
        number: &str,
        to_tag: &str,
        extra: &str,
    ) -> Vec<u16> {
        for (to, cseq) in targets {
            let uri = format!("sip:{number}@{to}");
            let text = format!(
                "{}{extra}Content-Length: 0\r\n\r\n",
                self.head(method, &uri, Some(to_tag), *cseq, &format!("race{cseq}"))
            );
            self.send(*to, &text);
        }
        self.cseq = targets.iter().map(|(_, c)| *c).max().unwrap_or(self.cseq);
        let mut codes = vec![0u16; targets.len()];
        let deadline = Instant::now() + Duration::from_secs(10);
        while codes.contains(&0) && Instant::now() < deadline {
            let Some(answer) = self.receive(Duration::from_secs(1)) else {
                continue;
            };
            if answer.code < 200 {
                continue;
            }
            let cseq: u32 = answer
                .header("CSeq")
                .and_then(|c| c.split_whitespace().next().and_then(|n| n.parse().ok()))
                .unwrap_or(0);
            if let Some(i) = targets.iter().position(|(_, c)| *c == cseq) {
                codes[i] = answer.code;
            }
        }
        codes
    }

    /// ACKs a 2xx (a new branch), sent to `to`.
    pub fn ack(&self, to: SocketAddr, number: &str, to_tag: &str) {
        let uri = format!("sip:{number}@{to}");
        let text = format!(
            "{}Content-Length: 0\r\n\r\n",
            self.head("ACK", &uri, Some(to_tag), self.cseq, "ack1")
        );
        self.send(to, &text);
    }

    /// Sends BYE to `to` and returns the final response code.
    pub fn bye(&mut self, to: SocketAddr, number: &str, to_tag: &str) -> Option<u16> {
        self.bye_answer(to, number, to_tag).map(|a| a.code)
    }

    /// Sends BYE to `to` and returns the final response.
    pub fn bye_answer(&mut self, to: SocketAddr, number: &str, to_tag: &str) -> Option<Answer> {
        self.cseq += 1;
        let uri = format!("sip:{number}@{to}");
        let text = format!(
            "{}Content-Length: 0\r\n\r\n",
            self.head(
                "BYE",
                &uri,
                Some(to_tag),
                self.cseq,
                &format!("bye{}", self.cseq)
            )
        );
        self.send(to, &text);
        self.receive(Duration::from_secs(10))
    }
}
