//! The AWS event stream framing (`application/vnd.amazon.eventstream`) used by Bedrock's
//! ConverseStream: length-prefixed binary messages with typed headers and two CRC32 checksums.
//!
//! ```text
//! [total len u32][headers len u32][prelude crc u32][headers…][payload…][message crc u32]
//! ```
//!
//! Messages are surfaced as [`SseEvent`]s named by their `:event-type` (or `exception:<type>` /
//! `error:<code>`), so adapters translate them like any other event.

use bytes::{Buf, Bytes, BytesMut};

use super::sse::{MAX_EVENT_BYTES, SseEvent};

const PRELUDE: usize = 12;
const MIN_MESSAGE: usize = PRELUDE + 4;

#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, or an error if the bytes are not a valid event stream.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, String> {
        if self.buf.len() < PRELUDE {
            return Ok(None);
        }
        let total = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        let headers_len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        let prelude_crc = u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]]);
        if crc32fast::hash(&self.buf[..8]) != prelude_crc {
            return Err("event stream prelude checksum mismatch".into());
        }
        if !(MIN_MESSAGE..=MAX_EVENT_BYTES).contains(&total) || headers_len > total - MIN_MESSAGE {
            return Err(format!("event stream message has impossible lengths (total {total}, headers {headers_len})"));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let message = self.buf.split_to(total).freeze();
        let message_crc =
            u32::from_be_bytes([message[total - 4], message[total - 3], message[total - 2], message[total - 1]]);
        if crc32fast::hash(&message[..total - 4]) != message_crc {
            return Err("event stream message checksum mismatch".into());
        }
        let headers = parse_headers(&message[PRELUDE..PRELUDE + headers_len])?;
        let payload = message.slice(PRELUDE + headers_len..total - 4);
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let name = match header(":message-type").unwrap_or("event") {
            "event" => header(":event-type").unwrap_or("unknown").to_string(),
            "exception" => format!("exception:{}", header(":exception-type").unwrap_or("unknown")),
            "error" => {
                let code = header(":error-code").unwrap_or("unknown");
                let text = header(":error-message").unwrap_or_default();
                return Ok(Some(SseEvent {
                    event: Some(format!("error:{code}")),
                    data: Bytes::from(serde_json::json!({ "message": text }).to_string()),
                }));
            }
            other => format!("unknown:{other}"),
        };
        Ok(Some(SseEvent { event: Some(name), data: payload }))
    }

    /// At end of input: leftover bytes mean the stream was cut inside a message.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, String> {
        let event = self.next_event()?;
        if event.is_none() && !self.buf.is_empty() {
            return Err(format!("event stream ended inside a message ({} bytes left)", self.buf.len()));
        }
        Ok(event)
    }
}

/// Header values of every type are read; only strings are kept (the others carry nothing Bedrock
/// clients need).
fn parse_headers(mut bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let short = || "event stream header is truncated".to_string();
    while bytes.has_remaining() {
        let name_len = usize::from(*bytes.first().ok_or_else(short)?);
        bytes.advance(1);
        if bytes.len() < name_len + 1 {
            return Err(short());
        }
        let name = String::from_utf8_lossy(&bytes[..name_len]).to_string();
        bytes.advance(name_len);
        let kind = bytes.get_u8();
        let fixed = match kind {
            0 | 1 => Some(0),
            2 => Some(1),
            3 => Some(2),
            4 => Some(4),
            5 | 8 => Some(8),
            9 => Some(16),
            6 | 7 => None,
            other => return Err(format!("event stream header `{name}` has unknown type {other}")),
        };
        match fixed {
            Some(n) => {
                if bytes.len() < n {
                    return Err(short());
                }
                bytes.advance(n);
            }
            None => {
                if bytes.len() < 2 {
                    return Err(short());
                }
                let len = usize::from(bytes.get_u16());
                if bytes.len() < len {
                    return Err(short());
                }
                if kind == 7 {
                    out.push((name, String::from_utf8_lossy(&bytes[..len]).to_string()));
                }
                bytes.advance(len);
            }
        }
    }
    Ok(out)
}

/// Encodes one message with string headers (used by the testkit's Bedrock mock and tests).
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut header_bytes = Vec::new();
    for (name, value) in headers {
        header_bytes.push(name.len() as u8);
        header_bytes.extend_from_slice(name.as_bytes());
        header_bytes.push(7);
        header_bytes.extend_from_slice(&(value.len() as u16).to_be_bytes());
        header_bytes.extend_from_slice(value.as_bytes());
    }
    let total = MIN_MESSAGE + header_bytes.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// An event message as Bedrock sends it.
pub fn encode_event(event_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(&[(":event-type", event_type), (":content-type", "application/json"), (":message-type", "event")], payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_across_every_split_point() {
        let mut bytes = encode_event("contentBlockDelta", br#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#);
        bytes.extend(encode(
            &[(":message-type", "exception"), (":exception-type", "throttlingException")],
            br#"{"message":"slow down"}"#,
        ));
        for split in 0..bytes.len() {
            let mut decoder = Decoder::new();
            let mut events = Vec::new();
            for part in [&bytes[..split], &bytes[split..]] {
                decoder.push(part);
                while let Some(e) = decoder.next_event().unwrap() {
                    events.push(e);
                }
            }
            assert!(decoder.finish().unwrap().is_none());
            assert_eq!(events.len(), 2, "split {split}");
            assert_eq!(events[0].event.as_deref(), Some("contentBlockDelta"));
            assert_eq!(&events[0].data[..], br#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#);
            assert_eq!(events[1].event.as_deref(), Some("exception:throttlingException"));
        }
    }

    #[test]
    fn corrupt_or_cut_input_is_an_error_not_a_panic() {
        let bytes = encode_event("messageStop", br#"{"stopReason":"end_turn"}"#);
        let mut flipped = bytes.clone();
        flipped[20] ^= 0xff;
        let mut decoder = Decoder::new();
        decoder.push(&flipped);
        assert!(decoder.next_event().unwrap_err().contains("checksum"));
        let mut decoder = Decoder::new();
        decoder.push(&bytes[..bytes.len() - 3]);
        assert!(decoder.next_event().unwrap().is_none());
        assert!(decoder.finish().unwrap_err().contains("ended inside a message"));
    }
}
