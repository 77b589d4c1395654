# Shortcuts; CI runs .ci/run.
.PHONY: test race drills bench quickstart

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
