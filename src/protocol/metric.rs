//! placeholder until the parser lands
use super::{MetricLine, ParseError};
/// placeholder
pub fn parse_metric(_line: &[u8]) -> Result<MetricLine<'_>, ParseError> { Err(ParseError::BadName) }
