package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
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

	if h := s.Huge; h != nil {
		fmt.Fprintf(w, "huge object: %.1f MB in one association to a fresh dicomgw: %.2f s (%.1f MB/s)\n", float64(h.Bytes)/1e6, h.Seconds, h.MBPerS)
		fmt.Fprintf(w, "  dicomgw peak RSS (VmHWM): %.1f MB (target < %.0f MB): %s\n", float64(h.DicomgwPeakRSS)/1e6, float64(h.TargetPeakRSS)/1e6, verdict(h.Pass))
		if h.StorescuPeakRSS > 0 {
			fmt.Fprintf(w, "  storescu peak RSS (for reference): %.1f MB\n", float64(h.StorescuPeakRSS)/1e6)
		}
	} else if s.HugeSkipped != "" {
		fmt.Fprintf(w, "huge object: SKIPPED (%s)\n", s.HugeSkipped)
	}
}

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
