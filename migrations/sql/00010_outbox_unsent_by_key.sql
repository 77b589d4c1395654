-- +goose Up
-- Before it sends a row with a sharding key, the relay looks for an earlier
-- row of the key not Sent yet. Through (sharding_hash, id) that read every
-- earlier row of the key, Sent ones included, until the retention purge:
-- each ordered send cost more as the key's history grew. Through
-- (sharding_hash, status, id) it reads only the key's unsent rows.
ALTER TABLE mq_log
    DROP INDEX idx_mq_log_sharding,
    ADD INDEX idx_mq_log_sharding_unsent (sharding_hash, status, id);

-- +goose Down
ALTER TABLE mq_log
    DROP INDEX idx_mq_log_sharding_unsent,
    ADD INDEX idx_mq_log_sharding (sharding_hash, id);
