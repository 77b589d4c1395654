-- +goose Up
-- Messages parked for manual handling: retries exhausted, permanent
-- failures, messages drained from the broker's %DLQ% topic, and later
-- messages of a parked sharding key.
CREATE TABLE mq_dead_letter (
    id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    consumer_group VARCHAR(255) CHARACTER SET ascii NOT NULL,
    topic          VARCHAR(255) CHARACTER SET ascii NOT NULL,
    msg_id         VARCHAR(128) CHARACTER SET ascii NOT NULL,
    biz_keys       BLOB         NOT NULL COMMENT 'the message keys, space separated',
    tags           VARBINARY(255) NOT NULL,
    sharding_key   BLOB         NOT NULL,
    sharding_hash  BINARY(32)   NOT NULL COMMENT 'SHA-256 of sharding_key',
    properties     MEDIUMBLOB   NOT NULL COMMENT 'JSON object of the user properties',
    `body`         MEDIUMBLOB   NOT NULL,
    attempts       INT          NOT NULL,
    last_error     TEXT         NOT NULL,
    cause          VARCHAR(16) CHARACTER SET ascii NOT NULL COMMENT 'retries, permanent, dlq, key-parked',
    status         TINYINT      NOT NULL COMMENT '1 parked, 2 replayed, 3 discarded',
    reason         TEXT         NOT NULL COMMENT 'why it was replayed or discarded',
    created_at     DATETIME(6)  NOT NULL,
    updated_at     DATETIME(6)  NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uk_mq_dead_letter_msg (consumer_group, msg_id),
    KEY idx_mq_dead_letter_status (consumer_group, status, id),
    KEY idx_mq_dead_letter_sharding (consumer_group, sharding_hash, status)
) ENGINE = InnoDB;

-- +goose Down
DROP TABLE mq_dead_letter;
