//! The edge's SIP core against real peers: sipp over UDP and TCP (IPv4 and IPv6), and raw
//! sockets sending what no well-behaved peer sends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use switchyard_tests::Edge;
use switchyard_tests::processes::repo_root;
use switchyard_tests::sipp::{Sipp, SippTransport, assert_success};

fn start_edge() -> Edge {
    let examples = repo_root().join("examples");
    Edge::start(&["--phone-numbers", examples.to_str().unwrap_or("examples")])
}

fn options_over(edge: &Edge, transport: SippTransport) {
    let output = Sipp::client("options.xml", edge.sip, transport).run();
    assert_success(&output);
}

#[test]
fn options_is_answered_over_udp_and_tcp() {
    let edge = start_edge();
    options_over(&edge, SippTransport::Udp);
    options_over(&edge, SippTransport::Tcp);
    assert!(edge.metric("switchyard_edge_sip_requests_total{method=\"OPTIONS\"}") >= 2.0);
    assert!(
        edge.metric("switchyard_edge_sip_responses_total{class=\"2xx\",method=\"OPTIONS\"}") >= 2.0
    );
}

#[test]
fn options_is_answered_over_ipv6() {
    let examples = repo_root().join("examples");
    let edge = Edge::start_on(
        "[::1]",
        &["--phone-numbers", examples.to_str().unwrap_or("examples")],
    );
    options_over(&edge, SippTransport::Udp);
    options_over(&edge, SippTransport::Tcp);
}

const GOOD_HEAD: &str = "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{id}\r\nMax-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=t1\r\nTo: <sip:edge@127.0.0.1>\r\n";

fn udp_exchange(edge: &Edge, message: &str) -> Option<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let port = socket.local_addr().unwrap().port().to_string();
    socket
        .send_to(message.replace("{port}", &port).as_bytes(), edge.sip)
        .unwrap();
    let mut buffer = [0u8; 65_536];
    let (length, _) = socket.recv_from(&mut buffer).ok()?;
    Some(String::from_utf8_lossy(&buffer[..length]).into_owned())
}

fn request(method: &str, id: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} sip:edge@127.0.0.1 SIP/2.0\r\n{}{extra}\r\n{body}",
        GOOD_HEAD.replace("{id}", id)
    )
}

#[test]
fn malformed_requests_get_400_with_a_reason_or_are_dropped() {
    let edge = start_edge();

    // Content-Length larger than the body.
    let bad_length = request(
        "OPTIONS",
        "len",
        "Call-ID: len-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 500\r\n",
        "short",
    );
    let answer = udp_exchange(&edge, &bad_length).expect("an answer to a bad Content-Length");
    assert!(
        answer.starts_with("SIP/2.0 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("Reason: SIP;cause=400;text=\"Content-Length 500"),
        "{answer}"
    );
    assert!(answer.contains("Call-ID: len-1"), "{answer}");

    // No Call-ID: a response cannot echo it, so the request is dropped and counted.
    let no_call_id = request(
        "OPTIONS",
        "cid",
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n",
        "",
    );
    assert_eq!(udp_exchange(&edge, &no_call_id), None);

    // CSeq method disagreeing with the request line.
    let wrong_cseq = request(
        "OPTIONS",
        "cseq",
        "Call-ID: cseq-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n",
        "",
    );
    let answer = udp_exchange(&edge, &wrong_cseq).expect("an answer to a wrong CSeq");
    assert!(answer.starts_with("SIP/2.0 400 "), "{answer}");
    assert!(
        answer.contains("Reason: SIP;cause=400;text=\"CSeq method INVITE does not match"),
        "{answer}"
    );

    // Max-Forwards 0 on a request the edge would forward.
    let hops = request(
        "INVITE",
        "mf",
        "Call-ID: mf-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n",
        "",
    )
    .replace("Max-Forwards: 70", "Max-Forwards: 0");
    let answer = udp_exchange(&edge, &hops).expect("an answer to Max-Forwards 0");
    assert!(
        answer.starts_with("SIP/2.0 483 Too Many Hops\r\n"),
        "{answer}"
    );

    // Garbage.
    assert_eq!(udp_exchange(&edge, "\u{1}\u{2}garbage\r\n\r\n"), None);
    assert_eq!(udp_exchange(&edge, "NOT SIP AT ALL"), None);

    assert!(
        edge.metric("switchyard_edge_sip_messages_dropped_total{reason=\"unparseable\"}") >= 2.0
    );
    assert!(
        edge.metric("switchyard_edge_sip_messages_dropped_total{reason=\"missing_call_id\"}")
            >= 1.0
    );
    // The edge is unharmed.
    options_over(&edge, SippTransport::Udp);
}

#[test]
fn received_and_rport_are_added_to_the_top_via() {
    let edge = start_edge();
    let options = request(
        "OPTIONS",
        "nat",
        "Call-ID: nat-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n",
        "",
    )
    .replace("127.0.0.1:{port};branch", "192.0.2.10:5999;branch")
    .replace("branch=z9hG4bK-nat", "branch=z9hG4bK-nat;rport");
    let answer = udp_exchange(&edge, &options).expect("the answer goes to the source port (rport)");
    let via = answer
        .lines()
        .find(|l| l.starts_with("Via:"))
        .unwrap_or_default();
    assert!(via.contains("received=127.0.0.1"), "{via}");
    assert!(via.contains("rport="), "{via}");
}

#[test]
fn a_retransmitted_request_is_absorbed_by_its_transaction() {
    let edge = start_edge();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let port = socket.local_addr().unwrap().port().to_string();
    let options = request(
        "OPTIONS",
        "rtx",
        "Call-ID: rtx-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n",
        "",
    )
    .replace("{port}", &port);
    let mut buffer = [0u8; 65_536];
    socket.send_to(options.as_bytes(), edge.sip).unwrap();
    let (length, _) = socket.recv_from(&mut buffer).unwrap();
    let first = String::from_utf8_lossy(&buffer[..length]).into_owned();
    socket.send_to(options.as_bytes(), edge.sip).unwrap();
    let (length, _) = socket.recv_from(&mut buffer).unwrap();
    let second = String::from_utf8_lossy(&buffer[..length]).into_owned();
    // The same response, To tag included: the transaction answered, not a new one.
    assert_eq!(first, second);
    assert!(first.starts_with("SIP/2.0 200 OK"), "{first}");
}

#[test]
fn one_branch_from_two_hosts_starts_two_transactions() {
    // RFC 3261 §17.2.3: a server transaction is matched by branch *and* sent-by, so a
    // second host that happens to pick the same branch is answered for its own request
    // (its Call-ID), not sent the first host's response as a retransmission.
    let edge = start_edge();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut call_ids = Vec::new();
    for (host, call_id) in [("192.0.2.21:5060", "host-a"), ("192.0.2.22:5060", "host-b")] {
        // rport: both answers come back to this socket, whatever the Via says.
        let options = request(
            "OPTIONS",
            "same",
            &format!("Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n"),
            "",
        )
        .replace(
            "127.0.0.1:{port};branch=z9hG4bK-same",
            &format!("{host};rport;branch=z9hG4bK-same"),
        );
        socket.send_to(options.as_bytes(), edge.sip).unwrap();
        let mut buffer = [0u8; 65_536];
        let (length, _) = socket.recv_from(&mut buffer).expect("an answer");
        let answer = String::from_utf8_lossy(&buffer[..length]).into_owned();
        assert!(answer.starts_with("SIP/2.0 200 OK"), "{answer}");
        let answered = answer
            .lines()
            .find_map(|l| l.strip_prefix("Call-ID: "))
            .unwrap_or_default()
            .to_owned();
        call_ids.push(answered);
    }
    assert_eq!(call_ids, ["host-a", "host-b"]);
}

fn tcp_connect(edge: &Edge) -> TcpStream {
    let stream = TcpStream::connect(edge.sip).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream
}

fn read_until_closed_or_timeout(stream: &mut TcpStream) -> String {
    let mut text = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buffer) {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[test]
fn tcp_framing_errors_are_answered_and_the_connection_closed() {
    let edge = start_edge();
    let local: SocketAddr = "127.0.0.1:5060".parse().unwrap();

    // No Content-Length on a stream: 400, then the connection closes.
    let mut stream = tcp_connect(&edge);
    let missing = request(
        "OPTIONS",
        "tcp-cl",
        "Call-ID: tcp-1\r\nCSeq: 1 OPTIONS\r\n",
        "",
    )
    .replace("{port}", &local.port().to_string())
    .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    stream.write_all(missing.as_bytes()).unwrap();
    let answer = read_until_closed_or_timeout(&mut stream);
    assert!(
        answer.starts_with("SIP/2.0 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("Content-Length is required on TCP"),
        "{answer}"
    );

    // Two requests in one segment, then a keep-alive ping: both answered, pong sent.
    let mut stream = tcp_connect(&edge);
    let one = |id: &str| {
        request(
            "OPTIONS",
            id,
            &format!("Call-ID: {id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n"),
            "",
        )
        .replace("{port}", "5060")
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
    };
    stream
        .write_all(format!("{}{}\r\n\r\n", one("a1"), one("a2")).as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let answers = read_until_closed_or_timeout(&mut stream);
    assert_eq!(answers.matches("SIP/2.0 200 OK").count(), 2, "{answers}");
    assert!(answers.contains("Call-ID: a1") && answers.contains("Call-ID: a2"));

    options_over(&edge, SippTransport::Tcp);
}

#[test]
fn unknown_in_dialog_requests_get_481_and_unknown_numbers_404() {
    let edge = start_edge();
    let bye = request(
        "BYE",
        "bye",
        "Call-ID: nope\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n",
        "",
    )
    .replace("<sip:edge@127.0.0.1>\r\n", "<sip:edge@127.0.0.1>;tag=x\r\n");
    let answer = udp_exchange(&edge, &bye).expect("an answer to BYE");
    assert!(answer.starts_with("SIP/2.0 481 "), "{answer}");

    let invite = request(
        "INVITE",
        "nf",
        "Call-ID: nf-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n",
        "",
    )
    .replace("INVITE sip:edge@", "INVITE sip:+19990000000@");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let port = socket.local_addr().unwrap().port().to_string();
    socket
        .send_to(invite.replace("{port}", &port).as_bytes(), edge.sip)
        .unwrap();
    let mut codes = Vec::new();
    let mut buffer = [0u8; 65_536];
    while let Ok((n, _)) = socket.recv_from(&mut buffer) {
        let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
        codes.push(
            text.split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned(),
        );
        if !text.starts_with("SIP/2.0 1") {
            break;
        }
    }
    assert_eq!(codes, ["100", "404"]);
}

#[test]
fn sigterm_stops_readiness_and_exits_cleanly() {
    let mut edge = start_edge();
    assert!(edge.is_running());
    let status = edge.terminate().expect("the edge exits after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(edge.logs().contains("shutting down"));
}
