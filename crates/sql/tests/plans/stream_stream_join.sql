CREATE STREAM orders (id STRING KEY, amount DOUBLE) WITH (kafka_topic='orders', value_format='JSON');
CREATE STREAM shipments (order_id STRING KEY, carrier STRING) WITH (kafka_topic='shipments', value_format='JSON');
CREATE STREAM shipped AS SELECT o.id, amount, carrier FROM orders o JOIN shipments s WITHIN 1 HOUR GRACE PERIOD 5 MINUTES ON o.id = s.order_id;
