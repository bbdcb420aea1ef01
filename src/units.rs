//! Durations as the config writes them (`"500ms"`, `"10s"`, `"1m30s"`): parsed and printed in
//! one place for every layer's settings (a leaf module).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as `"500ms"`, `"10s"`, `"1m"`, `"1h"` (or combinations like `"1m30s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

/// Parses a duration written as numbers with units, as everywhere in the config: `"500ms"`,
/// `"5s"`, `"1.5s"`, `"1m30s"`, `"2h"`, `"1d"` (units `ms`, `s`, `m`, `h`, `d`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = |why: &str| format!("invalid duration {s:?}: {why}");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(invalid("empty (use e.g. \"500ms\", \"10s\", \"1m\")"));
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        rest = tail;
        if number.is_empty() {
            return Err(invalid("expected a number followed by ms, s, m, h or d"));
        }
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(invalid("missing unit (ms, s, m, h or d)")),
            _ => return Err(invalid("unknown unit (use ms, s, m, h or d)")),
        };
        let part = match number.parse::<u64>() {
            Ok(whole) => whole
                .checked_mul(millis_per_unit)
                .map(Duration::from_millis),
            Err(_) => {
                let value: f64 = number.parse().map_err(|_| invalid("not a number"))?;
                Duration::try_from_secs_f64(value * millis_per_unit as f64 / 1_000.0).ok()
            }
        };
        total = part
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| invalid("too large"))?;
    }
    Ok(total)
}

/// Formats a duration the way the config writes it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5").is_err());
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
    }
}
