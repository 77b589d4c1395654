# Shortcuts; CI runs .ci/run.
.PHONY: test race drills bench quickstart

test:
	go test ./...

race:
	go test -race ./...

# The failure drills, with their ledgers in the log (needs MYSQL_DSN).
drills:
	go test -count=1 -run Drill -v ./internal/drills

# Overhead benchmarks: each prints its side-by-side rates and their ratio,
# measured in one run (the guard and consumer ones need MYSQL_DSN, REDIS_ADDR).
bench:
	go test -run XXX -bench . -benchtime 4000x ./producer ./idempotency ./consumer

quickstart:
	go run ./examples/quickstart
