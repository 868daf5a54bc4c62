//! What the Redis deployment tests (`cluster.rs`, `sentinel.rs`) share: edges on a
//! Redis URL with numbers programmed as the operator would, an RCML app server, and
//! calls held up by raw UAs so a test decides when each one ends and through which edge.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use switchyard_edge::store::tag_for_sip_call_id;
use switchyard_tests::Edge;
use switchyard_tests::app_server::AppServer;
use switchyard_tests::routes::{number_route, program};
use switchyard_tests::sipp::{RunningSipp, Sipp, SippTransport, refused_scenario};
use switchyard_tests::ua::{Answer, Ua};

pub const NUMBER_A: &str = "+15551230001";
pub const NUMBER_B: &str = "+15551230002";

pub struct Deployment {
    pub app: AppServer,
    pub edges: Vec<Edge>,
    url: String,
}

impl Deployment {
    /// Number A (voiceUrl `/voice`, referUrl `/refer`) and number B (voiceUrl `/carol`)
    /// programmed in the Redis at `url`, then `edges` edges on it.
    pub fn start(url: &str, edges: usize) -> Deployment {
        let app = AppServer::start();
        let deployment = Deployment {
            app,
            edges: Vec::new(),
            url: url.to_owned(),
        };
        deployment.program_numbers(&[]);
        let edges = (0..edges)
            .map(|_| Edge::start(&["--redis-url", url, "--timer-t1", "100ms"]))
            .collect();
        Deployment {
            edges,
            ..deployment
        }
    }

    /// Replaces the routing table: numbers A and B, and `extra` numbers answered by
    /// `/voice` too.
    pub fn program_numbers(&self, extra: &[&str]) {
        let mut routes = vec![
            number_route(
                NUMBER_A,
                &self.app.url("/voice"),
                Some(&self.app.url("/refer")),
            ),
            number_route(NUMBER_B, &self.app.url("/carol"), None),
        ];
        routes.extend(
            extra
                .iter()
                .filter(|n| **n != NUMBER_A && **n != NUMBER_B)
                .map(|n| number_route(n, &self.app.url("/voice"), None)),
        );
        program(&self.url, &routes);
    }

    /// `n` new calls, placed on the edges in turn and each ended through the second: new
    /// calls work after whatever the test did, and any edge carries them on.
    pub fn new_calls_work(&self, n: usize) {
        for mut call in held_calls(self, n) {
            assert_eq!(call.hang_up(self.edges[1].sip), Some(200));
        }
    }

    /// Number A's application dials Bob at `bob`.
    pub fn dial_bob(&self, bob: &SocketAddr) {
        self.app.rcml(
            "/voice",
            &format!("<Response><Dial><Sip>sip:bob@{bob}</Sip></Dial></Response>"),
        );
    }

    /// sipp as Alice, calling number A through the first edge.
    pub fn alice(&self, scenario: &str) -> Output {
        alice_at(self.edges[0].sip, scenario)
    }

    /// A call to `number` through the first edge that must be refused with `code`.
    pub fn refused_call(&self, number: &str, code: u16) -> Output {
        Sipp::client_file(&refused_scenario(code, false), self.edges[0].sip)
            .arg("-s")
            .arg(number)
            .run()
    }
}

pub fn alice_at(edge: SocketAddr, scenario: &str) -> Output {
    Sipp::client(scenario, edge, SippTransport::Udp)
        .arg("-s")
        .arg(NUMBER_A)
        .run()
}

/// The seed flow with its documents in the app server: A dials Bob (sipp, who
/// transfers to number B), the refer application dials number B through the edge, and
/// B's application dials Carol (sipp running `carol_scenario`). Returns Bob and Carol.
pub fn seed_transfer(deployment: &Deployment, carol_scenario: &str) -> (RunningSipp, RunningSipp) {
    let carol = Sipp::server(carol_scenario);
    let bob = Sipp::server_with("uas_transferor.xml", &["-set", "target", NUMBER_B]);
    deployment.dial_bob(&bob.addr);
    deployment.app.rcml("/refer", &refer_docs());
    deployment.app.rcml(
        "/carol",
        &format!(
            "<Response><Dial timeout=\"15\"><Sip>sip:carol@{}</Sip></Dial></Response>",
            carol.addr
        ),
    );
    (bob, carol)
}

/// The refer application: dial number B (the ReferTarget the tests' Bob asks for).
pub fn refer_docs() -> String {
    format!("<Response><Dial timeout=\"15\"><Number>{NUMBER_B}</Number></Dial></Response>")
}

/// A call to number A answered and held by a raw UA.
pub struct HeldCall {
    ua: Ua,
    to_tag: String,
}

impl HeldCall {
    /// Calls number A through `edge`; `None` if it is not answered 200.
    pub fn place(edge: SocketAddr) -> Result<HeldCall, u16> {
        Self::place_with(Ua::new("alice"), edge)
    }

    fn place_with(mut ua: Ua, edge: SocketAddr) -> Result<HeldCall, u16> {
        let answer = ua.invite(edge, NUMBER_A);
        if answer.code != 200 {
            return Err(answer.code);
        }
        let to_tag = answer.to_tag().ok_or(0u16)?;
        ua.ack(edge, NUMBER_A, &to_tag);
        Ok(HeldCall { ua, to_tag })
    }

    /// The hash tag of the call's bucket (`{xx}` without braces).
    pub fn tag(&self) -> String {
        tag_for_sip_call_id(self.ua.call_id())
    }

    /// BYE through `edge`; the final status.
    pub fn hang_up(&mut self, edge: SocketAddr) -> Option<u16> {
        self.ua.bye(edge, NUMBER_A, &self.to_tag)
    }

    /// BYE through `edge`; the final response.
    pub fn hang_up_answer(&mut self, edge: SocketAddr) -> Option<Answer> {
        self.ua.bye_answer(edge, NUMBER_A, &self.to_tag)
    }
}

/// `count` calls held up, placed through the edges in turn.
pub fn held_calls(deployment: &Deployment, count: usize) -> Vec<HeldCall> {
    (0..count)
        .map(|n| {
            let edge = deployment.edges[n % deployment.edges.len()].sip;
            HeldCall::place(edge).unwrap_or_else(|code| panic!("call {n} answered {code}"))
        })
        .collect()
}

/// Hangs every call up, through the edges in turn; how many were ended (200).
pub fn hang_up_all(deployment: &Deployment, calls: &mut [HeldCall]) -> usize {
    let edges = &deployment.edges;
    calls
        .iter_mut()
        .enumerate()
        .map(|(n, call)| call.hang_up(edges[n % edges.len()].sip))
        .filter(|code| *code == Some(200))
        .count()
}

/// A UA whose calls land in a bucket `wanted` accepts.
pub fn ua_in(wanted: impl Fn(&str) -> bool) -> Ua {
    loop {
        let ua = Ua::new("alice");
        if wanted(&tag_for_sip_call_id(ua.call_id())) {
            return ua;
        }
    }
}

/// What new calls met while a failover ran: calls whose bucket `affected` says was on
/// the failed node are placed one after another until one is answered. Returns how many
/// were refused (and with which codes) and when the first was answered, measured from
/// `since`.
pub struct NewCalls {
    pub refused: Vec<u16>,
    pub first_answered: Duration,
}

pub fn new_calls_until_answered(
    deployment: &Deployment,
    affected: impl Fn(&str) -> bool,
    since: Instant,
    within: Duration,
) -> NewCalls {
    let mut refused = Vec::new();
    loop {
        let ua = ua_in(&affected);
        match HeldCall::place_with(ua, deployment.edges[0].sip) {
            Ok(mut call) => {
                let first_answered = since.elapsed();
                assert_eq!(call.hang_up(deployment.edges[0].sip), Some(200));
                return NewCalls {
                    refused,
                    first_answered,
                };
            }
            Err(code) => {
                assert!(
                    code == 503,
                    "a new call during the failover got {code}, not 503"
                );
                refused.push(code);
            }
        }
        assert!(
            since.elapsed() < within,
            "new calls still refused {within:?} after the kill"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
