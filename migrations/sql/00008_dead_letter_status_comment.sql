-- +goose Up
-- The status comment names every status the dead-letter table writes:
-- 4 (replaying) came with replays; the column itself is unchanged.
ALTER TABLE mq_dead_letter
    MODIFY status TINYINT NOT NULL COMMENT '1 parked, 2 replayed, 3 discarded, 4 replaying (sent, not yet received by its group)';

-- +goose Down
ALTER TABLE mq_dead_letter
    MODIFY status TINYINT NOT NULL COMMENT '1 parked, 2 replayed, 3 discarded';
