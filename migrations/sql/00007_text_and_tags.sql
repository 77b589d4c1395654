-- +goose Up
-- Error texts and reasons are UTF-8 whatever the database's default
-- character set, so any error text can be recorded (the stores write it as
-- valid UTF-8, cut to fit); a dead letter keeps a tag of any length, as
-- the broker does (the VARBINARY(255) refused longer ones, or cut them in
-- a loose sql_mode, so such a message could not be parked).
ALTER TABLE mq_dead_letter
    MODIFY tags       BLOB NOT NULL,
    MODIFY last_error TEXT CHARACTER SET utf8mb4 NOT NULL,
    MODIFY reason     TEXT CHARACTER SET utf8mb4 NOT NULL COMMENT 'why it was replayed or discarded';
ALTER TABLE mq_log
    MODIFY last_error TEXT CHARACTER SET utf8mb4 NOT NULL;

-- +goose Down
-- Fails if a dead letter's tag is longer than 255 bytes.
ALTER TABLE mq_log
    MODIFY last_error TEXT NOT NULL;
ALTER TABLE mq_dead_letter
    MODIFY reason     TEXT NOT NULL COMMENT 'why it was replayed or discarded',
    MODIFY last_error TEXT NOT NULL,
    MODIFY tags       VARBINARY(255) NOT NULL;
