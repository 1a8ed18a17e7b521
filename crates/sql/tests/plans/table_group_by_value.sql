-- A table regrouped by a value column: its changes, each with the row it replaces,
-- go through a repartition topic that carries the retractions.
CREATE TABLE users (id STRING PRIMARY KEY, page STRING, age INT) WITH (kafka_topic='users', value_format='JSON');
CREATE TABLE per_page AS SELECT page, COUNT(*) AS n, SUM(age) AS ages FROM users WHERE age > 0 GROUP BY page HAVING COUNT(*) > 1;
