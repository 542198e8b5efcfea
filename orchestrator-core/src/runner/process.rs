//! Process runner (being written).
use super::{RunContext, Runner};
use crate::Failure;
use async_trait::async_trait;
use serde_json::Value;

/// Process runner settings.
#[derive(Clone, Debug, Default)]
pub struct ProcessConfig;

/// Runs a command.
#[derive(Clone, Debug, Default)]
pub struct ProcessRunner;

#[async_trait]
impl Runner for ProcessRunner {
    async fn run(&self, _ctx: RunContext) -> Result<Value, Failure> {
        Ok(Value::Null)
    }
}
