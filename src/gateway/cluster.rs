//! Gateways as one group (`--group`): each owns some partitions of the status topic,
//! reads only those into its view, and answers for the operations in them; a request
//! for another partition is forwarded to its owner (`forward.rs`).
//!
//! The broker decides who owns what: the group is a Kafka consumer group over the
//! status topic (cooperative-sticky), so a gateway that joins takes some partitions
//! over and a dead one's partitions move once its session lapses. Its consumer only
//! keeps the membership (the partitions it is given are paused); the records are read
//! by a follower ([`crate::follow`]) over the owned partitions, restarted from where
//! it stood whenever the assignment changes. A partition is *ready* once read to the
//! end it had when it was assigned: until then the gateway does not answer for it.
//!
//! Where the other partitions are served is read from the group's description: each
//! member's client id carries the URL it advertises (`--advertise`), its assignment
//! the partitions it owns.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::members::{describe, CLIENT_ID_PREFIX};
use crate::kafka::{KafkaArgs, Partitioner};
use crate::view::Store;

/// How often the owners of other partitions are read again without being asked to.
const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// Who answers for a partition, as this gateway knows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owner {
    /// This gateway, caught up.
    Me,
    /// This gateway, still reading the partition to its end.
    Warming,
    /// Another member of the group, at this URL.
    Peer(String),
    /// No member owns it (a rebalance under way, or its owner's session not yet lapsed).
    Nobody,
}

/// Why a gateway could not join its group.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Setup(#[from] crate::kafka::KafkaSetupError),
    #[error("joining the gateway group {group}: {source}")]
    Kafka { group: String, source: rdkafka::error::KafkaError },
    #[error("the status topic {0} has no partitions (is it created? `courier topics create`)")]
    NoPartitions(String),
    #[error("the partitioner configured by --kafka-opt partitioner is not one Courier can compute; a gateway group needs one of consistent_random, murmur2_random, fnv1a_random")]
    Partitioner,
}

/// What the group consumer's callbacks and the rest of the gateway share.
struct Local {
    /// Partitions the group gave this gateway.
    assigned: BTreeSet<i32>,
    /// Those of them read to the end they had when assigned.
    ready: HashSet<i32>,
    /// Fired when a partition is revoked (or the gateway stops): long polls on it end
    /// and move.
    tokens: HashMap<i32, CancellationToken>,
}

struct Shared {
    local: Mutex<Local>,
    /// The gateway's shutdown: the parent of every partition's token.
    stop: CancellationToken,
    /// Bumped on every change of `local`.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

struct GroupContext {
    shared: Arc<Shared>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked = partitions_in(tpl);
            tracing::info!(partitions = ?revoked, "gateway partitions revoked");
            let mut local = self.shared.lock();
            for p in &revoked {
                local.assigned.remove(p);
                local.ready.remove(p);
                if let Some(token) = local.tokens.remove(p) {
                    token.cancel();
                }
            }
            drop(local);
            self.shared.bump();
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // The group consumer keeps the membership only; the follower reads.
            if let Err(e) = consumer.pause(tpl) {
                tracing::warn!(error = %e, "could not pause the gateway group's partitions");
            }
            let assigned = partitions_in(tpl);
            tracing::info!(partitions = ?assigned, "gateway partitions assigned");
            let mut local = self.shared.lock();
            for p in assigned {
                local.assigned.insert(p);
                local.tokens.entry(p).or_insert_with(|| self.shared.stop.child_token());
            }
            drop(local);
            self.shared.bump();
        }
    }
}

fn partitions_in(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// This gateway's place in its group.
pub(crate) struct Cluster {
    /// The URL this gateway advertises.
    me: String,
    group: String,
    partitions: i32,
    partitioner: Partitioner,
    shared: Arc<Shared>,
    /// The owner of every partition, by URL, as the group last described it.
    peers: RwLock<HashMap<i32, String>>,
    /// When `peers` was read last.
    described: Mutex<Option<Instant>>,
    /// The next offset the follower will read, per owned partition.
    read: Mutex<HashMap<i32, i64>>,
    consumer: Arc<BaseConsumer<GroupContext>>,
}

impl Cluster {
    /// Joins `group` over `topic` advertising `me`, and starts reading the partitions
    /// it is given into `store` until `stop`. Returns at once: partitions become ready
    /// as they are read (see [`Cluster::owner`]).
    pub(crate) async fn join(kafka: &KafkaArgs, topic: &str, group: &str, me: &str, store: Arc<Store>, stop: CancellationToken) -> Result<Arc<Cluster>, ClusterError> {
        let partitioner = Partitioner::configured(&kafka.kafka_opts).ok_or(ClusterError::Partitioner)?;
        let count = {
            let (kafka, topic) = (kafka.clone(), topic.to_string());
            tokio::task::spawn_blocking(move || crate::kafka::partition_count(&kafka, &topic))
                .await
                .map_err(|e| crate::kafka::KafkaSetupError::Thread(e.to_string()))??
        };
        let partitions = i32::try_from(count).unwrap_or(0);
        if partitions == 0 {
            return Err(ClusterError::NoPartitions(topic.to_string()));
        }
        let group_id = group_id(&kafka.prefix, group);
        let shared = Arc::new(Shared {
            local: Mutex::new(Local { assigned: BTreeSet::new(), ready: HashSet::new(), tokens: HashMap::new() }),
            stop: stop.clone(),
            changed: watch::channel(0).0,
        });
        let kafka_error = |source| ClusterError::Kafka { group: group_id.clone(), source };
        let mut cfg = kafka.client_config()?;
        // Set over any --kafka-opt: the other members find this one by its client id.
        cfg.set("group.id", &group_id);
        cfg.set("client.id", format!("{CLIENT_ID_PREFIX}{me}"));
        cfg.set("enable.auto.commit", "false");
        crate::kafka::set_default(&mut cfg, "partition.assignment.strategy", "cooperative-sticky");
        // A dead gateway's partitions move after this; the broker's minimum is 6 s.
        crate::kafka::set_default(&mut cfg, "session.timeout.ms", "6000");
        crate::kafka::set_default(&mut cfg, "heartbeat.interval.ms", "1000");
        let consumer: BaseConsumer<GroupContext> = cfg.create_with_context(GroupContext { shared: shared.clone() }).map_err(kafka_error)?;
        consumer.subscribe(&[topic]).map_err(kafka_error)?;
        let consumer = Arc::new(consumer);
        let cluster = Arc::new(Cluster {
            me: me.to_string(),
            group: group_id,
            partitions,
            partitioner,
            shared,
            peers: RwLock::new(HashMap::new()),
            described: Mutex::new(None),
            read: Mutex::new(HashMap::new()),
            consumer: consumer.clone(),
        });
        std::thread::Builder::new()
            .name("courier-gateway-group".into())
            .spawn({
                let stop = stop.clone();
                move || keep_membership(&consumer, &stop)
            })
            .map_err(|e| crate::kafka::KafkaSetupError::Thread(e.to_string()))?;
        tokio::spawn(follow_owned(cluster.clone(), kafka.clone(), topic.to_string(), store, stop));
        tracing::info!(group = %cluster.group, advertise = %cluster.me, partitions, "joining the gateway group");
        Ok(cluster)
    }

    /// The URL this gateway advertises.
    pub(crate) fn me(&self) -> &str {
        &self.me
    }

    /// The status partition an operation's snapshots land in.
    pub(crate) fn partition_of_id(&self, id: &Uuid) -> i32 {
        self.partition_of(id.to_string().as_bytes())
    }

    /// The status partition of a record keyed `key`.
    pub(crate) fn partition_of(&self, key: &[u8]) -> i32 {
        self.partitioner.partition(key, self.partitions).unwrap_or(0)
    }

    /// A fresh operation id whose snapshots land in `partition`: an operation created
    /// under an idempotency key lives in the key's partition, so the key's owner reads
    /// every operation that could have claimed it. About as many tries as partitions.
    pub(crate) fn id_in(&self, partition: i32) -> Uuid {
        let tries = 64 * self.partitions.max(1);
        for _ in 0..tries {
            let id = crate::envelope::new_id();
            if self.partition_of_id(&id) == partition {
                return id;
            }
        }
        tracing::error!(partition, tries, "no id found for a partition; using one elsewhere");
        crate::envelope::new_id()
    }

    /// Who answers for `partition` now.
    pub(crate) fn owner(&self, partition: i32) -> Owner {
        {
            let local = self.shared.lock();
            if local.assigned.contains(&partition) {
                return if local.ready.contains(&partition) { Owner::Me } else { Owner::Warming };
            }
        }
        match self.peers.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&partition) {
            Some(url) if *url != self.me => Owner::Peer(url.clone()),
            _ => Owner::Nobody,
        }
    }

    /// Every partition by who answers for it.
    pub(crate) fn owners(&self) -> HashMap<i32, Owner> {
        (0..self.partitions).map(|p| (p, self.owner(p))).collect()
    }

    /// The partitions this gateway answers for (owned and ready).
    pub(crate) fn ready(&self) -> HashSet<i32> {
        self.shared.lock().ready.clone()
    }

    /// Fires when `partition` stops being this gateway's, or the gateway stops; `None`
    /// if it is not this gateway's now.
    pub(crate) fn revoked(&self, partition: i32) -> Option<CancellationToken> {
        let local = self.shared.lock();
        local.ready.contains(&partition).then(|| local.tokens.get(&partition).cloned()).flatten()
    }

    /// Waits until ownership changes here, or `timeout` passes.
    pub(crate) async fn changed(&self, timeout: Duration) {
        let mut rx = self.shared.changed.subscribe();
        let _ = tokio::time::timeout(timeout, rx.changed()).await;
    }

    /// Reads who owns what from the group again, unless it was read in the last
    /// `fresh`.
    pub(crate) async fn refresh(&self, fresh: Duration) {
        {
            let mut at = self.described.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if at.is_some_and(|t| t.elapsed() < fresh) {
                return;
            }
            *at = Some(Instant::now());
        }
        let (consumer, group) = (self.consumer.clone(), self.group.clone());
        let described = tokio::task::spawn_blocking(move || describe(&consumer, &group)).await;
        match described {
            Ok(Ok(Some(owners))) => *self.peers.write().unwrap_or_else(std::sync::PoisonError::into_inner) = owners,
            Ok(Ok(None)) => tracing::debug!("gateway group is rebalancing; keeping the owners known"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not describe the gateway group"),
            Err(e) => tracing::warn!(error = %e, "describing the gateway group"),
        }
    }

    /// Waits until this gateway has read `partition` up to the end it has now (at most
    /// `within`): an operation another gateway just created is then known here.
    pub(crate) async fn catch_up(&self, partition: i32, topic: &str, within: Duration) {
        let (consumer, name) = (self.consumer.clone(), topic.to_string());
        let high = tokio::task::spawn_blocking(move || consumer.fetch_watermarks(&name, partition, Duration::from_secs(2)).map(|(_, h)| h)).await;
        let Ok(Ok(high)) = high else { return };
        let until = Instant::now() + within;
        while Instant::now() < until {
            let at = self.read.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&partition).copied().unwrap_or(0);
            if at >= high {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Drops what the view holds of partitions no longer owned, if it is in memory
    /// (they would be read again from their start should they return).
    fn forget(&self, store: &Store, gone: &BTreeSet<i32>) {
        if store.forget(|id| gone.contains(&self.partition_of_id(id))) {
            self.read.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|p, _| !gone.contains(p));
            tracing::info!(partitions = ?gone, "operations of partitions no longer owned dropped from memory");
        }
    }

    fn note_read(&self, partition: i32, offset: i64) {
        self.read.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(partition, offset + 1);
    }
}

/// The partitions a request forwarded for gathering may answer from: those its
/// gateway owns. The list, batch and purge routes read it.
#[derive(Clone)]
pub(crate) struct LocalOnly {
    pub(super) cluster: Arc<Cluster>,
    pub(super) owned: std::collections::HashSet<i32>,
}

impl LocalOnly {
    pub(super) fn holds(&self, id: &Uuid) -> bool {
        self.owned.contains(&self.cluster.partition_of_id(id))
    }
}

/// The Kafka group of the gateways called `name` in the deployment under `prefix`.
pub(crate) fn group_id(prefix: &str, name: &str) -> String {
    format!("{prefix}.gateways.{name}")
}

/// Polls the group consumer (which serves its rebalance callbacks) until `stop`,
/// then leaves the group, so the partitions move at once rather than after the session.
fn keep_membership(consumer: &BaseConsumer<GroupContext>, stop: &CancellationToken) {
    while !stop.is_cancelled() {
        match consumer.poll(Duration::from_millis(100)) {
            // Fetched before its partition was paused; the follower reads it.
            Some(Ok(_)) | None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "gateway group consumer"),
        }
    }
    consumer.unsubscribe();
    // Serves the revoke and sends the leave.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if consumer.poll(Duration::from_millis(50)).is_none() && consumer.assignment().is_ok_and(|a| a.count() == 0) {
            break;
        }
    }
    tracing::info!("left the gateway group");
}

/// Reads the owned partitions into `store` until `stop`. Every change of the
/// assignment restarts the follower over the new set, each partition from where it
/// stood (a partition never read here from its start, or from the store's
/// checkpoint on disk); a partition becomes ready when the follower has caught up.
async fn follow_owned(cluster: Arc<Cluster>, kafka: KafkaArgs, topic: String, store: Arc<Store>, stop: CancellationToken) {
    let mut changes = cluster.shared.changed.subscribe();
    let mut current: Option<(BTreeSet<i32>, CancellationToken, tokio::task::JoinHandle<()>)> = None;
    let mut refresh = tokio::time::interval(REFRESH_EVERY);
    loop {
        let wanted = cluster.shared.lock().assigned.clone();
        if current.as_ref().map(|(set, _, _)| set) != Some(&wanted) {
            if let Some((held, old, task)) = current.take() {
                old.cancel();
                // Nothing of a partition no longer owned may arrive after it is dropped.
                let _ = task.await;
                let gone: BTreeSet<i32> = held.difference(&wanted).copied().collect();
                if !gone.is_empty() {
                    cluster.forget(&store, &gone);
                }
            }
            if !wanted.is_empty() {
                let reader_stop = stop.child_token();
                if let Some(task) = start_reader(&cluster, &kafka, &topic, &store, &wanted, reader_stop.clone()).await {
                    current = Some((wanted, reader_stop, task));
                }
            }
            cluster.refresh(Duration::ZERO).await;
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = refresh.tick() => cluster.refresh(REFRESH_EVERY / 2).await,
            _ = stop.cancelled() => return,
        }
    }
}

/// Starts a follower of `partitions`, and marks them ready once it has caught up
/// (those still assigned then); the follower's task (`None` if `stop` fired first).
async fn start_reader(
    cluster: &Arc<Cluster>,
    kafka: &KafkaArgs,
    topic: &str,
    store: &Arc<Store>,
    partitions: &BTreeSet<i32>,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut positions = store.positions().ok().flatten().unwrap_or_default();
    positions.extend(cluster.read.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().filter(|(p, _)| partitions.contains(p)).map(|(p, o)| (*p, *o)));
    let list: Vec<i32> = partitions.iter().copied().collect();
    let (sink, noted) = (store.clone(), cluster.clone());
    let on_record = move |seen: crate::follow::Seen<'_>| {
        crate::view::apply_record(&sink, &seen);
        noted.note_read(seen.partition(), seen.offset());
    };
    let started = Instant::now();
    let following = loop {
        match crate::follow::spawn_partitions(kafka, topic, &list, positions.clone(), stop.clone(), on_record.clone()).await {
            Ok(f) => break f,
            Err(e) => {
                tracing::warn!(error = %e, partitions = ?list, "could not start reading the owned status partitions; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return None,
                }
            }
        }
    };
    let (caught_up, task) = following.split();
    let cluster = cluster.clone();
    let store = store.clone();
    tokio::spawn(async move {
        if caught_up.await.is_err() {
            return;
        }
        store.flush();
        let mut local = cluster.shared.lock();
        let newly: Vec<i32> = list.iter().copied().filter(|p| local.assigned.contains(p) && !local.ready.contains(p)).collect();
        local.ready.extend(newly.iter().copied());
        let ready: Vec<i32> = local.ready.iter().copied().collect();
        drop(local);
        cluster.shared.bump();
        tracing::info!(partitions = ?ready, newly = ?newly, elapsed = ?started.elapsed(), "gateway partitions ready");
    });
    Some(task)
}
