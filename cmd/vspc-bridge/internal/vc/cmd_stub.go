package vc

import (
	"context"
	"fmt"
)

func runProvision(ctx context.Context, args []string, e env) int {
	fmt.Fprintln(e.stderr, "vc: provision: not implemented yet")
	return ExitUsage
}

func runPreflight(ctx context.Context, args []string, e env) int {
	fmt.Fprintln(e.stderr, "vc: preflight: not implemented yet")
	return ExitUsage
}
