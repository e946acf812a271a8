package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
)

// printReport writes the human-readable report. MB are 10^6 bytes.
func printReport(w io.Writer, s *summary) {
	e := s.Environment
	fmt.Fprintf(w, "\ndicomgw vs dcmtk storescp: C-STORE over loopback, all objects of a set in one association\n")
	fmt.Fprintf(w, "sender: storescu %s (%s); %s, %d CPUs, Linux %s, %s\n\n", e.Storescu, e.Dcmtk, e.CPU, e.CPUs, e.Kernel, e.Go)

	if len(s.Sets) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "set\tobjects\tMB\t|\tdicomgw s\tobj/s\tMB/s\t|\tstorescp s\tobj/s\tMB/s\t|\tspeed-up\ttarget\tresult\t")
		for _, r := range s.Sets {
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t|\t%.3f\t%.0f\t%.1f\t|\t%.3f\t%.0f\t%.1f\t|\t%.1f×\t≥ %.0f×\t%s\t\n",
				r.Name, r.Objects, float64(r.Bytes)/1e6,
				r.Dicomgw.Median, r.Dicomgw.ObjectsPerS, r.Dicomgw.MBPerS,
				r.Storescp.Median, r.Storescp.ObjectsPerS, r.Storescp.MBPerS,
				floor1(r.Speedup), r.TargetSpeedup, verdict(r.Pass))
		}
		tw.Flush()
		fmt.Fprintln(w)
		for _, r := range s.Sets {
			fmt.Fprintf(w, "%s: dicomgw is %.1f× faster than storescp (target ≥ %.0f×): %s; median of %d dicomgw runs %v, of %d storescp runs %v\n",
				r.Name, floor1(r.Speedup), r.TargetSpeedup, verdict(r.Pass),
				len(r.Dicomgw.Runs), secs(r.Dicomgw.Runs), len(r.Storescp.Runs), secs(r.Storescp.Runs))
		}
		fmt.Fprintln(w)
	}

	if s.SetsSkipped != "" {
		fmt.Fprintf(w, "storescp comparison: SKIPPED (%s)\n\n", s.SetsSkipped)
	}

	if r := s.Fanout; r != nil {
		printFanout(w, r)
	} else if s.FanoutSkipped != "" {
		fmt.Fprintf(w, "fan-out: SKIPPED (%s)\n\n", s.FanoutSkipped)
	}
	if r := s.HugeMove; r != nil {
		fmt.Fprintf(w, "huge object moved (C-MOVE from Orthanc's WADO-RS through dicomgw to storescp): %.1f MB in %.2f s; dicomgw peak RSS %.1f MB (target < %.0f MB): %s\n\n",
			float64(r.Bytes)/1e6, r.Seconds, float64(r.DicomgwPeakRSS)/1e6, float64(r.TargetPeakRSS)/1e6, verdict(r.Pass))
	} else if s.HugeMoveSkipped != "" {
		fmt.Fprintf(w, "huge object moved: SKIPPED (%s)\n\n", s.HugeMoveSkipped)
	}
	if r := s.QR; r != nil {
		printQR(w, r)
	} else if s.QRSkipped != "" {
		fmt.Fprintf(w, "query/retrieve: SKIPPED (%s)\n\n", s.QRSkipped)
	}
	if r := s.LedgerCost; r != nil {
		printLedgerCost(w, r)
	} else if s.LedgerCostSkipped != "" {
		fmt.Fprintf(w, "ledger cost on receive: SKIPPED (%s)\n\n", s.LedgerCostSkipped)
	}

	if h := s.Huge; h != nil {
		fmt.Fprintf(w, "huge object: %.1f MB in one association to a fresh dicomgw: %.2f s (%.1f MB/s)\n", float64(h.Bytes)/1e6, h.Seconds, h.MBPerS)
		fmt.Fprintf(w, "  dicomgw peak RSS (VmHWM): %.1f MB (target < %.0f MB): %s\n", float64(h.DicomgwPeakRSS)/1e6, float64(h.TargetPeakRSS)/1e6, verdict(h.Pass))
		if h.StorescuPeakRSS > 0 {
			fmt.Fprintf(w, "  storescu peak RSS (for reference): %.1f MB\n", float64(h.StorescuPeakRSS)/1e6)
		}
	} else if s.HugeSkipped != "" {
		fmt.Fprintf(w, "huge object: SKIPPED (%s)\n", s.HugeSkipped)
	}

	if r := s.E2E; r != nil {
		printE2E(w, r)
	} else if s.E2ESkipped != "" {
		fmt.Fprintf(w, "\nend to end: SKIPPED (%s)\n", s.E2ESkipped)
	}
	if h := s.HugeForward; h != nil {
		fmt.Fprintf(w, "\nhuge object forwarded: %.1f MB received by a fresh dicomgw and sent with STOW-RS to a sink: delivered after %.2f s (receive %.2f s; %.1f MB/s overall)\n",
			float64(h.Bytes)/1e6, h.Seconds, h.ReceiveSeconds, h.MBPerS)
		fmt.Fprintf(w, "  dicomgw peak RSS (VmHWM) after delivery: %.1f MB (target < %.0f MB): %s\n", float64(h.DicomgwPeakRSS)/1e6, float64(h.TargetPeakRSS)/1e6, verdict(h.Pass))
	} else if s.HugeForwardSkipped != "" {
		fmt.Fprintf(w, "\nhuge object forwarded: SKIPPED (%s)\n", s.HugeForwardSkipped)
	}
}

// printE2E writes the end-to-end table: storescu start until the last
// object is in the target Orthanc.
func printE2E(w io.Writer, r *e2eResult) {
	fmt.Fprintf(w, "\nend to end: %d objects (%.1f MB) from storescu (one association) until the last is stored in a fresh Orthanc\n", r.Objects, float64(r.Bytes)/1e6)
	fmt.Fprintf(w, "dicomgw forwarding: %s; the direct client uses the same batch size and requests in flight\n\n", strings.Join(r.Settings, " "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tmedian s\tobj/s\tMB/s\t|\truns\t")
	for _, row := range []struct {
		name string
		t    timing
	}{
		{"storescu -> dicomgw -> Orthanc", r.Dicomgw},
		{"direct STOW-RS -> Orthanc (endpoint's limit)", r.Direct},
		{"storescu -> Orthanc router -> Orthanc", r.Router},
	} {
		fmt.Fprintf(tw, "%s\t%.3f\t%.0f\t%.1f\t|\t%s\t\n", row.name, row.t.Median, row.t.ObjectsPerS, row.t.MBPerS, secs(row.t.Runs))
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintf(w, "dicomgw / direct STOW-RS: %.2f× (target ≤ %.1f×): %s\n", ceil2(r.VsDirect), r.TargetVsDirect, verdict(r.PassDirect))
	fmt.Fprintf(w, "Orthanc router / dicomgw: %.1f× (target ≥ %.0f×): %s\n", floor1(r.VsRouter), r.TargetVsRouter, verdict(r.PassRouter))
	d := r.Diag
	fmt.Fprintf(w, "dicomgw (median run): storescu done after %.3f s; first delivery at %.3f s, last at %.3f s; %d STOW-RS requests (%.1f objects each), request_duration mean %.3f s, max %.3f s; max since_received %.3f s; %d retries\n",
		d.Receive, d.FirstDelivered, d.LastDelivered, d.Requests, d.MeanBatch, d.MeanRequest, d.MaxRequest, d.MaxSince, d.Retries)
	fmt.Fprintf(w, "direct STOW-RS: %d requests; Orthanc ingests %.0f objects/s at best\n", r.DirectRequests, r.Direct.ObjectsPerS)
	fmt.Fprintf(w, "Orthanc router: storescu done after %.3f s (median), the rest is its forwarding\n", r.RouterReceive)
	fmt.Fprintf(w, "processor seconds in the timed run: dicomgw path %s; direct %s; router %s (wall: %.3f, %.3f, %.3f s on %s)\n",
		cpuString(d.CPU), cpuString(r.DirectCPU), cpuString(r.RouterCPU), r.Dicomgw.Median, r.Direct.Median, r.Router.Median, cpusString())
	fmt.Fprintf(w, "disk: writing the set durably one object at a time (write and fsync into prepared files) takes %.3f s here\n", r.DurableFloor)
	if t := r.DicomgwTmpfs; t != nil {
		fmt.Fprintf(w, "diagnostic, not a deployment: dicomgw with its spool on tmpfs (fsync free): %.3f s (%.2f× direct, router %.1f× slower) %s\n",
			t.Median, ceil2(t.Median/r.Direct.Median), floor1(r.Router.Median/t.Median), secs(t.Runs))
	}
}

// printFanout writes the fan-out table: storescu start until every
// object is delivered to every destination.
func printFanout(w io.Writer, r *fanoutResult) {
	fmt.Fprintf(w, "fan-out: %d objects (%.1f MB) from storescu (one association) through dicomgw until delivered to every STOW-RS destination\n", r.Objects, float64(r.Bytes)/1e6)
	fmt.Fprintf(w, "destinations: in-process STOW-RS sinks answering DICOM JSON; dicomgw %s per destination; --route '{} -> a,b'\n\n", strings.Join(r.Settings, " "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "destinations\tmedian s\tobj/s\tMB/s\t|\treceive s\tdicomgw CPU s\tledger tx\tdisk KB/obj\t|\truns\t")
	for _, row := range []struct {
		name string
		t    timing
		d    fanoutDiag
	}{
		{"one (a)", r.One, r.OneDiag},
		{"two (a, b)", r.Two, r.TwoDiag},
	} {
		fmt.Fprintf(tw, "%s\t%.3f\t%.0f\t%.1f\t|\t%.3f\t%.2f\t%d\t%.1f\t|\t%s\t\n", row.name, row.t.Median, row.t.ObjectsPerS, row.t.MBPerS,
			row.d.Receive, row.d.CPU["dicomgw"], row.d.LedgerTransactions, perObjectKB(row.d.DiskWriteBytes, r.Objects), secs(row.t.Runs))
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintf(w, "two / one destination: %.2f× (target ≤ %.1f×): %s\n", ceil2(r.Ratio), r.Target, verdict(r.Pass))
	cc := r.Copies
	fmt.Fprintf(w, "one stored copy (checked in every two-destination run; the median run's figures):\n")
	fmt.Fprintf(w, "  spool: %d commits of %d SOP instances under %d spool IDs, %d of them routed to a and b\n",
		cc.Commits, cc.SOPInstances, cc.SpoolIDs, cc.RoutedToAll)
	fmt.Fprintf(w, "  ledger: %d objects, each under its spool ID with deliveries to a (%d delivered) and b (%d delivered); %d files gone from the spool\n",
		cc.LedgerObjects, cc.LedgerDelivered["a"], cc.LedgerDelivered["b"], cc.LedgerGone)
	fmt.Fprintf(w, "  disk: dicomgw wrote %.1f KB per object with two destinations, %.1f KB with one: the second adds %.1f KB, where a second copy would add its %.1f KB\n",
		perObjectKB(cc.WriteBytesTwo, r.Objects), perObjectKB(cc.WriteBytesOne, r.Objects),
		perObjectKB(cc.WriteBytesTwo-cc.WriteBytesOne, r.Objects), float64(cc.ObjectBytes)/1e3)
	fmt.Fprintf(w, "processor seconds in the timed run (median runs): one %s; two %s (on %s)\n\n",
		cpuString(r.OneDiag.CPU), cpuString(r.TwoDiag.CPU), cpusString())
}

// printLedgerCost writes the ledger-cost table: this checkout's receive
// against the baseline's.
func printLedgerCost(w io.Writer, r *ledgerResult) {
	b := r.Baseline
	fmt.Fprintf(w, "ledger cost on receive: %d objects (%.1f MB) from storescu (one association) into a fresh dicomgw\n", r.Objects, float64(r.Bytes)/1e6)
	fmt.Fprintf(w, "forwarding: %s (it got at most %d request(s) per run)\n\n", r.Forward, r.MaxRequests)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "dicomgw\tmedian s\tobj/s\tMB/s\t|\tCPU s\tledger tx\tdisk KB/obj\t|\truns\t")
	for _, row := range []struct {
		name string
		t    receiveRuns
	}{
		{"HEAD (with the ledger)", r.Head},
		{shortRev(b.Commit) + " (before it)", r.Base},
	} {
		fmt.Fprintf(tw, "%s\t%.3f\t%.0f\t%.1f\t|\t%.2f\t%d\t%.1f\t|\t%s\t\n", row.name, row.t.Median, row.t.ObjectsPerS, row.t.MBPerS,
			row.t.CPU, row.t.LedgerTransactions, perObjectKB(row.t.DiskWriteBytes, r.Objects), secs(row.t.Runs))
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintf(w, "HEAD / %s: %.2f× (target ≤ %.2f×): %s\n", shortRev(b.Commit), ceil2(r.Ratio), r.Target, verdict(r.Pass))
	what := "on the receive path the ledger and routing's header walk (destinations chosen and recorded with each object)"
	if b.Rev != defaultBaseline {
		what = "not only the ledger (git log " + b.Rev + "..HEAD)"
	}
	fmt.Fprintf(w, "the baseline (--baseline %s: %q) lacks all %d commits since: %s; so the ratio bounds the ledger's cost from above\n\n",
		b.Rev, b.Subject, b.CommitsSince, what)
}

func perObjectKB(bytes int64, n int) float64 { return float64(bytes) / float64(n) / 1e3 }

// cpuString lists processor seconds by program, largest first, with the
// total.
func cpuString(m map[string]float64) string {
	names := make([]string, 0, len(m))
	total := 0.0
	for k, v := range m {
		names = append(names, k)
		total += v
	}
	sort.Slice(names, func(i, j int) bool { return m[names[i]] > m[names[j]] })
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %.2f", n, m[n])
	}
	return fmt.Sprintf("[%s: total %.2f]", strings.Join(parts, ", "), total)
}

func cpusString() string { return fmt.Sprintf("%d CPUs", runtime.NumCPU()) }

// ceil2 rounds up to two decimals, so that a ratio of 1.301 against a
// ceiling of 1.3 prints as the miss it is.
func ceil2(x float64) float64 { return math.Ceil(x*100) / 100 }

// floor1 rounds down to one decimal, so that a ratio of 19.96 against a
// target of 20 prints as the miss it is (19.9), not as 20.0.
func floor1(x float64) float64 { return math.Floor(x*10) / 10 }

func verdict(pass bool) string {
	if pass {
		return "PASS"
	}
	return "MISS"
}

// secs formats run times compactly, in the order they ran.
func secs(xs []float64) string {
	out := "["
	for i, x := range xs {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%.3f", x)
	}
	return out + "] s"
}

func writeJSON(path string, s *summary) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// printQR writes the query/retrieve comparison.
func printQR(w io.Writer, r *qrResult) {
	fmt.Fprintf(w, "query/retrieve: %d objects (%.1f MB) of one study in Orthanc; the same requests to Orthanc's DIMSE and to dicomgw in front of its QIDO-RS/WADO-RS\n\n", r.Objects, float64(r.Bytes)/1e6)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tOrthanc s\tdicomgw s\t|\truns\t")
	fmt.Fprintf(tw, "C-FIND (series of the study), median\t%.3f\t%.3f\t|\t%d\t\n", r.FindOrthanc.Median, r.FindDicomgw.Median, len(r.FindDicomgw.Runs))
	fmt.Fprintf(tw, "C-MOVE (the study to storescp), median\t%.3f\t%.3f\t|\t%d\t\n", r.MoveOrthanc.Median, r.MoveDicomgw.Median, len(r.MoveDicomgw.Runs))
	tw.Flush()
	fmt.Fprintf(w, "\nC-MOVE throughput, dicomgw / Orthanc: %.2f (target ≥ %.1f): %s (%.0f vs %.0f obj/s)\n\n",
		r.MoveThroughput, r.Target, verdict(r.Pass), r.MoveDicomgw.ObjectsPerS, r.MoveOrthanc.ObjectsPerS)
}
