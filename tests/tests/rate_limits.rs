//! Rate limits end to end: a source over its rate gets 503 with Retry-After while another
//! source gets through; a REFER storm in one call gets 503 past the per-call limit,
//! counted across edge processes.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use switchyard_tests::app_server::AppServer;
use switchyard_tests::processes::repo_root;
use switchyard_tests::routes::{number_route, program};
use switchyard_tests::sipp::{Sipp, assert_success};
use switchyard_tests::ua::Ua;
use switchyard_tests::{Edge, RedisServer};

const NUMBER_A: &str = "+15551230001";

fn options(from: SocketAddr, id: usize) -> String {
    format!(
        "OPTIONS sip:edge@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-rl{id}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{from}>;tag=rl{id}\r\nTo: <sip:edge@127.0.0.1>\r\nCall-ID: rl-{id}-{}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        from.port()
    )
}

/// Responses on `socket` until `count` arrived or nothing came for a second.
fn responses(socket: &UdpSocket, count: usize) -> Vec<String> {
    let mut answers = Vec::new();
    let mut buffer = [0u8; 65_536];
    let _ = socket.set_read_timeout(Some(Duration::from_secs(1)));
    while answers.len() < count {
        let Ok((n, _)) = socket.recv_from(&mut buffer) else {
            break;
        };
        answers.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
    }
    answers
}

#[test]
fn a_source_over_its_rate_gets_503_with_retry_after_while_another_source_gets_through() {
    let examples = repo_root().join("examples");
    let edge = Edge::start(&[
        "--phone-numbers",
        examples.to_str().unwrap_or("examples"),
        // One token every ten seconds: nothing refills while the test runs.
        "--rate-limit-per-source",
        "0.1",
        "--rate-limit-burst",
        "5",
    ]);
    let flooder = UdpSocket::bind("127.0.0.1:0").expect("a UDP port");
    let from = flooder.local_addr().expect("its address");
    let started = Instant::now();
    for id in 0..20 {
        flooder
            .send_to(options(from, id).as_bytes(), edge.sip)
            .expect("send");
    }
    let answers = responses(&flooder, 20);
    let elapsed = started.elapsed().as_secs_f64();
    let ok = answers
        .iter()
        .filter(|a| a.starts_with("SIP/2.0 200 "))
        .count();
    let limited: Vec<&String> = answers
        .iter()
        .filter(|a| a.starts_with("SIP/2.0 503 "))
        .collect();
    // The burst (plus a token per ten seconds, should the machine be that slow), then
    // five 503s (a source over its rate gets a few a second), then silence: the rest is
    // dropped before it is parsed.
    assert!(
        ok >= 5 && ok as f64 <= 5.0 + (elapsed / 10.0).ceil(),
        "{ok} answered 200 in {elapsed:.1}s"
    );
    assert_eq!(limited.len(), 5, "{answers:?}");
    assert_eq!(answers.len(), ok + limited.len());
    for answer in &limited {
        assert!(
            answer.contains("Reason: SIP;cause=503;text=\"too many requests from this address\""),
            "{answer}"
        );
        let retry_after: u32 = answer
            .lines()
            .find_map(|l| l.strip_prefix("Retry-After: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("a Retry-After: {answer}"));
        assert!((1..=10).contains(&retry_after), "{answer}");
    }
    assert_eq!(
        edge.metric("switchyard_edge_rate_limited_total{method=\"OPTIONS\",scope=\"source\"}"),
        5.0
    );
    assert_eq!(
        edge.metric("switchyard_edge_sip_messages_dropped_total{reason=\"rate_limited\"}"),
        (20 - answers.len()) as f64
    );

    // A second later the source may have one 503 again (not a token: one in ten
    // seconds). A new call from it is refused before anything is done with it: 503
    // straight away, no 100 Trying.
    std::thread::sleep(Duration::from_millis(1100));
    let mut caller = Ua::new("flooder");
    // Ua binds its own port on 127.0.0.1: the same source address.
    let answer = caller.invite(edge.sip, NUMBER_A);
    assert_eq!(answer.code, 503, "{}", answer.text);

    // Another source meanwhile is answered.
    let other = UdpSocket::bind("127.0.0.2:0").expect("a UDP port on 127.0.0.2");
    let from = other.local_addr().expect("its address");
    other
        .send_to(options(from, 99).as_bytes(), edge.sip)
        .expect("send");
    let answers = responses(&other, 1);
    assert!(
        answers
            .first()
            .is_some_and(|a| a.starts_with("SIP/2.0 200 ")),
        "{answers:?}"
    );
    assert!(edge.metric("switchyard_edge_rate_limit_sources") >= 2.0);
}

/// A call to number A (whose referTargetAllow admits only desk phones) through two edges
/// on one Redis; REFERs alternate between the edges.
#[test]
fn a_refer_storm_in_one_call_gets_503_past_the_limit_through_any_edge() {
    let redis = RedisServer::start();
    let app = AppServer::start();
    let bob = Sipp::server("uas_answer.xml");
    app.dials("/voice", bob.addr);
    app.rcml("/refer", "<Response><Hangup/></Response>");
    let mut route = number_route(NUMBER_A, &app.url("/voice"), Some(&app.url("/refer")));
    route.refer_target_allow = vec!["desk-[0-9]+".to_owned()];
    program(&redis.url(), &[route]);
    let url = redis.url();
    let args = ["--redis-url", &url, "--refer-limit-per-call", "3"];
    let one = Edge::start(&args);
    let two = Edge::start(&args);

    let mut alice = Ua::new("alice");
    let answer = alice.invite(one.sip, NUMBER_A);
    assert_eq!(answer.code, 200, "{}", answer.text);
    let tag = answer.to_tag().expect("a To tag");
    alice.ack(one.sip, NUMBER_A, &tag);

    // Trying premium numbers one after the other: refused by the policy (403) until the
    // call has used its three REFERs, then 503 whichever edge gets the REFER, and an
    // allowed target too is refused until the window ends.
    let mut codes = Vec::new();
    let mut last = None;
    for (i, target) in [
        "+19005550100",
        "+19005550101",
        "+19005550102",
        "+19005550103",
        "desk-7",
    ]
    .iter()
    .enumerate()
    {
        let edge = if i % 2 == 0 { one.sip } else { two.sip };
        let answer = alice
            .request(
                edge,
                "REFER",
                NUMBER_A,
                &tag,
                &format!("Refer-To: <sip:{target}@127.0.0.1>\r\n"),
            )
            .expect("an answer to REFER");
        codes.push(answer.code);
        last = Some(answer);
    }
    assert_eq!(codes, [403, 403, 403, 503, 503]);
    let last = last.expect("answers");
    assert!(
        last.text
            .contains("Reason: SIP;cause=503;text=\"too many REFERs in this call\""),
        "{}",
        last.text
    );
    let retry_after: u32 = last
        .header("Retry-After")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a Retry-After: {}", last.text));
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let storm = |edge: &Edge| {
        edge.metric("switchyard_edge_rate_limited_total{method=\"REFER\",scope=\"call\"}")
    };
    assert_eq!(storm(&one) + storm(&two), 2.0);
    assert!(
        app.wait_for("/refer", Duration::from_millis(300)).is_none(),
        "no refused REFER reaches the refer application"
    );
    // The call itself is unharmed.
    assert_eq!(alice.bye(two.sip, NUMBER_A, &tag), Some(200));
    assert_success(&bob.finish(Duration::from_secs(10)));
}
