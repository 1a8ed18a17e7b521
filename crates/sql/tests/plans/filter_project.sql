CREATE STREAM pageviews (user_id BIGINT KEY, page STRING, ms INT) WITH (kafka_topic='pageviews', value_format='JSON');
CREATE STREAM slow AS SELECT user_id, UCASE(page) AS page, ms * 2 AS ms2 FROM pageviews WHERE ms > 100;
