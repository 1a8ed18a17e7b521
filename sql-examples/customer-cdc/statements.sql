-- Every change is written at once (no record cache), so the output shows each one.
SET 'cache.max.bytes.buffering'='0';

CREATE TABLE customers (id STRING PRIMARY KEY, name STRING, tier STRING)
  WITH (kafka_topic='customers_${RUN_ID}', value_format='JSON', partitions=1);

-- The gold customers, kept up to date with every insert, update and delete.
CREATE TABLE gold_customers WITH (kafka_topic='gold_customers_${RUN_ID}') AS
  SELECT id, name
  FROM customers
  WHERE tier = 'gold';
