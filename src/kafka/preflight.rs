//! What a component checks before it starts: its topics exist, and the cluster lets
//! its principal do what it will do to them. On a cluster with ACLs a missing grant
//! otherwise surfaces late and far from its cause (a produce that fails on the first
//! command, a group join that retries forever); here it stops the start with the
//! topic or group and the operation to grant.
//!
//! The broker tells a client which operations it may perform on a topic or a group
//! (KIP-430: DescribeTopics and DescribeConsumerGroups with authorized operations).
//! A cluster without an authorizer answers "everything"; one that cannot say (an old
//! broker, librdkafka's mock cluster) is trusted: the check only ever refuses on a
//! definite answer.

use std::ffi::{c_char, c_int, CStr, CString};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::{partitions_of, refused, KafkaArgs, KafkaSetupError};

/// An operation a component performs, as Kafka's ACLs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Read,
    Write,
    Describe,
}

impl Operation {
    fn acl(self) -> rd::rd_kafka_AclOperation_t {
        match self {
            Operation::Read => rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_READ,
            Operation::Write => rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_WRITE,
            Operation::Describe => rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_DESCRIBE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Operation::Read => "READ",
            Operation::Write => "WRITE",
            Operation::Describe => "DESCRIBE",
        }
    }
}

/// What a component will do to which topics and consumer groups.
#[derive(Debug, Default, Clone)]
pub(crate) struct Needs {
    topics: Vec<(String, Vec<Operation>)>,
    groups: Vec<(String, Vec<Operation>)>,
}

impl Needs {
    pub fn new() -> Self {
        Needs::default()
    }

    /// The topic must exist and allow `operations`.
    pub fn topic(mut self, name: impl Into<String>, operations: &[Operation]) -> Self {
        self.topics.push((name.into(), operations.to_vec()));
        self
    }

    /// Topics of one kind (retry tiers), each allowing `operations`.
    pub fn topics<'a>(mut self, names: impl IntoIterator<Item = &'a String>, operations: &[Operation]) -> Self {
        for name in names {
            self = self.topic(name.clone(), operations);
        }
        self
    }

    /// A consumer group the component joins and commits in: READ on it.
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.groups.push((name.into(), vec![Operation::Read]));
        self
    }

    /// The groups of the component's followers (`crate::follow`), which are never joined
    /// but whose coordinator librdkafka looks up: DESCRIBE on one of them stands for
    /// all (they share a prefix an ACL grants).
    pub fn followers(mut self, prefix: &str) -> Self {
        self.groups.push((format!("{}check", super::follower_group_prefix(prefix)), vec![Operation::Describe]));
        self
    }
}

/// How long one describe request may take: a cluster that does not answer in this
/// time is not refused, it is reached again by the component itself.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks `needs` against the cluster: every topic exists (`MissingTopic`), and the
/// broker, where it says, allows each operation (`Denied`, listing every grant that
/// is missing, not only the first). Credentials the cluster refuses end the check at
/// once (`Unauthenticated`). Runs on a blocking thread: what a component's start
/// awaits.
pub(crate) async fn check(kafka: &KafkaArgs, needs: Needs) -> Result<(), KafkaSetupError> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || check_blocking(&kafka, &needs)).await.map_err(|e| KafkaSetupError::Thread(e.to_string()))?
}

fn check_blocking(kafka: &KafkaArgs, needs: &Needs) -> Result<(), KafkaSetupError> {
    let client: BaseConsumer = kafka.client_config()?.create()?;
    let brokers = match needs.topics.first() {
        Some((topic, _)) => connect(&client, topic)?,
        None => Vec::new(),
    };
    let mut missing = Vec::new();
    for (topic, operations) in &needs.topics {
        match partitions_of(&client, topic) {
            // Not even DESCRIBE: what to grant is what the component does.
            Err(KafkaSetupError::Denied { .. }) => missing.push(grant(operations, "topic", topic)),
            other => drop(other?),
        }
    }
    let native = client.client().native_ptr();
    // librdkafka sends describe requests to the controller. A cluster whose
    // controller is none of its brokers (librdkafka's mock cluster, which `courier
    // dev` runs, names broker 0 of brokers 1..n) would only make them wait out their
    // timeout; it cannot say what it allows either.
    // SAFETY: `native` is the live client of `client`.
    let controller = unsafe { rd::rd_kafka_controllerid(native, CONTROLLER_WAIT.as_millis() as c_int) };
    if !brokers.contains(&controller) {
        tracing::debug!(controller, ?brokers, "the cluster's controller is none of its brokers; what it allows is not checked");
        return denied(missing);
    }
    for (what, kind, wanted) in [(Describe::Topics, "topic", &needs.topics), (Describe::Groups, "consumer group", &needs.groups)] {
        if wanted.is_empty() {
            continue;
        }
        let names: Vec<&str> = wanted.iter().map(|(n, _)| n.as_str()).collect();
        match describe(native, what, &names) {
            Ok(answers) => {
                for (name, operations) in wanted {
                    let answer = answers.iter().find(|a| a.name == *name);
                    if let Some(denied) = lacking(kind, name, operations, answer)? {
                        if !missing.contains(&denied) {
                            missing.push(denied);
                        }
                    }
                }
            }
            Err(reason) => tracing::debug!(kind, %reason, "the cluster cannot say what this principal may do; not checked"),
        }
    }
    denied(missing)
}

/// How long to wait for the controller's id: the metadata `connect` fetched carries it.
const CONTROLLER_WAIT: Duration = Duration::from_millis(500);

fn denied(missing: Vec<String>) -> Result<(), KafkaSetupError> {
    if missing.is_empty() {
        Ok(())
    } else {
        Err(KafkaSetupError::Denied { missing: missing.join("; ") })
    }
}

/// How long the cluster has to answer a first metadata request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until the cluster answers a metadata request (about `topic`, so a large
/// cluster is not asked for all of its topics); the ids of its brokers. A refused login or TLS handshake
/// ends the wait at once: librdkafka reports it as an error event on the client's
/// main queue (it has no group), while the request itself would only time out.
fn connect(client: &BaseConsumer, topic: &str) -> Result<Vec<i32>, KafkaSetupError> {
    let deadline = std::time::Instant::now() + CONNECT_TIMEOUT;
    loop {
        let answer = client.fetch_metadata(Some(topic), Duration::from_secs(2));
        while let Some(event) = client.poll(Duration::ZERO) {
            if let Err(e) = event {
                refused(&e)?;
                tracing::debug!(error = %e, "while connecting to the cluster");
            }
        }
        match answer {
            Ok(metadata) => return Ok(metadata.brokers().iter().map(|b| b.id()).collect()),
            Err(e) => {
                refused(&e)?;
                if std::time::Instant::now() >= deadline {
                    return Err(e.into());
                }
            }
        }
    }
}

/// The grant one resource lacks, by the broker's answer for it (`None`: nothing, or
/// the broker did not say).
fn lacking(kind: &'static str, name: &str, operations: &[Operation], answer: Option<&Answer>) -> Result<Option<String>, KafkaSetupError> {
    let Some(answer) = answer else { return Ok(None) };
    match answer.error {
        None => {}
        // Not even DESCRIBE, which any of the operations would imply.
        Some(RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::GroupAuthorizationFailed) => return Ok(Some(grant(operations, kind, name))),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => return Err(KafkaSetupError::MissingTopic(name.to_string())),
        Some(other) => {
            tracing::debug!(kind, %name, error = %other, "describe answered an error; not checked");
            return Ok(None);
        }
    }
    // No list: the broker did not say (not asked, or cannot); trusted.
    let Some(allowed) = &answer.operations else { return Ok(None) };
    if allowed.contains(&(rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ALL as i32)) {
        return Ok(None);
    }
    let absent: Vec<Operation> = operations.iter().copied().filter(|op| !allowed.contains(&(op.acl() as i32))).collect();
    Ok((!absent.is_empty()).then(|| grant(&absent, kind, name)))
}

/// A grant as the error names it: `READ, WRITE on topic p.commands`.
fn grant(operations: &[Operation], kind: &str, name: &str) -> String {
    let ops: Vec<&str> = operations.iter().map(|o| o.name()).collect();
    format!("{} on {kind} {name}", ops.join(", "))
}

#[derive(Clone, Copy)]
enum Describe {
    Topics,
    Groups,
}

/// One described resource: its error, if any, and the operations the broker says
/// this principal may perform (`None` when it did not say).
struct Answer {
    name: String,
    error: Option<RDKafkaErrorCode>,
    operations: Option<Vec<i32>>,
}

/// Asks the broker to describe `names`, with authorized operations, on a queue of
/// our own, and waits for the answer. `Err` when the request as a whole failed.
fn describe(rk: *mut rd::rd_kafka_t, what: Describe, names: &[&str]) -> Result<Vec<Answer>, String> {
    let owned: Vec<CString> = names.iter().map(|n| CString::new(*n).map_err(|_| "a name holds a NUL byte".to_string())).collect::<Result<_, _>>()?;
    let mut pointers: Vec<*const c_char> = owned.iter().map(|n| n.as_ptr()).collect();
    let op = match what {
        Describe::Topics => rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        Describe::Groups => rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
    };
    let timeout = DESCRIBE_TIMEOUT.as_millis() as c_int;
    // SAFETY: `rk` is the live client of the caller's `BaseConsumer`, which outlives
    // this call; every object made here is destroyed here, after its last use; the
    // name pointers stay valid while `owned` lives (to the end of the function), and
    // librdkafka copies what it keeps of them.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        let options = rd::rd_kafka_AdminOptions_new(rk, op);
        let mut errstr = [0 as c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(options, timeout, errstr.as_mut_ptr(), errstr.len());
        let set = rd::rd_kafka_AdminOptions_set_include_authorized_operations(options, 1);
        if !set.is_null() {
            rd::rd_kafka_error_destroy(set);
        }
        match what {
            Describe::Topics => {
                let collection = rd::rd_kafka_TopicCollection_of_topic_names(pointers.as_mut_ptr(), pointers.len());
                rd::rd_kafka_DescribeTopics(rk, collection, options, queue);
                rd::rd_kafka_TopicCollection_destroy(collection);
            }
            Describe::Groups => rd::rd_kafka_DescribeConsumerGroups(rk, pointers.as_mut_ptr(), pointers.len(), options, queue),
        }
        let event = rd::rd_kafka_queue_poll(queue, timeout + 2000);
        let answers = if event.is_null() { Err("no answer in time".to_string()) } else { read_answers(event, what) };
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_queue_destroy(queue);
        answers
    }
}

/// The answers in a describe result event.
///
/// # Safety
/// `event` must be a live result event of the `what` request.
unsafe fn read_answers(event: *mut rd::rd_kafka_event_t, what: Describe) -> Result<Vec<Answer>, String> {
    let err = rd::rd_kafka_event_error(event);
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Err(text(rd::rd_kafka_event_error_string(event)));
    }
    let mut count = 0usize;
    let mut answers = Vec::new();
    match what {
        Describe::Topics => {
            let result = rd::rd_kafka_event_DescribeTopics_result(event);
            if result.is_null() {
                return Err("not a DescribeTopics result".into());
            }
            let topics = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
            for i in 0..count {
                let t = *topics.add(i);
                let mut n = 0usize;
                let ops = rd::rd_kafka_TopicDescription_authorized_operations(t, &mut n);
                answers.push(Answer { name: text(rd::rd_kafka_TopicDescription_name(t)), error: code(rd::rd_kafka_TopicDescription_error(t)), operations: list(ops, n) });
            }
        }
        Describe::Groups => {
            let result = rd::rd_kafka_event_DescribeConsumerGroups_result(event);
            if result.is_null() {
                return Err("not a DescribeConsumerGroups result".into());
            }
            let groups = rd::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut count);
            for i in 0..count {
                let g = *groups.add(i);
                let mut n = 0usize;
                let ops = rd::rd_kafka_ConsumerGroupDescription_authorized_operations(g, &mut n);
                answers.push(Answer { name: text(rd::rd_kafka_ConsumerGroupDescription_group_id(g)), error: code(rd::rd_kafka_ConsumerGroupDescription_error(g)), operations: list(ops, n) });
            }
        }
    }
    Ok(answers)
}

/// # Safety
/// `p` is null or a NUL-terminated string librdkafka owns for the call's duration.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// # Safety
/// `e` is null or a live librdkafka error.
unsafe fn code(e: *const rd::rd_kafka_error_t) -> Option<RDKafkaErrorCode> {
    if e.is_null() {
        return None;
    }
    let c = rd::rd_kafka_error_code(e);
    (c != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| c.into())
}

/// # Safety
/// `ops` is null or points at `n` operations.
unsafe fn list(ops: *const rd::rd_kafka_AclOperation_t, n: usize) -> Option<Vec<i32>> {
    if ops.is_null() || n == 0 {
        return None;
    }
    Some((0..n).map(|i| *ops.add(i) as i32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rd::rd_kafka_AclOperation_t as Acl;

    fn answer(error: Option<RDKafkaErrorCode>, operations: Option<&[Acl]>) -> Answer {
        Answer { name: "p.results".into(), error, operations: operations.map(|o| o.iter().map(|a| *a as i32).collect()) }
    }

    #[test]
    fn a_grant_is_missing_only_on_a_definite_answer() {
        use Operation::{Read, Write};
        let rw = [Read, Write];
        let lacks = |a: Answer| lacking("topic", "p.results", &rw, Some(&a)).unwrap();
        assert_eq!(lacks(answer(None, Some(&[Acl::RD_KAFKA_ACL_OPERATION_READ, Acl::RD_KAFKA_ACL_OPERATION_DESCRIBE]))), Some("WRITE on topic p.results".into()));
        assert_eq!(lacks(answer(None, Some(&[Acl::RD_KAFKA_ACL_OPERATION_READ, Acl::RD_KAFKA_ACL_OPERATION_WRITE]))), None);
        assert_eq!(lacks(answer(None, Some(&[Acl::RD_KAFKA_ACL_OPERATION_ALL]))), None, "ALL allows everything");
        assert_eq!(lacks(answer(Some(RDKafkaErrorCode::TopicAuthorizationFailed), None)), Some("READ, WRITE on topic p.results".into()), "no DESCRIBE: every operation is missing");
        // A broker that does not say (no authorizer info, the mock cluster) is trusted,
        // and so is an error that is not a refusal.
        assert_eq!(lacks(answer(None, None)), None);
        assert_eq!(lacks(answer(Some(RDKafkaErrorCode::RequestTimedOut), None)), None);
        assert_eq!(lacking("topic", "p.results", &rw, None).unwrap(), None);
        let gone = lacking("topic", "p.results", &rw, Some(&answer(Some(RDKafkaErrorCode::UnknownTopicOrPartition), None)));
        assert!(matches!(gone, Err(KafkaSetupError::MissingTopic(t)) if t == "p.results"));
    }

    #[test]
    fn followers_are_checked_under_the_deployments_prefix() {
        let needs = Needs::new().group("g").followers("p");
        assert_eq!(needs.groups[1], ("p.follower-check".to_string(), vec![Operation::Describe]));
        assert!(crate::kafka::follower_group("p").starts_with("p.follower-"));
    }
}
