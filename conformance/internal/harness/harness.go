// Package harness builds and runs the real dicomgw binary for the
// interoperability tests and the benchmark: each test starts its own
// gateway on a free loopback port with its own spool, and stops it.
package harness

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// RepoRoot is the repository's top directory, found from this file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// CorpusDir is the shared DICOM corpus (../shared/dicom-corpus from the
// repository), or $DICOMGW_CORPUS.
func CorpusDir() string {
	if d := os.Getenv("DICOMGW_CORPUS"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(), "..", "shared", "dicom-corpus")
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary builds bin/dicomgw once per process (into a temporary directory,
// so that tests never race with `make build`) and returns its path.
func Binary() (string, error) {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dicomgw-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "dicomgw")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/dicomgw")
		cmd.Dir = RepoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	return buildPath, buildErr
}

// RemoveBinary deletes what Binary built; call it once the process is done
// with gateways (from TestMain), or every run leaves a binary in $TMPDIR.
func RemoveBinary() {
	if buildPath != "" {
		os.RemoveAll(filepath.Dir(buildPath))
	}
}

// Gateway is a running dicomgw.
type Gateway struct {
	Addr     string // host:port it listens on
	SpoolDir string
	Cmd      *exec.Cmd

	mu     sync.Mutex
	logs   bytes.Buffer
	exited chan struct{}
	err    error
}

// Start runs `dicomgw serve` with args plus --listen 127.0.0.1:0 (unless
// args set --listen), --spool-dir spoolDir and JSON logs, and waits until it
// listens. spoolDir is created if missing.
func Start(spoolDir string, args ...string) (*Gateway, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	full := []string{"serve", "--spool-dir", spoolDir, "--log-format", "json"}
	if !hasFlag(args, "--listen") {
		full = append(full, "--listen", "127.0.0.1:0")
	}
	full = append(full, args...)
	g := &Gateway{SpoolDir: spoolDir, exited: make(chan struct{})}
	g.Cmd = exec.Command(bin, full...)
	stderr, err := g.Cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	g.Cmd.Stdout = io.Discard
	if err := g.Cmd.Start(); err != nil {
		return nil, err
	}
	addr := make(chan string, 1)
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		// Whatever happens to the scanner, keep draining so that the
		// gateway never blocks on a full stderr pipe.
		defer io.Copy(io.Discard, stderr)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			g.mu.Lock()
			g.logs.WriteString(line)
			g.logs.WriteByte('\n')
			g.mu.Unlock()
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "dicomgw listening" {
				select {
				case addr <- rec.Addr:
				default:
				}
			}
		}
	}()
	go func() {
		// Wait closes the stderr pipe: read it to EOF first (os/exec:
		// "it is incorrect to call Wait before all reads from the pipe
		// have completed"), so that the last log lines are kept.
		<-logDone
		g.err = g.Cmd.Wait()
		close(g.exited)
	}()
	select {
	case g.Addr = <-addr:
		return g, nil
	case <-g.exited:
		return nil, fmt.Errorf("dicomgw exited before listening (%v):\n%s", g.err, g.Logs())
	case <-time.After(20 * time.Second):
		g.Kill()
		return nil, fmt.Errorf("dicomgw did not listen within 20s:\n%s", g.Logs())
	}
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// Host and Port split Addr, for tools that take them separately.
func (g *Gateway) Host() string { h, _, _ := net.SplitHostPort(g.Addr); return h }

// Port is the listening port as a string.
func (g *Gateway) Port() string { _, p, _ := net.SplitHostPort(g.Addr); return p }

// Logs returns everything the gateway logged so far (JSON lines).
func (g *Gateway) Logs() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.logs.String()
}

// Stop sends SIGTERM and waits up to timeout for a clean exit.
func (g *Gateway) Stop(timeout time.Duration) error {
	if err := g.Cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-g.exited:
		return g.err
	case <-time.After(timeout):
		g.Kill()
		return fmt.Errorf("dicomgw did not stop within %v", timeout)
	}
}

// Kill sends SIGKILL and waits for the process to go.
func (g *Gateway) Kill() {
	_ = g.Cmd.Process.Kill()
	<-g.exited
}

// Exited is closed when the process has ended.
func (g *Gateway) Exited() <-chan struct{} { return g.exited }

// PID is the gateway's process ID.
func (g *Gateway) PID() int { return g.Cmd.Process.Pid }

// FreePort returns a loopback TCP port that was free a moment ago, for
// peers (such as dcmtk's storescp) that cannot report the port they bound.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// WaitListening waits until something accepts TCP connections on addr.
func WaitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after %v: %w", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LogRecords returns the gateway's JSON log records whose msg equals msg,
// decoded (numbers as float64, as encoding/json does).
func (g *Gateway) LogRecords(msg string) []map[string]any {
	var out []map[string]any
	for _, l := range g.LogLines(msg) {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// WaitLog polls the log until a record with msg (and, if match is not nil,
// for which match is true) appears, and returns it.
func (g *Gateway) WaitLog(msg string, timeout time.Duration, match func(map[string]any) bool) (map[string]any, error) {
	deadline := time.Now().Add(timeout)
	for {
		for _, rec := range g.LogRecords(msg) {
			if match == nil || match(rec) {
				return rec, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no %q log record within %v; log:\n%s", msg, timeout, g.Logs())
		}
		select {
		case <-g.exited:
			// Every line is in: the log was read to EOF before exit.
			for _, rec := range g.LogRecords(msg) {
				if match == nil || match(rec) {
					return rec, nil
				}
			}
			return nil, fmt.Errorf("dicomgw exited while waiting for %q; log:\n%s", msg, g.Logs())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
