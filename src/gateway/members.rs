//! Who is in a gateway group and what each owns, as the broker describes the group:
//! a member's client id carries the URL it advertises, its assignment (the consumer
//! protocol's bytes) the status partitions it owns.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

/// What a member's client id starts with; the rest is the URL it advertises.
pub(super) const CLIENT_ID_PREFIX: &str = "courier-gateway@";

/// Who owns which partition, from the group's description: `None` while the group
/// is rebalancing (its assignments are then not yet the ones in force).
pub(super) fn describe<C: ConsumerContext>(consumer: &BaseConsumer<C>, group: &str) -> Result<Option<HashMap<i32, String>>, rdkafka::error::KafkaError> {
    let list = consumer.fetch_group_list(Some(group), Duration::from_secs(3))?;
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else { return Ok(Some(HashMap::new())) };
    if info.state() != "Stable" {
        return Ok(None);
    }
    let mut owners = HashMap::new();
    for member in info.members() {
        let Some(url) = member.client_id().strip_prefix(CLIENT_ID_PREFIX) else { continue };
        for p in member.assignment().map(assigned_partitions).unwrap_or_default() {
            owners.insert(p, url.to_string());
        }
    }
    Ok(Some(owners))
}

/// The partitions in a consumer protocol assignment (version, then topics, each a
/// name and its partitions; user data after is ignored). The group has one topic.
/// Malformed bytes give what could be read.
fn assigned_partitions(bytes: &[u8]) -> Vec<i32> {
    let mut r = Bytes(bytes);
    let mut found = Vec::new();
    let _complete = (|| -> Option<()> {
        r.take(2)?;
        let topics = r.i32()?;
        for _ in 0..topics.max(0) {
            let len = usize::try_from(r.i16()?).ok()?;
            r.take(len)?;
            let n = r.i32()?;
            for _ in 0..n.max(0) {
                found.push(r.i32()?);
            }
        }
        Some(())
    })();
    found
}

struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(topics: &[(&str, &[i32])], user_data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 1];
        b.extend((topics.len() as i32).to_be_bytes());
        for (name, parts) in topics {
            b.extend((name.len() as i16).to_be_bytes());
            b.extend(name.as_bytes());
            b.extend((parts.len() as i32).to_be_bytes());
            for p in *parts {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((user_data.len() as i32).to_be_bytes());
        b.extend(user_data);
        b
    }

    #[test]
    fn assignments_parse_and_garbage_gives_what_could_be_read() {
        assert_eq!(assigned_partitions(&assignment(&[("p.status", &[0, 3, 5])], b"xyz")), vec![0, 3, 5]);
        assert_eq!(assigned_partitions(&assignment(&[], b"")), Vec::<i32>::new());
        let full = assignment(&[("t", &[1, 2])], b"");
        assert_eq!(assigned_partitions(&full[..full.len() - 8]), vec![1]);
        assert_eq!(assigned_partitions(&[0xff; 3]), Vec::<i32>::new());
        assert_eq!(assigned_partitions(&[0, 0, 0x7f, 0xff, 0xff, 0xff]), Vec::<i32>::new());
    }
}
