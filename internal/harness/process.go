package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a long-running child (a gateway, a storescp) whose stdout and
// stderr are captured together. Whoever starts one pairs it with a Stop or
// Kill (a defer, a t.Cleanup); Pdeathsig covers the case where this
// process itself is killed, so that no child outlives it.
type Process struct {
	cmd    *exec.Cmd
	out    *output
	exited chan struct{}
	err    error // from Wait, valid once exited is closed
}

// StartProcess starts cmd with its output captured, and calls onLine (when
// not nil) with each complete line of it, in order, from one goroutine.
// cmd's Stdout, Stderr and SysProcAttr must be unset.
func StartProcess(cmd *exec.Cmd, onLine func(line string)) (*Process, error) {
	p := &Process{cmd: cmd, out: &output{onLine: onLine}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = childAttrs()
	// Wait returns once the output is read to the end, unless something
	// the child started keeps the pipe open: do not hang on that.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// PID is the child's process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Output is everything the child wrote so far. Once Exited is closed it is
// complete: Wait returns only after the output has been read to EOF.
func (p *Process) Output() string { return p.out.String() }

// Exited is closed when the child has ended.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is how the child ended (exec.Cmd.Wait's error); valid once Exited is
// closed.
func (p *Process) Err() error { return p.err }

// Stop sends SIGTERM and waits up to timeout for the child to end, then
// kills it. It returns how the child ended, or an error if it had to be
// killed.
func (p *Process) Stop(timeout time.Duration) error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.exited:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not stop within %v", filepath.Base(p.cmd.Path), timeout)
	}
}

// Signal sends sig to the child (SIGSTOP and SIGCONT freeze and thaw a
// peer, for instance).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill sends SIGKILL and waits for the child to go. It may be called more
// than once, and after the child has ended.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// RSS is the child's resident set size now (VmRSS), in bytes.
func (p *Process) RSS() (int64, error) { return procStatusBytes(p.PID(), "VmRSS") }

// PeakRSS is the largest resident set the child has had since it started
// (VmHWM), in bytes.
func (p *Process) PeakRSS() (int64, error) { return procStatusBytes(p.PID(), "VmHWM") }

// CPUTime is the processor time (user and system) the child has used so
// far, from /proc/<pid>/stat (proc(5): utime and stime, fields 14 and 15,
// in clock ticks of 1/100 s on Linux).
func (p *Process) CPUTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID()))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count from its ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", p.PID())
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", p.PID(), len(f))
	}
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", p.PID(), f[11], f[12])
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// procStatusBytes reads a "kB" field of /proc/<pid>/status (proc(5)).
func procStatusBytes(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// output collects a child's output and hands complete lines to onLine.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	partial []byte // the last line, until its newline comes
	onLine  func(string)
}

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(b)
	if o.onLine == nil {
		return len(b), nil
	}
	o.partial = append(o.partial, b...)
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		o.onLine(string(o.partial[:i]))
		o.partial = o.partial[i+1:]
	}
	// Keep the unfinished line only, not everything it was sliced from.
	o.partial = append([]byte(nil), o.partial...)
	return len(b), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// Tail is the last n bytes of s, marked as cut when it is: for putting a
// child's output into an error message.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
