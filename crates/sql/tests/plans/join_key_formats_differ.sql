-- Keys in different formats are different bytes in different partitions: the right
-- stream moves into the left's key format; a table (which cannot move) joins in one task.
CREATE STREAM s1 (id INT KEY, foo INT) WITH (kafka_topic='s1', key_format='DELIMITED', value_format='JSON', partitions=4);
CREATE STREAM s2 (id INT KEY, val STRING) WITH (kafka_topic='s2', key_format='KAFKA', value_format='JSON', partitions=4);
CREATE STREAM joined AS SELECT s1.id, s2.val FROM s1 JOIN s2 WITHIN 1 HOURS ON s1.id = s2.id;
