//! AWS Signature Version 4 request signing (header form), as Bedrock needs it. Pure functions over
//! the method, URL, headers and payload; the caller signs at send time with the current
//! `x-amz-date`, so a retried request gets a fresh signature.
//!
//! The steps are the documented ones: canonical request → string to sign → signing key (HMAC
//! chain over date, region, service) → signature. HMAC-SHA256 is built here on `sha2` (the
//! construction is a few lines, RFC 2104) and checked against the AWS documentation's example.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Request credentials. Debug never shows the secret or the session token.
pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .field("session_token", &self.session_token.map(|_| "***"))
            .finish()
    }
}

/// What gets signed.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The URL exactly as it goes on the wire (its path already percent-encoded once).
    pub url: &'a reqwest::Url,
    /// Headers to sign besides `host`, `x-amz-date` and `x-amz-security-token`, which `sign` adds.
    pub headers: &'a [(&'a str, &'a str)],
    pub payload: &'a [u8],
}

/// Where and when: `amz_date` is `YYYYMMDD'T'HHMMSS'Z'` (see [`amz_date`]).
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
    pub amz_date: &'a str,
}

/// Signs the request. Returns the headers to add to it: `x-amz-date`, `x-amz-security-token` (with
/// a session token) and `authorization`. `host` is signed but not returned: the HTTP client derives
/// it from the URL, and [`host`] computes the same value.
pub fn sign(request: &Request<'_>, credentials: &Credentials<'_>, scope: Scope<'_>) -> Vec<(&'static str, String)> {
    let mut added: Vec<(&'static str, String)> = vec![("x-amz-date", scope.amz_date.to_string())];
    if let Some(token) = credentials.session_token {
        added.push(("x-amz-security-token", token.to_string()));
    }
    let host = host(request.url);
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .chain(std::iter::once(("host".to_string(), host)))
        .chain(added.iter().map(|(n, v)| (n.to_string(), v.clone())))
        .collect();
    let (canonical, signed_headers) = canonical_request(request, &mut headers);
    let date = scope.amz_date.get(..8).unwrap_or(scope.amz_date);
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let to_sign = string_to_sign(scope.amz_date, &credential_scope, &canonical);
    let key = signing_key(credentials.secret_access_key, date, scope.region, scope.service);
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    added.push((
        "authorization",
        format!(
            "{ALGORITHM} Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
            credentials.access_key_id
        ),
    ));
    added
}

/// The `host` header value the HTTP client sends for this URL (port only when not the default).
pub fn host(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// The canonical request and the signed-header list. `headers` are lowercase-named; they are
/// sorted here, values trimmed with inner whitespace runs collapsed, repeats joined by commas.
pub fn canonical_request(request: &Request<'_>, headers: &mut [(String, String)]) -> (String, String) {
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let mut canonical_headers = String::new();
    let mut names: Vec<&str> = Vec::new();
    for (name, value) in headers.iter() {
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        if names.last() == Some(&name.as_str()) {
            canonical_headers.pop(); // the newline: a repeated header joins the previous line
            canonical_headers.push(',');
        } else {
            canonical_headers.push_str(name);
            canonical_headers.push(':');
            names.push(name);
        }
        canonical_headers.push_str(&value);
        canonical_headers.push('\n');
    }
    let signed_headers = names.join(";");
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        request.method,
        canonical_uri(request.url.path()),
        canonical_query(request.url.query().unwrap_or_default()),
        hex(&Sha256::digest(request.payload)),
    );
    (canonical, signed_headers)
}

/// The canonical URI of a wire path. For every service except S3, AWS URI-encodes each segment
/// of the path *as sent*, i.e. of the already-encoded path. So a Bedrock model id such as
/// `anthropic.claude-3-5-sonnet-20240620-v1:0` goes on the wire as `…-v1%3A0` and is signed as
/// `…-v1%253A0` (the `%` encoded again). Signing the single-encoded form is the classic Bedrock
/// bug: it matches for ids without reserved characters and fails with "signature does not
/// match" for every id that has a `:` (or, for ARNs, a `/`).
pub fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/').map(uri_encode).collect::<Vec<_>>().join("/")
}

/// The query string with each name and value decoded then URI-encoded, sorted by name then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (uri_encode(&percent_decode(name)), uri_encode(&percent_decode(value)))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("&")
}

/// AWS URI encoding: every byte except the unreserved `A-Z a-z 0-9 - _ . ~` becomes `%XX`
/// (uppercase hex). Also used to put a model id into a path segment.
pub fn uri_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn string_to_sign(amz_date: &str, credential_scope: &str, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{amz_date}\n{credential_scope}\n{}", hex(&Sha256::digest(canonical_request.as_bytes())))
}

pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// HMAC-SHA256 (RFC 2104): H((K ^ opad) || H((K ^ ipad) || m)) with a 64-byte block.
fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer.finalize());
    out
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// The lowercase hex SHA-256 of a payload (the `x-amz-content-sha256` value).
pub fn payload_hash(payload: &[u8]) -> String {
    hex(&Sha256::digest(payload))
}

/// `time` as `YYYYMMDD'T'HHMMSS'Z'` (UTC).
pub fn amz_date(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    /// The worked example in the AWS documentation ("Signature Version 4 signing process"): IAM
    /// `ListUsers`, every intermediate value as published.
    #[test]
    fn aws_documentation_example_signs_exactly() {
        let url = reqwest::Url::parse("https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08").unwrap();
        let request = Request {
            method: "GET",
            url: &url,
            headers: &[("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")],
            payload: b"",
        };
        let mut headers = vec![
            ("content-type".to_string(), "application/x-www-form-urlencoded; charset=utf-8".to_string()),
            ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
            ("host".to_string(), host(&url)),
        ];
        let (canonical, signed) = canonical_request(&request, &mut headers);
        assert_eq!(
            canonical,
            "GET\n/\nAction=ListUsers&Version=2010-05-08\n\
             content-type:application/x-www-form-urlencoded; charset=utf-8\nhost:iam.amazonaws.com\n\
             x-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(signed, "content-type;host;x-amz-date");
        assert_eq!(
            hex(&Sha256::digest(canonical.as_bytes())),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        assert_eq!(
            hex(&signing_key(SECRET, "20150830", "us-east-1", "iam")),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
        let credentials = Credentials { access_key_id: "AKIDEXAMPLE", secret_access_key: SECRET, session_token: None };
        let scope = Scope { region: "us-east-1", service: "iam", amz_date: "20150830T123600Z" };
        let added = sign(&request, &credentials, scope);
        assert_eq!(added[0], ("x-amz-date", "20150830T123600Z".to_string()));
        assert_eq!(
            added[1].1,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    /// RFC 4231 test case 2 (a short key) and 6 (a key longer than the block).
    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hex(&hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn bedrock_model_ids_are_double_encoded_in_the_canonical_uri() {
        let path = format!("/model/{}/converse", uri_encode("anthropic.claude-3-5-sonnet-20240620-v1:0"));
        assert_eq!(path, "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse");
        let url = reqwest::Url::parse(&format!("https://bedrock-runtime.us-east-1.amazonaws.com{path}")).unwrap();
        assert_eq!(url.path(), path, "the URL keeps the single encoding on the wire");
        let request = Request { method: "POST", url: &url, headers: &[], payload: b"{}" };
        let mut headers = vec![("host".to_string(), host(&url))];
        let (canonical, _) = canonical_request(&request, &mut headers);
        assert_eq!(
            canonical.lines().nth(1),
            Some("/model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/converse"),
            "{canonical}"
        );
        let arn = uri_encode("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3");
        assert_eq!(arn, "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.meta.llama3");
        assert_eq!(canonical_uri(&format!("/model/{arn}/converse")).matches("%25").count(), 6);
    }

    /// A Bedrock ConverseStream request with a session token, signed by this module; the expected
    /// signature was produced independently by the `aws-sigv4` crate (1.6.4, which also reproduces the documentation
    /// example above) for the same inputs and time.
    #[test]
    fn bedrock_request_with_session_token_matches_aws_sigv4() {
        let url = reqwest::Url::parse(
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream",
        )
        .unwrap();
        let payload = br#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}]}"#;
        let hash = payload_hash(payload);
        let request = Request {
            method: "POST",
            url: &url,
            headers: &[("content-type", "application/json"), ("x-amz-content-sha256", &hash)],
            payload,
        };
        let credentials =
            Credentials { access_key_id: "AKIDEXAMPLE", secret_access_key: SECRET, session_token: Some("TOKEN/abc=") };
        let scope = Scope { region: "us-east-1", service: "bedrock", amz_date: "20240601T000000Z" };
        let added = sign(&request, &credentials, scope);
        assert_eq!(added[1], ("x-amz-security-token", "TOKEN/abc=".to_string()));
        assert_eq!(added[2].1, AWS_SIGV4_ANSWER);
        assert!(!format!("{credentials:?}").contains(SECRET) && !format!("{credentials:?}").contains("TOKEN"));
    }

    const AWS_SIGV4_ANSWER: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240601/us-east-1/bedrock/aws4_request, \
        SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, \
        Signature=f2c09f4e1d4586b9ae81238bc6d77d77ac44942b295a174201d77f7b42a333c4";

    #[test]
    fn query_and_headers_canonicalize() {
        assert_eq!(canonical_query("b=2&a=x%20y&a=1"), "a=1&a=x%20y&b=2");
        let url = reqwest::Url::parse("http://127.0.0.1:8080/a%20b").unwrap();
        assert_eq!(host(&url), "127.0.0.1:8080");
        let request = Request { method: "GET", url: &url, headers: &[], payload: b"" };
        let mut headers = vec![("x-b".to_string(), "  two   words ".to_string()), ("x-a".to_string(), "1".to_string())];
        headers.push(("x-a".to_string(), "2".to_string()));
        let (canonical, signed) = canonical_request(&request, &mut headers);
        assert!(canonical.starts_with("GET\n/a%2520b\n\nx-a:1,2\nx-b:two words\n\n"), "{canonical}");
        assert_eq!(signed, "x-a;x-b");
    }

    #[test]
    fn amz_date_formats_utc() {
        assert_eq!(amz_date(UNIX_EPOCH + Duration::from_secs(1_440_938_160)), "20150830T123600Z");
        assert_eq!(amz_date(UNIX_EPOCH + Duration::from_secs(951_782_400)), "20000229T000000Z");
        assert_eq!(amz_date(UNIX_EPOCH), "19700101T000000Z");
    }
}
