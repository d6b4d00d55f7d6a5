//! The standard request headers of the 2026-07-28 Streamable HTTP transport
//! ("Request Metadata": "Protocol Version Header", "Standard Request Headers",
//! "Value Encoding", "Server Validation"), checked against the body before a
//! request reaches the upstream, so the proxy and the upstream never act on
//! different sources of truth.
//!
//! Checked, for a JSON-RPC request:
//! - `MCP-Protocol-Version` is present and equals
//!   `params._meta["io.modelcontextprotocol/protocolVersion"]`;
//! - `Mcp-Method` is present and equals `method`;
//! - `Mcp-Name` is present and equals `params.name` (`tools/call`, `prompts/get`)
//!   or `params.uri` (`resources/read`) when the body has that value, and absent
//!   when it has none; a `=?base64?…?=` value is decoded first.
//!
//! Notifications ("header requirements for notification POSTs are not defined by
//! this revision") are checked only for the headers they carry. `Mcp-Param-*`
//! headers are not recognized by the proxy (their names come from a tool's
//! `inputSchema`), so they are forwarded untouched, as the section requires of
//! intermediaries.

use axum::http::{HeaderMap, HeaderName};
use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine,
};
use serde_json::Value;

use crate::upstream::PROTOCOL_VERSION_HEADER;

/// `Mcp-Method`: mirrors the body's `method`.
pub const METHOD_HEADER: HeaderName = HeaderName::from_static("mcp-method");
/// `Mcp-Name`: mirrors `params.name` or `params.uri`.
pub const NAME_HEADER: HeaderName = HeaderName::from_static("mcp-name");
/// JSON-RPC error `HeaderMismatch` (2026-07-28 transport, "Server Validation").
pub const HEADER_MISMATCH_CODE: i64 = -32020;
/// The `_meta` key holding a request's protocol version (schema `RequestMetaObject`).
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// The Base64 sentinel of "Value Encoding": `=?base64?<standard Base64>?=`,
/// markers case-sensitive.
const BASE64_PREFIX: &str = "=?base64?";
const BASE64_SUFFIX: &str = "?=";

/// Standard Base64, padding optional on decode.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a request's headers do not match its body; the text is the JSON-RPC error
/// message (it quotes only what the client itself sent).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Header mismatch: {0}")]
pub struct HeaderMismatch(pub String);

/// Which body field `Mcp-Name` mirrors for `method`, when the revision requires it.
pub fn name_source(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// Checks the standard headers of one JSON-RPC message (`message`: the parsed
/// body) against it.
pub fn validate(headers: &HeaderMap, message: &Value) -> Result<(), HeaderMismatch> {
    let is_request = message.get("id").is_some_and(|id| !id.is_null());
    let method = message.get("method").and_then(Value::as_str);
    let params = message.get("params");

    let body_version = params
        .and_then(|p| p.get("_meta"))
        .and_then(|meta| meta.get(META_PROTOCOL_VERSION))
        .and_then(Value::as_str);
    check(
        "MCP-Protocol-Version",
        header_text(headers, &PROTOCOL_VERSION_HEADER)?,
        body_version,
        is_request,
    )?;
    check(
        "Mcp-Method",
        header_text(headers, &METHOD_HEADER)?,
        method,
        is_request,
    )?;
    let field = method.and_then(name_source);
    let header = header_text(headers, &NAME_HEADER)?;
    // On other methods the revision defines no Mcp-Name: it is left alone, like
    // any header the proxy does not recognize.
    let Some(field) = field else {
        return Ok(());
    };
    let body = params.and_then(|p| p.get(field)).and_then(Value::as_str);
    let decoded = header.map(decode_value).transpose()?;
    check("Mcp-Name", decoded.as_deref(), body, is_request)
}

/// A header whose value is not visible ASCII text is malformed.
fn header_text<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, HeaderMismatch> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(HeaderMismatch(format!(
            "{name} header is sent more than once"
        )));
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| HeaderMismatch(format!("{name} header value is not ASCII text")))
}

/// Compares a header with its body value. `required`: the header must be there
/// when the body has the value (requests); a header with no body value never
/// matches.
fn check(
    name: &str,
    header: Option<&str>,
    body: Option<&str>,
    required: bool,
) -> Result<(), HeaderMismatch> {
    match (header, body) {
        (Some(header), Some(body)) if header == body => Ok(()),
        (Some(header), Some(body)) => Err(HeaderMismatch(format!(
            "{name} header value '{header}' does not match body value '{body}'"
        ))),
        (Some(header), None) => Err(HeaderMismatch(format!(
            "{name} header value '{header}' has no value in the body to match"
        ))),
        (None, Some(_)) if required => Err(HeaderMismatch(format!("{name} header is required"))),
        (None, _) => Ok(()),
    }
}

/// Decodes a `=?base64?…?=` value ("Value Encoding"); any other value is itself.
pub fn decode_value(value: &str) -> Result<String, HeaderMismatch> {
    let Some(encoded) = value
        .strip_prefix(BASE64_PREFIX)
        .and_then(|rest| rest.strip_suffix(BASE64_SUFFIX))
    else {
        return Ok(value.to_owned());
    };
    let bytes = BASE64
        .decode(encoded)
        .map_err(|_| HeaderMismatch(format!("'{value}' is not valid Base64")))?;
    String::from_utf8(bytes)
        .map_err(|_| HeaderMismatch(format!("'{value}' does not decode to UTF-8 text")))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    fn request(method: &str, params: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    }

    fn with_meta(mut params: Value) -> Value {
        params["_meta"] = json!({ META_PROTOCOL_VERSION: "2026-07-28" });
        params
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        map
    }

    const VERSION: (&str, &str) = ("mcp-protocol-version", "2026-07-28");

    /// (case, message, headers, accepted)
    type Case<'a> = (&'a str, &'a Value, Vec<(&'a str, &'a str)>, bool);

    #[test]
    fn standard_headers_are_checked_against_the_body() {
        let list = request("tools/list", with_meta(json!({})));
        let call = request("tools/call", with_meta(json!({"name": "get_weather"})));
        let read = request("resources/read", with_meta(json!({"uri": "file:///a b"})));
        let unicode = request("prompts/get", with_meta(json!({"name": "Hello, 世界"})));
        let sentinel = request("tools/call", with_meta(json!({"name": "=?base64?x?="})));
        let no_meta = request("tools/list", json!({}));
        let notification = json!({"jsonrpc": "2.0", "method": "notifications/x"});
        let cases: Vec<Case> = vec![
            (
                "list ok",
                &list,
                vec![VERSION, ("mcp-method", "tools/list")],
                true,
            ),
            ("method missing", &list, vec![VERSION], false),
            (
                "method differs",
                &list,
                vec![VERSION, ("mcp-method", "tools/call")],
                false,
            ),
            (
                "method case differs",
                &list,
                vec![VERSION, ("mcp-method", "Tools/List")],
                false,
            ),
            (
                "version missing",
                &list,
                vec![("mcp-method", "tools/list")],
                false,
            ),
            (
                "version differs",
                &list,
                vec![
                    ("mcp-protocol-version", "2025-11-25"),
                    ("mcp-method", "tools/list"),
                ],
                false,
            ),
            (
                "meta version missing",
                &no_meta,
                vec![VERSION, ("mcp-method", "tools/list")],
                false,
            ),
            (
                "name on list is left alone",
                &list,
                vec![VERSION, ("mcp-method", "tools/list"), ("mcp-name", "x")],
                true,
            ),
            (
                "call ok",
                &call,
                vec![
                    VERSION,
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "get_weather"),
                ],
                true,
            ),
            (
                "call name missing",
                &call,
                vec![VERSION, ("mcp-method", "tools/call")],
                false,
            ),
            (
                "call name differs",
                &call,
                vec![VERSION, ("mcp-method", "tools/call"), ("mcp-name", "other")],
                false,
            ),
            (
                "call name base64",
                &call,
                vec![
                    VERSION,
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "=?base64?Z2V0X3dlYXRoZXI=?="),
                ],
                true,
            ),
            (
                "call name base64 unpadded",
                &call,
                vec![
                    VERSION,
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "=?base64?Z2V0X3dlYXRoZXI?="),
                ],
                true,
            ),
            (
                "call name base64 differs",
                &call,
                vec![
                    VERSION,
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "=?base64?b3RoZXI=?="),
                ],
                false,
            ),
            (
                "call name bad base64",
                &call,
                vec![
                    VERSION,
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "=?base64?!!!?="),
                ],
                false,
            ),
            (
                "upper-case sentinel is plain text",
                &call,
                vec![
                    VERSION,
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "=?BASE64?Z2V0X3dlYXRoZXI=?="),
                ],
                false,
            ),
            (
                "read uri base64",
                &read,
                vec![
                    VERSION,
                    ("mcp-method", "resources/read"),
                    ("mcp-name", "=?base64?ZmlsZTovLy9hIGI=?="),
                ],
                true,
            ),
            (
                "read uri plain",
                &read,
                vec![
                    VERSION,
                    ("mcp-method", "resources/read"),
                    ("mcp-name", "file:///a b"),
                ],
                true,
            ),
            (
                "prompt unicode base64",
                &unicode,
                vec![
                    VERSION,
                    ("mcp-method", "prompts/get"),
                    ("mcp-name", "=?base64?SGVsbG8sIOS4lueVjA==?="),
                ],
                true,
            ),
            (
                "sentinel-looking name encoded",
                &sentinel,
                vec![
                    VERSION,
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "=?base64?PT9iYXNlNjQ/eD89?="),
                ],
                true,
            ),
            (
                "method twice",
                &list,
                vec![
                    VERSION,
                    ("mcp-method", "tools/list"),
                    ("mcp-method", "tools/list"),
                ],
                false,
            ),
            (
                "params headers pass",
                &list,
                vec![
                    VERSION,
                    ("mcp-method", "tools/list"),
                    ("mcp-param-region", "us-west1"),
                ],
                true,
            ),
            ("notification bare", &notification, vec![], true),
            (
                "notification method differs",
                &notification,
                vec![("mcp-method", "notifications/y")],
                false,
            ),
        ];
        for (case, message, pairs, accepted) in cases {
            let outcome = validate(&headers(&pairs), message);
            assert_eq!(outcome.is_ok(), accepted, "{case}: {outcome:?}");
        }
    }

    #[test]
    fn non_ascii_header_values_are_malformed() {
        let list = request("tools/list", with_meta(json!({})));
        let mut map = headers(&[VERSION]);
        map.insert(
            METHOD_HEADER,
            HeaderValue::from_bytes(b"tools/\xfflist").unwrap(),
        );
        let error = validate(&map, &list).unwrap_err();
        assert!(error.to_string().contains("not ASCII"), "{error}");
    }

    #[test]
    fn mismatch_messages_name_the_header_and_both_values() {
        let call = request("tools/call", with_meta(json!({"name": "bar"})));
        let map = headers(&[VERSION, ("mcp-method", "tools/call"), ("mcp-name", "foo")]);
        assert_eq!(
            validate(&map, &call).unwrap_err().to_string(),
            "Header mismatch: Mcp-Name header value 'foo' does not match body value 'bar'"
        );
    }
}
