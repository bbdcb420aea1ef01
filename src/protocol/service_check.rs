//! Service checks: `_sc|name|status|d:ts|h:host|#tags|m:message`.
//!
//! Service checks are rare and entirely text, so the line is validated as UTF-8 once up front and
//! parsed as `&str`. `m:` must come last: everything after the first `|m:` is the message as sent,
//! `|` included, so a message never needs escaping beyond `\n` and `m\:`; those escapes are
//! replaced later, when the ingestor makes it a [`crate::point::ServiceCheck`].
//!
//! Choices beyond the rules of `docs/protocol.md` (the tests below pin each of them):
//! - invalid UTF-8 anywhere is `NotUtf8`; control characters in tags are `BadTags`, as for
//!   metrics; every other fault, including control characters in the name, is `BadServiceCheck`;
//! - a repeated `d:` or `h:` section: the last one wins; `d:` is any `i64`; an empty `h:` is the
//!   same as none;
//! - an empty `m:` is an empty message (`Some("")`), not a missing one.

use smallvec::SmallVec;

use super::event::{non_empty, push_text_tags};
use super::{ParseError, ServiceCheckLine};

/// Parses one `_sc|` service-check line (no trailing `\n` or `\r`) into a [`ServiceCheckLine`]
/// borrowing from it.
///
/// # Errors
///
/// [`ParseError::NotUtf8`] for invalid UTF-8, [`ParseError::BadTags`] for control characters
/// in tags, [`ParseError::BadServiceCheck`] for everything else (empty name, a status other
/// than `0`..=`3`, a bad `d:`).
pub fn parse_service_check(line: &[u8]) -> Result<ServiceCheckLine<'_>, ParseError> {
    let Some(rest) = line.strip_prefix(b"_sc|") else {
        return Err(ParseError::BadServiceCheck);
    };
    let rest = std::str::from_utf8(rest).map_err(|_| ParseError::NotUtf8)?;
    let (name, rest) = rest.split_once('|').ok_or(ParseError::BadServiceCheck)?;
    if name.is_empty() || name.bytes().any(|b| b.is_ascii_control()) {
        return Err(ParseError::BadServiceCheck);
    }
    let (status, mut rest) = match rest.split_once('|') {
        Some((status, rest)) => (status, Some(rest)),
        None => (rest, None),
    };
    let status = match status {
        "0" => 0,
        "1" => 1,
        "2" => 2,
        "3" => 3,
        _ => return Err(ParseError::BadServiceCheck),
    };

    let mut check = ServiceCheckLine {
        name,
        status,
        timestamp: None,
        host: None,
        tags: SmallVec::new(),
        message: None,
    };
    while let Some(sections) = rest {
        if let Some(message) = sections.strip_prefix("m:") {
            check.message = Some(message);
            break;
        }
        let section = match sections.split_once('|') {
            Some((section, next)) => {
                rest = Some(next);
                section
            }
            None => {
                rest = None;
                sections
            }
        };
        if let Some(ts) = section.strip_prefix("d:") {
            check.timestamp = Some(ts.parse().map_err(|_| ParseError::BadServiceCheck)?);
        } else if let Some(host) = section.strip_prefix("h:") {
            check.host = non_empty(host);
        } else if let Some(tags) = section.strip_prefix('#') {
            push_text_tags(tags, &mut check.tags)?;
        }
        // Anything else, including empty sections, is ignored.
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_line, unescape_newlines, Line};

    fn ok(line: &str) -> ServiceCheckLine<'_> {
        match parse_service_check(line.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{line:?} refused: {e}"),
        }
    }

    fn err(line: &[u8]) -> ParseError {
        match parse_service_check(line) {
            Ok(c) => panic!("{line:?} accepted: {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn minimal_check() {
        let c = ok("_sc|db.up|0");
        assert_eq!(c.name, "db.up");
        assert_eq!(c.status, 0);
        assert_eq!(c.timestamp, None);
        assert_eq!(c.host, None);
        assert!(c.tags.is_empty());
        assert_eq!(c.message, None);
    }

    #[test]
    fn every_section() {
        let c = ok("_sc|db.up|2|d:1763775000|h:web-1|#service:api,env:prod|m:connection refused");
        assert_eq!(c.status, 2);
        assert_eq!(c.timestamp, Some(1_763_775_000));
        assert_eq!(c.host, Some("web-1"));
        assert_eq!(c.tags.as_slice(), ["service:api", "env:prod"]);
        assert_eq!(c.message, Some("connection refused"));
    }

    #[test]
    fn every_status() {
        for status in 0..=3u8 {
            let line = format!("_sc|x|{status}");
            assert_eq!(ok(&line).status, status);
        }
    }

    #[test]
    fn bad_status() {
        for status in ["4", "-1", "", "00", "01", "1.0", "ok", " 1", "9"] {
            let line = format!("_sc|x|{status}|#a");
            assert_eq!(err(line.as_bytes()), ParseError::BadServiceCheck, "{line}");
        }
        assert_eq!(err(b"_sc|x"), ParseError::BadServiceCheck);
        assert_eq!(err(b"_sc|x|m:hi"), ParseError::BadServiceCheck);
        assert_eq!(ParseError::BadServiceCheck.reason(), "bad_service_check");
    }

    #[test]
    fn bad_names() {
        assert_eq!(err(b"_sc||0"), ParseError::BadServiceCheck);
        assert_eq!(err(b"_sc|a\0b|0"), ParseError::BadServiceCheck);
        assert_eq!(err(b"_sc|"), ParseError::BadServiceCheck);
        assert_eq!(err(b"_sd|x|0"), ParseError::BadServiceCheck);
    }

    #[test]
    fn sections_in_any_order_before_the_message() {
        let a = ok("_sc|x|1|#t|h:h|d:7|m:msg");
        let b = ok("_sc|x|1|d:7|#t|h:h|m:msg");
        assert_eq!(a, b);
        assert_eq!(a.timestamp, Some(7));
    }

    #[test]
    fn message_runs_to_the_end_of_the_line() {
        let c = ok("_sc|x|1|m:a|b|#not:a:tag|h:not-a-host|d:1");
        assert_eq!(c.message, Some("a|b|#not:a:tag|h:not-a-host|d:1"));
        assert!(c.tags.is_empty());
        assert_eq!(c.host, None);
        assert_eq!(c.timestamp, None);
    }

    #[test]
    fn message_escapes_are_kept_raw() {
        let c = ok(r"_sc|x|1|m:line1\nline2 m\: literal|m:again");
        assert_eq!(c.message, Some(r"line1\nline2 m\: literal|m:again"));
        assert_eq!(
            unescape_newlines(c.message.unwrap_or_default()),
            "line1\nline2 m\\: literal|m:again"
        );
    }

    #[test]
    fn empty_message() {
        assert_eq!(ok("_sc|x|1|m:").message, Some(""));
    }

    #[test]
    fn bad_timestamp() {
        for d in ["", "abc", "1.5", "99999999999999999999"] {
            let line = format!("_sc|x|0|d:{d}");
            assert_eq!(err(line.as_bytes()), ParseError::BadServiceCheck, "{line}");
        }
        assert_eq!(ok("_sc|x|0|d:-1").timestamp, Some(-1));
    }

    #[test]
    fn repeated_sections_last_wins_and_tags_concatenate() {
        let c = ok("_sc|x|0|h:a|#t1|d:1|h:b|#,t2|d:2");
        assert_eq!(c.host, Some("b"));
        assert_eq!(c.timestamp, Some(2));
        assert_eq!(c.tags.as_slice(), ["t1", "t2"]);
    }

    #[test]
    fn empty_and_unknown_sections_are_ignored() {
        assert_eq!(ok("_sc|x|0||zzz|s:x|h:|#|"), ok("_sc|x|0"));
    }

    #[test]
    fn invalid_utf8_is_not_utf8() {
        assert_eq!(err(b"_sc|x\xff|0"), ParseError::NotUtf8);
        assert_eq!(err(b"_sc|x|0|m:\xc3"), ParseError::NotUtf8);
    }

    #[test]
    fn control_characters_in_tags() {
        assert_eq!(err(b"_sc|x|0|#a\x7f"), ParseError::BadTags);
    }

    #[test]
    fn unicode_name_and_tags() {
        let c = ok("_sc|base.données|0|#équipe:ops");
        assert_eq!(c.name, "base.données");
        assert_eq!(c.tags.as_slice(), ["équipe:ops"]);
    }

    #[test]
    fn through_parse_line_with_carriage_return() {
        let Ok(Line::ServiceCheck(c)) = parse_line(b"_sc|x|3|m:down\r") else {
            panic!("not a service check");
        };
        assert_eq!(c.status, 3);
        assert_eq!(c.message, Some("down"));
        let Ok(Line::ServiceCheck(c)) = parse_line(b"_sc|x|1\r") else {
            panic!("not a service check");
        };
        assert_eq!(c.status, 1);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn message_round_trips(message in "\\PC{0,24}") {
                let line = format!("_sc|x|2|#a|m:{message}");
                let c = parse_service_check(line.as_bytes());
                prop_assert_eq!(c.map(|c| c.message), Ok(Some(&message[..])));
            }

            #[test]
            fn service_check_like_bytes_never_panic(
                rest in prop::collection::vec(prop::sample::select(&b"ab0123|:#,dhm\\\xc3\xa9\xff\0"[..]), 0..24),
            ) {
                let line = [&b"_sc|"[..], &rest].concat();
                let _ = parse_line(&line);
            }
        }
    }
}
