//! Where a worker's outputs go: straight to the broker (at-least-once), or into the
//! transactional outbox (exactly-once). Lanes call the same two methods either way,
//! so the processing path does not branch on the mode.

use std::sync::Arc;

use rdkafka::producer::FutureProducer;

use crate::kafka::TopicPartition;
use super::txn::Outbox;
use crate::publish::{Acks, Outgoing, Publisher};

#[derive(Clone)]
pub(crate) enum Sink {
    Direct(Publisher),
    Transactional { producer: FutureProducer, outbox: Arc<Outbox> },
}

impl Sink {
    /// Advisory outputs (started, progress): best effort.
    pub fn advise(&self, out: Outgoing) {
        match self {
            Sink::Direct(p) => p.send_advisory(&out),
            Sink::Transactional { outbox, .. } => outbox.advise(out),
        }
    }

    /// The outputs that settle record `offset` of `tp`, handed over without waiting.
    /// Direct: enqueued, with the acknowledgements the record must still wait for.
    /// Transactional: into the outbox (`None`: nothing to wait for; the transaction
    /// that commits the offset past this record carries them).
    pub async fn emit(&self, tp: &TopicPartition, offset: i64, outs: Vec<Outgoing>) -> Option<Acks> {
        match self {
            Sink::Direct(p) => Some(p.enqueue_all(outs).await),
            Sink::Transactional { outbox, .. } => {
                outbox.put(tp, offset, outs);
                None
            }
        }
    }
}
