-- +goose Up
-- The comments on status and cause name every value the consumer and the
-- dead-letter table write: status 4 (replaying) came with replays, cause
-- retry-refused with the consumer parking a message whose retry copy the
-- broker refuses. The columns themselves are unchanged.
ALTER TABLE mq_dead_letter
    MODIFY status TINYINT NOT NULL COMMENT '1 parked, 2 replayed, 3 discarded, 4 replaying (sent, not yet received by its group)',
    MODIFY cause  VARCHAR(16) CHARACTER SET ascii NOT NULL COMMENT 'retries, permanent, dlq, key-parked, retry-refused';

-- +goose Down
ALTER TABLE mq_dead_letter
    MODIFY status TINYINT NOT NULL COMMENT '1 parked, 2 replayed, 3 discarded',
    MODIFY cause  VARCHAR(16) CHARACTER SET ascii NOT NULL COMMENT 'retries, permanent, dlq, key-parked';
