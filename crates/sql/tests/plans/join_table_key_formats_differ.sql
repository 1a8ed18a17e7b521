-- A table whose keys are written in another format than the stream's cannot move
-- through a repartition topic here: the join runs as one task over every partition.
CREATE TABLE t (id INT PRIMARY KEY, name STRING) WITH (kafka_topic='t', key_format='KAFKA', value_format='JSON', partitions=4);
CREATE STREAM s (id INT KEY, foo INT) WITH (kafka_topic='s', key_format='DELIMITED', value_format='JSON', partitions=4);
CREATE STREAM enriched AS SELECT s.id, t.name FROM s JOIN t ON s.id = t.id;
