//! Scripted runner (being written).
use super::{RunContext, Runner};
use crate::Failure;
use async_trait::async_trait;
use serde_json::Value;

/// Outcomes set per attempt by a test.
#[derive(Clone, Debug, Default)]
pub struct ScriptedRunner;

#[async_trait]
impl Runner for ScriptedRunner {
    async fn run(&self, _ctx: RunContext) -> Result<Value, Failure> {
        Ok(Value::Null)
    }
}
