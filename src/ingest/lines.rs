//! Framing: the one place bytes become lines, for every transport. A datagram (UDP, Unix) or a
//! TCP read holds lines separated by `\n`; each complete line goes to the reader's
//! [`Ingestor`], which parses and batches it. Nothing here knows the statsd grammar.

use crate::aggregate::Ingestor;
use crate::protocol::{MetricLine, ParseError};

/// Calls `line` with each `\n`-terminated line of `data` (without its `\n`) and returns what
/// follows the last `\n`: an unterminated tail, empty when `data` ends with a newline.
#[inline(always)]
pub fn for_each_line<'a>(data: &'a [u8], mut line: impl FnMut(&'a [u8])) -> &'a [u8] {
    let mut rest = data;
    while let Some(i) = find_newline(rest) {
        let (head, tail) = rest.split_at(i);
        line(head);
        rest = tail.get(1..).unwrap_or_default();
    }
    rest
}

/// Ingests one datagram: every line, including an unterminated last one. `truncated` says the
/// datagram was cut by the size limit: its last, incomplete line is counted as `truncated`
/// instead, the complete lines before it are kept.
#[inline]
pub fn ingest_datagram(ingestor: &mut Ingestor, data: &[u8], truncated: bool) {
    ingest_lines(ingestor, data, truncated, None);
}

/// [`ingest_datagram`] for a datagram whose sender's container is known (`origin`, from origin
/// detection): its lines without their own `|c:ID` get `origin` as their container id (events
/// and service checks without a `container_id:` tag, that tag).
#[inline]
pub fn ingest_datagram_from(ingestor: &mut Ingestor, data: &[u8], truncated: bool, origin: &[u8]) {
    ingest_lines(ingestor, data, truncated, Some(origin));
}

/// Both of the above: `origin` is set once per datagram, in the line's parse target.
#[inline(always)]
fn ingest_lines(ingestor: &mut Ingestor, data: &[u8], truncated: bool, origin: Option<&[u8]>) {
    ingestor.count_packet();
    // One parse target for every line of the datagram: filled in place, never moved.
    let mut metric = MetricLine::new();
    metric.origin = origin;
    let tail = for_each_line(data, |line| ingestor.ingest_line_into(line, &mut metric));
    if tail.is_empty() {
        return;
    }
    if truncated {
        ingestor.count_refused_line(ParseError::Truncated);
    } else {
        ingestor.ingest_line_into(tail, &mut metric);
    }
}

/// The index of the first `\n` in `s`, eight bytes at a time, inline.
///
/// Statsd lines are short (20–60 bytes): `memchr` is a call through a function pointer whose
/// vector set-up costs more than such a line's few words (`benches/ingest_loop.rs`).
#[inline(always)]
pub fn find_newline(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = ONES * b'\n' as u64;
    let mut at = 0;
    while let Some(chunk) = s.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let x = u64::from_le_bytes(*chunk) ^ NL;
        // The high bit of the first zero byte of `x` is the lowest one set (bytes above a
        // zero byte may be marked too, through the borrow; they come later).
        let zero = x.wrapping_sub(ONES) & !x & HIGH;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    s.get(at..)?
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_newline_matches_a_byte_search() {
        // Bytes next to `\n` in value (0x0b, 0x09, 0x8a) and zero, in every position.
        let alphabet = [b'a', b'\n', 0x0b, 0x09, 0x8a, 0, b'|'];
        let mut state = 7u32;
        for len in 0..40 {
            for _ in 0..200 {
                let s: Vec<u8> = (0..len)
                    .map(|_| {
                        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        alphabet[(state >> 16) as usize % alphabet.len()]
                    })
                    .collect();
                assert_eq!(
                    find_newline(&s),
                    s.iter().position(|&b| b == b'\n'),
                    "{s:?}"
                );
            }
        }
    }

    fn split(data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
        let mut lines = Vec::new();
        let tail = for_each_line(data, |l| lines.push(l));
        (lines, tail)
    }

    #[test]
    fn lines_and_tail() {
        assert_eq!(split(b""), (vec![], &b""[..]));
        assert_eq!(split(b"a:1|c"), (vec![], &b"a:1|c"[..]));
        assert_eq!(split(b"a:1|c\n"), (vec![&b"a:1|c"[..]], &b""[..]));
        assert_eq!(
            split(b"a\n\nb\nc"),
            (vec![&b"a"[..], &b""[..], &b"b"[..]], &b"c"[..])
        );
    }
}
