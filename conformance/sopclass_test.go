package conformance

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/pdu"
)

// privateSOPClass is a UUID-derived UID (PS3.5 B.2) that no registry
// knows: a stand-in for a vendor's private storage SOP class.
const privateSOPClass = "2.25.302430619862231866425463391498409214531"

// writePrivateObject writes a small Part 10 file whose data set has
// (0008,0016) = privateSOPClass, so that the command's affected SOP class,
// the presentation context's abstract syntax and the data set all agree
// (PS3.4 B.2.3 would otherwise call for A900).
func writePrivateObject(t *testing.T, dir, inst string) (path string, dataSet []byte) {
	t.Helper()
	ds := smallDataSet(privateSOPClass, inst)
	path = filepath.Join(dir, "private-"+inst+".dcm")
	writeObject(t, path, privateSOPClass, inst, ds, 0)
	return path, ds
}

// TestPrivateSOPClass: with --accept-unknown-sop-classes a private SOP
// class is negotiated as storage and its objects are stored, from our
// requestor and from storescu (which puts an unknown class on the wire
// only through an -xf profile). Without the flag, the presentation context
// is rejected with result 3, abstract syntax not supported (PS3.8
// 9.3.3.2), the association itself still being accepted.
func TestPrivateSOPClass(t *testing.T) {
	t.Parallel()
	storescu := needTool(t, "storescu")
	dcmdump := needTool(t, "dcmdump")
	dir := t.TempDir()
	profile := writeProfile(t, dir, []profileContext{{privateSOPClass, []string{tsExplicitLE}}})

	t.Run("accepted with --accept-unknown-sop-classes", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, t.TempDir(), "--accept-unknown-sop-classes")

		inst := harness.NewUID()
		ds := smallDataSet(privateSOPClass, inst)
		c := dial(t, g.Addr, "PRIVSCU", storeContext(privateSOPClass, tsExplicitLE))
		if ts, ok := c.AcceptedTransferSyntax(privateSOPClass); !ok || ts != tsExplicitLE {
			t.Fatalf("private SOP class context: accepted=%v ts=%q", ok, ts)
		}
		before := queueSnapshot(t, g.SpoolDir)
		rsp, err := c.Store(privateSOPClass, inst, tsExplicitLE, bytes.NewReader(ds))
		if err != nil {
			t.Fatal(err)
		}
		if rsp.Status != 0 {
			t.Fatalf("C-STORE of a private SOP class: status %v (%q)", rsp.Status, rsp.ErrorComment)
		}
		if err := c.Release(); err != nil {
			t.Error(err)
		}
		objs := newObjects(t, g.SpoolDir, before)
		if len(objs) != 1 {
			t.Fatalf("%d new objects, want 1", len(objs))
		}
		o := readSpooled(t, objs[0])
		checkMeta(t, o, privateSOPClass, inst, tsExplicitLE, "PRIVSCU")
		if !bytes.Equal(o.DataSet, ds) {
			t.Errorf("data set differs: %s", firstDiff(o.DataSet, ds))
		}
		checkDcmdump(t, dcmdump, o.Path)

		inst2 := harness.NewUID()
		path, ds2 := writePrivateObject(t, dir, inst2)
		before = queueSnapshot(t, g.SpoolDir)
		r := runTool(time.Minute, storescu, "-xf", profile, "P", "-aet", "PRIVSTORESCU", "-aec", calledAE, g.Host(), g.Port(), path)
		if r.Code != 0 {
			t.Fatalf("storescu with a private SOP class profile: %v", r)
		}
		objs = newObjects(t, g.SpoolDir, before)
		if len(objs) != 1 {
			t.Fatalf("%d new objects after storescu, want 1", len(objs))
		}
		o = readSpooled(t, objs[0])
		checkMeta(t, o, privateSOPClass, inst2, tsExplicitLE, "PRIVSTORESCU")
		if !bytes.Equal(o.DataSet, ds2) {
			t.Errorf("data set from storescu differs: %s", firstDiff(o.DataSet, ds2))
		}
		checkDcmdump(t, dcmdump, o.Path)
	})

	t.Run("refused by default", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, t.TempDir())

		c := dial(t, g.Addr, "PRIVSCU", storeContext(privateSOPClass, tsExplicitLE), verificationContext)
		results := map[uint8]pdu.ContextResult{}
		for _, pc := range c.Accepted().PresentationContexts {
			results[pc.ID] = pc.Result
		}
		if r, ok := results[1]; !ok || r != pdu.ContextAbstractSyntaxNotSupported {
			t.Errorf("private SOP class context (ID 1): result %v (present %v), want %v", r, ok, pdu.ContextAbstractSyntaxNotSupported)
		}
		if results[3] != pdu.ContextAcceptance {
			t.Errorf("Verification context (ID 3): result %v, want acceptance", results[3])
		}
		if _, err := c.Store(privateSOPClass, harness.NewUID(), tsExplicitLE, bytes.NewReader(smallDataSet(privateSOPClass, harness.NewUID()))); err == nil {
			t.Error("our requestor stored on a rejected presentation context")
		}
		if st, err := c.Echo(); err != nil || st != 0 {
			t.Errorf("C-ECHO on the same association: %v, %v", st, err)
		}
		if err := c.Release(); err != nil {
			t.Error(err)
		}

		path, _ := writePrivateObject(t, dir, harness.NewUID())
		r := runTool(time.Minute, storescu, "-xf", profile, "P", "-aet", "PRIVSTORESCU", "-aec", calledAE, g.Host(), g.Port(), path)
		if r.Code == 0 || !strings.Contains(r.Out, "No Acceptable Presentation Contexts") {
			t.Errorf("storescu should fail with no acceptable presentation context: %v", r)
		}
		if objs := newObjects(t, g.SpoolDir, nil); len(objs) != 0 {
			t.Errorf("objects spooled: %v", objs)
		}
	})
}
