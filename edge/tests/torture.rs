//! The RFC 4475 torture messages (and RFC 5118's IPv6 ones) through the edge's parser:
//! each valid one parses, each invalid one is refused with the status the endpoint
//! answers, and none panics. The messages are in `tests/data/` (see its README); the
//! end-to-end run against a live edge is `tests/tests/torture.rs`.

use std::path::{Path, PathBuf};

use rsip::{Method, SipMessage};
use switchyard_edge::sip::message::{SipHeaders, parse};

/// What `parse` does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Parses (valid per the RFC, or invalid in a way a later check or leniency handles:
    /// see the comment on each).
    Parses,
    /// Refused; a request with the headers a response needs gets this status.
    Refused(u16),
}
use Verdict::*;

/// Every message with the parser's verdict; the RFC's own verdict in the comment.
const MESSAGES: &[(&str, Verdict)] = &[
    // RFC 4475 §3.1.1: valid messages.
    ("rfc4475/3.1.1.1-wsinv.dat", Parses),
    // Extension method with token characters: valid; rsip 0.4 has no extension methods,
    // so it is answered 501 Not Implemented, which is what the RFC asks of an endpoint.
    ("rfc4475/3.1.1.2-intmeth.dat", Refused(501)),
    ("rfc4475/3.1.1.3-esc01.dat", Parses),
    ("rfc4475/3.1.1.4-escnull.dat", Parses),
    // Escaped method name: an unknown method (not REGISTER): 501, as the RFC says.
    ("rfc4475/3.1.1.5-esc02.dat", Refused(501)),
    ("rfc4475/3.1.1.6-lwsdisp.dat", Parses),
    ("rfc4475/3.1.1.7-longreq.dat", Parses),
    // Two requests in one datagram: the first is taken, the extra octets ignored.
    ("rfc4475/3.1.1.8-dblreq.dat", Parses),
    // Valid (`;` in the user part). Known deviation: rsip's tokenizer cannot split this
    // Request-URI, so the edge answers 400.
    ("rfc4475/3.1.1.9-semiuri.dat", Refused(400)),
    ("rfc4475/3.1.1.10-transports.dat", Parses),
    ("rfc4475/3.1.1.11-mpart01.dat", Parses),
    ("rfc4475/3.1.1.12-unreason.dat", Parses),
    ("rfc4475/3.1.1.13-noreason.dat", Parses),
    // RFC 4475 §3.1.2: invalid messages.
    // Empty Via parameters: parses; the endpoint answers 400 (the top Via has no usable
    // branch).
    ("rfc4475/3.1.2.1-badinv01.dat", Parses),
    ("rfc4475/3.1.2.2-clerr.dat", Refused(400)),
    ("rfc4475/3.1.2.3-ncl.dat", Refused(400)),
    // Overlarge CSeq: parses; the endpoint answers 400 (invalid CSeq).
    ("rfc4475/3.1.2.4-scalar02.dat", Parses),
    // A response with an overlarge CSeq: parses; the endpoint drops it (invalid CSeq).
    ("rfc4475/3.1.2.5-scalarlg.dat", Parses),
    ("rfc4475/3.1.2.6-quotbal.dat", Refused(400)),
    ("rfc4475/3.1.2.7-ltgtruri.dat", Refused(400)),
    ("rfc4475/3.1.2.8-lwsruri.dat", Refused(400)),
    ("rfc4475/3.1.2.9-lwsstart.dat", Refused(400)),
    // Trailing SP after SIP/2.0: invalid, and the RFC lets a receiver be liberal: the
    // edge ignores it.
    ("rfc4475/3.1.2.10-trws.dat", Parses),
    ("rfc4475/3.1.2.11-escruri.dat", Refused(400)),
    // Bad Date: the edge never reads Date (leniency the RFC allows).
    ("rfc4475/3.1.2.12-baddate.dat", Parses),
    // Contact with `?` outside `<>` on a REGISTER: parses; the edge is no registrar.
    ("rfc4475/3.1.2.13-regbadct.dat", Parses),
    // LWS inside `< sip:... >` and unquoted display names with commas: accepted
    // leniently (the edge does not use these To/From URIs for routing OPTIONS).
    ("rfc4475/3.1.2.14-badaspec.dat", Parses),
    ("rfc4475/3.1.2.15-baddn.dat", Parses),
    ("rfc4475/3.1.2.16-badvers.dat", Refused(505)),
    // CSeq method differs from the request's: parses; the endpoint answers 400.
    ("rfc4475/3.1.2.17-mismatch01.dat", Parses),
    ("rfc4475/3.1.2.18-mismatch02.dat", Refused(400)),
    // A response whose code has 10 digits: refused (dropped: responses get no answer).
    ("rfc4475/3.1.2.19-bigcode.dat", Refused(400)),
    // RFC 4475 §3.2: transaction layer. Branch = the bare magic cookie: valid.
    ("rfc4475/3.2.1-badbranch.dat", Parses),
    // RFC 4475 §3.3: application layer.
    // No Call-ID, From, To: parses; the endpoint drops it (a 400 cannot echo a Call-ID).
    ("rfc4475/3.3.1-insuf.dat", Parses),
    ("rfc4475/3.3.2-unkscm.dat", Refused(416)),
    ("rfc4475/3.3.3-novelsc.dat", Refused(416)),
    // Unknown schemes in To/From/Contact of a REGISTER: parses; the edge is no registrar.
    ("rfc4475/3.3.4-unksm2.dat", Parses),
    // Unsupported Require: parses; the edge does not answer 420 yet (docs/security.md).
    ("rfc4475/3.3.5-bext01.dat", Parses),
    ("rfc4475/3.3.6-invut.dat", Parses),
    ("rfc4475/3.3.7-regaut01.dat", Parses),
    ("rfc4475/3.3.8-multi01.dat", Refused(400)),
    ("rfc4475/3.3.9-mcl01.dat", Refused(400)),
    // A 200 with a broadcast Via: parses; the endpoint treats it as a stray response.
    ("rfc4475/3.3.10-bcast.dat", Parses),
    // Max-Forwards 0 on OPTIONS: parses; the endpoint answers it (no 483 for OPTIONS).
    ("rfc4475/3.3.11-zeromf.dat", Parses),
    ("rfc4475/3.3.12-cparam01.dat", Parses),
    ("rfc4475/3.3.13-cparam02.dat", Parses),
    ("rfc4475/3.3.14-regescrt.dat", Parses),
    ("rfc4475/3.3.15-sdp01.dat", Parses),
    // RFC 2543 INVITE (no branch, no From tag): parses; the endpoint answers 400 because
    // it matches transactions by branch only (docs/security.md, not done).
    ("rfc4475/3.4.1-inv2543.dat", Parses),
    // RFC 5118.
    ("rfc5118/4.1-ipv6-good.dat", Parses),
    ("rfc5118/4.2-ipv6-bad.dat", Refused(400)),
    ("rfc5118/4.3-port-ambiguous.dat", Parses),
    ("rfc5118/4.4-port-unambiguous.dat", Parses),
    ("rfc5118/4.5-via-received-param-with-delim.dat", Parses),
    ("rfc5118/4.5-via-received-param-no-delim.dat", Parses),
    ("rfc5118/4.6-ipv6-in-sdp.dat", Parses),
    ("rfc5118/4.7-mult-ip-in-header.dat", Parses),
    ("rfc5118/4.8-mult-ip-in-sdp.dat", Parses),
    ("rfc5118/4.9-ipv4-mapped-ipv6.dat", Parses),
    // Three colons: not a valid IPv6 address, but RFC 5118 §4.10 asks parsers to
    // tolerate it; the edge does (it never dials this host).
    ("rfc5118/4.10-ipv6-bug-abnf-3-colons.dat", Parses),
    ("rfc5118/4.10-ipv6-correct-abnf-2-colons.dat", Parses),
];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn request(name: &str) -> rsip::Request {
    match parse(&read(name)) {
        Ok(SipMessage::Request(request)) => request,
        other => panic!("{name}: expected a request, got {other:?}"),
    }
}

#[test]
fn the_table_lists_every_message_file_once() {
    let mut on_disk = Vec::new();
    for dir in ["rfc4475", "rfc5118"] {
        for entry in std::fs::read_dir(data_dir().join(dir)).expect("the torture data") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|e| e == "dat") {
                let file = path.file_name().unwrap_or_default().to_string_lossy();
                on_disk.push(format!("{dir}/{file}"));
            }
        }
    }
    on_disk.sort();
    let mut listed: Vec<String> = MESSAGES.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(listed, on_disk);
    assert_eq!(listed.len(), 49 + 12);
}

#[test]
fn every_message_gets_its_verdict_and_none_panics() {
    let mut wrong = Vec::new();
    for &(name, expected) in MESSAGES {
        let bytes = read(name);
        let outcome = std::panic::catch_unwind(|| parse(&bytes));
        let verdict = match outcome {
            Err(_) => {
                wrong.push(format!("{name}: parse panicked"));
                continue;
            }
            Ok(Ok(_)) => Parses,
            Ok(Err(error)) => Refused(error.status),
        };
        if verdict != expected {
            wrong.push(format!("{name}: {verdict:?}, expected {expected:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_prefix_of_every_message_parses_or_fails_without_panicking() {
    // Truncated datagrams and partial TCP frames reach the parser too.
    for &(name, _) in MESSAGES {
        let bytes = read(name);
        for end in 0..bytes.len() {
            let prefix = &bytes[..end];
            assert!(
                std::panic::catch_unwind(|| parse(prefix)).is_ok(),
                "{name}: parse panicked on the first {end} bytes"
            );
        }
    }
}

#[test]
fn the_short_tortuous_invite_is_read_as_the_rfc_means() {
    let r = request("rfc4475/3.1.1.1-wsinv.dat");
    assert_eq!(r.method, Method::Invite);
    assert_eq!(r.call_id().unwrap(), "wsinv.ndaksdj@192.0.2.1");
    assert_eq!(r.cseq().unwrap(), (9, Method::Invite));
    assert_eq!(r.header_value("Max-Forwards").as_deref(), Some("0068"));
    assert_eq!(r.tag_from().unwrap().as_deref(), Some("98asjd8"));
    assert_eq!(r.tag_to().unwrap().as_deref(), Some("1918181833n"));
    // Three Vias (one, then a folded comma list of two); the top one is UDP 192.0.2.2.
    assert_eq!(r.header_values("Via").len(), 3);
    assert_eq!(r.branch().unwrap(), "390skdjuw");
    assert_eq!(r.body.len(), 150);
}

#[test]
fn content_length_cuts_the_body_and_extra_octets_are_ignored() {
    let r = request("rfc4475/3.1.1.8-dblreq.dat");
    assert_eq!(r.method, Method::Register);
    assert_eq!(
        r.call_id().unwrap(),
        "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    );
    assert!(r.body.is_empty(), "the second request is not a body");
    let m = request("rfc4475/3.1.1.11-mpart01.dat");
    assert_eq!(m.method, Method::Message);
    assert_eq!(m.body.len(), 553, "a binary body is kept whole");
}

#[test]
fn escapes_long_values_and_compact_forms_survive() {
    let esc = request("rfc4475/3.1.1.3-esc01.dat");
    assert_eq!(esc.call_id().unwrap(), "esc01.239409asdfakjkn23onasd0-3234");
    assert_eq!(esc.body.len(), 150);
    let long = request("rfc4475/3.1.1.7-longreq.dat");
    assert_eq!(long.header_values("Via").len(), 34);
    assert_eq!(long.cseq().unwrap(), (3882340, Method::Invite));
    assert!(long.call_id().unwrap().starts_with("longreq.onereally"));
    let zero = request("rfc4475/3.3.11-zeromf.dat");
    assert_eq!(zero.header_value("Max-Forwards").as_deref(), Some("0"));
}

#[test]
fn responses_with_unusual_reason_phrases_parse() {
    for (name, code) in [
        ("rfc4475/3.1.1.12-unreason.dat", 200),
        ("rfc4475/3.1.1.13-noreason.dat", 100),
    ] {
        match parse(&read(name)) {
            Ok(SipMessage::Response(r)) => assert_eq!(r.status_code.code(), code, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn ipv6_references_are_read_with_their_ports() {
    let good = request("rfc5118/4.1-ipv6-good.dat");
    assert_eq!(good.uri.port(), None);
    let unambiguous = request("rfc5118/4.4-port-unambiguous.dat");
    assert_eq!(unambiguous.uri.port().map(|p| *p.value()), Some(5070));
    // `[2001:db8::10:5070]` is one address, not a port.
    let ambiguous = request("rfc5118/4.3-port-ambiguous.dat");
    assert_eq!(ambiguous.uri.port(), None);
    let mapped = request("rfc5118/4.9-ipv4-mapped-ipv6.dat");
    let via = mapped.top_via().unwrap();
    assert_eq!(
        switchyard_edge::sip::message::host_ip(&via.uri.host_with_port.host.to_string()),
        "::ffff:192.0.2.10".parse().ok()
    );
    assert_eq!(via.uri.host_with_port.port.map(|p| *p.value()), Some(19823));
}
