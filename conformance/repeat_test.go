package conformance

import (
	"bytes"
	"testing"
	"time"
)

// TestRepeatedStoreOneAssociation sends 200 copies of a 64 kB object on
// one association (storescu --repeat): dcmtk's storescu writes each PDU
// header and body in separate small writes, the pattern that stalls an SCP
// letting the kernel delay its ACKs (reference/dicom-notes.md). It checks
// that every copy is stored, each the same, all on the one association (the
// gateway's "association ended" record counts 200 stores and no failure).
// It also sends the same to dcmtk's storescp and logs both durations for
// reading; whether a store waits for a delayed ACK is a matter of time,
// which the benchmark (bench/, README "Performance") measures: the house
// asserts no wall time in tests.
func TestRepeatedStoreOneAssociation(t *testing.T) {
	t.Parallel()
	storescu := needTool(t, "storescu")
	const copies = 200
	cf := corpusFile(t, "pt-explicit-le-icon-sequence.dcm") // 65 kB, explicit VR LE
	args := func(aec, host, port string) []string {
		return []string{"--repeat", itoa(copies), "-xe", "-R", "-aet", "REPEATSCU", "-aec", aec, host, port, cf.Path}
	}

	g := startGateway(t, t.TempDir())
	gw := runTool(5*time.Minute, storescu, args(calledAE, g.Host(), g.Port())...)
	if gw.Code != 0 {
		t.Fatalf("storescu --repeat to dicomgw: %v", gw)
	}
	objs := newObjects(t, g.SpoolDir, nil)
	if len(objs) != copies {
		t.Errorf("%d objects spooled, want %d", len(objs), copies)
	}
	// storescu sends the same bytes each time (re-encoded from the file's
	// by dcmtk, which the corpus tests compare): each copy is the first.
	var first []byte
	for _, p := range objs {
		o := readSpooled(t, p)
		if first == nil {
			first = o.DataSet
		} else if !bytes.Equal(o.DataSet, first) {
			t.Errorf("%s: the spooled data set differs from the first copy's", p)
		}
	}
	rec, err := g.WaitLog("association ended", 10*time.Second, func(r map[string]any) bool { return r["calling_ae"] == "REPEATSCU" })
	if err != nil {
		t.Fatal(err)
	}
	if rec["stores"] != float64(copies) || rec["store_failures"] != 0.0 || rec["outcome"] != "released" {
		t.Errorf("association ended: stores %v, store_failures %v, outcome %v; want %d on one association, 0, released",
			rec["stores"], rec["store_failures"], rec["outcome"], copies)
	}

	scp := startStorescp(t, "STORESCP", "--ignore")
	ref := runTool(5*time.Minute, storescu, args("STORESCP", "127.0.0.1", itoa(scp.Port))...)
	if ref.Code != 0 {
		t.Fatalf("storescu --repeat to storescp: %v", ref)
	}
	t.Logf("%d x %d bytes on one association: dicomgw %v (%v per object), storescp --ignore %v (%v per object); storescp/dicomgw = %.1f",
		copies, cf.Bytes, gw.Elapsed.Round(time.Millisecond), (gw.Elapsed / copies).Round(time.Microsecond),
		ref.Elapsed.Round(time.Millisecond), (ref.Elapsed / copies).Round(time.Microsecond),
		float64(ref.Elapsed)/float64(gw.Elapsed))
}
