package conformance

// forward_helpers_test.go: what the forwarding tests share: a real Orthanc
// per test, reading the spool's states, waiting for the forwarder, and
// sending corpus files with storescu or our requestor.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
)

// startOrthanc runs a fresh Orthanc with its DICOMweb plugin (its own
// ports and storage) and stops it when the test ends. A missing Orthanc
// fails the test, naming the Debian packages: like dcmtk, it is
// interoperability evidence we do not skip.
func startOrthanc(t testing.TB, extra map[string]any) *harness.Orthanc {
	t.Helper()
	if err := harness.CheckOrthanc(); err != nil {
		t.Fatal(err)
	}
	o, err := harness.StartOrthanc(t.TempDir(), extra)
	if err != nil {
		t.Fatalf("starting Orthanc: %v", err)
	}
	stopAtEnd(t, "Orthanc", o.Process, 30*time.Second, t.Logf, func() string { return harness.Tail(o.Output(), 6000) })
	return o
}

// fastRetry are dicomgw flags that make a test's retries quick.
var fastRetry = []string{"--retry-min", "200ms", "--retry-max", "1s"}

// spoolCounts is what each directory of a spool holds.
type spoolCounts struct {
	Queued, Retry, Incoming, Dead, Reasons, Delivered int
}

func (c spoolCounts) String() string {
	return fmt.Sprintf("queue %d (.retry %d), incoming %d, dead %d (.reason %d), delivered %d",
		c.Queued, c.Retry, c.Incoming, c.Dead, c.Reasons, c.Delivered)
}

func countSpool(t testing.TB, spoolDir string) spoolCounts {
	t.Helper()
	n := func(sub, pattern string) int {
		m, err := filepath.Glob(filepath.Join(spoolDir, sub, pattern))
		if err != nil {
			t.Fatal(err)
		}
		return len(m)
	}
	return spoolCounts{
		Queued: n("queue", "*.dcm"), Retry: n("queue", "*.retry"), Incoming: n("incoming", "[^.]*"),
		Dead: n("dead", "*.dcm"), Reasons: n("dead", "*.reason"), Delivered: n("delivered", "*.dcm"),
	}
}

// waitDrained waits until the gateway's queue and incoming/ are empty
// (every object is delivered or dead-lettered) and its log has caught up.
func waitDrained(t testing.TB, g *harness.Gateway, timeout time.Duration) spoolCounts {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c := countSpool(t, g.SpoolDir)
		if c.Queued == 0 && c.Retry == 0 && c.Incoming == 0 {
			// The gateway logs a delivery just after the spool lets go of
			// the object: let the last records come through the pipe.
			for prev := -1; prev != len(g.Logs()); {
				prev = len(g.Logs())
				time.Sleep(100 * time.Millisecond)
			}
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("spool not drained after %v: %v", timeout, c)
		}
		select {
		case <-g.Exited():
			t.Fatalf("dicomgw exited (%v) with the spool not drained: %v", g.Err(), c)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stateObjects reads the objects in a state directory of the spool
// (queue, dead, delivered), keyed by spool ID.
func stateObjects(t testing.TB, spoolDir, state string) map[string]spooledObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(spoolDir, state, "*.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]spooledObject{}
	for _, f := range files {
		out[strings.TrimSuffix(filepath.Base(f), ".dcm")] = readSpooled(t, f)
	}
	return out
}

// deadReason is the "reason: " line of a dead letter's reason file.
func deadReason(t testing.TB, spoolDir, id string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(spoolDir, "dead", id+".reason"))
	if err != nil {
		t.Fatalf("dead letter %s without its reason file: %v", id, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if r, ok := strings.CutPrefix(sc.Text(), "reason: "); ok {
			return r
		}
	}
	t.Fatalf("reason file of %s has no reason line:\n%s", id, b)
	return ""
}

// dataSetOfFile returns the data set of a Part 10 file held in memory.
func dataSetOfFile(t testing.TB, file []byte) []byte {
	t.Helper()
	_, ds, err := harness.ParsePart10(file)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// spoolLs runs `dicomgw spool ls --json` with args and decodes its lines.
func spoolLs(t testing.TB, spoolDir string, args ...string) []map[string]any {
	t.Helper()
	out := dicomgwCmd(t, append([]string{"spool", "ls", "--json", "--spool-dir", spoolDir}, args...)...)
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("spool ls --json printed a line that is not JSON: %q", line)
		}
		recs = append(recs, m)
	}
	return recs
}

// dicomgwCmd runs the dicomgw binary to its end and returns its output;
// anything but exit 0 fails the test.
func dicomgwCmd(t testing.TB, args ...string) string {
	t.Helper()
	bin, err := harness.Binary()
	if err != nil {
		t.Fatal(err)
	}
	r := runTool(time.Minute, bin, args...)
	if r.Code != 0 {
		t.Fatalf("%v", r)
	}
	return r.Out
}

// storescuSend sends one corpus file with storescu in its own transfer
// syntax (storescuNegotiation) as callingAE.
func storescuSend(t testing.TB, storescu, profiles string, cf harness.CorpusFile, callingAE, addr string) harness.Result {
	t.Helper()
	host, port := splitAddr(addr)
	args := append([]string{"-aet", callingAE, "-aec", calledAE}, storescuNegotiation(t, profiles, cf.SOPClassUID, cf.TransferSyntaxUID)...)
	return runTool(2*time.Minute, storescu, append(args, host, port, cf.Path)...)
}

func splitAddr(addr string) (string, string) {
	i := strings.LastIndexByte(addr, ':')
	return addr[:i], addr[i+1:]
}

// requestorSend sends a corpus file dcmtk cannot send with our requestor,
// proposing the file's own transfer syntax with the UIDs of the manifest
// or the file meta (as TestStoreCorpus does), and returns the status and
// the SOP Instance UID it used.
func requestorSend(t testing.TB, cf harness.CorpusFile, callingAE, addr string) (dimse.Status, string) {
	t.Helper()
	fm, err := harness.ReadFileMeta(cf.Path)
	if err != nil {
		t.Fatal(err)
	}
	sop := firstNonEmpty(cf.SOPClassUID, fm.MediaStorageSOPClassUID, sopSecondaryCapture)
	inst := firstNonEmpty(cf.SOPInstanceUID, fm.MediaStorageSOPInstanceUID, harness.NewUID())
	ts := firstNonEmpty(cf.TransferSyntaxUID, fm.TransferSyntaxUID)
	c := dial(t, addr, callingAE, storeContext(sop, ts))
	rsp, err := c.Store(sop, inst, ts, bytes.NewReader(dataSetOf(t, cf)))
	if err != nil {
		t.Fatalf("%s: C-STORE: %v", cf.Name, err)
	}
	if err := c.Release(); err != nil {
		t.Errorf("%s: release: %v", cf.Name, err)
	}
	return rsp.Status, inst
}

// storeDataSet sends one data set with our requestor in Explicit VR
// Little Endian and returns the status.
func storeDataSet(t testing.TB, addr, callingAE, sopClass, sopInstance string, data []byte) dimse.Status {
	t.Helper()
	c := dial(t, addr, callingAE, storeContext(sopClass, tsExplicitLE))
	rsp, err := c.Store(sopClass, sopInstance, tsExplicitLE, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("C-STORE: %v", err)
	}
	if err := c.Release(); err != nil {
		t.Errorf("release: %v", err)
	}
	return rsp.Status
}

// deliveredRecords are the gateway's "object delivered" log records, by
// SOP Instance UID (several for a UID sent several times).
func deliveredRecords(g *harness.Gateway) map[string][]map[string]any {
	out := map[string][]map[string]any{}
	for _, r := range g.LogRecords("object delivered") {
		s, _ := r["sop_instance"].(string)
		out[s] = append(out[s], r)
	}
	return out
}

// sortedKeys returns a map's keys in order, for stable messages.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// testObject is a generated object: its file and what is in it.
type testObject struct {
	Path, SOPInstanceUID, StudyInstanceUID string
	DataSet                                []byte
}

// studyObjects writes n Secondary Capture objects of one study and series
// into dir, each with pixelBytes of Pixel Data, pseudo-random so that no
// two are alike.
func studyObjects(t testing.TB, dir string, n, pixelBytes int) []testObject {
	t.Helper()
	study, series := harness.NewUID(), harness.NewUID()
	rng := rand.New(rand.NewPCG(uint64(n), uint64(pixelBytes)))
	out := make([]testObject, n)
	for i := range out {
		inst := harness.NewUID()
		var e harness.Elements
		e.Str(0x0008, 0x0016, "UI", sopSecondaryCapture)
		e.Str(0x0008, 0x0018, "UI", inst)
		e.Str(0x0008, 0x0060, "CS", "OT")
		e.Str(0x0010, 0x0010, "PN", "FORWARD^TEST")
		e.Str(0x0010, 0x0020, "LO", "DICOMGW-FWD")
		e.Str(0x0020, 0x000D, "UI", study)
		e.Str(0x0020, 0x000E, "UI", series)
		e.Str(0x0020, 0x0013, "IS", strconv.Itoa(i+1))
		px := make([]byte, pixelBytes&^1)
		for j := 0; j+8 <= len(px); j += 8 {
			binary.LittleEndian.PutUint64(px[j:], rng.Uint64())
		}
		e.Add(0x7FE0, 0x0010, "OW", px)
		path := filepath.Join(dir, fmt.Sprintf("obj-%04d.dcm", i))
		writeObject(t, path, sopSecondaryCapture, inst, e, 0)
		out[i] = testObject{Path: path, SOPInstanceUID: inst, StudyInstanceUID: study, DataSet: e}
	}
	return out
}

// storeAll sends objects over one association with our requestor and
// fails the test unless each is acknowledged with 0000.
func storeAll(t testing.TB, addr, callingAE string, objs []testObject) {
	t.Helper()
	c := dial(t, addr, callingAE, storeContext(sopSecondaryCapture, tsExplicitLE))
	for _, o := range objs {
		rsp, err := c.Store(sopSecondaryCapture, o.SOPInstanceUID, tsExplicitLE, bytes.NewReader(o.DataSet))
		if err != nil {
			t.Fatalf("C-STORE of %s: %v", o.SOPInstanceUID, err)
		}
		if rsp.Status != dimse.StatusSuccess {
			t.Fatalf("C-STORE of %s: status %v (%q), want 0000", o.SOPInstanceUID, rsp.Status, rsp.ErrorComment)
		}
	}
	if err := c.Release(); err != nil {
		t.Errorf("release: %v", err)
	}
}

// checkArrived checks that Orthanc holds exactly objs, each with its data
// set byte for byte.
func checkArrived(t testing.TB, o *harness.Orthanc, objs []testObject) {
	t.Helper()
	inOrthanc, err := o.SOPInstanceUIDs()
	if err != nil {
		t.Fatal(err)
	}
	if len(inOrthanc) != len(objs) {
		t.Errorf("Orthanc holds %d SOP instances, want %d", len(inOrthanc), len(objs))
	}
	for _, obj := range objs {
		if inOrthanc[obj.SOPInstanceUID] == "" {
			t.Errorf("SOP instance %s is not in Orthanc", obj.SOPInstanceUID)
			continue
		}
		file, err := o.Get("/instances/" + inOrthanc[obj.SOPInstanceUID] + "/file")
		if err != nil {
			t.Error(err)
			continue
		}
		if ds := dataSetOfFile(t, file); !bytes.Equal(ds, obj.DataSet) {
			t.Errorf("SOP instance %s: Orthanc's data set differs from the one sent: %s", obj.SOPInstanceUID, firstDiff(ds, obj.DataSet))
		}
	}
}
