package main

// e2e.go: the end-to-end case. One set of objects goes from storescu (one
// association) into a real Orthanc, timed from storescu's start until
// Orthanc holds the last object, three ways:
//
//   dicomgw:  storescu -> dicomgw (spool, STOW-RS batches) -> Orthanc
//   direct:   a plain batched STOW-RS client posting the files themselves
//             to Orthanc: the endpoint's own limit, no DICOM receive at all
//   router:   storescu -> Orthanc acting as the router (Lua OnStoredInstance
//             posting each stored instance to its DICOMweb client's STOW-RS)
//             -> the target Orthanc
//
// Every run uses fresh Orthanc storage.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// Targets of the end-to-end case.
const (
	e2eDirectTarget = 1.3  // dicomgw time / direct STOW-RS time, at most
	e2eRouterTarget = 20.0 // Orthanc-router time / dicomgw time, at least
)

// e2eResult compares the three paths on one set.
type e2eResult struct {
	Objects  int      `json:"objects"`
	Bytes    int64    `json:"bytes"`
	Settings []string `json:"dicomgw_forwarding_flags"`

	Dicomgw timing `json:"dicomgw"`
	Direct  timing `json:"direct_stow"`
	Router  timing `json:"orthanc_router"`

	VsDirect       float64 `json:"dicomgw_vs_direct"` // dicomgw median / direct median
	TargetVsDirect float64 `json:"target_dicomgw_vs_direct_max"`
	PassDirect     bool    `json:"pass_direct"`
	VsRouter       float64 `json:"router_vs_dicomgw"` // router median / dicomgw median
	TargetVsRouter float64 `json:"target_router_vs_dicomgw_min"`
	PassRouter     bool    `json:"pass_router"`

	// Where dicomgw's time goes, from its median run.
	Diag dicomgwDiag `json:"dicomgw_diagnostics"`
	// How long the router took to receive (storescu's own time), median.
	RouterReceive float64 `json:"router_receive_s"`
	// How many STOW-RS requests the direct client made per run.
	DirectRequests int `json:"direct_requests"`
	// Processor seconds each program used, in the run closest to the
	// median, for the direct and router paths.
	DirectCPU map[string]float64 `json:"direct_cpu_s"`
	RouterCPU map[string]float64 `json:"router_cpu_s"`

	// Diagnostics: dicomgw's path again with its spool on tmpfs (not
	// durable: fsync costs nothing there; not a deployment), and the time
	// it takes just to write the set durably on the work directory's disk
	// (one fsync per object, into prepared files), one object after the
	// other as one association delivers them.
	DicomgwTmpfs *timing `json:"dicomgw_spool_on_tmpfs,omitempty"`
	DurableFloor float64 `json:"durable_write_floor_s"`
}

// dicomgwDiag is read from dicomgw's log of one run.
type dicomgwDiag struct {
	Receive        float64 `json:"receive_s"`            // storescu start to exit
	FirstDelivered float64 `json:"first_delivered_s"`    // from storescu start
	LastDelivered  float64 `json:"last_delivered_s"`     // from storescu start
	Requests       int     `json:"requests"`             // STOW-RS requests (batches)
	MeanBatch      float64 `json:"mean_batch"`           // objects per request
	MeanRequest    float64 `json:"mean_request_s"`       // request_duration
	MaxRequest     float64 `json:"max_request_s"`        // request_duration
	MaxSince       float64 `json:"max_since_received_s"` // since_received
	Retries        int     `json:"retries"`              // "delivery failed; will retry"
	// Processor seconds each program used during the run.
	CPU map[string]float64 `json:"cpu_s"`
}

// e2eSettings are dicomgw's forwarding flags for the case; the direct
// client uses the same batch size and concurrency.
func e2eSettings(c *config) []string {
	return []string{
		"--forward-workers", strconv.Itoa(c.e2eWorkers),
		"--batch-max-instances", strconv.Itoa(c.e2eBatch),
		"--batch-linger", c.e2eLinger.String(),
	}
}

func measureE2E(ctx context.Context, c *config, set objectSet) (*e2eResult, error) {
	if err := harness.CheckOrthanc(); err != nil {
		return nil, fmt.Errorf("the end-to-end case needs Orthanc (--skip-e2e skips it): %w", err)
	}
	r := &e2eResult{Objects: len(set.Files), Bytes: set.Bytes, Settings: e2eSettings(c),
		TargetVsDirect: e2eDirectTarget, TargetVsRouter: e2eRouterTarget}
	var gw, direct, router, routerRecv, tmpfs []float64
	var diags []dicomgwDiag
	var directCPU, routerCPU []map[string]float64
	for i := 1; i <= c.e2eRuns; i++ {
		d, diag, err := timeDicomgwToOrthanc(ctx, c, set)
		if err != nil {
			return nil, fmt.Errorf("e2e run %d, dicomgw: %w", i, err)
		}
		gw, diags = append(gw, d.Seconds()), append(diags, diag)
		progress("e2e: dicomgw -> Orthanc   run %d/%d: %7.3f s (receive %.3f s, %d requests, mean %.0f per request, max since_received %.3f s)",
			i, c.e2eRuns, d.Seconds(), diag.Receive, diag.Requests, diag.MeanBatch, diag.MaxSince)

		d, n, cpu, err := timeDirectSTOW(ctx, c, set)
		if err != nil {
			return nil, fmt.Errorf("e2e run %d, direct STOW-RS: %w", i, err)
		}
		direct, r.DirectRequests, directCPU = append(direct, d.Seconds()), n, append(directCPU, cpu)
		progress("e2e: direct STOW-RS      run %d/%d: %7.3f s (%d requests)", i, c.e2eRuns, d.Seconds(), n)

		d, recv, cpu, err := timeOrthancRouter(ctx, c, set)
		if err != nil {
			return nil, fmt.Errorf("e2e run %d, Orthanc router: %w", i, err)
		}
		router, routerRecv, routerCPU = append(router, d.Seconds()), append(routerRecv, recv.Seconds()), append(routerCPU, cpu)
		progress("e2e: Orthanc as router   run %d/%d: %7.3f s (receive %.3f s)", i, c.e2eRuns, d.Seconds(), recv.Seconds())

		if c.tmpfs != "" {
			d, diag, err := timeDicomgwToOrthancIn(ctx, c, set, c.tmpfs)
			if err != nil {
				return nil, fmt.Errorf("e2e run %d, dicomgw with its spool on tmpfs: %w", i, err)
			}
			tmpfs = append(tmpfs, d.Seconds())
			progress("e2e: (diagnostic) dicomgw, spool on tmpfs, run %d/%d: %7.3f s (receive %.3f s)", i, c.e2eRuns, d.Seconds(), diag.Receive)
		}
	}
	floor, err := durableFloor(c.work, set)
	if err != nil {
		return nil, err
	}
	r.DurableFloor = floor.Seconds()
	progress("e2e: writing the set durably, one object at a time, takes %.3f s on this disk", r.DurableFloor)
	if len(tmpfs) > 0 {
		t := newTiming(tmpfs, set)
		r.DicomgwTmpfs = &t
	}
	r.Dicomgw, r.Direct, r.Router = newTiming(gw, set), newTiming(direct, set), newTiming(router, set)
	r.RouterReceive = median(routerRecv)
	// The diagnostics of the runs whose times are closest to the medians.
	r.Diag = diags[nearMedian(gw)]
	r.DirectCPU = directCPU[nearMedian(direct)]
	r.RouterCPU = routerCPU[nearMedian(router)]
	r.VsDirect = r.Dicomgw.Median / r.Direct.Median
	r.PassDirect = r.VsDirect <= e2eDirectTarget
	r.VsRouter = r.Router.Median / r.Dicomgw.Median
	r.PassRouter = r.VsRouter >= e2eRouterTarget
	return r, nil
}

// durableFloor writes the set's files durably into a fresh directory of
// dir, one after the other, with one fsync each: into files created
// beforehand (their entries made durable with one directory fsync, timed
// too), as the spool's slots do. A durable receiver cannot take less for
// the set over one association on this disk.
func durableFloor(dir string, set objectSet) (time.Duration, error) {
	d, err := os.MkdirTemp(dir, "floor-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(d)
	settle()
	start := time.Now()
	files := make([]*os.File, len(set.Files))
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	for i := range files {
		if files[i], err = os.Create(filepath.Join(d, strconv.Itoa(i))); err != nil {
			return 0, err
		}
	}
	dd, err := os.Open(d)
	if err != nil {
		return 0, err
	}
	err = dd.Sync()
	dd.Close()
	if err != nil {
		return 0, err
	}
	total := time.Since(start)
	for i, src := range set.Files {
		b, err := os.ReadFile(src) // not timed: a receiver has the bytes from the wire
		if err != nil {
			return 0, err
		}
		start := time.Now()
		if _, err := files[i].Write(b); err != nil {
			return 0, err
		}
		if err := files[i].Sync(); err != nil {
			return 0, err
		}
		total += time.Since(start)
	}
	return total, nil
}

// nearMedian is the index of the run closest to the median.
func nearMedian(xs []float64) int {
	m, best := median(xs), 0
	for i, x := range xs {
		if math.Abs(x-m) < math.Abs(xs[best]-m) {
			best = i
		}
	}
	return best
}

// cpuMeter reads the processor time running children spend from its
// making on: the timed run, not their start (a gateway makes its spool's
// slots, Orthanc opens its database).
type cpuMeter struct {
	procs  map[string]*harness.Process
	before map[string]time.Duration
}

func meterCPU(procs map[string]*harness.Process) cpuMeter {
	m := cpuMeter{procs: procs, before: map[string]time.Duration{}}
	for name, p := range procs {
		if d, err := p.CPUTime(); err == nil {
			m.before[name] = d
		}
	}
	return m
}

// into adds each child's processor seconds since meterCPU to m.
func (c cpuMeter) into(m map[string]float64) {
	for name, p := range c.procs {
		b, ok := c.before[name]
		if d, err := p.CPUTime(); err == nil && ok {
			m[name] = (d - b).Seconds()
		}
	}
}

// selfCPU is this process's processor time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// freshOrthanc starts an Orthanc on fresh storage under the work
// directory; stop removes it and its storage.
func freshOrthanc(c *config, name string, extra map[string]any) (*harness.Orthanc, func(), error) {
	dir, err := os.MkdirTemp(c.work, name+"-")
	if err != nil {
		return nil, nil, err
	}
	o, err := harness.StartOrthanc(dir, extra)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return o, func() {
		if err := o.Stop(30 * time.Second); err != nil {
			progress("warning: Orthanc %s: %v", name, err)
		}
		os.RemoveAll(dir)
	}, nil
}

// instancesIn polls an Orthanc's /statistics until it holds n instances
// and returns when it saw them.
func instancesIn(ctx context.Context, c *config, o *harness.Orthanc, n int) (time.Time, error) {
	return pollUntil(ctx, n, 20*time.Millisecond, c.timeout, o.CountInstances)
}

// storescuAsync runs storescu in the background.
func storescuAsync(ctx context.Context, c *config, addr string, files []string) <-chan storescuDone {
	done := make(chan storescuDone, 1)
	go func() {
		res, err := storescu(ctx, c.timeout, addr, files)
		done <- storescuDone{res, err}
	}()
	return done
}

type storescuDone struct {
	res harness.Result
	err error
}

// timeDicomgwToOrthanc: storescu -> dicomgw -> Orthanc.
func timeDicomgwToOrthanc(ctx context.Context, c *config, set objectSet) (time.Duration, dicomgwDiag, error) {
	return timeDicomgwToOrthancIn(ctx, c, set, c.work)
}

// timeDicomgwToOrthancIn is timeDicomgwToOrthanc with the spool in a
// temporary directory of spoolParent.
func timeDicomgwToOrthancIn(ctx context.Context, c *config, set objectSet, spoolParent string) (time.Duration, dicomgwDiag, error) {
	var diag dicomgwDiag
	o, stopO, err := freshOrthanc(c, "orthanc-target", nil)
	if err != nil {
		return 0, diag, err
	}
	defer stopO()
	spool, err := os.MkdirTemp(spoolParent, "dicomgw-bench-spool-")
	if err != nil {
		return 0, diag, err
	}
	defer os.RemoveAll(spool)
	g, err := startGateway(c, spool, append([]string{"--stow-url", o.BaseURL()}, e2eSettings(c)...)...)
	if err != nil {
		return 0, diag, err
	}
	defer g.Stop(30 * time.Second)
	settle()
	cpu := meterCPU(map[string]*harness.Process{"dicomgw": g.Process, "Orthanc": o.Process})
	start := time.Now()
	sent := storescuAsync(ctx, c, g.Addr, set.Files)
	end, err := instancesIn(ctx, c, o, len(set.Files))
	s := <-sent
	if s.err != nil {
		return 0, diag, fmt.Errorf("%w\ndicomgw log (tail):\n%s", s.err, harness.Tail(g.Logs(), 4096))
	}
	if err != nil {
		return 0, diag, fmt.Errorf("the target Orthanc: %w\ndicomgw log (tail):\n%s", err, harness.Tail(g.Logs(), 4096))
	}
	if got, err := o.CountInstances(); err != nil || got != len(set.Files) {
		return 0, diag, fmt.Errorf("the target Orthanc holds %d instances (%v), want %d", got, err, len(set.Files))
	}
	diag, err = readDiag(g, start, s.res.Elapsed, len(set.Files))
	diag.CPU = map[string]float64{"storescu": s.res.CPU.Seconds()}
	cpu.into(diag.CPU)
	return end.Sub(start), diag, err
}

// readDiag reads where the time went from dicomgw's log: the "object
// delivered" records of one request share its request_duration and come
// together.
func readDiag(g *harness.Gateway, start time.Time, receive time.Duration, n int) (dicomgwDiag, error) {
	d := dicomgwDiag{Receive: receive.Seconds(), Retries: len(g.LogRecords("delivery failed; will retry"))}
	// Orthanc has stored the last batch a moment before dicomgw reads its
	// answer and logs it.
	recs := g.LogRecords("object delivered")
	for deadline := time.Now().Add(10 * time.Second); len(recs) < n && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		recs = g.LogRecords("object delivered")
	}
	if len(recs) != n {
		return d, fmt.Errorf("dicomgw logged %d deliveries, want %d", len(recs), n)
	}
	var reqDur []float64
	var first, last time.Time
	for _, r := range recs {
		at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(r["time"]))
		if err != nil {
			return d, fmt.Errorf("log time %v: %w", r["time"], err)
		}
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
		rd, _ := r["request_duration"].(float64) // slog writes durations in ns
		since, _ := r["since_received"].(float64)
		d.MaxSince = max(d.MaxSince, since/1e9)
		d.MaxRequest = max(d.MaxRequest, rd/1e9)
		// One request: records in a row with the same duration.
		if len(reqDur) == 0 || reqDur[len(reqDur)-1] != rd {
			reqDur = append(reqDur, rd)
		}
	}
	d.Requests = len(reqDur)
	d.MeanBatch = float64(n) / float64(d.Requests)
	var sum float64
	for _, x := range reqDur {
		sum += x
	}
	d.MeanRequest = sum / float64(len(reqDur)) / 1e9
	d.FirstDelivered = first.Sub(start).Seconds()
	d.LastDelivered = last.Sub(start).Seconds()
	return d, nil
}

// timeDirectSTOW: the files posted straight to Orthanc with STOW-RS, in
// batches of dicomgw's size, as many requests in flight as dicomgw's
// workers.
func timeDirectSTOW(ctx context.Context, c *config, set objectSet) (time.Duration, int, map[string]float64, error) {
	o, stopO, err := freshOrthanc(c, "orthanc-direct", nil)
	if err != nil {
		return 0, 0, nil, err
	}
	defer stopO()
	cl := newSTOWClient(o.BaseURL(), c.e2eBatch, c.e2eWorkers)
	settle()
	meter := meterCPU(map[string]*harness.Process{"Orthanc": o.Process})
	cpu0 := selfCPU()
	start := time.Now()
	n, err := cl.send(ctx, set.Files)
	if err != nil {
		return 0, n, nil, err
	}
	end, err := instancesIn(ctx, c, o, len(set.Files))
	if err != nil {
		return 0, n, nil, err
	}
	cpu := map[string]float64{"client (bench)": (selfCPU() - cpu0).Seconds()}
	meter.into(cpu)
	return end.Sub(start), n, cpu, nil
}

// routerLua is the routing script of the Orthanc router: each instance,
// once stored, is handed to the DICOMweb plugin's STOW-RS client (POST
// /dicom-web/servers/{name}/stow with the Orthanc IDs of the resources,
// as the plugin's documentation gives it) as an asynchronous job.
//
// Of the Orthanc-native ways tried, this is the fastest, so it is the one
// compared: the documented default (synchronous: the call returns once
// the STOW-RS request is done) makes Lua forward one instance at a time at
// about 0.5 s each (100 objects of 39 KB: 50 s); asynchronous jobs with
// the default "ConcurrentJobs": 2 take 25 s for the same; with
// routerConcurrentJobs the forwarding keeps up with the DICOM receive.
const routerLua = `function OnStoredInstance(instanceId, tags, metadata, origin)
  RestApiPost('/dicom-web/servers/target/stow', DumpJson({ Resources = { instanceId }, Synchronous = false }, true))
end
`

// routerConcurrentJobs is the router's "ConcurrentJobs": STOW-RS jobs in
// flight.
const routerConcurrentJobs = 8

// timeOrthancRouter: storescu -> Orthanc (router) -> Orthanc (target).
func timeOrthancRouter(ctx context.Context, c *config, set objectSet) (time.Duration, time.Duration, map[string]float64, error) {
	target, stopT, err := freshOrthanc(c, "orthanc-target", nil)
	if err != nil {
		return 0, 0, nil, err
	}
	defer stopT()
	script := filepath.Join(c.work, "route.lua")
	if err := os.WriteFile(script, []byte(routerLua), 0o644); err != nil {
		return 0, 0, nil, err
	}
	router, stopR, err := freshOrthanc(c, "orthanc-router", map[string]any{
		"Name":           "router",
		"LuaScripts":     []string{script},
		"ConcurrentJobs": routerConcurrentJobs,
		"DicomWeb":       map[string]any{"Servers": map[string]any{"target": []string{target.BaseURL() + "/"}}},
	})
	if err != nil {
		return 0, 0, nil, err
	}
	defer stopR()
	settle()
	meter := meterCPU(map[string]*harness.Process{"Orthanc router": router.Process, "Orthanc target": target.Process})
	start := time.Now()
	sent := storescuAsync(ctx, c, router.DICOMAddr(), set.Files)
	end, err := instancesIn(ctx, c, target, len(set.Files))
	s := <-sent
	if s.err != nil {
		return 0, 0, nil, fmt.Errorf("%w\nrouter log (tail):\n%s", s.err, harness.Tail(router.Output(), 4096))
	}
	if err != nil {
		return 0, 0, nil, fmt.Errorf("target: %w\nrouter log (tail):\n%s", err, harness.Tail(router.Output(), 4096))
	}
	if got, err := router.CountInstances(); err != nil || got != len(set.Files) {
		return 0, 0, nil, fmt.Errorf("the router holds %d instances (%v), want %d", got, err, len(set.Files))
	}
	cpu := map[string]float64{"storescu": s.res.CPU.Seconds()}
	meter.into(cpu)
	return end.Sub(start), s.res.Elapsed, cpu, nil
}

// hugeForwardResult is the memory check of forwarding: one object of a
// gigabyte or more, received and then sent with STOW-RS to a sink.
type hugeForwardResult struct {
	Bytes          int64   `json:"bytes"` // file size
	Seconds        float64 `json:"seconds"`
	ReceiveSeconds float64 `json:"receive_s"`
	MBPerS         float64 `json:"mb_per_s"`
	DicomgwPeakRSS int64   `json:"dicomgw_peak_rss_bytes"` // VmHWM
	TargetPeakRSS  int64   `json:"target_peak_rss_bytes"`
	Pass           bool    `json:"pass"`
}

// measureHugeForward sends path to a fresh dicomgw forwarding to a STOW-RS
// sink, waits for "object delivered" and reads the gateway's peak RSS.
func measureHugeForward(ctx context.Context, c *config, path, sop string, size int64) (hugeForwardResult, error) {
	r := hugeForwardResult{Bytes: size, TargetPeakRSS: hugeTargetRSS}
	sink, err := startSTOWSink()
	if err != nil {
		return r, err
	}
	defer sink.close()
	spool, err := os.MkdirTemp(c.work, "spool-huge-fwd-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(spool)
	g, err := startGateway(c, spool, "--stow-url", sink.url)
	if err != nil {
		return r, err
	}
	defer g.Stop(30 * time.Second)
	settle()
	start := time.Now()
	res, err := storescu(ctx, c.timeout, g.Addr, []string{path})
	if err != nil {
		return r, fmt.Errorf("%w\ndicomgw log (tail):\n%s", err, harness.Tail(g.Logs(), 4096))
	}
	if _, err := g.WaitLog("object delivered", c.timeout, nil); err != nil {
		return r, errors.New(harness.Tail(err.Error(), 4096))
	}
	r.Seconds = time.Since(start).Seconds()
	r.ReceiveSeconds = res.Elapsed.Seconds()
	if r.DicomgwPeakRSS, err = g.PeakRSS(); err != nil {
		return r, err
	}
	parts, errs := sink.received()
	if len(errs) > 0 {
		return r, fmt.Errorf("STOW-RS sink: %v", errs)
	}
	if len(parts) != 1 || parts[0].SOPInstanceUID != sop || parts[0].Bytes < size-(1<<20) {
		return r, fmt.Errorf("the sink received %+v, want SOP instance %s of about %d bytes", parts, sop, size)
	}
	r.MBPerS = float64(size) / 1e6 / r.Seconds
	r.Pass = r.DicomgwPeakRSS < hugeTargetRSS
	return r, nil
}
