package ledger

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestMain lets a test re-execute the test binary as a child process that
// writes to a ledger (see children), to test what another process sees.
func TestMain(m *testing.M) {
	if mode := os.Getenv("LEDGER_TEST_CHILD"); mode != "" {
		child, ok := children[mode]
		if !ok {
			fmt.Fprintln(os.Stderr, "unknown child mode", mode)
			os.Exit(2)
		}
		if err := child(os.Getenv("LEDGER_TEST_PATH"), os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// children are the child process's jobs, by LEDGER_TEST_CHILD.
var children = map[string]func(path string, out io.Writer) error{}

// startChild runs the test binary as a child in mode on the ledger at
// path; its stdout comes back line by line.
func startChild(t *testing.T, mode, path string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LEDGER_TEST_CHILD="+mode, "LEDGER_TEST_PATH="+path)
	cmd.Stderr = &prefixWriter{t: t, prefix: "child: "}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, bufio.NewScanner(out)
}

type prefixWriter struct {
	t      *testing.T
	prefix string
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s%s", w.prefix, strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(&prefixWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// openTest opens a ledger in a fresh directory with its own registry.
func openTest(t *testing.T, cfg Config) (*Ledger, *prometheus.Registry) {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "ledger.db")
	}
	reg := prometheus.NewPedanticRegistry()
	l, err := Open(cfg, testLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, reg
}

// metric returns the value of the metric name (with the label pairs
// given): a counter's or gauge's value, a histogram's sample count.
func metric(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	t.Fatalf("no metric %s %v", name, labels)
	return 0
}

func histogramSum(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name && lp.GetValue() == value {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds, failing after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

var base = time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)

// obj is a test object: the i-th of a study, received i seconds after base.
func obj(i int, study string, dests ...string) Object {
	return Object{
		ID:                fmt.Sprintf("%020d", base.Add(time.Duration(i)*time.Second).UnixNano()),
		SOPInstanceUID:    fmt.Sprintf("1.2.826.0.1.3680043.10.1.%d", i),
		SOPClassUID:       "1.2.840.10008.5.1.4.1.1.2",
		StudyInstanceUID:  study,
		SeriesInstanceUID: study + ".1",
		TransferSyntaxUID: "1.2.840.10008.1.2.1",
		CallingAE:         "MODALITY",
		CalledAE:          "DICOMGW",
		Peer:              "127.0.0.1:40000",
		Received:          base.Add(time.Duration(i) * time.Second),
		Size:              int64(1000 + i),
		Destinations:      dests,
	}
}
