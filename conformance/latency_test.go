package conformance

import (
	"testing"
	"time"
)

// TestRepeatedStoreLatency sends 200 copies of a 64 kB object on one
// association (storescu --repeat) to dicomgw and to dcmtk's storescp, and
// logs both durations. storescu writes each PDU header and body in
// separate small writes; an SCP that lets the kernel delay its ACKs stalls
// each C-STORE by about 40 ms (reference/dicom-notes.md). House rule: wall
// time is measured by the benchmark, never asserted in a test; this only
// records the comparison and checks that every copy was stored.
func TestRepeatedStoreLatency(t *testing.T) {
	t.Parallel()
	storescu := needTool(t, "storescu")
	const copies = 200
	cf := corpusFile(t, "pt-explicit-le-icon-sequence.dcm") // 65 kB, explicit VR LE
	args := func(aec, host, port string) []string {
		return []string{"--repeat", "200", "-xe", "-R", "-aet", "REPEATSCU", "-aec", aec, host, port, cf.Path}
	}

	g := startGateway(t, t.TempDir())
	gw := runTool(5*time.Minute, storescu, args(calledAE, g.Host(), g.Port())...)
	if gw.Code != 0 {
		t.Fatalf("storescu --repeat to dicomgw: %v", gw)
	}
	if objs := newObjects(t, g.SpoolDir, nil); len(objs) != copies {
		t.Errorf("%d objects spooled, want %d", len(objs), copies)
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
