CREATE STREAM pageviews (user_id BIGINT KEY, page STRING, ms INT) WITH (kafka_topic='pageviews', value_format='JSON');
CREATE TABLE views_per_page AS SELECT page, COUNT(*) AS n FROM pageviews GROUP BY page;
