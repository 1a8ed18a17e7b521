-- fail=cannot be resolved
CREATE STREAM pageviews (user_id BIGINT KEY, page STRING, ms INT) WITH (kafka_topic='pageviews', value_format='JSON');
CREATE STREAM s AS SELECT user_id, nope FROM pageviews;
