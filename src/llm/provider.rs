//! TEMPORARY STUB (to be replaced by the provider implementation).
use super::config::ProviderConfig;
use super::{InferContext, InferRequest, InferResponse, LlmError};

#[derive(Debug)]
pub struct Provider;

impl Provider {
    pub fn from_config(_cfg: &ProviderConfig) -> Result<Provider, LlmError> {
        Err(LlmError::Config("providers not built yet".into()))
    }
    pub async fn infer(&self, _req: &InferRequest, _ctx: &InferContext) -> Result<InferResponse, LlmError> {
        Err(LlmError::Config("providers not built yet".into()))
    }
}
