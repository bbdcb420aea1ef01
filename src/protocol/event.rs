//! Events: `_e{title_len,text_len}:title|text|d:ts|h:host|k:agg_key|p:priority|s:source|t:alert_type|#tags`.
//!
//! Events are rare and entirely text, so the line is validated as UTF-8 once up front and parsed
//! as `&str`. The lengths in the header are UTF-8 byte counts and are authoritative: the title
//! and text may contain `|`, and whatever follows the text must be a `|` or the end of the line.
//!
//! Choices beyond the rules of `docs/protocol.md` (the tests below pin each of them):
//! - invalid UTF-8 anywhere in an event is `NotUtf8` (every part of an event is text);
//!   control characters in tags are `BadTags`, as for metrics; every other fault is `BadEvent`;
//! - lengths are plain ASCII digits (no sign, no spaces); a length that ends inside a UTF-8
//!   character is a length mismatch;
//! - a repeated `d:`, `h:`, `k:`, `p:`, `s:` or `t:` section: the last one wins; `d:` is any
//!   `i64` (a leading `+` or `-` is accepted);
//! - an empty `h:`, `k:` or `s:` is the same as none;
//! - `p:` and `t:` values are matched exactly (lowercase), others fall back to the default.

use smallvec::SmallVec;

use super::{AlertType, EventLine, ParseError, Priority};

/// Parses one `_e{..}` event line (no trailing `\n` or `\r`) into an [`EventLine`] borrowing
/// from it.
///
/// # Errors
///
/// [`ParseError::NotUtf8`] for invalid UTF-8, [`ParseError::BadTags`] for control characters
/// in tags, [`ParseError::BadEvent`] for everything else (header, lengths, empty title, `d:`).
pub fn parse_event(line: &[u8]) -> Result<EventLine<'_>, ParseError> {
    let Some(rest) = line.strip_prefix(b"_e{") else {
        return Err(ParseError::BadEvent);
    };
    let rest = std::str::from_utf8(rest).map_err(|_| ParseError::NotUtf8)?;
    let (lengths, body) = rest.split_once('}').ok_or(ParseError::BadEvent)?;
    let (title_len, text_len) = lengths.split_once(',').ok_or(ParseError::BadEvent)?;
    let (title_len, text_len) = (parse_len(title_len)?, parse_len(text_len)?);
    let body = body.strip_prefix(':').ok_or(ParseError::BadEvent)?;

    // `str::split_at_checked` refuses both a length past the end and one inside a character.
    let (title, rest) = body
        .split_at_checked(title_len)
        .ok_or(ParseError::BadEvent)?;
    let rest = rest.strip_prefix('|').ok_or(ParseError::BadEvent)?;
    let (text, rest) = rest
        .split_at_checked(text_len)
        .ok_or(ParseError::BadEvent)?;
    if title.is_empty() {
        return Err(ParseError::BadEvent);
    }

    let mut event = EventLine {
        title,
        text,
        timestamp: None,
        host: None,
        aggregation_key: None,
        priority: Priority::Normal,
        source_type: None,
        alert_type: AlertType::Info,
        tags: SmallVec::new(),
    };
    let sections = match rest {
        "" => None,
        _ => Some(rest.strip_prefix('|').ok_or(ParseError::BadEvent)?),
    };
    for section in sections.into_iter().flat_map(|s| s.split('|')) {
        if let Some(ts) = section.strip_prefix("d:") {
            event.timestamp = Some(ts.parse().map_err(|_| ParseError::BadEvent)?);
        } else if let Some(host) = section.strip_prefix("h:") {
            event.host = non_empty(host);
        } else if let Some(key) = section.strip_prefix("k:") {
            event.aggregation_key = non_empty(key);
        } else if let Some(priority) = section.strip_prefix("p:") {
            event.priority = match priority {
                "low" => Priority::Low,
                _ => Priority::Normal,
            };
        } else if let Some(source) = section.strip_prefix("s:") {
            event.source_type = non_empty(source);
        } else if let Some(alert) = section.strip_prefix("t:") {
            event.alert_type = match alert {
                "warning" => AlertType::Warning,
                "error" => AlertType::Error,
                "success" => AlertType::Success,
                _ => AlertType::Info,
            };
        } else if let Some(tags) = section.strip_prefix('#') {
            push_text_tags(tags, &mut event.tags)?;
        }
        // Anything else, including empty sections, is ignored.
    }
    Ok(event)
}

/// A header length: ASCII digits only, fitting `usize`.
fn parse_len(s: &str) -> Result<usize, ParseError> {
    // `usize::from_str` alone would also take a leading `+`.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadEvent);
    }
    s.parse().map_err(|_| ParseError::BadEvent)
}

pub(super) fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// One `#` section of an event or service check: comma-separated, empty entries dropped,
/// appended to earlier ones; control characters are `BadTags`, as in metric tags.
pub(super) fn push_text_tags<'a>(
    section: &'a str,
    tags: &mut SmallVec<[&'a str; 8]>,
) -> Result<(), ParseError> {
    if section.bytes().any(|b| b.is_ascii_control()) {
        return Err(ParseError::BadTags);
    }
    tags.extend(section.split(',').filter(|tag| !tag.is_empty()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_line, unescape_newlines, Line};

    fn ok(line: &str) -> EventLine<'_> {
        match parse_event(line.as_bytes()) {
            Ok(e) => e,
            Err(e) => panic!("{line:?} refused: {e}"),
        }
    }

    fn err(line: &[u8]) -> ParseError {
        match parse_event(line) {
            Ok(e) => panic!("{line:?} accepted: {e:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn minimal_event() {
        let e = ok("_e{6,4}:deploy|v1.2");
        assert_eq!(e.title, "deploy");
        assert_eq!(e.text, "v1.2");
        assert_eq!(e.timestamp, None);
        assert_eq!(e.host, None);
        assert_eq!(e.aggregation_key, None);
        assert_eq!(e.priority, Priority::Normal);
        assert_eq!(e.source_type, None);
        assert_eq!(e.alert_type, AlertType::Info);
        assert!(e.tags.is_empty());
    }

    #[test]
    fn every_section() {
        let e = ok(
            "_e{5,4}:title|text|d:1763775000|h:web-1|k:deploys|p:low|s:jenkins|t:error|#env:prod,team",
        );
        assert_eq!(e.timestamp, Some(1_763_775_000));
        assert_eq!(e.host, Some("web-1"));
        assert_eq!(e.aggregation_key, Some("deploys"));
        assert_eq!(e.priority, Priority::Low);
        assert_eq!(e.source_type, Some("jenkins"));
        assert_eq!(e.alert_type, AlertType::Error);
        assert_eq!(e.tags.as_slice(), ["env:prod", "team"]);
    }

    #[test]
    fn sections_in_any_order() {
        let a = ok("_e{1,1}:a|b|#x|t:warning|d:5|h:h|p:low");
        let b = ok("_e{1,1}:a|b|p:low|h:h|d:5|t:warning|#x");
        assert_eq!(a, b);
        assert_eq!(a.alert_type, AlertType::Warning);
    }

    #[test]
    fn lengths_are_utf8_byte_counts() {
        // "déploiement" is 12 bytes, "✓ fini" is 8.
        let e = ok("_e{12,8}:déploiement|✓ fini|#é");
        assert_eq!(e.title, "déploiement");
        assert_eq!(e.text, "✓ fini");
        assert_eq!(e.tags.as_slice(), ["é"]);
        // Counting characters instead of bytes is a mismatch.
        assert_eq!(
            err("_e{11,6}:déploiement|✓ fini".as_bytes()),
            ParseError::BadEvent
        );
    }

    #[test]
    fn length_inside_a_character_is_a_mismatch() {
        assert_eq!(ok("_e{2,1}:é|x").title, "é");
        assert_eq!(err("_e{1,1}:é|x".as_bytes()), ParseError::BadEvent);
        assert_eq!(err("_e{1,1}:x|é".as_bytes()), ParseError::BadEvent);
    }

    #[test]
    fn title_and_text_may_contain_pipes() {
        let e = ok("_e{3,3}:a|b|c|d|h:x");
        assert_eq!(e.title, "a|b");
        assert_eq!(e.text, "c|d");
        assert_eq!(e.host, Some("x"));
    }

    #[test]
    fn empty_text() {
        let e = ok("_e{5,0}:title|");
        assert_eq!(e.text, "");
        let e = ok("_e{5,0}:title||t:success");
        assert_eq!(e.text, "");
        assert_eq!(e.alert_type, AlertType::Success);
    }

    #[test]
    fn empty_title() {
        assert_eq!(err(b"_e{0,4}:|text"), ParseError::BadEvent);
        assert_eq!(ParseError::BadEvent.reason(), "bad_event");
    }

    #[test]
    fn text_escapes_are_kept_raw() {
        let e = ok(r"_e{1,8}:t|a\nb\\nc");
        assert_eq!(e.text, r"a\nb\\nc");
        assert_eq!(unescape_newlines(e.text), "a\nb\\\nc");
    }

    #[test]
    fn length_mismatch() {
        for line in [
            "_e{5,4}:titl|text",      // title shorter: no `|` after 5 bytes
            "_e{4,4}:title|text",     // title longer
            "_e{5,5}:title|text",     // text shorter (runs off the end)
            "_e{5,3}:title|text",     // text longer: `t` follows instead of `|`
            "_e{5,3}:title|text|d:1", // the same with sections
            "_e{5,4}:title",          // no text at all
            "_e{5,0}:title",          // no `|` after the title
        ] {
            assert_eq!(err(line.as_bytes()), ParseError::BadEvent, "{line}");
        }
    }

    #[test]
    fn bad_headers() {
        for line in [
            "_e{",
            "_e{5,4",
            "_e{5,4}",
            "_e{5,4}title|text",
            "_e{5}:title|text",
            "_e{5,4,1}:title|text",
            "_e{,4}:title|text",
            "_e{5,}:title|text",
            "_e{a,4}:title|text",
            "_e{-5,4}:title|text",
            "_e{+5,4}:title|text",
            "_e{ 5,4}:title|text",
            "_e{5,4 }:title|text",
            "_e{99999999999999999999999,4}:title|text",
            "_e{5,18446744073709551615}:title|text",
            "_e(5,4):title|text",
            "_x{5,4}:title|text",
        ] {
            assert_eq!(err(line.as_bytes()), ParseError::BadEvent, "{line}");
        }
    }

    #[test]
    fn bad_timestamp_invalidates_the_event() {
        for d in ["", "abc", "1.5", "1e9", "99999999999999999999"] {
            let line = format!("_e{{1,1}}:a|b|d:{d}");
            assert_eq!(err(line.as_bytes()), ParseError::BadEvent, "{line}");
        }
        assert_eq!(ok("_e{1,1}:a|b|d:-5").timestamp, Some(-5));
    }

    #[test]
    fn unknown_priority_and_alert_type_fall_back() {
        let e = ok("_e{1,1}:a|b|p:urgent|t:fatal");
        assert_eq!(e.priority, Priority::Normal);
        assert_eq!(e.alert_type, AlertType::Info);
        let e = ok("_e{1,1}:a|b|p:LOW|t:Error");
        assert_eq!(e.priority, Priority::Normal);
        assert_eq!(e.alert_type, AlertType::Info);
        assert_eq!(ok("_e{1,1}:a|b|p:normal|t:info"), ok("_e{1,1}:a|b"));
    }

    #[test]
    fn repeated_sections_last_wins_and_tags_concatenate() {
        let e = ok("_e{1,1}:a|b|h:one|#x|h:two|#,y,|d:1|d:2");
        assert_eq!(e.host, Some("two"));
        assert_eq!(e.timestamp, Some(2));
        assert_eq!(e.tags.as_slice(), ["x", "y"]);
    }

    #[test]
    fn empty_and_unknown_sections_are_ignored() {
        let e = ok("_e{1,1}:a|b||x:1|zzz|h:|k:|s:|#|");
        assert_eq!(e, ok("_e{1,1}:a|b"));
    }

    #[test]
    fn invalid_utf8_is_not_utf8() {
        assert_eq!(err(b"_e{1,1}:\xff|b"), ParseError::NotUtf8);
        assert_eq!(err(b"_e{1,1}:a|\xc3"), ParseError::NotUtf8);
        assert_eq!(err(b"_e{1,1}:a|b|#t\xff"), ParseError::NotUtf8);
        assert_eq!(ParseError::NotUtf8.reason(), "not_utf8");
    }

    #[test]
    fn control_characters_in_tags() {
        assert_eq!(err(b"_e{1,1}:a|b|#x\0y"), ParseError::BadTags);
    }

    #[test]
    fn through_parse_line_with_carriage_return() {
        let Ok(Line::Event(e)) = parse_line(b"_e{1,1}:a|b|#env:prod\r") else {
            panic!("not an event");
        };
        assert_eq!(e.tags.as_slice(), ["env:prod"]);
        assert_eq!(parse_line(b"_e{1,1}:a|b\r").map(|_| ()), Ok(()));
        // The `\r` is not part of the text, so the lengths still match.
        assert_eq!(parse_line(b"_e{1,2}:a|b\r"), Err(ParseError::BadEvent));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn title_and_text_round_trip(title in "\\PC{1,12}", text in "\\PC{0,12}") {
                let line = format!("_e{{{},{}}}:{title}|{text}|h:x", title.len(), text.len());
                let e = parse_event(line.as_bytes());
                prop_assert_eq!(e.as_ref().map(|e| (e.title, e.text, e.host)), Ok((&title[..], &text[..], Some("x"))));
            }

            #[test]
            fn event_like_bytes_never_panic(
                lens in (0usize..8, 0usize..8),
                rest in prop::collection::vec(prop::sample::select(&b"ab|:#,dhkpst{}\\\xc3\xa9\xff\0"[..]), 0..24),
            ) {
                let line = [format!("_e{{{},{}}}:", lens.0, lens.1).as_bytes(), &rest].concat();
                let _ = parse_line(&line);
            }
        }
    }
}
