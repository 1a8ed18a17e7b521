CREATE STREAM clicks (click_id STRING KEY, user_id STRING, page STRING) WITH (kafka_topic='clicks', value_format='JSON');
CREATE TABLE users (user_id STRING PRIMARY KEY, name STRING) WITH (kafka_topic='users', value_format='JSON');
CREATE STREAM enriched AS SELECT c.user_id, page, name FROM clicks c JOIN users u ON c.user_id = u.user_id;
