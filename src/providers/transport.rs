//! HTTP plumbing shared by every adapter: send within the first-byte deadline, map non-success
//! statuses through the adapter's error mapper, read bodies within the total deadline.

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::timeout_at;

use super::CallLimits;
use crate::config::ProviderConfig;
use crate::error::GatewayError;

/// Largest upstream error body read to extract its message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest non-streamed upstream answer accepted.
const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;

/// Turns a non-success status, its `Retry-After` hint and body into the gateway's error.
pub type ErrorMapper = fn(&ProviderConfig, u16, Option<String>, &[u8]) -> GatewayError;

/// Sends the request and waits for a success status within the first-byte deadline.
pub async fn send(
    request: reqwest::RequestBuilder,
    config: &ProviderConfig,
    limits: CallLimits,
    map_error: ErrorMapper,
) -> Result<reqwest::Response, GatewayError> {
    let response = match timeout_at(limits.first_byte_deadline, request.send()).await {
        Err(_) => {
            return Err(GatewayError::UpstreamTimeout {
                provider: config.name.clone(),
                phase: "first_byte",
                limit: limits.timeouts.first_byte,
            });
        }
        Ok(Err(e)) => return Err(transport_error(config, &e, limits)),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry = super::retry_after(response.headers());
    let body = read_limited(response, MAX_ERROR_BODY, limits).await.unwrap_or_default();
    Err(map_error(config, status.as_u16(), retry, &body))
}

fn transport_error(config: &ProviderConfig, error: &reqwest::Error, limits: CallLimits) -> GatewayError {
    if error.is_timeout() {
        return GatewayError::UpstreamTimeout {
            provider: config.name.clone(),
            phase: "connect",
            limit: limits.timeouts.connect,
        };
    }
    // reqwest's Display names the URL but never headers, so no credential can leak here.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    GatewayError::UpstreamUnreachable { provider: config.name.clone(), message }
}

async fn read_limited(response: reqwest::Response, limit: usize, limits: CallLimits) -> Option<Vec<u8>> {
    let mut body = response.bytes_stream();
    let mut out = Vec::new();
    loop {
        match timeout_at(limits.deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => {
                let room = limit.saturating_sub(out.len());
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if out.len() >= limit {
                    return Some(out);
                }
            }
            Ok(None) => return Some(out),
            Ok(Some(Err(_))) | Err(_) => return None,
        }
    }
}

/// Reads a whole success body within the total deadline.
pub async fn read_body(
    response: reqwest::Response,
    config: &ProviderConfig,
    limits: CallLimits,
) -> Result<Bytes, GatewayError> {
    if response.content_length().is_some_and(|n| n > MAX_RESPONSE_BODY as u64) {
        return Err(GatewayError::UpstreamProtocol {
            provider: config.name.clone(),
            message: format!("response body is larger than {MAX_RESPONSE_BODY} bytes"),
        });
    }
    match timeout_at(limits.deadline, response.bytes()).await {
        Err(_) => Err(GatewayError::UpstreamTimeout {
            provider: config.name.clone(),
            phase: "total",
            limit: limits.timeouts.total,
        }),
        Ok(Err(e)) => Err(GatewayError::UpstreamUnreachable {
            provider: config.name.clone(),
            message: format!("connection failed while reading the response: {e}"),
        }),
        Ok(Ok(body)) => Ok(body),
    }
}

/// Whether the response is an event stream (some servers answer a stream request with JSON).
pub fn is_event_stream(response: &reqwest::Response, expected: &str) -> bool {
    response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(expected))
}
