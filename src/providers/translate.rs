//! Shapes every non-OpenAI wire format shares: unsupported features named, alternating turns,
//! system text.

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::ProviderConfig;
use crate::error::GatewayError;
use crate::types::{Message, MessageContent};

/// The headers every request to `config`'s provider carries: JSON content type, the configured
/// extra headers, and the credential as `key` (name, value). Values are marked sensitive so they
/// never show in debug output.
pub fn provider_headers(config: &ProviderConfig, key: Option<(HeaderName, String)>) -> Result<HeaderMap, GatewayError> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let bad =
        |what: &str| GatewayError::internal(format!("provider {}: {what} is not a valid HTTP header", config.name));
    for (name, value) in &config.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("a configured header name"))?;
        let mut value = HeaderValue::from_str(value.expose()).map_err(|_| bad("a configured header value"))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    if let Some((name, text)) = key {
        let mut value = HeaderValue::from_str(&text).map_err(|_| bad("the API key"))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}

/// A feature the provider lacks: rejected with a 400 naming both, never silently dropped.
pub fn unsupported(provider: &str, feature: impl Into<String>) -> GatewayError {
    GatewayError::Unsupported { provider: provider.to_string(), feature: feature.into() }
}

/// Appends a turn to a conversation whose wire format wants alternating roles: a turn of the same
/// role as the last one merges into it; empty turns are dropped.
pub fn push_turn<B>(turns: &mut Vec<(&'static str, Vec<B>)>, role: &'static str, blocks: Vec<B>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

/// The text of a system or developer message (`messages[index]`); other content is unsupported.
pub fn system_text(message: &Message, provider: &str, index: usize) -> Result<Option<String>, GatewayError> {
    let Some(content) = &message.content else { return Ok(None) };
    if let MessageContent::Parts(parts) = content
        && parts.iter().any(|p| p.kind != "text")
    {
        return Err(unsupported(provider, format!("non-text content in a system message (messages[{index}])")));
    }
    let text = content.text();
    Ok((!text.is_empty()).then_some(text))
}
