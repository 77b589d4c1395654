package namespace

import "testing"

func TestWrapStrip(t *testing.T) {
	for _, c := range []struct{ ns, bare, wrapped string }{
		{"", "orders", "orders"},
		{"", "%RETRY%g", "%RETRY%g"},
		{"prod", "orders", "prod%orders"},
		{"prod", "%RETRY%g", "%RETRY%prod%g"},
		{"prod", "%DLQ%g", "%DLQ%prod%g"},
		{"prod", "g-dlq-drain", "prod%g-dlq-drain"},
	} {
		if got := Wrap(c.ns, c.bare); got != c.wrapped {
			t.Errorf("Wrap(%q, %q) = %q, want %q", c.ns, c.bare, got, c.wrapped)
		}
		if got := Strip(c.ns, c.wrapped); got != c.bare {
			t.Errorf("Strip(%q, %q) = %q, want %q", c.ns, c.wrapped, got, c.bare)
		}
	}
	// Names of another namespace, or none, are left alone.
	for _, name := range []string{"orders", "dev%orders", "%RETRY%dev%g", "%DLQ%g", "prodx%orders"} {
		if got := Strip("prod", name); got != name {
			t.Errorf("Strip(prod, %q) = %q, want it unchanged", name, got)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, ok := range []string{"", "prod", "team_a-1"} {
		if err := Validate(ok); err != nil {
			t.Errorf("Validate(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"a%b", "a|b", "a b", "ü", "%RETRY%", string(make([]byte, 65))} {
		if Validate(bad) == nil {
			t.Errorf("Validate(%q) accepted", bad)
		}
	}
}

func TestOf(t *testing.T) {
	for name, want := range map[string]string{
		"orders": "", "prod%orders": "prod", "%RETRY%prod%g": "prod", "%DLQ%prod%g": "prod", "%RETRY%g": "",
		"%DLQ%g": "", "": "", "%x": "", "a b%c": "", "prod%a%b": "prod",
	} {
		if got := Of(name); got != want {
			t.Errorf("Of(%q) = %q, want %q", name, got, want)
		}
	}
}
