-- +goose Up
-- One row per sharding key ever enqueued in mq_log. Enqueueing a row with
-- a sharding key first locks the key's row here, so two transactions
-- enqueueing the same key run one after the other: a key's outbox rows get
-- ids in the order their transactions enqueued them, and a later event
-- can no longer commit (and be sent) while an earlier one is still
-- uncommitted, invisible to the send's predecessor check.
CREATE TABLE mq_log_order (
    sharding_hash BINARY(32) NOT NULL COMMENT 'SHA-256 of mq_log.sharding_key',
    PRIMARY KEY (sharding_hash)
) ENGINE = InnoDB;

-- +goose Down
DROP TABLE mq_log_order;
