-- +goose Up
-- The outbox: one row per message, written in the business transaction,
-- sent right after commit or by the reconcile job.
CREATE TABLE mq_log (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    topic           VARCHAR(255) CHARACTER SET ascii NOT NULL,
    key_hash        BINARY(32)   NOT NULL COMMENT 'SHA-256 of biz_key',
    biz_key         BLOB         NOT NULL COMMENT 'the business key, unique per topic',
    tag             VARBINARY(255) NOT NULL,
    sharding_key    BLOB         NOT NULL COMMENT 'empty: unordered',
    sharding_hash   BINARY(32)   NOT NULL COMMENT 'SHA-256 of sharding_key',
    properties      MEDIUMBLOB   NOT NULL COMMENT 'JSON object',
    `body`          MEDIUMBLOB   NOT NULL,
    delay_ms        BIGINT       NOT NULL,
    status          TINYINT      NOT NULL COMMENT '0 pending, 1 sent, 2 confirmed, 3 dead, 4 aborted (transactional message rolled back)',
    attempts        INT          NOT NULL,
    next_attempt_at DATETIME(6)  NOT NULL COMMENT 'due time; a claim pushes it to the lease end',
    lease_owner     CHAR(32) CHARACTER SET ascii NOT NULL COMMENT 'claiming relay, empty when unclaimed',
    last_error      TEXT         NOT NULL,
    msg_id          VARCHAR(128) CHARACTER SET ascii NOT NULL,
    created_at      DATETIME(6)  NOT NULL,
    updated_at      DATETIME(6)  NOT NULL,
    sent_at         DATETIME(6)  NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uk_mq_log_key (topic, key_hash),
    KEY idx_mq_log_due (status, next_attempt_at),
    KEY idx_mq_log_age (status, updated_at),
    KEY idx_mq_log_sharding (sharding_hash, id)
) ENGINE = InnoDB;

-- +goose Down
DROP TABLE mq_log;
