//! `/v1/models` wire types.

use aiaas_engine::ModelInfo;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

#[derive(Debug, Serialize)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// Extensions (ignored by SDKs): what the model serves and its context length.
    pub kind: &'static str,
    pub max_model_len: usize,
}

impl From<&ModelInfo> for ModelObject {
    fn from(m: &ModelInfo) -> Self {
        ModelObject {
            id: m.id.clone(),
            object: "model",
            created: m.created,
            owned_by: "aiaas",
            kind: m.kind.as_str(),
            max_model_len: m.max_seq_len,
        }
    }
}
