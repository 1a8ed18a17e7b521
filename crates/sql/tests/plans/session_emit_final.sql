CREATE STREAM pageviews (user_id BIGINT KEY, page STRING, ms INT) WITH (kafka_topic='pageviews', value_format='JSON');
CREATE TABLE visits AS SELECT user_id, COUNT(*) AS n, COLLECT_LIST(page) AS pages FROM pageviews WINDOW SESSION (30 MINUTES) GROUP BY user_id EMIT FINAL;
