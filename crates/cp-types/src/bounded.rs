//! A map with a bound on how many entries it holds: the one cache type of the project. Past
//! the bound, the entries inserted longest ago make room, so memory stays bounded whatever
//! the keys callers bring.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A `HashMap` of at most `max` entries, evicting the oldest inserted first.
#[derive(Debug, Clone)]
pub struct BoundedMap<K, V> {
    /// Each value with the generation it was inserted at.
    map: HashMap<K, (V, u64)>,
    /// Keys in insertion order, with their generation: an entry replaced or removed since
    /// leaves a stale pair here, skipped when it comes up.
    order: VecDeque<(K, u64)>,
    next: u64,
    max: usize,
}

impl<K: Eq + Hash + Clone, V> BoundedMap<K, V> {
    /// A map holding at most `max` entries (at least one).
    pub fn new(max: usize) -> Self {
        BoundedMap {
            map: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            max: max.max(1),
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.get(key).map(|(v, _)| v)
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.get_mut(key).map(|(v, _)| v)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.contains_key(key)
    }

    /// Inserts `value` as the newest entry, evicting the oldest when the map is full; answers
    /// the value `key` had.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if !self.map.contains_key(&key) {
            while self.map.len() >= self.max && self.pop_oldest().is_some() {}
        }
        self.next += 1;
        self.order.push_back((key.clone(), self.next));
        let old = self.map.insert(key, (value, self.next)).map(|(v, _)| v);
        self.compact();
        old
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let removed = self.map.remove(key).map(|(v, _)| v);
        self.compact();
        removed
    }

    /// Removes and answers the entry inserted longest ago.
    pub fn pop_oldest(&mut self) -> Option<(K, V)> {
        while let Some((key, generation)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|(_, g)| *g == generation) {
                return self.map.remove(&key).map(|(v, _)| (key, v));
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }

    /// Drops stale pairs once they outnumber the live entries, so replacing and removing
    /// cannot grow the order list without bound.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len() + 16 {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|(_, live)| live == g));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entries_make_room() {
        let mut m = BoundedMap::new(3);
        for i in 0..3 {
            m.insert(i, i * 10);
        }
        // Replacing keeps the count and makes the entry the newest.
        assert_eq!(m.insert(0, 1), Some(0));
        m.insert(3, 30);
        assert_eq!(m.len(), 3);
        assert!(!m.contains_key(&1), "1 was the oldest");
        assert_eq!(m.get(&0), Some(&1));
        assert_eq!(m.pop_oldest(), Some((2, 20)));
        assert_eq!(m.remove(&3), Some(30));
        assert_eq!(m.pop_oldest(), Some((0, 1)));
        assert!(m.is_empty());
        assert_eq!(m.pop_oldest(), None);
    }

    #[test]
    fn churn_keeps_the_order_list_bounded() {
        let mut m = BoundedMap::new(4);
        for i in 0..10_000 {
            m.insert(i % 2, i);
            m.remove(&(i % 3));
        }
        assert!(m.len() <= 4);
        assert!(m.order.len() <= 2 * m.len() + 17, "{}", m.order.len());
    }
}
