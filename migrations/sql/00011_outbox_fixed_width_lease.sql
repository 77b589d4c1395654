-- +goose Up
-- A claim stamps its rows' lease_owner ('' before) and the mark clears it.
-- As VARBINARY(32) the value changed length both times, and InnoDB
-- rewrites a record whose field changes length instead of updating it in
-- place: the claim's UPDATE cost about twice the MySQL time a row. A CHAR
-- of a single-byte character set is stored at its full width, so both
-- updates keep the record's length. Every owner is 32 hexadecimal digits
-- or empty; ascii_bin compares them byte for byte (its padding only makes
-- '' match the stored blanks). The ALTER copies the table: apply it when
-- the outbox is quiet.
ALTER TABLE mq_log
    MODIFY lease_owner CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL COMMENT 'claiming relay, empty when unclaimed';

-- +goose Down
ALTER TABLE mq_log
    MODIFY lease_owner VARBINARY(32) NOT NULL COMMENT 'claiming relay, empty when unclaimed';
