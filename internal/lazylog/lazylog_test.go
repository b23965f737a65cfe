package lazylog

import (
	"bytes"
	"log/slog"
	"regexp"
	"testing"
)

func TestSameOutputAsWith(t *testing.T) {
	var a, b bytes.Buffer
	strip := regexp.MustCompile(`time=\S+ `)
	base := func(w *bytes.Buffer) *slog.Logger {
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	want := base(&a).With("vm", "db 1", "n", 3, slog.Bool("ok", true))
	got := With(base(&b), "vm", "db 1", "n", 3, slog.Bool("ok", true))
	for _, l := range []*slog.Logger{want, got} {
		l.Info("attached", "peer", "127.0.0.1:1")
		l.Debug("dropped by the level")
		l.With("extra", 1).Warn("w")
		l.WithGroup("g").Error("e", "k", "v")
	}
	if sa, sb := strip.ReplaceAllString(a.String(), ""), strip.ReplaceAllString(b.String(), ""); sa != sb {
		t.Fatalf("lazy logger wrote\n%s\nslog's With wrote\n%s", sb, sa)
	}
	if n := bytes.Count(a.Bytes(), []byte("\n")); n != 3 {
		t.Fatalf("expected 3 lines, got %d:\n%s", n, a.String())
	}
}

// BenchmarkDropped is the case lazylog exists for: context built, record
// dropped by the level.
func BenchmarkDropped(b *testing.B) {
	l := slog.New(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelError}))
	b.Run("slog.With", func(b *testing.B) {
		for range b.N {
			l.With("vm", "db", "vc_uuid", "50123456-1234-1234-1234-123456789abc", "service_uri", "tcp://127.0.0.1:1").Info("attached")
		}
	})
	b.Run("lazylog.With", func(b *testing.B) {
		for range b.N {
			With(l, "vm", "db", "vc_uuid", "50123456-1234-1234-1234-123456789abc", "service_uri", "tcp://127.0.0.1:1").Info("attached")
		}
	})
}
