CREATE STREAM carts (id STRING KEY, user_id STRING, items ARRAY<STRING>) WITH (kafka_topic='carts', value_format='JSON');
CREATE STREAM items_by_user AS SELECT user_id, EXPLODE(items) AS item FROM carts PARTITION BY user_id;
