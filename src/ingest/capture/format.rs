//! The capture file format (`docs/capture.md`), version 1: pure encoding and decoding, no I/O
//! beyond the `Read` the decoder is given.
//!
//! ```text
//! header   "METERDCAP"  u16 version  u64 start (unix ns)
//! record   u8 kind (1 udp, 2 unix, 3 tcp, 4 tcp_tls)  u8 flags (bit 0: cut by the receiver)
//!          u64 offset (ns since start)  u16 origin length, origin  u32 payload length, payload
//! trailer  u8 0xFF  u64 offset (ns since start)  u64 records  u64 dropped  u8 end reason
//! ```
//!
//! Every integer is little-endian. A file ends with its trailer; a file without one was cut
//! short (the reader reports it), and a record cut in the middle is reported and ignored.

use std::io::{self, Read};

/// The first bytes of every capture file.
pub const MAGIC: &[u8; 9] = b"METERDCAP";
/// The version this build writes and reads.
pub const VERSION: u16 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = MAGIC.len() + 2 + 8;
/// Bytes of the trailer.
pub const TRAILER_LEN: usize = 1 + 8 + 8 + 8 + 1;
/// Largest payload a reader accepts: more than any datagram or TCP read meterd captures, so a
/// larger length means a corrupt file (and is refused before anything is allocated for it).
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;
/// The kind byte of the trailer.
const TRAILER_KIND: u8 = 0xFF;
/// Flag bit: the receiver cut the datagram at `max_datagram_bytes` (its last line was refused).
const FLAG_TRUNCATED: u8 = 1;

/// The transport a record arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A UDP datagram.
    Udp,
    /// A Unix datagram.
    Unix,
    /// The complete lines of one TCP read.
    Tcp,
    /// The complete lines of one read of a TCP connection over TLS.
    TcpTls,
}

impl Transport {
    const fn code(self) -> u8 {
        match self {
            Transport::Udp => 1,
            Transport::Unix => 2,
            Transport::Tcp => 3,
            Transport::TcpTls => 4,
        }
    }

    const fn from_code(c: u8) -> Option<Transport> {
        match c {
            1 => Some(Transport::Udp),
            2 => Some(Transport::Unix),
            3 => Some(Transport::Tcp),
            4 => Some(Transport::TcpTls),
            _ => None,
        }
    }

    /// The transport's name, as meterd's logs and config write it.
    pub const fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Unix => "unix",
            Transport::Tcp => "tcp",
            Transport::TcpTls => "tcp_tls",
        }
    }
}

/// One captured datagram (or TCP read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Where it arrived.
    pub transport: Transport,
    /// The receiver cut it at its size limit: its last, incomplete line was refused.
    pub truncated: bool,
    /// Arrival, nanoseconds since the capture's start.
    pub offset_ns: u64,
    /// The sender's origin (container id) where known; empty otherwise.
    pub origin: Vec<u8>,
    /// The bytes as received.
    pub payload: Vec<u8>,
}

/// Why a capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its duration passed.
    Deadline,
    /// The next record would have passed the size bound.
    MaxBytes,
    /// meterd shut down.
    Shutdown,
    /// A reason this build does not know (a newer writer).
    Other(u8),
}

impl EndReason {
    const fn code(self) -> u8 {
        match self {
            EndReason::Deadline => 1,
            EndReason::MaxBytes => 2,
            EndReason::Shutdown => 3,
            EndReason::Other(c) => c,
        }
    }

    const fn from_code(c: u8) -> EndReason {
        match c {
            1 => EndReason::Deadline,
            2 => EndReason::MaxBytes,
            3 => EndReason::Shutdown,
            c => EndReason::Other(c),
        }
    }

    /// A short name for people.
    pub const fn name(self) -> &'static str {
        match self {
            EndReason::Deadline => "duration reached",
            EndReason::MaxBytes => "size bound reached",
            EndReason::Shutdown => "meterd shut down",
            EndReason::Other(_) => "unknown reason",
        }
    }
}

/// The last item of a complete capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// When the capture ended, nanoseconds since its start.
    pub offset_ns: u64,
    /// Records written before the trailer.
    pub records: u64,
    /// Datagrams (and TCP reads) the capture could not keep up with and left out.
    pub dropped: u64,
    /// Why it ended.
    pub reason: EndReason,
}

/// Why a capture file cannot be read (further).
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file does not start with the magic bytes.
    #[error("not a meterd capture file (no METERDCAP header)")]
    BadMagic,
    /// A version this build cannot read.
    #[error("capture format version {0} is not supported (this meterd reads version {VERSION})")]
    UnsupportedVersion(u16),
    /// The file ends inside the header or a record.
    #[error("the file ends inside a record at byte {0} (cut short); the rest is ignored")]
    Truncated(u64),
    /// A byte that starts no known record.
    #[error("unknown record kind {kind} at byte {at} (corrupt file)")]
    UnknownKind {
        /// The byte.
        kind: u8,
        /// Its position in the file.
        at: u64,
    },
    /// A payload length beyond [`MAX_PAYLOAD`].
    #[error("record at byte {at} claims {len} payload bytes (corrupt file)")]
    TooLarge {
        /// Where the record starts.
        at: u64,
        /// The length it claims.
        len: u64,
    },
    /// Reading failed.
    #[error("cannot read: {0}")]
    Io(#[from] io::Error),
}

/// Appends the header for a capture started at `start_unix_ns`.
pub fn encode_header(out: &mut Vec<u8>, start_unix_ns: u64) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&start_unix_ns.to_le_bytes());
}

/// Bytes [`encode_record`] appends for a record with these lengths.
pub const fn record_len(origin: usize, payload: usize) -> usize {
    1 + 1 + 8 + 2 + origin + 4 + payload
}

/// Appends one record. An origin longer than `u16::MAX` bytes is cut to that length; a payload
/// is never longer than [`MAX_PAYLOAD`] (the capture's sources are far smaller), and is cut to
/// it if one were.
pub fn encode_record(out: &mut Vec<u8>, r: &Record) {
    let origin = r.origin.get(..usize::from(u16::MAX)).unwrap_or(&r.origin);
    let payload = r.payload.get(..MAX_PAYLOAD).unwrap_or(&r.payload);
    out.push(r.transport.code());
    out.push(if r.truncated { FLAG_TRUNCATED } else { 0 });
    out.extend_from_slice(&r.offset_ns.to_le_bytes());
    out.extend_from_slice(
        &u16::try_from(origin.len())
            .unwrap_or(u16::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(origin);
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(payload);
}

/// Appends the trailer.
pub fn encode_trailer(out: &mut Vec<u8>, t: &Trailer) {
    out.push(TRAILER_KIND);
    out.extend_from_slice(&t.offset_ns.to_le_bytes());
    out.extend_from_slice(&t.records.to_le_bytes());
    out.extend_from_slice(&t.dropped.to_le_bytes());
    out.push(t.reason.code());
}

/// One item of a capture file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A captured datagram or TCP read.
    Record(Record),
    /// The end of a complete capture.
    Trailer(Trailer),
}

/// Reads a capture file item by item.
pub struct Decoder<R> {
    input: R,
    /// Bytes consumed so far (for error positions).
    at: u64,
    /// When the capture started, unix nanoseconds.
    pub start_unix_ns: u64,
    done: bool,
}

impl<R: Read> Decoder<R> {
    /// Reads and checks the header.
    pub fn new(mut input: R) -> Result<Decoder<R>, FormatError> {
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut input, &mut header)?;
        if got < MAGIC.len() || header.get(..MAGIC.len()) != Some(&MAGIC[..]) {
            return Err(FormatError::BadMagic);
        }
        if got < HEADER_LEN {
            return Err(FormatError::Truncated(0));
        }
        let mut h = Cursor(header.get(MAGIC.len()..).unwrap_or_default());
        let version = h.u16();
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        Ok(Decoder {
            input,
            at: HEADER_LEN as u64,
            start_unix_ns: h.u64(),
            done: false,
        })
    }

    /// The next item; `Ok(None)` at the end of the file or after the trailer. After an error,
    /// every later call returns `Ok(None)`.
    pub fn next_item(&mut self) -> Result<Option<Item>, FormatError> {
        if self.done {
            return Ok(None);
        }
        let item = self.read_item();
        if !matches!(item, Ok(Some(Item::Record(_)))) {
            self.done = true;
        }
        item
    }

    fn read_item(&mut self) -> Result<Option<Item>, FormatError> {
        let start = self.at;
        let mut kind = [0u8; 1];
        if self.read(&mut kind)? == 0 {
            return Ok(None);
        }
        let [kind] = kind;
        if kind == TRAILER_KIND {
            let mut b = [0u8; TRAILER_LEN - 1];
            self.read_exact(&mut b, start)?;
            let mut c = Cursor(&b);
            return Ok(Some(Item::Trailer(Trailer {
                offset_ns: c.u64(),
                records: c.u64(),
                dropped: c.u64(),
                reason: EndReason::from_code(c.u8()),
            })));
        }
        let Some(transport) = Transport::from_code(kind) else {
            return Err(FormatError::UnknownKind { kind, at: start });
        };
        let mut fixed = [0u8; 1 + 8 + 2];
        self.read_exact(&mut fixed, start)?;
        let mut c = Cursor(&fixed);
        let flags = c.u8();
        let offset_ns = c.u64();
        let mut origin = vec![0u8; usize::from(c.u16())];
        self.read_exact(&mut origin, start)?;
        let mut len = [0u8; 4];
        self.read_exact(&mut len, start)?;
        let len = u32::from_le_bytes(len);
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= MAX_PAYLOAD)
            .ok_or(FormatError::TooLarge {
                at: start,
                len: u64::from(len),
            })?;
        let mut payload = vec![0u8; len];
        self.read_exact(&mut payload, start)?;
        Ok(Some(Item::Record(Record {
            transport,
            truncated: flags & FLAG_TRUNCATED != 0,
            offset_ns,
            origin,
            payload,
        })))
    }

    /// Fills `buf` as far as the input goes; returns how much was read.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, FormatError> {
        let n = read_full(&mut self.input, buf)?;
        self.at += n as u64;
        Ok(n)
    }

    /// Fills `buf` or reports the record starting at `start` as cut short.
    fn read_exact(&mut self, buf: &mut [u8], start: u64) -> Result<(), FormatError> {
        if self.read(buf)? < buf.len() {
            return Err(FormatError::Truncated(start));
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..).filter(|r| !r.is_empty()) {
        match input.read(rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Little-endian integers off a fixed buffer whose length the caller sized (missing bytes
/// read as zero rather than panicking).
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some((head, rest)) = self.0.split_first_chunk::<N>() {
            out = *head;
            self.0 = rest;
        }
        out
    }
    fn u8(&mut self) -> u8 {
        let [b] = self.take::<1>();
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(transport: Transport, offset_ns: u64, payload: &[u8]) -> Record {
        Record {
            transport,
            truncated: false,
            offset_ns,
            origin: Vec::new(),
            payload: payload.to_vec(),
        }
    }

    fn decode_all(bytes: &[u8]) -> (Vec<Item>, Option<FormatError>) {
        let mut d = match Decoder::new(bytes) {
            Ok(d) => d,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut items = Vec::new();
        loop {
            match d.next_item() {
                Ok(Some(i)) => items.push(i),
                Ok(None) => return (items, None),
                Err(e) => return (items, Some(e)),
            }
        }
    }

    fn sample() -> (Vec<u8>, Vec<Item>) {
        let records = vec![
            record(Transport::Udp, 0, b"a:1|c\nb:2|ms|@0.5"),
            Record {
                truncated: true,
                origin: b"0123abcd".to_vec(),
                ..record(Transport::Unix, 1_500, b"c:3|g")
            },
            record(Transport::Tcp, 2_000_000_000, b"d:1|s\ne:2|d\n"),
            record(Transport::TcpTls, u64::MAX, b""),
        ];
        let trailer = Trailer {
            offset_ns: 3_000_000_000,
            records: 4,
            dropped: 7,
            reason: EndReason::MaxBytes,
        };
        let mut out = Vec::new();
        encode_header(&mut out, 1_700_000_000_000_000_000);
        for r in &records {
            let before = out.len();
            encode_record(&mut out, r);
            assert_eq!(
                out.len() - before,
                record_len(r.origin.len(), r.payload.len())
            );
        }
        encode_trailer(&mut out, &trailer);
        let mut items: Vec<Item> = records.into_iter().map(Item::Record).collect();
        items.push(Item::Trailer(trailer));
        (out, items)
    }

    #[test]
    fn round_trip() {
        let (bytes, expected) = sample();
        assert_eq!(
            Decoder::new(&bytes[..]).unwrap().start_unix_ns,
            1_700_000_000_000_000_000
        );
        let (items, err) = decode_all(&bytes);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(items, expected);
        let Some(Item::Trailer(t)) = items.last() else {
            panic!()
        };
        assert_eq!(t.reason.name(), "size bound reached");
    }

    #[test]
    fn header_only_is_an_empty_capture_without_trailer() {
        let mut bytes = Vec::new();
        encode_header(&mut bytes, 5);
        assert_eq!(bytes.len(), HEADER_LEN);
        let (items, err) = decode_all(&bytes);
        assert!(items.is_empty() && err.is_none());
    }

    #[test]
    fn unknown_version_is_refused_by_number() {
        let mut bytes = Vec::new();
        encode_header(&mut bytes, 5);
        bytes[MAGIC.len()] = 2;
        let err = Decoder::new(&bytes[..]).err().unwrap();
        assert!(matches!(err, FormatError::UnsupportedVersion(2)), "{err}");
        assert!(err.to_string().contains("version 2 is not supported"));
    }

    #[test]
    fn other_files_are_not_captures() {
        for bytes in [
            &b""[..],
            b"hello world, this is not it",
            b"METERDCAX\x01\x00",
        ] {
            assert!(
                matches!(Decoder::new(bytes), Err(FormatError::BadMagic)),
                "{bytes:?}"
            );
        }
        assert!(matches!(
            Decoder::new(&b"METERDCAP\x01"[..]),
            Err(FormatError::Truncated(0))
        ));
    }

    #[test]
    fn a_cut_record_is_reported_after_the_complete_ones() {
        let (bytes, expected) = sample();
        // Cut inside the third record's payload.
        let third = HEADER_LEN + record_len(0, 17) + record_len(8, 5);
        let cut = &bytes[..third + 15];
        let (items, err) = decode_all(cut);
        assert_eq!(items, expected[..2]);
        assert!(matches!(err, Some(FormatError::Truncated(at)) if at == third as u64));
        // Cut exactly between records: complete, no trailer, no error.
        let (items, err) = decode_all(&bytes[..third]);
        assert_eq!(items, expected[..2]);
        assert!(err.is_none());
    }

    #[test]
    fn corrupt_kind_and_length_are_refused() {
        let mut bytes = Vec::new();
        encode_header(&mut bytes, 0);
        bytes.push(9);
        let (_, err) = decode_all(&bytes);
        assert!(matches!(
            err,
            Some(FormatError::UnknownKind { kind: 9, .. })
        ));
        let mut bytes = Vec::new();
        encode_header(&mut bytes, 0);
        bytes.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let (_, err) = decode_all(&bytes);
        assert!(matches!(err, Some(FormatError::TooLarge { .. })), "{err:?}");
    }

    #[test]
    fn nothing_is_read_after_the_trailer() {
        let (mut bytes, expected) = sample();
        bytes.extend_from_slice(b"garbage");
        let (items, err) = decode_all(&bytes);
        assert_eq!(items, expected);
        assert!(err.is_none());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = Vec::new();
            encode_header(&mut bytes, 1);
            bytes.extend_from_slice(&tail);
            let _ = decode_all(&bytes);
            let _ = decode_all(&tail);
        }

        #[test]
        fn any_records_round_trip(
            records in proptest::collection::vec(
                (0u8..4, any::<bool>(), any::<u64>(),
                 proptest::collection::vec(any::<u8>(), 0..80),
                 proptest::collection::vec(any::<u8>(), 0..300)),
                0..20),
            cut in any::<prop::sample::Index>(),
        ) {
            let transports = [Transport::Udp, Transport::Unix, Transport::Tcp, Transport::TcpTls];
            let records: Vec<Record> = records
                .into_iter()
                .map(|(t, truncated, offset_ns, origin, payload)| Record {
                    transport: transports[usize::from(t)],
                    truncated,
                    offset_ns,
                    origin,
                    payload,
                })
                .collect();
            let mut bytes = Vec::new();
            encode_header(&mut bytes, 42);
            for r in &records {
                encode_record(&mut bytes, r);
            }
            let (items, err) = decode_all(&bytes);
            prop_assert!(err.is_none());
            let expected: Vec<Item> = records.iter().cloned().map(Item::Record).collect();
            prop_assert_eq!(&items, &expected);
            // Any prefix decodes to a prefix of the records, and never panics.
            let prefix = &bytes[..cut.index(bytes.len() + 1)];
            let (items, _) = decode_all(prefix);
            prop_assert!(items.len() <= expected.len());
            prop_assert_eq!(&items[..], &expected[..items.len()]);
        }
    }
}
