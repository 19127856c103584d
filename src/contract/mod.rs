//! The contract: an AsyncAPI 3.0 document generated from the code.
//!
//! Every schema in it comes from the types Courier itself encodes and decodes (the
//! envelope's `serde` + `schemars` derives) and from the handlers registered on a
//! [`Router`](crate::Router), so the document cannot describe a wire format the code
//! does not speak. Its examples are encoded by the same functions that encode real
//! records. `asyncapi/asyncapi.yaml` is the checked-in copy for the example router; a
//! test regenerates it and fails when it is stale, and CI runs the official AsyncAPI
//! parser over it. See `docs/CONTRACT.md`.
//!
//! - [`schemas`]: schemars output made draft-07 and hoisted into `components/schemas`.
//! - `headers`: schemas of the headers Courier writes beyond [`CommandHeaders`](crate::envelope::CommandHeaders).
//! - `examples`: fixed-id sample records, so regenerating is diff-free.
//! - `messages`: one message per record kind, headers pinned by `ce_type`.
//! - `document`: servers, channels and operations around them.

mod document;
mod examples;
mod headers;
mod messages;
pub mod schemas;

pub use document::asyncapi_document;
pub use examples::headers_json;
pub use headers::{DeadLetterHeaders, EventHeaders, RedeliveryHeaders, ResultHeaders, ResultType};

use crate::topics::TopicSpec;

/// What the document says about the deployment: its name, the topic prefix, and the
/// topic settings shown in the Kafka bindings.
#[derive(Debug, Clone)]
pub struct ContractInfo {
    /// `info.title` of the document.
    pub title: String,
    /// `info.version`: the version of the service the document describes.
    pub version: String,
    /// Topic prefix used in channel addresses.
    pub prefix: String,
    /// Partitions and replicas documented in the Kafka channel bindings.
    pub partitions: i32,
    pub replicas: i32,
    /// `retention.ms` of the topics that are neither compacted nor the DLQ.
    pub retention_ms: u64,
    /// Retry tier names (`1s`, `10s`, `1m`): the values of the retry channel's `tier`.
    pub retry_tiers: Vec<String>,
}

impl Default for ContractInfo {
    /// What `courier topics create` makes with no flags, under the prefix `courier`.
    fn default() -> Self {
        let spec = TopicSpec::default();
        ContractInfo {
            title: "Courier".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            prefix: "courier".into(),
            partitions: spec.partitions,
            replicas: spec.replication,
            retention_ms: spec.retention_hours * 3_600_000,
            retry_tiers: spec.retry_tiers.iter().map(|d| crate::duration::format_duration(*d)).collect(),
        }
    }
}

/// Why the document could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("rendering the AsyncAPI document as YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
}

/// Renders the document as YAML with every map's keys sorted, so regenerating an
/// unchanged contract is diff-free whatever features `serde_json` was built with (its
/// `preserve_order` would otherwise keep insertion order).
pub fn to_yaml(document: &serde_json::Value) -> Result<String, ContractError> {
    Ok(serde_yaml_ng::to_string(&sorted(document))?)
}

fn sorted(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let by_key: std::collections::BTreeMap<_, _> = map.iter().map(|(k, v)| (k.clone(), sorted(v))).collect();
            Value::Object(by_key.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}
