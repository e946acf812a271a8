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
	Addr        string // host:port it listens on in plaintext ("" when --listen "")
	TLSAddr     string // host:port of its DICOM TLS port ("" when off)
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
// "dicomgw listening" log record to learn the addresses (addr, and tls_addr
// when --tls-listen is set; either may be ""). spoolDir is created
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
	type listening struct{ addr, tlsAddr string }
	addr := make(chan listening, 1)
	metrics := make(chan string, 1)
	p, err := StartProcess(exec.Command(bin, full...), func(line string) {
		var rec struct {
			Msg, Addr string
			TLSAddr   string `json:"tls_addr"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil {
			return
		}
		switch rec.Msg {
		case "dicomgw listening":
			select {
			case addr <- listening{rec.Addr, rec.TLSAddr}:
			default:
			}
		case "metrics and health listening":
			select {
			case metrics <- rec.Addr:
			default:
			}
		}
	})
	if err != nil {
		return nil, err
	}
	g := &Gateway{Process: p, SpoolDir: spoolDir}
	select {
	case l := <-addr:
		g.Addr, g.TLSAddr = l.addr, l.tlsAddr
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

// TLSPort is the port of its DICOM TLS port, as a string ("" when off).
func (g *Gateway) TLSPort() string { _, p, _ := net.SplitHostPort(g.TLSAddr); return p }
