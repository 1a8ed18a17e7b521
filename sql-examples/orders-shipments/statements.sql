CREATE STREAM orders (order_id STRING KEY, item STRING, amount INT)
  WITH (kafka_topic='orders_${RUN_ID}', value_format='JSON', partitions=1);

CREATE STREAM shipments (order_id STRING KEY, carrier STRING)
  WITH (kafka_topic='shipments_${RUN_ID}', value_format='JSON', partitions=1);

-- An order and its shipment, when the shipment comes within an hour of the order.
CREATE STREAM shipped_orders WITH (kafka_topic='shipped_orders_${RUN_ID}') AS
  SELECT o.order_id AS order_id,
         o.item AS item,
         o.amount AS amount,
         s.carrier AS carrier
  FROM orders o
  JOIN shipments s WITHIN 1 HOUR ON o.order_id = s.order_id;
