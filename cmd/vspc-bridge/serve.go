package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/configs"
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
	log, err := newLogger(stderr, cfg.Log, *format, *level)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, log, stdout)
}

func newLogger(w io.Writer, lc configs.Log, format, level string) (*slog.Logger, error) {
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
	opts := &slog.HandlerOptions{Level: lv}
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
		Keepalive:         cfg.VSPC.Keepalive.Duration,
		VMotionDisabled:   !cfg.VMotion.Enabled,
		Buffer:            int(cfg.VMotion.Buffer),
		FlushTimeout:      cfg.VMotion.FlushTimeout.Duration,
		PeerTimeout:       cfg.VMotion.PeerTimeout.Duration,
		CompleteTimeout:   cfg.VMotion.CompleteTimeout.Duration,
		Bridger:           br,
		Logger:            log,
	}
	if vc.GracePeriod == 0 {
		vc.GracePeriod = -1 // "0 disables": close the port at once
	}
	if vc.Keepalive == 0 {
		vc.Keepalive = -1
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

func serve(ctx context.Context, cfg *configs.Config, log *slog.Logger, stdout io.Writer) error {
	limit := raiseFileLimit(log)
	br := bridge.New(cfg, log)
	srv := vspc.NewServer(vspcConfig(cfg, br, log))

	var listeners []net.Listener
	closeAll := func() {
		for _, ln := range listeners {
			ln.Close()
		}
	}
	if cfg.VSPC.Listen != "" {
		ln, err := net.Listen("tcp", cfg.VSPC.Listen)
		if err != nil {
			return fmt.Errorf("[vspc] listen %s: %w", cfg.VSPC.Listen, err)
		}
		listeners = append(listeners, ln)
	}
	if cfg.VSPC.TLSListen != "" {
		cert, err := tls.LoadX509KeyPair(cfg.VSPC.TLSCert, cfg.VSPC.TLSKey)
		if err != nil {
			closeAll()
			return fmt.Errorf("[vspc] tls_cert/tls_key: %w", err)
		}
		ln, err := tls.Listen("tcp", cfg.VSPC.TLSListen, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		if err != nil {
			closeAll()
			return fmt.Errorf("[vspc] tls_listen %s: %w", cfg.VSPC.TLSListen, err)
		}
		listeners = append(listeners, ln)
	}
	if len(listeners) == 0 {
		return errors.New("no listener configured ([vspc] listen or tls_listen)")
	}
	for _, ln := range listeners {
		log.Info("listening for ESXi VMs", "addr", ln.Addr().String(), "max_sessions", cfg.VSPC.MaxSessions, "open_file_limit", limit)
	}
	printHints(stdout, cfg, listeners[0].Addr().String())

	errc := make(chan error, len(listeners))
	for _, ln := range listeners {
		go func() { errc <- srv.Serve(ctx, ln) }()
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	log.Info("shutting down: no new connections; flushing data in flight")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	br.Close()
	log.Info("stopped")
	if serveErr != nil && !errors.Is(serveErr, context.Canceled) && !errors.Is(serveErr, vspc.ErrServerClosed) {
		return serveErr
	}
	return nil
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
	return rl.Cur
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
  nc -l 127.0.0.1 7000        # a remote system
  vspc-bridge simulate-vm -proxy telnet://%s -service tcp://127.0.0.1:7000 -direction client
Press Ctrl-C to stop.
`, addr, proxy, addr)
}
