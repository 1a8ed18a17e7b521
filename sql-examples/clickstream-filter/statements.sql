-- Clicks arrive as JSON, keyed by user id. Keep the slow page loads, tidy the page
-- name, and grade each load.
CREATE STREAM clicks (user_id STRING KEY, page STRING, load_ms INT, referrer STRING)
  WITH (kafka_topic='clicks_${RUN_ID}', value_format='JSON', partitions=1);

CREATE STREAM slow_clicks WITH (kafka_topic='slow_clicks_${RUN_ID}') AS
  SELECT user_id,
         UCASE(TRIM(page)) AS page,
         load_ms,
         CASE WHEN load_ms >= 1000 THEN 'very slow' ELSE 'slow' END AS grade,
         CONCAT('from ', referrer) AS came_from,
         ROWTIME AS clicked_at
  FROM clicks
  WHERE load_ms > 300;
