package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/vspc-bridge/vspc-bridge/cmd/vspc-bridge/internal/vc"
	"github.com/vspc-bridge/vspc-bridge/configs"
)

func cmdCheckConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	audit := fs.Bool("audit", false, "also run \"vc audit\" against vCenter with this config (connection from GOVC_URL, GOVC_USERNAME, GOVC_PASSWORD, GOVC_INSECURE)")
	file := fs.String("config", "", "the file to check, as serve takes it (the same as giving FILE)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vspc-bridge check-config [-audit] FILE\n       vspc-bridge check-config [-audit] -config FILE\n\nReports every problem in FILE at once, with line numbers; exit status 1 if there is any.\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	path := *file
	switch {
	case path == "" && fs.NArg() == 1:
		path = fs.Arg(0)
	case path != "" && fs.NArg() == 0:
	default:
		fs.Usage()
		return errUsage
	}
	cfg, err := configs.Load(path)
	if err != nil {
		fmt.Fprintln(stdout, err)
		return fmt.Errorf("%s is not valid", path)
	}
	fmt.Fprintf(stdout, "%s: OK (listen %s, %d routes, connect_allow %v)\n", path, cfg.VSPC.Listen, len(cfg.Routes), cfg.Policy.ConnectAllow)
	if *audit {
		if code := vc.Run(ctx, []string{"audit", "-config", path}, stdout, stderr); code != 0 {
			return fmt.Errorf("vc audit found problems (exit status %d)", code)
		}
	}
	return nil
}
