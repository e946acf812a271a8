package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// The benchmark drives three programs: dicomgw and storescp (started with
// the harness; each start is paired by its caller with a deferred stop, so
// that errors, timeouts and Ctrl-C all end every child) and storescu, the
// sender, run to completion here.

// storescuArgs are the options used against both receivers, so the
// comparison differs only in the receiver. Several files on one command
// line go over one association (storescu's default).
var storescuArgs = []string{"-aet", "BENCH", "-aec", "DICOMGW"}

// storescu sends files to addr and times it from start to exit. A run
// longer than timeout is killed, so a hang cannot stall CI; Ctrl-C
// (cancelling ctx) kills it too.
func storescu(ctx context.Context, timeout time.Duration, addr string, files []string) (harness.Result, error) {
	host, port, _ := net.SplitHostPort(addr)
	args := append(append(append([]string{}, storescuArgs...), host, port), files...)
	r := harness.Run(ctx, timeout, "storescu", args...)
	switch {
	case errors.Is(r.Err, context.Canceled):
		return r, errors.New("interrupted")
	case r.Err != nil:
		return r, fmt.Errorf("storescu: %w", r.Err)
	case r.Code != 0:
		// Not r.String(): it repeats a command line of hundreds of files.
		return r, fmt.Errorf("storescu: exit status %d\n%s", r.Code, harness.Tail(r.Out, 4096))
	}
	return r, nil
}
