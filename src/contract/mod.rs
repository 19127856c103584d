//! The contract: an AsyncAPI 3.0 document generated from the code.
//!
//! Every schema in it comes from the types Courier itself encodes and decodes (the
//! envelope's `serde` + `schemars` derives) and from the handlers registered on a
//! [`Router`], so the document cannot describe a wire format the code does not speak.
//! `asyncapi/asyncapi.yaml` is the checked-in copy for the example router; a test
//! regenerates it and fails when it is stale, and CI runs the official AsyncAPI parser
//! over it.

mod document;
mod headers;
pub mod schemas;

pub use document::{asyncapi_document, headers_json};
pub use headers::{DeadLetterHeaders, EventHeaders, ResultHeaders, ResultType};

/// What the document says about the deployment.
#[derive(Debug, Clone)]
pub struct ContractInfo {
    pub title: String,
    pub version: String,
    /// Topic prefix used in channel addresses.
    pub prefix: String,
    /// Partitions and replicas documented in the Kafka channel bindings.
    pub partitions: i32,
    pub replicas: i32,
}

impl Default for ContractInfo {
    fn default() -> Self {
        ContractInfo {
            title: "Courier".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            prefix: "courier".into(),
            partitions: 6,
            replicas: 1,
        }
    }
}

/// Renders the document as YAML (stable key order, so regenerating is diff-free).
pub fn to_yaml(document: &serde_json::Value) -> String {
    serde_yaml_ng::to_string(document).unwrap_or_default()
}
