//go:build linux

package devicetest

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// recordingTB catches Skipf/Fatalf from a launcher helper.
type recordingTB struct {
	testing.TB
	skipped, fatal string
}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func runTB(t *testing.T, f func(tb testing.TB)) *recordingTB {
	r := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

func TestRequireMissingSkipsOrFailsUnderCI(t *testing.T) {
	t.Setenv("CI", "")
	r := runTB(t, func(tb testing.TB) { Require(tb, "no-such-peer-xyz") })
	if r.skipped == "" || r.fatal != "" || !strings.Contains(r.skipped, "install-test-peers.sh") {
		t.Errorf("without CI: skipped %q, fatal %q", r.skipped, r.fatal)
	}
	t.Setenv("CI", "true")
	r = runTB(t, func(tb testing.TB) { Require(tb, "no-such-peer-xyz") })
	if r.fatal == "" || r.skipped != "" || !strings.Contains(r.fatal, "install-test-peers.sh") {
		t.Errorf("CI=true: skipped %q, fatal %q", r.skipped, r.fatal)
	}
}

func TestScanListen(t *testing.T) {
	// Lines from /proc/net/tcp: a listener on 127.0.0.1:7001 (0x1B59), an
	// established connection from that port, a listener on 0.0.0.0:22.
	const procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1B59 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1B5A 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
`
	for _, tc := range []struct {
		want string
		ok   bool
	}{{"0100007F:1B59", true}, {"0100007F:1B5A", false}, {"0100007F:0016", false}} {
		ok, err := scanListen(strings.NewReader(procNetTCP), tc.want)
		if err != nil || ok != tc.ok {
			t.Errorf("scanListen(%s) = %v, %v; want %v", tc.want, ok, err, tc.ok)
		}
	}
}

func TestSocatPTYAndReadTTY(t *testing.T) {
	a, b := SocatPTY(t)
	for _, p := range []string{a, b} {
		s := TTY(t, p)
		if s.Speed == 0 || s.DataBits != 8 || s.Parity {
			t.Errorf("%s: %+v", p, s)
		}
	}
}
