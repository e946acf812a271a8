package harness

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestProcessOutputAndLines(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	p, err := StartProcess(exec.Command("sh", "-c", `printf 'one\ntw'; sleep 0.05; printf 'o\nthree' >&2`), func(l string) {
		mu.Lock()
		lines = append(lines, l)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Exited()
	if p.Err() != nil {
		t.Errorf("Err = %v", p.Err())
	}
	if got := p.Output(); got != "one\ntwo\nthree" {
		t.Errorf("Output = %q", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(lines, []string{"one", "two"}) {
		t.Errorf("lines = %q, want the two complete ones", lines)
	}
}

func TestProcessStopKillRSS(t *testing.T) {
	p, err := StartProcess(exec.Command("sleep", "30"), nil)
	if err != nil {
		t.Fatal(err)
	}
	rss, err := p.RSS()
	if err != nil || rss <= 0 {
		t.Errorf("RSS = %d, %v", rss, err)
	}
	if peak, err := p.PeakRSS(); err != nil || peak < rss {
		t.Errorf("PeakRSS = %d, %v; RSS %d", peak, err, rss)
	}
	start := time.Now()
	// sleep dies of the SIGTERM: Stop reports how it ended.
	if err := p.Stop(5 * time.Second); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Errorf("Stop = %v, want the SIGTERM exit", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Stop took %v", d)
	}
	p.Kill() // after the end: a no-op
	if _, err := p.RSS(); err == nil {
		t.Error("RSS of an ended process")
	}
}

func TestProcessStopKillsAfterTimeout(t *testing.T) {
	p, err := StartProcess(exec.Command("sh", "-c", `trap '' TERM; echo ready; exec sleep 30`), nil)
	if err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(p.Output(), "ready") {
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Stop(100 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "did not stop") {
		t.Errorf("Stop = %v, want a timeout", err)
	}
	select {
	case <-p.Exited():
	default:
		t.Error("still running after Stop")
	}
}

func TestWaitListening(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := WaitListening(ln.Addr().String(), time.Second, nil); err != nil {
		t.Errorf("listening: %v", err)
	}

	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	exited := make(chan struct{})
	close(exited)
	if err := WaitListening(addr, 10*time.Second, exited); !errors.Is(err, errExited) {
		t.Errorf("exited: %v", err)
	}
	if err := WaitListening(addr, 50*time.Millisecond, nil); err == nil {
		t.Error("nothing listening, no error")
	}
}

func TestRun(t *testing.T) {
	r := Run(context.Background(), 10*time.Second, "sh", "-c", "echo out; echo err >&2; exit 3")
	if r.Code != 3 || r.Err != nil || !strings.Contains(r.Out, "out\n") || !strings.Contains(r.Out, "err\n") {
		t.Errorf("exit 3: %v", r)
	}
	if r := Run(context.Background(), 10*time.Second, "true"); r.Code != 0 || r.Err != nil || r.MaxRSS <= 0 {
		t.Errorf("true: %v (max RSS %d)", r, r.MaxRSS)
	}
	if r := Run(context.Background(), 50*time.Millisecond, "sleep", "10"); r.Code != -1 || r.Err == nil || r.Elapsed > 5*time.Second {
		t.Errorf("timeout: %v", r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if r := Run(ctx, 10*time.Second, "sleep", "10"); r.Code != -1 || !errors.Is(r.Err, context.Canceled) {
		t.Errorf("cancelled: %v", r)
	}
	if r := Run(context.Background(), time.Second, "/nonexistent/tool"); r.Code != -1 || r.Err == nil {
		t.Errorf("missing tool: %v", r)
	}
}
