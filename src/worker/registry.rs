//! Commands handed off to their handlers (deferred completion), as every worker
//! knows them: rebuilt from the control topic (see [`super::deferrals`] for the lease
//! check that acts on them). Its own file so the state and the followers can hold it
//! without importing the lease check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use uuid::Uuid;

use crate::envelope::Deferral;

/// See the module docs. Cheap to ask when empty (one atomic load), since the
/// consumer thread asks for every record it admits.
#[derive(Default)]
pub(crate) struct Deferrals {
    inner: Mutex<Book>,
    len: AtomicUsize,
}

#[derive(Default)]
struct Book {
    by_id: HashMap<Uuid, Deferral>,
    /// (commands partition, key) -> the command holding that key back.
    by_lane: HashMap<(i32, Vec<u8>), Uuid>,
    /// Attempts released lately, so that a heartbeat restating one, written just
    /// before its completion and read just after, does not bring it back.
    released: HashMap<Uuid, u32>,
    released_order: std::collections::VecDeque<Uuid>,
}

/// How many released attempts are remembered.
const RELEASED_MEMORY: usize = 100_000;

impl Deferrals {
    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a hand-off or renews it (a heartbeat restates it with a later beat). An
    /// older attempt's record, arriving late, never replaces a newer one.
    pub fn insert(&self, d: Deferral) {
        let mut book = self.lock();
        if book.by_id.get(&d.command_id).is_some_and(|have| (have.attempt, have.beat) > (d.attempt, d.beat)) {
            return;
        }
        if book.released.get(&d.command_id).is_some_and(|&a| a >= d.attempt) {
            return;
        }
        let mut d = d;
        if d.data.is_null() {
            // A renewal from the gateway carries no payload: keep the copy a retry needs.
            if let Some(have) = book.by_id.get(&d.command_id).filter(|have| have.attempt == d.attempt) {
                d.data = have.data.clone();
            }
        }
        book.by_lane.insert((d.partition, d.key()), d.command_id);
        book.by_id.insert(d.command_id, d);
        self.len.store(book.by_id.len(), Ordering::Release);
    }

    /// Attempt `attempt` of `id` ended (a final event, or a retry): its key is free.
    pub fn release(&self, id: &Uuid, attempt: u32) {
        let mut book = self.lock();
        if book.released.insert(*id, attempt).is_none() {
            book.released_order.push_back(*id);
            while book.released_order.len() > RELEASED_MEMORY {
                if let Some(old) = book.released_order.pop_front() {
                    book.released.remove(&old);
                }
            }
        }
        if book.by_id.get(id).is_some_and(|d| d.attempt > attempt) {
            return;
        }
        if let Some(d) = book.by_id.remove(id) {
            let lane = (d.partition, d.key());
            if book.by_lane.get(&lane) == Some(id) {
                book.by_lane.remove(&lane);
            }
        }
        self.len.store(book.by_id.len(), Ordering::Release);
    }

    pub fn get(&self, id: &Uuid) -> Option<Deferral> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.lock().by_id.get(id).cloned()
    }

    /// Whether attempt `attempt` of `id` (or a later one) is handed off.
    pub fn covers(&self, id: &Uuid, attempt: u32) -> bool {
        self.get(id).is_some_and(|d| d.attempt >= attempt)
    }

    /// The handed-off command holding back `key` in commands partition `partition`.
    pub fn holder(&self, partition: i32, key: &[u8]) -> Option<Uuid> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.lock().by_lane.get(&(partition, key.to_vec())).copied()
    }

    pub fn all(&self) -> Vec<Deferral> {
        self.lock().by_id.values().map(Deferral::without_data).collect()
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::test_deferral;
    use chrono::Utc;


    #[test]
    fn the_registry_holds_keys_and_keeps_the_newest_attempt() {
        let reg = Deferrals::default();
        assert_eq!(reg.holder(2, b"k"), None);
        let d = test_deferral(None, None);
        reg.insert(d.clone());
        assert_eq!(reg.holder(2, b"k"), Some(d.command_id));
        assert!(reg.covers(&d.command_id, 1) && !reg.covers(&d.command_id, 2));
        let newer = Deferral { attempt: 2, ..d.clone() };
        reg.insert(newer);
        reg.insert(d.clone());
        assert!(reg.covers(&d.command_id, 2), "a late older attempt does not replace the newer");
        reg.release(&d.command_id, 1);
        assert!(reg.covers(&d.command_id, 2), "releasing attempt 1 leaves attempt 2");
        reg.release(&d.command_id, 2);
        assert_eq!((reg.holder(2, b"k"), reg.len()), (None, 0));
        reg.insert(Deferral { attempt: 2, beat: Utc::now(), ..d });
        assert_eq!(reg.len(), 0, "a late heartbeat of a released attempt is ignored");
    }
}
