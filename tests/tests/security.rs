//! The edge's defences against spoofed in-dialog requests and unauthenticated callers, end
//! to end: a third party forging requests in someone else's dialog, and digest
//! authentication with sipp as the client (including a nonce issued by one edge and
//! answered through another).

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use switchyard_tests::app_server::AppServer;
use switchyard_tests::manifests::{phone_number, scratch_dir, write};
use switchyard_tests::routes::{number_route, program};
use switchyard_tests::sipp::{Sipp, SippTransport, assert_success};
use switchyard_tests::ua::Ua;
use switchyard_tests::{Edge, RedisServer};

const NUMBER_A: &str = "+15551230001";
/// The nonce secret every edge of one install shares (a Kubernetes Secret in the chart).
const NONCE_SECRET: &str = "a secret every edge of the install shares";

/// Number A: its voiceUrl dials `bob`; its referUrl answers `refer` (RCML).
fn number_a(app: &AppServer, bob: SocketAddr, refer: &str) -> PathBuf {
    app.dials("/voice", bob);
    app.rcml("/refer", refer);
    let dir = scratch_dir("security");
    phone_number(
        &dir,
        "number-a",
        NUMBER_A,
        &app.url("/voice"),
        Some(&app.url("/refer")),
    );
    dir
}

#[test]
fn forged_bye_and_refer_with_another_from_tag_get_481_and_the_call_stays_up() {
    let app = AppServer::start();
    let bob = Sipp::server("uas_answer.xml");
    let dir = number_a(&app, bob.addr, "<Response><Hangup/></Response>");
    let edge = Edge::start(&["--phone-numbers", dir.to_str().unwrap_or_default()]);

    let mut alice = Ua::new("alice");
    let answer = alice.invite(edge.sip, NUMBER_A);
    assert_eq!(answer.code, 200, "{}", answer.text);
    let tag = answer.to_tag().expect("the edge's To tag");
    alice.ack(edge.sip, NUMBER_A, &tag);

    // Mallory saw the INVITE's answer: she has the Call-ID and the edge's tag, not the
    // dialog's From tag (she guesses one).
    let mut mallory = Ua::new("mallory");
    mallory.impersonate(alice.call_id(), "guessed-tag");
    for (method, extra) in [
        ("BYE", ""),
        ("REFER", "Refer-To: <sip:+19005550100@127.0.0.1>\r\n"),
    ] {
        let answer = mallory
            .request(edge.sip, method, NUMBER_A, &tag, extra)
            .expect("an answer to the forged request");
        assert_eq!(answer.code, 481, "{method}: {}", answer.text);
        assert!(
            answer
                .text
                .contains("Reason: SIP;cause=481;text=\"the From tag does not match the dialog\""),
            "{}",
            answer.text
        );
        assert_eq!(
            edge.metric(&format!(
                "switchyard_edge_dialog_mismatches_total{{method=\"{method}\"}}"
            )),
            1.0
        );
    }
    assert!(
        app.wait_for("/refer", Duration::from_millis(300)).is_none(),
        "the forged REFER never reached the refer application"
    );
    // The call is still up: Alice's own BYE is answered 200 (after a forged BYE had
    // ended the call it would get 481) and reaches Bob.
    assert_eq!(alice.bye(edge.sip, NUMBER_A, &tag), Some(200));
    assert_success(&bob.finish(Duration::from_secs(10)));
}

/// A credentials file with Alice and Bob.
fn credentials() -> PathBuf {
    write(
        &scratch_dir("credentials"),
        "credentials",
        "# user:password\nalice:wonderland\ncallee:builder\n",
    )
}

/// Digest authentication offering `algorithms`.
fn auth_args_with(credentials: &std::path::Path, algorithms: &str) -> Vec<String> {
    [
        "--auth-credentials",
        credentials.to_str().unwrap_or_default(),
        "--auth-nonce-secret",
        NONCE_SECRET,
        "--auth-algorithms",
        algorithms,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Digest authentication with MD5 only: the sipp in Debian (3.6) knows no SHA-256 and
/// answers the first challenge whatever its algorithm.
fn auth_args(credentials: &std::path::Path) -> Vec<String> {
    auth_args_with(credentials, "MD5")
}

fn edge_with(dir: &std::path::Path, extra: &[String]) -> Edge {
    let mut args = vec![
        "--phone-numbers".to_owned(),
        dir.to_str().unwrap_or_default().to_owned(),
    ];
    args.extend_from_slice(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Edge::start(&args)
}

/// sipp as Alice with credentials. SIPp 3.6 answers the first challenge only if it is
/// MD5 (the edges here offer MD5 alone), and computes the digest over
/// `sip:<-auth_uri>`: the Request-URI, as RFC 3261 §22.4 wants and the edge checks.
fn alice_with(scenario: &str, target: SocketAddr, user: &str, password: &str) -> Sipp {
    Sipp::client(scenario, target, SippTransport::Udp)
        .arg("-s")
        .arg(NUMBER_A)
        .arg("-au")
        .arg(user)
        .arg("-ap")
        .arg(password)
        .arg("-auth_uri")
        .arg(&format!("{NUMBER_A}@{target}"))
}

fn auth_metric(edge: &Edge, method: &str, result: &str) -> f64 {
    edge.metric(&format!(
        "switchyard_edge_auth_total{{method=\"{method}\",result=\"{result}\"}}"
    ))
}

#[test]
fn a_caller_with_credentials_completes_a_call_through_digest() {
    let app = AppServer::start();
    let bob = Sipp::server("uas_answer.xml");
    let dir = number_a(&app, bob.addr, "<Response><Hangup/></Response>");
    let edge = edge_with(&dir, &auth_args(&credentials()));

    // 401 with a challenge, ACK, INVITE with credentials, 200, talk, BYE.
    assert_success(&alice_with("uac_call_auth.xml", edge.sip, "alice", "wonderland").run());
    assert_success(&bob.finish(Duration::from_secs(10)));
    assert_eq!(auth_metric(&edge, "INVITE", "challenged"), 1.0);
    assert_eq!(auth_metric(&edge, "INVITE", "authenticated"), 1.0);
}

/// An edge with digest authentication whose number A dials nobody (port 9): a caller
/// who is not authenticated must never be dialled through.
fn auth_edge_dialling_nobody() -> (AppServer, Edge) {
    let app = AppServer::start();
    let dir = number_a(
        &app,
        "127.0.0.1:9".parse().expect("an address"),
        "<Response/>",
    );
    let edge = edge_with(&dir, &auth_args(&credentials()));
    (app, edge)
}

#[test]
fn a_wrong_password_or_an_unknown_user_is_refused_403_after_a_fresh_challenge() {
    let (app, edge) = auth_edge_dialling_nobody();

    for (user, password) in [("alice", "guess"), ("mallory", "wonderland")] {
        assert_success(&alice_with("uac_auth_refused.xml", edge.sip, user, password).run());
    }
    assert_eq!(auth_metric(&edge, "INVITE", "challenged"), 2.0);
    assert_eq!(auth_metric(&edge, "INVITE", "refused"), 2.0);
    assert!(
        app.wait_for("/voice", Duration::from_millis(300)).is_none(),
        "no RCML was fetched for a refused caller"
    );
}

/// Unknown and known numbers get the same challenge: authentication comes before
/// routing, so a scanner cannot tell which numbers exist.
#[test]
fn unknown_numbers_are_challenged_like_known_ones() {
    let (_app, edge) = auth_edge_dialling_nobody();
    let mut statuses = Vec::new();
    for number in [NUMBER_A, "+19990000000"] {
        let mut caller = Ua::new("scanner");
        let answer = caller.invite(edge.sip, number);
        assert!(
            answer.header("WWW-Authenticate").is_some(),
            "{}",
            answer.text
        );
        statuses.push(answer.text.lines().next().unwrap_or_default().to_owned());
    }
    assert_eq!(statuses[0], statuses[1]);
    assert_eq!(statuses[0], "SIP/2.0 401 Unauthorized");
}

#[test]
fn a_refer_is_challenged_and_goes_through_with_credentials() {
    let app = AppServer::start();
    let dir = number_a(
        &app,
        "127.0.0.1:9".parse().expect("an address"),
        "<Response><Pause length=\"1\"/><Hangup/></Response>",
    );
    // Only REFERs authenticate here, so Alice (a raw UA without digest) can call.
    let mut args = auth_args(&credentials());
    args.extend(["--auth-methods".to_owned(), "REFER".to_owned()]);
    let edge = edge_with(&dir, &args);
    // Bob's REFER goes to the edge's Contact, its Request-URI and digest URI.
    let auth_uri = format!("switchyard@{}", edge.sip);
    let bob = Sipp::server_with(
        "uas_transferor_auth.xml",
        &[
            "-set",
            "target",
            "carol",
            "-aa",
            "-au",
            "callee",
            "-ap",
            "builder",
            "-auth_uri",
            &auth_uri,
        ],
    );
    app.dials("/voice", bob.addr);

    let mut alice = Ua::new("alice");
    let answer = alice.invite(edge.sip, NUMBER_A);
    assert_eq!(answer.code, 200, "{}", answer.text);
    let tag = answer.to_tag().expect("a To tag");
    alice.ack(edge.sip, NUMBER_A, &tag);

    // Bob's REFER: challenged, then accepted with his credentials; the refer application
    // runs and hangs up, so Alice gets BYE.
    assert_success(&bob.finish(Duration::from_secs(15)));
    assert!(alice.wait_for_request("BYE", Duration::from_secs(10)));
    let refer = app
        .wait_for("/refer", Duration::from_secs(1))
        .expect("the refer application ran");
    assert_eq!(
        refer.params.get("Transferor").map(String::as_str),
        Some("callee")
    );
    assert_eq!(auth_metric(&edge, "REFER", "challenged"), 1.0);
    assert_eq!(auth_metric(&edge, "REFER", "authenticated"), 1.0);
    assert_eq!(auth_metric(&edge, "INVITE", "challenged"), 0.0);
}

#[test]
fn a_refer_without_credentials_gets_a_challenge_and_changes_nothing() {
    let app = AppServer::start();
    let bob = Sipp::server("uas_answer.xml");
    let dir = number_a(&app, bob.addr, "<Response><Hangup/></Response>");
    let mut args = auth_args_with(&credentials(), "SHA-256,MD5");
    args.extend(["--auth-methods".to_owned(), "REFER".to_owned()]);
    let edge = edge_with(&dir, &args);
    let mut alice = Ua::new("alice");
    let answer = alice.invite(edge.sip, NUMBER_A);
    assert_eq!(answer.code, 200, "{}", answer.text);
    let tag = answer.to_tag().expect("a To tag");
    alice.ack(edge.sip, NUMBER_A, &tag);

    let refer_to = "Refer-To: <sip:+19005550100@127.0.0.1>\r\n";
    let answer = alice
        .request(edge.sip, "REFER", NUMBER_A, &tag, refer_to)
        .expect("an answer to REFER");
    assert_eq!(answer.code, 401, "{}", answer.text);
    assert!(
        answer
            .text
            .contains("Reason: SIP;cause=401;text=\"authentication required\""),
        "{}",
        answer.text
    );
    let challenges: Vec<&str> = answer
        .text
        .lines()
        .filter(|l| l.starts_with("WWW-Authenticate:"))
        .collect();
    assert_eq!(challenges.len(), 2, "{}", answer.text);
    assert!(challenges[0].contains("algorithm=SHA-256") && challenges[1].contains("algorithm=MD5"));
    assert!(
        challenges
            .iter()
            .all(|c| c.contains("realm=\"switchyard\"") && c.contains("qop=\"auth\""))
    );

    // Made-up credentials (a nonce no edge issued) get a new challenge, not a verdict.
    let forged = format!(
        "{refer_to}Authorization: Digest username=\"alice\", realm=\"switchyard\", nonce=\"0000000000000000deadbeefdeadbeef00000000000000000000000000000000\", uri=\"sip:{NUMBER_A}@{}\", response=\"00000000000000000000000000000000\"\r\n",
        edge.sip
    );
    let answer = alice
        .request(edge.sip, "REFER", NUMBER_A, &tag, &forged)
        .expect("an answer to REFER");
    assert_eq!(answer.code, 401, "{}", answer.text);
    assert!(
        answer.text.contains("nonce not issued by this service"),
        "{}",
        answer.text
    );
    assert!(app.wait_for("/refer", Duration::from_millis(300)).is_none());
    assert_eq!(alice.bye(edge.sip, NUMBER_A, &tag), Some(200));
    assert_success(&bob.finish(Duration::from_secs(10)));
}

/// A UDP "load balancer" in front of two edges: the first transaction of the call
/// (CSeq 1: the INVITE and the ACK of its 401) goes to `first`, everything after to
/// `second`, as a Kubernetes Service may spread a caller's requests over pods. Answers
/// go from the edges straight to the caller (its Via has no rport).
fn split_relay(first: SocketAddr, second: SocketAddr) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a port for the relay");
    let addr = socket.local_addr().expect("its address");
    std::thread::spawn(move || {
        let mut buffer = [0u8; 65_536];
        // Bounded: the test is over long before.
        let _ = socket.set_read_timeout(Some(Duration::from_secs(60)));
        while let Ok((n, _)) = socket.recv_from(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..n]);
            let to = if text.lines().any(|l| l.starts_with("CSeq: 1 ")) {
                first
            } else {
                second
            };
            let _ = socket.send_to(&buffer[..n], to);
        }
    });
    addr
}

#[test]
fn a_nonce_issued_by_one_edge_is_accepted_by_another() {
    let redis = RedisServer::start();
    let app = AppServer::start();
    let bob = Sipp::server("uas_answer.xml");
    app.dials("/voice", bob.addr);
    program(
        &redis.url(),
        &[number_route(NUMBER_A, &app.url("/voice"), None)],
    );
    let credentials = credentials();
    let mut args = vec!["--redis-url".to_owned(), redis.url()];
    args.extend(auth_args(&credentials));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let one = Edge::start(&args);
    let two = Edge::start(&args);

    let relay = split_relay(one.sip, two.sip);
    assert_success(&alice_with("uac_call_auth.xml", relay, "alice", "wonderland").run());
    assert_success(&bob.finish(Duration::from_secs(10)));
    // Edge one challenged; edge two verified edge one's nonce and carried the call.
    assert_eq!(auth_metric(&one, "INVITE", "challenged"), 1.0);
    assert_eq!(auth_metric(&one, "INVITE", "authenticated"), 0.0);
    assert_eq!(auth_metric(&two, "INVITE", "challenged"), 0.0);
    assert_eq!(auth_metric(&two, "INVITE", "authenticated"), 1.0);
}
