package vc

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
)

// Exit statuses of Run.
const (
	ExitOK       = 0 // nothing to report
	ExitProblems = 1 // problems were found (or provision refused a change)
	ExitUsage    = 2 // usage, configuration or connection error
)

// env is what a subcommand needs from its surroundings. Run fills it from the
// process; tests inject their own.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// loadBridge reads the bridge config named by -config ("" = the built-in default).
	loadBridge func(path string) (Bridge, error)
}

// Run runs "vspc-bridge vc ARGS…" and returns the exit status. args are what
// follows "vc" on the command line, e.g. {"audit", "-config", "x.toml", "VM1"}.
// It reads GOVC_* from the process environment; -h prints usage and returns 0.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, args, env{
		stdout:     stdout,
		stderr:     stderr,
		getenv:     os.Getenv,
		loadBridge: LoadBridge,
	})
}

const usage = `usage: vspc-bridge vc COMMAND [flags] [ARGS…]

Commands:
  audit      list every VM's virtual serial ports and what is wrong with them
  provision  add or change a URI-backed serial port that goes through this bridge
  preflight  check (and with -fix enable) the ESXi firewall rulesets VMs need

Connection flags as for govc: -u URL [GOVC_URL], -username [GOVC_USERNAME],
-password [GOVC_PASSWORD], -k [GOVC_INSECURE], -dc [GOVC_DATACENTER].
Exit status: 0 all well, 1 problems found, 2 usage or connection error.
Run "vspc-bridge vc COMMAND -h" for the flags of a command.
`

func run(ctx context.Context, args []string, e env) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return ExitUsage
	}
	switch args[0] {
	case "audit":
		return runAudit(ctx, args[1:], e)
	case "provision":
		return runProvision(ctx, args[1:], e)
	case "preflight":
		return runPreflight(ctx, args[1:], e)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(e.stdout, usage)
		return ExitOK
	}
	fmt.Fprintf(e.stderr, "vc: unknown command %q\n%s", args[0], usage)
	return ExitUsage
}

// command is the part every subcommand shares: its flag set, the connection
// flags and the output format.
type command struct {
	fs    *flag.FlagSet
	help  string // printed above the flag defaults
	conn  connFlags
	json  bool
	cfg   string
	usage string
}

func newCommand(name, synopsis, help string, e env, withConfig bool) *command {
	c := &command{fs: flag.NewFlagSet("vspc-bridge vc "+name, flag.ContinueOnError), help: help, usage: synopsis}
	c.fs.SetOutput(io.Discard)
	c.fs.Usage = func() {}
	c.conn.register(c.fs, e.getenv)
	c.fs.BoolVar(&c.json, "json", false, "print JSON instead of a table")
	if withConfig {
		c.fs.StringVar(&c.cfg, "config", "", "bridge config `FILE` (default: the built-in example config)")
	}
	return c
}

func (c *command) printUsage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s\n\n%s\nFlags:\n", c.usage, c.help)
	c.fs.SetOutput(w)
	c.fs.PrintDefaults()
	c.fs.SetOutput(io.Discard)
}

// result is what a subcommand reports: JSON with -json, else a table. Any
// problem in it makes the exit status ExitProblems.
type result interface{ problemList() []*Problem }

func (r *Report) problemList() []*Problem          { return r.Problems }
func (r *PreflightReport) problemList() []*Problem { return r.Problems }
func (ch *Change) problemList() []*Problem         { return ch.Problems }

// task is what one subcommand does once its flags are parsed.
type task[R result] struct {
	// check validates the parsed flags; nil: nothing to check. Its error
	// ("vc: …") is printed with the usage, and the exit status is ExitUsage.
	check func() error
	// do does the work, with the bridge config loaded and logged in to
	// vCenter. Its error is printed and the exit status is ExitUsage.
	do func(ctx context.Context, c *vim25.Client, b Bridge) (R, error)
	// table prints the result for people (without -json).
	table func(w io.Writer, r R) error
}

// execute is the flow every subcommand shares, after its flags are
// registered on c: parse args (-h prints the usage to stdout and returns
// ExitOK), t.check, load the bridge config named by -config, log in, t.do,
// print its result, log out. It returns the exit status.
func execute[R result](ctx context.Context, c *command, args []string, e env, t task[R]) int {
	err := c.fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		c.printUsage(e.stdout)
		return ExitOK
	}
	if err != nil {
		err = fmt.Errorf("vc: %w", err)
	} else if t.check != nil {
		err = t.check()
	}
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		c.printUsage(e.stderr)
		return ExitUsage
	}
	b, err := e.loadBridge(c.cfg)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return ExitUsage
	}
	cl, err := Login(ctx, c.conn.conn())
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return ExitUsage
	}
	// Logging out is best effort: the session expires on the server anyway.
	defer func() { _ = cl.Logout(context.WithoutCancel(ctx)) }()
	r, err := t.do(ctx, cl.Client, b)
	if err == nil {
		if c.json {
			err = writeJSON(e.stdout, r)
		} else {
			err = t.table(e.stdout, r)
		}
	}
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return ExitUsage
	}
	if len(r.problemList()) > 0 {
		return ExitProblems
	}
	return ExitOK
}

// connFlags are govc's connection conventions. The URL and password flags
// default to "" and fall back to GOVC_URL and GOVC_PASSWORD when used, so that
// -h never prints credentials as flag defaults.
type connFlags struct {
	getenv   func(string) string
	url      string
	username string
	password string
	insecure bool
	dc       string
}

func (f *connFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	f.getenv = getenv
	insecure := false
	switch strings.ToLower(getenv("GOVC_INSECURE")) {
	case "1", "true":
		insecure = true
	}
	fs.StringVar(&f.url, "u", "", "vCenter or ESXi `URL` [GOVC_URL]")
	fs.StringVar(&f.username, "username", getenv("GOVC_USERNAME"), "user `name` [GOVC_USERNAME]")
	fs.StringVar(&f.password, "password", "", "`password` [GOVC_PASSWORD]")
	fs.BoolVar(&f.insecure, "k", insecure, "skip verification of the server certificate [GOVC_INSECURE]")
	fs.StringVar(&f.dc, "dc", getenv("GOVC_DATACENTER"), "datacenter `NAME` or path [GOVC_DATACENTER]")
}

// conn applies govc's precedence: flags, then GOVC_URL / GOVC_PASSWORD.
func (f *connFlags) conn() Conn {
	return Conn{
		URL:      cmp.Or(f.url, f.getenv("GOVC_URL")),
		Username: f.username,
		Password: cmp.Or(f.password, f.getenv("GOVC_PASSWORD")),
		Insecure: f.insecure,
	}
}

// Conn says how to reach vCenter (or one ESXi host), as govc's GOVC_URL,
// GOVC_USERNAME, GOVC_PASSWORD and GOVC_INSECURE do.
type Conn struct {
	URL      string // "host", "https://host/sdk" or "user:pass@host"
	Username string // overrides the URL's user when set
	Password string // overrides the URL's password when set
	Insecure bool   // skip certificate verification
}

// url returns the API URL with the credentials applied the way govc applies
// them: Username and Password override what the URL carries.
func (c Conn) url() (*url.URL, error) {
	if c.URL == "" {
		return nil, errors.New("vc: no vCenter URL: set GOVC_URL or -u")
	}
	u, err := soap.ParseURL(c.URL)
	if err != nil {
		return nil, fmt.Errorf("vc: bad vCenter URL: %w", err)
	}
	user, pass := "", ""
	if u.User != nil {
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	u.User = url.UserPassword(cmp.Or(c.Username, user), cmp.Or(c.Password, pass))
	return u, nil
}

// Login connects and logs in; the caller logs out (Client.Logout). Errors
// never show the password. check-config can use it with Audit.
func Login(ctx context.Context, c Conn) (*govmomi.Client, error) {
	u, err := c.url()
	if err != nil {
		return nil, err
	}
	cl, err := govmomi.NewClient(ctx, u, c.Insecure)
	if err != nil {
		return nil, fmt.Errorf("vc: connect to %s: %w", u.Redacted(), err)
	}
	return cl, nil
}
