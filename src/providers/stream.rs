//! Drives an upstream byte stream through a framing decoder and an adapter's translator into
//! OpenAI chunks, enforcing the total deadline and turning every way a stream can go wrong
//! (dropped connection, garbage, silence, no end marker) into one error item.

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::timeout_at;

use super::sse::{MAX_EVENT_BYTES, SseDecoder, SseEvent};
use super::{CallLimits, ChunkStream, StreamChunk};
use crate::error::GatewayError;
use crate::types::ChatChunk;

/// One adapter's stream translation: upstream events in, OpenAI chunks out. Pure and stateful;
/// no I/O, so it is tested on recorded event sequences.
pub trait Translate: Send + 'static {
    /// Handles one upstream event, pushing zero or more chunks. Returns `true` when the event
    /// ends the stream.
    fn event(&mut self, event: &SseEvent, out: &mut VecDeque<StreamChunk>) -> Result<bool, GatewayError>;

    /// Called when the connection ends without an end event; an error says the stream was cut.
    fn end_of_input(&mut self, out: &mut VecDeque<StreamChunk>) -> Result<(), GatewayError>;
}

/// How the upstream frames its events.
pub enum Framing {
    Sse(SseDecoder),
    /// `application/vnd.amazon.eventstream` (Bedrock), decoded into events named by `:event-type`.
    AwsEventStream(super::eventstream::Decoder),
}

impl Framing {
    fn push(&mut self, bytes: &[u8]) {
        match self {
            Framing::Sse(d) => d.push(bytes),
            Framing::AwsEventStream(d) => d.push(bytes),
        }
    }

    fn next_event(&mut self) -> Result<Option<SseEvent>, String> {
        match self {
            Framing::Sse(d) => Ok(d.next_event()),
            Framing::AwsEventStream(d) => d.next_event(),
        }
    }

    fn finish(&mut self) -> Result<Option<SseEvent>, String> {
        match self {
            Framing::Sse(d) => Ok(d.finish()),
            Framing::AwsEventStream(d) => d.finish(),
        }
    }

    fn buffered(&self) -> usize {
        match self {
            Framing::Sse(d) => d.buffered(),
            Framing::AwsEventStream(d) => d.buffered(),
        }
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

struct Driver {
    provider: String,
    body: ByteStream,
    framing: Framing,
    translator: Box<dyn Translate>,
    limits: CallLimits,
    ready: VecDeque<StreamChunk>,
    /// An error to deliver once the chunks produced before it have gone out.
    failed: Option<GatewayError>,
    finished: bool,
}

/// Serializes a canonical chunk for the client.
pub fn chunk(chunk: &ChatChunk) -> StreamChunk {
    StreamChunk {
        usage: chunk.usage,
        usage_only: chunk.choices.is_empty() && chunk.usage.is_some(),
        data: Bytes::from(serde_json::to_vec(chunk).unwrap_or_default()),
    }
}

pub fn drive(
    provider: String,
    body: ByteStream,
    framing: Framing,
    translator: Box<dyn Translate>,
    limits: CallLimits,
) -> ChunkStream {
    let driver =
        Driver { provider, body, framing, translator, limits, ready: VecDeque::new(), failed: None, finished: false };
    Box::pin(futures_util::stream::unfold(driver, |mut d| async move {
        match d.next().await {
            None => None,
            Some(Err(e)) => {
                d.finished = true;
                d.ready.clear();
                d.failed = None;
                Some((Err(e), d))
            }
            Some(Ok(chunk)) => Some((Ok(chunk), d)),
        }
    }))
}

impl Driver {
    fn protocol(&self, message: impl Into<String>) -> GatewayError {
        GatewayError::UpstreamProtocol { provider: self.provider.clone(), message: message.into() }
    }

    async fn next(&mut self) -> Option<Result<StreamChunk, GatewayError>> {
        loop {
            if let Some(chunk) = self.ready.pop_front() {
                return Some(Ok(chunk));
            }
            if let Some(error) = self.failed.take() {
                self.finished = true;
                return Some(Err(error));
            }
            if self.finished {
                return None;
            }
            match self.framing.next_event() {
                Err(e) => return Some(Err(self.protocol(e))),
                Ok(Some(event)) => {
                    match self.translator.event(&event, &mut self.ready) {
                        Ok(done) => self.finished = done,
                        Err(e) => self.failed = Some(e),
                    }
                    continue;
                }
                Ok(None) => {}
            }
            if self.framing.buffered() > MAX_EVENT_BYTES {
                return Some(Err(self.protocol(format!("a stream event exceeded {MAX_EVENT_BYTES} bytes"))));
            }
            match timeout_at(self.limits.deadline, self.body.next()).await {
                Err(_) => {
                    return Some(Err(GatewayError::UpstreamTimeout {
                        provider: self.provider.clone(),
                        phase: "total",
                        limit: self.limits.timeouts.total,
                    }));
                }
                Ok(Some(Ok(bytes))) => self.framing.push(&bytes),
                Ok(Some(Err(e))) => {
                    return Some(Err(GatewayError::UpstreamUnreachable {
                        provider: self.provider.clone(),
                        message: format!("connection lost mid-stream: {e}"),
                    }));
                }
                Ok(None) => {
                    // End of input: a last event may lack its terminating blank line.
                    match self.framing.finish() {
                        Err(e) => return Some(Err(self.protocol(e))),
                        Ok(Some(event)) => match self.translator.event(&event, &mut self.ready) {
                            Ok(true) => {
                                self.finished = true;
                                continue;
                            }
                            Ok(false) => {}
                            Err(e) => {
                                self.failed = Some(e);
                                continue;
                            }
                        },
                        Ok(None) => {}
                    }
                    if let Err(e) = self.translator.end_of_input(&mut self.ready) {
                        self.failed = Some(e);
                    } else {
                        self.finished = true;
                    }
                }
            }
        }
    }
}
