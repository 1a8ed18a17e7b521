//! Several records in one batch (as a Kafka poll delivers them): functions whose
//! arguments are all literals must still give one value per row.

use sluice_runtime::pipeline::{Pipeline, SourceRecord};
use sluice_sql::{Planned, PlannerConfig, SourceDesc, parse_statement, plan_statement};
use std::collections::BTreeMap;

#[test]
fn literal_only_calls_fill_every_row_of_a_batch() {
    let mut catalog: BTreeMap<String, SourceDesc> = BTreeMap::new();
    let source =
        "CREATE STREAM S (ID ARRAY<STRING> KEY, V INT) WITH (kafka_topic='s', format='JSON');";
    let Planned::CreateSource { source, .. } = plan_statement(
        &parse_statement(source).unwrap(),
        &catalog,
        &PlannerConfig::default(),
    )
    .unwrap() else {
        panic!("a source");
    };
    catalog.insert(source.name.clone(), source);
    let query = "CREATE STREAM OUT AS SELECT ID, CONCAT('a', 'b') AS AB, ARRAY['x', 'y'] AS XY \
                 FROM S WHERE ID = ARRAY['1', '0'];";
    let Planned::CreateAs { plan, .. } = plan_statement(
        &parse_statement(query).unwrap(),
        &catalog,
        &PlannerConfig::default(),
    )
    .unwrap() else {
        panic!("a query");
    };
    let mut pipeline = Pipeline::new(&plan, None).unwrap();
    let keys: [&[u8]; 3] = [br#"["1","1"]"#, br#"["1","0"]"#, br#"["1","0"]"#];
    for (i, key) in keys.iter().enumerate() {
        let record = SourceRecord {
            key: Some(key),
            value: Some(br#"{"V":1}"#),
            headers: &[],
            timestamp: i as i64,
            partition: 0,
            offset: i as i64,
        };
        pipeline.push(0, &record).unwrap();
    }
    // One flush for the three records: one batch.
    let mut out = Vec::new();
    pipeline.flush(&mut out).unwrap();
    let values: Vec<String> = out
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(values, [r#"{"AB":"ab","XY":["x","y"]}"#; 2]);
}
