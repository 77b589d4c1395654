package main

import (
	"bytes"
	"io"
	"slices"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// minSecret is the shortest secret masked: masking a one- or two-letter
// password would garble every line while hiding next to nothing.
const minSecret = 4

// secrets returns what must never be printed: the password of every
// DSN-like argument and of MYSQL_DSN, and the broker's RMQ_SECRET_KEY and
// RMQ_SECURITY_TOKEN. The commands never print them; masking the output
// as well catches what a dependency might.
func secrets(args []string, getenv func(string) string) [][]byte {
	var out [][]byte
	add := func(s string) {
		if len(s) >= minSecret && !slices.ContainsFunc(out, func(b []byte) bool { return string(b) == s }) {
			out = append(out, []byte(s))
		}
	}
	for _, a := range append(slices.Clone(args), getenv("MYSQL_DSN")) {
		if _, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(strings.TrimLeft(a, "-"), "dsn=") {
			a = v
		}
		add(dsnPassword(a))
	}
	add(getenv("RMQ_SECRET_KEY"))
	add(getenv("RMQ_SECURITY_TOKEN"))
	// Longest first: a secret that contains another is masked whole, not
	// left half printed once the shorter one is replaced inside it.
	slices.SortFunc(out, func(a, b []byte) int { return len(b) - len(a) })
	return out
}

// dsnPassword returns the password in s, a DSN or something close to one
// (a URL, a DSN the driver refuses), or "".
func dsnPassword(s string) string {
	if cfg, err := mysql.ParseDSN(s); err == nil {
		return cfg.Passwd
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return ""
	}
	userinfo := s[:at]
	if _, rest, ok := strings.Cut(userinfo, "://"); ok {
		userinfo = rest
	}
	_, pw, _ := strings.Cut(userinfo, ":")
	return pw
}

// maskWriter replaces each secret in what it writes with "***". Every
// write of ours is a whole line or more, so a secret is not split across
// writes.
type maskWriter struct {
	w       io.Writer
	secrets [][]byte
}

func (m *maskWriter) Write(p []byte) (int, error) {
	q := p
	for _, s := range m.secrets {
		if bytes.Contains(q, s) {
			q = bytes.ReplaceAll(q, s, []byte("***"))
		}
	}
	if _, err := m.w.Write(q); err != nil {
		return 0, err
	}
	return len(p), nil
}
