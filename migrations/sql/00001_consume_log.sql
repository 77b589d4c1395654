-- +goose Up
-- The idempotency guard's consume log: one row per consumer group and
-- business key. The key itself is stored verbatim in biz_key; the primary
-- key uses its SHA-256 so keys of any length and bytes fit an index.
CREATE TABLE mq_consume_log (
    consumer_group VARCHAR(255) CHARACTER SET ascii NOT NULL,
    key_hash       BINARY(32)   NOT NULL,
    biz_key        BLOB         NOT NULL,
    status         TINYINT      NOT NULL COMMENT '1 processing, 2 done',
    token          CHAR(32) CHARACTER SET ascii NOT NULL COMMENT 'fencing token of the current claim',
    attempts       INT          NOT NULL,
    expires_at     DATETIME(6)  NOT NULL COMMENT 'lease end while processing, retention end once done',
    created_at     DATETIME(6)  NOT NULL,
    updated_at     DATETIME(6)  NOT NULL,
    PRIMARY KEY (consumer_group, key_hash),
    KEY idx_mq_consume_log_expires (expires_at)
) ENGINE = InnoDB;

-- +goose Down
DROP TABLE mq_consume_log;
