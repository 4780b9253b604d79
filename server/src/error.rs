//! `ApiError`: the one error type of `/v1`, always rendered as OpenAI's error object.
//!
//! Every refusal the API can make is a constructor here, and the mapping from engine errors to
//! HTTP lives in one exhaustive `match` (`From<EngineError>`), nowhere else.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use aiaas_admin::auth::AuthError;
use aiaas_engine::EngineError;
use serde::Serialize;

use crate::limits::{format_reset, Dimension, RateHeaders, Refusal};

/// An OpenAI-shaped error: `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {kind}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub retry_after_secs: Option<u64>,
    /// `x-should-retry: false`: waiting will not help (the SDKs then do not retry).
    pub no_retry: bool,
    /// Send `WWW-Authenticate: Bearer` (401s).
    pub www_authenticate: bool,
    /// Rate-limit details of a 429 (boxed: most errors have none).
    pub limit: Option<Box<LimitInfo>>,
}

/// What a rate-limit refusal adds to its response.
#[derive(Debug, Clone, Default)]
pub struct LimitInfo {
    /// `retry-after-ms`, which the OpenAI SDKs prefer to `Retry-After`.
    pub retry_after_ms: Option<u64>,
    /// `x-ratelimit-*` headers.
    pub rate: Option<RateHeaders>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after_secs: None,
            no_retry: false,
            www_authenticate: false,
            limit: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// 400 for a request that is well-formed JSON but asks for something invalid.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).with_param(param)
    }

    /// 400 for a parameter this server does not implement (never silently ignored).
    pub fn unsupported(param: &str, detail: &str) -> Self {
        Self::invalid(param, format!("`{param}` is not supported: {detail}"))
            .with_code("unsupported_parameter")
    }

    /// 400 for a body that is not valid JSON or does not match the schema.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    /// 401: no credential, or one that does not verify. Never says which, nor whether a key exists.
    pub fn unauthorized(missing: bool) -> Self {
        let message = if missing {
            "You didn't provide an API key. You need to provide your API key in an Authorization \
             header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        } else {
            "Incorrect API key provided."
        };
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
            .with_code("invalid_api_key");
        e.www_authenticate = true;
        e
    }

    /// 403: the credential is good but may not use this model.
    pub fn model_not_allowed(model: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            format!("Your credential is not allowed to use the model `{model}`."),
        )
        .with_param("model")
        .with_code("model_not_allowed")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "invalid_request_error", message)
            .with_code("insufficient_permissions")
    }

    pub fn wrong_model_kind(model: &str, endpoint: &str) -> Self {
        Self::invalid(
            "model",
            format!("The model `{model}` cannot be used with {endpoint}."),
        )
        .with_code("model_not_supported")
    }

    pub fn route_not_found(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Unknown request URL: {method} {path}."),
        )
        .with_code("unknown_url")
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("Method {method} is not allowed for {path}."),
        )
        .with_code("method_not_allowed")
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The request body is larger than the limit of {limit} bytes."),
        )
        .with_code("request_too_large")
    }

    pub fn context_length(param: &str, message: String) -> Self {
        Self::invalid(param, message).with_code("context_length_exceeded")
    }

    pub fn overloaded(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
            .with_code("server_overloaded");
        e.retry_after_secs = Some(retry_after_secs);
        e
    }

    /// 429 `rate_limit_exceeded`, phrased the way OpenAI phrases it.
    pub fn rate_limited(refusal: &Refusal, rate: RateHeaders) -> Self {
        let whom = refusal.kind.describe();
        let (message, wait) = match refusal.dimension {
            Dimension::Requests | Dimension::Tokens => {
                let (what, short) = if refusal.dimension == Dimension::Requests {
                    ("requests", "RPM")
                } else {
                    ("tokens", "TPM")
                };
                let wait = refusal.retry_after_us.unwrap_or(1_000_000);
                (
                    format!(
                        "Rate limit reached for {what} per minute ({short}) on {whom}: Limit {}, \
                         Requested {}. Please try again in {}.",
                        refusal.limit,
                        refusal.requested,
                        format_reset(wait)
                    ),
                    Some(wait),
                )
            }
            Dimension::Concurrency => (
                format!(
                    "Too many concurrent requests on {whom}: Limit {}. Please try again when one \
                     of them has finished.",
                    refusal.limit
                ),
                Some(refusal.retry_after_us.unwrap_or(1_000_000)),
            ),
            Dimension::TooLarge => (
                format!(
                    "Request too large for tokens per minute (TPM) on {whom}: Limit {}, Requested \
                     {}. Reduce the prompt or max_tokens so the request fits.",
                    refusal.limit, refusal.requested
                ),
                None,
            ),
        };
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "requests", message)
            .with_code("rate_limit_exceeded");
        let mut info = LimitInfo {
            retry_after_ms: None,
            rate: Some(rate),
        };
        match wait {
            Some(us) => {
                let ms = (us.max(0) as u64).div_ceil(1000).max(1);
                info.retry_after_ms = Some(ms);
                e.retry_after_secs = Some(ms.div_ceil(1000));
            }
            None => e.no_retry = true,
        }
        e.limit = Some(Box::new(info));
        e
    }

    /// 429 `insufficient_quota`: a budget cannot take this request in the current period.
    pub fn insufficient_quota(message: String, rate: Option<RateHeaders>) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", message)
            .with_code("insufficient_quota");
        e.no_retry = true;
        e.limit = Some(Box::new(LimitInfo {
            retry_after_ms: None,
            rate,
        }));
        e
    }

    /// 504: the request waited in the model's queue past its deadline; nothing ran or was billed.
    pub fn queue_timeout(waited_ms: u64) -> Self {
        let mut e = Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            format!(
                "The request waited {waited_ms} ms for the model without starting and was dropped \
                 (not billed). The server is busy; retry shortly."
            ),
        )
        .with_code("queue_timeout");
        e.retry_after_secs = Some(1);
        e
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The server had an error while processing your request.",
        )
        .with_code("internal_error")
    }

    /// The JSON value of the error object, as sent in bodies and in SSE error events.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(ErrorBody {
            error: ErrorObject {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        })
        .unwrap_or(serde_json::Value::Null)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after_secs {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if let Some(ms) = self.limit.as_ref().and_then(|l| l.retry_after_ms) {
            res.insert_header(("retry-after-ms", ms.to_string()));
        }
        if self.no_retry {
            res.insert_header(("x-should-retry", "false"));
        }

        if self.www_authenticate {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        let mut response = res.json(self.body());
        if let Some(rate) = self.limit.as_ref().and_then(|l| l.rate.as_ref()) {
            crate::admission::insert_rate_headers(response.headers_mut(), rate);
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::ModelNotFound(model) => ApiError::model_not_found(&model),
            EngineError::WrongKind { model, wanted } => ApiError::wrong_model_kind(&model, wanted),
            EngineError::InvalidRequest { param, message } => ApiError::invalid(param, message),
            EngineError::ContextLength { param, message } => {
                ApiError::context_length(param, message)
            }
            EngineError::Unsupported { param, detail } => ApiError::unsupported(param, &detail),
            EngineError::Overloaded => {
                ApiError::overloaded("The engine is overloaded, please retry shortly.", 1)
            }
            EngineError::QueueTimeout { waited_ms } => ApiError::queue_timeout(waited_ms),
            EngineError::Cancelled | EngineError::Internal(_) | EngineError::Load(_) => {
                tracing::error!(error = %err, "engine error");
                ApiError::internal()
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Refused(reason) => {
                tracing::debug!(reason, "credential refused");
                ApiError::unauthorized(false)
            }
            AuthError::Unavailable(cause) => {
                tracing::error!(error = %cause, "credential store unavailable");
                ApiError::overloaded(
                    "Credentials cannot be checked right now, please retry shortly.",
                    1,
                )
            }
        }
    }
}
