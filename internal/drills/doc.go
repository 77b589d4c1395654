// Package drills replays the field failure stories end to end, through the
// outbox, the broker and guarded consumers, and checks from the stores that
// nothing was lost and nothing applied twice. The drills are its tests:
//
//	go test -run Drill -v ./internal/drills
//
// Each drill runs at least 1,000 business operations, injects its fault
// (rmqtest's, skipped by name on a real broker), and ends with a ledger:
// committed operations = effects applied + messages parked.
package drills
