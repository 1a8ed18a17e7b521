CREATE STREAM pageviews (user_id BIGINT KEY, page STRING, ms INT) WITH (kafka_topic='pageviews', key_format='JSON', value_format='JSON');
CREATE TABLE per_user_page AS SELECT user_id, page, COUNT(*) AS n FROM pageviews GROUP BY page, user_id;
