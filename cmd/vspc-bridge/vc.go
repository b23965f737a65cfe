package main

import (
	"context"
	"io"

	"github.com/vspc-bridge/vspc-bridge/cmd/vspc-bridge/internal/vc"
)

func cmdVC(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return vc.Run(ctx, args, stdout, stderr)
}
