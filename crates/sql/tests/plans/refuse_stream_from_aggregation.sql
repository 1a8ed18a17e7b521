-- fail=Invalid result type. Your SELECT query produces a TABLE.
CREATE STREAM pageviews (user_id BIGINT KEY, page STRING, ms INT) WITH (kafka_topic='pageviews', value_format='JSON');
CREATE STREAM counts AS SELECT user_id, COUNT(*) AS n FROM pageviews GROUP BY user_id;
