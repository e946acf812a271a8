package conformance

// qr_move_test.go: C-MOVE through dicomgw (issue 16): movescu asks dicomgw
// to move a study held by Orthanc to a dcmtk storescp; dicomgw lists it
// with QIDO-RS, retrieves each instance with WADO-RS and stores it.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
)

func movescuRun(t *testing.T, addr, dest string, opts []string, keys ...string) string {
	t.Helper()
	host, port := splitAddr(addr)
	args := append(append([]string{"-v"}, opts...), "-S", "-aet", "MOVER", "-aec", "DICOMGW", "-aem", dest, host, port)
	for _, k := range keys {
		args = append(args, "-k", k)
	}
	out, _ := exec.Command("movescu", args...).CombinedOutput()
	return string(out)
}

// TestMoveThroughWADO: C-MOVE to storescp and C-GET to getscu, through
// dicomgw in front of Orthanc's QIDO-RS and WADO-RS.
func TestMoveThroughWADO(t *testing.T) {
	o := startOrthanc(t, nil)
	objs := studyObjects(t, t.TempDir(), 6, 64<<10)
	for _, obj := range objs {
		b, err := os.ReadFile(obj.Path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.Post("/instances", "application/dicom", b); err != nil {
			t.Fatal(err)
		}
	}
	scpDir := t.TempDir()
	scp, err := harness.StartStoreSCP(scpDir, "-aet", "STORESCP")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { scp.Kill() })
	g := startGateway(t, t.TempDir()+"/spool", "--stow-url", o.BaseURL(), "--qr-destination", "default", "--qr-page-size", "4",
		"--remote-ae", "STORESCP="+scp.Addr())

	out := movescuRun(t, g.Addr, "STORESCP", nil, "QueryRetrieveLevel=STUDY", "StudyInstanceUID="+objs[0].StudyInstanceUID)
	if !strings.Contains(out, "Final Move Response (Success)") {
		t.Fatalf("movescu:\n%s\n%s", out, harness.Tail(g.Logs(), 3000))
	}
	// Each data set the SCP received is the one Orthanc holds, byte for
	// byte.
	received := map[string][]byte{}
	files, _ := filepath.Glob(filepath.Join(scpDir, "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		received[filepath.Base(f)] = b
	}
	if len(received) != len(objs) {
		t.Fatalf("storescp received %d files, want %d", len(received), len(objs))
	}
	for _, obj := range objs {
		var got []byte
		for name, b := range received {
			if strings.HasSuffix(name, obj.SOPInstanceUID) {
				got = b
			}
		}
		if got == nil {
			t.Errorf("%s not received", obj.SOPInstanceUID)
			continue
		}
		if ds := dataSetOfFile(t, got); !bytes.Equal(ds, obj.DataSet) {
			t.Errorf("%s: the data set received differs from the one Orthanc holds: %s", obj.SOPInstanceUID, firstDiff(ds, obj.DataSet))
		}
	}

	// A series by its UID; then an unknown destination: A801.
	out = movescuRun(t, g.Addr, "STORESCP", nil, "QueryRetrieveLevel=SERIES", "StudyInstanceUID="+objs[0].StudyInstanceUID,
		"SeriesInstanceUID="+orthancSeriesOf(t, o, objs[0].SOPInstanceUID))
	if !strings.Contains(out, "Final Move Response (Success)") {
		t.Errorf("move of a series:\n%s", out)
	}
	out = movescuRun(t, g.Addr, "NOBODY", nil, "QueryRetrieveLevel=STUDY", "StudyInstanceUID="+objs[0].StudyInstanceUID)
	if !strings.Contains(out, "Final Move Response (Refused: MoveDestinationUnknown)") {
		t.Errorf("move to an unknown destination:\n%s", out)
	}
	// C-CANCEL after the first pending response.
	out = movescuRun(t, g.Addr, "STORESCP", []string{"--cancel", "1"}, "QueryRetrieveLevel=STUDY", "StudyInstanceUID="+objs[0].StudyInstanceUID)
	// The move may finish before the C-CANCEL arrives (six small
	// objects): either way the move ends cleanly, and when the cancel came
	// first the final response says so with fewer completed.
	if !strings.Contains(out, "Final Move Response (Cancel") && !strings.Contains(out, "Final Move Response (Success)") {
		t.Errorf("C-CANCEL in the middle of a move:\n%s", out)
	}
	t.Logf("C-CANCEL after the first pending response: %s", lastLine(out, "Final Move Response"))
	// C-GET of the series: the C-STOREs come back on getscu's own
	// association (it takes the SCP role), each data set Orthanc's.
	getDir := t.TempDir()
	host, port := splitAddr(g.Addr)
	gout, _ := exec.Command("getscu", "-v", "-S", "-aet", "GETTER", "-aec", "DICOMGW", "-od", getDir, host, port,
		"-k", "QueryRetrieveLevel=SERIES", "-k", "StudyInstanceUID="+objs[0].StudyInstanceUID,
		"-k", "SeriesInstanceUID="+orthancSeriesOf(t, o, objs[0].SOPInstanceUID)).CombinedOutput()
	got, _ := filepath.Glob(filepath.Join(getDir, "*"))
	if len(got) != len(objs) {
		t.Fatalf("getscu received %d files, want %d:\n%s\n%s", len(got), len(objs), gout, harness.Tail(g.Logs(), 3000))
	}
	for _, obj := range objs {
		b, err := os.ReadFile(filepath.Join(getDir, "SC."+obj.SOPInstanceUID))
		if err != nil {
			t.Errorf("C-GET: %v", err)
			continue
		}
		if ds := dataSetOfFile(t, b); !bytes.Equal(ds, obj.DataSet) {
			t.Errorf("C-GET %s: the data set differs from Orthanc's: %s", obj.SOPInstanceUID, firstDiff(ds, obj.DataSet))
		}
	}
	m, err := g.Scrape()
	if err != nil {
		t.Fatal(err)
	}
	if v := m.Get("dicomgw_qr_retrievals_total", `outcome="success"`); v < 3 {
		t.Errorf("dicomgw_qr_retrievals_total{outcome=success} = %v", v)
	}
	if v := m.Get("dicomgw_qr_retrievals_total", `outcome="refused"`); v != 1 {
		t.Errorf("dicomgw_qr_retrievals_total{outcome=refused} = %v, want 1", v)
	}
}

// orthancSeriesOf is the Series Instance UID Orthanc has for an instance.
func orthancSeriesOf(t *testing.T, o *harness.Orthanc, sop string) string {
	t.Helper()
	insts, err := o.QIDOInstances(map[string][]string{"SOPInstanceUID": {sop}, "includefield": {"0020000E"}})
	if err != nil || len(insts) != 1 {
		t.Fatalf("QIDO for %s: %v %v", sop, insts, err)
	}
	return harness.DICOMJSONString(insts[0], "0020000E")
}

// TestMoveEndpointDown: with the DICOMweb server down a C-MOVE fails at
// once with a failure status.
func TestMoveEndpointDown(t *testing.T) {
	g := startGateway(t, t.TempDir()+"/spool", "--stow-url", "http://127.0.0.1:1/dicom-web", "--qr-destination", "default",
		"--remote-ae", "STORESCP=127.0.0.1:"+strconv.Itoa(1))
	start := time.Now()
	out := movescuRun(t, g.Addr, "STORESCP", nil, "QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.2.3")
	if !strings.Contains(out, "Final Move Response") || strings.Contains(out, "Final Move Response (Success)") {
		t.Fatalf("with the endpoint down:\n%s", out)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the failure took %v", d)
	}
}

func lastLine(out, prefix string) string {
	last := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, prefix) {
			last = l
		}
	}
	return last
}
