//! placeholder until the parser lands
use super::{EventLine, ParseError};
/// placeholder
pub fn parse_event(_line: &[u8]) -> Result<EventLine<'_>, ParseError> { Err(ParseError::BadEvent) }
