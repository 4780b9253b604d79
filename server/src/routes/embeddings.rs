//! `POST /v1/embeddings`.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use aiaas_engine::ModelKind;

use crate::admission::{Demand, RequestId, RequestMeta};
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::extract::WireJson;
use crate::openai::embeddings::{
    CreateEmbeddingRequest, EmbeddingData, EmbeddingList, EmbeddingUsage, EmbeddingVector,
};
use crate::routes::Observed;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/embeddings")
            .route(web::post().to(create_embeddings))
            .default_service(web::to(crate::routes::method_not_allowed)),
    );
}

pub async fn create_embeddings(
    req: HttpRequest,
    caller: Authenticated,
    state: web::Data<AppState>,
    WireJson(body): WireJson<CreateEmbeddingRequest>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let (request, format, user) = body.validate(&state.limits)?;
    let engine = state.engine()?;
    engine.require_kind(&request.model, &[ModelKind::Embedding], "/v1/embeddings")?;
    caller.require_model(&request.model)?;
    let estimate = async {
        let tokens = engine
            .count_embedding_tokens(&request.model, &request.input)
            .await?;
        Ok(Demand {
            prompt: tokens as u64,
            completion: 0,
        })
    };
    let meta = RequestMeta {
        request_id: RequestId::of(&req),
        model: request.model.clone(),
        endpoint: "/v1/embeddings",
        stream: false,
        user,
    };
    let mut admitted = state.gate.admit(&caller.0, meta, estimate).await?;
    let model = request.model.clone();
    let observed = Observed::new(&state, "/v1/embeddings", &model, started);
    let result = match engine.embed(request).await {
        Ok(result) => result,
        Err(err) => {
            let err = ApiError::from(err);
            admitted.abandon(err.status.as_u16());
            observed.finish(err.status.as_u16());
            return Err(err);
        }
    };
    admitted.finish(aiaas_engine::Usage {
        prompt_tokens: result.prompt_tokens,
        completion_tokens: 0,
    });
    observed.finish(200);
    state.metrics.record_usage(&model, result.prompt_tokens, 0);
    let data = result
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData {
            object: "embedding",
            index,
            embedding: EmbeddingVector::encode(v, format),
        })
        .collect();
    Ok(admitted.stamp(HttpResponse::Ok().json(EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens: result.prompt_tokens,
            total_tokens: result.prompt_tokens,
        },
    })))
}
