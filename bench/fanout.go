package main

// fanout.go: the fan-out case. The small set goes from storescu (one
// association) into a fresh dicomgw that forwards it with STOW-RS to one
// destination, then to two (--route '{} -> a,b'), timed from storescu's
// start until every object is delivered everywhere: the spool's queue/
// is empty (an object's file leaves it only once no destination waits for
// it), checked against the forwarders' delivered counters.
//
// Both destinations are in-process STOW-RS sinks (stowsink.go), which parse
// each part's file meta and answer with a DICOM JSON response listing every
// instance, so the ratio measures the gateway: two Orthancs on the machine's
// two CPUs would measure Orthanc.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/ledger"
)

// fanoutTarget: the two-destination time over the one-destination time, at
// most.
const fanoutTarget = 1.2

// fanoutResult compares one destination with two on one set.
type fanoutResult struct {
	Objects  int      `json:"objects"`
	Bytes    int64    `json:"bytes"`
	Settings []string `json:"dicomgw_forwarding_flags"`

	One    timing  `json:"one_destination"`
	Two    timing  `json:"two_destinations"`
	Ratio  float64 `json:"two_vs_one"` // two median / one median
	Target float64 `json:"target_two_vs_one_max"`
	Pass   bool    `json:"pass"`

	// Where the time went, in the runs closest to the medians.
	OneDiag fanoutDiag `json:"one_destination_diagnostics"`
	TwoDiag fanoutDiag `json:"two_destinations_diagnostics"`
	// The evidence that two destinations share one stored copy, from the
	// two-destination run closest to the median (every run is checked).
	Copies copyCheck `json:"one_stored_copy"`
}

// fanoutDiag is read from one run.
type fanoutDiag struct {
	Receive float64 `json:"receive_s"` // storescu start to exit
	// Processor seconds each program used during the run; "sinks (bench)"
	// is this process, which runs the STOW-RS sinks.
	CPU map[string]float64 `json:"cpu_s"`
	// Bytes dicomgw made the kernel write to storage during the run
	// (/proc/PID/io write_bytes: counted when a page is dirtied, so a
	// file written once counts once, whenever it is flushed).
	DiskWriteBytes int64 `json:"dicomgw_disk_write_bytes"`
	// Parts the sinks received (each destination's share of n, plus any
	// resent).
	SinkParts map[string]int `json:"sink_parts"`
	// Transactions the delivery ledger committed during the run (each
	// with an fsync).
	LedgerTransactions int `json:"ledger_transactions"`
}

// fanoutDests are the destinations' names, in order.
var fanoutDests = []string{"a", "b"}

func measureFanout(ctx context.Context, c *config, set objectSet) (*fanoutResult, error) {
	r := &fanoutResult{Objects: len(set.Files), Bytes: set.Bytes, Settings: e2eSettings(c), Target: fanoutTarget}
	var secs [2][]float64
	var diags [2][]fanoutDiag
	var copies []copyCheck
	for i := 1; i <= c.fanoutRuns; i++ {
		for k := 1; k <= 2; k++ {
			d, diag, cc, err := timeFanout(ctx, c, set, k)
			if err != nil {
				return nil, fmt.Errorf("fan-out run %d, %d destination(s): %w", i, k, err)
			}
			secs[k-1], diags[k-1] = append(secs[k-1], d.Seconds()), append(diags[k-1], diag)
			if k == 2 {
				copies = append(copies, *cc)
			}
			progress("fan-out: %d destination(s) run %d/%d: %7.3f s (receive %.3f s)", k, i, c.fanoutRuns, d.Seconds(), diag.Receive)
		}
	}
	r.One, r.Two = newTiming(secs[0], set), newTiming(secs[1], set)
	r.OneDiag, r.TwoDiag = diags[0][nearMedian(secs[0])], diags[1][nearMedian(secs[1])]
	r.Copies = copies[nearMedian(secs[1])]
	r.Copies.WriteBytesOne = r.OneDiag.DiskWriteBytes
	r.Ratio = r.Two.Median / r.One.Median
	r.Pass = r.Ratio <= fanoutTarget
	return r, nil
}

// timeFanout sends the set to a fresh dicomgw forwarding to k STOW-RS
// sinks and times it until the gateway holds nothing more to deliver.
// With two destinations it also checks that each object was stored once.
func timeFanout(ctx context.Context, c *config, set objectSet, k int) (time.Duration, fanoutDiag, *copyCheck, error) {
	diag := fanoutDiag{SinkParts: map[string]int{}}
	dests := fanoutDests[:k]
	args := e2eSettings(c)
	sinks := map[string]*stowSink{}
	for _, name := range dests {
		s, err := startSTOWSink()
		if err != nil {
			return 0, diag, nil, err
		}
		defer s.close()
		sinks[name] = s
		args = append(args, "--destination", name+"="+s.url)
	}
	args = append(args, "--route", "{} -> "+strings.Join(dests, ","))
	dir, err := os.MkdirTemp(c.work, "fanout-")
	if err != nil {
		return 0, diag, nil, err
	}
	defer os.RemoveAll(dir)
	spool := filepath.Join(dir, "spool")
	g, err := startGateway(c, spool, args...)
	if err != nil {
		return 0, diag, nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			g.Stop(30 * time.Second)
		}
	}()
	settle()
	cpu := meterCPU(map[string]*harness.Process{"dicomgw": g.Process})
	self0 := selfCPU()
	w0, err := writeBytes(g.PID())
	if err != nil {
		return 0, diag, nil, err
	}
	tx0, err := ledgerTransactions(g)
	if err != nil {
		return 0, diag, nil, err
	}
	start := time.Now()
	s := <-storescuAsync(ctx, c, g.Addr, set.Files)
	if s.err != nil {
		return 0, diag, nil, fmt.Errorf("%w\ndicomgw log (tail):\n%s", s.err, harness.Tail(g.Logs(), 4096))
	}
	// Every object is in queue/ once storescu has its answer; it leaves
	// when no destination waits for it any more.
	n := len(set.Files)
	end, err := pollUntil(ctx, n, 5*time.Millisecond, c.timeout, func() (int, error) {
		q, err := queuedObjects(spool)
		return n - q, err
	})
	if err != nil {
		return 0, diag, nil, fmt.Errorf("waiting for the queue to drain: %w\ndicomgw log (tail):\n%s", err, harness.Tail(g.Logs(), 4096))
	}
	w1, err := writeBytes(g.PID())
	if err != nil {
		return 0, diag, nil, err
	}
	diag.Receive = s.res.Elapsed.Seconds()
	diag.DiskWriteBytes = w1 - w0
	diag.CPU = map[string]float64{"storescu": s.res.CPU.Seconds(), "sinks (bench)": (selfCPU() - self0).Seconds()}
	cpu.into(diag.CPU)

	// Delivered, not dead-lettered: what the forwarders counted.
	m, err := g.Scrape()
	if err != nil {
		return 0, diag, nil, err
	}
	diag.LedgerTransactions = int(m.Sum("dicomgw_ledger_transactions_total") - tx0)
	for _, name := range dests {
		dl := `destination="` + name + `"`
		got := m.Sum("dicomgw_forward_instances_total", dl, `outcome="delivered"`)
		dead := m.Sum("dicomgw_forward_instances_total", dl, `outcome="dead_lettered"`)
		if int(got) != n || dead != 0 {
			return 0, diag, nil, fmt.Errorf("destination %s: %v delivered and %v dead-lettered, want %d and 0", name, got, dead, n)
		}
	}
	// Each sink got every object that was spooled.
	spooled := g.LogRecords("object spooled")
	for _, name := range dests {
		parts, errs := sinks[name].received()
		if len(errs) > 0 {
			return 0, diag, nil, fmt.Errorf("STOW-RS sink %s: %v", name, errs)
		}
		diag.SinkParts[name] = len(parts)
		if err := sinkHasAll(parts, spooled); err != nil {
			return 0, diag, nil, fmt.Errorf("STOW-RS sink %s: %w", name, err)
		}
	}
	if k == 1 {
		return end.Sub(start), diag, nil, nil
	}

	// The ledger is read once the gateway has stopped: it commits the
	// last "gone" records as it closes.
	stopped = true
	if err := g.Stop(30 * time.Second); err != nil {
		return 0, diag, nil, fmt.Errorf("stopping dicomgw: %w", err)
	}
	objs, err := readLedger(filepath.Join(spool, "ledger.db"))
	if err != nil {
		return 0, diag, nil, err
	}
	cc, err := checkOneCopy(g.LogRecords("object spooled"), objs, dests, n)
	if err != nil {
		return 0, diag, nil, fmt.Errorf("not one stored copy per object: %w", err)
	}
	cc.WriteBytesTwo = diag.DiskWriteBytes
	cc.ObjectBytes = set.Bytes / int64(n)
	return end.Sub(start), diag, &cc, nil
}

// ledgerTransactions is how many transactions the gateway's delivery
// ledger has committed (0 for a gateway without one).
func ledgerTransactions(g *harness.Gateway) (float64, error) {
	m, err := g.Scrape()
	if err != nil {
		return 0, err
	}
	return m.Sum("dicomgw_ledger_transactions_total"), nil
}

// queuedObjects counts the committed objects in a spool's queue/.
func queuedObjects(spool string) (int, error) {
	des, err := os.ReadDir(filepath.Join(spool, "queue"))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, de := range des {
		if strings.HasSuffix(de.Name(), ".dcm") {
			n++
		}
	}
	return n, nil
}

// writeBytes is write_bytes of /proc/PID/io (proc(5)): the bytes the
// process caused to be sent to storage, counted as pages are dirtied.
func writeBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	return parseIOField(string(b), "write_bytes")
}

// parseIOField reads one "name: value" line of /proc/PID/io.
func parseIOField(io, field string) (int64, error) {
	for _, line := range strings.Split(io, "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			var n int64
			if _, err := fmt.Sscan(strings.TrimSpace(v), &n); err != nil {
				return 0, fmt.Errorf("/proc/PID/io %s: %q: %w", field, v, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("/proc/PID/io has no %s", field)
}

// sinkHasAll checks that parts hold every SOP instance of the "object
// spooled" records.
func sinkHasAll(parts []sinkPart, spooled []map[string]any) error {
	got := map[string]bool{}
	for _, p := range parts {
		got[p.SOPInstanceUID] = true
	}
	missing := 0
	for _, r := range spooled {
		if sop, _ := r["sop_instance"].(string); !got[sop] {
			missing++
		}
	}
	if missing > 0 {
		return fmt.Errorf("%d of %d spooled instances never arrived", missing, len(spooled))
	}
	return nil
}

// readLedger reads every object a stopped gateway's ledger holds.
func readLedger(path string) ([]ledger.ObjectState, error) {
	r, err := ledger.OpenReader(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	objs, err := r.Trace(ledger.Query{})
	if err == nil && r.Skipped() > 0 {
		err = fmt.Errorf("ledger %s: %d unreadable rows", path, r.Skipped())
	}
	return objs, err
}

// copyCheck is the evidence that the gateway stored each object once for
// all its destinations, rather than once per destination.
type copyCheck struct {
	// From the gateway's "object spooled" records (one per commit).
	Commits      int `json:"commits"`       // records
	SpoolIDs     int `json:"spool_ids"`     // distinct spool IDs among them
	SOPInstances int `json:"sop_instances"` // distinct SOP Instance UIDs among them
	RoutedToAll  int `json:"routed_to_all"` // records naming every destination
	// From the delivery ledger, read after the gateway stopped.
	LedgerObjects   int            `json:"ledger_objects"`
	LedgerDelivered map[string]int `json:"ledger_delivered"` // by destination
	LedgerGone      int            `json:"ledger_gone"`      // objects whose file has left the spool
	// Bytes dicomgw wrote to storage in the timed runs closest to the
	// medians, with two destinations and with one, and the mean object
	// file: with a copy per destination, two would write twice the data.
	WriteBytesTwo int64 `json:"dicomgw_disk_write_bytes_two"`
	WriteBytesOne int64 `json:"dicomgw_disk_write_bytes_one"`
	ObjectBytes   int64 `json:"mean_object_bytes"`
}

// checkOneCopy checks that n objects were committed once each, every one
// routed to all of dests, and that the ledger holds exactly those objects,
// each under its one spool ID with a delivery per destination, all
// delivered, and its file gone from the spool.
func checkOneCopy(spooled []map[string]any, objs []ledger.ObjectState, dests []string, n int) (copyCheck, error) {
	cc := copyCheck{Commits: len(spooled), LedgerObjects: len(objs), LedgerDelivered: map[string]int{}}
	want := strings.Join(dests, ",")
	ids, sops := map[string]string{}, map[string]bool{} // spool ID -> SOP Instance UID
	for _, r := range spooled {
		id, _ := r["id"].(string)
		sop, _ := r["sop_instance"].(string)
		if id == "" || sop == "" {
			return cc, fmt.Errorf("an \"object spooled\" record without id or sop_instance: %v", r)
		}
		ids[id], sops[sop] = sop, true
		d, _ := r["destinations"].(string)
		routed := strings.Split(d, ",")
		slices.Sort(routed)
		if slices.Equal(routed, dests) {
			cc.RoutedToAll++
		}
	}
	cc.SpoolIDs, cc.SOPInstances = len(ids), len(sops)
	var errs []error
	if cc.Commits != n || cc.SpoolIDs != n || cc.SOPInstances != n {
		errs = append(errs, fmt.Errorf("%d commits of %d SOP instances under %d spool IDs, want %d of each", cc.Commits, cc.SOPInstances, cc.SpoolIDs, n))
	}
	if cc.RoutedToAll != n {
		errs = append(errs, fmt.Errorf("%d of %d commits routed to %s", cc.RoutedToAll, cc.Commits, want))
	}
	seen := map[string]bool{}
	bad := 0
	for _, o := range objs {
		if sop, ok := ids[o.ID]; !ok || sop != o.SOPInstanceUID || seen[o.ID] {
			bad++
			continue
		}
		seen[o.ID] = true
		if !o.GoneAt.IsZero() {
			cc.LedgerGone++
		}
		var got []string
		for _, d := range o.Deliveries {
			got = append(got, d.Destination)
			if d.State == ledger.StateDelivered {
				cc.LedgerDelivered[d.Destination]++
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, dests) {
			bad++
		}
	}
	if bad > 0 || len(seen) != n {
		errs = append(errs, fmt.Errorf("the ledger holds %d objects, %d of them not one per spooled object with a delivery to each of %s", len(objs), bad, want))
	}
	for _, d := range dests {
		if cc.LedgerDelivered[d] != n {
			errs = append(errs, fmt.Errorf("the ledger has %d deliveries to %s, want %d", cc.LedgerDelivered[d], d, n))
		}
	}
	if cc.LedgerGone != n {
		errs = append(errs, fmt.Errorf("the ledger says %d of %d files left the spool", cc.LedgerGone, n))
	}
	return cc, errors.Join(errs...)
}
