//! Incremental Server-Sent Events decoding: bytes arrive split anywhere, events come out whole.
//! Single-line `data:` payloads are returned as zero-copy slices of the received buffer.

use bytes::{Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: Bytes,
}

/// Longest event we accept before declaring the stream garbage (protects memory).
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: BytesMut,
    /// Where the search for the next blank line resumes, so bytes are scanned once.
    scan_from: usize,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete event, if the buffer holds one. Events with no `data` (comments,
    /// keep-alives) are skipped.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.find_event_end()?;
            let raw = self.buf.split_to(end).freeze();
            self.scan_from = 0;
            if let Some(event) = parse_event(&raw) {
                return Some(event);
            }
        }
    }

    /// At end of input: a final event that was not followed by a blank line.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
            self.buf.clear();
            return None;
        }
        let raw = std::mem::take(&mut self.buf).freeze();
        parse_event(&raw)
    }

    /// Index just past the blank line that ends the first event.
    fn find_event_end(&mut self) -> Option<usize> {
        let mut pos = self.scan_from;
        while let Some(offset) = memchr::memchr(b'\n', &self.buf[pos..]) {
            let nl = pos + offset;
            // A blank line is "\n\n" or "\n\r\n".
            let blank = (nl >= 1 && self.buf[nl - 1] == b'\n')
                || (nl >= 2 && self.buf[nl - 1] == b'\r' && self.buf[nl - 2] == b'\n');
            if blank || nl == 0 {
                return Some(nl + 1);
            }
            pos = nl + 1;
        }
        self.scan_from = pos;
        None
    }
}

fn parse_event(raw: &Bytes) -> Option<SseEvent> {
    let mut event = None;
    let mut data_ranges: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    while start < raw.len() {
        let end = memchr::memchr(b'\n', &raw[start..]).map_or(raw.len(), |o| start + o);
        let mut line_end = end;
        if line_end > start && raw[line_end - 1] == b'\r' {
            line_end -= 1;
        }
        let line = &raw[start..line_end];
        if let Some(rest) = line.strip_prefix(b"data:") {
            let skip = usize::from(rest.first() == Some(&b' '));
            data_ranges.push((start + 5 + skip, line_end));
        } else if let Some(rest) = line.strip_prefix(b"event:") {
            event = Some(String::from_utf8_lossy(rest).trim().to_string());
        }
        start = end + 1;
    }
    let data = match data_ranges.as_slice() {
        [] => return None,
        [(s, e)] => raw.slice(*s..*e),
        many => {
            let mut joined = Vec::new();
            for (i, (s, e)) in many.iter().enumerate() {
                if i > 0 {
                    joined.push(b'\n');
                }
                joined.extend_from_slice(&raw[*s..*e]);
            }
            Bytes::from(joined)
        }
    };
    Some(SseEvent { event, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        for piece in pieces {
            decoder.push(piece);
            while let Some(e) = decoder.next_event() {
                out.push(e);
            }
        }
        out.extend(decoder.finish());
        out
    }

    #[test]
    fn events_survive_every_split_point() {
        let stream: &[u8] =
            b": keep-alive\n\nevent: message_start\ndata: {\"a\":1}\n\ndata: line1\ndata: line2\r\n\r\ndata:[DONE]\n\n";
        let expected = decode_all(&[stream]);
        assert_eq!(expected.len(), 3);
        assert_eq!(expected[0].event.as_deref(), Some("message_start"));
        assert_eq!(&expected[0].data[..], b"{\"a\":1}");
        assert_eq!(&expected[1].data[..], b"line1\nline2");
        assert_eq!(&expected[2].data[..], b"[DONE]");
        for i in 0..stream.len() {
            for j in i..stream.len() {
                let got = decode_all(&[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(got, expected, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn trailing_event_without_blank_line_is_returned_by_finish() {
        let got = decode_all(&[b"data: {\"x\":2}\n"]);
        assert_eq!(&got[0].data[..], b"{\"x\":2}");
    }
}
