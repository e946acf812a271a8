// Command bench measures dicomgw against dcmtk's storescp as C-STORE
// receivers on loopback, with dcmtk's storescu as the sender, and checks
// the gateway's memory while it receives one object of a gigabyte or more.
// Then, end to end, it times the small set from storescu into a real
// Orthanc through dicomgw, against a direct batched STOW-RS of the same
// files (the endpoint's own limit) and against Orthanc itself used as the
// router, and checks the gateway's memory while it forwards the huge
// object with STOW-RS. On the small set it also times fan-out (the gateway
// forwarding to two STOW-RS destinations against one) and what the
// delivery ledger costs the receive (this checkout against a dicomgw built
// from a revision before the ledger).
//
//	go run ./bench [--small 500] [--large 40] [--runs 3] [--skip-huge] [--json FILE]
//	               [--skip-e2e | --e2e-only] [--e2e-runs N] [--e2e-workers 4] [--e2e-batch 50]
//	               [--skip-sets] [--skip-fanout] [--fanout-runs N]
//	               [--skip-baseline | --baseline REV] [--baseline-runs N]
//
// It is a program rather than a Go benchmark because what it measures is
// three separate processes talking over TCP, and because its output is a
// report for people and CI logs. Progress goes to stderr, the report to
// stdout.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
)

type config struct {
	small, large   int
	hugeSize       int64
	runs, scpRuns  int
	skipHuge, keep bool
	jsonPath       string
	timeout        time.Duration

	skipSets bool // skip the storescp comparison (the sets are still made for the other cases)

	// The end-to-end case.
	skipE2E, e2eOnly     bool
	e2eRuns              int
	e2eWorkers, e2eBatch int
	e2eLinger            time.Duration
	tmpfs                string // where the diagnostic tmpfs spool goes ("": none)

	// The fan-out and ledger-cost cases (on the small set).
	skipFanout, skipBaseline bool
	skipQR                   bool
	fanoutRuns, baselineRuns int
	baseline                 string // revision built as the receive before the ledger

	work string // temporary directory of this run
	bin  string // the dicomgw binary built for it
}

// Targets the gateway must meet (storescp time / dicomgw time).
const (
	smallTarget = 20.0
	largeTarget = 2.0
)

func main() {
	c := &config{}
	flag.IntVar(&c.small, "small", 500, "objects of about 64 KB in the small set (0 skips the set)")
	flag.IntVar(&c.large, "large", 40, "objects of about 7.5 MB in the large set (0 skips the set)")
	flag.Int64Var(&c.hugeSize, "huge-size", 1<<30+1<<20, "Pixel Data bytes of the huge object (rounded up to whole 32 KiB rows)")
	flag.IntVar(&c.runs, "runs", 3, "timed runs per set against dicomgw; the median is reported")
	flag.IntVar(&c.scpRuns, "scp-runs", 0, "timed runs per set against storescp (default: --runs)")
	flag.BoolVar(&c.skipHuge, "skip-huge", false, "skip the huge-object memory check")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory with the generated objects")
	flag.StringVar(&c.jsonPath, "json", "", "also write a JSON summary to `FILE`")
	flag.DurationVar(&c.timeout, "timeout", 10*time.Minute, "kill a storescu run that takes longer")
	flag.BoolVar(&c.skipE2E, "skip-e2e", false, "skip the end-to-end case (storescu -> dicomgw -> Orthanc, and forwarding the huge object)")
	flag.BoolVar(&c.e2eOnly, "e2e-only", false, "run only the end-to-end case (on the small set) and the huge-object forwarding check")
	flag.IntVar(&c.e2eRuns, "e2e-runs", 0, "timed runs of each end-to-end path; the median is reported (default: --runs)")
	flag.IntVar(&c.e2eWorkers, "e2e-workers", 4, "dicomgw --forward-workers in the end-to-end case, and the direct STOW-RS client's requests in flight")
	flag.IntVar(&c.e2eBatch, "e2e-batch", 50, "dicomgw --batch-max-instances in the end-to-end case, and the direct STOW-RS client's batch size")
	flag.DurationVar(&c.e2eLinger, "e2e-linger", 200*time.Millisecond, "dicomgw --batch-linger in the end-to-end case")
	flag.StringVar(&c.tmpfs, "e2e-tmpfs", "/dev/shm", "a tmpfs directory for a diagnostic end-to-end run of dicomgw with a non-durable spool (\"\": none)")
	flag.BoolVar(&c.skipSets, "skip-sets", false, "skip the comparison with storescp (the small and large sets)")
	flag.BoolVar(&c.skipQR, "skip-qr", false, "skip the query/retrieve case (C-FIND latency and C-MOVE throughput of the small set through dicomgw against Orthanc's own)")
	flag.BoolVar(&c.skipFanout, "skip-fanout", false, "skip the fan-out case (the small set through dicomgw to two STOW-RS sinks against one)")
	flag.BoolVar(&c.skipBaseline, "skip-baseline", false, "skip the ledger-cost case (the small set's receive against a dicomgw built from --baseline)")
	flag.IntVar(&c.fanoutRuns, "fanout-runs", 0, "timed runs of each fan-out path (one destination, two); the median is reported (default: --runs)")
	flag.StringVar(&c.baseline, "baseline", defaultBaseline, "the git `REV`ision built as the receive without the delivery ledger")
	flag.IntVar(&c.baselineRuns, "baseline-runs", 0, "timed runs of each binary in the ledger-cost case; the median is reported (default: --runs)")
	flag.Parse()
	if c.scpRuns == 0 {
		c.scpRuns = c.runs
	}
	if c.e2eRuns == 0 {
		c.e2eRuns = c.runs
	}
	if c.fanoutRuns == 0 {
		c.fanoutRuns = c.runs
	}
	if c.baselineRuns == 0 {
		c.baselineRuns = c.runs
	}
	if c.tmpfs != "" {
		if fi, err := os.Stat(c.tmpfs); err != nil || !fi.IsDir() {
			progress("no %s: the diagnostic run with a tmpfs spool is skipped", c.tmpfs)
			c.tmpfs = ""
		}
	}
	if flag.NArg() > 0 || c.small < 0 || c.large < 0 || c.runs < 1 || c.scpRuns < 1 || c.timeout <= 0 ||
		c.skipE2E && c.e2eOnly || c.e2eRuns < 1 || c.e2eWorkers < 1 || c.e2eBatch < 1 || c.e2eLinger < 0 ||
		c.fanoutRuns < 1 || c.baselineRuns < 1 || c.baseline == "" || strings.HasPrefix(c.baseline, "-") {
		flag.Usage()
		os.Exit(2)
	}

	// Ctrl-C and SIGTERM cancel ctx: storescu runs are killed through it,
	// and every other child is stopped by the defer that follows its start.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	sum, err := run(ctx, c)
	stop()
	if err == nil {
		printReport(os.Stdout, sum)
		if c.jsonPath != "" {
			err = writeJSON(c.jsonPath, sum)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// summary is everything the report and the JSON show.
type summary struct {
	Started     time.Time   `json:"started"`
	Environment environment `json:"environment"`
	Sets        []setResult `json:"sets"`
	SetsSkipped string      `json:"sets_skipped,omitempty"`
	Huge        *hugeResult `json:"huge,omitempty"`
	HugeSkipped string      `json:"huge_skipped,omitempty"`

	E2E                *e2eResult         `json:"e2e,omitempty"`
	E2ESkipped         string             `json:"e2e_skipped,omitempty"`
	HugeForward        *hugeForwardResult `json:"huge_forward,omitempty"`
	HugeForwardSkipped string             `json:"huge_forward_skipped,omitempty"`

	Fanout            *fanoutResult   `json:"fanout,omitempty"`
	FanoutSkipped     string          `json:"fanout_skipped,omitempty"`
	LedgerCost        *ledgerResult   `json:"ledger_cost,omitempty"`
	LedgerCostSkipped string          `json:"ledger_cost_skipped,omitempty"`
	QR                *qrResult       `json:"qr,omitempty"`
	QRSkipped         string          `json:"qr_skipped,omitempty"`
	HugeMove          *hugeMoveResult `json:"huge_move,omitempty"`
	HugeMoveSkipped   string          `json:"huge_move_skipped,omitempty"`
}

type environment struct {
	Go       string `json:"go"`
	Dcmtk    string `json:"dcmtk"`
	Kernel   string `json:"kernel"`
	CPU      string `json:"cpu"`
	CPUs     int    `json:"cpus"`
	Storescu string `json:"storescu_args"`
}

func run(ctx context.Context, c *config) (*summary, error) {
	for _, tool := range []string{"storescu", "storescp", "dcmdump"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found: install dcmtk (%w)", tool, err)
		}
	}
	sum := &summary{Started: time.Now().UTC(), Environment: describeEnvironment()}

	// Everything goes under one temporary directory of the system temp
	// dir, so the spools share the disk a deployment's temp dir would use
	// and one RemoveAll cleans up.
	var err error
	if c.work, err = os.MkdirTemp("", "dicomgw-bench-"); err != nil {
		return nil, err
	}
	if c.keep {
		defer progress("kept %s", c.work)
	} else {
		defer os.RemoveAll(c.work)
	}

	progress("building dicomgw")
	if c.bin, err = harness.BuildTo(ctx, c.work); err != nil {
		return nil, err
	}

	sets := []struct {
		name   string
		n      int
		g      geometry
		target float64
	}{
		{"small", c.small, smallGeometry, smallTarget},
		{"large", c.large, largeGeometry, largeTarget},
	}
	pixels := newPixelSource()
	var e2eSet *objectSet
	for _, s := range sets {
		if s.n == 0 || (c.e2eOnly || c.skipSets) && s.name != "small" {
			continue
		}
		progress("generating %d %s objects (%d bytes of pixels each)", s.n, s.name, s.g.pixelBytes())
		set, err := generateSet(ctx, filepath.Join(c.work, s.name), s.name, s.n, s.g, pixels)
		if err != nil {
			return nil, err
		}
		if s.name == "small" {
			e2eSet = &set
		}
		if c.e2eOnly || c.skipSets {
			continue
		}
		r, err := measureSet(ctx, c, set, s.target)
		if err != nil {
			return nil, err
		}
		sum.Sets = append(sum.Sets, r)
	}

	if c.skipSets {
		sum.SetsSkipped = "--skip-sets"
	}
	if err := runSmallSetCases(ctx, c, e2eSet, sum); err != nil {
		return nil, err
	}

	switch {
	case c.skipE2E:
		sum.E2ESkipped = "--skip-e2e"
	case e2eSet == nil:
		sum.E2ESkipped = "it runs on the small set: --small 0"
	default:
		progress("e2e: %d objects from storescu into Orthanc, %d runs per path; dicomgw %s",
			len(e2eSet.Files), c.e2eRuns, strings.Join(e2eSettings(c), " "))
		r, err := measureE2E(ctx, c, *e2eSet)
		if err != nil {
			return nil, err
		}
		sum.E2E = r
	}

	if c.skipHuge {
		sum.HugeSkipped = "--skip-huge"
		sum.HugeForwardSkipped = "--skip-huge"
		return sum, nil
	}
	g, err := hugeGeometry(c.hugeSize)
	if err != nil {
		return nil, err
	}
	// The object file is sparse, but the gateway writes every byte to its
	// spool: insist on room for that and some to spare.
	need := max(int64(3)<<30, 2*g.pixelBytes())
	if free, err := freeBytes(c.work); err != nil {
		return nil, err
	} else if free < need {
		sum.HugeSkipped = fmt.Sprintf("only %.1f GiB free in %s, need %.1f GiB", gib(free), os.TempDir(), gib(need))
		sum.HugeForwardSkipped = sum.HugeSkipped
		progress("SKIPPING the huge-object checks: %s", sum.HugeSkipped)
		return sum, nil
	}
	path := filepath.Join(c.work, "huge.dcm")
	progress("generating a sparse object with %d bytes of pixels", g.pixelBytes())
	size, sop, err := writeObject(path, g, harness.NewUID(), harness.NewUID(), 1, nil)
	if err != nil {
		return nil, err
	}
	if err := checkWithDcmdump(ctx, path, sop); err != nil {
		return nil, err
	}
	if c.e2eOnly {
		sum.HugeSkipped = "--e2e-only"
	} else {
		progress("huge: sending %d bytes to a fresh dicomgw", size)
		h, err := measureHuge(ctx, c, path, size)
		if err != nil {
			return nil, fmt.Errorf("huge object: %w", err)
		}
		progress("huge: %.2f s, dicomgw peak RSS %.1f MB", h.Seconds, float64(h.DicomgwPeakRSS)/1e6)
		sum.Huge = &h
	}
	if c.skipQR || c.e2eOnly {
		sum.HugeMoveSkipped = "--skip-qr or --e2e-only"
	} else {
		progress("huge: moving %d bytes from Orthanc through a fresh dicomgw (C-MOVE) to storescp", size)
		hm, err := measureHugeMove(ctx, c, path, size)
		if err != nil {
			return nil, fmt.Errorf("huge object, C-MOVE: %w", err)
		}
		progress("huge: moved in %.2f s, dicomgw peak RSS %.1f MB", hm.Seconds, float64(hm.DicomgwPeakRSS)/1e6)
		sum.HugeMove = &hm
	}
	if c.skipE2E {
		sum.HugeForwardSkipped = "--skip-e2e"
		return sum, nil
	}
	progress("huge: sending %d bytes through a fresh dicomgw to a STOW-RS sink", size)
	hf, err := measureHugeForward(ctx, c, path, sop, size)
	if err != nil {
		return nil, fmt.Errorf("huge object, forwarding: %w", err)
	}
	progress("huge: delivered after %.2f s, dicomgw peak RSS %.1f MB", hf.Seconds, float64(hf.DicomgwPeakRSS)/1e6)
	sum.HugeForward = &hf
	return sum, nil
}

// runSmallSetCases runs the fan-out, query/retrieve and ledger-cost cases
// on the small set.
func runSmallSetCases(ctx context.Context, c *config, set *objectSet, sum *summary) error {
	switch {
	case c.skipQR:
		sum.QRSkipped = "--skip-qr"
	case c.e2eOnly:
		sum.QRSkipped = "--e2e-only"
	case set == nil:
		sum.QRSkipped = "it runs on the small set: --small 0"
	default:
		progress("query/retrieve: the small set in Orthanc; findscu and movescu to Orthanc and to dicomgw in front of its DICOMweb, %d moves each", c.runs)
		r, err := measureQR(ctx, c, *set)
		if err != nil {
			return fmt.Errorf("query/retrieve: %w", err)
		}
		sum.QR = r
	}
	switch {
	case c.skipFanout:
		sum.FanoutSkipped = "--skip-fanout"
	case c.e2eOnly:
		sum.FanoutSkipped = "--e2e-only"
	case set == nil:
		sum.FanoutSkipped = "it runs on the small set: --small 0"
	default:
		progress("fan-out: %d objects from storescu through dicomgw to one STOW-RS sink, then two; %d runs each; dicomgw %s",
			len(set.Files), c.fanoutRuns, strings.Join(e2eSettings(c), " "))
		r, err := measureFanout(ctx, c, *set)
		if err != nil {
			return err
		}
		sum.Fanout = r
	}

	switch {
	case c.skipBaseline:
		sum.LedgerCostSkipped = "--skip-baseline"
	case c.e2eOnly:
		sum.LedgerCostSkipped = "--e2e-only"
	case set == nil:
		sum.LedgerCostSkipped = "it runs on the small set: --small 0"
	default:
		progress("ledger cost: building dicomgw at %s", c.baseline)
		bin, info, skip, err := buildBaseline(ctx, c)
		if err != nil {
			return err
		}
		if skip != "" {
			sum.LedgerCostSkipped = skip
			progress("SKIPPING the ledger-cost case: %s", skip)
			return nil
		}
		progress("ledger cost: %d objects into dicomgw at HEAD and at %s, %d runs each", len(set.Files), shortRev(info.Commit), c.baselineRuns)
		r, err := measureLedgerCost(ctx, c, *set, bin, info)
		if err != nil {
			return err
		}
		sum.LedgerCost = r
	}
	return nil
}

func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

func gib(n int64) float64 { return float64(n) / (1 << 30) }

// describeEnvironment records what the numbers depend on; failures to
// find a detail leave it empty rather than fail the run.
func describeEnvironment() environment {
	e := environment{Go: runtime.Version(), CPUs: runtime.NumCPU(), Storescu: strings.Join(storescuArgs, " ")}
	if out, err := exec.Command("storescu", "--version").Output(); err == nil {
		first, _, _ := strings.Cut(string(out), "\n")
		e.Dcmtk = strings.Trim(first, "$ ")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return e
}
