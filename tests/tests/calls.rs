//! Calls through the edge, end to end: sipp as caller and callees, an RCML application
//! server inside the test, the edge as a real process (standalone, and on a real Redis).

use std::path::PathBuf;
use std::time::Duration;

use switchyard_tests::app_server::{AppServer, Reply};
use switchyard_tests::routes::{number_route, program};
use switchyard_tests::sipp::{Sipp, SippTransport, assert_success, refused_scenario};
use switchyard_tests::{Edge, RedisServer};

const NUMBER_A: &str = "+15551230001";

/// A directory with one PhoneNumber manifest for number A.
fn manifests(voice_url: &str, fallback: Option<&str>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-calls-{}-{}",
        std::process::id(),
        switchyard_tests::free_port()
    ));
    std::fs::create_dir_all(&dir).expect("a manifest directory");
    let fallback = fallback
        .map(|url| format!("  voiceFallbackUrl: {url}\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("number-a.yaml"),
        format!(
            "apiVersion: switchyard.dev/v1alpha1\nkind: PhoneNumber\nmetadata: {{name: number-a, namespace: telephony}}\nspec:\n  phoneNumber: \"{NUMBER_A}\"\n  voiceUrl: {voice_url}\n{fallback}"
        ),
    )
    .expect("a manifest");
    dir
}

/// Timers shortened so unanswered and unreachable cases finish in seconds (T1 = 50 ms
/// gives Timer B = 3.2 s).
const FAST_TIMERS: [&str; 2] = ["--timer-t1", "50ms"];

fn standalone_edge(app: &AppServer, fallback: Option<&str>) -> Edge {
    let dir = manifests(&app.url("/voice"), fallback);
    let dir = dir.to_str().unwrap_or_default().to_owned();
    Edge::start(&["--phone-numbers", &dir, FAST_TIMERS[0], FAST_TIMERS[1]])
}

/// A Dial of the callee at `target`, with `action="/action"`.
fn dial(target: &std::net::SocketAddr, timeout_seconds: u32) -> String {
    format!(
        r#"<?xml version="1.0"?><Response><Dial timeout="{timeout_seconds}" action="/action"><Sip>sip:callee@{target}</Sip></Dial></Response>"#
    )
}

fn call(edge: &Edge, scenario: &str) -> std::process::Output {
    Sipp::client(scenario, edge.sip, SippTransport::Udp)
        .arg("-s")
        .arg(NUMBER_A)
        .run()
}

fn refused(edge: &Edge, code: u16, check_reason: bool) -> std::process::Output {
    Sipp::client_file(&refused_scenario(code, check_reason), edge.sip)
        .arg("-s")
        .arg(NUMBER_A)
        .run()
}

#[test]
fn a_call_is_answered_and_hung_up_by_the_caller() {
    let app = AppServer::start();
    let bob = Sipp::server("uas_answer.xml");
    app.rcml("/voice", &dial(&bob.addr, 2));
    let edge = standalone_edge(&app, None);

    assert_success(&call(&edge, "uac_call.xml"));
    assert_success(&bob.finish(Duration::from_secs(10)));

    let voice = app
        .wait_for("/voice", Duration::from_secs(1))
        .expect("the voiceUrl was fetched");
    assert_eq!(voice.method, "POST");
    for (name, expected) in [
        ("To", NUMBER_A),
        ("From", "alice"),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("AccountSid", "ACswitchyard"),
        ("CallerName", "Alice"),
    ] {
        assert_eq!(
            voice.params.get(name).map(String::as_str),
            Some(expected),
            "{name}"
        );
    }
    assert!(
        voice
            .params
            .get("CallSid")
            .is_some_and(|sid| sid.starts_with("CA") && sid.len() == 34)
    );
    assert!(voice.params.contains_key("ApiVersion"));
    // The bridged call's end is reported to the Dial action.
    let action = app
        .wait_for("/action", Duration::from_secs(5))
        .expect("the Dial action");
    assert_eq!(
        action.params.get("DialCallStatus").map(String::as_str),
        Some("completed")
    );
    assert!(edge.metric("switchyard_edge_calls_total{outcome=\"answered\"}") >= 1.0);
    assert!(edge.metric("switchyard_edge_calls_total{outcome=\"completed\"}") >= 1.0);
}

#[test]
fn a_call_is_hung_up_by_the_callee() {
    let app = AppServer::start();
    let bob = Sipp::server("uas_answer_hangup.xml");
    app.rcml("/voice", &dial(&bob.addr, 2));
    let edge = standalone_edge(&app, None);
    assert_success(&call(&edge, "uac_call_wait_bye.xml"));
    assert_success(&bob.finish(Duration::from_secs(10)));
}

#[test]
fn a_busy_callee_reaches_the_dial_action_which_decides() {
    let app = AppServer::start();
    let bob = Sipp::server("uas_busy.xml");
    app.rcml("/voice", &dial(&bob.addr, 2));
    app.rcml("/action", r#"<Response><Reject reason="busy"/></Response>"#);
    let edge = standalone_edge(&app, None);
    assert_success(&refused(&edge, 486, true));
    assert_success(&bob.finish(Duration::from_secs(10)));
    let action = app
        .wait_for("/action", Duration::from_secs(2))
        .expect("the Dial action");
    assert_eq!(
        action.params.get("DialCallStatus").map(String::as_str),
        Some("busy")
    );
    assert!(action.params.contains_key("DialCallSid"));
}

#[test]
fn no_answer_cancels_the_callee_and_runs_the_next_verb_without_action() {
    let app = AppServer::start();
    let bob = Sipp::server("uas_ring_cancel.xml");
    // No action: the verb after Dial runs (a Hangup), and the caller hears 480.
    app.rcml(
        "/voice",
        &format!(
            r#"<Response><Dial timeout="1"><Sip>sip:callee@{}</Sip></Dial><Hangup/></Response>"#,
            bob.addr
        ),
    );
    let edge = standalone_edge(&app, None);
    assert_success(&refused(&edge, 480, true));
    assert_success(&bob.finish(Duration::from_secs(10)));
    assert!(
        app.wait_for("/action", Duration::from_millis(200))
            .is_none()
    );
}

#[test]
fn an_unreachable_callee_is_a_failed_dial() {
    let app = AppServer::start();
    let nobody: std::net::SocketAddr = format!("127.0.0.1:{}", switchyard_tests::free_port())
        .parse()
        .unwrap_or_else(|_| unreachable!());
    app.rcml("/voice", &dial(&nobody, 10));
    app.rcml("/action", "<Response><Hangup/></Response>");
    let edge = standalone_edge(&app, None);
    assert_success(&refused(&edge, 480, true));
    let action = app
        .wait_for("/action", Duration::from_secs(2))
        .expect("the Dial action");
    assert_eq!(
        action.params.get("DialCallStatus").map(String::as_str),
        Some("failed")
    );
}

#[test]
fn a_caller_cancel_before_answer_cancels_the_callee() {
    let app = AppServer::start();
    let bob = Sipp::server("uas_ring_cancel.xml");
    app.rcml("/voice", &dial(&bob.addr, 20));
    let edge = standalone_edge(&app, None);
    assert_success(&call(&edge, "uac_cancel.xml"));
    assert_success(&bob.finish(Duration::from_secs(10)));
}

#[test]
fn the_fallback_url_runs_when_the_voice_url_fails() {
    let app = AppServer::start();
    app.route("/voice", Reply::Status(500));
    app.rcml("/fallback", "<Response><Reject/></Response>");
    let edge = standalone_edge(&app, Some(&app.url("/fallback")));
    assert_success(&refused(&edge, 603, true));
    assert!(app.wait_for("/fallback", Duration::from_secs(1)).is_some());
}

#[test]
fn malformed_rcml_without_fallback_ends_the_call_cleanly() {
    let app = AppServer::start();
    app.rcml(
        "/voice",
        "<Response><Dial><Sip>sip:x@127.0.0.1</Sip></Response>",
    );
    let edge = standalone_edge(&app, None);
    assert_success(&refused(&edge, 503, true));
    assert!(edge.metric("switchyard_edge_calls_total{outcome=\"app_unavailable\"}") >= 1.0);
    assert!(edge.logs().contains("voiceUrl failed"));
    // The edge is still well.
    assert_success(&Sipp::client("options.xml", edge.sip, SippTransport::Udp).run());
}

#[test]
fn an_app_server_that_is_down_gets_503_with_a_reason() {
    let dead = format!("http://127.0.0.1:{}/voice", switchyard_tests::free_port());
    let dir = manifests(&dead, None);
    let edge = Edge::start(&["--phone-numbers", dir.to_str().unwrap_or_default()]);
    assert_success(&refused(&edge, 503, true));
}

#[test]
fn an_unknown_number_gets_404() {
    let app = AppServer::start();
    let edge = standalone_edge(&app, None);
    let output = Sipp::client_file(&refused_scenario(404, true), edge.sip)
        .arg("-s")
        .arg("+19990000000")
        .run();
    assert_success(&output);
    assert!(
        app.requests().is_empty(),
        "no RCML fetched for an unknown number"
    );
}

#[test]
fn with_redis_down_new_calls_get_503_and_recover_without_a_restart() {
    let mut redis = RedisServer::start();
    let app = AppServer::start();
    // Routes come from Redis: number A programmed the way the operator would (retrying
    // while Redis comes back).
    let route = number_route(NUMBER_A, &app.url("/voice"), None);
    let url = redis.url();
    let program = || program(&url, std::slice::from_ref(&route));
    program();
    app.rcml("/voice", "<Response><Reject/></Response>");
    let edge = Edge::start(&["--redis-url", &redis.url(), "--redis-timeout", "300ms"]);
    // Wait until the edge's route cache has the number (it follows notifications).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while refused(&edge, 603, true).status.code() != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the edge never served number A"
        );
    }

    redis.kill();
    let output = Sipp::client_file(&refused_scenario(503, true), edge.sip)
        .arg("-s")
        .arg(NUMBER_A)
        .run();
    assert_success(&output);
    assert!(edge.metric("switchyard_edge_calls_total{outcome=\"store_unavailable\"}") >= 1.0);

    redis.restart();
    program();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while refused(&edge, 603, true).status.code() != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "calls did not work again after Redis came back"
        );
    }
}

#[test]
fn a_hold_re_invite_is_relayed_both_ways() {
    let app = AppServer::start();
    let bob = Sipp::server("uas_answer_hold.xml");
    app.rcml("/voice", &dial(&bob.addr, 5));
    let edge = standalone_edge(&app, None);
    assert_success(&call(&edge, "uac_call_hold.xml"));
    assert_success(&bob.finish(Duration::from_secs(10)));
}

#[test]
fn early_media_is_relayed_to_the_caller() {
    let app = AppServer::start();
    let bob = Sipp::server("uas_early_media.xml");
    app.rcml("/voice", &dial(&bob.addr, 5));
    let edge = standalone_edge(&app, None);
    assert_success(&call(&edge, "uac_call_early.xml"));
    assert_success(&bob.finish(Duration::from_secs(10)));
}

#[test]
fn the_dial_time_limit_ends_a_bridged_call() {
    let app = AppServer::start();
    let bob = Sipp::server("uas_answer.xml");
    app.rcml(
        "/voice",
        &format!(
            r#"<Response><Dial timeLimit="1"><Sip>sip:callee@{}</Sip></Dial></Response>"#,
            bob.addr
        ),
    );
    let edge = standalone_edge(&app, None);
    let started = std::time::Instant::now();
    // Both parties get BYE from the edge.
    assert_success(&call(&edge, "uac_call_wait_bye.xml"));
    assert_success(&bob.finish(Duration::from_secs(10)));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before the time limit"
    );
    assert!(edge.logs().contains("Dial timeLimit reached"));
}

#[test]
fn no_answer_reaches_the_dial_action_with_no_answer() {
    let app = AppServer::start();
    let bob = Sipp::server("uas_ring_cancel.xml");
    app.rcml("/voice", &dial(&bob.addr, 1));
    app.rcml("/action", r#"<Response><Reject reason="busy"/></Response>"#);
    let edge = standalone_edge(&app, None);
    assert_success(&refused(&edge, 486, true));
    assert_success(&bob.finish(Duration::from_secs(10)));
    let action = app
        .wait_for("/action", Duration::from_secs(2))
        .expect("the Dial action");
    assert_eq!(
        action.params.get("DialCallStatus").map(String::as_str),
        Some("no-answer")
    );
}

#[test]
fn pause_then_redirect_runs_the_next_document() {
    let app = AppServer::start();
    app.rcml(
        "/voice",
        r#"<Response><Pause length="1"/><Redirect method="GET">/second</Redirect></Response>"#,
    );
    app.rcml("/second", r#"<Response><Reject reason="busy"/></Response>"#);
    let edge = standalone_edge(&app, None);
    let started = std::time::Instant::now();
    assert_success(&refused(&edge, 486, true));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the Pause was skipped"
    );
    let second = app
        .wait_for("/second", Duration::from_secs(1))
        .expect("the Redirect target was fetched");
    assert_eq!(second.method, "GET");
    assert!(
        second
            .params
            .get("CallSid")
            .is_some_and(|s| s.starts_with("CA"))
    );
}

/// A pod being stopped: new calls get 503 with Retry-After while the call in progress
/// finishes, then the process exits.
#[test]
fn a_draining_edge_refuses_new_calls_with_503_and_finishes_the_call_in_progress() {
    let app = AppServer::start();
    let bob = Sipp::server("uas_ring_cancel.xml");
    app.rcml(
        "/voice",
        &format!(
            r#"<Response><Dial timeout="3"><Sip>sip:callee@{}</Sip></Dial></Response>"#,
            bob.addr
        ),
    );
    let dir = manifests(&app.url("/voice"), None);
    let mut edge = Edge::start(&[
        "--phone-numbers",
        dir.to_str().unwrap_or_default(),
        "--drain-timeout",
        "6s",
    ]);
    let edge_sip = edge.sip;
    let first = std::thread::spawn(move || {
        Sipp::client_file(&refused_scenario(480, true), edge_sip)
            .arg("-s")
            .arg(NUMBER_A)
            .run()
    });
    // Bob is ringing: the first call's INVITE transaction is in flight.
    assert!(app.wait_for("/voice", Duration::from_secs(5)).is_some());
    std::thread::sleep(Duration::from_millis(300));
    edge.sigterm();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while edge
        .http_get("/readyz")
        .is_some_and(|(code, _)| code == 200)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "still ready after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut late = switchyard_tests::ua::Ua::new("late");
    let answer = late.invite(edge.sip, NUMBER_A);
    assert_eq!(answer.code, 503, "{}", answer.text);
    assert!(answer.header("Retry-After").is_some(), "{}", answer.text);
    assert!(
        answer.text.contains("Reason: SIP;cause=503"),
        "{}",
        answer.text
    );

    // The call in progress runs to its end (no answer: 480), then the edge exits.
    assert_success(&first.join().unwrap_or_else(|_| panic!("the first caller")));
    assert_success(&bob.finish(Duration::from_secs(10)));
    let status = edge.terminate().expect("the edge exits once drained");
    assert!(status.success(), "{status}");
}
