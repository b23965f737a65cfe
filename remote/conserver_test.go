package remote_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// conserverConsole is one console entry of a conserver.cf.
type conserverConsole struct {
	name     string
	port     int
	protocol string // telnet or raw
}

// conserver is Debian's conserver-server, started for a test as a
// foreground process with its own config, logs and ports on 127.0.0.1.
type conserver struct {
	port   int    // the master port, for console -p
	logDir string // one NAME.log per console
}

// startConserver writes a conserver.cf with one console of type host per
// entry (every console read-write for clients from 127.0.0.1, logged to
// logDir/NAME.log) and runs conserver on it until the test ends.
func startConserver(t *testing.T, consoles []conserverConsole) *conserver {
	t.Helper()
	bin := devicetest.Require(t, "conserver")
	dir := t.TempDir()
	cs := &conserver{port: freePort(t), logDir: filepath.Join(dir, "logs")}
	if err := os.Mkdir(cs.logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var cf strings.Builder
	fmt.Fprintf(&cf, "config * {\n\tprimaryport %d;\n}\n", cs.port)
	fmt.Fprintf(&cf, "default * {\n\tmaster 127.0.0.1;\n\tlogfile %s/&.log;\n\trw *;\n\ttimestamp \"\";\n}\n", cs.logDir)
	for _, c := range consoles {
		fmt.Fprintf(&cf, "console %s {\n\ttype host;\n\thost 127.0.0.1;\n\tport %d;\n\tprotocol %s;\n}\n", c.name, c.port, c.protocol)
	}
	cf.WriteString("access * {\n\ttrusted 127.0.0.1;\n}\n")
	cfPath, pwPath := filepath.Join(dir, "conserver.cf"), filepath.Join(dir, "conserver.passwd")
	if err := os.WriteFile(cfPath, []byte(cf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pwPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Not -d: a foreground process the test owns. -E: clients without
	// TLS. -m: consoles per child process. -O 1: a console that
	// conserver forced down is tried again within a minute. A child
	// gives each console's connect 10 s (conserver's CONNECTTIMEOUT,
	// fixed when it is built), counted from when it set out to open the
	// child's first console; on two cores shared with other jobs a
	// child has been seen to take longer than that to get through its
	// 64 and force the last few down, though the bridge would have
	// taken them.
	cmd := exec.Command(bin, "-C", cfPath, "-P", pwPath, "-M", "127.0.0.1", "-p", fmt.Sprint(cs.port), "-E", "-m", "64", "-O", "1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its children (one per group of consoles) too
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			t.Logf("conserver output:\n%s", out.String())
		}
	})
	// The master listens once its children are up.
	testwait.For(t, "conserver's master port", func() bool {
		nc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", cs.port))
		if err == nil {
			nc.Close()
		}
		return err == nil
	})
	return cs
}

// conserverMarker is what conserver writes into a console log itself.
var conserverMarker = regexp.MustCompile(`\[-- Console (up|down) -- [^\]\r\n]*\]\r\n`)

// logged returns what conserver logged for console name, without its own
// up/down markers and (telnet) everything up to the bridge's attach
// notice.
func (cs *conserver) logged(name string, banner bool) []byte {
	b, _ := os.ReadFile(filepath.Join(cs.logDir, name+".log"))
	b = conserverMarker.ReplaceAll(b, nil)
	if banner {
		const notice = "; escapes off]\r\n"
		i := bytes.Index(b, []byte(notice))
		if i < 0 {
			return nil
		}
		b = b[i+len(notice):]
	}
	return b
}

// vmLines is what VM i sends: n bytes of numbered text lines.
func vmLines(i, n int) []byte {
	var b bytes.Buffer
	for l := 0; b.Len() < n; l++ {
		fmt.Fprintf(&b, "vm%03d line %06d the quick brown fox jumps over the lazy dog\r\n", i, l)
	}
	return b.Bytes()[:n]
}

// vmBinary is what VM i sends on a raw console: every byte value.
func vmBinary(i, n int) []byte {
	b := make([]byte, n)
	for k := range b {
		b[k] = byte(k*131 + k/256 + i)
	}
	return b
}

// TestConserverLogsEveryVM: conserver as the console logger of 200 VMs,
// one console of type host per VM on its per-VM port (half telnet, half
// raw). Every VM streams at once, 20 of them move to another host
// (vMotion) half way, and conserver's log files hold exactly what each VM
// sent.
func TestConserverLogsEveryVM(t *testing.T) {
	const (
		vms     = 200
		moved   = 20
		perVM   = 48 << 10
		uuidFmt = "42100000-0000-0000-0000-%012d"
	)
	h := newHarness(t, "open = true\nescape = \"\"")
	type vmState struct {
		name   string
		conn   *vspctest.Conn
		data   []byte
		telnet bool
	}
	list := make([]*vmState, vms)
	var entries []conserverConsole
	for i := range list {
		port := freePort(t)
		v := &vmState{name: fmt.Sprintf("cs-%03d", i), telnet: i%2 == 0}
		scheme, proto := "tcp", "raw"
		v.data = vmBinary(i, perVM)
		if v.telnet {
			scheme, proto = "telnet", "telnet"
			v.data = vmLines(i, perVM)
		}
		v.conn = h.vm(v.name, fmt.Sprintf(uuidFmt, 1000+i), fmt.Sprintf("%s://127.0.0.1:%d", scheme, port))
		list[i] = v
		entries = append(entries, conserverConsole{name: v.name, port: port, protocol: proto})
	}
	cs := startConserver(t, entries)
	// Up to a retry of conserver's (-O 1) and its connect timeout past
	// testwait's usual bound.
	attached := func() bool {
		n := 0
		for _, ci := range h.hub.Consoles() {
			if len(ci.Clients) == 1 {
				n++
			}
		}
		return n == vms
	}
	if !testwait.Until(t, testwait.Timeout+90*time.Second, attached) {
		t.Fatal("conserver is not on every console")
	}

	ctx, cancel := context.WithTimeout(t.Context(), testwait.Timeout)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, vms)
	for i, v := range list {
		wg.Go(func() {
			half := len(v.data) / 2
			for off := 0; off < len(v.data); off += 4 << 10 {
				if i < moved && off == half {
					dst, err := vspctest.Migrate(ctx, v.conn, h.vspcAddr, []byte(fmt.Sprintf("seq-%d", i)))
					if err != nil {
						errs <- fmt.Errorf("%s: vMotion: %w", v.name, err)
						return
					}
					t.Cleanup(func() { dst.Close() })
					v.conn = dst
				}
				if _, err := v.conn.Write(v.data[off:min(off+4<<10, len(v.data))]); err != nil {
					errs <- fmt.Errorf("%s: %w", v.name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	done := make([]bool, vms)
	if !testwait.Until(t, testwait.Timeout, func() bool {
		all := true
		for i, v := range list {
			if !done[i] {
				done[i] = len(cs.logged(v.name, v.telnet)) >= len(v.data)
				all = all && done[i]
			}
		}
		return all
	}) {
		for i, v := range list {
			if !done[i] {
				t.Errorf("%s: conserver logged %d of %d bytes", v.name, len(cs.logged(v.name, v.telnet)), len(v.data))
			}
		}
		t.FailNow()
	}
	for _, v := range list {
		if got := cs.logged(v.name, v.telnet); !bytes.Equal(got, v.data) {
			t.Errorf("%s: conserver's log (%d bytes) differs from what the VM sent (%d bytes)", v.name, len(got), len(v.data))
		}
	}
	if n := h.hub.Counters().ClientsDropped; n != 0 {
		t.Fatalf("%d clients dropped", n)
	}
}

// TestConserverConsoleReadWrite: an operator attaches with `console`
// through conserver, read-write, sees the VM's output and types into it.
func TestConserverConsoleReadWrite(t *testing.T) {
	devicetest.Require(t, "console")
	h := newHarness(t, "open = true\nescape = \"\"")
	port := freePort(t)
	vm := h.vm("cs-op", "42100000-0000-0000-0000-00000000c001", fmt.Sprintf("telnet://127.0.0.1:%d", port))
	cs := startConserver(t, []conserverConsole{{name: "cs-op", port: port, protocol: "telnet"}})
	h.waitClients("cs-op", 1)
	vm.Write([]byte("cs-op login: "))
	testwait.For(t, "conserver to log the prompt", func() bool { return bytes.Contains(cs.logged("cs-op", true), []byte("login: ")) })

	m := startTmux(t, "console", "-M", "127.0.0.1", "-p", fmt.Sprint(cs.port), "-E", "cs-op")
	m.waitFor("[Enter `^Ec?' for help]")
	m.typeText("root")
	m.typeEnter()
	// Enter reaches the VM as a CR or, through conserver's telnet (CR LF,
	// NVT), as the newline our telnet decoder makes of it.
	got := make([]byte, 5)
	if _, err := io.ReadFull(vm, got); err != nil || string(got[:4]) != "root" || (got[4] != '\r' && got[4] != '\n') {
		t.Fatalf("VM got %q, %v", got, err)
	}
	vm.Write([]byte("\r\nwelcome to cs-op\r\n"))
	m.waitFor("welcome to cs-op")
	if ci := h.waitClients("cs-op", 1); ci.Clients[0].Mode != "read-write" {
		t.Fatalf("conserver's client: %+v", ci.Clients[0])
	}
}
