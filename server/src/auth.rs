//! The `Authenticated` extractor: every `/v1` handler takes it first, so a request without a
//! valid credential is refused (401) before its body is read. Verification is served from the
//! `Authenticator`'s in-memory cache; only a key the cache has never seen costs a query.

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use aiaas_admin::auth::{AuthError, Caller};
use futures::future::{ready, Either, LocalBoxFuture, Ready};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::AppState;

/// The verified caller of a `/v1` request.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

impl Authenticated {
    /// 403 unless the key (and the token, if any) allows `model`.
    pub fn require_model(&self, model: &str) -> Result<(), ApiError> {
        if self.0.credential == aiaas_admin::auth::Credential::Operator {
            return Err(ApiError::forbidden(
                "An operator token reads usage; it cannot run models.",
            ));
        }
        if self.0.may_use(model) {
            Ok(())
        } else {
            Err(ApiError::model_not_allowed(model))
        }
    }

    pub fn may_use(&self, model: &str) -> bool {
        self.0.may_use(model)
    }
}

/// The credential of `Authorization: Bearer <credential>`, if the header has that shape.
fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
        .filter(|c| !c.is_empty())
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future =
        Either<Ready<Result<Self, ApiError>>, LocalBoxFuture<'static, Result<Self, ApiError>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return Either::Left(ready(Err(ApiError::internal())));
        };
        let Some(auth) = state.auth.as_ref() else {
            return Either::Left(ready(Ok(Authenticated(Caller::anonymous()))));
        };
        let Some(credential) = bearer(req) else {
            state
                .metrics
                .auth_refusals
                .with_label_values(&["missing credential"])
                .inc();
            return Either::Left(ready(Err(ApiError::unauthorized(true))));
        };
        // The hot path: decided from memory, no allocation of a future.
        if let Some(result) = auth.authenticate_hot(credential) {
            return Either::Left(ready(outcome(result, &state.metrics, req)));
        }
        let (auth, credential) = (auth.clone(), credential.to_string());
        let metrics = state.metrics.clone();
        let req = req.clone();
        Either::Right(Box::pin(async move {
            outcome(auth.authenticate(&credential).await, &metrics, &req)
        }))
    }
}

/// Whose limits a request runs under, left in the request's extensions by the extractor so the
/// response can carry `x-ratelimit-*` headers even when the handler refused before admission.
#[derive(Debug, Clone, Copy)]
pub struct LimitScope {
    pub tenant_id: i64,
    pub key_id: Option<i64>,
    pub key_limits: aiaas_admin::limits::Limits,
}

impl LimitScope {
    pub fn caller(&self) -> Caller {
        let mut caller = Caller::anonymous();
        caller.tenant_id = self.tenant_id;
        caller.key_id = self.key_id;
        caller.key_limits = self.key_limits;
        caller
    }
}

fn outcome(
    result: Result<Caller, AuthError>,
    metrics: &Metrics,
    req: &HttpRequest,
) -> Result<Authenticated, ApiError> {
    match &result {
        Err(AuthError::Refused(reason)) => {
            metrics.auth_refusals.with_label_values(&[reason]).inc();
        }
        Ok(caller) => {
            req.extensions_mut().insert(LimitScope {
                tenant_id: caller.tenant_id,
                key_id: caller.key_id,
                key_limits: caller.key_limits,
            });
        }
        Err(_) => {}
    }
    result.map(Authenticated).map_err(ApiError::from)
}
