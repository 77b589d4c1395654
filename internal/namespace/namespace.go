// Package namespace maps resource names to and from a RocketMQ namespace,
// the way the broker and the official clients spell them: a topic or group
// T in namespace N is "N%T", and the system topics keep their prefix in
// front: "%RETRY%N%G", "%DLQ%N%G". The empty namespace leaves names as
// they are.
package namespace

import (
	"fmt"
	"regexp"
	"strings"
)

const (
	retryPrefix = "%RETRY%"
	dlqPrefix   = "%DLQ%"
)

// valid is the namespace syntax: the broker's resource name characters
// without '%' and '|', which would make the wrapped names ambiguous.
var valid = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// Validate reports whether ns can be used ("" is no namespace).
func Validate(ns string) error {
	if ns != "" && !valid.MatchString(ns) {
		return fmt.Errorf("namespace %q: use 1 to 64 letters, digits, '_' or '-'", ns)
	}
	return nil
}

// Wrap returns name as the broker knows it in ns.
func Wrap(ns, name string) string {
	if ns == "" || name == "" {
		return name
	}
	for _, p := range []string{retryPrefix, dlqPrefix} {
		if rest, ok := strings.CutPrefix(name, p); ok {
			return p + ns + "%" + rest
		}
	}
	return ns + "%" + name
}

// Strip returns name without ns, undoing Wrap; a name outside ns is
// returned as it is.
func Strip(ns, name string) string {
	if ns == "" {
		return name
	}
	for _, p := range []string{retryPrefix, dlqPrefix} {
		if rest, ok := strings.CutPrefix(name, p); ok {
			if bare, ok := strings.CutPrefix(rest, ns+"%"); ok {
				return p + bare
			}
			return name
		}
	}
	if bare, ok := strings.CutPrefix(name, ns+"%"); ok {
		return bare
	}
	return name
}

// Of returns the namespace a name as the broker knows it is in ("" for
// none): the part before its first '%', after any %RETRY% or %DLQ%
// prefix, when that is a valid namespace. A bare name that itself holds
// '%' reads as namespaced: such names are ambiguous in namespaces.
func Of(name string) string {
	for _, p := range []string{retryPrefix, dlqPrefix} {
		if rest, ok := strings.CutPrefix(name, p); ok {
			name = rest
			break
		}
	}
	ns, _, ok := strings.Cut(name, "%")
	if !ok || ns == "" || Validate(ns) != nil {
		return ""
	}
	return ns
}
