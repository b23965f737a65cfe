package alerts

import (
	"context"
	"log/slog"
	"regexp"
	"testing"
)

// FuzzLineAssembly feeds arbitrary console output, split at an arbitrary
// point, through the matcher with a match-everything rule: it never
// panics, no alert line is empty, longer than MaxLine or holds a control
// character other than tab, and the split changes the alert count by at
// most the one line spanning the cut.
func FuzzLineAssembly(f *testing.F) {
	for _, s := range []string{
		"Kernel panic\r\n", "\x1b[1;31mCall\x1b[0m Trace:\n", "\x1b]0;title\x07login: ", "ab\bc\x7fd\n",
		"\x1b", "\x1b]unterminated", "\x1b[", "\xff\xfe\x00\n", "a\rb\nc",
	} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint8) {
		const maxLine = 80
		run := func(chunks ...[]byte) []string {
			rec := &lineCollector{}
			m := New(Config{MaxLine: maxLine, RateLimit: 1 << 20, Logger: slog.New(rec), Rules: []Rule{{Name: "all", Pattern: regexp.MustCompile(`(?s).`)}}})
			for _, c := range chunks {
				m.Observe("vm", c)
				m.Flush()
			}
			return rec.lines
		}
		whole := run(data)
		for _, l := range whole {
			if l == "" || len(l) > maxLine {
				t.Fatalf("line of %d bytes: %q", len(l), l)
			}
			for i := 0; i < len(l); i++ {
				if c := l[i]; c < 0x20 && c != '\t' || c == 0x7f {
					t.Fatalf("control byte %#x in line %q", c, l)
				}
			}
		}
		i := int(cut) % (len(data) + 1)
		split := run(data[:i], data[i:])
		// A rule fires once per line, on the completed line or on the part
		// seen when a chunk ends. Splitting the input can therefore only
		// add an alert for the one line that spans the cut (seen non-empty
		// there, but erased by backspace before its end), never lose one.
		if len(split) < len(whole) || len(split) > len(whole)+1 {
			t.Fatalf("split at %d: %d alerts %q, unsplit %d %q", i, len(split), split, len(whole), whole)
		}
	})
}

// lineCollector is a slog.Handler keeping the raw line of each alert.
type lineCollector struct{ lines []string }

func (c *lineCollector) Enabled(context.Context, slog.Level) bool { return true }
func (c *lineCollector) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *lineCollector) WithGroup(string) slog.Handler            { return c }
func (c *lineCollector) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "console alert" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "line" {
				c.lines = append(c.lines, a.Value.String())
			}
			return true
		})
	}
	return nil
}
