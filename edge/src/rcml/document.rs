//! The RCML model and its parser.
//!
//! RCML documents come from application servers the edge does not control, so the parser
//! is strict about structure (anything it would not run is an error the caller can act
//! on, by trying `voiceFallbackUrl` or hanging up) and bounded in what it accepts (size,
//! verb count), and it never panics on input. It reads quick-xml events directly: the
//! grammar is two levels deep (`Response` > verb > noun), so a DOM would only add a
//! dependency and an allocation per node.

use std::time::Duration;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use switchyard_routing::resource::HttpMethod;
use thiserror::Error;

/// Largest document accepted, in bytes: RCML for call control is a few hundred bytes, so
/// this is generous while keeping a hostile app server from making the edge buffer much.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// Most verbs in one document.
pub const MAX_VERBS: usize = 100;
/// Largest number of seconds accepted in `timeout`, `timeLimit` and `length`: a day. It
/// keeps timers in a range every clock handles, whatever the document says.
pub const MAX_SECONDS: u64 = 24 * 60 * 60;

/// Dial's `timeout` when the attribute is absent (Restcomm's default).
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause's `length` when the attribute is absent.
pub const DEFAULT_PAUSE_LENGTH: Duration = Duration::from_secs(1);

/// A parsed RCML document: the verbs of its `<Response>`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub verbs: Vec<Verb>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    Dial(Dial),
    Hangup,
    /// `reason="busy"` answers 486 (Busy Here); anything else 603 (Decline).
    Reject {
        reason: RejectReason,
    },
    /// `length` in seconds, default 1.
    Pause {
        length: Duration,
    },
    /// Fetch the element text's URL (relative to the document's) and run that instead.
    Redirect {
        url: String,
        method: HttpMethod,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// 603 Decline.
    Rejected,
    /// 486 Busy Here.
    Busy,
}

impl RejectReason {
    /// The SIP status the edge answers with.
    pub fn sip_status(self) -> u16 {
        match self {
            RejectReason::Rejected => 603,
            RejectReason::Busy => 486,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    /// The nouns in document order; bare text (`<Dial>+1555</Dial>`) is one `Number`.
    pub targets: Vec<DialTarget>,
    /// Where to send `DialCallStatus` when the Dial ends; `None`: go on with the next verb.
    pub action: Option<String>,
    /// How to request `action`; default POST.
    pub method: HttpMethod,
    /// How long to ring; default 30 s.
    pub timeout: Duration,
    /// `callerId`: the From user for the outgoing leg.
    pub caller_id: Option<String>,
    /// `timeLimit`: longest the dialled call may last.
    pub time_limit: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialTarget {
    /// A phone number, as written (trimmed).
    Number(String),
    /// A SIP URI.
    Sip(String),
    /// A registered client's name.
    Client(String),
}

/// Why a document was refused. Every variant names the element (and attribute) at fault
/// so the log says what the application server must fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RcmlError {
    #[error("RCML document is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("RCML document has more than {limit} verbs")]
    TooManyVerbs { limit: usize },
    #[error("malformed XML at byte {position}: {message}")]
    Malformed { position: u64, message: String },
    #[error("<{element}> is not closed")]
    Unclosed { element: String },
    #[error("RCML document has no root element (expected <Response>)")]
    NoRoot,
    #[error("RCML root element is <{found}>, expected <Response>")]
    WrongRoot { found: String },
    #[error("RCML verb <{verb}> is not supported by this edge")]
    UnsupportedVerb { verb: String },
    #[error("unknown RCML verb <{verb}>")]
    UnknownVerb { verb: String },
    #[error("<Dial> noun <{noun}> is not supported by this edge")]
    UnsupportedNoun { noun: String },
    #[error("unknown <Dial> noun <{noun}>")]
    UnknownNoun { noun: String },
    #[error("<{element} {attribute}=\"{value}\">: expected {expected}")]
    BadAttribute {
        element: String,
        attribute: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("<Dial> has nothing to dial")]
    EmptyDial,
    #[error("<{element}> has no text")]
    EmptyText { element: String },
    #[error("<{element}> is not allowed inside <{parent}>")]
    UnexpectedElement { parent: String, element: String },
    #[error("text {text:?} is not allowed inside <{parent}>")]
    UnexpectedText { parent: String, text: String },
    #[error("content after </Response>")]
    TrailingContent,
}

/// Verbs of Restcomm's RCML that this edge does not run (yet): refused by name, so the
/// log tells "not supported" apart from a typo.
const UNSUPPORTED_VERBS: &[&str] = &[
    "Say",
    "Play",
    "Gather",
    "Record",
    "Sms",
    "Email",
    "Enqueue",
    "Leave",
    "Fax",
    "Ussd",
    "UssdCollect",
    "UssdMessage",
];
/// Dial nouns of Restcomm's RCML that this edge does not dial.
const UNSUPPORTED_NOUNS: &[&str] = &["Conference", "Queue", "VideoConference"];

/// Parses an RCML document.
pub fn parse(xml: &str) -> Result<Document, RcmlError> {
    if xml.len() > MAX_DOCUMENT_BYTES {
        return Err(RcmlError::TooLarge {
            size: xml.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    // A UTF-8 byte order mark is legal before the declaration; quick-xml would see text.
    let xml = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    let mut parser = Parser {
        reader: Reader::from_str(xml),
    };
    parser.document()
}

/// One element's start, whether it was written `<X>..</X>` or `<X/>`.
struct Element<'i> {
    start: BytesStart<'i>,
    /// `<X/>`: there is no content to read and no end tag to wait for.
    empty: bool,
}

impl Element<'_> {
    fn name(&self) -> String {
        element_name(&self.start)
    }
}

fn element_name(start: &BytesStart<'_>) -> String {
    start.name().as_ref().to_owned()
}

/// What the parser met next inside an element.
enum Item<'i> {
    Child(Element<'i>),
    /// Text, CDATA and entity references, already unescaped (one piece of a text run).
    Text(String),
    /// The end tag of the element being read.
    End,
}

struct Parser<'i> {
    reader: Reader<&'i [u8]>,
}

impl<'i> Parser<'i> {
    /// A structural problem found here, just after the event that showed it.
    fn malformed(&self, error: impl std::fmt::Display) -> RcmlError {
        RcmlError::Malformed {
            position: self.reader.buffer_position(),
            message: error.to_string(),
        }
    }

    fn event(&mut self) -> Result<Event<'i>, RcmlError> {
        // quick-xml's own errors know where they started.
        self.reader.read_event().map_err(|e| RcmlError::Malformed {
            position: self.reader.error_position(),
            message: e.to_string(),
        })
    }

    /// quick-xml does not check names: `<Hangup</Response>` would be an element named
    /// `Hangup</Response`. Refuse what no XML name contains, so a broken tag reads as
    /// malformed XML rather than as an unknown verb.
    fn element(&self, start: BytesStart<'i>, empty: bool) -> Result<Element<'i>, RcmlError> {
        let name = element_name(&start);
        let valid = name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if !valid {
            return Err(self.malformed(format!("invalid element name {name:?}")));
        }
        Ok(Element { start, empty })
    }

    /// Prolog, the `<Response>` root, then nothing but comments and whitespace.
    fn document(&mut self) -> Result<Document, RcmlError> {
        let root = loop {
            match self.event()? {
                Event::Start(start) => break self.element(start, false)?,
                Event::Empty(start) => break self.element(start, true)?,
                Event::Text(text) if text.trim().is_empty() => {}
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
                Event::Eof => return Err(RcmlError::NoRoot),
                Event::End(end) => {
                    return Err(self.malformed(format!(
                        "end tag </{}> before any element",
                        end.name().as_ref()
                    )));
                }
                Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) => {
                    return Err(self.malformed("text before the root element"));
                }
            }
        };
        let name = root.name();
        if name != "Response" {
            return Err(RcmlError::WrongRoot { found: name });
        }
        let verbs = self.response(root)?;
        loop {
            match self.event()? {
                Event::Eof => return Ok(Document { verbs }),
                Event::Text(text) if text.trim().is_empty() => {}
                Event::Comment(_) | Event::PI(_) => {}
                _ => return Err(RcmlError::TrailingContent),
            }
        }
    }

    /// The next item inside `parent`; `Unclosed` when the document ends first.
    fn item(&mut self, parent: &str) -> Result<Item<'i>, RcmlError> {
        loop {
            return match self.event()? {
                Event::Start(start) => Ok(Item::Child(self.element(start, false)?)),
                Event::Empty(start) => Ok(Item::Child(self.element(start, true)?)),
                // quick-xml checks that the end tag matches the open element.
                Event::End(_) => Ok(Item::End),
                Event::Text(text) => Ok(Item::Text(text.xml10_content().into_owned())),
                Event::CData(data) => Ok(Item::Text(data.into_inner().into_owned())),
                Event::GeneralRef(reference) => {
                    let resolved = match reference.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => quick_xml::escape::resolve_predefined_entity(&reference)
                            .map(str::to_owned)
                            .ok_or_else(|| {
                                self.malformed(format!("unknown entity &{};", &*reference))
                            })?,
                        Err(e) => return Err(self.malformed(e)),
                    };
                    Ok(Item::Text(resolved))
                }
                Event::Comment(_) | Event::PI(_) => continue,
                Event::Decl(_) | Event::DocType(_) => {
                    Err(self.malformed(format!("declaration inside <{parent}>")))
                }
                Event::Eof => Err(RcmlError::Unclosed {
                    element: parent.to_owned(),
                }),
            };
        }
    }

    fn response(&mut self, root: Element<'i>) -> Result<Vec<Verb>, RcmlError> {
        let mut verbs = Vec::new();
        if root.empty {
            return Ok(verbs);
        }
        loop {
            match self.item("Response")? {
                Item::End => return Ok(verbs),
                Item::Text(text) if text.trim().is_empty() => {}
                Item::Text(text) => {
                    return Err(RcmlError::UnexpectedText {
                        parent: "Response".into(),
                        text: text.trim().to_owned(),
                    });
                }
                Item::Child(element) => {
                    if verbs.len() == MAX_VERBS {
                        return Err(RcmlError::TooManyVerbs { limit: MAX_VERBS });
                    }
                    verbs.push(self.verb(element)?);
                }
            }
        }
    }

    fn verb(&mut self, element: Element<'i>) -> Result<Verb, RcmlError> {
        let name = element.name();
        match name.as_str() {
            "Dial" => self.dial(element).map(Verb::Dial),
            "Hangup" => {
                self.text(&element)?;
                Ok(Verb::Hangup)
            }
            "Reject" => {
                let attributes = Attributes::read(self, &element)?;
                self.text(&element)?;
                let reason = match attributes.get("reason").as_deref() {
                    Some("busy") => RejectReason::Busy,
                    _ => RejectReason::Rejected,
                };
                Ok(Verb::Reject { reason })
            }
            "Pause" => {
                let attributes = Attributes::read(self, &element)?;
                self.text(&element)?;
                let length = attributes
                    .seconds("length", 0)?
                    .unwrap_or(DEFAULT_PAUSE_LENGTH);
                Ok(Verb::Pause { length })
            }
            "Redirect" => {
                let attributes = Attributes::read(self, &element)?;
                let method = attributes.method()?;
                let url = self.text(&element)?;
                if url.is_empty() {
                    return Err(RcmlError::EmptyText { element: name });
                }
                Ok(Verb::Redirect { url, method })
            }
            _ if UNSUPPORTED_VERBS.contains(&name.as_str()) => {
                Err(RcmlError::UnsupportedVerb { verb: name })
            }
            _ => Err(RcmlError::UnknownVerb { verb: name }),
        }
    }

    fn dial(&mut self, element: Element<'i>) -> Result<Dial, RcmlError> {
        let attributes = Attributes::read(self, &element)?;
        let mut dial = Dial {
            targets: Vec::new(),
            action: attributes.non_empty("action"),
            method: attributes.method()?,
            timeout: attributes
                .seconds("timeout", 1)?
                .unwrap_or(DEFAULT_DIAL_TIMEOUT),
            caller_id: attributes.non_empty("callerId"),
            time_limit: attributes.seconds("timeLimit", 1)?,
        };
        if !element.empty {
            // Bare text may come in several pieces (text, entity, text): gather a run and
            // make it one Number when an element or the end interrupts it.
            let mut bare = String::new();
            loop {
                let item = self.item("Dial")?;
                if let Item::Text(text) = &item {
                    bare.push_str(text);
                    continue;
                }
                let number = std::mem::take(&mut bare);
                if !number.trim().is_empty() {
                    dial.targets
                        .push(DialTarget::Number(number.trim().to_owned()));
                }
                match item {
                    Item::Child(noun) => dial.targets.push(self.noun(noun)?),
                    _ => break,
                }
            }
        }
        if dial.targets.is_empty() {
            return Err(RcmlError::EmptyDial);
        }
        Ok(dial)
    }

    fn noun(&mut self, element: Element<'i>) -> Result<DialTarget, RcmlError> {
        let name = element.name();
        let make = match name.as_str() {
            "Number" => DialTarget::Number,
            "Sip" => DialTarget::Sip,
            "Client" => DialTarget::Client,
            _ if UNSUPPORTED_NOUNS.contains(&name.as_str()) => {
                return Err(RcmlError::UnsupportedNoun { noun: name });
            }
            _ => return Err(RcmlError::UnknownNoun { noun: name }),
        };
        let text = self.text(&element)?;
        if text.is_empty() {
            return Err(RcmlError::EmptyText { element: name });
        }
        Ok(make(text))
    }

    /// An element's text content, trimmed; child elements are errors.
    fn text(&mut self, element: &Element<'i>) -> Result<String, RcmlError> {
        let mut text = String::new();
        if element.empty {
            return Ok(text);
        }
        let name = element.name();
        loop {
            match self.item(&name)? {
                Item::End => return Ok(text.trim().to_owned()),
                Item::Text(piece) => text.push_str(&piece),
                Item::Child(child) => {
                    return Err(RcmlError::UnexpectedElement {
                        parent: name,
                        element: child.name(),
                    });
                }
            }
        }
    }
}

/// An element's attributes, unescaped. Names are case-sensitive, as in Restcomm;
/// attributes the edge does not use are ignored, as Restcomm ignores them.
struct Attributes {
    element: String,
    values: Vec<(String, String)>,
}

impl Attributes {
    fn read(parser: &Parser<'_>, element: &Element<'_>) -> Result<Self, RcmlError> {
        let mut values = Vec::new();
        for attribute in element.start.attributes() {
            let attribute = attribute.map_err(|e| parser.malformed(e))?;
            let value = attribute
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| parser.malformed(e))?;
            values.push((attribute.key.as_ref().to_owned(), value.into_owned()));
        }
        Ok(Attributes {
            element: element.name(),
            values,
        })
    }

    fn get(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }

    /// The trimmed value; absent and blank are both `None`.
    fn non_empty(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    }

    fn bad(&self, attribute: &'static str, value: String, expected: &'static str) -> RcmlError {
        RcmlError::BadAttribute {
            element: self.element.clone(),
            attribute,
            value,
            expected,
        }
    }

    /// `method`: GET or POST (any case), default POST.
    fn method(&self) -> Result<HttpMethod, RcmlError> {
        match self.get("method") {
            None => Ok(HttpMethod::Post),
            Some(value) => match value.trim().to_ascii_uppercase().as_str() {
                "GET" => Ok(HttpMethod::Get),
                "POST" => Ok(HttpMethod::Post),
                _ => Err(self.bad("method", value, "GET or POST")),
            },
        }
    }

    /// A whole number of seconds, at least `min`, at most [`MAX_SECONDS`].
    fn seconds(&self, attribute: &'static str, min: u64) -> Result<Option<Duration>, RcmlError> {
        let Some(value) = self.get(attribute) else {
            return Ok(None);
        };
        let expected = if min == 0 {
            "a whole number of seconds from 0 to 86400"
        } else {
            "a whole number of seconds from 1 to 86400"
        };
        match value.trim().parse::<u64>() {
            Ok(seconds) if (min..=MAX_SECONDS).contains(&seconds) => {
                Ok(Some(Duration::from_secs(seconds)))
            }
            _ => Err(self.bad(attribute, value, expected)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verbs(xml: &str) -> Vec<Verb> {
        match parse(xml) {
            Ok(document) => document.verbs,
            Err(e) => panic!("{xml} should parse: {e}"),
        }
    }

    fn dial(xml: &str) -> Dial {
        match verbs(xml).as_slice() {
            [Verb::Dial(dial)] => dial.clone(),
            other => panic!("expected one Dial, got {other:?}"),
        }
    }

    fn error(xml: &str) -> RcmlError {
        match parse(xml) {
            Ok(document) => panic!("{xml} should not parse, got {document:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn seed_documents_parse() {
        let dial_bob = dial(include_str!("../../../examples/apps/dial-bob.xml"));
        assert_eq!(
            dial_bob.targets,
            [DialTarget::Sip("sip:bob@127.0.0.1:5071".into())]
        );
        assert_eq!(dial_bob.timeout, Duration::from_secs(30));
        let dial_carol = dial(include_str!("../../../examples/apps/dial-carol.xml"));
        assert_eq!(
            dial_carol.targets,
            [DialTarget::Sip("sip:carol@127.0.0.1:5072".into())]
        );
        assert_eq!(dial_carol.timeout, Duration::from_secs(20));
        let refer = dial(include_str!("../../../examples/apps/refer.xml"));
        assert_eq!(
            refer.targets,
            [DialTarget::Number("$core_ReferTarget".into())]
        );
        assert_eq!(refer.action.as_deref(), Some("refer-fallback.xml"));
        let fallback = dial(include_str!("../../../examples/apps/refer-fallback.xml"));
        assert_eq!(
            fallback.targets,
            [DialTarget::Sip(
                "sip:$core_Transferor@127.0.0.1:5071".into()
            )]
        );
    }

    #[test]
    fn dial_defaults() {
        let dial = dial("<Response><Dial><Number>+1555</Number></Dial></Response>");
        assert_eq!(
            dial,
            Dial {
                targets: vec![DialTarget::Number("+1555".into())],
                action: None,
                method: HttpMethod::Post,
                timeout: DEFAULT_DIAL_TIMEOUT,
                caller_id: None,
                time_limit: None,
            }
        );
    }

    #[test]
    fn dial_attributes() {
        let dial = dial(
            r#"<Response><Dial action="/next?a=1&amp;b=2" method="GET" timeout="15"
                 callerId="+1999" timeLimit="600"><Client>alice</Client></Dial></Response>"#,
        );
        assert_eq!(dial.action.as_deref(), Some("/next?a=1&b=2"));
        assert_eq!(dial.method, HttpMethod::Get);
        assert_eq!(dial.timeout, Duration::from_secs(15));
        assert_eq!(dial.caller_id.as_deref(), Some("+1999"));
        assert_eq!(dial.time_limit, Some(Duration::from_secs(600)));
        assert_eq!(dial.targets, [DialTarget::Client("alice".into())]);
    }

    #[test]
    fn attribute_names_are_case_sensitive_and_unknown_ones_ignored() {
        let dial =
            dial(r#"<Response><Dial Timeout="5" callerid="x" record="true">+1</Dial></Response>"#);
        assert_eq!(dial.timeout, DEFAULT_DIAL_TIMEOUT);
        assert_eq!(dial.caller_id, None);
    }

    #[test]
    fn blank_action_and_caller_id_are_absent() {
        let dial = dial(r#"<Response><Dial action=" " callerId="">+1</Dial></Response>"#);
        assert_eq!(dial.action, None);
        assert_eq!(dial.caller_id, None);
    }

    #[test]
    fn nouns_in_order_and_bare_text() {
        let dial = dial(
            "<Response><Dial>
               <Number> +1555 </Number>
               <Sip>sip:bob@example.com</Sip>
               <Client>carol</Client>
             </Dial></Response>",
        );
        assert_eq!(
            dial.targets,
            [
                DialTarget::Number("+1555".into()),
                DialTarget::Sip("sip:bob@example.com".into()),
                DialTarget::Client("carol".into()),
            ]
        );
        let bare = self::dial("<Response><Dial>\n  +1555 \n</Dial></Response>");
        assert_eq!(bare.targets, [DialTarget::Number("+1555".into())]);
        let escaped = self::dial("<Response><Dial><Sip>sip:a@b;x=1&amp;2</Sip></Dial></Response>");
        assert_eq!(escaped.targets, [DialTarget::Sip("sip:a@b;x=1&2".into())]);
        let cdata =
            self::dial("<Response><Dial><Number><![CDATA[+1 555]]></Number></Dial></Response>");
        assert_eq!(cdata.targets, [DialTarget::Number("+1 555".into())]);
    }

    #[test]
    fn hangup_reject_pause_redirect() {
        let parsed = verbs(
            r#"<Response>
                 <Pause/>
                 <Pause length="3"></Pause>
                 <Pause length="0"/>
                 <Reject/>
                 <Reject reason="busy"/>
                 <Reject reason="rejected"/>
                 <Redirect>https://app.example.com/next</Redirect>
                 <Redirect method="GET"> next.xml </Redirect>
                 <Hangup/>
               </Response>"#,
        );
        assert_eq!(
            parsed,
            [
                Verb::Pause {
                    length: Duration::from_secs(1)
                },
                Verb::Pause {
                    length: Duration::from_secs(3)
                },
                Verb::Pause {
                    length: Duration::ZERO
                },
                Verb::Reject {
                    reason: RejectReason::Rejected
                },
                Verb::Reject {
                    reason: RejectReason::Busy
                },
                Verb::Reject {
                    reason: RejectReason::Rejected
                },
                Verb::Redirect {
                    url: "https://app.example.com/next".into(),
                    method: HttpMethod::Post
                },
                Verb::Redirect {
                    url: "next.xml".into(),
                    method: HttpMethod::Get
                },
                Verb::Hangup,
            ]
        );
        assert_eq!(RejectReason::Busy.sip_status(), 486);
        assert_eq!(RejectReason::Rejected.sip_status(), 603);
    }

    #[test]
    fn declaration_comments_bom_and_empty_response() {
        assert_eq!(
            verbs(
                "\u{feff}<?xml version=\"1.0\"?>\n<!-- hi --><Response><!-- x --></Response>\n<!-- end -->"
            ),
            []
        );
        assert_eq!(verbs("<Response/>"), []);
        assert_eq!(
            verbs("<Response><Hangup><!-- why --></Hangup></Response>"),
            [Verb::Hangup]
        );
    }

    #[test]
    fn unknown_and_unsupported_verbs() {
        assert_eq!(
            error("<Response><Say>hello</Say></Response>"),
            RcmlError::UnsupportedVerb { verb: "Say".into() }
        );
        for verb in ["Play", "Gather", "Record", "Sms", "Email"] {
            let xml = format!("<Response><{verb}/></Response>");
            assert!(
                matches!(error(&xml), RcmlError::UnsupportedVerb { .. }),
                "{verb}"
            );
        }
        let unknown = error("<Response><Dail>+1</Dail></Response>");
        assert_eq!(
            unknown,
            RcmlError::UnknownVerb {
                verb: "Dail".into()
            }
        );
        assert!(unknown.to_string().contains("<Dail>"));
    }

    #[test]
    fn unknown_and_unsupported_nouns() {
        assert_eq!(
            error("<Response><Dial><Conference>room</Conference></Dial></Response>"),
            RcmlError::UnsupportedNoun {
                noun: "Conference".into()
            }
        );
        assert_eq!(
            error("<Response><Dial><Phone>+1</Phone></Dial></Response>"),
            RcmlError::UnknownNoun {
                noun: "Phone".into()
            }
        );
    }

    #[test]
    fn bad_attribute_values() {
        for (xml, attribute) in [
            (
                r#"<Response><Dial timeout="soon">+1</Dial></Response>"#,
                "timeout",
            ),
            (
                r#"<Response><Dial timeout="-5">+1</Dial></Response>"#,
                "timeout",
            ),
            (
                r#"<Response><Dial timeout="0">+1</Dial></Response>"#,
                "timeout",
            ),
            (
                r#"<Response><Dial timeout="1.5">+1</Dial></Response>"#,
                "timeout",
            ),
            (
                r#"<Response><Dial timeout="99999999999999999999">+1</Dial></Response>"#,
                "timeout",
            ),
            (
                r#"<Response><Dial timeLimit="-1">+1</Dial></Response>"#,
                "timeLimit",
            ),
            (
                r#"<Response><Dial method="PUT">+1</Dial></Response>"#,
                "method",
            ),
            (r#"<Response><Pause length="x"/></Response>"#, "length"),
            (
                r#"<Response><Redirect method="DELETE">/x</Redirect></Response>"#,
                "method",
            ),
        ] {
            match error(xml) {
                RcmlError::BadAttribute {
                    attribute: found, ..
                } => assert_eq!(found, attribute, "{xml}"),
                other => panic!("{xml}: expected BadAttribute, got {other:?}"),
            }
        }
        let message = error(r#"<Response><Dial timeout="soon">+1</Dial></Response>"#).to_string();
        assert!(
            message.contains("Dial") && message.contains("timeout") && message.contains("soon"),
            "{message}"
        );
    }

    #[test]
    fn malformed_documents() {
        assert_eq!(
            error("<Response><Dial><Number>+1</Number>"),
            RcmlError::Unclosed {
                element: "Dial".into()
            }
        );
        assert!(matches!(
            error("<Response><Dial>+1</Number></Response>"),
            RcmlError::Malformed { .. }
        ));
        let broken = error("<Response><Hangup</Response>");
        assert!(matches!(broken, RcmlError::Malformed { .. }), "{broken:?}");
        assert!(matches!(
            error("<Response><Dial timeout=\"1\" timeout=\"2\">+1</Dial></Response>"),
            RcmlError::Malformed { .. }
        ));
        assert!(matches!(
            error("<Response><Dial>&bogus;</Dial></Response>"),
            RcmlError::Malformed { .. }
        ));
        assert_eq!(error(""), RcmlError::NoRoot);
        assert_eq!(error("  <!-- nothing -->  "), RcmlError::NoRoot);
        assert_eq!(error("<Response/><Response/>"), RcmlError::TrailingContent);
        assert_eq!(
            error("<Response>hello<Hangup/></Response>"),
            RcmlError::UnexpectedText {
                parent: "Response".into(),
                text: "hello".into()
            }
        );
        assert_eq!(
            error("<Response><Dial><Number><Sip>x</Sip></Number></Dial></Response>"),
            RcmlError::UnexpectedElement {
                parent: "Number".into(),
                element: "Sip".into()
            }
        );
    }

    #[test]
    fn wrong_root() {
        assert_eq!(
            error("<Reponse><Hangup/></Reponse>"),
            RcmlError::WrongRoot {
                found: "Reponse".into()
            }
        );
        assert_eq!(
            error("<html><body>502 Bad Gateway</body></html>"),
            RcmlError::WrongRoot {
                found: "html".into()
            }
        );
    }

    #[test]
    fn empty_dial_and_empty_nouns() {
        assert_eq!(error("<Response><Dial/></Response>"), RcmlError::EmptyDial);
        assert_eq!(
            error("<Response><Dial>  \n </Dial></Response>"),
            RcmlError::EmptyDial
        );
        assert_eq!(
            error("<Response><Dial><Number> </Number></Dial></Response>"),
            RcmlError::EmptyText {
                element: "Number".into()
            }
        );
        assert_eq!(
            error("<Response><Redirect/></Response>"),
            RcmlError::EmptyText {
                element: "Redirect".into()
            }
        );
    }

    #[test]
    fn limits() {
        let padding = " ".repeat(MAX_DOCUMENT_BYTES);
        assert_eq!(
            error(&format!("<Response>{padding}</Response>")),
            RcmlError::TooLarge {
                size: MAX_DOCUMENT_BYTES + "<Response></Response>".len(),
                limit: MAX_DOCUMENT_BYTES
            }
        );
        let at_limit = format!("<Response>{}</Response>", "<Hangup/>".repeat(MAX_VERBS));
        assert_eq!(verbs(&at_limit).len(), MAX_VERBS);
        let over = format!("<Response>{}</Response>", "<Hangup/>".repeat(MAX_VERBS + 1));
        assert_eq!(error(&over), RcmlError::TooManyVerbs { limit: MAX_VERBS });
    }
}
