CREATE STREAM pageviews (user_id BIGINT KEY, page STRING, ms INT) WITH (kafka_topic='pageviews', value_format='JSON');
CREATE TABLE per_page AS SELECT LCASE(page) AS page, COUNT(*) AS n, MAX(ms) AS slowest FROM pageviews GROUP BY LCASE(page);
