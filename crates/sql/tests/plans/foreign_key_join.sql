CREATE TABLE orders (id STRING PRIMARY KEY, customer_id STRING, amount DOUBLE) WITH (kafka_topic='orders', value_format='JSON');
CREATE TABLE customers (id STRING PRIMARY KEY, name STRING) WITH (kafka_topic='customers', value_format='JSON');
CREATE TABLE order_names AS SELECT o.id, amount, name FROM orders o JOIN customers c ON o.customer_id = c.id;
