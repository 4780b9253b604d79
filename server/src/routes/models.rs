//! `GET /v1/models` and `GET /v1/models/{id}`.

use actix_web::{web, HttpResponse};

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::openai::models::{ModelList, ModelObject};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/models")
            .route(web::get().to(list_models))
            .default_service(web::to(crate::routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/models/{id:.+}")
            .route(web::get().to(get_model))
            .default_service(web::to(crate::routes::method_not_allowed)),
    );
}

/// The models the caller may use (a key's allowlist, narrowed by its token's).
pub async fn list_models(
    caller: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let data = engine
        .models()
        .iter()
        .filter(|m| caller.may_use(&m.id))
        .map(ModelObject::from)
        .collect();
    Ok(HttpResponse::Ok().json(ModelList {
        object: "list",
        data,
    }))
}

/// One model; a model the caller may not use is not found, as in the list.
pub async fn get_model(
    caller: Authenticated,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let info = engine
        .model_info(&id)
        .filter(|_| caller.may_use(&id))
        .ok_or_else(|| ApiError::model_not_found(&id))?;
    Ok(HttpResponse::Ok().json(ModelObject::from(&info)))
}
