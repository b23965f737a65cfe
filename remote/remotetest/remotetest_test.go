package remotetest

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/leaktest"
)

// TestMain fails the run if goroutines started by the tests outlive them.
func TestMain(m *testing.M) { leaktest.Main(m, 2*time.Second) }

// failures is a testing.TB whose Fatalf records the failure and ends the
// calling goroutine, as testing.T's does.
type failures struct {
	testing.TB
	msg chan string
}

func (f failures) Helper() {}

func (f failures) Fatalf(format string, args ...any) {
	f.msg <- fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// readVM runs ReadVM on r for want and returns its failure ("" for none).
func readVM(t *testing.T, r io.Reader, want string) string {
	f := failures{TB: t, msg: make(chan string, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ReadVM(f, r, []byte(want))
	}()
	<-done
	select {
	case m := <-f.msg:
		return m
	default:
		return ""
	}
}

// ReadVM takes want however it is split, and fails when the bytes differ
// or the stream ends first.
func TestReadVM(t *testing.T) {
	pr, pw := io.Pipe()
	go func() {
		for _, p := range []string{"lo", "gin: ", "root\r"} {
			pw.Write([]byte(p))
		}
	}()
	if msg := readVM(t, pr, "login: root\r"); msg != "" {
		t.Errorf("split writes: %s", msg)
	}
	if msg := readVM(t, strings.NewReader("login: toor"), "login: root"); !strings.Contains(msg, `VM got "login: toor", want "login: root"`) {
		t.Errorf("different bytes: %q", msg)
	}
	if msg := readVM(t, strings.NewReader("log"), "login: "); !strings.Contains(msg, `VM read: EOF after "log"`) {
		t.Errorf("short stream: %q", msg)
	}
	pw.Close()
}

func TestTail(t *testing.T) {
	b := []byte(strings.Repeat("x", 300) + strings.Repeat("y", 200))
	if got := string(Tail(b)); got != strings.Repeat("y", 200) {
		t.Errorf("Tail of 500 bytes = %q", got)
	}
	if got := string(Tail([]byte("short"))); got != "short" {
		t.Errorf("Tail(short) = %q", got)
	}
}
