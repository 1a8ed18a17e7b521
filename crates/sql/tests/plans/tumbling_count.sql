CREATE STREAM pageviews (user_id BIGINT KEY, page STRING, ms INT) WITH (kafka_topic='pageviews', value_format='JSON');
CREATE TABLE per_minute AS SELECT user_id, COUNT(*) AS n, SUM(ms) AS total FROM pageviews WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 10 SECONDS) GROUP BY user_id HAVING COUNT(*) > 1;
