package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Result is how a Run ended.
type Result struct {
	Cmd     string // tool name and arguments, for messages
	Code    int    // exit code; -1 when it did not run or was killed
	Out     string // stdout and stderr together
	Elapsed time.Duration
	MaxRSS  int64         // the tool's peak resident set in bytes (rusage), 0 if unknown
	CPU     time.Duration // the tool's user and system time
	Err     error         // set when the tool could not be run, ran out of time or was interrupted
}

func (r Result) String() string {
	s := fmt.Sprintf("%s: exit %d after %v", r.Cmd, r.Code, r.Elapsed.Round(time.Millisecond))
	if r.Err != nil {
		s += fmt.Sprintf(" (%v)", r.Err)
	}
	if out := strings.TrimSpace(r.Out); out != "" {
		s += "\n" + Tail(out, 4000)
	}
	return s
}

// Run runs the tool at path (a name is looked up in $PATH) with args to its
// end, timed from start to exit, and kills it after timeout or when ctx is
// done: a hung tool cannot stall a test run or the benchmark. An interrupted
// run's Err wraps ctx's error.
func Run(ctx context.Context, timeout time.Duration, path string, args ...string) Result {
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(tctx, path, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = childAttrs()
	cmd.WaitDelay = 2 * time.Second
	r := Result{Cmd: filepath.Base(path) + " " + strings.Join(args, " ")}
	start := time.Now()
	err := cmd.Run()
	r.Elapsed, r.Out = time.Since(start), out.String()
	if cmd.ProcessState != nil {
		r.MaxRSS = maxRSS(cmd.ProcessState)
		r.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		r.Code, r.Err = -1, fmt.Errorf("interrupted: %w", ctx.Err())
	case tctx.Err() != nil:
		r.Code, r.Err = -1, fmt.Errorf("killed: still running after %v", timeout)
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	default:
		r.Code, r.Err = -1, err
	}
	return r
}
