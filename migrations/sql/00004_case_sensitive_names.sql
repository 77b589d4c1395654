-- +goose Up
-- RocketMQ names are case-sensitive: topics OrderEvents and orderevents,
-- groups Coupons and coupons are different. The ascii columns used the
-- case-insensitive default collation, so such names shared outbox keys,
-- dedup markers and dead letters. Compare them byte for byte: binary
-- strings (a _bin collation would still pad, making "g" equal "g ").
ALTER TABLE mq_log
    MODIFY topic       VARBINARY(255) NOT NULL,
    MODIFY lease_owner VARBINARY(32)  NOT NULL COMMENT 'claiming relay, empty when unclaimed',
    MODIFY msg_id      VARBINARY(128) NOT NULL;
ALTER TABLE mq_consume_log
    MODIFY consumer_group VARBINARY(255) NOT NULL,
    MODIFY token          VARBINARY(32)  NOT NULL COMMENT 'fencing token of the current claim';
ALTER TABLE mq_dead_letter
    MODIFY consumer_group VARBINARY(255) NOT NULL,
    MODIFY topic          VARBINARY(255) NOT NULL,
    MODIFY msg_id         VARBINARY(128) NOT NULL;

-- +goose Down
-- Fails if rows whose names differ only in case (or in trailing spaces)
-- were written meanwhile: the old collation cannot hold them apart.
ALTER TABLE mq_dead_letter
    MODIFY consumer_group VARCHAR(255) CHARACTER SET ascii NOT NULL,
    MODIFY topic          VARCHAR(255) CHARACTER SET ascii NOT NULL,
    MODIFY msg_id         VARCHAR(128) CHARACTER SET ascii NOT NULL;
ALTER TABLE mq_consume_log
    MODIFY consumer_group VARCHAR(255) CHARACTER SET ascii NOT NULL,
    MODIFY token          CHAR(32)     CHARACTER SET ascii NOT NULL COMMENT 'fencing token of the current claim';
ALTER TABLE mq_log
    MODIFY topic       VARCHAR(255) CHARACTER SET ascii NOT NULL,
    MODIFY lease_owner CHAR(32)     CHARACTER SET ascii NOT NULL COMMENT 'claiming relay, empty when unclaimed',
    MODIFY msg_id      VARCHAR(128) CHARACTER SET ascii NOT NULL;
