// Package conformance drives the real dicomgw binary with real DICOM peers
// (dcmtk's storescu, dcmsend, echoscu, storescp and dcmdump, and our own
// requestor in pkg/dimse) and checks what ends up in the spool.
package conformance

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/spool"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// TestMain removes the dicomgw binary the harness built for this run.
func TestMain(m *testing.M) {
	code := m.Run()
	harness.RemoveBinary()
	os.Exit(code)
}

// calledAE is the gateway's default AE title (dicomgw serve --ae-title).
const calledAE = "DICOMGW"

// Transfer syntaxes the tests name (PS3.6 Table A-1).
const (
	tsImplicitLE = uid.ImplicitVRLittleEndian
	tsExplicitLE = uid.ExplicitVRLittleEndian
	tsExplicitBE = uid.ExplicitVRBigEndian
	tsDeflatedLE = uid.DeflatedExplicitVRLittleEndian

	sopSecondaryCapture = "1.2.840.10008.5.1.4.1.1.7"
	sopMRImage          = "1.2.840.10008.5.1.4.1.1.4"
	sopCTImage          = "1.2.840.10008.5.1.4.1.1.2"
)

// startGateway runs dicomgw on a free loopback port with spoolDir and stops
// it (SIGTERM, clean exit expected) when the test ends; on failure the end
// of its log goes into the test output.
func startGateway(t testing.TB, spoolDir string, args ...string) *harness.Gateway {
	t.Helper()
	// The default --spool-min-free (1 GiB) would make a test machine short
	// of disk refuse everything; tests about free space set it themselves.
	has := func(flag string) bool {
		return slices.ContainsFunc(args, func(a string) bool { return a == flag || strings.HasPrefix(a, flag+"=") })
	}
	if !has("--spool-min-free") {
		args = append(args, "--spool-min-free", "0")
	}
	if !has("--stow-url") && !has("--archive-dir") {
		// Tests about receiving inspect queue/: forward to an endpoint that
		// is down, retried in a day, so that every object stays queued.
		args = append(args, "--stow-url", "http://127.0.0.1:1/dicom-web", "--retry-min", "24h", "--retry-max", "48h")
	}
	g, err := harness.Start(spoolDir, args...)
	if err != nil {
		t.Fatalf("starting dicomgw: %v", err)
	}
	stopAtEnd(t, "dicomgw", g.Process, 20*time.Second, t.Errorf, func() string { return harness.Tail(g.Logs(), 12000) })
	return g
}

// stopAtEnd stops p (SIGTERM, then timeout) when the test ends, unless it
// has exited already; an unclean stop is reported through unclean (Errorf
// where it is a failure, Logf where it is not). On failure the end of its
// log goes into the test output.
func stopAtEnd(t testing.TB, name string, p *harness.Process, timeout time.Duration, unclean func(string, ...any), tail func() string) {
	t.Cleanup(func() {
		select {
		case <-p.Exited():
		default:
			if err := p.Stop(timeout); err != nil {
				unclean("%s did not stop cleanly: %v", name, err)
			}
		}
		if t.Failed() {
			t.Logf("%s log (end):\n%s", name, tail())
		}
	})
}

// spooledObject is one committed object read back from the queue.
type spooledObject struct {
	Path    string
	Meta    spool.Meta
	DataSet []byte
}

// readSpooled reads a committed object with spool.ReadMeta.
func readSpooled(t testing.TB, path string) spooledObject {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, off, err := spool.ReadMeta(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("spool.ReadMeta(%s): %v", path, err)
	}
	return spooledObject{Path: path, Meta: m, DataSet: b[off:]}
}

// queueSnapshot is the set of committed object paths.
func queueSnapshot(t testing.TB, spoolDir string) map[string]bool {
	t.Helper()
	files, err := harness.SpooledFiles(spoolDir)
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]bool, len(files))
	for _, f := range files {
		m[f] = true
	}
	return m
}

// newObjects returns the objects committed since before.
func newObjects(t testing.TB, spoolDir string, before map[string]bool) []string {
	t.Helper()
	var out []string
	for f := range queueSnapshot(t, spoolDir) {
		if !before[f] {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// noPartials fails the test if anything is left in the spool's incoming/.
func noPartials(t testing.TB, spoolDir string) {
	t.Helper()
	p, err := harness.PartialFiles(spoolDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 0 {
		t.Errorf("partial files left in incoming/: %v", p)
	}
}

// checkDcmdump runs dcmdump on a file and fails unless it parses it
// (exit 0): our Part 10 wrapper must be readable by an independent parser.
func checkDcmdump(t testing.TB, dcmdump, path string) {
	t.Helper()
	if r := runTool(60*time.Second, dcmdump, path); r.Code != 0 {
		t.Errorf("dcmdump cannot parse spooled %s: %v", path, r)
	}
}

// checkMeta compares a spooled object's record with what was sent.
func checkMeta(t testing.TB, o spooledObject, sopClass, sopInstance, ts, callingAE string) {
	t.Helper()
	m := o.Meta
	if m.SOPClassUID != sopClass || m.SOPInstanceUID != sopInstance || m.TransferSyntaxUID != ts || m.CallingAE != callingAE {
		t.Errorf("spooled %s: meta = class %q instance %q ts %q calling %q; want %q %q %q %q",
			filepath.Base(o.Path), m.SOPClassUID, m.SOPInstanceUID, m.TransferSyntaxUID, m.CallingAE,
			sopClass, sopInstance, ts, callingAE)
	}
	if m.CalledAE != calledAE {
		t.Errorf("spooled %s: called AE %q, want %q", filepath.Base(o.Path), m.CalledAE, calledAE)
	}
}

// firstDiff describes where two byte strings first differ.
func firstDiff(a, b []byte) string {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at offset %d (0x%X) of %d vs %d bytes", i, i, len(a), len(b))
		}
	}
	return fmt.Sprintf("one is a prefix of the other: %d vs %d bytes", len(a), len(b))
}

// dial opens an association with our requestor and closes it when the test
// ends (Close is a no-op after Release or Abort).
func dial(t testing.TB, addr, callingAE string, ctxs ...dimse.ProposedContext) *dimse.Client {
	t.Helper()
	c, err := dialErr(addr, callingAE, calledAE, ctxs...)
	if err != nil {
		t.Fatalf("association with %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dialErr(addr, callingAE, called string, ctxs ...dimse.ProposedContext) (*dimse.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return dimse.Dial(ctx, addr, dimse.DialConfig{
		CallingAE: callingAE, CalledAE: called, Contexts: ctxs, Timeout: 20 * time.Second,
	})
}

// verificationContext proposes C-ECHO.
var verificationContext = dimse.ProposedContext{AbstractSyntax: uid.Verification, TransferSyntaxes: []string{tsImplicitLE}}

// smallDataSet builds a minimal Explicit VR Little Endian data set with the
// given SOP Class and Instance UIDs (0008,0016)/(0008,0018) (PS3.3 C.12.1).
func smallDataSet(sopClass, sopInstance string) []byte {
	var e harness.Elements
	e.Str(0x0008, 0x0016, "UI", sopClass)
	e.Str(0x0008, 0x0018, "UI", sopInstance)
	e.Str(0x0008, 0x0060, "CS", "OT")
	e.Str(0x0010, 0x0010, "PN", "CONFORMANCE^TEST")
	e.Str(0x0010, 0x0020, "LO", "DICOMGW-0001")
	e.Str(0x0020, 0x000D, "UI", harness.NewUID())
	e.Str(0x0020, 0x000E, "UI", harness.NewUID())
	return e
}

// writeObject writes a Part 10 file of sopClass in Explicit VR Little
// Endian whose data set is dataSet followed by n zero bytes (a hole: cheap
// however large), so that dcmtk tools can send what we generate.
func writeObject(t testing.TB, path, sopClass, sopInstance string, dataSet []byte, n int64) {
	t.Helper()
	m := harness.FileMeta{MediaStorageSOPClassUID: sopClass, MediaStorageSOPInstanceUID: sopInstance, TransferSyntaxUID: tsExplicitLE}
	if _, err := harness.WritePart10(path, m, dataSet, n, nil); err != nil {
		t.Fatal(err)
	}
}

// loadCorpus reads the corpus manifest, failing when it is missing.
func loadCorpus(t testing.TB) []harness.CorpusFile {
	t.Helper()
	c, err := harness.Corpus()
	if err != nil {
		t.Fatalf("corpus manifest (%s): %v", harness.CorpusDir(), err)
	}
	if len(c) < 50 {
		t.Fatalf("corpus has %d files; the shared corpus has 55", len(c))
	}
	return c
}

// corpusFile finds a corpus file by name.
func corpusFile(t testing.TB, name string) harness.CorpusFile {
	t.Helper()
	for _, cf := range loadCorpus(t) {
		if cf.Name == name {
			return cf
		}
	}
	t.Fatalf("corpus has no %s", name)
	return harness.CorpusFile{}
}

// storescuCanSend says whether dcmtk 3.6.7 can send a corpus file at all;
// the manifest notes say "CANNOT send" for the others.
func storescuCanSend(cf harness.CorpusFile) bool {
	return !strings.Contains(cf.Notes, "CANNOT send")
}

// dataSetOf returns a corpus file's data set bytes.
func dataSetOf(t testing.TB, cf harness.CorpusFile) []byte {
	t.Helper()
	b, err := harness.DataSet(cf.Path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// storeContext proposes one storage SOP class in one transfer syntax.
func storeContext(sopClass, ts string) dimse.ProposedContext {
	return dimse.ProposedContext{AbstractSyntax: sopClass, TransferSyntaxes: []string{ts}}
}

func itoa(i int) string { return strconv.Itoa(i) }
