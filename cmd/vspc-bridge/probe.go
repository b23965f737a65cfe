package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vspc-bridge/vspc-bridge/devices"
	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

const probeUsage = `usage: vspc-bridge probe [-settings "115200 8N1"] [-send TEXT] [-wait 2s] [-until TEXT] [-timeout 10s] [-json] [-v] URI

Opens a device URI (the form a [[route]]'s device key takes) the way the
bridge does and reports what it finds: the kind, whether it connects,
whether line control reaches it, the line settings in effect, the modem
lines, and what the device sends within -wait. Run it first when a VM's
console is silent.

With -settings the settings are applied (tcp://, nport:// without a
command port and telnet:// devices cannot change them: there they say what
the device server is configured to). -send writes TEXT to the device first
(\r, \n, \t, \xHH and \\ are understood), for example -send '\r' to
provoke a login prompt. -until stops waiting as soon as what the device
sent contains TEXT (same escapes).

Exits 0 when the device connected (and took the settings asked for), 1
otherwise.
`

// probeReport is what probe prints (and, with -json, its JSON form).
type probeReport struct {
	Device      string   `json:"device"`
	Kind        string   `json:"kind"`
	Address     string   `json:"address"`
	CommandPort string   `json:"command_port,omitempty"` // nport:// with line control
	Connected   bool     `json:"connected"`
	Error       string   `json:"error,omitempty"`
	LineControl bool     `json:"line_control"`
	Settings    string   `json:"settings,omitempty"`  // in effect; "" when unknown
	Requested   string   `json:"requested,omitempty"` // -settings
	Modem       string   `json:"modem_lines,omitempty"`
	Mismatch    string   `json:"mismatch,omitempty"`
	Notes       []string `json:"notes,omitempty"`
	Received    int      `json:"received_bytes"`
	Sample      string   `json:"received,omitempty"` // the first bytes received, Go-quoted
}

// Consumer-side views of what some device kinds can tell.
type (
	lineControlled interface{ LineControl() bool }
	mismatcher     interface{ Mismatch() string }
	rfc2217Session interface{ Client() *rfc2217.Client }
	telnetModes    interface{ Binary() (in, out bool) }
	modemKnower    interface{ ModemKnown() bool }
)

func cmdProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, probeUsage) }
	settingsFlag := fs.String("settings", "", `line settings to apply, "115200 8N1 [flow]"`)
	send := fs.String("send", "", `text to send first (\r \n \t \xHH \\ understood)`)
	wait := fs.Duration("wait", 2*time.Second, "how long to collect what the device sends")
	until := fs.String("until", "", "stop waiting once the device sent this text (same escapes as -send)")
	timeout := fs.Duration("timeout", 10*time.Second, "bound for connecting and for each command")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	verbose := fs.Bool("v", false, "log the device session to stderr")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprint(stderr, probeUsage)
		return errUsage
	}
	t, err := target.Parse(fs.Arg(0))
	if err != nil {
		return err
	}
	var want rfc2217.Settings
	if *settingsFlag != "" {
		if want, err = rfc2217.ParseSettings(*settingsFlag); err != nil {
			return fmt.Errorf("-settings: %w", err)
		}
	}
	payload, err := unescapeSend(*send)
	if err != nil {
		return fmt.Errorf("-send: %w", err)
	}
	stopAt, err := unescapeSend(*until)
	if err != nil {
		return fmt.Errorf("-until: %w", err)
	}
	logLevel := slog.LevelWarn
	if *verbose {
		logLevel = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel}))

	rep := probe(ctx, t, want, payload, stopAt, *wait, *timeout, log)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printProbe(stdout, rep)
	}
	switch {
	case !rep.Connected:
		return errReported
	case rep.Requested != "" && rep.Mismatch != "":
		return errReported
	}
	return nil
}

// probe opens t and fills in the report. It never fails: what went wrong
// is in the report.
func probe(ctx context.Context, t target.Target, want rfc2217.Settings, send, until []byte, wait, timeout time.Duration, log *slog.Logger) probeReport {
	rep := probeReport{Device: t.String(), Kind: t.Kind.String(), Address: t.Addr(), CommandPort: t.CmdAddr()}
	if want != (rfc2217.Settings{}) {
		rep.Requested = want.String()
	}
	opts := devices.Options{Logger: log, DialTimeout: timeout}
	if t.Kind.FixedLine() {
		// What the device server is configured to (an nport:// device
		// falls back to it when its command port does not connect).
		opts.Initial = want
	}
	start := time.Now()
	dev, err := devices.Open(ctx, t, opts)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	defer dev.Close()
	rep.Connected = true
	rep.Notes = append(rep.Notes, fmt.Sprintf("connected in %v", time.Since(start).Round(100*time.Microsecond)))

	// Collect what the device sends from now on, beside everything else.
	col := startCollect(dev, 4096, until)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()

	// SetSettings first: it waits for the device's negotiation and initial
	// settings (rfc2217, nport), after which LineControl is known.
	cctx, cancel := context.WithTimeout(ctx, timeout)
	eff, serr := dev.SetSettings(cctx, want)
	cancel()
	if lc, ok := dev.(lineControlled); ok {
		rep.LineControl = lc.LineControl()
	}
	switch {
	case serr != nil && errors.Is(serr, rfc2217.ErrNotSupported):
	case serr != nil:
		rep.Notes = append(rep.Notes, "settings: "+serr.Error())
	}
	if eff.Baud != 0 {
		rep.Settings = eff.String()
	}
	fixed := t.FixedLine() || !rep.LineControl && t.Kind == target.KindNPort
	if rep.Requested != "" && !fixed && want.Merge(eff) != eff {
		rep.Mismatch = fmt.Sprintf("asked for %v, the device has %v", want, eff)
	}
	if m, ok := dev.(mismatcher); ok && m.Mismatch() != "" && !fixed {
		rep.Mismatch = m.Mismatch()
	}
	if t.CmdAddr() != "" && !rep.LineControl {
		rep.Notes = append(rep.Notes, "command port "+t.CmdAddr()+" did not connect: turn on \"Allow driver control\" in the NPort's TCP Server settings, or use ?cmd=none")
	}
	if !fixed && t.Kind == target.KindNPort && rep.Settings == "" {
		rep.Notes = append(rep.Notes, "line settings: not known (an NPort cannot be asked; pass -settings to apply some)")
	}
	if fixed {
		if rep.Settings == "" {
			rep.Notes = append(rep.Notes, "line settings: as configured on the device server (pass -settings to say what that is)")
		} else {
			rep.Notes = append(rep.Notes, "line settings: fixed, as configured on the device server")
		}
	}
	cctx, cancel = context.WithTimeout(ctx, timeout)
	modem, merr := dev.ModemState(cctx)
	cancel()
	mk, hasMK := dev.(modemKnower)
	switch {
	case merr == nil && hasMK && !mk.ModemKnown():
		rep.Notes = append(rep.Notes, "modem lines: not reported yet (an NPort reports them when settings are applied: pass -settings)")
	case merr == nil:
		rep.Modem = modemLines(modem)
	case errors.Is(merr, rfc2217.ErrNotSupported):
		rep.Notes = append(rep.Notes, "modem lines: not reported by this device")
	default:
		rep.Notes = append(rep.Notes, "modem lines: "+merr.Error())
	}
	if s, ok := dev.(rfc2217Session); ok {
		if sig := s.Client().ServerSignature(); sig != "" {
			rep.Notes = append(rep.Notes, "server signature: "+sig)
		}
	}
	if tm, ok := dev.(telnetModes); ok {
		in, out := tm.Binary()
		rep.Notes = append(rep.Notes, fmt.Sprintf("telnet: to the device %s, from the device %s", mode(out), mode(in)))
	}
	if len(send) > 0 {
		if _, err := dev.Write(send); err != nil {
			rep.Notes = append(rep.Notes, "send: "+err.Error())
		}
	}
	select {
	case <-deadline.C:
	case <-col.found:
	case <-ctx.Done():
	}
	dev.Close() // ends the collector's Read
	b := col.wait()
	rep.Received = len(b)
	if len(b) > 0 {
		rep.Sample = strconv.Quote(string(b[:min(len(b), 200)]))
	}
	return rep
}

func mode(binary bool) string {
	if binary {
		return "BINARY"
	}
	return "NVT"
}

// modemLines names the four line bits: "CD DSR CTS" (off: "-RI").
func modemLines(m rfc2217.ModemState) string {
	var parts []string
	for _, l := range []struct {
		bit  rfc2217.ModemState
		name string
	}{{rfc2217.ModemCD, "CD"}, {rfc2217.ModemDSR, "DSR"}, {rfc2217.ModemCTS, "CTS"}, {rfc2217.ModemRI, "RI"}} {
		if m&l.bit != 0 {
			parts = append(parts, l.name)
		} else {
			parts = append(parts, "-"+l.name)
		}
	}
	return strings.Join(parts, " ")
}

// collector reads a device on its own goroutine, keeping at most max
// bytes, until the device fails or is closed.
type collector struct {
	wg    sync.WaitGroup
	found chan struct{} // closed once the bytes hold until (never when until is empty)
	mu    sync.Mutex
	out   []byte // guarded by mu
}

func startCollect(r io.Reader, max int, until []byte) *collector {
	c := &collector{found: make(chan struct{})}
	c.wg.Go(func() {
		buf := make([]byte, 512)
		seen := false
		for {
			n, err := r.Read(buf)
			c.mu.Lock()
			if room := max - len(c.out); room > 0 {
				c.out = append(c.out, buf[:min(n, room)]...)
			}
			if !seen && len(until) > 0 && bytes.Contains(c.out, until) {
				seen = true
				close(c.found)
			}
			c.mu.Unlock()
			if err != nil {
				return
			}
		}
	})
	return c
}

// wait waits for the reader (close the device first) and returns what it
// read.
func (c *collector) wait() []byte {
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out
}

func printProbe(w io.Writer, r probeReport) {
	row := func(k, v string) { fmt.Fprintf(w, "%-12s %s\n", k, v) }
	row("device", r.Device)
	if r.CommandPort != "" {
		row("kind", r.Kind+" at "+r.Address+", command port "+r.CommandPort)
	} else {
		row("kind", r.Kind+" at "+r.Address)
	}
	if !r.Connected {
		row("connected", "no: "+r.Error)
		return
	}
	row("connected", "yes")
	if r.LineControl {
		row("line control", "yes: settings, DTR/RTS and BREAK reach the device")
	} else {
		row("line control", "no")
	}
	switch {
	case r.Settings != "":
		row("settings", r.Settings)
	default:
		row("settings", "unknown")
	}
	if r.Modem != "" {
		row("modem lines", r.Modem)
	}
	if r.Mismatch != "" {
		row("mismatch", r.Mismatch)
	}
	for _, n := range r.Notes {
		row("note", n)
	}
	if r.Received == 0 {
		row("received", "nothing")
	} else {
		row("received", fmt.Sprintf("%d bytes: %s", r.Received, r.Sample))
	}
}

// unescapeSend understands \r \n \t \xHH and \\ in s.
func unescapeSend(s string) ([]byte, error) {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			out = append(out, s[i])
			continue
		}
		if i+1 >= len(s) {
			return nil, errors.New(`trailing \`)
		}
		i++
		switch s[i] {
		case 'r':
			out = append(out, '\r')
		case 'n':
			out = append(out, '\n')
		case 't':
			out = append(out, '\t')
		case '\\':
			out = append(out, '\\')
		case 'x':
			if i+2 >= len(s) {
				return nil, fmt.Errorf(`\x needs two hex digits at %d`, i-1)
			}
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return nil, fmt.Errorf(`\x needs two hex digits at %d`, i-1)
			}
			out = append(out, byte(v))
			i += 2
		default:
			return nil, fmt.Errorf(`unknown escape \%c`, s[i])
		}
	}
	return out, nil
}
