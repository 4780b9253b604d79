//! `WireJson<T>`: reads a request body up to the configured limit and parses it, turning every
//! failure (too large, not JSON, wrong type) into an OpenAI error that names the field.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::config::RequestLimits;
use crate::error::ApiError;

pub struct WireJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for WireJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<RequestLimits>>()
            .map(|l| l.max_body_bytes)
            .unwrap_or(4 * 1024 * 1024);
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|n| n > limit) {
                return Err(ApiError::payload_too_large(limit));
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| {
                    ApiError::bad_json(format!("Could not read the request body: {e}"))
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(ApiError::payload_too_large(limit));
                }
                body.extend_from_slice(&chunk);
            }
            parse_body(&body).map(WireJson)
        })
    }
}

/// Parse JSON, reporting the path of a field with the wrong type as `param`.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_json(
            "The request body is empty; expected a JSON object.",
        ));
    }
    // Syntax errors first, so they are not reported as a field's fault.
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_json(format!(
            "We could not parse the JSON body of your request ({e}). Expected a JSON object."
        ))
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_json(
            "The request body must be a JSON object.",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e
            .into_inner()
            .to_string()
            .replace("usize", "a non-negative integer")
            .replace("u64", "a non-negative integer")
            .replace("u32", "a non-negative integer")
            .replace("i64", "an integer")
            .replace("f64", "a number")
            .replace("f32", "a number");
        if path == "." {
            // A missing required field: serde says which.
            let field = inner
                .split('`')
                .nth(1)
                .map(str::to_string)
                .unwrap_or_default();
            ApiError::invalid(field, format!("Invalid request: {inner}."))
        } else {
            let message = if inner.contains("untagged enum") {
                format!("Invalid type for `{path}`.")
            } else {
                format!("Invalid value for `{path}`: {inner}.")
            };
            ApiError::invalid(path, message)
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        model: String,
        n: Option<usize>,
        messages: Vec<Inner>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        role: String,
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = parse_body::<Body>(br#"{"model":"m","n":"two","messages":[]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("n"));
        let e = parse_body::<Body>(br#"{"model":"m","messages":[{"role":1}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = parse_body::<Body>(br#"{"messages":[]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
    }

    #[test]
    fn syntax_errors_are_bad_json_without_param() {
        let e = parse_body::<Body>(b"{nope").unwrap_err();
        assert_eq!(e.param, None);
        assert_eq!(e.status, 400);
        assert!(parse_body::<Body>(b"[1]").is_err());
        assert!(parse_body::<Body>(b"").is_err());
    }
}
