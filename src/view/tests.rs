//! The same behaviour from both backends, and what only the disk keeps: a reopened
//! store holds its operations, keys and positions.

use super::*;
use crate::envelope::{new_id, test_snapshot};

fn snap(id: Uuid, state: State, t: &str) -> OperationSnapshot {
    OperationSnapshot { command_id: id, command_type: t.into(), ..test_snapshot(state) }
}

const MINUTE: Duration = Duration::from_secs(60);

/// A directory of its own under the system's temp dir, removed on drop.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new() -> Dir {
        let d = std::env::temp_dir().join(format!("courier-store-test-{}", new_id().simple()));
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Each test body runs against a memory store and a disk store.
fn both(retention: Duration, test: impl Fn(&Store)) {
    test(&Store::new(retention, MINUTE));
    let dir = Dir::new();
    test(&Store::open(&dir.0, 1 << 20, "p.status", retention, MINUTE).expect("open disk store"));
}

#[test]
fn final_states_stick_and_gateway_fields_survive_worker_snapshots() {
    both(MINUTE, |store| {
        let id = new_id();
        let mut queued = snap(id, State::Queued, "echo");
        queued.request_hash = Some("h".into());
        queued.batch_id = Some("b".into());
        store.apply(queued);
        store.apply(snap(id, State::Completed, "echo"));
        store.apply(snap(id, State::Started, "echo"));
        let now = store.get(&id).unwrap();
        assert_eq!(now.state, State::Completed);
        assert_eq!(now.request_hash.as_deref(), Some("h"));
        assert_eq!(store.batch("b").unwrap().len(), 1);
        store.remove_at(id, None);
        assert!(store.get(&id).is_none() && store.batch("b").is_none(), "a tombstone removes it, batch and all");
    });
}

#[test]
fn lists_newest_first_in_pages_with_filters() {
    both(MINUTE, |store| {
        let ids: Vec<Uuid> = (0..5).map(|_| new_id()).collect();
        for (i, id) in ids.iter().enumerate() {
            store.apply(snap(*id, if i % 2 == 0 { State::Completed } else { State::Queued }, "echo"));
        }
        let all = Filter::default();
        let (page, next) = store.list(&all, None, 2);
        assert_eq!(page.iter().map(|s| s.command_id).collect::<Vec<_>>(), vec![ids[4], ids[3]]);
        let (page, next) = store.list(&all, next, 2);
        assert_eq!(page[0].command_id, ids[2]);
        let (page, next) = store.list(&all, next, 2);
        assert_eq!((page.len(), next), (1, None));
        let done = Filter { state: Some("completed".into()), command_type: Some("echo".into()), tenant: None, partition: None };
        assert_eq!(store.list(&done, None, 10).0.len(), 3);
        let other = Filter { tenant: Some("red".into()), ..Filter::default() };
        assert!(store.list(&other, None, 10).0.is_empty(), "never another tenant's");
        assert_eq!(store.queued_of_type("echo").len(), 2);
        assert!(!Filter::valid_state("nope"));
    });
}

#[test]
fn done_operations_are_evicted_after_the_retention() {
    both(MINUTE, |store| {
        let (a, b) = (new_id(), new_id());
        let mut old = snap(a, State::Completed, "echo");
        old.batch_id = Some("b1".into());
        store.apply(old);
        store.apply(snap(b, State::Queued, "echo"));
        store.evict(Utc::now() + chrono::Duration::seconds(120));
        assert!(store.get(&a).is_none() && store.get(&b).is_some());
        assert!(store.batch("b1").is_none());
        assert_eq!(store.sizes().0, 1);
        let mut stale = snap(new_id(), State::Completed, "echo");
        stale.updated = Utc::now() - chrono::Duration::seconds(120);
        store.apply(stale.clone());
        assert!(store.get(&stale.command_id).is_none(), "a snapshot past the retention is not taken in");
    });
}

#[test]
fn a_retention_longer_than_time_itself_keeps_everything() {
    both(Duration::MAX, |store| {
        let a = new_id();
        store.apply(snap(a, State::Completed, "echo"));
        store.evict(Utc::now());
        assert!(store.get(&a).is_some());
    });
}

#[test]
fn idempotency_keys_replay_refuse_and_expire() {
    both(MINUTE, |store| {
        assert_eq!(store.claim_key("k", "h1"), Claim::Fresh);
        assert_eq!(store.claim_key("k", "h1"), Claim::InProgress);
        let mut s = snap(new_id(), State::Queued, "echo");
        s.idempotency_key = Some("k".into());
        s.request_hash = Some("h1".into());
        store.apply(s.clone());
        assert!(matches!(store.claim_key("k", "h1"), Claim::Replay(first) if first.command_id == s.command_id));
        assert_eq!(store.claim_key("k", "h2"), Claim::Mismatch { id: s.command_id });
        assert_eq!(store.claim_key("other", "h"), Claim::Fresh);
        store.release_key("other");
        assert_eq!(store.claim_key("other", "h"), Claim::Fresh);
        store.release_key("other");
        store.evict(Utc::now() + chrono::Duration::seconds(61));
        assert_eq!(store.sizes().1, 0, "keys go after their ttl");
    });
}

#[tokio::test]
async fn waiting_ends_when_the_operation_is_done() {
    let dir = Dir::new();
    let stores = [Store::new(MINUTE, MINUTE), Store::open(&dir.0, 1 << 20, "p.status", MINUTE, MINUTE).unwrap()];
    for store in stores {
        let store = std::sync::Arc::new(store);
        let id = new_id();
        store.apply(snap(id, State::Started, "echo"));
        let stop = tokio_util::sync::CancellationToken::new();
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.wait_done(&id, Duration::from_secs(10), &stop).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.apply(snap(id, State::Completed, "echo"));
        let done = tokio::time::timeout(Duration::from_secs(2), waiter).await.unwrap().unwrap();
        assert_eq!(done.unwrap().state, State::Completed);
        let (nobody, never) = (new_id(), tokio_util::sync::CancellationToken::new());
        let unknown = store.wait_done(&nobody, Duration::from_secs(10), &never);
        assert!(tokio::time::timeout(Duration::from_secs(1), unknown).await.unwrap().is_none(), "an unknown id answers at once");
    }
}

#[test]
fn a_reopened_disk_store_keeps_operations_keys_and_positions() {
    let dir = Dir::new();
    let (id, keyed) = (new_id(), new_id());
    {
        let store = Store::open(&dir.0, 1 << 20, "p.status", MINUTE, MINUTE).unwrap();
        assert_eq!(store.positions().unwrap(), Some(Positions::new()));
        // More than one overlay's worth, so some went out on their own.
        for i in 0..5000 {
            store.apply_at(snap(new_id(), State::Completed, "bulk"), Some((i % 3, i64::from(i / 3))));
        }
        store.apply_at(snap(id, State::Progress, "echo"), Some((0, 2000)));
        let mut s = snap(keyed, State::Queued, "echo");
        s.idempotency_key = Some("k".into());
        s.request_hash = Some("h".into());
        store.apply_at(s, Some((1, 2000)));
        store.skip_at((2, 2000));
        store.flush();
    }
    let store = Store::open(&dir.0, 1 << 20, "p.status", MINUTE, MINUTE).unwrap();
    assert_eq!(store.positions().unwrap(), Some(Positions::from([(0, 2001), (1, 2001), (2, 2001)])));
    assert_eq!(store.get(&id).unwrap().state, State::Progress);
    assert_eq!(store.claim_key("k", "h2"), Claim::Mismatch { id: keyed });
    assert_eq!(store.sizes(), (5002, 1));
    drop(store);
    let other = Store::open(&dir.0, 1 << 20, "q.status", MINUTE, MINUTE).unwrap();
    assert_eq!((other.sizes(), other.positions().unwrap()), ((0, 0), Some(Positions::new())), "a store of another topic starts empty");
}

#[test]
fn sizes_parse_with_their_units() {
    assert_eq!(parse_bytes("64MB"), Ok(64_000_000));
    assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
    assert_eq!(parse_bytes("4096"), Ok(4096));
    assert!(parse_bytes("64 parsecs").is_err() && parse_bytes("MB").is_err());
}

#[test]
fn a_memory_view_forgets_what_it_no_longer_holds_and_a_disk_view_keeps_it() {
    let (kept, gone) = (new_id(), new_id());
    let keyed = |id: Uuid, key: &str| OperationSnapshot { idempotency_key: Some(key.into()), request_hash: Some("h".into()), ..snap(id, State::Queued, "echo") };
    let memory = Store::new(MINUTE, MINUTE);
    memory.apply(keyed(kept, "k1"));
    memory.apply(keyed(gone, "k2"));
    assert!(memory.forget(|id| *id == gone));
    assert!(memory.get(&gone).is_none() && memory.get(&kept).is_some());
    assert_eq!(memory.claim_key("k2", "h"), Claim::Fresh, "a dropped operation's key is no longer known here");
    assert!(matches!(memory.claim_key("k1", "h"), Claim::Replay(_)));
    let dir = Dir::new();
    let disk = Store::open(&dir.0, 1 << 20, "p.status", MINUTE, MINUTE).expect("open disk store");
    disk.apply(keyed(gone, "k2"));
    assert!(!disk.forget(|_| true));
    assert!(disk.get(&gone).is_some());
}
