CREATE TYPE address AS STRUCT<street STRING, zip INT>;
CREATE STREAM people (id INT KEY, home ADDRESS) WITH (kafka_topic='people', value_format='JSON');
CREATE STREAM zips AS SELECT id, home->zip AS zip FROM people WHERE home->zip > 10000;
