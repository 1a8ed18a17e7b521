//! Committed storage in memory, for the deterministic test driver.

use crate::Result;
use crate::store::Storage;
use std::collections::BTreeMap;
use std::ops::Bound;

#[derive(Default, Debug, Clone)]
pub struct MemoryStorage {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Storage for MemoryStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.get(key).cloned())
    }

    fn scan(&self, from: &[u8], to: Option<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if to.is_some_and(|t| t <= from) {
            return Ok(Vec::new());
        }
        let upper = match to {
            Some(t) => Bound::Excluded(t.to_vec()),
            None => Bound::Unbounded,
        };
        Ok(self
            .map
            .range((Bound::Included(from.to_vec()), upper))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn write(&mut self, changes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Result<()> {
        for (k, v) in changes {
            match v {
                Some(v) => self.map.insert(k.clone(), v.clone()),
                None => self.map.remove(k),
            };
        }
        Ok(())
    }

    fn clear(&mut self) -> Result<()> {
        self.map.clear();
        Ok(())
    }
}
