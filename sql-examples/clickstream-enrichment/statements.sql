-- Each click is enriched with its user's current row; clicks of unknown users keep
-- their page and get no name (a LEFT JOIN).
CREATE STREAM enriched_clicks WITH (kafka_topic='enriched_clicks_${RUN_ID}') AS
  SELECT c.user_id,
         page,
         COALESCE(name, 'guest') AS name,
         UCASE(plan) AS plan
  FROM page_clicks c
  LEFT JOIN site_users u ON c.user_id = u.user_id;
