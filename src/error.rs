//! The one error type of the gateway. Every failure on a request path converges here and is rendered
//! exactly once, at the edge, as OpenAI-style error JSON (or as one SSE error event mid-stream).

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde::Serialize;

/// Who caused a failure: decides blame in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    Client,
    Provider,
    Gateway,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("{message}")]
    InvalidRequest { message: String, param: Option<String> },
    #[error("request body is not valid JSON: {detail}")]
    MalformedJson { detail: String },
    #[error("the model `{model}` does not exist on this gateway; GET /v1/models lists the models you can use")]
    ModelNotFound { model: String },
    #[error("request body is larger than the gateway's limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{message}")]
    Unauthorized { message: &'static str },
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("provider `{provider}` is rate limiting requests (HTTP 429){}", hint(.retry_after))]
    UpstreamRateLimited { provider: String, retry_after: Option<String>, message: String },
    #[error("provider `{provider}` failed with HTTP {status}: {message}")]
    UpstreamServerError { provider: String, status: u16, message: String },
    /// The upstream's own `code` and `param` are kept so clients can act on them
    /// (e.g. `context_length_exceeded`).
    #[error("provider `{provider}` rejected the request (HTTP {status}): {message}")]
    UpstreamRejected { provider: String, status: u16, message: String, code: Option<String>, param: Option<String> },
    #[error(
        "provider `{provider}` rejected the gateway's credential (HTTP {status}); the gateway operator must fix the provider key"
    )]
    UpstreamAuth { provider: String, status: u16 },
    #[error("provider `{provider}` did not answer in time ({phase} timeout of {}ms)", .limit.as_millis())]
    UpstreamTimeout { provider: String, phase: &'static str, limit: Duration },
    #[error("provider `{provider}` could not be reached: {message}")]
    UpstreamUnreachable { provider: String, message: String },
    #[error("provider `{provider}` sent a response the gateway could not understand: {message}")]
    UpstreamProtocol { provider: String, message: String },
    #[error("provider `{provider}` does not support {feature}")]
    Unsupported { provider: String, feature: String },
    #[error("the gateway is shutting down; retry against another replica")]
    ShuttingDown,
    #[error("internal gateway error: {message}")]
    Internal { message: String },
}

fn hint(retry_after: &Option<String>) -> String {
    match retry_after {
        Some(value) => format!("; retry after {value} seconds"),
        None => String::new(),
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest { message: message.into(), param: None }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal { message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } | Self::MalformedJson { .. } | Self::Unsupported { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::UpstreamRejected { status, .. } => StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            Self::ModelNotFound { .. } | Self::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::UpstreamRateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamServerError { .. }
            | Self::UpstreamAuth { .. }
            | Self::UpstreamUnreachable { .. }
            | Self::UpstreamProtocol { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Low-cardinality name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "invalid_request",
            Self::MalformedJson { .. } => "malformed_json",
            Self::ModelNotFound { .. } => "model_not_found",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::Unauthorized { .. } => "unauthorized",
            Self::RouteNotFound { .. } => "route_not_found",
            Self::UpstreamRateLimited { .. } => "rate_limited",
            Self::UpstreamServerError { .. } => "server_error",
            Self::UpstreamRejected { .. } => "upstream_rejected",
            Self::UpstreamAuth { .. } => "upstream_auth",
            Self::UpstreamTimeout { .. } => "timeout",
            Self::UpstreamUnreachable { .. } => "unreachable",
            Self::UpstreamProtocol { .. } => "protocol_error",
            Self::Unsupported { .. } => "unsupported",
            Self::ShuttingDown => "shutting_down",
            Self::Internal { .. } => "internal",
        }
    }

    pub fn source(&self) -> ErrorSource {
        match self {
            Self::InvalidRequest { .. }
            | Self::MalformedJson { .. }
            | Self::ModelNotFound { .. }
            | Self::PayloadTooLarge { .. }
            | Self::Unauthorized { .. }
            | Self::RouteNotFound { .. }
            | Self::UpstreamRejected { .. }
            | Self::Unsupported { .. } => ErrorSource::Client,
            Self::UpstreamRateLimited { .. }
            | Self::UpstreamServerError { .. }
            | Self::UpstreamAuth { .. }
            | Self::UpstreamTimeout { .. }
            | Self::UpstreamUnreachable { .. }
            | Self::UpstreamProtocol { .. } => ErrorSource::Provider,
            Self::ShuttingDown | Self::Internal { .. } => ErrorSource::Gateway,
        }
    }

    /// Whether another attempt (same or other deployment) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::UpstreamRateLimited { .. }
                | Self::UpstreamServerError { .. }
                | Self::UpstreamTimeout { .. }
                | Self::UpstreamUnreachable { .. }
                | Self::UpstreamProtocol { .. }
        )
    }

    fn openai_type(&self) -> &'static str {
        match self.status().as_u16() {
            400 | 404 | 413 | 422 => "invalid_request_error",
            401 => "authentication_error",
            429 => "rate_limit_error",
            _ => "api_error",
        }
    }

    fn code(&self) -> Option<&str> {
        match self {
            Self::UpstreamRejected { code, .. } => code.as_deref(),
            Self::ModelNotFound { .. } => Some("model_not_found"),
            Self::UpstreamRateLimited { .. } => Some("rate_limit_exceeded"),
            Self::Unauthorized { .. } => Some("invalid_api_key"),
            Self::PayloadTooLarge { .. } => Some("request_too_large"),
            Self::UpstreamTimeout { .. } => Some("upstream_timeout"),
            Self::UpstreamAuth { .. } => Some("upstream_credential_rejected"),
            Self::Unsupported { .. } => Some("unsupported_feature"),
            _ => None,
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { param, .. } | Self::UpstreamRejected { param, .. } => param.as_deref(),
            Self::ModelNotFound { .. } => Some("model"),
            _ => None,
        }
    }

    /// The OpenAI error JSON for this error.
    pub fn to_json(&self) -> Bytes {
        let body = ErrorBody {
            error: ErrorObject {
                message: self.to_string(),
                kind: self.openai_type(),
                param: self.param(),
                code: self.code(),
            },
        };
        // Serializing plain strings into a Vec cannot fail.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// One SSE event carrying this error, for streams that fail after they started.
    pub fn to_sse_event(&self) -> Bytes {
        let json = self.to_json();
        let mut out = Vec::with_capacity(json.len() + 8);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&json);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }

    pub fn retry_after(&self) -> Option<&str> {
        match self {
            Self::UpstreamRateLimited { retry_after, .. } => retry_after.as_deref(),
            _ => None,
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), self.to_json()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(value) = self.retry_after().and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(header::RETRY_AFTER, value);
        }
        // OpenAI's SDKs retry 429 and 5xx unless told otherwise; say when a retry cannot help.
        if self.status().as_u16() == 429 || self.status().is_server_error() {
            let retry = if self.is_retryable() { "true" } else { "false" };
            headers.insert(HeaderName::from_static("x-should-retry"), HeaderValue::from_static(retry));
        }
        response.extensions_mut().insert(ErrorKind(self.kind()));
        response
    }
}

/// Rides in response extensions so the access log can name the error without re-parsing the body.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind(pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openai_shape_with_code_and_param() {
        let err = GatewayError::ModelNotFound { model: "gpt-9".into() };
        let v: serde_json::Value = serde_json::from_slice(&err.to_json()).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-9"));
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn rate_limit_forwards_retry_after() {
        let err = GatewayError::UpstreamRateLimited {
            provider: "openai".into(),
            retry_after: Some("7".into()),
            message: "slow down".into(),
        };
        let resp = err.into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "7");
    }
}
