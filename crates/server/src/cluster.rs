//! Where the engine's topics live: a Kafka cluster, or the test driver's in-memory
//! topics. The second lets `sluice test rest-qtt` run the whole REST API, statement by
//! statement, deterministically and without a broker.

use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_plan::QueryPlan;
use sluice_runtime::driver::Driver;
use sluice_runtime::owners::TaskOwners;
use sluice_runtime::push::{PushConfig, PushEvent, PushQuery};
use sluice_runtime::view::TableViews;
use sluice_runtime::{
    KafkaAdmin, OutputRecord, Pipeline, QueryConfig, QueryError, QueryStats, RunningQuery,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::Sender;

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

pub enum Cluster {
    Kafka {
        admin: KafkaAdmin,
        producer: FutureProducer,
        /// The tables pull queries read, kept in local stores.
        views: TableViews,
        /// Which server holds which task of a query, for pull queries to go to the
        /// owners of the partitions they read.
        owners: Box<TaskOwners>,
    },
    /// The test driver: queries run as records are written, on the writer's thread.
    Memory(Arc<Mutex<Driver>>),
}

/// A persistent query running on a cluster.
pub enum QueryRun {
    Kafka(RunningQuery),
    Memory {
        driver: Arc<Mutex<Driver>>,
        id: String,
    },
}

impl QueryRun {
    /// Stops the query (over Kafka, after committing what it has processed).
    pub fn stop(self) {
        match self {
            QueryRun::Kafka(q) => q.stop(),
            QueryRun::Memory { driver, id } => {
                lock(&driver).remove_query(&id);
            }
        }
    }

    /// PAUSE (true) or RESUME.
    pub fn set_paused(&self, paused: bool) {
        match self {
            QueryRun::Kafka(q) => q.set_paused(paused),
            QueryRun::Memory { driver, id } => {
                if let Err(e) = lock(driver).set_paused(id, paused) {
                    tracing::warn!(query = %id, "resuming failed: {e}");
                }
            }
        }
    }

    pub fn is_healthy(&self) -> bool {
        match self {
            QueryRun::Kafka(q) => q.is_healthy(),
            QueryRun::Memory { .. } => true,
        }
    }

    /// Why a poison stopped the query for good on this server, if one did.
    pub fn failed(&self) -> Option<QueryError> {
        match self {
            QueryRun::Kafka(q) => q.failed(),
            QueryRun::Memory { .. } => None,
        }
    }

    /// The error the query last failed with here, if it failed since it started.
    pub fn last_error(&self) -> Option<QueryError> {
        match self {
            QueryRun::Kafka(q) => q.last_error(),
            QueryRun::Memory { .. } => None,
        }
    }

    /// What the query reports (queries on the test driver report nothing).
    pub fn stats(&self) -> Option<&QueryStats> {
        match self {
            QueryRun::Kafka(q) => Some(&q.stats),
            QueryRun::Memory { .. } => None,
        }
    }
}

fn lock(driver: &Mutex<Driver>) -> std::sync::MutexGuard<'_, Driver> {
    driver.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cluster {
    /// The table views pull queries read (Kafka only: the test driver's pull queries
    /// read its in-memory topics).
    pub fn views(&self) -> Option<&TableViews> {
        match self {
            Cluster::Kafka { views, .. } => Some(views),
            Cluster::Memory(_) => None,
        }
    }

    /// Who holds queries' tasks (Kafka only).
    pub fn owners(&self) -> Option<&TaskOwners> {
        match self {
            Cluster::Kafka { owners, .. } => Some(owners),
            Cluster::Memory(_) => None,
        }
    }

    pub fn is_memory(&self) -> bool {
        matches!(self, Cluster::Memory(_))
    }

    /// The producer of a Kafka cluster (for the command topic).
    pub fn producer(&self) -> Option<&FutureProducer> {
        match self {
            Cluster::Kafka { producer, .. } => Some(producer),
            Cluster::Memory(_) => None,
        }
    }

    /// A topic's partition count; None if it does not exist.
    pub fn partitions(&self, topic: &str) -> Result<Option<u32>, String> {
        match self {
            // fetch_metadata blocks; it is short and bounded by its timeout.
            Cluster::Kafka { admin, .. } => {
                tokio::task::block_in_place(|| admin.partitions(topic)).map_err(|e| e.to_string())
            }
            Cluster::Memory(driver) => Ok(lock(driver).partitions(topic)),
        }
    }

    /// Every topic and its partition count.
    pub fn topics(&self) -> Result<Vec<(String, u32)>, String> {
        match self {
            Cluster::Kafka { admin, .. } => {
                tokio::task::block_in_place(|| admin.topics()).map_err(|e| e.to_string())
            }
            Cluster::Memory(driver) => Ok(lock(driver).topics()),
        }
    }

    /// Creates a topic; one that exists is left as it is.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        replicas: Option<i16>,
        settings: &[(&str, &str)],
    ) -> Result<(), String> {
        match self {
            Cluster::Kafka { admin, .. } => admin
                .create_topic(topic, partitions, replicas, settings)
                .await
                .map_err(|e| e.to_string()),
            Cluster::Memory(driver) => {
                lock(driver).create_topic(topic, partitions);
                Ok(())
            }
        }
    }

    pub async fn delete_topic(&self, topic: &str) -> Result<(), String> {
        match self {
            Cluster::Kafka { admin, .. } => {
                admin.delete_topic(topic).await.map_err(|e| e.to_string())
            }
            Cluster::Memory(driver) => {
                lock(driver).delete_topic(topic);
                Ok(())
            }
        }
    }

    /// Deletes a query's consumer group (the test driver keeps none).
    pub async fn delete_group(&self, group: &str) -> Result<(), String> {
        match self {
            Cluster::Kafka { admin, .. } => {
                admin.delete_group(group).await.map_err(|e| e.to_string())
            }
            Cluster::Memory(_) => Ok(()),
        }
    }

    /// Writes one record and waits until it is acknowledged (on the test driver: until
    /// every query it reaches has processed it).
    pub async fn produce(&self, topic: &str, record: &OutputRecord) -> Result<(), String> {
        match self {
            Cluster::Kafka { producer, .. } => {
                let mut out = FutureRecord::<[u8], [u8]>::to(topic).timestamp(record.timestamp);
                if let Some(k) = &record.key {
                    out = out.key(k.as_slice());
                }
                if let Some(v) = &record.value {
                    out = out.payload(v.as_slice());
                }
                producer
                    .send(out, KAFKA_TIMEOUT)
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e.to_string())
            }
            Cluster::Memory(driver) => lock(driver)
                .produce(
                    topic,
                    record.key.clone(),
                    record.value.clone(),
                    record.timestamp,
                )
                .map_err(|e| e.to_string()),
        }
    }

    /// Starts a persistent query.
    pub fn start_query(
        &self,
        id: &str,
        plan: &QueryPlan,
        config: QueryConfig,
    ) -> Result<QueryRun, String> {
        match self {
            Cluster::Kafka { .. } => RunningQuery::start(id, plan, config)
                .map(QueryRun::Kafka)
                .map_err(|e| e.to_string()),
            Cluster::Memory(driver) => {
                let pipeline =
                    Pipeline::new(plan, config.registry.clone()).map_err(|e| e.to_string())?;
                let mut d = lock(driver);
                if config.auto_offset_reset == "earliest" {
                    d.add_query_from_start(id, pipeline)
                        .map_err(|e| e.to_string())?;
                } else {
                    d.add_query(id, pipeline);
                }
                Ok(QueryRun::Memory {
                    driver: driver.clone(),
                    id: id.to_string(),
                })
            }
        }
    }

    /// Starts a push or pull query whose rows go to `rows`.
    pub fn start_push(
        &self,
        id: &str,
        plan: &QueryPlan,
        config: PushConfig,
        rows: Sender<PushEvent>,
    ) -> sluice_runtime::Result<PushQuery> {
        match self {
            Cluster::Kafka { .. } => PushQuery::start(id, plan, config, rows),
            Cluster::Memory(driver) => PushQuery::start_on_driver(id, plan, config, driver, rows),
        }
    }
}
