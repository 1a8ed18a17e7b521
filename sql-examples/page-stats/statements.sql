-- Every change of a page's figures is written at once. By default a table's query keeps
-- its rows for the commit interval and writes only each key's latest one (the record
-- cache); turned off, the output is every update, in order.
SET 'cache.max.bytes.buffering'='0';

CREATE STREAM page_views (user_id STRING KEY, page STRING, load_ms INT)
  WITH (kafka_topic='page_views_${RUN_ID}', value_format='JSON', partitions=1);

-- Figures per page: grouped by a value column, so the table's key is the page.
CREATE TABLE page_stats WITH (kafka_topic='page_stats_${RUN_ID}') AS
  SELECT page,
         COUNT(*) AS views,
         COUNT_DISTINCT(user_id) AS visitors,
         MAX(load_ms) AS slowest_ms,
         LATEST_BY_OFFSET(user_id) AS last_visitor
  FROM page_views
  GROUP BY page;
