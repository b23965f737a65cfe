package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/vspc-bridge/vspc-bridge/admin"
	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/cluster"
	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/gcfloor"
	"github.com/vspc-bridge/vspc-bridge/internal/park"
	"github.com/vspc-bridge/vspc-bridge/remote"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (TOML); default: the built-in example (127.0.0.1:13370, loopback targets only)")
	format := fs.String("log-format", "", "log format: text or json (overrides [log] format)")
	level := fs.String("log-level", "", "log level: debug, info, warn or error (overrides [log] level)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vspc-bridge serve [-config FILE] [-log-format text|json] [-log-level LEVEL]\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var cfg *configs.Config
	if *path == "" {
		cfg = configs.Default()
	} else {
		var err error
		if cfg, err = configs.Load(*path); err != nil {
			return err
		}
	}
	lv := new(slog.LevelVar)
	log, err := newLogger(stderr, cfg.Log, *format, *level, lv)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, log, stdout, serveOptions{path: *path, level: lv, levelFixed: *level != ""})
}

// newLogger builds the logger; its level is lvar, which a reload may
// change.
func newLogger(w io.Writer, lc configs.Log, format, level string, lvar *slog.LevelVar) (*slog.Logger, error) {
	if format == "" {
		format = lc.Format
	}
	if level != "" {
		lc.Level = level
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(lc.Level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", lc.Level, err)
	}
	lvar.Set(lv)
	opts := &slog.HandlerOptions{Level: lvar}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// vspcConfig maps the file's settings onto the server's.
func vspcConfig(cfg *configs.Config, br vspc.Bridger, log *slog.Logger) vspc.Config {
	vc := vspc.Config{
		HandshakeTimeout:  cfg.VSPC.HandshakeTimeout.Duration,
		IdentifyTimeout:   cfg.VSPC.IdentifyTimeout.Duration,
		MaxSessions:       cfg.VSPC.MaxSessions,
		MaxSubnegotiation: cfg.VSPC.MaxSubnegotiation,
		GracePeriod:       cfg.VSPC.GracePeriod.Duration,
		VMotionDisabled:   !cfg.VMotion.Enabled,
		Buffer:            int(cfg.VMotion.Buffer),
		FlushTimeout:      cfg.VMotion.FlushTimeout.Duration,
		PeerTimeout:       cfg.VMotion.PeerTimeout.Duration,
		CompleteTimeout:   cfg.VMotion.CompleteTimeout.Duration,
		ParkAfter:         cfg.VSPC.ParkAfter.Duration,
		Bridger:           br,
		Logger:            log,
	}
	if vc.GracePeriod == 0 {
		vc.GracePeriod = -1 // "0 disables": close the port at once
	}
	for _, d := range cfg.Policy.Directions {
		switch d {
		case configs.DirectionClient:
			vc.Directions = append(vc.Directions, vspc.DirClient)
		case configs.DirectionServer:
			vc.Directions = append(vc.Directions, vspc.DirServer)
		}
	}
	if vc.Directions == nil {
		vc.Directions = []vspc.Direction{} // none allowed
	}
	return vc
}

// gcFloor is the smallest heap goal while the bridge is young.
const gcFloor = 32 << 20

func serve(ctx context.Context, cfg *configs.Config, log *slog.Logger, stdout io.Writer, opts serveOptions) error {
	limit := raiseFileLimit(log)
	// No garbage collection until the heap passes 32 MiB: the first
	// collections of a young bridge would otherwise fall inside the
	// reconnect burst that follows a restart (internal/gcfloor).
	defer gcfloor.Start(gcFloor).Stop()
	if opts.version == "" {
		opts.version = version
	}
	br := bridge.New(cfg, log)
	// One Parker for every idle VM and device connection ([vspc]
	// park_after). It is closed last, after the server and the bridge
	// have closed (and so woken) every connection it holds.
	pk, err := park.New(park.Config{Logger: log})
	if err != nil {
		log.Warn("idle connections will not park; each keeps a goroutine", "err", err)
		pk = nil
	} else {
		defer pk.Close()
		br.SetParker(pk)
	}
	var bridger vspc.Bridger = br
	var mem *member
	if cfg.Cluster.Enabled() {
		// A member claims each VM serial port and each device in etcd
		// before it serves or opens it (member.go, package cluster). It
		// leaves last, after its devices are closed: its lease is revoked
		// and everything it held is free at once.
		var err error
		if mem, err = startMember(ctx, cfg, log, opts.version); err != nil {
			return fmt.Errorf("joining the cluster: %w", err)
		}
		defer mem.close()
		br.SetDeviceGuard(mem.node.DeviceGuard())
		bridger = &cluster.Bridger{Node: mem.node, Next: br, Wait: 3 * cfg.Cluster.EtcdTimeout.Duration}
		log.Info("cluster member", "cluster", cfg.Cluster.Name, "member", cfg.Cluster.Member, "link", cfg.Cluster.LinkAddr(), "members", len(mem.node.Members()))
	}
	vc := vspcConfig(cfg, bridger, log)
	if pk != nil {
		vc.Parker = pk
	}
	if mem != nil {
		// Any member serves any VM connection: one whose port another
		// member holds is carried there over the member link (a PEER too).
		vc.HandOvers = &cluster.HandOvers{Node: mem.node, PeerTimeout: cfg.VMotion.PeerTimeout.Duration, WithoutEtcd: cfg.Cluster.VMotionWithoutEtcd, Forwarder: mem.fwd}
		vc.Forwarder = mem.fwd
		// A VM connection that drops on a network fault and does not come
		// back is reconnected through vCenter by its port's owner.
		vc.Drops = mem
	}
	srv := vspc.NewServer(vc)
	if mem != nil {
		mem.srv.Store(srv)
	}

	// The daemon binds the VM listeners ([vspc] listen, tls_listen), the
	// admin endpoint and runs the alert matcher; it applies reloads
	// (SIGHUP, POST /api/v1/reload) to all of them (daemon.go,
	// reload.go).
	d := newDaemon(cfg, log, br, srv, opts)
	if pk != nil {
		d.parked = pk.Parked
		// A storm's memory goes back to the OS once its connections
		// have parked (release.go).
		rctx, rstop := context.WithCancel(ctx)
		var rwg sync.WaitGroup
		rwg.Go(func() { releaseAfterStorms(rctx, pk.Parked, log) })
		defer func() { rstop(); rwg.Wait() }()
	}
	if mem != nil {
		d.cluster = mem.status
		d.owners = mem.owners
	}
	// Remote access (direction-server VMs without a device route): the
	// hub's per-VM listeners and front doors; off unless [remote] enabled.
	var hopts []remote.Option
	if mem != nil {
		// Console ports from port_range are assigned in etcd: a VM keeps
		// its port whichever member serves it.
		hopts = append(hopts, remote.WithPortAssigner(cluster.ListenerAssigner{Node: mem.node}))
		// The front doors list and reach every member's consoles; this
		// member serves its own to users of the others' front doors.
		hopts = append(hopts, remote.WithCluster(consoles{mem}))
	}
	hub, err := remote.New(cfg, log, hopts...)
	if err != nil {
		return err
	}
	if cfg.Remote.Enabled {
		br.SetConsoles(hub)
		if mem != nil {
			mem.hub.Store(hub)
		}
	}
	d.consoles = hub.Consoles
	d.setUsers = hub.SetUsers
	if cfg.Remote.Enabled {
		d.remote = func() *admin.RemoteCounters {
			k := hub.Counters()
			return &admin.RemoteCounters{Logins: k.Logins, LoginFailures: k.LoginFailures, LoginsRefused: k.LoginsRefused,
				ClientsDropped: k.ClientsDropped, Sessions: k.Sessions, Consoles: len(hub.Consoles())}
		}
	}
	// Front doors first: a port in use stops the start, before any VM
	// is accepted.
	if err := hub.Bind(); err != nil {
		hub.Close()
		return fmt.Errorf("remote access: %w", err)
	}
	// The web console ([web] listen): a browser door of remote access.
	wc, err := startWeb(cfg, log, hub, br, srv)
	if err != nil {
		hub.Close()
		return fmt.Errorf("web console: %w", err)
	}
	if wc != nil {
		d.web = wc
	}
	if err := d.start(); err != nil {
		wc.stop(log)
		hub.Close()
		return err
	}
	// The hub serves in a group that every path out of serve waits for
	// (g.Wait below). A front door that fails while serving stops the
	// bridge: its error cancels rctx, which ends d.run.
	hctx, hcancel := context.WithCancel(context.Background())
	g, rctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := hub.Serve(hctx)
		if err == nil || hctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, remote.ErrClosed) {
			return nil
		}
		log.Error("remote access front door failed; stopping", "err", err)
		return fmt.Errorf("remote access: %w", err)
	})
	if lo, _ := cfg.Remote.PortRangeBounds(); mem != nil && cfg.Remote.Enabled && lo != 0 {
		// A console port another member reclaimed (the range full) from a
		// serial port this member still serves: its listener here closes.
		g.Go(func() error {
			cluster.ListenerAssigner{Node: mem.node}.WatchRevoked(hctx, func(port int, still func(vspc.PortKey) bool) { hub.DropListener(port, still) })
			return nil
		})
	}
	st := d.status()
	var vmAddr string
	for _, l := range st.Listeners {
		switch l.Kind {
		case kindWeb:
			continue // logged by startWeb
		case kindAdmin:
			log.Info("admin endpoint", "url", l.URI, "token", d.cfg.Admin.Token != "" || d.cfg.Admin.TokenFile != "")
		case kindVSPCTLS:
			log.Info("listening for ESXi VMs over TLS", "addr", l.Addr, "proxy_uri", l.URI, "max_sessions", cfg.VSPC.MaxSessions, "open_file_limit", limit)
		default:
			log.Info("listening for ESXi VMs", "addr", l.Addr, "max_sessions", cfg.VSPC.MaxSessions, "open_file_limit", limit)
		}
		if vmAddr == "" && l.Kind != kindAdmin {
			vmAddr = l.Addr
		}
	}
	printHints(stdout, cfg, vmAddr)
	if wc != nil {
		fmt.Fprintf(stdout, "The web console is at %s (log in as a [[user]]).\n", wc.url)
	}

	serveErr := d.run(rctx)
	log.Info("shutting down: no new connections; flushing data in flight")
	if mem != nil {
		mem.node.Leaving(attachedPorts(srv.Ports()))
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	hcancel()
	wc.stop(log)
	hub.Close()
	if err := g.Wait(); err != nil {
		serveErr = err
	}
	br.Close()
	d.shutdown()
	log.Info("stopped")
	return serveErr
}

// raiseFileLimit lifts RLIMIT_NOFILE to its hard limit: each VM port needs
// one descriptor, two with a remote.
func raiseFileLimit(log *slog.Logger) uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if rl.Cur < rl.Max {
		old := rl.Cur
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			log.Warn("cannot raise the open-file limit", "soft", old, "hard", rl.Max, "err", err)
			rl.Cur = old
		}
	}
	log.Info("open-file limit", "limit", rl.Cur, "vm_ports_idle", rl.Cur-32, "vm_ports_with_remote", (rl.Cur-32)/2)
	return uint64(rl.Cur) // int64 on the BSDs
}

func printHints(w io.Writer, cfg *configs.Config, addr string) {
	proxy := cfg.ProxyURI()
	if strings.HasSuffix(proxy, ":0") {
		proxy = "telnet://" + addr
	}
	fmt.Fprintf(w, `vspc-bridge is listening for ESXi VMs on %s

Point a VM's serial port at it (govc; the VM's host must have the "vSPC" firewall ruleset on):
  govc device.serial.add -vm VM
  govc device.serial.connect -vm VM -vspc-proxy %s -client tcp://REMOTE:PORT
Try it without ESXi, from another terminal:
  nc -l 127.0.0.1 7000        # a remote system (or: socat - TCP-LISTEN:7000,bind=127.0.0.1)
  %s simulate-vm -proxy telnet://%s -service tcp://127.0.0.1:7000 -direction client
Press Ctrl-C to stop.
`, addr, proxy, progName(), addr)
}

// progName is how this program was invoked (for hints the user can paste).
func progName() string {
	if len(os.Args) > 0 && os.Args[0] != "" && !strings.HasSuffix(os.Args[0], ".test") {
		return os.Args[0]
	}
	return "vspc-bridge"
}
