//! The RFC 4475 and RFC 5118 torture messages (`tests/data/`) against a live edge: the
//! whole set over UDP and over TCP, then the edge must still be running and answering
//! OPTIONS. Over TCP, answers come back on the connection, so the status the edge gives
//! each request is checked where the RFC names one. (The parser-level verdicts, with a
//! comment per message, are in `edge/tests/torture.rs`.)

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use switchyard_tests::Edge;
use switchyard_tests::processes::repo_root;
use switchyard_tests::sipp::{Sipp, SippTransport, assert_success};

/// Every torture message, `rfc4475/3.1.1.1-wsinv.dat` -> bytes.
fn messages() -> BTreeMap<String, Vec<u8>> {
    let mut all = BTreeMap::new();
    for dir in ["rfc4475", "rfc5118"] {
        let path = repo_root().join("tests/data").join(dir);
        for entry in std::fs::read_dir(&path).expect("the torture data") {
            let file = entry.expect("a directory entry").path();
            if file.extension().is_some_and(|e| e == "dat") {
                let name = format!(
                    "{dir}/{}",
                    file.file_name().unwrap_or_default().to_string_lossy()
                );
                all.insert(name, std::fs::read(&file).expect("a torture message"));
            }
        }
    }
    all
}

/// The final status the edge answers `bytes` with on a fresh TCP connection, if any
/// within `wait` (provisional responses are skipped).
fn tcp_answer(edge: SocketAddr, bytes: &[u8], wait: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect(edge).expect("a TCP connection to the edge");
    stream.write_all(bytes).expect("the message is written");
    let deadline = Instant::now() + wait;
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received);
        let finals = text
            .split("SIP/2.0 ")
            .skip(1)
            .filter_map(|rest| rest.get(..3)?.parse::<u16>().ok())
            .find(|code| *code >= 200);
        if finals.is_some() {
            return finals;
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What the edge answers over TCP, where the RFC (or the edge's documented deviation)
/// names it. `None`: no answer (responses; a request a response cannot be built for).
/// Not listed: requests the application answers (404 for unknown numbers, 501 for
/// REGISTER, 481 in-dialog), and those whose Via branch and sent-by repeat an earlier
/// message's, which the edge absorbs as retransmissions (RFC 3261 §17.2.3).
const TCP_ANSWERS: &[(&str, Option<u16>)] = &[
    ("rfc4475/3.1.1.2-intmeth.dat", Some(501)),
    ("rfc4475/3.1.1.5-esc02.dat", Some(501)),
    ("rfc4475/3.1.1.6-lwsdisp.dat", Some(200)),
    ("rfc4475/3.1.1.10-transports.dat", Some(200)),
    ("rfc4475/3.1.1.12-unreason.dat", None),
    ("rfc4475/3.1.1.13-noreason.dat", None),
    ("rfc4475/3.1.2.1-badinv01.dat", Some(400)),
    ("rfc4475/3.1.2.4-scalar02.dat", Some(400)),
    ("rfc4475/3.1.2.5-scalarlg.dat", None),
    ("rfc4475/3.1.2.6-quotbal.dat", Some(400)),
    ("rfc4475/3.1.2.7-ltgtruri.dat", Some(400)),
    ("rfc4475/3.1.2.8-lwsruri.dat", Some(400)),
    ("rfc4475/3.1.2.9-lwsstart.dat", Some(400)),
    ("rfc4475/3.1.2.16-badvers.dat", Some(505)),
    ("rfc4475/3.1.2.17-mismatch01.dat", Some(400)),
    ("rfc4475/3.1.2.18-mismatch02.dat", Some(400)),
    ("rfc4475/3.1.2.19-bigcode.dat", None),
    ("rfc4475/3.2.1-badbranch.dat", Some(200)),
    ("rfc4475/3.3.1-insuf.dat", None),
    ("rfc4475/3.3.2-unkscm.dat", Some(416)),
    ("rfc4475/3.3.3-novelsc.dat", Some(416)),
    ("rfc4475/3.3.8-multi01.dat", Some(400)),
    ("rfc4475/3.3.9-mcl01.dat", Some(400)),
    ("rfc4475/3.3.10-bcast.dat", None),
    ("rfc4475/3.3.11-zeromf.dat", Some(200)),
    ("rfc4475/3.4.1-inv2543.dat", Some(400)),
    ("rfc5118/4.2-ipv6-bad.dat", Some(400)),
];

fn start_edge() -> Edge {
    let examples = repo_root().join("examples");
    Edge::start(&["--phone-numbers", examples.to_str().unwrap_or("examples")])
}

/// Still running, and still answering OPTIONS over UDP and TCP.
fn assert_unharmed(edge: &mut Edge) {
    assert!(edge.is_running(), "the edge survived:\n{}", edge.logs());
    for transport in [SippTransport::Udp, SippTransport::Tcp] {
        assert_success(&Sipp::client("options.xml", edge.sip, transport).run());
    }
}

// One edge per transport: the UDP and TCP copies of a message share its Via branch, so
// on one edge the second copy would be (rightly) absorbed as a retransmission.

#[test]
fn the_torture_set_over_udp_leaves_the_edge_answering() {
    let mut edge = start_edge();
    let messages = messages();
    assert_eq!(messages.len(), 61, "49 RFC 4475 and 12 RFC 5118 messages");
    // Back to back; answers go to the Via addresses, not here.
    let udp = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    for bytes in messages.values() {
        udp.send_to(bytes, edge.sip)
            .expect("a datagram to the edge");
    }
    assert_unharmed(&mut edge);
    // The datagrams were all read: the requests rsip took are counted by method, the
    // others as unparseable or answered with 4xx/5xx.
    assert!(edge.metric("switchyard_edge_sip_requests_total{method=\"OPTIONS\"}") >= 10.0);
}

#[test]
fn the_torture_set_over_tcp_gets_the_answers_the_rfc_asks_for() {
    let mut edge = start_edge();
    let messages = messages();
    // Each message on its own connection, one after the other: many of the RFC's
    // messages share a Via branch, and over TCP a server transaction ends with its final
    // response (RFC 3261 Timer J is 0), so in turn each gets its own transaction.
    let answers: BTreeMap<String, Option<u16>> = messages
        .iter()
        .map(|(name, bytes)| {
            (
                name.clone(),
                tcp_answer(edge.sip, bytes, Duration::from_millis(700)),
            )
        })
        .collect();
    // The full table, for `--nocapture` readers and docs/security.md.
    println!("TCP answers: {answers:?}");
    assert_unharmed(&mut edge);
    let wrong: Vec<String> = TCP_ANSWERS
        .iter()
        .filter(|(name, expected)| answers.get(*name) != Some(expected))
        .map(|(name, expected)| format!("{name}: {:?}, expected {expected:?}", answers.get(*name)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{}\nall answers: {answers:?}",
        wrong.join("\n")
    );
}
