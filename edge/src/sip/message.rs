//! Turning bytes into rsip messages, and the header accessors the layers above share.
//!
//! rsip parses the message model, but it expects text already in canonical shape. Phones
//! and RFC 4475 send more than that, so [`parse`] first normalises the head:
//! - header lines folded onto continuation lines (leading whitespace) are unfolded;
//! - compact header names (`v`, `i`, `f`, `t`, `m`, `l`, `c`, `k`, `s`, `r`, `b`, `o`, ...)
//!   are expanded, and whitespace around the colon is removed;
//! - comma-separated `Via`, `Route` and `Record-Route` values are split into one header
//!   each, so "the top Via" is simply the first one;
//! - the body is cut to `Content-Length` (RFC 3261 §18.3), and a body shorter than it is
//!   an error.
//!
//! When the message cannot be parsed, [`ParseError`] keeps the raw head so that the
//! caller can still answer with a `Reason` (400, or the more precise 416, 501 or 505 of
//! [`check_head`]) when the request line and the headers a response needs are readable.
//!
//! The RFC 4475 / RFC 5118 torture messages (`tests/data/`) exercise all of this; see
//! `edge/tests/torture.rs` for the verdict on each.

use std::fmt;
use std::fmt::Write as _;

use rsip::headers::{ToTypedHeader, UntypedHeader};
use rsip::{Header, Headers, Method, Request, Response, SipMessage, StatusCode};

/// Bytes a message head may take. Longer heads are refused, not buffered.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Why a message could not be turned into an rsip message.
#[derive(Debug)]
pub struct ParseError {
    pub reason: String,
    /// The status a request gets for it (400 unless [`check_head`] knows better).
    pub status: u16,
    /// The head as far as it could be split into lines; `None` when not even that.
    pub head: Option<RawHead>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ParseError {}

/// A message head split into a start line and normalised `(name, value)` header pairs.
#[derive(Debug, Clone, Default)]
pub struct RawHead {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
    /// The first header line that is not `name: value` (it has no colon), if any.
    pub line_without_colon: Option<String>,
}

impl RawHead {
    pub fn is_request(&self) -> bool {
        !self.start_line.starts_with("SIP/")
    }

    /// The method token of a request line.
    pub fn method(&self) -> Option<&str> {
        self.start_line
            .split(' ')
            .next()
            .filter(|_| self.is_request())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Compact forms (RFC 3261 §7.3.3 and the extensions the edge deals with).
fn expand_compact(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.to_ascii_lowercase().as_str() {
        "i" => "Call-ID",
        "m" => "Contact",
        "e" => "Content-Encoding",
        "l" => "Content-Length",
        "c" => "Content-Type",
        "f" => "From",
        "s" => "Subject",
        "k" => "Supported",
        "t" => "To",
        "v" => "Via",
        "r" => "Refer-To",
        "b" => "Referred-By",
        "o" => "Event",
        "u" => "Allow-Events",
        "x" => "Session-Expires",
        _ => name,
    }
}

/// Headers whose comma-separated values are separate header fields (RFC 3261 §7.3.1).
fn is_list_header(name: &str) -> bool {
    ["Via", "Route", "Record-Route"]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// Splits a header value on commas outside quotes and angle brackets.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut escaped, mut start) = (0i32, false, false, 0);
    for (i, ch) in value.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// Removes the linear whitespace RFC 3261 allows inside a Via value (around `/` of the
/// sent-protocol, `:` of sent-by, `;` and `=` of parameters: RFC 4475 §3.1.1.1 has
/// `SIP  /   2.0 /UDP 192.0.2.2`), which rsip's Via parser does not accept, and keeps a
/// single space between the sent-protocol and sent-by.
fn normalise_via(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let (mut space, mut after_separator, mut quoted) = (false, false, false);
    for ch in value.chars() {
        if quoted {
            out.push(ch);
            quoted = ch != '"';
            continue;
        }
        if ch.is_whitespace() {
            space = true;
            continue;
        }
        let separator = matches!(ch, '/' | ':' | ';' | '=');
        if space && !separator && !after_separator && !out.is_empty() {
            out.push(' ');
        }
        out.push(ch);
        space = false;
        after_separator = separator;
        quoted = ch == '"';
    }
    out
}

/// Where the head ends: the index of the blank line's end, if present.
pub fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// Whether `head` has a CR not followed by LF, or an LF not preceded by CR.
fn has_bare_line_break(head: &str) -> bool {
    let bytes = head.as_bytes();
    bytes.iter().enumerate().any(|(i, b)| match b {
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || bytes[i - 1] != b'\r',
        _ => false,
    })
}

/// Splits and normalises a message head (see the module comment).
pub fn parse_head(text: &str) -> RawHead {
    let mut lines = text.split("\r\n");
    let start_line = lines.next().unwrap_or_default().trim().to_owned();
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut line_without_colon = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            // Continuation of the previous header (line folding). A blank continuation
            // adds nothing, and a first piece no separator: a value never starts or ends
            // in whitespace, or it would change when read back (found by fuzzing).
            let more = line.trim();
            if let Some((_, value)) = headers.last_mut()
                && !more.is_empty()
            {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(more);
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            line_without_colon.get_or_insert_with(|| line.to_owned());
            headers.push((line.trim().to_owned(), String::new()));
            continue;
        };
        let name = expand_compact(name.trim()).to_owned();
        headers.push((name, value.trim().to_owned()));
    }
    // Split list headers only after unfolding, so folded lists split correctly.
    let mut split = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        if is_list_header(&name) {
            let via = name.eq_ignore_ascii_case("Via");
            for part in split_list(&value) {
                let part = if via {
                    normalise_via(part)
                } else {
                    part.to_owned()
                };
                split.push((name.clone(), part));
            }
        } else {
            split.push((name, value));
        }
    }
    RawHead {
        start_line,
        headers: split,
        line_without_colon,
    }
}

/// Headers a message may carry once only (RFC 3261 §7.3.1, §20): with two, which one
/// counts is ambiguous, and a proxy and a UA may disagree (RFC 4475 §3.3.8, §3.3.9).
const SINGLETON_HEADERS: [&str; 6] = [
    "Call-ID",
    "CSeq",
    "From",
    "To",
    "Content-Length",
    "Max-Forwards",
];

/// What rsip would accept, or read differently than RFC 3261 says, checked on the raw
/// head before rsip sees it. `Err((status, reason))`: the status a request gets.
/// - a request line must be `Method SP Request-URI SP SIP/2.0`: another version is 505
///   (RFC 3261 §21.5.6; RFC 4475 §3.1.2.16), a URI in `<>` is 400 (§3.1.2.7,
///   rsip would take the brackets as part of the URI), a scheme other than sip, sips or
///   tel is 416 (§3.3.2, §3.3.3);
/// - a method rsip does not know (rsip 0.4 has no extension methods) is 501 (RFC 3261
///   §8.2.1; RFC 4475 §3.1.1.2, §3.1.1.5), or 400 when its CSeq names another method
///   (§3.1.2.18);
/// - a header of [`SINGLETON_HEADERS`] twice is 400 (rsip would take the first);
/// - a response's status code must be three digits from 100 to 699;
/// - a header line without a colon is 400 (RFC 3261 §7.3: `name: value`);
/// - From or To with an unterminated quoted string is 400 (§3.1.2.6: rsip would read
///   the quote as part of a display name and carry on).
pub fn check_head(head: &RawHead) -> Result<(), (u16, String)> {
    if head.is_request() {
        let parts: Vec<&str> = head.start_line.split(' ').collect();
        if let [method, uri, version] = parts[..] {
            if version != "SIP/2.0" {
                return Err((505, format!("SIP version {version} is not supported")));
            }
            if uri.starts_with('<') {
                return Err((400, "Request-URI enclosed in <>".into()));
            }
            let scheme = uri
                .split(':')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !matches!(scheme.as_str(), "sip" | "sips" | "tel") {
                return Err((416, format!("unsupported URI scheme {scheme:?}")));
            }
            if !Method::all().iter().any(|m| m.to_string() == method) {
                let cseq_method = head
                    .get("CSeq")
                    .and_then(|c| c.split_whitespace().nth(1))
                    .unwrap_or_default();
                return Err(if cseq_method == method {
                    (501, format!("method {method} is not implemented"))
                } else {
                    (
                        400,
                        format!("CSeq method {cseq_method} does not match the request method"),
                    )
                });
            }
        }
        // Other shapes (extra spaces, a space inside the URI) are left to rsip, which
        // refuses them (RFC 4475 §3.1.2.8, §3.1.2.9): 400.
    } else {
        // rsip reads `010` as 10 and would print it back as `10`, which it cannot read
        // (found by fuzzing): a status code is three digits, 100 to 699 (§7.2, §21).
        let code = head.start_line.split(' ').nth(1).unwrap_or_default();
        let valid = code.len() == 3
            && code.bytes().all(|b| b.is_ascii_digit())
            && (b'1'..=b'6').contains(&code.as_bytes()[0]);
        if !valid {
            return Err((400, format!("invalid status code {code:?}")));
        }
    }
    if let Some(line) = &head.line_without_colon {
        // rsip would take it as a header with an empty value, and print it back with a
        // colon: `t` then reads as a second To (found by fuzzing).
        let shown: String = line.chars().take(40).collect();
        return Err((400, format!("header line without a colon: {shown:?}")));
    }
    for name in SINGLETON_HEADERS {
        if head.all(name).nth(1).is_some() {
            return Err((400, format!("more than one {name} header")));
        }
    }
    for name in ["From", "To"] {
        if let Some(value) = head.get(name)
            && !quotes_balanced(value)
        {
            return Err((400, format!("unterminated quoted string in {name}")));
        }
    }
    Ok(())
}

/// Whether every quoted string (with `\` escapes) in a header value is closed.
fn quotes_balanced(value: &str) -> bool {
    let (mut quoted, mut escaped) = (false, false);
    for ch in value.chars() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ => {}
        }
    }
    !quoted
}

/// rsip 0.4 splits `host:port` at the first colon, so IPv6 references (`[2001:db8::1]`,
/// RFC 3261 §19.1.1, RFC 5118) would not parse. Before rsip sees a head, each reference is
/// rewritten to a reserved domain name (`v6-2001-db8--1.ipv6.invalid`, dots of an
/// embedded IPv4 as `_`), and [`to_bytes`] writes it back, so the rest of the stack only
/// meets hosts rsip understands. [`host_ip`] reads either form.
const IPV6_SUFFIX: &str = ".ipv6.invalid";

fn encode_ipv6_references(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('[') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find(']') {
            Some(end)
                if end > 1
                    && after[..end].contains(':')
                    && after[..end]
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') =>
            {
                out.push_str("v6-");
                out.push_str(&after[..end].replace(':', "-").replace('.', "_"));
                out.push_str(IPV6_SUFFIX);
                rest = &after[end + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_ipv6_references(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(end) = rest.find(IPV6_SUFFIX) {
        let head = &rest[..end];
        match head.rfind("v6-") {
            Some(start)
                if head[start + 3..]
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_') =>
            {
                out.push_str(&head[..start]);
                out.push('[');
                out.push_str(&head[start + 3..].replace('-', ":").replace('_', "."));
                out.push(']');
            }
            _ => out.push_str(&rest[..end + IPV6_SUFFIX.len()]),
        }
        rest = &rest[end + IPV6_SUFFIX.len()..];
    }
    out.push_str(rest);
    out
}

/// The IP address a host names, if it is a literal (IPv4, IPv6 reference, or the
/// encoded IPv6 form).
pub fn host_ip(host: &str) -> Option<std::net::IpAddr> {
    let decoded = decode_ipv6_references(host);
    decoded.trim_matches(['[', ']']).parse().ok()
}

/// Parses a URI (IPv6 references included).
///
/// rsip 0.4 reads the userinfo only up to the first `.`, so `sip:john.doe@10.0.0.5` came
/// back with the host `john.doe@10.0.0.5` (found by fuzzing: a dotted ReferTarget, dialled
/// as `sip:{target}@proxy`, was looked up as a host name). The dots of the userinfo are
/// escaped for rsip (`%2E` is the same character, RFC 3261 §19.1.4) and restored in the
/// user and password it returns.
pub fn parse_uri(text: &str) -> Option<rsip::Uri> {
    let text = encode_ipv6_references(text.trim());
    let userinfo = text
        .split_once(':')
        .and_then(|(scheme, rest)| Some((scheme.len() + 1, rest.find('@')?)));
    let Some((start, length)) = userinfo.filter(|&(s, l)| text[s..s + l].contains('.')) else {
        return rsip::Uri::try_from(text.as_str()).ok();
    };
    let escaped = format!(
        "{}{}{}",
        &text[..start],
        text[start..start + length].replace('.', "%2E"),
        &text[start + length..]
    );
    let mut uri = rsip::Uri::try_from(escaped.as_str()).ok()?;
    if let Some(auth) = uri.auth.as_mut() {
        auth.user = auth.user.replace("%2E", ".");
        if let Some(password) = auth.password.as_mut() {
            *password = password.replace("%2E", ".");
        }
    }
    Some(uri)
}

/// Parses one complete message (a UDP datagram, or a frame cut from a TCP stream).
pub fn parse(bytes: &[u8]) -> Result<SipMessage, ParseError> {
    let Some(end) = head_end(bytes) else {
        let reason = if bytes.len() > MAX_HEAD_BYTES {
            "message head too long"
        } else {
            "no blank line after the headers"
        };
        let head = std::str::from_utf8(bytes).ok().map(parse_head);
        return Err(ParseError {
            reason: reason.into(),
            status: 400,
            head,
        });
    };
    if end > MAX_HEAD_BYTES {
        return Err(ParseError {
            reason: "message head too long".into(),
            status: 400,
            head: None,
        });
    }
    let Ok(head_text) = std::str::from_utf8(&bytes[..end]) else {
        return Err(ParseError {
            reason: "message head is not UTF-8".into(),
            status: 400,
            head: None,
        });
    };
    let head = parse_head(head_text);
    let fail = |reason: String| ParseError {
        reason,
        status: 400,
        head: Some(head.clone()),
    };
    if has_bare_line_break(head_text) {
        // Lines end in CRLF only (RFC 3261 §7.3.1). A lone CR or LF stays inside a header
        // value, rsip takes it, and every response copying the value would carry it:
        // a line break a peer reads where the edge wrote none (found by fuzzing).
        return Err(fail("bare CR or LF in the message head".into()));
    }
    if let Err((status, reason)) = check_head(&head) {
        return Err(ParseError {
            status,
            ..fail(reason)
        });
    }
    let body = &bytes[end..];
    let body = match head.get("Content-Length") {
        Some(value) => {
            let length: usize = value
                .parse()
                .map_err(|_| fail(format!("invalid Content-Length {value:?}")))?;
            if length > body.len() {
                return Err(fail(format!(
                    "Content-Length {length} is larger than the {} byte body",
                    body.len()
                )));
            }
            &body[..length]
        }
        None => body,
    };
    let mut canonical = String::with_capacity(end + 64);
    canonical.push_str(&head.start_line);
    if !head.is_request() && head.start_line.split(' ').count() == 2 {
        // `SIP/2.0 100 ` with an empty reason phrase is valid (RFC 4475 §3.1.1.13), but
        // rsip's tokenizer needs one: supply the standard phrase (reasons are not
        // relayed; `to_bytes` writes the RFC phrase anyway).
        let code = head
            .start_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        canonical.push(' ');
        canonical.push_str(reason_phrase(code));
    }
    canonical.push_str("\r\n");
    for (name, value) in &head.headers {
        canonical.push_str(name);
        canonical.push_str(": ");
        canonical.push_str(value);
        canonical.push_str("\r\n");
    }
    canonical.push_str("\r\n");
    let canonical = encode_ipv6_references(&canonical);
    let mut message = SipMessage::try_from(canonical.as_str())
        .map_err(|e| fail(format!("unparseable message: {e}")))?;
    *message.body_mut() = body.to_vec();
    Ok(message)
}

/// Accessors for the headers every layer needs, with errors that name the header.
pub trait SipHeaders {
    fn headers(&self) -> &Headers;

    fn header_value(&self, name: &str) -> Option<String> {
        self.headers().iter().find_map(|h| header_named(h, name))
    }

    fn header_values(&self, name: &str) -> Vec<String> {
        self.headers()
            .iter()
            .filter_map(|h| header_named(h, name))
            .collect()
    }

    fn call_id(&self) -> Result<String, HeaderError> {
        self.headers()
            .iter()
            .find_map(|h| match h {
                Header::CallId(c) => Some(c.value().to_owned()),
                _ => None,
            })
            .filter(|c| !c.is_empty())
            .ok_or(HeaderError::Missing("Call-ID"))
    }

    /// `(sequence number, method)` of the CSeq header.
    fn cseq(&self) -> Result<(u32, Method), HeaderError> {
        let cseq = self
            .headers()
            .iter()
            .find_map(|h| match h {
                Header::CSeq(c) => Some(c.clone()),
                _ => None,
            })
            .ok_or(HeaderError::Missing("CSeq"))?;
        let typed = cseq
            .typed()
            .map_err(|_| HeaderError::Invalid("CSeq", cseq.value().to_owned()))?;
        Ok((typed.seq, typed.method))
    }

    /// The top Via as received, untyped.
    fn top_via_text(&self) -> Result<&rsip::headers::Via, HeaderError> {
        self.headers()
            .iter()
            .find_map(|h| match h {
                Header::Via(v) => Some(v),
                _ => None,
            })
            .ok_or(HeaderError::Missing("Via"))
    }

    fn top_via(&self) -> Result<rsip::typed::Via, HeaderError> {
        let via = self.top_via_text()?;
        via.typed()
            .map_err(|_| HeaderError::Invalid("Via", via.value().to_owned()))
    }

    /// The branch of the top Via (the transaction id of RFC 3261 §17). Read from the
    /// header's text: every message's transaction is keyed by it, and rsip's typed Via
    /// (a full parse of sent-by and every parameter) was ~4% of the edge's CPU under load
    /// for this one parameter (bench/profile.md). Requests' Via is still fully checked
    /// where it is used (endpoint.rs).
    fn branch(&self) -> Result<String, HeaderError> {
        via_branch(self.top_via_text()?.value())
            .map(str::to_owned)
            .ok_or(HeaderError::Invalid("Via", "no branch parameter".into()))
    }

    /// The top Via's sent-by (`host[:port]`), lower-cased and without the whitespace the
    /// grammar allows around `:`, so that equal sent-bys compare equal (§17.2.3).
    fn sent_by(&self) -> Result<String, HeaderError> {
        let via = self.top_via_text()?.value();
        via_sent_by(via)
            .map(|sent_by| {
                sent_by
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect::<String>()
                    .to_ascii_lowercase()
            })
            .ok_or(HeaderError::Invalid("Via", via.to_owned()))
    }

    fn tag_from(&self) -> Result<Option<String>, HeaderError> {
        tag_of(self.header_value("From"), "From")
    }

    fn tag_to(&self) -> Result<Option<String>, HeaderError> {
        tag_of(self.header_value("To"), "To")
    }
}

/// The sent-by of a Via value, as written (`SIP / 2.0 / UDP host : port;...` gives
/// `host : port`): what follows the transport, up to the parameters.
pub fn via_sent_by(via: &str) -> Option<&str> {
    let head = via.split(';').next().unwrap_or_default();
    let (last_slash, _) = head.match_indices('/').nth(1)?;
    let (_, sent_by) = head[last_slash + 1..]
        .trim_start()
        .split_once(char::is_whitespace)?;
    Some(sent_by.trim()).filter(|sent_by| !sent_by.is_empty())
}

/// The `branch` parameter of a Via value (`SIP/2.0/UDP host:port;rport;branch=z9hG4bK1`):
/// parameter names are case-insensitive (RFC 3261 §7.3.1); an empty branch is none.
fn via_branch(via: &str) -> Option<&str> {
    via.split(';')
        .skip(1)
        .filter_map(|param| param.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("branch"))
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

fn header_named(header: &Header, name: &str) -> Option<String> {
    let (n, v) = name_and_value(header);
    n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
}

/// A header's name (as rsip prints it) and value, without formatting it: looking a
/// header up by name used to print every header before it (3% of the edge's CPU under
/// load, bench/profile.md). A test checks each name against rsip's own printing.
fn name_and_value(header: &Header) -> (&str, &str) {
    macro_rules! table {
        ($($variant:ident => $name:literal),* $(,)?) => {
            match header {
                Header::Other(name, value) => (name.as_str(), value.as_str()),
                $(Header::$variant(h) => ($name, h.value()),)*
            }
        };
    }
    table! {
        Accept => "Accept", AcceptEncoding => "Accept-Encoding",
        AcceptLanguage => "Accept-Language", AlertInfo => "Alert-Info", Allow => "Allow",
        AuthenticationInfo => "Authentication-Info", Authorization => "Authorization",
        CSeq => "CSeq", CallId => "Call-ID", CallInfo => "Call-Info", Contact => "Contact",
        ContentDisposition => "Content-Disposition", ContentEncoding => "Content-Encoding",
        ContentLanguage => "Content-Language", ContentLength => "Content-Length",
        ContentType => "Content-Type", Date => "Date", ErrorInfo => "Error-Info",
        Event => "Event", Expires => "Expires", From => "From", InReplyTo => "In-Reply-To",
        MaxForwards => "Max-Forwards", MimeVersion => "Mime-Version",
        MinExpires => "Min-Expires", Organization => "Organization", Priority => "Priority",
        ProxyAuthenticate => "Proxy-Authenticate",
        ProxyAuthorization => "Proxy-Authorization", ProxyRequire => "Proxy-Require",
        RecordRoute => "Record-Route", ReplyTo => "Reply-To", Require => "Require",
        RetryAfter => "Retry-After", Route => "Route", Server => "Server",
        Subject => "Subject", SubscriptionState => "Subscription-State",
        Supported => "Supported", Timestamp => "Timestamp", To => "To",
        Unsupported => "Unsupported", UserAgent => "User-Agent", Via => "Via",
        Warning => "Warning", WwwAuthenticate => "WWW-Authenticate",
    }
}

/// The `tag` parameter of a From or To value.
pub fn tag_of(value: Option<String>, name: &'static str) -> Result<Option<String>, HeaderError> {
    let value = value.ok_or(HeaderError::Missing(name))?;
    // Parameters after the name-addr's closing '>' (or after the addr-spec).
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value.split_once(';').map(|(_, p)| p).unwrap_or(""),
    };
    Ok(params
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("tag"))
        .map(|(_, v)| v.trim().to_owned()))
}

impl SipHeaders for Request {
    fn headers(&self) -> &Headers {
        &self.headers
    }
}

impl SipHeaders for Response {
    fn headers(&self) -> &Headers {
        &self.headers
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("invalid {0} header: {1}")]
    Invalid(&'static str, String),
}

/// A `Reason` header (RFC 3326) explaining a status code to humans and logs.
pub fn reason_header(code: u16, text: &str) -> Header {
    let text = text.replace(['"', '\\', '\r', '\n'], " ");
    Header::Other("Reason".into(), format!("SIP;cause={code};text=\"{text}\""))
}

/// Builds a response to `request` (RFC 3261 §8.2.6): Via, From, To, Call-ID and CSeq
/// copied; a To tag added when given and absent.
pub fn response_to(request: &Request, code: u16, to_tag: Option<&str>) -> Response {
    let mut headers = Headers::default();
    for header in request.headers.iter() {
        match header {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(header.clone())
            }
            Header::To(to) => {
                let mut value = to.value().to_owned();
                if let Some(tag) = to_tag
                    && tag_of(Some(value.clone()), "To").ok().flatten().is_none()
                {
                    value.push_str(";tag=");
                    value.push_str(tag);
                }
                headers.push(Header::To(rsip::headers::To::new(value)));
            }
            _ => {}
        }
    }
    Response {
        status_code: StatusCode::from(code),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// Builds a response from a head that rsip could not parse, when the headers a response
/// needs are there (RFC 3261 §8.2.6 copies them verbatim). `None`: answer nothing.
pub fn response_to_raw(head: &RawHead, code: u16, reason: &str) -> Option<Vec<u8>> {
    if !head.is_request() || head.method()? == "ACK" {
        return None;
    }
    let vias: Vec<&str> = head.all("Via").collect();
    let (from, to, call_id, cseq) = (
        head.get("From")?,
        head.get("To")?,
        head.get("Call-ID")?,
        head.get("CSeq")?,
    );
    if vias.is_empty() {
        return None;
    }
    // Copied values must not break a line of the answer (see `has_bare_line_break`).
    if [from, to, call_id, cseq]
        .into_iter()
        .chain(vias.iter().copied())
        .any(|value| value.contains(['\r', '\n']))
    {
        return None;
    }
    let mut text = format!("SIP/2.0 {code} {}\r\n", reason_phrase(code));
    for via in vias {
        text.push_str(&format!("Via: {via}\r\n"));
    }
    text.push_str(&format!(
        "From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\n{}\r\nContent-Length: 0\r\n\r\n",
        reason_header(code, reason)
    ));
    Some(text.into_bytes())
}

/// The RFC 3261 reason phrase for the status codes the edge sends and relays.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match code / 100 {
            1 => "Session Progress",
            2 => "OK",
            3 => "Redirection",
            4 => "Request Failure",
            5 => "Server Failure",
            _ => "Global Failure",
        },
    }
}

/// Serialises a message with a correct Content-Length, whatever the builder put there,
/// and the RFC's reason phrase on responses (rsip would print its enum names).
pub fn to_bytes(message: impl Into<SipMessage>) -> Vec<u8> {
    let mut message: SipMessage = message.into();
    let length = message.body().len();
    let headers = match &mut message {
        SipMessage::Request(r) => &mut r.headers,
        SipMessage::Response(r) => &mut r.headers,
    };
    headers.retain(|h| !matches!(h, Header::ContentLength(_)));
    headers.push(Header::ContentLength(length.to_string().into()));
    let (start_line, headers, body) = match &message {
        SipMessage::Request(r) => (
            format!("{} {} SIP/2.0", r.method, r.uri),
            &r.headers,
            &r.body,
        ),
        SipMessage::Response(r) => {
            let code = r.status_code.code();
            (
                format!("SIP/2.0 {code} {}", reason_phrase(code)),
                &r.headers,
                &r.body,
            )
        }
    };
    let mut head = String::with_capacity(512);
    head.push_str(&start_line);
    head.push_str("\r\n");
    for header in headers.iter() {
        // Printed straight into the head: no String per header.
        let _ = write!(head, "{header}\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = decode_ipv6_references(&head).into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every header rsip knows, as rsip parses it: the table's name and value must be
    /// what rsip prints (`Name: value`), or lookups by name would miss headers.
    #[test]
    fn header_names_and_values_match_how_rsip_prints_them() {
        let names = [
            "Accept",
            "Accept-Encoding",
            "Accept-Language",
            "Alert-Info",
            "Allow",
            "Authentication-Info",
            "Authorization",
            "Call-Info",
            "Content-Disposition",
            "Content-Encoding",
            "Content-Language",
            "Content-Type",
            "Date",
            "Error-Info",
            "Event",
            "Expires",
            "In-Reply-To",
            "MIME-Version",
            "Min-Expires",
            "Organization",
            "Priority",
            "Proxy-Authenticate",
            "Proxy-Authorization",
            "Proxy-Require",
            "Record-Route",
            "Reply-To",
            "Require",
            "Retry-After",
            "Route",
            "Server",
            "Subject",
            "Subscription-State",
            "Supported",
            "Timestamp",
            "Unsupported",
            "User-Agent",
            "Warning",
            "WWW-Authenticate",
            "X-Something",
        ];
        let mut text = String::from(
            "OPTIONS sip:edge@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
             From: <sip:a@a>;tag=1\r\nTo: <sip:b@b>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\
             Contact: <sip:a@10.0.0.1>\r\nMax-Forwards: 70\r\n",
        );
        for (i, name) in names.iter().enumerate() {
            text.push_str(&format!("{name}: value-{i}\r\n"));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        let SipMessage::Request(request) = parse(text.as_bytes()).unwrap() else {
            panic!("a request")
        };
        assert!(request.headers.iter().count() >= names.len() + 8);
        // rsip's parser leaves Subscription-State untyped (its variant is only built by
        // code, as transfer.rs's NOTIFYs do): that variant is checked built.
        let built = Header::SubscriptionState("active;expires=60".into());
        let mut others = Vec::new();
        for header in request.headers.iter().chain([&built]) {
            let printed = header.to_string();
            let (name, value) = printed.split_once(':').unwrap();
            assert_eq!(
                name_and_value(header),
                (name.trim(), value.trim_start()),
                "{printed}"
            );
            if matches!(header, Header::Other(..)) {
                others.push(name.to_owned());
            }
        }
        assert_eq!(others, ["Subscription-State", "X-Something"]);
        assert_eq!(
            request.header_value("x-something").as_deref(),
            Some("value-38")
        );
        assert_eq!(request.header_value("CALL-id").as_deref(), Some("c1"));
    }

    #[test]
    fn branch_is_read_from_the_top_via_text() {
        assert_eq!(
            via_branch("SIP/2.0/UDP h:5060;rport;branch=z9hG4bKa"),
            Some("z9hG4bKa")
        );
        assert_eq!(
            via_branch("SIP/2.0/UDP h ; BRANCH = z9hG4bKb ;rport"),
            Some("z9hG4bKb")
        );
        assert_eq!(via_branch("SIP/2.0/UDP h;branch="), None);
        assert_eq!(via_branch("SIP/2.0/UDP h;rport"), None);
        assert_eq!(
            via_branch("SIP/2.0/UDP branch=x"),
            None,
            "sent-by is not a parameter"
        );
    }

    const OPTIONS: &str = "OPTIONS sip:edge@127.0.0.1 SIP/2.0\r\n\
        v: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK0\r\n\
        f: <sip:alice@example.com>;tag=a1\r\n\
        t : <sip:edge@127.0.0.1>\r\n\
        i: call-1\r\n\
        CSeq: 7\r\n OPTIONS\r\n\
        Max-Forwards: 70\r\n\
        l: 4\r\n\r\nbodyEXTRA";

    #[test]
    fn compact_forms_folding_and_lists_are_normalised() {
        let SipMessage::Request(request) = parse(OPTIONS.as_bytes()).unwrap() else {
            panic!("a request")
        };
        assert_eq!(request.method, Method::Options);
        assert_eq!(request.call_id().unwrap(), "call-1");
        assert_eq!(request.cseq().unwrap(), (7, Method::Options));
        assert_eq!(request.branch().unwrap(), "z9hG4bK1");
        assert_eq!(request.header_values("Via").len(), 2);
        assert_eq!(request.tag_from().unwrap().as_deref(), Some("a1"));
        assert_eq!(request.tag_to().unwrap(), None);
        assert_eq!(request.body, b"body", "the body is cut to Content-Length");
    }

    #[test]
    fn a_body_shorter_than_content_length_is_an_error_with_the_head_kept() {
        let text = OPTIONS.replace("l: 4", "l: 400");
        let error = parse(text.as_bytes()).unwrap_err();
        assert!(
            error.reason.contains("Content-Length 400"),
            "{}",
            error.reason
        );
        let head = error.head.unwrap();
        let response =
            String::from_utf8(response_to_raw(&head, 400, &error.reason).unwrap()).unwrap();
        assert!(
            response.starts_with("SIP/2.0 400 Bad Request\r\n"),
            "{response}"
        );
        assert!(response.contains("Call-ID: call-1\r\n"));
        assert!(response.contains("Reason: SIP;cause=400;text=\"Content-Length 400"));
        assert_eq!(response.matches("Via: ").count(), 2);
    }

    #[test]
    fn garbage_is_an_error_without_a_response() {
        let error = parse(b"\x00\x01garbage\r\n\r\n").unwrap_err();
        let no_response = error
            .head
            .as_ref()
            .and_then(|h| response_to_raw(h, 400, "x"));
        assert!(no_response.is_none());
    }

    /// Found by fuzzing (`fuzz/corpus/sip_message/crash-90a4d53f...`, minimised by hand):
    /// a lone CR inside From was kept in the value and copied into the 400.
    #[test]
    fn a_bare_cr_or_lf_in_the_head_is_refused_and_never_echoed() {
        for broken in [
            "f: <sip:alice@example.com>;tag=a1\r sip:x@evil\r\n",
            "f: <sip:alice@example.com>;tag=a1\nVia: SIP/2.0/UDP evil\r\n",
        ] {
            let text = OPTIONS.replace("f: <sip:alice@example.com>;tag=a1\r\n", broken);
            let error = parse(text.as_bytes()).unwrap_err();
            assert_eq!(error.status, 400);
            assert_eq!(error.reason, "bare CR or LF in the message head");
            let head = error.head.expect("the head is kept for the log");
            assert_eq!(response_to_raw(&head, 400, &error.reason), None);
        }
        assert!(!has_bare_line_break("a\r\nb\r\n\r\n"));
        assert!(has_bare_line_break("\na"));
    }

    /// Found by fuzzing (`fuzz/corpus/sip_message/crash-5c1aaa6d...`, from RFC 4475's
    /// baddn): a line `T` without a colon was passed on as a header `T`, which reads as
    /// a second To once serialised.
    #[test]
    fn a_header_line_without_a_colon_is_refused() {
        let text = OPTIONS.replace("i: call-1\r\n", "i: call-1\r\nT\r\n");
        let error = parse(text.as_bytes()).unwrap_err();
        assert_eq!(error.status, 400);
        assert_eq!(error.reason, "header line without a colon: \"T\"");
        let head = error.head.expect("the head is kept for the answer");
        assert!(response_to_raw(&head, 400, &error.reason).is_some());
    }

    /// Found by fuzzing (`fuzz/corpus/sip_message/crash-7fb5d675...`): `SIP/2.0 010`
    /// parsed as status 10, which serialises to a status line rsip cannot read.
    #[test]
    fn status_codes_are_three_digits_from_100_to_699() {
        for code in ["010", "10", "1000", "700", "099", "4294967301", "2x0", ""] {
            let text = format!(
                "SIP/2.0 {code} OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: x\r\n\r\n"
            );
            let error = parse(text.as_bytes()).unwrap_err();
            assert!(
                error.reason.starts_with("invalid status code"),
                "{code}: {error}"
            );
        }
        for code in ["100", "699"] {
            let text = format!(
                "SIP/2.0 {code} OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: x\r\n\r\n"
            );
            assert!(parse(text.as_bytes()).is_ok(), "{code}");
        }
    }

    /// Found by fuzzing (`fuzz/corpus/refer_headers/crash-1f08395f...`): rsip stopped
    /// reading the user at a dot and took the whole `user@host` as the host.
    #[test]
    fn uris_with_dots_in_the_user_part_keep_their_host() {
        let uri = parse_uri("sip:john.doe@10.0.0.5:5070;transport=tcp").unwrap();
        assert_eq!(uri.user(), Some("john.doe"));
        assert_eq!(uri.host_with_port.to_string(), "10.0.0.5:5070");
        assert_eq!(
            parse_uri("sip:john.doe@10.0.0.5:5070").unwrap().to_string(),
            "sip:john.doe@10.0.0.5:5070"
        );
        let uri = parse_uri("sip:a.b:p.w@[2001:db8::1]").unwrap();
        assert_eq!(
            uri.auth.map(|a| (a.user, a.password)),
            Some(("a.b".into(), Some("p.w".into())))
        );
        assert_eq!(
            host_ip(&uri.host_with_port.host.to_string()),
            "2001:db8::1".parse().ok()
        );
        let uri = parse_uri("sip:+15551.x?R@proxy.example:5060").unwrap();
        assert_eq!(uri.host_with_port.to_string(), "proxy.example:5060");
        // No userinfo: nothing to escape.
        assert_eq!(parse_uri("sip:edge.example").unwrap().user(), None);
    }

    /// Found by fuzzing (`fuzz/corpus/sip_message/crash-3a6bccd1...`): a blank folded
    /// line left a trailing space, so the value changed once serialised and read back.
    #[test]
    fn folding_never_leaves_whitespace_at_either_end_of_a_value() {
        let head =
            parse_head("OPTIONS sip:x SIP/2.0\r\nSubject: a\r\n\t\r\nX-Empty:\r\n  b\r\n\r\n");
        assert_eq!(head.get("Subject"), Some("a"));
        assert_eq!(head.get("X-Empty"), Some("b"));
    }

    #[test]
    fn ipv6_references_survive_parsing_and_serialising() {
        let text = "OPTIONS sip:edge@[2001:db8::1]:5060 SIP/2.0\r\n\
            Via: SIP/2.0/UDP [::ffff:192.0.2.1]:5070;branch=z9hG4bK6\r\n\
            From: <sip:a@[::1]>;tag=a\r\nTo: <sip:edge@[2001:db8::1]>\r\n\
            Call-ID: v6\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let SipMessage::Request(request) = parse(text.as_bytes()).unwrap() else {
            panic!("a request")
        };
        assert_eq!(request.uri.port().map(|p| *p.value()), Some(5060));
        let via = request.top_via().unwrap();
        assert_eq!(
            host_ip(&via.uri.host_with_port.host.to_string()),
            "::ffff:192.0.2.1".parse().ok()
        );
        let out = String::from_utf8(to_bytes(request)).unwrap();
        assert!(
            out.starts_with("OPTIONS sip:edge@[2001:db8::1]:5060 SIP/2.0\r\n"),
            "{out}"
        );
        assert!(
            out.contains("Via: SIP/2.0/UDP [::ffff:192.0.2.1]:5070;branch=z9hG4bK6"),
            "{out}"
        );
        assert!(out.contains("From: <sip:a@[::1]>;tag=a"), "{out}");
        assert_eq!(host_ip("127.0.0.1"), "127.0.0.1".parse().ok());
        assert_eq!(host_ip("example.com"), None);
    }

    #[test]
    fn odd_start_lines_are_refused_without_panicking() {
        for start in [
            "SIP/2 1",
            "SIP/",
            "SIP/2.0 100",
            "X",
            "INVITE sip:a@b",
            "  ",
        ] {
            let text = format!("{start}\r\nCall-ID: x\r\n\r\n");
            let _ = parse(text.as_bytes());
        }
        let text = "SIP/2.0 180\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: x\r\n\r\n";
        let Ok(SipMessage::Response(response)) = parse(text.as_bytes()) else {
            panic!("a response without reason phrase parses")
        };
        assert_eq!(response.status_code.code(), 180);
    }

    #[test]
    fn via_whitespace_is_normalised() {
        assert_eq!(
            normalise_via("SIP  /   2.0 /UDP     192.0.2.2 ;  branch =  z9hG4bK1 ; rport"),
            "SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK1;rport"
        );
        assert_eq!(
            normalise_via("SIP/2.0/TCP [2001:db8::1] : 5060;x=\"a  b\""),
            "SIP/2.0/TCP [2001:db8::1]:5060;x=\"a  b\""
        );
    }

    #[test]
    fn split_list_respects_quotes_and_brackets() {
        assert_eq!(
            split_list(r#""a, b" <sip:x@y;p=1,2>, <sip:z>"#),
            vec![r#""a, b" <sip:x@y;p=1,2>"#, "<sip:z>"]
        );
    }

    #[test]
    fn response_copies_headers_and_adds_the_to_tag() {
        let SipMessage::Request(request) = parse(OPTIONS.as_bytes()).unwrap() else {
            panic!("a request")
        };
        let response = response_to(&request, 200, Some("edge-tag"));
        assert_eq!(response.tag_to().unwrap().as_deref(), Some("edge-tag"));
        assert_eq!(response.header_values("Via").len(), 2);
        assert_eq!(response.cseq().unwrap(), (7, Method::Options));
        let text = String::from_utf8(to_bytes(response)).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 0\r\n"), "{text}");
    }
}
