package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vspc-bridge/vspc-bridge/admin"
	"github.com/vspc-bridge/vspc-bridge/configs"
)

// adminFlags are the flags shared by the commands that call the admin API.
type adminFlags struct {
	addr, config, tokenFile, cacert string
	insecure                        bool
	timeout                         time.Duration
}

func (a *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.addr, "addr", "", "admin endpoint: host:port or URL (default: [admin] listen of -config, else "+configs.DefaultAdminListen+") [VSPC_BRIDGE_ADMIN]")
	fs.StringVar(&a.config, "config", "", "the bridge's config file: the admin address, token and TLS certificate are read from its [admin] table")
	fs.StringVar(&a.tokenFile, "token-file", "", "file holding the bearer token (default: [admin] token/token_file of -config) [VSPC_BRIDGE_TOKEN holds the token itself]")
	fs.StringVar(&a.cacert, "cacert", "", "PEM certificate(s) to trust for an https:// endpoint (default: [admin] tls_cert of -config, else the system roots)")
	fs.BoolVar(&a.insecure, "insecure", false, "do not verify the endpoint's TLS certificate")
	fs.DurationVar(&a.timeout, "timeout", 10*time.Second, "time limit for the request")
}

// connect returns the admin client and a context bounded by -timeout;
// the caller defers cancel.
func (a *adminFlags) connect(ctx context.Context) (*admin.Client, context.Context, context.CancelFunc, error) {
	c, err := a.client()
	if err != nil {
		return nil, ctx, func() {}, err
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	return c, ctx, cancel, nil
}

// client builds the admin API client the flags describe.
func (a *adminFlags) client() (*admin.Client, error) {
	var ac configs.Admin
	if a.config != "" {
		cfg, err := configs.Load(a.config)
		if err != nil {
			return nil, err
		}
		ac = cfg.Admin
		if ac.Listen == "" && a.addr == "" {
			return nil, fmt.Errorf("%s: [admin] listen is off; give -addr", a.config)
		}
	}
	addr := cmp.Or(a.addr, os.Getenv("VSPC_BRIDGE_ADMIN"), dialable(ac.Listen), configs.DefaultAdminListen)
	useTLS := ac.TLSCert != ""
	base := admin.BaseURL(addr, useTLS)
	c := &admin.Client{Base: base}
	switch {
	case a.tokenFile != "":
		tok, err := (&configs.Admin{TokenFile: a.tokenFile}).ReadToken()
		if err != nil {
			return nil, err
		}
		c.Token = tok
	case os.Getenv("VSPC_BRIDGE_TOKEN") != "":
		c.Token = os.Getenv("VSPC_BRIDGE_TOKEN")
	default:
		tok, err := ac.ReadToken()
		if err != nil {
			return nil, err
		}
		c.Token = tok
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if strings.HasPrefix(base, "https://") {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: a.insecure}
		ca := cmp.Or(a.cacert, ac.TLSCert)
		if ca != "" && !a.insecure {
			pemData, err := os.ReadFile(ca)
			if err != nil {
				return nil, err
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pemData) {
				return nil, fmt.Errorf("%s: no PEM certificate", ca)
			}
			tc.RootCAs = pool
			if ac.TLSCert != "" && a.cacert == "" {
				// The bridge's own (often self-signed) certificate: pin it
				// whatever name it was issued for.
				tc.InsecureSkipVerify = true
				tc.VerifyPeerCertificate = pinned(pemData)
			}
		}
		tr.TLSClientConfig = tc
	}
	c.HTTP = &http.Client{Transport: tr, Timeout: a.timeout}
	return c, nil
}

// pinned accepts exactly the certificates in pemData.
func pinned(pemData []byte) func([][]byte, [][]*x509.Certificate) error {
	var want [][]byte
	for rest := pemData; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			want = append(want, b.Bytes)
		}
	}
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		for _, w := range want {
			if len(raw) > 0 && string(raw[0]) == string(w) {
				return nil
			}
		}
		return errors.New("the admin endpoint's certificate is not [admin] tls_cert")
	}
}

// dialable turns a listen address into one a client can dial: an
// unspecified host becomes loopback.
func dialable(listen string) string {
	if listen == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// cmdStatus prints the bridge's listeners, counters and every VM session.
func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var af adminFlags
	af.register(fs)
	asJSON := fs.Bool("json", false, "print the status and sessions as JSON")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vspc-bridge status [-json] [-addr ADDR] [-config FILE] [-token-file FILE]\n\nShows the running bridge: its listeners and proxy URIs (with the telnets thumbprint), counters, and one line per VM serial port.\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vspc-bridge status: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	c, ctx, cancel, err := af.connect(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	l, err := c.Sessions(ctx, "")
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Status   admin.Status    `json:"status"`
			Sessions []admin.Session `json:"sessions"`
		}{st, l.Sessions})
	}
	printStatus(stdout, st, l.Sessions)
	return nil
}

func printStatus(w io.Writer, st admin.Status, sessions []admin.Session) {
	fmt.Fprintf(w, "vspc-bridge %s, up %s, config %s\n", st.Version, roundDur(st.Time.Sub(st.Started)), st.Config)
	r := st.Reloads
	if r.OK+r.Rejected > 0 {
		fmt.Fprintf(w, "reloads: %d applied, %d rejected, last %s", r.OK, r.Rejected, r.Last.Local().Format(time.DateTime))
		if r.LastError != "" {
			fmt.Fprintf(w, " (rejected: %s)", firstLine(r.LastError))
		}
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nLISTENER\tADDRESS\tURI\tCERT EXPIRES")
	for _, l := range st.Listeners {
		exp := "-"
		if !l.CertNotAfter.IsZero() {
			exp = l.CertNotAfter.Local().Format(time.DateOnly)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.Kind, l.Addr, l.URI, exp)
	}
	tw.Flush()
	k := st.Counters
	fmt.Fprintf(w, "\n%d VM connections, %d ports. vMotions: %d completed, %d aborted, %d notnow, %d bad secret, %d timed out. Handshake failures %d, refused %d, VM reconnects %d.\n",
		st.Conns, st.Ports, k.VMotionsCompleted, k.VMotionsAborted, k.VMotionsNotNow, k.VMotionsBadSecret, k.VMotionsTimedOut, k.HandshakeFailures, k.Refused, k.Reconnects)
	if len(st.Alerts) > 0 {
		fmt.Fprintf(w, "Alert rules: %s\n", strings.Join(st.Alerts, ", "))
	}
	if r := st.Remote; r != nil {
		fmt.Fprintf(w, "Remote access: %d consoles, %d clients connected. Logins: %d ok, %d failed, %d refused (rate limit); %d clients dropped for falling behind.\n",
			r.Consoles, r.Sessions, r.Logins, r.LoginFailures, r.LoginsRefused, r.ClientsDropped)
	}
	if c := st.Cluster; c != nil {
		printCluster(w, c)
	}
	if len(sessions) == 0 {
		fmt.Fprintln(w, "\nNo VM serial ports.")
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VM\tSERVICE URI\tDIR\tSTATE\tDEVICE\tDEVICE STATE\tTO VM\tFROM VM\tQUEUED\tVMOTIONS\tSINCE")
	for _, s := range sessions {
		dev, dst := "-", "-"
		if s.Device != nil {
			dev, dst = s.Device.URI, s.Device.State
			if s.Device.Reconnects > 0 {
				dst += fmt.Sprintf(" (%d reconnects)", s.Device.Reconnects)
			}
		} else if s.RemoteListen != "" || len(s.RemoteUsers) > 0 {
			dev, dst = cmp.Or(s.RemoteListen, "remote console"), fmt.Sprintf("%d users", len(s.RemoteUsers))
		}
		vmo := strconv.Itoa(s.VMotions)
		if h := s.LastHandOver; h != nil && h.Outcome != "completed" {
			vmo += " (last " + h.Outcome + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cmp.Or(s.VM, "?"), s.ServiceURI, s.Direction, s.State, dev, dst,
			bytesStr(s.BytesToVM), bytesStr(s.BytesFromVM), bytesStr(int64(s.Queued)), vmo, ago(st.Time, s.Since))
	}
	tw.Flush()
}

// cmdSessions prints one VM's serial ports in detail.
func cmdSessions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sessions", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var af adminFlags
	af.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vspc-bridge sessions [-json] [-addr ADDR] [-config FILE] VM\n\nShows every serial port of VM (a VM name or VC UUID) in detail.\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "vspc-bridge sessions: want exactly one VM name or VC UUID")
		fs.Usage()
		return errUsage
	}
	c, ctx, cancel, err := af.connect(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	l, err := c.Sessions(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(l)
	}
	for i, s := range l.Sessions {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		printSession(stdout, l.Time, s)
	}
	for i, o := range l.Elsewhere {
		if i > 0 || len(l.Sessions) > 0 {
			fmt.Fprintln(stdout)
		}
		printElsewhere(stdout, l.Time, o)
	}
	return nil
}

// printElsewhere describes a serial port another cluster member serves.
func printElsewhere(w io.Writer, now time.Time, o admin.PortOwner) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, f string, a ...any) { fmt.Fprintf(tw, "  %s\t%s\n", k, fmt.Sprintf(f, a...)) }
	fmt.Fprintf(tw, "VM %s\n", o.VM)
	row("VC UUID", "%s", cmp.Or(o.VCUUID, "-"))
	row("service URI", "%s", o.ServiceURI)
	row("served by", "member %s, since %s (%s)", o.Member, o.Since.Local().Format(time.DateTime), ago(now, o.Since))
	if o.MemberAdmin != "" {
		row("details", "vspc-bridge sessions -addr %s %s", o.MemberAdmin, cmp.Or(o.VCUUID, o.VM))
	}
	tw.Flush()
}

func printSession(w io.Writer, now time.Time, s admin.Session) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, f string, a ...any) { fmt.Fprintf(tw, "  %s\t%s\n", k, fmt.Sprintf(f, a...)) }
	fmt.Fprintf(tw, "VM %s\n", s.VM)
	row("VC UUID", "%s", cmp.Or(s.VCUUID, "-"))
	if s.BIOSUUID != "" || s.LocationUUID != "" {
		row("BIOS / location UUID", "%s / %s", cmp.Or(s.BIOSUUID, "-"), cmp.Or(s.LocationUUID, "-"))
	}
	row("service URI", "%s (direction %s)", s.ServiceURI, s.Direction)
	row("state", "%s, since %s (%s)", s.State, s.Since.Local().Format(time.DateTime), ago(now, s.Since))
	if s.Via != "" {
		row("ESXi connection", "%s (relayed by member %s)", s.Peer, s.Via)
	} else {
		row("ESXi connection", "%s", cmp.Or(s.Peer, "none (detached: waiting for the VM within the grace period)"))
	}
	row("bytes", "%s to the VM, %s from the VM, %s queued for the VM", bytesStr(s.BytesToVM), bytesStr(s.BytesFromVM), bytesStr(int64(s.Queued)))
	if h := s.LastHandOver; h != nil {
		row("vMotions", "%d; last %s %s -> %s at %s, took %s, %s held", s.VMotions, h.Outcome, h.From, cmp.Or(h.To, "-"), h.At.Local().Format(time.DateTime), h.Duration, bytesStr(int64(h.Buffered)))
	} else {
		row("vMotions", "%d", s.VMotions)
	}
	if d := s.Device; d != nil {
		row("device", "%s (via %s)", d.URI, d.Via)
		row("device state", "%s; %d connects (%d reconnects); %s from the VM waiting for it", d.State, d.Connects, d.Reconnects, bytesStr(int64(d.Backlog)))
		if d.LastError != "" {
			row("device error", "%s", d.LastError)
		}
		if d.Settings != "" {
			row("guest line settings", "%s", d.Settings)
		}
		if d.Mismatch != "" {
			row("settings mismatch", "%s", d.Mismatch)
		}
	} else {
		row("device", "none")
	}
	if s.RemoteListen != "" {
		row("remote console", "%s", s.RemoteListen)
	}
	if len(s.RemoteUsers) == 0 {
		row("remote users", "none")
	}
	for _, u := range s.RemoteUsers {
		row("remote user", "%s (%s) from %s via %s since %s", u.User, u.Mode, u.Peer, u.Via, u.Since.Local().Format(time.DateTime))
	}
	tw.Flush()
}

// cmdReload asks the running bridge to re-read its config file through
// the admin API (POST /api/v1/reload), and prints what changed or why
// the new config was rejected. (kill -HUP does the same without output.)
func cmdReload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var af adminFlags
	af.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vspc-bridge reload [-addr ADDR] [-config FILE] [-token-file FILE]\n\nAsks the running bridge to re-read its config file (POST /api/v1/reload) and prints the changes, or every problem when the new config is rejected (the running config then stays in force). Exit status 1 when rejected. SIGHUP reloads too.\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vspc-bridge reload: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	c, ctx, cancel, err := af.connect(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	res, err := c.Reload(ctx)
	if err != nil {
		return err
	}
	if !res.OK {
		fmt.Fprintln(stdout, "config rejected; the running config stays in force:")
		for _, e := range res.Errors {
			fmt.Fprintln(stdout, "  "+e)
		}
		return errReported
	}
	fmt.Fprintln(stdout, "config reloaded:")
	for _, ch := range res.Changes {
		fmt.Fprintln(stdout, "  "+ch)
	}
	return nil
}

// errReported is an error whose details were already printed.
var errReported = errors.New("see above")

func bytesStr(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return strconv.FormatInt(n, 10)
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= time.Hour:
		return d.Round(time.Minute)
	case d >= time.Minute:
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return roundDur(now.Sub(t)).String() + " ago"
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// printCluster prints a cluster member's view: its lease, the members and
// what each holds, and etcd.
func printCluster(w io.Writer, c *admin.ClusterStatus) {
	state := "etcd healthy"
	switch {
	case c.Fenced:
		state = "FENCED (lease lapsed; devices closed)"
	case c.Failsafe:
		state = "failsafe (etcd down for every member; devices kept)"
	case !c.Healthy:
		state = "etcd unreachable: " + c.LastError
	}
	leader := c.Leader
	if leader == "" {
		leader = "none"
	}
	fmt.Fprintf(w, "\nCluster %s, member %s: %s. Leader %s. Orphan ports %d. Reconnects through vCenter: %d toggled, %d back, %d failed; %d came back by themselves here.\n",
		c.Name, c.Member, state, leader, c.Orphans, c.Counters.Toggled, c.Counters.Reconnected, c.Counters.ReconnectFailed, c.Counters.CameBack)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tLINK\tPORTS\tDEVICES\tVERSION\tSTARTED")
	for _, m := range c.Members {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", m.ID, m.Link, m.Ports, m.Devices, m.Version, m.Started.Local().Format(time.DateTime))
	}
	tw.Flush()
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ETCD\tSTATE\tVERSION\tDB SIZE")
	for _, e := range c.Etcd {
		st := "ok"
		switch {
		case !e.OK:
			st = "DOWN: " + e.Error
		case e.Leader:
			st = "ok, leader"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", e.Endpoint, st, e.Version, e.DBSize)
	}
	tw.Flush()
}
