//! placeholder until the parser lands
use super::{ServiceCheckLine, ParseError};
/// placeholder
pub fn parse_service_check(_line: &[u8]) -> Result<ServiceCheckLine<'_>, ParseError> { Err(ParseError::BadServiceCheck) }
