-- Every change is written at once (no record cache), so the output shows each count.
SET 'cache.max.bytes.buffering'='0';

CREATE STREAM pageviews (user_id STRING KEY, page STRING)
  WITH (kafka_topic='pageviews_${RUN_ID}', value_format='JSON', partitions=1);

-- Views per page and minute.
CREATE TABLE views_per_minute WITH (kafka_topic='views_per_minute_${RUN_ID}') AS
  SELECT page, COUNT(*) AS views
  FROM pageviews
  WINDOW TUMBLING (SIZE 1 MINUTE)
  GROUP BY page;
