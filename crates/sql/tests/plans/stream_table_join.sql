CREATE STREAM clicks (user_id STRING KEY, page STRING) WITH (kafka_topic='clicks', value_format='JSON');
CREATE TABLE users (user_id STRING PRIMARY KEY, name STRING, region STRING) WITH (kafka_topic='users', value_format='JSON');
CREATE STREAM enriched AS SELECT c.user_id, page, name, UCASE(region) AS region FROM clicks c LEFT JOIN users u ON c.user_id = u.user_id;
