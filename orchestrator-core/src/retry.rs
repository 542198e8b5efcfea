//! Retry policies. (Contract only: the full implementation is being written.)

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::failure::FailureClass;
use crate::validate::{Problem, ValidationErrors};

/// Inputs of one retry decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryContext {
    /// The attempt that just failed, counting from 1.
    pub attempt: u32,
    /// Its failure class.
    pub class: FailureClass,
    /// Stable per (job, node): see [`seed_for`].
    pub seed: u64,
    /// Time since the node's first attempt started.
    pub elapsed: Duration,
}

/// Decides whether and when a failed attempt is retried.
pub trait RetryPolicy: Send + Sync + fmt::Debug {
    /// The delay before the next attempt, or `None` to stop retrying.
    fn next_delay(&self, ctx: &RetryContext) -> Option<Duration>;
    /// The most attempts this policy allows, the first included.
    fn max_attempts(&self) -> u32;
}

/// Serde form of a retry policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Most attempts, the first included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Backoff shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<serde_json::Value>,
    /// Extra.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_class: BTreeMap<FailureClass, serde_json::Value>,
    /// Cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<HumanDuration>,
}

/// Engine-wide defaults for policies.
#[derive(Clone, Debug)]
pub struct RetryDefaults {
    /// Default most attempts (3).
    pub max_attempts: u32,
    /// Default cap on one delay (300 s).
    pub max_delay: Duration,
}

impl Default for RetryDefaults {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            max_delay: Duration::from_secs(300),
        }
    }
}

/// Custom policies by name.
#[derive(Clone, Debug, Default)]
pub struct PolicyRegistry {
    custom: HashMap<String, Arc<dyn RetryPolicy>>,
}

impl PolicyRegistry {
    /// Registers a custom policy.
    pub fn register(&mut self, name: impl Into<String>, policy: Arc<dyn RetryPolicy>) {
        self.custom.insert(name.into(), policy);
    }
    /// Looks up a custom policy.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn RetryPolicy>> {
        self.custom.get(name)
    }
}

impl RetrySpec {
    /// Appends this spec's problems to `out`; `path` is where it sits.
    pub fn check(&self, path: &str, policies: &PolicyRegistry, out: &mut Vec<Problem>) {
        let _ = (path, policies, out);
    }

    /// Compiles into a policy.
    pub fn compile(
        &self,
        defaults: &RetryDefaults,
        policies: &PolicyRegistry,
    ) -> Result<Arc<dyn RetryPolicy>, ValidationErrors> {
        let _ = (policies, defaults);
        Err(ValidationErrors(vec![]))
    }
}

/// The jitter seed of a node.
pub fn seed_for(job: &crate::time::JobId, node: u32) -> u64 {
    crate::time::mix64(crate::time::stable_hash(job.as_str().as_bytes()) ^ u64::from(node))
}
