package harness

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Gateway is a running `dicomgw serve`.
type Gateway struct {
	*Process
	Addr        string // host:port it listens on
	MetricsAddr string // host:port of /metrics, /healthz, /readyz ("" when off)
	SpoolDir    string
}

// Start runs `dicomgw serve` from the binary Binary builds; see StartBinary.
func Start(spoolDir string, args ...string) (*Gateway, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	return StartBinary(bin, spoolDir, args...)
}

// StartBinary runs `bin serve` with --spool-dir spoolDir, JSON logs,
// --listen 127.0.0.1:0 unless args set --listen, --metrics-listen
// 127.0.0.1:0 unless args set --metrics-listen (its default, a fixed port,
// would make parallel gateways collide), then args, and waits for its
// "dicomgw listening" log record to learn the address. spoolDir is created
// if missing. The caller stops it (Stop, Kill).
func StartBinary(bin, spoolDir string, args ...string) (*Gateway, error) {
	full := []string{"serve", "--spool-dir", spoolDir, "--log-format", "json"}
	if !hasFlag(args, "--listen") {
		full = append(full, "--listen", "127.0.0.1:0")
	}
	if !hasFlag(args, "--metrics-listen") {
		full = append(full, "--metrics-listen", "127.0.0.1:0")
	}
	if !hasFlag(args, "--archive-dir") && !hasFlag(args, "--stow-url") {
		// Not the default ./var/archive: that would be relative to wherever
		// the test runs. A sibling of the spool goes away with it.
		full = append(full, "--archive-dir", filepath.Join(filepath.Dir(spoolDir), filepath.Base(spoolDir)+"-archive"))
	}
	full = append(full, args...)
	addr := make(chan string, 1)
	metrics := make(chan string, 1)
	p, err := StartProcess(exec.Command(bin, full...), func(line string) {
		var rec struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &rec) != nil {
			return
		}
		var ch chan string
		switch rec.Msg {
		case "dicomgw listening":
			ch = addr
		case "metrics and health listening":
			ch = metrics
		default:
			return
		}
		select {
		case ch <- rec.Addr:
		default:
		}
	})
	if err != nil {
		return nil, err
	}
	g := &Gateway{Process: p, SpoolDir: spoolDir}
	select {
	case g.Addr = <-addr:
		// The metrics record, if any, was logged before this one.
		select {
		case g.MetricsAddr = <-metrics:
		default:
		}
		return g, nil
	case <-g.Exited():
		return nil, fmt.Errorf("dicomgw exited before listening (%v):\n%s", g.Err(), Tail(g.Logs(), 8000))
	case <-time.After(20 * time.Second):
		g.Kill()
		return nil, fmt.Errorf("dicomgw did not listen within 20s:\n%s", Tail(g.Logs(), 8000))
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

// Host is the address it listens on, for tools that take host and port
// separately.
func (g *Gateway) Host() string { h, _, _ := net.SplitHostPort(g.Addr); return h }

// Port is the port it listens on, as a string.
func (g *Gateway) Port() string { _, p, _ := net.SplitHostPort(g.Addr); return p }
