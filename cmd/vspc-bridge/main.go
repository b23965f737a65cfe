// Command vspc-bridge is a virtual serial port concentrator for VMware
// ESXi: VMs connect to it through their serial port's proxy URI and it
// joins them to remote systems and serial devices, across vMotion.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `vspc-bridge: a virtual serial port concentrator for VMware ESXi

Usage:
  vspc-bridge serve [-config FILE] [-log-format text|json] [-log-level LEVEL]
  vspc-bridge check-config [-audit] FILE | -config FILE
  vspc-bridge status [-json] [-addr ADDR] [-config FILE]   (the running bridge, over its admin API)
  vspc-bridge sessions [-json] [-addr ADDR] [-config FILE] VM
  vspc-bridge reload [-addr ADDR] [-config FILE]           (re-read the config file; SIGHUP does too)
  vspc-bridge gen-cert [-host NAME,IP] [-port 13371]       (self-signed telnets certificate for labs)
  vspc-bridge hash-password [-cost N]                      (bcrypt hash for a [[user]] password)
  vspc-bridge probe [-settings "115200 8N1"] [-send TEXT] [-wait 2s] [-json] URI   (open a device and report what it says)
  vspc-bridge simulate-vm -proxy telnet://HOST:PORT -service URI -direction client|server [-name N -uuid U]
  vspc-bridge vc audit|provision|preflight ...   (vCenter helpers; vspc-bridge vc -h)
  vspc-bridge etcd -name NAME -data-dir DIR [-listen-client URL] [-listen-peer URL] [-initial-cluster N=URL,...]
  vspc-bridge cluster init -cluster NAME -members ID,ID,... [-hosts NAME,IP,...] [-dir DIR]
  vspc-bridge version

Run "vspc-bridge COMMAND -h" for a command's flags.
`

// run is main without the process: testable.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "serve":
		err = cmdServe(ctx, rest, stdout, stderr)
	case "check-config":
		err = cmdCheckConfig(ctx, rest, stdout, stderr)
	case "probe":
		err = cmdProbe(ctx, rest, stdout, stderr)
	case "simulate-vm":
		err = cmdSimulateVM(ctx, rest, stdin, stdout, stderr)
	case "status":
		err = cmdStatus(ctx, rest, stdout, stderr)
	case "sessions":
		err = cmdSessions(ctx, rest, stdout, stderr)
	case "reload":
		err = cmdReload(ctx, rest, stdout, stderr)
	case "gen-cert":
		err = cmdGenCert(rest, stdout, stderr)
	case "hash-password":
		err = cmdHashPassword(rest, stdin, stdout, stderr)
	case "vc":
		return cmdVC(ctx, rest, stdout, stderr)
	case "etcd":
		err = cmdEtcd(ctx, rest, stdout, stderr)
	case "cluster":
		err = cmdCluster(rest, stdout, stderr)
	case "version":
		switch {
		case len(rest) == 0:
			fmt.Fprintf(stdout, "vspc-bridge %s\n", version)
			return 0
		case len(rest) == 1 && (rest[0] == "-h" || rest[0] == "-help" || rest[0] == "--help"):
			fmt.Fprint(stderr, "usage: vspc-bridge version\n\nPrints the version. Takes no flags or arguments.\n")
			return 0
		default:
			fmt.Fprintf(stderr, "vspc-bridge version: takes no flags or arguments, got %q\n", rest)
			return 2
		}
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "vspc-bridge: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, errReported):
		return 1
	default:
		fmt.Fprintf(stderr, "vspc-bridge %s: %v\n", cmd, err)
		return 1
	}
}

// errUsage marks a usage error already reported by a flag set.
var errUsage = errors.New("usage")

// parseFlags parses args, mapping flag errors to errUsage.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}
