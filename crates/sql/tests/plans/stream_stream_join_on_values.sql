CREATE STREAM orders (id STRING KEY, customer STRING, amount DOUBLE) WITH (kafka_topic='orders', value_format='JSON');
CREATE STREAM payments (id STRING KEY, customer STRING, paid DOUBLE) WITH (kafka_topic='payments', value_format='JSON');
CREATE STREAM paid_orders AS SELECT o.customer, amount, paid FROM orders o JOIN payments p WITHIN 1 HOUR ON o.customer = p.customer;
