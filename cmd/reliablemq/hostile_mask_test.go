package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestHostileMaskOverlappingSecrets: the DSN password and the broker
// secret key share a prefix (a rotated or suffixed secret). Each must be
// masked whole; masking the shorter first leaves the rest of the longer
// one printed.
func TestHostileMaskOverlappingSecrets(t *testing.T) {
	env := map[string]string{"RMQ_SECRET_KEY": "Winter2026!-broker-7f3a9c"}
	args := []string{"dead", "list", "-dsn", "app:Winter2026!@tcp(db:3306)/pay"}
	hide := secrets(args, func(k string) string { return env[k] })
	var out bytes.Buffer
	w := &maskWriter{&out, hide}
	w.Write([]byte("reliablemq: dead: broker said: signature mismatch for secret Winter2026!-broker-7f3a9c\n"))
	if s := out.String(); strings.Contains(s, "broker-7f3a9c") {
		t.Errorf("part of RMQ_SECRET_KEY printed: %q", s)
	}
}
