CREATE STREAM views (page_id INT, ms INT) WITH (kafka_topic='views', key_format='NONE', value_format='JSON');
CREATE TABLE pages (id INT PRIMARY KEY, title STRING) WITH (kafka_topic='pages', key_format='KAFKA', value_format='JSON');
CREATE STREAM titled AS SELECT v.page_id, title FROM views v LEFT JOIN pages p ON v.page_id = p.id;
