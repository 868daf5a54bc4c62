//! Blind transfer end to end (the seed scenario): Alice calls number A, its application
//! dials Bob, Bob presses Blind Transfer to number B, the refer application dials it,
//! and Alice ends up talking to Carol. sipp plays Alice, Bob and Carol.

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchyard_tests::app_server::AppServer;
use switchyard_tests::manifests::{phone_number as number, write};
use switchyard_tests::routes::{number_route, program};
use switchyard_tests::sipp::{Sipp, SippTransport, assert_success};
use switchyard_tests::ua::Ua;
use switchyard_tests::{Edge, RedisServer};

const NUMBER_A: &str = "+15551230001";
const NUMBER_B: &str = "+15551230002";

fn scratch_dir() -> PathBuf {
    switchyard_tests::manifests::scratch_dir("transfer")
}

/// The seed's configuration as static documents: number A dials Bob and has the refer
/// application `<Dial><Number>$core_ReferTarget</Number></Dial>` (with a fallback that
/// dials `fallback`); number B dials Carol. Numbers go through the edge itself.
fn seed(bob: &str, carol: &str, fallback: &str) -> PathBuf {
    let dir = scratch_dir();
    number(
        &dir,
        "number-a",
        NUMBER_A,
        "file:dial-bob.xml",
        Some("file:refer.xml"),
    );
    number(&dir, "number-b", NUMBER_B, "file:dial-carol.xml", None);
    write(
        &dir,
        "dial-bob.xml",
        &format!("<Response><Dial><Sip>sip:callee@{bob}</Sip></Dial></Response>"),
    );
    write(
        &dir,
        "dial-carol.xml",
        &format!("<Response><Dial timeout=\"5\"><Sip>sip:carol@{carol}</Sip></Dial></Response>"),
    );
    write(
        &dir,
        "refer.xml",
        "<Response><Dial timeout=\"5\" action=\"refer-fallback.xml\"><Number>$core_ReferTarget</Number></Dial></Response>",
    );
    write(
        &dir,
        "refer-fallback.xml",
        &format!("<Response><Dial><Sip>sip:$core_Transferor@{fallback}</Sip></Dial></Response>"),
    );
    dir
}

fn edge_on(dir: &Path) -> Edge {
    Edge::start(&[
        "--phone-numbers",
        dir.to_str().unwrap_or_default(),
        "--timer-t1",
        "100ms",
    ])
}

fn alice(edge: &Edge, scenario: &str) -> std::process::Output {
    Sipp::client(scenario, edge.sip, SippTransport::Udp)
        .arg("-s")
        .arg(NUMBER_A)
        .run()
}

#[test]
fn the_seed_scenario_alice_ends_up_talking_to_carol() {
    let carol = Sipp::server("uas_target.xml");
    let bob = Sipp::server_with("uas_transferor.xml", &["-set", "target", NUMBER_B]);
    let dir = seed(
        &bob.addr.to_string(),
        &carol.addr.to_string(),
        "127.0.0.1:9",
    );
    let edge = edge_on(&dir);

    // Alice: connected to Bob, then re-INVITEd with Carol's offer, answers, hangs up.
    assert_success(&alice(&edge, "uac_transferee.xml"));
    // Bob: 202, NOTIFY 100, 180, 200 (terminated), then BYE from the edge.
    assert_success(&bob.finish(Duration::from_secs(15)));
    // Carol: invited without SDP, got Alice's answer in the ACK, then Alice's BYE.
    assert_success(&carol.finish(Duration::from_secs(15)));
    assert!(
        edge.metric("switchyard_edge_transfers_total{reason=\"connected\",result=\"succeeded\"}")
            >= 1.0
    );
    assert!(edge.metric("switchyard_edge_transfer_duration_seconds_count") >= 1.0);
    assert_eq!(edge.metric("switchyard_edge_transfers_active"), 0.0);
    assert!(edge.logs().contains("transfer ended"));
}

#[test]
fn alice_stays_up_when_the_transferor_hangs_up_right_after_202() {
    let carol = Sipp::server("uas_target.xml");
    let bob = Sipp::server_with(
        "uas_transferor_hangs_up.xml",
        &["-set", "target", NUMBER_B, "-aa"],
    );
    let dir = seed(
        &bob.addr.to_string(),
        &carol.addr.to_string(),
        "127.0.0.1:9",
    );
    let edge = edge_on(&dir);
    assert_success(&alice(&edge, "uac_transferee.xml"));
    assert_success(&bob.finish(Duration::from_secs(15)));
    assert_success(&carol.finish(Duration::from_secs(15)));
}

#[test]
fn a_busy_target_runs_the_fallback_which_reconnects_the_transferor() {
    let carol = Sipp::server("uas_busy_target.xml");
    // Bob hangs up after 202 (as desk phones do); the fallback dials "him" again at his
    // second address, which answers like a transfer target.
    let bob_again = Sipp::server("uas_target.xml");
    let bob = Sipp::server_with(
        "uas_transferor_hangs_up.xml",
        &["-set", "target", NUMBER_B, "-aa"],
    );
    let dir = seed(
        &bob.addr.to_string(),
        &carol.addr.to_string(),
        &bob_again.addr.to_string(),
    );
    let edge = edge_on(&dir);

    assert_success(&alice(&edge, "uac_transferee.xml"));
    assert_success(&carol.finish(Duration::from_secs(15)));
    assert_success(&bob.finish(Duration::from_secs(15)));
    let again = bob_again.finish(Duration::from_secs(15));
    assert_success(&again);
    assert!(
        edge.metric(
            "switchyard_edge_transfers_total{reason=\"reconnected_by_action\",result=\"failed\"}"
        ) >= 1.0
    );
}

/// An HTTP refer application, to see the parameters the edge sends.
#[test]
fn the_refer_application_gets_restcomms_parameters() {
    let app = AppServer::start();
    let carol = Sipp::server("uas_target.xml");
    let bob = Sipp::server_with("uas_transferor.xml", &["-set", "target", "carol"]);
    app.dials("/voice", bob.addr);
    app.rcml(
        "/refer",
        &format!(
            "<Response><Dial><Sip>sip:carol@{}</Sip></Dial></Response>",
            carol.addr
        ),
    );
    let dir = scratch_dir();
    number(
        &dir,
        "number-a",
        NUMBER_A,
        &app.url("/voice"),
        Some(&app.url("/refer")),
    );
    let edge = edge_on(&dir);

    assert_success(&alice(&edge, "uac_transferee.xml"));
    assert_success(&bob.finish(Duration::from_secs(15)));
    assert_success(&carol.finish(Duration::from_secs(15)));
    let refer = app
        .wait_for("/refer", Duration::from_secs(1))
        .expect("the referUrl was fetched");
    for (name, expected) in [
        ("Transferor", "callee"),
        ("Transferee", "alice"),
        ("ReferTarget", "carol"),
        ("To", NUMBER_A),
        ("From", "alice"),
        ("CallStatus", "in-progress"),
    ] {
        assert_eq!(
            refer.params.get(name).map(String::as_str),
            Some(expected),
            "{name}: {:?}",
            refer.params
        );
    }
    assert!(
        refer
            .params
            .get("ReferTransferTarget")
            .is_some_and(|t| t.starts_with("sip:carol@"))
    );
    assert!(
        refer
            .params
            .get("ReferredBy")
            .is_some_and(|t| t.starts_with("sip:callee@"))
    );
    assert!(
        refer
            .params
            .get("CallSid")
            .is_some_and(|s| s.starts_with("CA"))
    );
}

/// Alice (a raw UA) in a call with Bob (sipp), sending REFERs herself.
struct Call {
    alice: Ua,
    edge_addr: std::net::SocketAddr,
    tag: String,
}

impl Call {
    fn refer(&mut self, to: std::net::SocketAddr, extra: &str) -> u16 {
        self.alice
            .request(to, "REFER", NUMBER_A, &self.tag, extra)
            .map(|a| a.code)
            .unwrap_or(0)
    }
}

fn answered_call(edge: &Edge) -> Call {
    let mut alice = Ua::new("alice");
    let answer = alice.invite(edge.sip, NUMBER_A);
    assert_eq!(answer.code, 200, "{}", answer.text);
    let tag = answer.to_tag().expect("a To tag");
    alice.ack(edge.sip, NUMBER_A, &tag);
    Call {
        alice,
        edge_addr: edge.sip,
        tag,
    }
}

#[test]
fn refusals_answer_with_a_status_and_a_reason_and_change_nothing() {
    let app = AppServer::start();
    let bob = Sipp::server("uas_answer.xml");
    app.dials("/voice", bob.addr);
    app.rcml("/refer", "<Response><Hangup/></Response>");
    let dir = scratch_dir();
    number(
        &dir,
        "number-a",
        NUMBER_A,
        &app.url("/voice"),
        Some(&app.url("/refer")),
    );
    let edge = edge_on(&dir);
    let mut call = answered_call(&edge);
    let at = call.edge_addr;

    assert_eq!(call.refer(at, ""), 400, "missing Refer-To");
    assert_eq!(
        call.refer(at, "Refer-To: <nonsense>\r\n"),
        400,
        "unparseable Refer-To"
    );
    assert_eq!(
        call.refer(at, "Refer-To: <http://evil.example/>\r\n"),
        403,
        "scheme"
    );
    assert_eq!(
        call.refer(
            at,
            "Refer-To: <sip:carol@h?Replaces=x%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>\r\n"
        ),
        501,
        "Replaces"
    );
    let answer = call
        .alice
        .request(
            at,
            "REFER",
            NUMBER_A,
            &call.tag,
            "Refer-To: <http://evil.example/>\r\n",
        )
        .expect("an answer");
    assert!(
        answer.text.contains("Reason: SIP;cause=403;text="),
        "{}",
        answer.text
    );
    assert!(
        app.wait_for("/refer", Duration::from_millis(300)).is_none(),
        "no refused REFER reaches the app"
    );
    assert!(
        edge.metric(
            "switchyard_edge_transfers_total{reason=\"scheme_not_allowed\",result=\"rejected\"}"
        ) >= 1.0
    );

    // Outside a dialog: 481.
    let mut stranger = Ua::new("mallory");
    let answer = stranger
        .request(at, "REFER", NUMBER_A, "", "Refer-To: <sip:carol@h>\r\n")
        .expect("an answer");
    assert_eq!(answer.code, 481, "{}", answer.text);

    // The call is unchanged: Alice can still hang up normally, and Bob gets the BYE.
    assert_eq!(call.alice.bye(at, NUMBER_A, &call.tag), Some(200));
    assert_success(&bob.finish(Duration::from_secs(10)));
}

#[test]
fn a_number_without_refer_url_refuses_transfers_with_403() {
    let app = AppServer::start();
    let bob = Sipp::server("uas_answer.xml");
    app.dials("/voice", bob.addr);
    let dir = scratch_dir();
    number(&dir, "number-a", NUMBER_A, &app.url("/voice"), None);
    let edge = edge_on(&dir);
    let mut call = answered_call(&edge);
    assert_eq!(
        call.refer(call.edge_addr, "Refer-To: <sip:carol@h>\r\n"),
        403
    );
    assert_eq!(
        call.alice.bye(call.edge_addr, NUMBER_A, &call.tag),
        Some(200)
    );
    assert_success(&bob.finish(Duration::from_secs(10)));
}

#[test]
fn two_refers_racing_through_two_edges_exactly_one_wins() {
    let redis = RedisServer::start();
    let app = AppServer::start();
    let bob = Sipp::server("uas_answer.xml");
    app.dials("/voice", bob.addr);
    // The winning transfer's application ends the call: Bob gets BYE.
    app.rcml(
        "/refer",
        "<Response><Pause length=\"1\"/><Hangup/></Response>",
    );
    program(
        &redis.url(),
        &[number_route(
            NUMBER_A,
            &app.url("/voice"),
            Some(&app.url("/refer")),
        )],
    );
    let url = redis.url();
    let one = Edge::start(&["--redis-url", &url]);
    let two = Edge::start(&["--redis-url", &url]);

    let mut call = answered_call(&one);
    let codes = call.alice.race(
        &[(one.sip, 10), (two.sip, 11)],
        "REFER",
        NUMBER_A,
        &call.tag,
        "Refer-To: <sip:carol@127.0.0.1>\r\n",
    );
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(sorted, vec![202, 491], "{codes:?}");
    assert_success(&bob.finish(Duration::from_secs(15)));
}

#[test]
fn refer_sub_false_gets_no_notifys() {
    let carol = Sipp::server("uas_target.xml");
    let bob = Sipp::server_with("uas_transferor_nosub.xml", &["-set", "target", NUMBER_B]);
    let dir = seed(
        &bob.addr.to_string(),
        &carol.addr.to_string(),
        "127.0.0.1:9",
    );
    let edge = edge_on(&dir);
    assert_success(&alice(&edge, "uac_transferee.xml"));
    // Bob's scenario fails on any NOTIFY before the BYE that ends his leg.
    assert_success(&bob.finish(Duration::from_secs(15)));
    assert_success(&carol.finish(Duration::from_secs(15)));
}

/// Either side may transfer: Alice (the caller) sends REFER and Bob (the callee) is
/// connected to Carol.
#[test]
fn the_caller_can_transfer_the_callee() {
    let app = AppServer::start();
    let bob = Sipp::server("uas_transferee.xml");
    let carol = Sipp::server("uas_target.xml");
    app.dials("/voice", bob.addr);
    app.rcml(
        "/refer",
        &format!(
            "<Response><Dial><Sip>sip:carol@{}</Sip></Dial></Response>",
            carol.addr
        ),
    );
    let dir = scratch_dir();
    number(
        &dir,
        "number-a",
        NUMBER_A,
        &app.url("/voice"),
        Some(&app.url("/refer")),
    );
    let edge = edge_on(&dir);

    let mut call = answered_call(&edge);
    assert_eq!(
        call.refer(edge.sip, "Refer-To: <sip:carol@127.0.0.1>\r\n"),
        202
    );
    // Alice hears the progress, then her leg is ended once Bob talks to Carol.
    assert!(
        call.alice.wait_for_request("BYE", Duration::from_secs(15)),
        "{:?}",
        call.alice.seen()
    );
    assert!(call.alice.seen().iter().any(|m| m == "NOTIFY"));
    assert_success(&bob.finish(Duration::from_secs(15)));
    assert_success(&carol.finish(Duration::from_secs(15)));
    let refer = app
        .wait_for("/refer", Duration::from_secs(1))
        .expect("the refer application");
    assert_eq!(
        refer.params.get("Transferor").map(String::as_str),
        Some("alice")
    );
    assert_eq!(
        refer.params.get("Transferee").map(String::as_str),
        Some("callee")
    );
}

/// Any pod: the call is set up through one edge and Bob's REFER reaches the other. Alice
/// and Bob are RFC-conformant raw UAs here (sipp answers every request of a call to the
/// address its first message came from, which no longer holds when two edges share a
/// call); Carol is sipp.
#[test]
fn a_refer_reaching_the_other_edge_transfers_the_call() {
    let redis = RedisServer::start();
    let app = AppServer::start();
    let bob = Ua::new("callee");
    let carol = Sipp::server("uas_target.xml");
    let bob_addr = bob.local_addr();
    app.dials("/voice", bob_addr);
    app.rcml(
        "/refer",
        &format!(
            "<Response><Dial><Sip>sip:carol@{}</Sip></Dial></Response>",
            carol.addr
        ),
    );
    program(
        &redis.url(),
        &[number_route(
            NUMBER_A,
            &app.url("/voice"),
            Some(&app.url("/refer")),
        )],
    );
    let url = redis.url();
    let one = Edge::start(&["--redis-url", &url]);
    let two = Edge::start(&["--redis-url", &url]);

    let one_sip = one.sip;
    let alice = std::thread::spawn(move || {
        let mut alice = Ua::new("alice");
        let answer = alice.invite(one_sip, NUMBER_A);
        let tag = answer.to_tag().unwrap_or_default();
        alice.ack(one_sip, NUMBER_A, &tag);
        // Alice stays on the line; the transfer re-INVITEs her with Carol's offer.
        let reinvited = alice.wait_for_request("INVITE", Duration::from_secs(15));
        (answer.code, reinvited, alice, tag)
    });
    let mut bob = bob;
    let answered = bob
        .accept(Duration::from_secs(10))
        .expect("Bob's phone rings");
    std::thread::sleep(Duration::from_millis(200));
    let refer = bob
        .request_in(
            &answered,
            two.sip,
            "REFER",
            &format!("Refer-To: <sip:carol@{}>\r\n", two.sip),
        )
        .expect("an answer to REFER");
    assert_eq!(refer.code, 202, "{}", refer.text);
    let (code, reinvited, mut alice, tag) =
        alice.join().unwrap_or_else(|_| panic!("Alice's thread"));
    assert_eq!(code, 200);
    assert!(
        reinvited,
        "Alice was re-INVITEd with Carol's offer: {:?}",
        alice.seen()
    );
    // Bob got NOTIFYs and, once Alice talks to Carol, BYE.
    assert!(
        bob.wait_for_request("BYE", Duration::from_secs(10)),
        "{:?}",
        bob.seen()
    );
    assert!(bob.seen().iter().any(|m| m == "NOTIFY"));
    // Alice hangs up through either edge; Carol gets the BYE.
    assert_eq!(alice.bye(two.sip, NUMBER_A, &tag), Some(200));
    assert_success(&carol.finish(Duration::from_secs(15)));
}

/// A real softphone presses Blind Transfer: baresip is Bob and types `/transfer` to
/// number B; Alice (sipp) ends up talking to Carol (sipp).
#[test]
fn a_real_softphone_performs_the_blind_transfer() {
    let carol = Sipp::server("uas_target.xml");
    let mut bob = switchyard_tests::baresip::Baresip::start("bob");
    let dir = seed(
        &bob.addr.to_string(),
        &carol.addr.to_string(),
        "127.0.0.1:9",
    );
    // baresip's account is sip:bob@...: dial it by that name.
    write(
        &dir,
        "dial-bob.xml",
        &format!(
            "<Response><Dial><Sip>sip:bob@{}</Sip></Dial></Response>",
            bob.addr
        ),
    );
    let edge = edge_on(&dir);

    let edge_sip = edge.sip;
    let alice = std::thread::spawn(move || {
        Sipp::client("uac_transferee.xml", edge_sip, SippTransport::Udp)
            .arg("-s")
            .arg(NUMBER_A)
            .run()
    });
    // Once Bob has answered, he presses Blind Transfer and types number B.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while edge.metric("switchyard_edge_calls_total{outcome=\"answered\"}") < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "baresip never answered:\n{}",
            edge.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    bob.command(&format!("/transfer sip:{NUMBER_B}@{}", edge.sip));

    assert_success(&alice.join().unwrap_or_else(|_| panic!("Alice's sipp")));
    assert_success(&carol.finish(Duration::from_secs(15)));
    assert!(
        edge.metric("switchyard_edge_transfers_total{reason=\"connected\",result=\"succeeded\"}")
            >= 1.0,
        "{}",
        edge.logs()
    );
}

/// An edge killed in the middle of a transfer: the other edge ends the call cleanly (BYE
/// to both parties, CANCEL to the target that was ringing) instead of leaving it
/// half-bridged.
#[test]
fn a_transfer_whose_edge_dies_is_ended_cleanly_by_the_other() {
    let redis = RedisServer::start();
    let app = AppServer::start();
    let bob = Ua::new("callee");
    let carol = Sipp::server("uas_ring_cancel_orphan.xml");
    let bob_addr = bob.local_addr();
    app.dials("/voice", bob_addr);
    app.rcml(
        "/refer",
        &format!(
            "<Response><Dial timeout=\"2\"><Sip>sip:carol@{}</Sip></Dial></Response>",
            carol.addr
        ),
    );
    program(
        &redis.url(),
        &[number_route(
            NUMBER_A,
            &app.url("/voice"),
            Some(&app.url("/refer")),
        )],
    );
    let url = redis.url();
    let one = Edge::start(&["--redis-url", &url]);
    let mut two = Edge::start(&["--redis-url", &url]);

    let one_sip = one.sip;
    let alice = std::thread::spawn(move || {
        let mut alice = Ua::new("alice");
        let answer = alice.invite(one_sip, NUMBER_A);
        let tag = answer.to_tag().unwrap_or_default();
        alice.ack(one_sip, NUMBER_A, &tag);
        alice.wait_for_request("BYE", Duration::from_secs(40))
    });
    let mut bob = bob;
    let answered = bob
        .accept(Duration::from_secs(10))
        .expect("Bob's phone rings");
    std::thread::sleep(Duration::from_millis(200));
    let refer = bob
        .request_in(
            &answered,
            two.sip,
            "REFER",
            &format!("Refer-To: <sip:carol@{}>\r\n", two.sip),
        )
        .expect("an answer to REFER");
    assert_eq!(refer.code, 202, "{}", refer.text);
    // Carol is ringing when the edge running the transfer dies.
    assert!(app.wait_for("/refer", Duration::from_secs(5)).is_some());
    std::thread::sleep(Duration::from_millis(500));
    two.kill();

    assert!(
        alice.join().unwrap_or(false),
        "Alice was hung up cleanly by the surviving edge"
    );
    assert!(
        bob.wait_for_request("BYE", Duration::from_secs(20)),
        "{:?}",
        bob.seen()
    );
    assert_success(&carol.finish(Duration::from_secs(20)));
    assert!(
        one.logs().contains("transfer owner stopped"),
        "{}",
        one.logs()
    );
}

/// An answered call to number A (Alice a raw UA, Bob sipp) on an edge started with
/// `edge_args`, number A declaring `refer_target_allow` (YAML flow list, empty: none);
/// its refer application hangs up, so an accepted REFER ends the call.
fn call_with_refer_policy(
    refer_target_allow: &str,
    edge_args: &[&str],
) -> (AppServer, switchyard_tests::sipp::RunningSipp, Edge, Call) {
    let app = AppServer::start();
    let bob = Sipp::server("uas_answer.xml");
    app.dials("/voice", bob.addr);
    app.rcml("/refer", "<Response><Hangup/></Response>");
    let dir = scratch_dir();
    let allow = if refer_target_allow.is_empty() {
        String::new()
    } else {
        format!("  referTargetAllow: {refer_target_allow}\n")
    };
    write(
        &dir,
        "number-a.yaml",
        &format!(
            "apiVersion: switchyard.dev/v1alpha1\nkind: PhoneNumber\nmetadata: {{name: number-a, namespace: telephony}}\nspec:\n  phoneNumber: \"{NUMBER_A}\"\n  voiceUrl: {}\n  referUrl: {}\n{allow}",
            app.url("/voice"),
            app.url("/refer")
        ),
    );
    let mut args = vec!["--phone-numbers", dir.to_str().unwrap_or_default()];
    args.extend_from_slice(edge_args);
    let edge = Edge::start(&args);
    let call = answered_call(&edge);
    (app, bob, edge, call)
}

/// A denied target: 403 with a Reason, counted, the refer application never fetched.
fn assert_target_denied(app: &AppServer, call: &mut Call, refer_to: &str) {
    let answer = call
        .alice
        .request(
            call.edge_addr,
            "REFER",
            NUMBER_A,
            &call.tag,
            &format!("Refer-To: {refer_to}\r\n"),
        )
        .expect("an answer to the REFER");
    assert_eq!(answer.code, 403, "{}", answer.text);
    assert!(
        answer
            .text
            .contains("Reason: SIP;cause=403;text=\"transfer target not allowed"),
        "{}",
        answer.text
    );
    assert!(
        app.wait_for("/refer", Duration::from_millis(300)).is_none(),
        "a denied REFER does not reach the refer application"
    );
}

/// After denials, an allowed target still goes through: 202, the refer application gets
/// it, and (it hangs up) the call ends for both parties.
fn assert_target_allowed(
    app: &AppServer,
    bob: switchyard_tests::sipp::RunningSipp,
    call: &mut Call,
    refer_to: &str,
    target: &str,
) {
    let answer = call
        .alice
        .request(
            call.edge_addr,
            "REFER",
            NUMBER_A,
            &call.tag,
            &format!("Refer-To: {refer_to}\r\n"),
        )
        .expect("an answer to the REFER");
    assert_eq!(answer.code, 202, "allowed target: {}", answer.text);
    let request = app
        .wait_for("/refer", Duration::from_secs(10))
        .expect("the refer application is fetched");
    assert_eq!(
        request.params.get("ReferTarget").map(String::as_str),
        Some(target),
        "{:?}",
        request.params
    );
    assert!(call.alice.wait_for_request("BYE", Duration::from_secs(10)));
    assert_success(&bob.finish(Duration::from_secs(10)));
}

#[test]
fn refer_target_allow_of_the_number_admits_its_targets_and_refuses_the_rest() {
    let (app, bob, edge, mut call) = call_with_refer_policy(
        r#"['\+1555123000[2-9]', 'sip:desk-[0-9]+@.*']"#,
        &[
            // The number's own list replaces the install-wide one.
            "--refer-target-allow",
            ".*",
        ],
    );
    // Premium-rate number, a prefix of an allowed one, an allowed one with a suffix.
    assert_target_denied(&app, &mut call, "<sip:+19005550100@h>");
    assert_target_denied(&app, &mut call, "<sip:+1555123000@h>");
    assert_target_denied(&app, &mut call, "<tel:+155512300029>");
    assert_eq!(
        edge.metric(
            "switchyard_edge_transfers_total{reason=\"target_not_allowed\",result=\"rejected\"}"
        ),
        3.0
    );
    // Nothing changed: the call is still up, and an allowed target goes through.
    let number_b = format!("<sip:{NUMBER_B}@{}>", call.edge_addr);
    assert_target_allowed(&app, bob, &mut call, &number_b, NUMBER_B);
}

#[test]
fn the_install_wide_refer_target_allow_applies_to_numbers_without_their_own() {
    let (app, bob, edge, mut call) =
        call_with_refer_policy("", &["--refer-target-allow", r"sip:desk-\d{1,3}@.*"]);
    assert_target_denied(&app, &mut call, "<sip:+19005550100@h>");
    assert_target_denied(&app, &mut call, "<sip:desk-1234@h>");
    assert_eq!(
        edge.metric(
            "switchyard_edge_transfers_total{reason=\"target_not_allowed\",result=\"rejected\"}"
        ),
        2.0
    );
    // Matched on the whole Refer-To URI (the comma in `{1,3}` survives the flag).
    assert_target_allowed(&app, bob, &mut call, "<sip:desk-42@h>", "desk-42");
}
