//! Which server holds each task of a persistent query, so that a pull query on the
//! table it writes is answered by the server that owns the table's partition.
//!
//! A query's tasks are the partitions of its lease topic, handed out by its consumer
//! group (see `kafka`). Each lease consumer's client id carries the REST address of
//! its server (`<group>-lease@<url>`), so the group's membership, which the broker
//! describes to anyone, says which server holds which task. Task `t` writes what it
//! computes for partition `t` of its input, which the default partitioner puts in
//! partition `t` of the table's topic when both have as many partitions (ksqlDB's
//! default); otherwise partition `p` is counted as task `p % tasks`'s.

use crate::error::Result;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an answer about a group is reused: a describe-group request for every
/// pull query would add a round trip to each key lookup. A stale answer at worst sends
/// a pull query to a server that no longer owns the partition, which answers it from
/// its own view all the same.
const FRESH_FOR: Duration = Duration::from_secs(1);

const TIMEOUT: Duration = Duration::from_secs(5);

/// The client id of a query's lease consumer: the group and, when known, the REST
/// address of the server it runs on.
pub fn lease_client_id(group: &str, advertised_url: Option<&str>) -> String {
    match advertised_url {
        Some(url) => format!("{group}-lease@{url}"),
        None => format!("{group}-lease"),
    }
}

/// The tasks of one query part's group: how many there are, and the REST address of
/// the server holding each task that is held.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskHolders {
    pub tasks: u32,
    pub holders: BTreeMap<i32, String>,
}

impl TaskHolders {
    /// The server owning each of `partitions` partitions of the table the tasks write,
    /// where known.
    pub fn partition_owners(&self, partitions: u32) -> BTreeMap<i32, String> {
        (0..partitions as i32)
            .filter_map(|p| {
                let task = if self.tasks <= 1 {
                    0
                } else {
                    p % self.tasks as i32
                };
                Some((p, self.holders.get(&task)?.clone()))
            })
            .collect()
    }
}

/// Asks the broker who holds the tasks of queries' groups, answers reused for
/// `FRESH_FOR`.
pub struct TaskOwners {
    client: BaseConsumer,
    known: Mutex<HashMap<String, Answer>>,
}

/// What the broker last said of a group.
struct Answer {
    at: Instant,
    holders: TaskHolders,
    /// A caller is asking again; the others use this answer meanwhile.
    refreshing: bool,
}

impl TaskOwners {
    pub fn new(bootstrap_servers: &str) -> Result<TaskOwners> {
        let client = ClientConfig::new()
            .set("bootstrap.servers", bootstrap_servers)
            // Required by the client; it never joins: it only describes others' groups.
            .set("group.id", "_sluice-task-owners")
            .set("enable.auto.commit", "false")
            .create()?;
        Ok(TaskOwners {
            client,
            known: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Answer>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The holders of the tasks that write a query's output: the group of the part
    /// that reads its repartition topic when it was cut in parts (`<group>-1`), else
    /// the query's own. Asks the broker when the answer is not fresh (see `known`).
    pub fn of_query(&self, group: &str) -> Result<TaskHolders> {
        let reader = self.of_group(&format!("{group}-1"))?;
        if !reader.holders.is_empty() {
            return Ok(reader);
        }
        self.of_group(group)
    }

    /// As `of_query`, without asking the broker: a fresh answer, or the last one while
    /// another caller asks again. None when only `of_query` can tell.
    pub fn known(&self, group: &str) -> Option<TaskHolders> {
        let known = self.lock();
        let usable = |g: &str| {
            known
                .get(g)
                .filter(|a| a.refreshing || a.at.elapsed() < FRESH_FOR)
                .map(|a| a.holders.clone())
        };
        let reader = usable(&format!("{group}-1"))?;
        if !reader.holders.is_empty() {
            return Some(reader);
        }
        usable(group)
    }

    fn of_group(&self, group: &str) -> Result<TaskHolders> {
        if let Some(answer) = self.lock().get_mut(group) {
            if answer.refreshing || answer.at.elapsed() < FRESH_FOR {
                return Ok(answer.holders.clone());
            }
            answer.refreshing = true;
        }
        let asked = self.ask(group);
        let mut known = self.lock();
        match asked {
            Ok(holders) => {
                let answer = Answer {
                    at: Instant::now(),
                    holders: holders.clone(),
                    refreshing: false,
                };
                known.insert(group.to_string(), answer);
                Ok(holders)
            }
            Err(e) => {
                known.remove(group);
                Err(e)
            }
        }
    }

    /// The group's membership, as the broker describes it.
    fn ask(&self, group: &str) -> Result<TaskHolders> {
        let list = self.client.fetch_group_list(Some(group), TIMEOUT)?;
        let mut holders = TaskHolders::default();
        let mut lease_topics = Vec::new();
        for member in list
            .groups()
            .iter()
            .filter(|g| g.name() == group)
            .flat_map(|g| g.members())
        {
            let Some((_, url)) = member.client_id().split_once("-lease@") else {
                continue;
            };
            let assignment = member.assignment().map(parse_assignment);
            for (topic, partitions) in assignment.unwrap_or_default() {
                for p in partitions {
                    holders.holders.insert(p, url.to_string());
                }
                if !lease_topics.contains(&topic) {
                    lease_topics.push(topic);
                }
            }
        }
        // A query's own lease topic (`-tasks`) has a partition per task; the service's
        // shared one, of a single-task query, has one.
        holders.tasks = match lease_topics.as_slice() {
            [topic] if topic.ends_with("-tasks") => self
                .client
                .fetch_metadata(Some(topic), TIMEOUT)?
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or(0, |t| t.partitions().len() as u32),
            [_] => 1,
            _ => 0,
        };
        if holders.tasks == 0 {
            holders.holders.clear();
        }
        Ok(holders)
    }
}

/// The topics and partitions of a classic consumer group member's assignment (Kafka's
/// `ConsumerProtocolAssignment`, the same in every version for these fields): a version
/// (int16), then an array of (topic: string, partitions: array of int32), then user
/// data. Nothing for bytes that do not read as one.
fn parse_assignment(bytes: &[u8]) -> Vec<(String, Vec<i32>)> {
    /// Reads big-endian numbers and strings off the front of the bytes.
    struct Reader<'a>(&'a [u8]);
    impl Reader<'_> {
        fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
            let (head, tail) = self.0.split_first_chunk::<N>()?;
            self.0 = tail;
            Some(*head)
        }
        fn i16(&mut self) -> Option<i16> {
            self.take().map(i16::from_be_bytes)
        }
        fn i32(&mut self) -> Option<i32> {
            self.take().map(i32::from_be_bytes)
        }
        fn string(&mut self) -> Option<String> {
            let len = usize::try_from(self.i16()?).ok()?;
            let (text, tail) = self.0.split_at_checked(len)?;
            self.0 = tail;
            String::from_utf8(text.to_vec()).ok()
        }
    }
    let read = |r: &mut Reader| -> Option<Vec<(String, Vec<i32>)>> {
        r.i16()?;
        let mut topics = Vec::new();
        for _ in 0..r.i32()? {
            let topic = r.string()?;
            let partitions = (0..r.i32()?).map(|_| r.i32()).collect::<Option<_>>()?;
            topics.push((topic, partitions));
        }
        Some(topics)
    };
    read(&mut Reader(bytes)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An assignment as a classic consumer's group protocol encodes it.
    fn encoded(version: i16, topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (t, ps) in topics {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
            b.extend((ps.len() as i32).to_be_bytes());
            for p in *ps {
                b.extend(p.to_be_bytes());
            }
        }
        // Empty user data.
        b.extend((-1i32).to_be_bytes());
        b
    }

    #[test]
    fn assignments_read_as_the_consumer_protocol_writes_them() {
        let bytes = encoded(3, &[("q-tasks", &[0, 2]), ("other", &[])]);
        assert_eq!(
            parse_assignment(&bytes),
            vec![("q-tasks".into(), vec![0, 2]), ("other".into(), vec![])]
        );
        // Cut short: nothing, never a panic.
        for n in 0..bytes.len() - 4 {
            let _ = parse_assignment(&bytes[..n]);
        }
        assert!(parse_assignment(&bytes[..9]).is_empty());
        assert!(parse_assignment(&[]).is_empty());
    }

    #[test]
    fn partitions_belong_to_the_holders_of_their_tasks() {
        let holders = TaskHolders {
            tasks: 4,
            holders: BTreeMap::from([(0, "a".into()), (1, "b".into()), (3, "a".into())]),
        };
        let owners = holders.partition_owners(4);
        assert_eq!(
            owners,
            BTreeMap::from([(0, "a".into()), (1, "b".into()), (3, "a".into())])
        );
        // More partitions than tasks: partition p is task p % tasks's.
        assert_eq!(holders.partition_owners(8).get(&5), Some(&"b".to_string()));
        // A single task holds every partition.
        let single = TaskHolders {
            tasks: 1,
            holders: BTreeMap::from([(0, "a".into())]),
        };
        assert_eq!(single.partition_owners(3).len(), 3);
        assert_eq!(
            lease_client_id("g", Some("http://h:1")),
            "g-lease@http://h:1"
        );
    }
}
