//! Validation of a `PhoneNumberSpec` beyond what serde's types enforce.
//!
//! The CRD schema rejects most of this at `kubectl apply`; the same rules are checked here
//! because standalone manifests never meet an API server, and because a schema cannot
//! say whether a regular expression compiles. Every problem names its field.

use std::sync::LazyLock;

use regex::Regex;
use thiserror::Error;

use crate::resource::{NUMBER_PATTERN, PhoneNumberSpec, URL_PATTERN};

static URL_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(URL_PATTERN).expect("URL_PATTERN is a valid regex"));
static NUMBER_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(NUMBER_PATTERN).expect("NUMBER_PATTERN is a valid regex"));

/// Patterns are compiled with a size limit so one resource cannot make every edge
/// allocate a huge automaton.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// One thing wrong with a spec, naming the field as it is spelled in YAML.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("spec.{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

/// Compiles a route pattern the way the lookup uses it: anchored to the whole number.
pub fn compile_pattern(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
}

/// Checks a spec; returns every problem found, not only the first.
pub fn validate_spec(spec: &PhoneNumberSpec) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();

    match (&spec.phone_number, &spec.pattern) {
        (Some(_), Some(_)) | (None, None) => errors.push(FieldError::new(
            "phoneNumber",
            "exactly one of phoneNumber and pattern must be set",
        )),
        _ => {}
    }
    if let Some(number) = &spec.phone_number
        && !NUMBER_RE.is_match(number)
    {
        errors.push(FieldError::new(
            "phoneNumber",
            format!("{number:?} is neither digits with an optional leading + nor a SIP user part"),
        ));
    }
    if let Some(pattern) = &spec.pattern {
        if pattern.is_empty() {
            errors.push(FieldError::new("pattern", "must not be empty"));
        } else if let Err(e) = compile_pattern(pattern) {
            errors.push(FieldError::new(
                "pattern",
                format!("is not a valid regular expression: {e}"),
            ));
        }
    }
    if spec.priority.is_some() && spec.pattern.is_none() {
        errors.push(FieldError::new("priority", "applies to patterns only"));
    }

    for (i, pattern) in spec.refer_target_allow.iter().enumerate() {
        if pattern.is_empty() {
            errors.push(FieldError::new(
                "referTargetAllow",
                format!("[{i}] must not be empty"),
            ));
        } else if let Err(e) = compile_pattern(pattern) {
            errors.push(FieldError::new(
                "referTargetAllow",
                format!("[{i}] {pattern:?} is not a valid regular expression: {e}"),
            ));
        }
    }

    let urls = [
        ("voiceUrl", Some(&spec.voice_url)),
        ("voiceFallbackUrl", spec.voice_fallback_url.as_ref()),
        ("referUrl", spec.refer_url.as_ref()),
        ("statusCallback", spec.status_callback.as_ref()),
    ];
    for (field, url) in urls {
        if let Some(url) = url
            && !URL_RE.is_match(url)
        {
            errors.push(FieldError::new(
                field,
                format!("{url:?} is not an absolute http(s) URL or a file: URL"),
            ));
        }
    }

    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::HttpMethod;

    fn spec() -> PhoneNumberSpec {
        PhoneNumberSpec {
            phone_number: Some("+15551230001".into()),
            pattern: None,
            priority: None,
            friendly_name: None,
            voice_url: "http://apps.example/dial-bob.xml".into(),
            voice_method: HttpMethod::Post,
            voice_fallback_url: None,
            voice_fallback_method: HttpMethod::Post,
            refer_url: Some("file:refer.xml".into()),
            refer_method: HttpMethod::Post,
            status_callback: None,
            refer_target_allow: Vec::new(),
        }
    }

    fn fields(spec: &PhoneNumberSpec) -> Vec<&'static str> {
        validate_spec(spec)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn accepts_a_plain_number_and_a_sip_user_part() {
        assert_eq!(validate_spec(&spec()), Ok(()));
        let mut s = spec();
        s.phone_number = Some("alice.support".into());
        assert_eq!(validate_spec(&s), Ok(()));
    }

    #[test]
    fn requires_exactly_one_of_number_and_pattern() {
        let mut s = spec();
        s.pattern = Some("1555.*".into());
        assert_eq!(fields(&s), ["phoneNumber"]);
        s.phone_number = None;
        s.pattern = None;
        assert_eq!(fields(&s), ["phoneNumber"]);
    }

    #[test]
    fn rejects_a_pattern_that_does_not_compile_and_names_the_field() {
        let mut s = spec();
        s.phone_number = None;
        s.pattern = Some("1555(".into());
        let errors = validate_spec(&s).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "pattern");
        assert!(errors[0].to_string().starts_with("spec.pattern: "));
    }

    #[test]
    fn rejects_priority_on_an_exact_number() {
        let mut s = spec();
        s.priority = Some(3);
        assert_eq!(fields(&s), ["priority"]);
    }

    #[test]
    fn rejects_relative_and_non_http_urls() {
        let mut s = spec();
        s.voice_url = "/dial-bob.xml".into();
        s.refer_url = Some("ftp://apps.example/refer.xml".into());
        s.status_callback = Some("http://".into());
        assert_eq!(fields(&s), ["voiceUrl", "referUrl", "statusCallback"]);
    }

    #[test]
    fn rejects_a_number_with_spaces() {
        let mut s = spec();
        s.phone_number = Some("+1 555 123".into());
        assert_eq!(fields(&s), ["phoneNumber"]);
    }

    #[test]
    fn refer_target_allow_accepts_regexes_and_names_each_bad_one() {
        let mut s = spec();
        s.refer_target_allow = vec![r"\+1555\d{7}".into(), "sip:.*@pbx\\.example".into()];
        assert_eq!(validate_spec(&s), Ok(()));
        s.refer_target_allow = vec!["ok".into(), "(unclosed".into(), String::new()];
        let errors = validate_spec(&s).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().all(|e| e.field == "referTargetAllow"));
        assert!(
            errors[0].message.starts_with("[1] \"(unclosed\""),
            "{}",
            errors[0]
        );
        assert_eq!(errors[1].message, "[2] must not be empty");
    }

    #[test]
    fn refer_target_allow_is_anchored_to_the_whole_target() {
        let re = compile_pattern(r"\+1555\d{7}").unwrap();
        assert!(re.is_match("+15551230002"));
        assert!(!re.is_match("+155512300029"));
        assert!(!re.is_match("011+15551230002"));
    }

    #[test]
    fn patterns_match_the_whole_number() {
        let re = compile_pattern("1555.*|1666").unwrap();
        assert!(re.is_match("15551234"));
        assert!(re.is_match("1666"));
        assert!(!re.is_match("16667"));
        assert!(!re.is_match("0015551234"));
    }
}
