CREATE STREAM pageviews (user_id BIGINT KEY, page STRING, ms INT) WITH (kafka_topic='pageviews', value_format='JSON');
CREATE TABLE last_offset_per_page AS SELECT page, MAX(ROWOFFSET) AS last_offset FROM pageviews GROUP BY page;
