package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// timing is one receiver's runs over one set.
type timing struct {
	Runs        []float64 `json:"runs_s"`
	Median      float64   `json:"median_s"`
	ObjectsPerS float64   `json:"objects_per_s"`
	MBPerS      float64   `json:"mb_per_s"` // 10^6 bytes of files per second
}

func newTiming(runs []float64, set objectSet) timing {
	t := timing{Runs: runs, Median: median(runs)}
	t.ObjectsPerS = float64(len(set.Files)) / t.Median
	t.MBPerS = float64(set.Bytes) / 1e6 / t.Median
	return t
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// setResult compares both receivers on one set.
type setResult struct {
	Name          string  `json:"name"`
	Objects       int     `json:"objects"`
	Bytes         int64   `json:"bytes"`
	Dicomgw       timing  `json:"dicomgw"`
	Storescp      timing  `json:"storescp"`
	Speedup       float64 `json:"speedup"` // storescp median / dicomgw median
	TargetSpeedup float64 `json:"target_speedup"`
	Pass          bool    `json:"pass"`
}

// measureSet times runs of dicomgw and scpRuns of storescp, alternating
// so that slow drift of the machine touches both alike.
func measureSet(ctx context.Context, c *config, set objectSet, target float64) (setResult, error) {
	receivers := []struct {
		name string
		runs int
		time func(context.Context, *config, objectSet) (time.Duration, error)
		secs []float64
	}{
		{"dicomgw", c.runs, timeGateway, nil},
		{"storescp", c.scpRuns, timeStorescp, nil},
	}
	for i := 1; i <= max(c.runs, c.scpRuns); i++ {
		for k := range receivers {
			rc := &receivers[k]
			if i > rc.runs {
				continue
			}
			d, err := rc.time(ctx, c, set)
			if err != nil {
				return setResult{}, fmt.Errorf("%s set, %s run %d: %w", set.Name, rc.name, i, err)
			}
			rc.secs = append(rc.secs, d.Seconds())
			progress("%s: %-8s run %d/%d: %7.3f s", set.Name, rc.name, i, rc.runs, d.Seconds())
		}
	}
	r := setResult{
		Name: set.Name, Objects: len(set.Files), Bytes: set.Bytes,
		Dicomgw: newTiming(receivers[0].secs, set), Storescp: newTiming(receivers[1].secs, set), TargetSpeedup: target,
	}
	r.Speedup = r.Storescp.Median / r.Dicomgw.Median
	r.Pass = r.Speedup >= target
	return r, nil
}

// receivingGateway starts a fresh dicomgw on a fresh spool for the receive
// measurements. It forwards to the local archive (its default destination)
// in a directory of its own beside the spool: never into the default
// ./var/archive of whatever directory the bench runs in. stop stops it and
// removes both.
func receivingGateway(c *config) (*harness.Gateway, func(), error) {
	dir, err := os.MkdirTemp(c.work, "gateway-")
	if err != nil {
		return nil, nil, err
	}
	g, err := startGateway(c, filepath.Join(dir, "spool"), "--archive-dir", filepath.Join(dir, "archive"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return g, func() {
		g.Stop(30 * time.Second)
		os.RemoveAll(dir)
	}, nil
}

// startGateway starts the binary under test and waits until it has done
// its start-up work (its spool's pool of ready files made, which takes a
// second on some file systems), so that a timed run measures a running
// daemon, as a modality meets it, not one still starting.
func startGateway(c *config, spool string, args ...string) (*harness.Gateway, error) {
	return startGatewayBin(c.bin, spool, args...)
}

// startGatewayBin is startGateway with another binary (the baseline's).
func startGatewayBin(bin, spool string, args ...string) (*harness.Gateway, error) {
	g, err := harness.StartBinary(bin, spool, args...)
	if err != nil {
		return nil, err
	}
	if _, err := g.WaitLog("spool slots ready", 60*time.Second, nil); err != nil {
		g.Stop(30 * time.Second)
		return nil, err
	}
	return g, nil
}

// expectSpooled checks that the gateway committed exactly n objects (its
// "object spooled" log records: the forwarder may already have moved them
// on from the queue).
func expectSpooled(g *harness.Gateway, n int) error {
	// The last record may still be on its way through the log pipe.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := len(g.LogRecords("object spooled"))
		if got == n {
			return nil
		}
		if got > n || time.Now().After(deadline) {
			return fmt.Errorf("dicomgw spooled %d objects, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// timeGateway sends the set to a fresh dicomgw on a fresh spool and checks
// that it committed exactly the set.
func timeGateway(ctx context.Context, c *config, set objectSet) (time.Duration, error) {
	g, stop, err := receivingGateway(c)
	if err != nil {
		return 0, err
	}
	defer stop()
	settle()
	res, err := storescu(ctx, c.timeout, g.Addr, set.Files)
	if err != nil {
		return 0, fmt.Errorf("%w\ndicomgw log (tail):\n%s", err, harness.Tail(g.Logs(), 4096))
	}
	if err := expectSpooled(g, len(set.Files)); err != nil {
		return 0, err
	}
	return res.Elapsed, nil
}

// timeStorescp sends the set to a fresh storescp writing into a fresh
// directory and checks that it wrote one file per object.
func timeStorescp(ctx context.Context, c *config, set objectSet) (time.Duration, error) {
	out, err := os.MkdirTemp(c.work, "storescp-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(out)
	s, err := harness.StartStoreSCP(out, "-dhl")
	if err != nil {
		return 0, err
	}
	defer s.Kill()
	settle()
	res, err := storescu(ctx, c.timeout, s.Addr(), set.Files)
	if err != nil {
		return 0, err
	}
	if err := expectFiles(out, "", len(set.Files)); err != nil {
		return 0, fmt.Errorf("storescp output: %w", err)
	}
	return res.Elapsed, nil
}

// settle writes back all dirty pages before a timed run. Why: generating a
// set and the previous run leave hundreds of MB waiting for writeback; the
// kernel would flush them during the next run, and on ext4 a receiver's
// fsync can wait for that. Each run should pay only for its own writes.
func settle() { syscall.Sync() }

// expectFiles checks that dir holds exactly n regular files ending in ext.
func expectFiles(dir, ext string, n int) error {
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	got := 0
	for _, de := range des {
		if de.Type().IsRegular() && strings.HasSuffix(de.Name(), ext) {
			got++
		}
	}
	if got != n {
		return fmt.Errorf("%s holds %d objects, want %d", dir, got, n)
	}
	return nil
}

// hugeResult is the memory check: one object of a gigabyte or more over one
// association into a fresh dicomgw.
type hugeResult struct {
	Bytes           int64   `json:"bytes"` // file size
	Seconds         float64 `json:"seconds"`
	MBPerS          float64 `json:"mb_per_s"`
	DicomgwPeakRSS  int64   `json:"dicomgw_peak_rss_bytes"` // VmHWM
	TargetPeakRSS   int64   `json:"target_peak_rss_bytes"`
	Pass            bool    `json:"pass"`
	StorescuPeakRSS int64   `json:"storescu_peak_rss_bytes"` // rusage maxrss
}

const hugeTargetRSS = 100e6 // bytes: the target is 100 MB

// measureHuge sends path to a fresh dicomgw and reads the gateway's peak
// RSS before stopping it: a gateway that buffered the object would show at
// least its size here.
func measureHuge(ctx context.Context, c *config, path string, size int64) (hugeResult, error) {
	r := hugeResult{Bytes: size, TargetPeakRSS: hugeTargetRSS}
	g, stop, err := receivingGateway(c)
	if err != nil {
		return r, err
	}
	defer stop() // the received gigabyte is real disk
	settle()
	res, err := storescu(ctx, c.timeout, g.Addr, []string{path})
	if err != nil {
		return r, fmt.Errorf("%w\ndicomgw log (tail):\n%s", err, harness.Tail(g.Logs(), 4096))
	}
	if r.DicomgwPeakRSS, err = g.PeakRSS(); err != nil {
		return r, err
	}
	if err := expectSpooled(g, 1); err != nil {
		return r, err
	}
	r.Seconds = res.Elapsed.Seconds()
	r.MBPerS = float64(size) / 1e6 / r.Seconds
	r.StorescuPeakRSS = res.MaxRSS
	r.Pass = r.DicomgwPeakRSS < hugeTargetRSS
	return r, nil
}
