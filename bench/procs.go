package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// This file starts and stops the three programs the benchmark drives. Each
// start is paired by its caller with a deferred stop, so that errors,
// timeouts and Ctrl-C (which cancels ctx) all end every child. Pdeathsig
// covers the case where the benchmark itself is killed.
//
// Why not conformance/internal/harness: Go allows importing an internal
// package only from below its parent (conformance/), and bench/ is not.

func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// repoRoot is the module's top directory, found from this source file
// (go run keeps absolute source paths), so the benchmark works from any
// working directory.
func repoRoot() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("cannot find the repository from %s: %w", file, err)
	}
	return root, nil
}

// buildGateway builds cmd/dicomgw into dir, so the binary measured is the
// one in this checkout and is removed with the work directory.
func buildGateway(ctx context.Context, dir string) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "dicomgw")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/dicomgw")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/dicomgw: %v\n%s", err, out)
	}
	return bin, nil
}

// gateway is a running `dicomgw serve`.
type gateway struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}
	err    error // from Wait, valid once exited is closed

	mu   sync.Mutex
	logs bytes.Buffer
}

// startGateway runs dicomgw on a free loopback port with spoolDir and JSON
// logs, and waits for its "dicomgw listening" line to learn the port.
func startGateway(bin, spoolDir string) (*gateway, error) {
	g := &gateway{exited: make(chan struct{})}
	g.cmd = exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--spool-dir", spoolDir, "--log-format", "json")
	g.cmd.SysProcAttr = childAttrs()
	stderr, err := g.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := g.cmd.Start(); err != nil {
		return nil, err
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			g.mu.Lock()
			g.logs.Write(sc.Bytes())
			g.logs.WriteByte('\n')
			g.mu.Unlock()
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "dicomgw listening" {
				select {
				case addr <- rec.Addr:
				default:
				}
			}
		}
	}()
	go func() {
		g.err = g.cmd.Wait()
		close(g.exited)
	}()
	select {
	case g.addr = <-addr:
		return g, nil
	case <-g.exited:
		return nil, fmt.Errorf("dicomgw exited before listening (%v):\n%s", g.err, g.tail())
	case <-time.After(20 * time.Second):
		g.kill()
		return nil, fmt.Errorf("dicomgw did not listen within 20s:\n%s", g.tail())
	}
}

// tail is the end of the gateway's log, for error messages.
func (g *gateway) tail() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.logs.Bytes()
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

// stop asks for a clean shutdown (SIGTERM) and kills after a grace period.
func (g *gateway) stop() error {
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
		return g.err
	case <-time.After(30 * time.Second):
		g.kill()
		return errors.New("dicomgw did not stop within 30s")
	}
}

func (g *gateway) kill() {
	_ = g.cmd.Process.Kill()
	<-g.exited
}

// peakRSS is VmHWM from /proc/<pid>/status: the largest resident set the
// process has had since it started.
func (g *gateway) peakRSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", g.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// storescp is a running dcmtk storescp, the baseline.
type storescp struct {
	cmd    *exec.Cmd
	addr   string
	out    bytes.Buffer
	exited chan struct{}
}

// startStorescp runs storescp with its defaults (it accepts the
// uncompressed transfer syntaxes and does not fsync), writing into outDir.
// It cannot report the port it bound, so it gets a port that was free a
// moment ago; -dhl spares it a reverse DNS lookup per association.
func startStorescp(outDir string) (*storescp, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &storescp{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), exited: make(chan struct{})}
	s.cmd = exec.Command("storescp", "-dhl", "-od", outDir, strconv.Itoa(port))
	s.cmd.SysProcAttr = childAttrs()
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	if err := waitListening(s.addr, s.exited, 10*time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("storescp: %w\n%s", err, s.out.String())
	}
	return s, nil
}

// stop kills storescp: it keeps no state worth a clean shutdown.
func (s *storescp) stop() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitListening polls addr until it accepts a connection, the process
// exits, or the timeout passes.
func waitListening(addr string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before listening")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after %v", addr, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// storescuArgs are the options used against both receivers, so the
// comparison differs only in the receiver. Several files on one command
// line go over one association (storescu's default).
var storescuArgs = []string{"-aet", "BENCH", "-aec", "DICOMGW"}

// sendResult is one storescu run.
type sendResult struct {
	Elapsed time.Duration
	MaxRSS  int64 // bytes, from the kernel's rusage of the child
}

// storescu sends files to addr and times it from start to exit. A run
// longer than timeout is killed, so a hang cannot stall CI.
func storescu(ctx context.Context, timeout time.Duration, addr string, files []string) (sendResult, error) {
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := append(append([]string{}, storescuArgs...), host, port)
	cmd := exec.CommandContext(ctx, "storescu", append(args, files...)...)
	cmd.SysProcAttr = childAttrs()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	res := sendResult{Elapsed: time.Since(start)}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			res.MaxRSS = ru.Maxrss << 10 // Linux reports KiB
		}
	}
	switch ctx.Err() {
	case context.DeadlineExceeded:
		return res, fmt.Errorf("storescu killed after %v", timeout)
	case context.Canceled:
		return res, errors.New("interrupted")
	}
	if err != nil {
		tail := out.String()
		if len(tail) > 4096 {
			tail = tail[len(tail)-4096:]
		}
		return res, fmt.Errorf("storescu: %v\n%s", err, tail)
	}
	return res, nil
}
