//! The RocksDB and in-memory stores behave the same under any sequence of operations,
//! including commits, aborts and reopening the database.

use proptest::prelude::*;
use sluice_state::{KeyValueStore, MemoryStorage, StateDb};

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Get(Vec<u8>),
    Range(Vec<u8>, Option<Vec<u8>>),
    Prefix(Vec<u8>),
    Commit,
    Abort,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // Few distinct bytes, so keys collide, share prefixes and hit 0xff edges.
    prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, 0x7f, 0xff]), 0..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key(), prop::collection::vec(any::<u8>(), 0..4)).prop_map(|(k, v)| Op::Put(k, v)),
        2 => key().prop_map(Op::Delete),
        2 => key().prop_map(Op::Get),
        2 => (key(), prop::option::of(key())).prop_map(|(a, b)| Op::Range(a, b)),
        1 => key().prop_map(Op::Prefix),
        2 => Just(Op::Commit),
        1 => Just(Op::Abort),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn rocksdb_and_memory_agree(ops in prop::collection::vec(op(), 1..80)) {
        let dir = std::env::temp_dir().join(format!(
            "sluice-state-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut memory = KeyValueStore::new(MemoryStorage::default());
        {
            let db = StateDb::open(&dir).unwrap();
            let mut rocks = KeyValueStore::new(db.storage("store").unwrap());
            for op in &ops {
                match op {
                    Op::Put(k, v) => { memory.put(k, v); rocks.put(k, v); }
                    Op::Delete(k) => { memory.delete(k); rocks.delete(k); }
                    Op::Get(k) => prop_assert_eq!(memory.get(k).unwrap(), rocks.get(k).unwrap()),
                    Op::Range(a, b) => prop_assert_eq!(
                        memory.range(a, b.as_deref()).unwrap(),
                        rocks.range(a, b.as_deref()).unwrap()
                    ),
                    Op::Prefix(p) => prop_assert_eq!(memory.prefix(p).unwrap(), rocks.prefix(p).unwrap()),
                    Op::Commit => { memory.commit().unwrap(); rocks.commit().unwrap(); }
                    Op::Abort => { memory.abort(); rocks.abort(); }
                }
            }
            memory.commit().unwrap();
            rocks.commit().unwrap();
        }
        // What was committed survives reopening.
        let db = StateDb::open(&dir).unwrap();
        let rocks = KeyValueStore::new(db.storage("store").unwrap());
        prop_assert_eq!(memory.range(&[], None).unwrap(), rocks.range(&[], None).unwrap());
        drop(rocks);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn uncommitted_writes_are_visible_but_not_durable() {
    let dir = std::env::temp_dir().join(format!("sluice-state-abort-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let db = StateDb::open(&dir).unwrap();
        let mut s = KeyValueStore::new(db.storage("counts").unwrap());
        s.put(b"a", b"1");
        s.commit().unwrap();
        s.put(b"b", b"2");
        s.delete(b"a");
        assert_eq!(s.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(s.get(b"a").unwrap(), None);
        assert_eq!(s.pending(), 2);
    }
    let db = StateDb::open(&dir).unwrap();
    let s = KeyValueStore::new(db.storage("counts").unwrap());
    assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(s.get(b"b").unwrap(), None);
    drop(s);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}
