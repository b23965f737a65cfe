package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// child is a subprocess whose memory and CPU we read from /proc: the
// bridge, or the plain relay (this program re-executed in relay mode).
type child struct {
	name string
	cmd  *exec.Cmd
	addr string // where it listens
	// extPid is the pid of a bridge started by someone else (-bridge-addr,
	// -bridge-pid); cmd is nil then. 0: no /proc figures.
	extPid int
	done   chan struct{}
	err    error
}

// startChild runs argv and waits for a line on stdout matching re, whose
// first group is the listening address.
func startChild(ctx context.Context, name string, argv []string, re *regexp.Regexp, stderr io.Writer) (*child, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vspc-load: start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addrc <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, out)
	}()
	go func() { c.err = cmd.Wait(); close(c.done) }()
	select {
	case c.addr = <-addrc:
		return c, nil
	case <-c.done:
		return nil, fmt.Errorf("vspc-load: %s exited before listening: %v", name, c.err)
	case <-time.After(15 * time.Second):
		c.stop()
		return nil, fmt.Errorf("vspc-load: %s did not report its address within 15s", name)
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	}
}

func (c *child) pid() int {
	if c.cmd == nil {
		return c.extPid
	}
	return c.cmd.Process.Pid
}

// stop sends SIGTERM, then SIGKILL after 3 s, and waits. A bridge the
// tool did not start is left alone.
func (c *child) stop() {
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(3 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// rssKiB reads VmRSS from /proc/PID/status.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, errors.New("vspc-load: no VmRSS")
}

// cpuTicks reads utime+stime (clock ticks) from /proc/PID/stat.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("vspc-load: bad stat")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, errors.New("vspc-load: short stat")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("vspc-load: bad stat numbers")
	}
	return u + st, nil
}

// rssParts reads RssAnon (private memory: heap, stacks, runtime) and
// RssFile (pages of the binary and other mapped files, shared with the
// page cache) from /proc/PID/status, in KiB. The binary's pages grow as
// code paths run for the first time, whatever the number of ports.
func rssParts(pid int) (anon, file int64) {
	anon, _ = procStatusKiB(pid, "RssAnon:")
	file, _ = procStatusKiB(pid, "RssFile:")
	return anon, file
}

// threads is the number of pid's threads.
func threads(pid int) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	return len(tasks)
}

// runDelay is the time pid's threads have waited on a run queue (ready
// but not running: the machine's other load), summed from
// /proc/PID/task/*/schedstat; 0 when unreadable.
func runDelay(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 1 {
			if v, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				sum += time.Duration(v)
			}
		}
	}
	return sum
}

// cpuTime is the CPU time pid's threads have run, in nanoseconds from
// /proc/PID/task/*/schedstat (ticks of 10 ms are too coarse for a burst
// that lasts 100 ms); it falls back to utime+stime.
func cpuTime(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum time.Duration
	n := 0
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			sum += time.Duration(v)
			n++
		}
	}
	if n == 0 {
		t, _ := cpuTicks(pid)
		return time.Duration(t) * time.Second / clkTck
	}
	return sum
}

// clkTck is USER_HZ; 100 on every Linux we run on.
const clkTck = 100

// cpuOver measures the CPU time pid uses over d, as a fraction of one core.
func cpuOver(pid int, d time.Duration) (float64, error) {
	t0, err := cpuTicks(pid)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	time.Sleep(d)
	t1, err := cpuTicks(pid)
	if err != nil {
		return 0, err
	}
	return float64(t1-t0) / clkTck / time.Since(start).Seconds(), nil
}

// openFileLimit reads the soft "Max open files" of pid.
func openFileLimit(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			f := strings.Fields(line)
			if len(f) >= 4 {
				n, _ := strconv.ParseInt(f[3], 10, 64)
				return n
			}
		}
	}
	return 0
}

// raiseOwnLimit lifts this process's RLIMIT_NOFILE to the hard limit.
func raiseOwnLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return rl.Cur
}

// buildBridge builds ./cmd/vspc-bridge into dir and returns the binary.
func buildBridge(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "vspc-bridge")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/vspc-bridge")
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("vspc-load: go build ./cmd/vspc-bridge (run from the module root, or pass -bridge-bin): %w", err)
	}
	return bin, nil
}

var bridgeAddrRE = regexp.MustCompile(`listening for ESXi VMs on (\S+)`)

// bridgeConfig is the generated config: loopback listener and targets,
// no session cap below the file limit, errors-only logging, no admin
// endpoint (its default port may be taken by a bridge already running).
// vspcExtra goes into [vspc]; without plain, the bridge has no plain
// telnet listener (a telnets-only bridge: vspcExtra names tls_listen).
func bridgeConfig(reconnectMin, reconnectMax, vspcExtra string, plain bool) string {
	listen := "listen = \"127.0.0.1:0\"\n"
	if !plain {
		listen = ""
	}
	return fmt.Sprintf(`# generated by vspc-load
[vspc]
%s%smax_sessions = 1000000
[policy]
connect_allow = ["127.0.0.0/8"]
reconnect_min = %q
reconnect_max = %q
[log]
level = "error"
[admin]
listen = ""
`, listen, vspcExtra, reconnectMin, reconnectMax)
}

// startBridge writes a config and starts "vspc-bridge serve" on it.
func startBridge(ctx context.Context, bin, dir, name, reconnectMin, reconnectMax string) (*child, error) {
	return startBridgeWith(ctx, bin, dir, name, reconnectMin, reconnectMax, "", true)
}

// startBridgeWith is startBridge with extra [vspc] keys, and no plain
// listener unless plain.
func startBridgeWith(ctx context.Context, bin, dir, name, reconnectMin, reconnectMax, vspcExtra string, plain bool) (*child, error) {
	path := filepath.Join(dir, name+".toml")
	if err := os.WriteFile(path, []byte(bridgeConfig(reconnectMin, reconnectMax, vspcExtra, plain)), 0o644); err != nil {
		return nil, err
	}
	return startChild(ctx, "bridge", []string{bin, "serve", "-config", path}, bridgeAddrRE, os.Stderr)
}

var relayAddrRE = regexp.MustCompile(`^relay listening on (\S+)`)

// startRelay re-executes this program as the plain relay toward target.
func startRelay(ctx context.Context, target string, splice bool) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return startChild(ctx, "relay", []string{self, "relay", "-target", target, fmt.Sprintf("-splice=%v", splice)}, relayAddrRE, os.Stderr)
}
