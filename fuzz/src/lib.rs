//! What each fuzz target does with its input: the edge's own code paths for untrusted
//! input, plus cheap invariants that turn a wrong answer into a crash the fuzzer reports.
//!
//! - [`sip_message`]: a UDP datagram or a TCP stream, as `sip::endpoint` and
//!   `sip::transport` take it: parse (normalisation + rsip), the raw 400/416/501/505
//!   answer to an unparseable request, the checks and header accessors every request
//!   meets, `received`/`rport`, the response the endpoint builds, and re-serialising;
//! - [`refer_headers`]: Refer-To / Referred-By values, as a REFER's handler takes them:
//!   the target and ReferTarget, the Replaces refusal, the referTargetAllow policy, the
//!   `$core_` substitution into the refer application and the Dial it leads to;
//! - [`rcml`]: an RCML document, as the fetcher hands it over: `$core_` substitution and
//!   the parser, then URL resolution of what the document points at.
//!
//! Shared with `edge/tests/fuzz_corpus.rs` (through `#[path]`), which replays the
//! committed corpus in a plain `cargo test`, so this file must only use what the edge
//! crate's tests can use too: `switchyard_edge`, `switchyard_routing`, `rsip` and `regex`.

use std::net::SocketAddr;
use std::sync::LazyLock;

use rsip::{Method, SipMessage};
use switchyard_edge::call::setup::user_of;
use switchyard_edge::call::targets::request_uri;
use switchyard_edge::call::transfer::{ReferTo, parse_refer_to, target_allowed};
use switchyard_edge::rcml::fetch::substitute_core;
use switchyard_edge::rcml::{self, DialTarget, Verb};
use switchyard_edge::sip::dialog::{Dialog, uri_of};
use switchyard_edge::sip::endpoint::{check_request, mark_received, reply_address_raw};
use switchyard_edge::sip::message::{
    ParseError, SipHeaders, parse, reason_header, response_to, response_to_raw, to_bytes,
};
use switchyard_edge::sip::transport::{Destination, Frame, Limits, frame};

/// Headers the edge reads by name somewhere (endpoint, dialogs, calls, transfers).
const HEADERS_READ: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Content-Type",
    "Record-Route",
    "Route",
    "Refer-To",
    "Referred-By",
    "Refer-Sub",
    "Event",
    "Subscription-State",
    "Diversion",
    "Session-Expires",
];

/// Where the fuzzed message came from (IPv4 and IPv6, so both Via `received` forms run).
fn sources() -> [Destination; 3] {
    let v4 = SocketAddr::from(([192, 0, 2, 7], 5062));
    let v6 = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 7], 5062));
    [
        Destination::udp(v4),
        Destination::udp(v6),
        Destination::tcp(v4),
    ]
}

/// Bytes as a UDP datagram, then as the start of a TCP stream.
pub fn sip_message(data: &[u8]) {
    datagram(data);
    tcp_stream(data);
}

fn datagram(data: &[u8]) {
    match parse(data) {
        Ok(message) => parsed(message),
        Err(error) => unparseable(&error),
    }
}

/// What the endpoint does with a message that does not parse: answer it from the raw
/// head when it can. The answer must be one well-formed message with the status asked.
fn unparseable(error: &ParseError) {
    assert!(
        matches!(error.status, 400 | 413 | 416 | 501 | 505),
        "unexpected status {} for {error}",
        error.status
    );
    let Some(head) = &error.head else {
        return;
    };
    let _ = head.method();
    let Some(answer) = response_to_raw(head, error.status, &error.reason) else {
        return;
    };
    for source in sources() {
        if let Some(via) = head.get("Via") {
            let _ = reply_address_raw(via, &source);
        }
    }
    assert_single_message(&answer);
    let text = String::from_utf8_lossy(&answer);
    let status_line = format!("SIP/2.0 {} ", error.status);
    assert!(text.starts_with(&status_line), "answer: {text:?}");
    assert!(
        text.contains(&format!("Reason: SIP;cause={}", error.status)),
        "answer: {text:?}"
    );
}

/// A message the edge sends must be one message: CR and LF only as the CRLF line ends
/// of the head, and one blank line (the head's end), so no header value it copied can end
/// a line early or smuggle in a second message. (NUL may stand in a quoted string: RFC
/// 4475 §3.1.1.2.)
fn assert_single_message(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let Some(head_len) = text.find("\r\n\r\n") else {
        panic!("no end of head in {text:?}");
    };
    let head = &text[..head_len];
    assert!(
        head.split("\r\n")
            .all(|line| !line.contains(['\r', '\n']) && !line.is_empty()),
        "a header line is broken in {text:?}"
    );
}

fn parsed(message: SipMessage) {
    round_trip(&message);
    match message {
        SipMessage::Request(request) => parsed_request(request),
        SipMessage::Response(response) => {
            let _ = response.branch();
            let _ = response.cseq();
            let _ = response.tag_to();
            let _ = response.tag_from();
            let _ = response.status_code.code();
            for name in HEADERS_READ {
                let _ = response.header_values(name);
            }
        }
    }
}

/// What the edge serialises, it must read back the same (stored INVITEs, relayed
/// messages), and serialising again changes nothing.
fn round_trip(message: &SipMessage) {
    let bytes = to_bytes(message.clone());
    let again = match parse(&bytes) {
        Ok(again) => again,
        Err(error) => panic!(
            "re-serialised message does not parse ({error}): {:?}",
            String::from_utf8_lossy(&bytes)
        ),
    };
    match (message, &again) {
        (SipMessage::Request(a), SipMessage::Request(b)) => {
            assert_eq!(a.method, b.method);
            assert_eq!(a.uri.to_string(), b.uri.to_string());
            assert_eq!(a.body, b.body);
            assert_eq!(a.call_id(), b.call_id());
            assert_eq!(a.cseq(), b.cseq());
        }
        (SipMessage::Response(a), SipMessage::Response(b)) => {
            assert_eq!(a.status_code.code(), b.status_code.code());
            assert_eq!(a.body, b.body);
            assert_eq!(a.cseq(), b.cseq());
        }
        _ => panic!("a request became a response or the other way round"),
    }
    assert_eq!(
        to_bytes(again),
        bytes,
        "serialising a re-parsed message changes it"
    );
}

/// The endpoint's checks, then what it does before handing the request on.
fn parsed_request(request: rsip::Request) {
    let _ = request.call_id();
    let _ = request.cseq();
    let _ = request.top_via();
    let _ = request.branch();
    let _ = request.tag_from();
    let _ = request.tag_to();
    for name in HEADERS_READ {
        let _ = request.header_value(name);
        let _ = request.header_values(name);
    }
    let valid = check_request(&request).is_ok() && request.branch().is_ok();
    for source in sources() {
        let mut marked = request.clone();
        let _reply_to = mark_received(&mut marked, &source);
        if valid {
            assert!(
                marked.branch().is_ok(),
                "marking `received` broke the top Via: {:?}",
                marked.header_value("Via")
            );
        }
        answer(&marked, valid);
    }
    if valid {
        let _ = Dialog::as_uas(&request, "fuzz-tag");
        if request.method == Method::Refer {
            refer_values(
                request.header_value("Refer-To").as_deref(),
                request.header_value("Referred-By").as_deref(),
            );
        }
    }
}

/// The endpoint's rejection of `request` (400 with a Reason and a new To tag), read back
/// as the peer reads it.
fn answer(request: &rsip::Request, valid: bool) {
    let mut response = response_to(request, 400, Some("fuzz-tag"));
    response
        .headers
        .push(reason_header(400, "checked by the fuzzer"));
    let bytes = to_bytes(response);
    assert_single_message(&bytes);
    if !valid {
        return;
    }
    match parse(&bytes) {
        Ok(SipMessage::Response(response)) => {
            assert_eq!(response.status_code.code(), 400);
            assert_eq!(response.call_id(), request.call_id());
            assert_eq!(response.cseq(), request.cseq());
            assert_eq!(response.branch(), request.branch());
            assert_eq!(response.tag_from(), request.tag_from());
            assert!(
                response.tag_to().is_ok_and(|tag| tag.is_some()),
                "the answer has no To tag: {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(SipMessage::Request(_)) => panic!("the answer reads as a request"),
        Err(error) => panic!(
            "the answer does not parse ({error}): {:?}",
            String::from_utf8_lossy(&bytes)
        ),
    }
}

/// The same bytes as a TCP stream: framed as `transport::read_tcp` frames it, each frame
/// then parsed as a datagram is.
fn tcp_stream(data: &[u8]) {
    let max_body = Limits::default().max_body_bytes;
    let mut buffer = data;
    loop {
        // CRLF keep-alives between messages are skipped, as read_tcp does.
        let blank = buffer
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        buffer = &buffer[blank..];
        match frame(buffer, max_body) {
            Frame::Incomplete => return,
            Frame::Message(length) => {
                assert!(length > 0 && length <= buffer.len(), "frame of {length}");
                let (message, rest) = buffer.split_at(length);
                // A frame is decided by its own bytes, whatever arrives after it.
                assert!(matches!(frame(message, max_body), Frame::Message(n) if n == length));
                if let Err(error) = parse(message) {
                    assert!(
                        !error.reason.starts_with("Content-Length"),
                        "framing and parsing disagree on the body: {error}"
                    );
                }
                buffer = rest;
            }
            Frame::Reject { head, code, reason } => {
                if let Some(answer) = head.and_then(|h| response_to_raw(&h, code, reason)) {
                    assert_single_message(&answer);
                }
                return;
            }
        }
    }
}

/// The refer application of the seed (`examples/apps/refer.xml`), with Referred-By
/// substituted into an attribute as well, where escaping matters most.
const REFER_APP: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Dial timeout="20" action="refer-fallback.xml" callerId="$core_ReferredBy">
    <Number>$core_ReferTarget</Number>
  </Dial>
</Response>"#;

static DEFAULT_POLICY: LazyLock<Vec<regex::Regex>> = LazyLock::new(|| {
    [r"\+1555\d{7}", r"sips?:[a-z]+@edge\.example"]
        .iter()
        .filter_map(|p| switchyard_routing::validate::compile_pattern(p).ok())
        .collect()
});

/// Refer-To (first line) and Referred-By (second line, optional): as the raw values
/// parse_refer_to may be given, and inside a REFER that goes through the SIP parser.
pub fn refer_headers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (refer_to, referred_by) = match text.split_once('\n') {
        Some((first, second)) => (first, Some(second.split('\n').next().unwrap_or(second))),
        None => (text, None),
    };
    // A header value never holds CR or LF (`message::parse` refuses them), so the values
    // given to the REFER handler directly do not either; the REFER below tries them.
    refer_values(Some(text), None);
    refer_values(Some(refer_to), referred_by.filter(|by| !by.contains('\r')));
    let mut message = format!(
        "REFER sip:edge@192.0.2.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKfuzz\r\n\
         From: <sip:bob@192.0.2.7>;tag=b1\r\nTo: <sip:alice@192.0.2.1>;tag=a1\r\n\
         Call-ID: fuzz-refer\r\nCSeq: 2 REFER\r\nRefer-To: {refer_to}\r\n"
    );
    if let Some(by) = referred_by {
        message.push_str(&format!("Referred-By: {by}\r\n"));
    }
    message.push_str("Content-Length: 0\r\n\r\n");
    datagram(message.as_bytes());
}

/// What `transfer::refer` does with the two header values, and what follows from them.
fn refer_values(refer_to: Option<&str>, referred_by: Option<&str>) {
    let refer_to = match parse_refer_to(refer_to) {
        Ok(refer_to) => refer_to,
        Err(refusal) => {
            assert!(matches!(refusal.code, 400 | 403 | 501), "{refusal:?}");
            return;
        }
    };
    accepted_target(&refer_to);
    let route = ["carol".to_owned(), r"\+1666\d+".to_owned()];
    let _ = target_allowed(&refer_to, &[], &DEFAULT_POLICY);
    let _ = target_allowed(&refer_to, &route, &[]);
    let referred_by = referred_by.map(uri_of);

    // The refer application as a `file:` document: the substituted values stay text.
    let mut params = vec![
        ("ReferTarget".to_owned(), refer_to.target.clone()),
        ("ReferTransferTarget".to_owned(), refer_to.uri.clone()),
    ];
    if let Some(by) = &referred_by {
        params.push(("ReferredBy".to_owned(), by.clone()));
    }
    let xml = substitute_core(REFER_APP, &params);
    let document = match rcml::parse(&xml) {
        Ok(document) => document,
        // Nothing to dial (a target of whitespace only) is refused as such.
        Err(rcml::RcmlError::EmptyText { .. }) if xml_text(&refer_to.target).is_empty() => {
            return;
        }
        Err(error) => panic!("substituting {params:?} broke the refer application: {error}"),
    };
    let [Verb::Dial(dial)] = &document.verbs[..] else {
        panic!("substituting {params:?} changed the verbs: {document:?}");
    };
    assert_eq!(
        dial.targets,
        [DialTarget::Number(xml_text(&refer_to.target))],
        "the dialled number is not the ReferTarget"
    );
    let caller_id = referred_by
        .as_deref()
        .map(xml_attribute)
        .filter(|c| !c.is_empty());
    assert_eq!(
        dial.caller_id, caller_id,
        "callerId is not the Referred-By URI"
    );

    // A Number is dialled through the outbound proxy, whatever the ReferTarget says.
    if let Ok(uri) = request_uri(&dial.targets[0], "proxy.example:5060")
        && let Some(parsed) = switchyard_edge::sip::message::parse_uri(&uri)
    {
        assert_eq!(
            parsed.host_with_port.to_string(),
            "proxy.example:5060",
            "ReferTarget {:?} steers the dial away from the outbound proxy: {uri}",
            refer_to.target
        );
    }
}

/// What an accepted Refer-To must be: a sip, sips or tel URI with a user part, no
/// Replaces (attended transfer is refused), and a ReferTarget that is its user part.
fn accepted_target(refer_to: &ReferTo) {
    let lower = refer_to.uri.to_ascii_lowercase();
    assert!(
        ["sip:", "sips:", "tel:"]
            .iter()
            .any(|s| lower.trim_start().starts_with(s)),
        "accepted scheme: {refer_to:?}"
    );
    assert!(!refer_to.target.is_empty(), "empty target: {refer_to:?}");
    assert_eq!(refer_to.target, user_of(&refer_to.uri));
    assert!(
        !percent_decoded(&lower).contains("replaces="),
        "Replaces slipped through: {refer_to:?}"
    );
}

/// `%XX` escapes decoded (RFC 3261 §19.1.2: a URI's header names may be escaped).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(Some(high)), Some(Some(low))) = (
                bytes.get(i + 1).map(|b| hex(*b)),
                bytes.get(i + 2).map(|b| hex(*b)),
            )
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

/// Element text as the RCML parser returns it: XML line ends normalised, trimmed.
fn xml_text(value: &str) -> String {
    value
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .trim()
        .to_owned()
}

/// An attribute value as the RCML parser returns it: XML attribute-value normalisation
/// (line ends, then each whitespace character as a space), trimmed.
fn xml_attribute(value: &str) -> String {
    value
        .replace("\r\n", "\n")
        .replace(['\r', '\n', '\t'], " ")
        .trim()
        .to_owned()
}

/// Parameters as a call's fetches carry them, with the characters that need escaping.
const PARAMS: &[(&str, &str)] = &[
    ("CallSid", "CAfuzz"),
    ("From", "+15551230001"),
    ("To", "+15551230002"),
    ("Transferor", "bob"),
    ("ReferTarget", "<Hangup/>&amp;\"'"),
    ("ReferredBy", "sip:bob@192.0.2.7"),
];

/// An RCML document, as `Fetcher::fetch` hands it to the parser (UTF-8 only: the fetcher
/// refuses the rest), both as fetched over HTTP and as a `file:` document.
pub fn rcml(data: &[u8]) {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    document(xml);
    let params: Vec<(String, String)> = PARAMS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    document(&substitute_core(xml, &params));
}

fn document(xml: &str) {
    let document = match rcml::parse(xml) {
        Ok(document) => document,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    assert!(document.verbs.len() <= rcml::document::MAX_VERBS);
    let base = "http://app.example/rcml/start.xml";
    let limit = std::time::Duration::from_secs(rcml::document::MAX_SECONDS);
    for verb in &document.verbs {
        match verb {
            Verb::Dial(dial) => {
                assert!(!dial.targets.is_empty(), "a Dial with nothing to dial");
                assert!(dial.timeout >= std::time::Duration::from_secs(1));
                assert!(dial.timeout <= limit && dial.time_limit.is_none_or(|t| t <= limit));
                for target in &dial.targets {
                    let (DialTarget::Number(text)
                    | DialTarget::Sip(text)
                    | DialTarget::Client(text)) = target;
                    assert!(!text.is_empty() && text.trim() == text, "target {text:?}");
                    let _ = request_uri(target, "proxy.example:5060");
                }
                if let Some(action) = &dial.action {
                    let _ = rcml::resolve(base, action);
                }
            }
            Verb::Redirect { url, .. } => {
                assert!(!url.is_empty());
                let _ = rcml::resolve(base, url);
            }
            Verb::Pause { length } => assert!(*length <= limit),
            Verb::Hangup | Verb::Reject { .. } => {}
        }
    }
}
