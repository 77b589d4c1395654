-- +goose Up
-- A replayed message that fails again is parked as a new row; replay_of
-- keeps the id of the original dead letter it replays, so under the
-- ParkKey policy the key stays parked behind it in its original place.
ALTER TABLE mq_dead_letter
    ADD COLUMN replay_of BIGINT UNSIGNED NOT NULL DEFAULT 0
        COMMENT 'id of the original dead letter this one is a failed replay of; 0 for an original';

-- +goose Down
ALTER TABLE mq_dead_letter DROP COLUMN replay_of;
