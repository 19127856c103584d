//! librdkafka's mock cluster as an embedded broker, so `courier dev` and `demo` run
//! with nothing installed. It lives in this process and dies with it; it is for
//! trying Courier out, never a substitute for tests against a real broker.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::kafka::{KafkaArgs, KafkaSetupError};
use crate::topics::{create_topics, TopicSpec};

/// A cluster to talk to: either the one the user named, or an in-process mock.
pub struct Embedded {
    /// Kept alive for as long as the mock cluster is needed.
    _mock: Option<MockCluster<'static, DefaultProducerContext>>,
    pub args: KafkaArgs,
}

impl Embedded {
    /// Uses `args.bootstrap` if set; otherwise starts a mock cluster. Either way,
    /// makes sure the topics exist.
    pub async fn start_or_connect(mut args: KafkaArgs, spec: &TopicSpec) -> Result<Self, KafkaSetupError> {
        if !args.bootstrap.trim().is_empty() {
            create_topics(&args, spec).await?;
            return Ok(Embedded { _mock: None, args });
        }
        let mock = MockCluster::new(1)?;
        args.bootstrap = mock.bootstrap_servers();
        let topics = args.topics();
        for name in crate::topics::all_topic_names(&topics, spec) {
            mock.create_topic(&name, spec.partitions, 1)?;
        }
        tracing::info!(bootstrap = %args.bootstrap, "embedded mock cluster started");
        Ok(Embedded { _mock: Some(mock), args })
    }

    pub fn is_mock(&self) -> bool {
        self._mock.is_some()
    }
}
