-- +goose Up
-- Whether the parker that recorded a dead letter has reported it (logged
-- and alerted). A consumer that crashed, or lost the reply of its park,
-- between recording a message and reporting it left an entry nobody was
-- told of: the message's next delivery finds it recorded, and reports it
-- when this says it was not. Rows parked before this migration were
-- reported when they were parked.
ALTER TABLE mq_dead_letter
    ADD COLUMN reported TINYINT NOT NULL DEFAULT 1
        COMMENT '0 from the park until its parker has logged and alerted it';

-- +goose Down
ALTER TABLE mq_dead_letter DROP COLUMN reported;
