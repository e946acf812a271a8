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

// timeGateway sends the set to a fresh dicomgw on a fresh spool and checks
// that the spool then holds exactly the set. The spool is removed after.
func timeGateway(ctx context.Context, c *config, set objectSet) (time.Duration, error) {
	spool, err := os.MkdirTemp(c.work, "spool-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(spool)
	g, err := harness.StartBinary(c.bin, spool)
	if err != nil {
		return 0, err
	}
	defer g.Stop(30 * time.Second)
	settle()
	res, err := storescu(ctx, c.timeout, g.Addr, set.Files)
	if err != nil {
		return 0, fmt.Errorf("%w\ndicomgw log (tail):\n%s", err, harness.Tail(g.Logs(), 4096))
	}
	if err := expectFiles(filepath.Join(spool, "queue"), ".dcm", len(set.Files)); err != nil {
		return 0, fmt.Errorf("dicomgw spool: %w", err)
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
	spool, err := os.MkdirTemp(c.work, "spool-huge-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(spool) // the received gigabyte is real disk
	g, err := harness.StartBinary(c.bin, spool)
	if err != nil {
		return r, err
	}
	defer g.Stop(30 * time.Second)
	settle()
	res, err := storescu(ctx, c.timeout, g.Addr, []string{path})
	if err != nil {
		return r, fmt.Errorf("%w\ndicomgw log (tail):\n%s", err, harness.Tail(g.Logs(), 4096))
	}
	if r.DicomgwPeakRSS, err = g.PeakRSS(); err != nil {
		return r, err
	}
	if err := expectFiles(filepath.Join(spool, "queue"), ".dcm", 1); err != nil {
		return r, fmt.Errorf("dicomgw spool: %w", err)
	}
	r.Seconds = res.Elapsed.Seconds()
	r.MBPerS = float64(size) / 1e6 / r.Seconds
	r.StorescuPeakRSS = res.MaxRSS
	r.Pass = r.DicomgwPeakRSS < hugeTargetRSS
	return r, nil
}
