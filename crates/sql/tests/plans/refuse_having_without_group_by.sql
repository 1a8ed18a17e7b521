-- fail=HAVING clause requires a GROUP BY clause.
CREATE STREAM pageviews (user_id BIGINT KEY, page STRING, ms INT) WITH (kafka_topic='pageviews', value_format='JSON');
CREATE STREAM s AS SELECT user_id, page FROM pageviews HAVING ms > 1;
