//! The held history: what `history` pages through and what a client shows
//! when it attaches. The oldest event goes first, unless one author floods:
//! an author that holds more than half of it loses its own oldest instead,
//! so a flood cannot push everyone else's lines out.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

#[derive(Debug)]
struct HeldEvent {
    cursor: u64,
    author: u64,
    json: Arc<str>,
}

#[derive(Debug)]
pub(super) struct Held {
    /// In cursor order; cursors have holes where a flood was thinned.
    events: VecDeque<HeldEvent>,
    capacity: usize,
    /// Events held per author.
    counts: HashMap<u64, usize>,
}

impl Held {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            events: VecDeque::new(),
            capacity: capacity.max(1),
            counts: HashMap::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Holds a new event (its cursor is the newest), making room first.
    pub(super) fn push(&mut self, cursor: u64, author: u64, json: Arc<str>) {
        if self.events.len() >= self.capacity {
            self.evict();
        }
        *self.counts.entry(author).or_default() += 1;
        super::push_capped(
            &mut self.events,
            HeldEvent {
                cursor,
                author,
                json,
            },
            self.capacity,
        );
    }

    fn evict(&mut self) {
        let flooder = self
            .counts
            .iter()
            .find(|&(_, &n)| n > self.capacity / 2)
            .map(|(&a, _)| a);
        // The flooder's oldest sits right after the few others kept.
        let i = flooder
            .and_then(|a| self.events.iter().position(|e| e.author == a))
            .unwrap_or(0);
        if let Some(gone) = self.events.remove(i)
            && let Some(n) = self.counts.get_mut(&gone.author)
        {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&gone.author);
            }
        }
    }

    /// The newest `limit` held events with a cursor below `before`, oldest
    /// first (shared, not copied).
    pub(super) fn page(&self, limit: usize, before: Option<u64>) -> Vec<Arc<str>> {
        let end = before.map_or(self.events.len(), |b| {
            self.events.partition_point(|e| e.cursor < b)
        });
        let start = end.saturating_sub(limit);
        self.events
            .range(start..end)
            .map(|e| e.json.clone())
            .collect()
    }

    /// The oldest cursor held.
    pub(super) fn oldest(&self) -> Option<u64> {
        self.events.front().map(|e| e.cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursors(h: &Held, limit: usize, before: Option<u64>) -> Vec<u64> {
        h.page(limit, before)
            .iter()
            .map(|j| {
                serde_json::from_str::<serde_json::Value>(j).unwrap()["c"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    fn push(h: &mut Held, cursor: u64, author: u64) {
        h.push(cursor, author, Arc::from(format!(r#"{{"c":{cursor}}}"#)));
    }

    #[test]
    fn the_oldest_goes_first_when_nobody_floods() {
        let mut h = Held::new(4);
        for (c, a) in [(1, 1), (2, 2), (3, 1), (4, 2), (5, 3), (6, 1)] {
            push(&mut h, c, a);
        }
        assert_eq!(cursors(&h, 10, None), [3, 4, 5, 6]);
        assert_eq!(cursors(&h, 2, Some(6)), [4, 5]);
        assert_eq!(cursors(&h, 10, Some(4)), [3]);
    }

    #[test]
    fn a_flood_thins_only_itself() {
        let mut h = Held::new(100);
        let mut c = 0;
        for _ in 0..30 {
            c += 1;
            push(&mut h, c, 1);
        }
        for _ in 0..10_000 {
            c += 1;
            push(&mut h, c, 9);
        }
        let held = cursors(&h, 100, None);
        assert_eq!(held.len(), 100);
        assert_eq!(&held[..30], (1..=30).collect::<Vec<_>>(), "all of author 1");
        assert_eq!(*held.last().unwrap(), c, "and the flood's newest");
        // Paging across the hole works by cursor.
        assert_eq!(cursors(&h, 2, Some(c - 69)), [29, 30]);
    }
}
