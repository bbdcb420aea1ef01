//! Metric lines: `name:value[:value...]|type[|@rate][|#tag,tag:v][|c:container][|T unix_seconds]`.
//!
//! This is the ingest hot path. [`parse_metric`] walks the line left to right, touching each byte
//! about once, borrows every part from the line and never touches the heap (values and tags live
//! in inline [`SmallVec`]s; more than 4 values or 8 tags spill, bounded by the line length).
//! UTF-8 validation runs only over a name, tag section or container id that holds non-ASCII bytes.
//! Checks run in a fixed order — name, type, values, then the sections in the order sent — so a
//! line with several faults always reports the first one.
//!
//! Choices beyond the rules of `docs/protocol.md` (the tests below pin each of them):
//! - no `:` before the first `|` (`foo|c`, `foo`) is `BadName`: there is no name to take;
//!   `foo:1` with no `|` at all is `BadType`;
//! - a set member is raw bytes (any bytes but `|`, not validated as UTF-8), only non-empty;
//! - `|c:` with an empty id is ignored like an empty section; a container id is validated like a
//!   tag (UTF-8, no control characters) because it becomes the tag `container_id:ID`;
//! - every section starting with `T` is a timestamp (`|Tabc` is `BadTimestamp`, not unknown);
//!   leading zeros are accepted, a sign is not.

use smallvec::SmallVec;

use super::{MetricLine, MetricType, ParseError, RawTags, Value};

/// Parses one metric line (no trailing `\n` or `\r`) into a [`MetricLine`] borrowing from it.
///
/// A convenience over [`parse_metric_into`], which the ingest path uses to fill one reused
/// [`MetricLine`] instead of returning a new one per line.
///
/// # Errors
///
/// As [`parse_metric_into`].
pub fn parse_metric(line: &[u8]) -> Result<MetricLine<'_>, ParseError> {
    let mut metric = MetricLine::new();
    parse_metric_into(line, &mut metric)?;
    Ok(metric)
}

/// Parses one metric line (no trailing `\n` or `\r`) into `metric`, overwriting every field.
///
/// `metric` is filled in place: it is ~300 bytes, and returning it by value cost two copies per
/// line, about as much as parsing a short line (`memmove` led the parser's profile; criterion
/// `parse`). Its inline tag and value storage, and any heap storage a long line made it spill to,
/// is reused.
///
/// # Errors
///
/// The first problem found, in the order name ([`ParseError::BadName`]), type
/// ([`ParseError::BadType`]), values ([`ParseError::BadValue`]), then each section as sent
/// ([`ParseError::BadSampleRate`], [`ParseError::BadTags`], [`ParseError::BadTimestamp`]).
/// After an error the contents of `metric` are unspecified (but valid to reuse).
pub fn parse_metric_into<'a>(
    line: &'a [u8],
    metric: &mut MetricLine<'a>,
) -> Result<(), ParseError> {
    let colon = find_name_end(line)?;
    let (name, from_colon) = line.split_at_checked(colon).ok_or(ParseError::BadName)?;
    let after_colon = from_colon.get(1..).unwrap_or_default();
    // The common line, one number and a type (`name:12|c`, then sections or not), in one pass
    // over the value; anything else (several values, a set, any fault) takes the general path,
    // which reports faults in their order.
    if let Some((value, len)) = parse_f64_prefix(after_colon) {
        if let Some(Ok((kind, rest))) = after_colon.get(len..).map(split_type) {
            if kind != MetricType::Set {
                let signed = matches!(after_colon.first(), Some(b'+' | b'-'));
                reset(metric, name, kind);
                match metric.values.as_mut_slice() {
                    [only] => *only = Value { value, signed },
                    _ => {
                        metric.values.clear();
                        metric.values.push(Value { value, signed });
                    }
                }
                return if rest.is_empty() {
                    Ok(())
                } else {
                    parse_sections(line, rest, metric)
                };
            }
        }
    }
    parse_general(line, name, after_colon, metric)
}

/// Sets every field of `metric` but the values to those of a line with no sections.
#[inline(always)]
fn reset<'a>(metric: &mut MetricLine<'a>, name: &'a [u8], kind: MetricType) {
    metric.name = name;
    metric.kind = kind;
    metric.set_member = &[];
    metric.sample_rate = 1.0;
    metric.weight = 1.0;
    if !metric.tags.is_empty() {
        metric.tags.clear();
    }
    metric.container_id = None;
    metric.timestamp = None;
}

/// The values, type and sections of any line, after its name.
#[inline(never)]
fn parse_general<'a>(
    line: &'a [u8],
    name: &'a [u8],
    after_colon: &'a [u8],
    metric: &mut MetricLine<'a>,
) -> Result<(), ParseError> {
    let (values_text, after_values) = split_at_pipe(after_colon);
    let (kind, rest) = split_type(after_values)?;
    reset(metric, name, kind);
    metric.values.clear();
    match kind {
        MetricType::Set => {
            if values_text.is_empty() {
                return Err(ParseError::BadValue);
            }
            metric.set_member = values_text;
        }
        MetricType::Counter
        | MetricType::Gauge
        | MetricType::Timer
        | MetricType::Histogram
        | MetricType::Distribution => parse_values(values_text, &mut metric.values)?,
    }
    parse_sections(line, rest, metric)
}

/// The sections after the type, from `rest` (a suffix of `line`, empty or starting at a `|`).
fn parse_sections<'a>(
    line: &'a [u8],
    mut rest: &'a [u8],
    metric: &mut MetricLine<'a>,
) -> Result<(), ParseError> {
    let mut seen_rate = false;
    // Invariant: `rest` is a suffix of `line`, empty or starting at the `|` that opens the next
    // section; every arm consumes its section and leaves `rest` the same way. The scanners take
    // `line` and a position rather than the suffix: they read eight bytes at a time, and at the
    // end of the line they read its last eight.
    while let [b'|', section @ ..] = rest {
        rest = match section {
            [b'@', text @ ..] => {
                if seen_rate {
                    return Err(ParseError::BadSampleRate);
                }
                seen_rate = true;
                let (rate, after) = parse_sample_rate(text)?;
                metric.sample_rate = rate;
                metric.weight = 1.0 / rate;
                after
            }
            [b'#', text @ ..] => {
                let start = line.len() - text.len();
                let end = parse_tags(line, start, &mut metric.tags)?;
                line.get(end..).unwrap_or_default()
            }
            [b'c', b':', text @ ..] => {
                let start = line.len() - text.len();
                let mut id: &[u8] = &[];
                let end = scan_clean_text(line, start, b'|', |text| id = text)
                    .ok_or(ParseError::BadTags)?;
                // An empty id is ignored like an empty section.
                if !id.is_empty() && metric.container_id.replace(id).is_some() {
                    return Err(ParseError::BadTags);
                }
                line.get(end..).unwrap_or_default()
            }
            [b'T', text @ ..] => {
                let (ts, after) = parse_timestamp(text)?;
                if metric.timestamp.replace(ts).is_some() {
                    return Err(ParseError::BadTimestamp);
                }
                after
            }
            // Empty and unknown sections (`|e:…`, `|card:…`, newer protocol fields) are ignored.
            _ => split_at_pipe(section).1,
        };
    }

    Ok(())
}

/// Splits `s` before its first `|` (the second part is empty or starts with that `|`).
fn split_at_pipe(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s.iter().position(|&b| b == b'|').unwrap_or(s.len());
    s.split_at(end)
}

/// The index of the `:` that ends the name, after checking the name: non-empty, no ASCII
/// control characters, valid UTF-8 (validated only if it holds non-ASCII bytes).
///
/// A `|` before any `:`, or no `:` at all, is `BadName`: there is no value to take a name from.
fn find_name_end(line: &[u8]) -> Result<usize, ParseError> {
    let mut at = 0;
    let mut non_ascii = 0;
    loop {
        let (word, valid) = load_word(line, at);
        let special = special_bytes(word, b':') & valid;
        if special != 0 {
            non_ascii |= word & valid & before_first(special);
            let i = at + first_byte(special);
            let name = line.get(..i).unwrap_or_default();
            if line.get(i) != Some(&b':')
                || name.is_empty()
                || (non_ascii != 0 && std::str::from_utf8(name).is_err())
            {
                return Err(ParseError::BadName);
            }
            return Ok(i);
        }
        if valid != HIGH {
            return Err(ParseError::BadName);
        }
        non_ascii |= word & HIGH;
        at += 8;
    }
}

/// `|type` → the type and the rest (empty or starting with the next `|`).
fn split_type(s: &[u8]) -> Result<(MetricType, &[u8]), ParseError> {
    let (kind, rest) = match s {
        [b'|', b'c', rest @ ..] => (MetricType::Counter, rest),
        [b'|', b'g', rest @ ..] => (MetricType::Gauge, rest),
        [b'|', b'm', b's', rest @ ..] => (MetricType::Timer, rest),
        [b'|', b'h', rest @ ..] => (MetricType::Histogram, rest),
        [b'|', b'd', rest @ ..] => (MetricType::Distribution, rest),
        [b'|', b's', rest @ ..] => (MetricType::Set, rest),
        _ => return Err(ParseError::BadType),
    };
    match rest {
        [] | [b'|', ..] => Ok((kind, rest)),
        _ => Err(ParseError::BadType),
    }
}

/// `v[:v...]` (no `|` in it): every value a finite float, or the whole line is refused.
fn parse_values(mut s: &[u8], values: &mut SmallVec<[Value; 4]>) -> Result<(), ParseError> {
    loop {
        let (value, len) = parse_f64_prefix(s).ok_or(ParseError::BadValue)?;
        let signed = matches!(s.first(), Some(b'+' | b'-'));
        values.push(Value { value, signed });
        match s.get(len..) {
            Some([]) => return Ok(()),
            Some([b':', rest @ ..]) => s = rest,
            _ => return Err(ParseError::BadValue),
        }
    }
}

/// Powers of ten that `f64` holds exactly.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Parses the longest float at the start of `s`: `(value, bytes used)`, `None` if there is none
/// or it is not finite (`inf`, `nan`, `1e999`).
///
/// Statsd values are mostly short decimals (`1`, `12.5`, `-3`), which take Clinger's fast path:
/// at most 15 digits fit exactly in the 53-bit mantissa and 10^0..=10^15 are exact, so an
/// integer converts exactly and one IEEE division by the power of ten is correctly rounded.
/// Integers skip the division: its latency was the largest cost of parsing `x:1|c`. Anything else
/// (exponents, long digit strings, `inf`) goes to `fast_float2`, which gives the same answer for
/// the short ones, just slower (the proptests below compare both with `str::parse`).
#[inline(always)]
fn parse_f64_prefix(s: &[u8]) -> Option<(f64, usize)> {
    let (negative, start) = match s.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let int_part = s.get(start..).unwrap_or_default();
    let (mut mantissa, int_digits) = digits(int_part, 0);
    let mut i = start + int_digits;
    let mut fraction_digits = 0;
    if let Some((b'.', fraction)) = s.get(i..).and_then(<[u8]>::split_first) {
        (mantissa, fraction_digits) = digits(fraction, mantissa);
        i += 1 + fraction_digits;
    }
    let total_digits = int_digits + fraction_digits;
    if !(1..=15).contains(&total_digits) || matches!(s.get(i), Some(b'e' | b'E')) {
        return parse_f64_prefix_slow(s);
    }
    // Lossless: at most 15 decimal digits, below 2^53 (and so in `i64`, whose conversion is one
    // instruction where `u64`'s is several).
    let exact = i64::try_from(mantissa).map_or(f64::NAN, |m| m as f64);
    let magnitude = match EXACT_POWERS_OF_TEN.get(fraction_digits) {
        Some(&scale) if fraction_digits > 0 => exact / scale,
        _ => exact,
    };
    Some((if negative { -magnitude } else { magnitude }, i))
}

/// The ASCII digits at the start of `s` appended to `mantissa` (wrapping: past 15 digits the
/// caller discards the result), and how many there were.
#[inline(always)]
fn digits(s: &[u8], mut mantissa: u64) -> (u64, usize) {
    let mut n = 0;
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
        n += 1;
    }
    (mantissa, n)
}

/// Kept out of line: `fast_float2` needs a large stack frame the fast path should not pay for.
#[cold]
#[inline(never)]
fn parse_f64_prefix_slow(s: &[u8]) -> Option<(f64, usize)> {
    fast_float2::parse_partial::<f64, _>(s)
        .ok()
        .filter(|(v, _)| v.is_finite())
}

/// `@rate` → a rate in (0, 1] and the rest of the line.
fn parse_sample_rate(s: &[u8]) -> Result<(f64, &[u8]), ParseError> {
    let Some((rate, len)) = parse_f64_prefix(s) else {
        return Err(ParseError::BadSampleRate);
    };
    match s.split_at_checked(len) {
        Some((_, rest @ ([] | [b'|', ..]))) if rate > 0.0 && rate <= 1.0 => Ok((rate, rest)),
        _ => Err(ParseError::BadSampleRate),
    }
}

/// `T` seconds: ASCII digits only (no sign, no fraction), fitting `u64`, greater than zero.
fn parse_timestamp(s: &[u8]) -> Result<(u64, &[u8]), ParseError> {
    let mut ts: u64 = 0;
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        // Nineteen digits always fit in a `u64`; only longer (zero-padded) ones need checks.
        ts = if i < 19 {
            ts * 10 + u64::from(d)
        } else {
            ts.checked_mul(10)
                .and_then(|t| t.checked_add(u64::from(d)))
                .ok_or(ParseError::BadTimestamp)?
        };
        i += 1;
    }
    match s.split_at_checked(i) {
        // Zero is refused, and so is the empty `|T`.
        Some((_, rest @ ([] | [b'|', ..]))) if ts > 0 => Ok((ts, rest)),
        _ => Err(ParseError::BadTimestamp),
    }
}

/// Scans text that must be UTF-8 without ASCII control characters (tags, container ids) from
/// `line[start]` up to the next `|` or the end of the line, handing each `sep`-separated piece to
/// `piece`. Returns where the text ends (the index of that `|`, or `line.len()`), `None` if the
/// text is not clean.
///
/// Eight bytes at a time: every separator of a word is handed on from one mask, so a tag
/// section costs about one word operation per eight bytes, however many tags it holds.
fn scan_clean_text<'a>(
    line: &'a [u8],
    start: usize,
    sep: u8,
    mut piece: impl FnMut(&'a [u8]),
) -> Option<usize> {
    let mut at = start;
    let mut piece_start = start;
    let mut non_ascii = 0;
    let end = 'scan: loop {
        let (word, valid) = load_word(line, at);
        let mut special = special_bytes(word, sep) & valid;
        while special != 0 {
            let i = at + first_byte(special);
            match line.get(i) {
                Some(b'|') => {
                    non_ascii |= word & valid & before_first(special);
                    break 'scan i;
                }
                Some(&b) if b == sep => {
                    piece(line.get(piece_start..i)?);
                    piece_start = i + 1;
                }
                // An ASCII control character.
                _ => return None,
            }
            special &= special - 1;
        }
        non_ascii |= word & valid;
        if valid != HIGH {
            break line.len();
        }
        at += 8;
    };
    // The separators are ASCII, so the text is valid UTF-8 exactly when every piece is.
    if non_ascii != 0 && std::str::from_utf8(line.get(start..end)?).is_err() {
        return None;
    }
    piece(line.get(piece_start..end)?);
    Some(end)
}

/// One `#` section from `line[start]`: comma-separated, empty entries dropped, appended to what
/// earlier `#` sections gave. Returns where the section ends.
fn parse_tags<'a>(
    line: &'a [u8],
    start: usize,
    tags: &mut RawTags<'a>,
) -> Result<usize, ParseError> {
    scan_clean_text(line, start, b',', |tag| {
        if !tag.is_empty() {
            tags.push(tag);
        }
    })
    .ok_or(ParseError::BadTags)
}

const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of every byte of a word.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The eight bytes of `line` from `at` as a little-endian word, and the high bits of those of
/// them that are in the line: [`HIGH`] unless the line ends within the eight (0 if `at` is at
/// the end). Bytes past the end read as 0.
///
/// Near the end of the line it reads the line's last eight bytes and shifts off the ones before
/// `at`: a variable-length copy would be a `memcpy` call, and a byte loop several times slower.
#[inline(always)]
fn load_word(line: &[u8], at: usize) -> (u64, u64) {
    if let Some(chunk) = line.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        return (u64::from_le_bytes(*chunk), HIGH);
    }
    let remaining = line.len().saturating_sub(at); // 0..=7 here
    if remaining == 0 {
        return (0, 0);
    }
    let shift = 8 * (8 - remaining); // 8..=56
    if let Some(last) = line.last_chunk::<8>() {
        (u64::from_le_bytes(*last) >> shift, HIGH >> shift)
    } else {
        // A line shorter than eight bytes.
        let mut word = 0;
        for (k, &b) in line.get(at..).unwrap_or_default().iter().enumerate() {
            word |= u64::from(b) << (8 * k);
        }
        (word, HIGH >> shift)
    }
}

/// The high bit of each byte of `x` that is `sep`, `|`, an ASCII control character (NUL..US)
/// or DEL. Non-ASCII bytes are never special (UTF-8 is validated separately).
///
/// SWAR: the ASCII bytes are below 0x80, so adding to or subtracting from each byte never
/// carries or borrows into its neighbour once the high bits are handled.
#[inline(always)]
fn special_bytes(x: u64, sep: u8) -> u64 {
    // The high bit of each byte of `y` (all < 0x80) that is below `n` (≤ 0x80). Setting every
    // high bit first keeps each byte ≥ 0x80 ≥ `n`, so the subtraction never borrows.
    let below = |y: u64, n: u8| !((y | HIGH) - ONES * u64::from(n)) & HIGH;
    let ascii = x & !HIGH;
    let is = |c: u8| below(ascii ^ (ONES * u64::from(c)), 1);
    // c < 0x20 or c == 0x7f exactly when (c + 1) mod 0x80 < 0x21 (each byte + 1 ≤ 0x80).
    let control = below((ascii + ONES) & !HIGH, 0x21);
    // Masking with `!x` drops non-ASCII bytes whose low seven bits look special.
    (control | is(sep) | is(b'|')) & !x
}

/// The index of the byte whose high bit is the lowest set bit of `mask` (non-zero).
#[inline(always)]
fn first_byte(mask: u64) -> usize {
    (mask.trailing_zeros() / 8) as usize
}

/// The high bits of the bytes before the first one marked in `mask` (non-zero).
#[inline(always)]
fn before_first(mask: u64) -> u64 {
    (mask & mask.wrapping_neg()).wrapping_sub(1) & HIGH
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_line, Line};

    fn ok(line: &str) -> MetricLine<'_> {
        match parse_metric(line.as_bytes()) {
            Ok(m) => m,
            Err(e) => panic!("{line:?} refused: {e}"),
        }
    }

    fn err(line: &[u8]) -> ParseError {
        match parse_metric(line) {
            Ok(m) => panic!("{line:?} accepted: {m:?}"),
            Err(e) => e,
        }
    }

    fn values(m: &MetricLine<'_>) -> Vec<f64> {
        m.values.iter().map(|v| v.value).collect()
    }

    fn tags<'a>(m: &MetricLine<'a>) -> Vec<&'a [u8]> {
        m.tags.to_vec()
    }

    // --- the basic shape ---

    #[test]
    fn counter() {
        let m = ok("page.views:1|c");
        assert_eq!(m.name, b"page.views");
        assert_eq!(m.kind, MetricType::Counter);
        assert_eq!(
            m.values.as_slice(),
            &[Value {
                value: 1.0,
                signed: false
            }]
        );
        assert_eq!(m.set_member, b"");
        assert_eq!(m.sample_rate, 1.0);
        assert!(m.tags.is_empty());
        assert_eq!(m.container_id, None);
        assert_eq!(m.timestamp, None);
    }

    #[test]
    fn every_type() {
        for (t, kind) in [
            ("c", MetricType::Counter),
            ("g", MetricType::Gauge),
            ("s", MetricType::Set),
            ("ms", MetricType::Timer),
            ("h", MetricType::Histogram),
            ("d", MetricType::Distribution),
        ] {
            let line = format!("x:1|{t}");
            assert_eq!(ok(&line).kind, kind, "{line}");
            assert_eq!(kind.as_str(), t);
        }
    }

    #[test]
    fn typical_line() {
        let m = ok("api.request.latency:12.5|ms|@0.5|#env:prod,route:/x");
        assert_eq!(m.name, b"api.request.latency");
        assert_eq!(m.kind, MetricType::Timer);
        assert_eq!(values(&m), [12.5]);
        assert_eq!(m.sample_rate, 0.5);
        assert_eq!(tags(&m), [&b"env:prod"[..], b"route:/x"]);
    }

    #[test]
    fn float_forms() {
        assert_eq!(values(&ok("x:1e3|g")), [1000.0]);
        assert_eq!(values(&ok("x:.5|g")), [0.5]);
        assert_eq!(values(&ok("x:5.|g")), [5.0]);
        assert_eq!(values(&ok("x:-0.25|g")), [-0.25]);
        assert_eq!(values(&ok("x:1E-2|h")), [0.01]);
    }

    #[test]
    fn signed_values() {
        let m = ok("x:+3:-2:4|g");
        let signs: Vec<bool> = m.values.iter().map(|v| v.signed).collect();
        assert_eq!(values(&m), [3.0, -2.0, 4.0]);
        assert_eq!(signs, [true, true, false]);
    }

    #[test]
    fn multi_value() {
        assert_eq!(values(&ok("x:1:2:3.5|h")), [1.0, 2.0, 3.5]);
    }

    #[test]
    fn many_values_spill_past_inline_storage() {
        let m = ok("x:1:2:3:4:5:6:7:8:9:10|d");
        assert_eq!(m.values.len(), 10);
        assert_eq!(m.values.last().map(|v| v.value), Some(10.0));
    }

    #[test]
    fn unicode_name_and_tags() {
        let m = ok("größe.ü:1|c|#ключ:значение,日本");
        assert_eq!(m.name, "größe.ü".as_bytes());
        assert_eq!(tags(&m), ["ключ:значение".as_bytes(), "日本".as_bytes()]);
    }

    #[test]
    fn name_with_spaces_and_symbols() {
        assert_eq!(ok("my metric/[x]=y:1|c").name, b"my metric/[x]=y");
    }

    // --- names ---

    #[test]
    fn empty_name() {
        assert_eq!(err(b":1|c"), ParseError::BadName);
    }

    #[test]
    fn nul_in_name() {
        assert_eq!(err(b"a\0b:1|c"), ParseError::BadName);
        assert_eq!(ParseError::BadName.reason(), "bad_name");
    }

    #[test]
    fn control_characters_in_name() {
        for line in [&b"a\tb:1|c"[..], b"a\nb:1|c", b"a\x1bb:1|c", b"a\x7fb:1|c"] {
            assert_eq!(err(line), ParseError::BadName, "{line:?}");
        }
    }

    #[test]
    fn invalid_utf8_in_name() {
        assert_eq!(err(b"a\xffb:1|c"), ParseError::BadName);
        assert_eq!(err(b"a\xc3:1|c"), ParseError::BadName);
    }

    /// With no `:` before the first `|` there is no name/value split at all: reported as a bad
    /// name.
    #[test]
    fn no_value_separator_is_bad_name() {
        assert_eq!(err(b"foo|c"), ParseError::BadName);
        assert_eq!(err(b"foo"), ParseError::BadName);
        assert_eq!(err(b"foo|c:1"), ParseError::BadName);
        assert_eq!(err(b""), ParseError::BadName);
    }

    #[test]
    fn name_is_checked_before_type_and_values() {
        assert_eq!(err(b"\0:x|zz"), ParseError::BadName);
    }

    // --- types ---

    /// A name and value but no `|` at all: the type section is missing.
    #[test]
    fn missing_type_is_bad_type() {
        assert_eq!(err(b"foo:1"), ParseError::BadType);
        assert_eq!(ParseError::BadType.reason(), "bad_type");
    }

    #[test]
    fn empty_type() {
        assert_eq!(err(b"foo:1|"), ParseError::BadType);
        assert_eq!(err(b"foo:1||c"), ParseError::BadType);
    }

    #[test]
    fn unknown_types() {
        for line in [
            "x:1|C",
            "x:1|cc",
            "x:1|m",
            "x:1|msx",
            "x:1|timer",
            "x:1| c",
            "x:1|c ",
        ] {
            assert_eq!(err(line.as_bytes()), ParseError::BadType, "{line}");
        }
    }

    #[test]
    fn type_is_checked_before_values() {
        assert_eq!(err(b"x:abc|zz"), ParseError::BadType);
    }

    // --- values ---

    #[test]
    fn bad_value() {
        assert_eq!(err(b"x:abc|c"), ParseError::BadValue);
        assert_eq!(ParseError::BadValue.reason(), "bad_value");
    }

    #[test]
    fn empty_value() {
        assert_eq!(err(b"x:|c"), ParseError::BadValue);
    }

    #[test]
    fn one_bad_value_invalidates_the_line() {
        assert_eq!(err(b"x:1:x|c"), ParseError::BadValue);
        assert_eq!(err(b"x:1::2|h"), ParseError::BadValue);
        assert_eq!(err(b"x:1:nan|ms"), ParseError::BadValue);
    }

    #[test]
    fn trailing_value_separator() {
        assert_eq!(err(b"x:1:|c"), ParseError::BadValue);
        assert_eq!(err(b"x::1|c"), ParseError::BadValue);
    }

    #[test]
    fn non_finite_values() {
        for v in ["nan", "NaN", "inf", "-inf", "+Infinity", "1e400", "-1e999"] {
            let line = format!("x:{v}|g");
            assert_eq!(err(line.as_bytes()), ParseError::BadValue, "{line}");
        }
    }

    #[test]
    fn malformed_numbers() {
        for v in [
            "0x10", "1_000", " 1", "1 ", "1e", "1e+", "++1", "+-1", "+", "-", ".", "1.5.5", "1,5",
            "infinit",
        ] {
            let line = format!("x:{v}|c");
            assert_eq!(err(line.as_bytes()), ParseError::BadValue, "{line}");
        }
    }

    // --- sets ---

    #[test]
    fn set_member_is_raw() {
        let m = ok("users:alice|s");
        assert_eq!(m.kind, MetricType::Set);
        assert_eq!(m.set_member, b"alice");
        assert!(m.values.is_empty());
    }

    #[test]
    fn set_member_is_never_split_on_colon() {
        let m = ok("ips:10.0.0.1:8080:x|s|#a");
        assert_eq!(m.set_member, b"10.0.0.1:8080:x");
        assert!(m.values.is_empty());
    }

    #[test]
    fn set_member_need_not_be_a_number_or_utf8() {
        assert_eq!(
            parse_metric(b"u:\xff\xfe|s").map(|m| m.set_member),
            Ok(&b"\xff\xfe"[..])
        );
    }

    #[test]
    fn empty_set_member() {
        assert_eq!(err(b"users:|s"), ParseError::BadValue);
    }

    // --- sample rates ---

    #[test]
    fn sample_rate() {
        assert_eq!(ok("x:1|c|@0.1").sample_rate, 0.1);
        assert_eq!(ok("x:1|c|@1").sample_rate, 1.0);
        assert_eq!(ok("x:1|c|@.25").sample_rate, 0.25);
        assert_eq!(ok("x:1|c|@1e-3").sample_rate, 0.001);
    }

    #[test]
    fn sample_rate_out_of_range() {
        for rate in ["0", "0.0", "-0.5", "1.5", "2", "1e-400"] {
            let line = format!("x:1|c|@{rate}");
            assert_eq!(err(line.as_bytes()), ParseError::BadSampleRate, "{line}");
        }
    }

    #[test]
    fn sample_rate_not_a_number() {
        for rate in ["", "nan", "inf", "abc", "0.5x", "0,5", " 0.5"] {
            let line = format!("x:1|c|@{rate}");
            assert_eq!(err(line.as_bytes()), ParseError::BadSampleRate, "{line}");
        }
        assert_eq!(ParseError::BadSampleRate.reason(), "bad_sample_rate");
    }

    #[test]
    fn repeated_sample_rate() {
        assert_eq!(err(b"x:1|c|@0.5|@0.5"), ParseError::BadSampleRate);
        assert_eq!(err(b"x:1|c|@0.5|#a|@1"), ParseError::BadSampleRate);
    }

    // --- tags ---

    #[test]
    fn bare_tag() {
        assert_eq!(tags(&ok("x:1|c|#canary")), [&b"canary"[..]]);
    }

    #[test]
    fn tags_kept_as_sent() {
        // Order, case and duplicates are the aggregator's business.
        let m = ok("x:1|c|#b:2,A:1,b:2");
        assert_eq!(tags(&m), [&b"b:2"[..], b"A:1", b"b:2"]);
    }

    #[test]
    fn tag_values_may_contain_colons_and_specials() {
        let m = ok("x:1|c|#url:http://h:80/p?q=1,@x,#y");
        assert_eq!(tags(&m), [&b"url:http://h:80/p?q=1"[..], b"@x", b"#y"]);
    }

    #[test]
    fn empty_tags_are_dropped() {
        assert_eq!(tags(&ok("x:1|c|#,a,,b,")), [&b"a"[..], b"b"]);
    }

    #[test]
    fn empty_tag_section_means_no_tags() {
        assert!(ok("x:1|c|#").tags.is_empty());
        assert!(ok("x:1|c|#,,").tags.is_empty());
    }

    #[test]
    fn repeated_tag_sections_are_concatenated() {
        let m = ok("x:1|c|#a,b|@0.5|#c|#|#d");
        assert_eq!(tags(&m), [&b"a"[..], b"b", b"c", b"d"]);
    }

    #[test]
    fn many_tags_spill_past_inline_storage() {
        let m = ok("x:1|c|#t1,t2,t3,t4,t5,t6,t7,t8,t9,t10");
        assert_eq!(m.tags.len(), 10);
        assert_eq!(m.tags.last(), Some(&&b"t10"[..]));
    }

    #[test]
    fn invalid_utf8_in_tags() {
        assert_eq!(err(b"x:1|c|#a,b\xff"), ParseError::BadTags);
        assert_eq!(ParseError::BadTags.reason(), "bad_tags");
    }

    #[test]
    fn control_characters_in_tags() {
        assert_eq!(err(b"x:1|c|#a\0b"), ParseError::BadTags);
        assert_eq!(err(b"x:1|c|#a,\tb"), ParseError::BadTags);
        assert_eq!(err(b"x:1|c|#a\x7f"), ParseError::BadTags);
    }

    // --- container ids ---

    #[test]
    fn container_id() {
        let m = ok("x:1|c|c:abc123|#a");
        assert_eq!(m.container_id, Some(&b"abc123"[..]));
        assert_eq!(tags(&m), [&b"a"[..]]);
    }

    #[test]
    fn repeated_container_id() {
        assert_eq!(err(b"x:1|c|c:a|c:b"), ParseError::BadTags);
        assert_eq!(err(b"x:1|c|c:a|c:a"), ParseError::BadTags);
    }

    /// `|c:` with nothing after it is treated as an empty section: ignored, and not a repeat.
    #[test]
    fn empty_container_id_is_ignored() {
        assert_eq!(ok("x:1|c|c:").container_id, None);
        assert_eq!(ok("x:1|c|c:|c:abc").container_id, Some(&b"abc"[..]));
    }

    #[test]
    fn bad_container_id() {
        assert_eq!(err(b"x:1|c|c:a\0b"), ParseError::BadTags);
        assert_eq!(err(b"x:1|c|c:\xff"), ParseError::BadTags);
    }

    // --- timestamps ---

    #[test]
    fn timestamp() {
        assert_eq!(ok("x:1|g|T1763775000").timestamp, Some(1_763_775_000));
        assert_eq!(ok("x:1|c|T007").timestamp, Some(7));
        assert_eq!(ok("x:1|c|T18446744073709551615").timestamp, Some(u64::MAX));
    }

    #[test]
    fn timestamp_is_parsed_for_every_type() {
        for t in ["c", "g", "s", "ms", "h", "d"] {
            let line = format!("x:1|{t}|T1700000000");
            assert_eq!(ok(&line).timestamp, Some(1_700_000_000), "{line}");
        }
    }

    #[test]
    fn bad_timestamps() {
        for ts in [
            "",
            "0",
            "000",
            "-1",
            "+5",
            "1.5",
            "abc",
            "1e9",
            " 1",
            "18446744073709551616",
        ] {
            let line = format!("x:1|c|T{ts}");
            assert_eq!(err(line.as_bytes()), ParseError::BadTimestamp, "{line}");
        }
        assert_eq!(ParseError::BadTimestamp.reason(), "bad_timestamp");
    }

    #[test]
    fn repeated_timestamp() {
        assert_eq!(err(b"x:1|c|T1|T1"), ParseError::BadTimestamp);
    }

    // --- section handling ---

    #[test]
    fn sections_in_any_order() {
        let a = ok("x:1|c|@0.5|#a,b|c:id|T99");
        for line in [
            "x:1|c|T99|c:id|#a,b|@0.5",
            "x:1|c|#a,b|T99|@0.5|c:id",
            "x:1|c|c:id|@0.5|T99|#a,b",
        ] {
            assert_eq!(ok(line), a, "{line}");
        }
    }

    #[test]
    fn empty_sections_are_ignored() {
        assert_eq!(ok("x:1|c|"), ok("x:1|c"));
        assert_eq!(ok("x:1|c||"), ok("x:1|c"));
        assert_eq!(ok("x:1|c||@0.5||#a|"), ok("x:1|c|@0.5|#a"));
    }

    #[test]
    fn unknown_sections_are_ignored() {
        let m = ok("x:1|c|e:external-data|card:high|#a|zzz|x:1:2|@0.5|ms");
        assert_eq!(m.kind, MetricType::Counter);
        assert_eq!(tags(&m), [&b"a"[..]]);
        assert_eq!(m.sample_rate, 0.5);
        assert_eq!(m.container_id, None);
    }

    #[test]
    fn sections_are_checked_in_order_sent() {
        assert_eq!(err(b"x:1|c|T0|@2"), ParseError::BadTimestamp);
        assert_eq!(err(b"x:1|c|@2|T0"), ParseError::BadSampleRate);
    }

    #[test]
    fn values_are_checked_before_sections() {
        assert_eq!(err(b"x:y|c|@2"), ParseError::BadValue);
    }

    // --- through parse_line ---

    #[test]
    fn trailing_carriage_return_via_parse_line() {
        let Ok(Line::Metric(m)) = parse_line(b"x:1|c|#env:prod\r") else {
            panic!("not a metric");
        };
        assert_eq!(tags(&m), [&b"env:prod"[..]]);
        let Ok(Line::Metric(m)) = parse_line(b"x:1|ms\r") else {
            panic!("not a metric");
        };
        assert_eq!(m.kind, MetricType::Timer);
    }

    #[test]
    fn only_one_carriage_return_is_stripped() {
        assert_eq!(parse_line(b"x:1|c\r\r"), Err(ParseError::BadType));
        assert_eq!(parse_line(b"x:1|c|#a\r\r"), Err(ParseError::BadTags));
    }

    #[test]
    fn parse_line_routes_metrics() {
        assert!(matches!(parse_line(b"_e:1|c"), Ok(Line::Metric(_))));
        assert!(matches!(parse_line(b"_sc:1|c"), Ok(Line::Metric(_))));
    }

    // --- properties ---

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// What the naive reference parser returns: owned, so it can be compared with anything.
        #[derive(Debug, PartialEq)]
        struct Expected {
            name: Vec<u8>,
            kind: MetricType,
            values: Vec<(f64, bool)>,
            set_member: Vec<u8>,
            sample_rate: f64,
            tags: Vec<Vec<u8>>,
            container_id: Option<Vec<u8>>,
            timestamp: Option<u64>,
        }

        fn owned(m: &MetricLine<'_>) -> Expected {
            // The weight is derived, and must be so for every line (reused targets included).
            assert_eq!(m.weight.to_bits(), (1.0 / m.sample_rate).to_bits());
            Expected {
                name: m.name.to_vec(),
                kind: m.kind,
                values: m.values.iter().map(|v| (v.value, v.signed)).collect(),
                set_member: m.set_member.to_vec(),
                sample_rate: m.sample_rate,
                tags: m.tags.iter().map(|t| t.to_vec()).collect(),
                container_id: m.container_id.map(<[u8]>::to_vec),
                timestamp: m.timestamp,
            }
        }

        fn clean(s: &[u8]) -> bool {
            std::str::from_utf8(s).is_ok() && !s.iter().any(|b| b.is_ascii_control())
        }

        /// The rules of `docs/protocol.md` written the obvious way: split everything, `str::parse`.
        fn naive(line: &[u8]) -> Result<Expected, ParseError> {
            use ParseError::*;
            let fields: Vec<&[u8]> = line.split(|&b| b == b'|').collect();
            let head = fields[0];
            let colon = head.iter().position(|&b| b == b':').ok_or(BadName)?;
            let (name, values_text) = (&head[..colon], &head[colon + 1..]);
            if name.is_empty() || !clean(name) {
                return Err(BadName);
            }
            let kind = match fields.get(1).copied() {
                Some(b"c") => MetricType::Counter,
                Some(b"g") => MetricType::Gauge,
                Some(b"s") => MetricType::Set,
                Some(b"ms") => MetricType::Timer,
                Some(b"h") => MetricType::Histogram,
                Some(b"d") => MetricType::Distribution,
                _ => return Err(BadType),
            };
            let mut out = Expected {
                name: name.to_vec(),
                kind,
                values: vec![],
                set_member: vec![],
                sample_rate: 1.0,
                tags: vec![],
                container_id: None,
                timestamp: None,
            };
            if kind == MetricType::Set {
                if values_text.is_empty() {
                    return Err(BadValue);
                }
                out.set_member = values_text.to_vec();
            } else {
                for v in values_text.split(|&b| b == b':') {
                    let s = std::str::from_utf8(v).map_err(|_| BadValue)?;
                    let f: f64 = s.parse().map_err(|_| BadValue)?;
                    if !f.is_finite() {
                        return Err(BadValue);
                    }
                    out.values
                        .push((f, s.starts_with('+') || s.starts_with('-')));
                }
            }
            let mut rate_seen = false;
            for sec in fields.iter().skip(2) {
                if sec.is_empty() {
                    continue;
                }
                if sec[0] == b'@' {
                    if rate_seen {
                        return Err(BadSampleRate);
                    }
                    rate_seen = true;
                    let s = std::str::from_utf8(&sec[1..]).map_err(|_| BadSampleRate)?;
                    let r: f64 = s.parse().map_err(|_| BadSampleRate)?;
                    if !(r > 0.0 && r <= 1.0) {
                        return Err(BadSampleRate);
                    }
                    out.sample_rate = r;
                } else if sec[0] == b'#' {
                    if !clean(&sec[1..]) {
                        return Err(BadTags);
                    }
                    for t in sec[1..].split(|&b| b == b',') {
                        if !t.is_empty() {
                            out.tags.push(t.to_vec());
                        }
                    }
                } else if sec.starts_with(b"c:") {
                    let id = &sec[2..];
                    if id.is_empty() {
                        continue;
                    }
                    if out.container_id.is_some() || !clean(id) {
                        return Err(BadTags);
                    }
                    out.container_id = Some(id.to_vec());
                } else if sec[0] == b'T' {
                    let digits = &sec[1..];
                    if out.timestamp.is_some() || !digits.iter().all(u8::is_ascii_digit) {
                        return Err(BadTimestamp);
                    }
                    let s = std::str::from_utf8(digits).map_err(|_| BadTimestamp)?;
                    match s.parse::<u64>() {
                        Ok(ts) if ts > 0 => out.timestamp = Some(ts),
                        _ => return Err(BadTimestamp),
                    }
                }
            }
            Ok(out)
        }

        /// Bytes that matter to the grammar, plus a few that must be refused, so random lines
        /// reach every branch instead of failing at the name.
        const ALPHABET: &[u8] = b"ab:|@#,cT_e{}s.0159-+nE\0\r\xff\xc3\xa9";

        fn grammar_soup() -> impl Strategy<Value = Vec<u8>> {
            let prefix = prop::sample::select(vec![&b""[..], b"a:1|c|", b"a:", b"_e{", b"_sc|"]);
            (
                prefix,
                prop::collection::vec(prop::sample::select(ALPHABET), 0..40),
            )
                .prop_map(|(p, rest)| [p, &rest[..]].concat())
        }

        fn value_text() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i32>().prop_map(|v| v.to_string()),
                (-1e12f64..1e12).prop_map(|v| v.to_string()),
                any::<f64>()
                    .prop_filter("finite", |v| v.is_finite())
                    .prop_map(|v| format!("{v:e}")),
                (0u32..1000).prop_map(|v| format!("+{v}")),
            ]
        }

        fn tag() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z_]{1,8}",
                "[a-z_]{1,8}:[a-zA-Z0-9/.:-]{0,10}",
                "\\PC{1,4}".prop_filter("no separators", |s| !s.contains(['|', ',', '\u{7f}'])),
            ]
        }

        /// A valid line and what it must parse to.
        fn valid_line() -> impl Strategy<Value = (String, Expected)> {
            let kinds = prop::sample::select(MetricType::ALL.to_vec());
            (
                "[a-zA-Z_][a-zA-Z0-9_.\\-é]{0,20}",
                kinds,
                prop::collection::vec(value_text(), 1..5),
                "[a-zA-Z0-9.:=/]{1,12}",
                prop::option::of((1u32..=1000).prop_map(|r| f64::from(r) / 1000.0)),
                prop::collection::vec(prop::collection::vec(tag(), 0..4), 0..3),
                prop::option::of("[0-9a-f]{1,16}"),
                prop::option::of(1u64..=u64::MAX),
                prop::collection::vec("(e:[a-z]{0,4}|card:[a-z]{0,4}|)", 0..3),
                prop::collection::vec(any::<(prop::sample::Index, prop::sample::Index)>(), 0..6),
            )
                .prop_map(
                    |(name, kind, vals, member, rate, tag_sections, cid, ts, junk, swaps)| {
                        // Each section with the tags it carries, so the expected tags follow the
                        // shuffled order.
                        let mut sections: Vec<(String, Vec<String>)> = Vec::new();
                        if let Some(r) = rate {
                            sections.push((format!("@{r}"), vec![]));
                        }
                        for tags in tag_sections {
                            sections.push((format!("#{}", tags.join(",")), tags));
                        }
                        if let Some(c) = &cid {
                            sections.push((format!("c:{c}"), vec![]));
                        }
                        if let Some(t) = ts {
                            sections.push((format!("T{t}"), vec![]));
                        }
                        sections.extend(junk.into_iter().map(|j| (j, vec![])));
                        let n = sections.len();
                        if n > 0 {
                            for (i, j) in &swaps {
                                sections.swap(i.index(n), j.index(n));
                            }
                        }
                        let is_set = kind == MetricType::Set;
                        let body = if is_set {
                            member.clone()
                        } else {
                            vals.join(":")
                        };
                        let mut line = format!("{name}:{body}|{}", kind.as_str());
                        for (s, _) in &sections {
                            line.push('|');
                            line.push_str(s);
                        }
                        let expected = Expected {
                            name: name.into_bytes(),
                            kind,
                            values: if is_set {
                                vec![]
                            } else {
                                vals.iter()
                                    .map(|v| (v.parse().unwrap(), v.starts_with(['+', '-'])))
                                    .collect()
                            },
                            set_member: if is_set { member.into_bytes() } else { vec![] },
                            sample_rate: rate.unwrap_or(1.0),
                            tags: sections
                                .into_iter()
                                .flat_map(|(_, tags)| tags)
                                .map(String::into_bytes)
                                .collect(),
                            container_id: cid.map(String::into_bytes),
                            timestamp: ts,
                        };
                        (line, expected)
                    },
                )
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(line in prop::collection::vec(any::<u8>(), 0..200)) {
                let _ = parse_line(&line);
                prop_assert_eq!(parse_metric(&line).map(|m| owned(&m)), naive(&line));
            }

            #[test]
            fn grammar_soup_matches_naive_parser(line in grammar_soup()) {
                let _ = parse_line(&line);
                prop_assert_eq!(parse_metric(&line).map(|m| owned(&m)), naive(&line));
            }

            /// One `MetricLine` filled by line after line (as the ingest path does) holds
            /// exactly what a fresh one would: nothing of an earlier line (its tags, values,
            /// rate, spilled storage) survives into a later one.
            #[test]
            fn reused_metric_line_matches_fresh(
                lines in prop::collection::vec(
                    prop_oneof![grammar_soup(), valid_line().prop_map(|(l, _)| l.into_bytes())],
                    1..6,
                ),
            ) {
                let mut reused = MetricLine::new();
                for line in &lines {
                    let fresh = parse_metric(line).map(|m| owned(&m));
                    let into = parse_metric_into(line, &mut reused).map(|()| owned(&reused));
                    prop_assert_eq!(into, fresh);
                }
            }

            #[test]
            fn decimal_fast_path_is_exact(s in "[+-]?[0-9]{0,16}(\\.[0-9]{0,24})?") {
                let expected = s.parse::<f64>().ok().map(|v| (v.to_bits(), s.len()));
                let parsed = parse_f64_prefix(s.as_bytes()).map(|(v, len)| (v.to_bits(), len));
                prop_assert_eq!(parsed, expected);
            }

            #[test]
            fn float_prefix_matches_the_general_parser(
                s in "[+-]?([0-9]{0,20}(\\.[0-9]{0,20})?([eE][+-]?[0-9]{0,4})?|inf|nan|infinity)[.:|a-z0-9]{0,3}",
            ) {
                // The previous parser: `fast_float2` for everything, non-finite refused.
                let reference = fast_float2::parse_partial::<f64, _>(s.as_bytes())
                    .ok()
                    .filter(|(v, _)| v.is_finite())
                    .map(|(v, len)| (v.to_bits(), len));
                let parsed = parse_f64_prefix(s.as_bytes()).map(|(v, len)| (v.to_bits(), len));
                prop_assert_eq!(parsed, reference);
                // And where the whole text is a number, `str::parse` agrees.
                if let Some((bits, len)) = parsed {
                    if len == s.len() {
                        prop_assert_eq!(s.parse::<f64>().map(f64::to_bits), Ok(bits));
                    }
                }
            }

            #[test]
            fn float_prefix_of_formatted_floats(v in any::<f64>(), exp in any::<bool>()) {
                let s = if exp { format!("{v:e}") } else { v.to_string() };
                let expected = s.parse::<f64>().ok().filter(|v| v.is_finite());
                let parsed = parse_f64_prefix(s.as_bytes());
                prop_assert_eq!(parsed.map(|(v, _)| v.to_bits()), expected.map(f64::to_bits));
                if parsed.is_some() {
                    prop_assert_eq!(parsed.map(|(_, len)| len), Some(s.len()));
                }
            }

            #[test]
            fn scan_clean_text_matches_a_byte_loop(
                line in prop::collection::vec(
                    prop_oneof![8 => b'a'..=b'z', 2 => prop::sample::select(b",|:".to_vec()), 1 => any::<u8>()],
                    0..40,
                ),
                start in any::<prop::sample::Index>(),
                sep in prop::sample::select(vec![b',', b'|']),
            ) {
                let start = start.index(line.len() + 1);
                // The obvious way: find the end, check the text, split it.
                let expected = {
                    let text = &line[start..];
                    let end = start + text.iter().position(|&b| b == b'|').unwrap_or(text.len());
                    let text = &line[start..end];
                    let clean = std::str::from_utf8(text).is_ok()
                        && !text.iter().any(|b| b.is_ascii_control());
                    clean.then(|| (text.split(|&b| b == sep).map(<[u8]>::to_vec).collect::<Vec<_>>(), end))
                };
                let mut pieces = Vec::new();
                let end = scan_clean_text(&line, start, sep, |p| pieces.push(p.to_vec()));
                prop_assert_eq!(end.map(|end| (pieces, end)), expected);
            }

            #[test]
            fn name_end_matches_a_byte_loop(
                line in prop::collection::vec(
                    prop_oneof![8 => b'a'..=b'z', 1 => prop::sample::select(b":|".to_vec()), 1 => any::<u8>()],
                    0..40,
                ),
            ) {
                let expected = match line.iter().position(|&b| b == b':' || b == b'|') {
                    Some(i) if line[i] == b':'
                        && i > 0
                        && std::str::from_utf8(&line[..i]).is_ok()
                        && !line[..i].iter().any(|b| b.is_ascii_control()) => Ok(i),
                    _ => Err(ParseError::BadName),
                };
                prop_assert_eq!(find_name_end(&line), expected);
            }

            #[test]
            fn valid_lines_round_trip((line, expected) in valid_line()) {
                let parsed = parse_metric(line.as_bytes()).map(|m| owned(&m));
                prop_assert_eq!(&parsed, &naive(line.as_bytes()));
                prop_assert_eq!(parsed, Ok(expected));
            }
        }
    }
}
