-- Users are a table keyed by user id; clicks a stream keyed the same way, with the
-- same number of partitions, so each click meets its user's row in the same task.
CREATE TABLE site_users (user_id STRING PRIMARY KEY, name STRING, plan STRING)
  WITH (kafka_topic='users_${RUN_ID}', value_format='JSON', partitions=1);

CREATE STREAM page_clicks (user_id STRING KEY, page STRING)
  WITH (kafka_topic='clicks_${RUN_ID}', value_format='JSON', partitions=1);
