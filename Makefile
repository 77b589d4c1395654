# Shortcuts; CI runs .ci/run.
.PHONY: test race drills bench quickstart rocketmq-up rocketmq-down rocketmq-status

test:
	go test ./...

race:
	go test -race ./...

# The failure drills, with their ledgers in the log (needs MYSQL_DSN).
drills:
	go test -count=1 -run Drill -v ./internal/drills

# Every layer's overhead as ratios against the raw client and the
# databases, measured side by side in one run (see README).
bench:
	go run ./cmd/reliablemq bench

quickstart:
	go run ./examples/quickstart

# A real Apache RocketMQ 4.9.4 from Maven Central on loopback (see README,
# "A real broker without Docker"); `eval "$$(scripts/rocketmq env)"` then
# points the tests at it.
rocketmq-up:
	scripts/rocketmq start

rocketmq-down:
	scripts/rocketmq stop

rocketmq-status:
	scripts/rocketmq status
