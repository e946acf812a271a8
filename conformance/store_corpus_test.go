package conformance

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
)

// sender sends something to an SCP at host:port called aec; the same
// sender is pointed at dicomgw and at the reference storescp.
type sender func(host, port, aec string) harness.Result

// referenceSCP is a dcmtk storescp in bit-preserving mode (+B: "write data
// exactly as read"), accepting every corpus SOP class in every transfer
// syntax dcmtk knows. What it writes after its file meta group is exactly
// the data set a sender put on the wire: the yardstick for dicomgw when
// dcmtk re-encodes a file while sending it (dcmtk parses and re-writes:
// trailing padding dropped, lengths made explicit, odd lengths padded...).
type referenceSCP struct {
	scp *harness.StoreSCP
}

func newReferenceSCP(t *testing.T, corpus []harness.CorpusFile) *referenceSCP {
	t.Helper()
	var classes []string
	for _, cf := range corpus {
		classes = append(classes, cf.SOPClassUID)
	}
	profile := scpProfile(t, t.TempDir(), classes)
	return &referenceSCP{scp: startStorescp(t, "STORESCP", "+B", "-xf", profile, "P")}
}

// capture sends with send to storescp and returns the data set and the
// transfer syntax storescp received.
func (r *referenceSCP) capture(send sender) (dataSet []byte, ts string, err error) {
	old, _ := os.ReadDir(r.scp.Dir)
	for _, e := range old {
		os.Remove(filepath.Join(r.scp.Dir, e.Name()))
	}
	res := send("127.0.0.1", fmt.Sprint(r.scp.Port), "STORESCP")
	if res.Code != 0 {
		return nil, "", fmt.Errorf("sending to storescp: %v\nstorescp output:\n%s", res, harness.Tail(r.scp.Output(), 2000))
	}
	got, _ := os.ReadDir(r.scp.Dir)
	if len(got) != 1 {
		return nil, "", fmt.Errorf("storescp wrote %d files, want 1", len(got))
	}
	path := filepath.Join(r.scp.Dir, got[0].Name())
	defer os.Remove(path)
	fm, err := harness.ReadFileMeta(path)
	if err != nil {
		return nil, "", err
	}
	ds, err := harness.DataSet(path)
	return ds, fm.TransferSyntaxUID, err
}

// byteStats counts how spooled data sets compare with what was sent.
type byteStats struct {
	identical    int      // byte-identical to the original file's data set
	viaStorescp  int      // differ from the file, identical to what storescp received
	reencodedOne []string // names of the latter
}

// check compares the data set dicomgw spooled with the file's own data set
// and, when they differ, with the data set storescp received from the same
// command. Matching neither fails the test: dicomgw must store the data set
// byte for byte as it came off the wire (PS3.10 7.1 file, data set
// unchanged; DESIGN.md).
func (s *byteStats) check(t *testing.T, name string, obj spooledObject, orig []byte, ref *referenceSCP, send sender) {
	t.Helper()
	if bytes.Equal(obj.DataSet, orig) {
		s.identical++
		return
	}
	wire, ts, err := ref.capture(send)
	if err != nil {
		t.Errorf("%s: spooled data set differs from the file (%s) and storescp could not be asked: %v", name, firstDiff(obj.DataSet, orig), err)
		return
	}
	if ts != obj.Meta.TransferSyntaxUID {
		t.Errorf("%s: storescp accepted %s but dicomgw %s: the data sets cannot be compared", name, ts, obj.Meta.TransferSyntaxUID)
		return
	}
	if !bytes.Equal(obj.DataSet, wire) {
		t.Errorf("%s: spooled data set matches neither the file (%s) nor what storescp received (%s)",
			name, firstDiff(obj.DataSet, orig), firstDiff(obj.DataSet, wire))
		return
	}
	s.viaStorescp++
	s.reencodedOne = append(s.reencodedOne, name)
}

// sendOne runs send against the gateway, expects exit 0 and exactly one new
// committed object, and returns it.
func sendOne(t *testing.T, g *harness.Gateway, send sender) spooledObject {
	t.Helper()
	before := queueSnapshot(t, g.SpoolDir)
	r := send(g.Host(), g.Port(), calledAE)
	if r.Code != 0 {
		t.Fatalf("send failed: %v", r)
	}
	objs := newObjects(t, g.SpoolDir, before)
	if len(objs) != 1 {
		t.Fatalf("%d new objects in the queue after one store, want 1 (%v)\n%v", len(objs), objs, r)
	}
	noPartials(t, g.SpoolDir)
	return readSpooled(t, objs[0])
}

// expectedStatus is what dicomgw must answer when our requestor sends a
// corpus file that dcmtk cannot send, using the UIDs of the manifest or of
// the file meta: C000 for a data set that cannot be parsed, A900 for one
// without SOP Class/Instance UID (PS3.4 B.2.3), else success.
func expectedStatus(cf harness.CorpusFile) dimse.Status {
	switch {
	case strings.Contains(cf.Notes, "DELIBERATELY MALFORMED"):
		return dimse.StatusCannotUnderstand
	case cf.SOPClassUID == "" || strings.Contains(cf.Notes, "dataset lacks SOPClassUID") || strings.Contains(cf.Notes, "dataset lacks SOPInstanceUID"):
		return dimse.StatusDataSetDoesNotMatchClass
	}
	return dimse.StatusSuccess
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// TestStoreCorpus sends every corpus file into one gateway: with storescu
// (each file in its own transfer syntax, nothing transcoded), a subset
// again with dcmsend (one file per transfer syntax), and the files dcmtk
// 3.6.7 cannot send with our own requestor. Every stored object must be a
// Part 10 file dcmdump reads, with the right record and the data set as
// sent; every refused one must get the right status and leave nothing.
func TestStoreCorpus(t *testing.T) {
	t.Parallel()
	storescu := needTool(t, "storescu")
	dcmsend := needTool(t, "dcmsend")
	dcmdump := needTool(t, "dcmdump")
	corpus := loadCorpus(t)
	g := startGateway(t, t.TempDir())
	ref := newReferenceSCP(t, corpus)
	profiles := t.TempDir()

	stored := map[string]int{} // SOP instance UID -> objects stored
	var scuStats, sendStats byteStats
	var cannot []harness.CorpusFile

	for i, cf := range corpus {
		if !storescuCanSend(cf) {
			cannot = append(cannot, cf)
			continue
		}
		t.Run("storescu/"+cf.Name, func(t *testing.T) {
			ae := fmt.Sprintf("STORESCU%02d", i)
			neg := storescuNegotiation(t, profiles, cf.SOPClassUID, cf.TransferSyntaxUID)
			send := func(host, port, aec string) harness.Result {
				args := append([]string{"-aet", ae, "-aec", aec}, neg...)
				return runTool(2*time.Minute, storescu, append(args, host, port, cf.Path)...)
			}
			obj := sendOne(t, g, send)
			stored[obj.Meta.SOPInstanceUID]++
			checkMeta(t, obj, cf.SOPClassUID, cf.SOPInstanceUID, cf.TransferSyntaxUID, ae)
			checkDcmdump(t, dcmdump, obj.Path)
			scuStats.check(t, cf.Name, obj, dataSetOf(t, cf), ref, send)
		})
	}

	// dcmsend negotiates on its own (it proposes each file's transfer
	// syntax; -dn: never decompress), and reads Part 10 files only by
	// default: one Part 10 file per transfer syntax.
	seenTS := map[string]bool{}
	for i, cf := range corpus {
		if !storescuCanSend(cf) || !cf.HasPart10 || seenTS[cf.TransferSyntaxUID] {
			continue
		}
		seenTS[cf.TransferSyntaxUID] = true
		t.Run("dcmsend/"+cf.Name, func(t *testing.T) {
			ae := fmt.Sprintf("DCMSEND%02d", i)
			send := func(host, port, aec string) harness.Result {
				return runTool(2*time.Minute, dcmsend, "-aet", ae, "-aec", aec, "-dn", host, port, cf.Path)
			}
			obj := sendOne(t, g, send)
			stored[obj.Meta.SOPInstanceUID]++
			// dcmsend may choose another uncompressed syntax than the
			// file's (it proposes them together and dicomgw takes the
			// first); compressed data must go as it is.
			wantTS := cf.TransferSyntaxUID
			if uncompressed[wantTS] && uncompressed[obj.Meta.TransferSyntaxUID] {
				wantTS = obj.Meta.TransferSyntaxUID
			}
			checkMeta(t, obj, cf.SOPClassUID, cf.SOPInstanceUID, wantTS, ae)
			checkDcmdump(t, dcmdump, obj.Path)
			sendStats.check(t, cf.Name, obj, dataSetOf(t, cf), ref, send)
		})
	}
	if len(seenTS) < 12 {
		t.Errorf("dcmsend covered %d transfer syntaxes, want every one storescu can send (>= 12)", len(seenTS))
	}

	// What dcmtk cannot send goes through our requestor, proposing the
	// file's own transfer syntax, with the UIDs of the manifest or meta.
	wantCannot := map[string]dimse.Status{
		"edge-truncated-malformed.dcm":             dimse.StatusCannotUnderstand,
		"sc-htj2k-lossless-rgb.dcm":                dimse.StatusSuccess,
		"seg-deflated-image-frame-compression.dcm": dimse.StatusSuccess,
	}
	for i, cf := range cannot {
		if w, ok := wantCannot[cf.Name]; ok && expectedStatus(cf) != w {
			t.Errorf("%s: the manifest notes give expected status %v, want %v", cf.Name, expectedStatus(cf), w)
		}
		delete(wantCannot, cf.Name)
		t.Run("requestor/"+cf.Name, func(t *testing.T) {
			fm, err := harness.ReadFileMeta(cf.Path)
			if err != nil {
				t.Fatal(err)
			}
			sop := firstNonEmpty(cf.SOPClassUID, fm.MediaStorageSOPClassUID, sopSecondaryCapture)
			inst := firstNonEmpty(cf.SOPInstanceUID, fm.MediaStorageSOPInstanceUID, harness.NewUID())
			ts := firstNonEmpty(cf.TransferSyntaxUID, fm.TransferSyntaxUID)
			want := expectedStatus(cf)
			ae := fmt.Sprintf("GOSCU%02d", i)
			data := dataSetOf(t, cf)

			before := queueSnapshot(t, g.SpoolDir)
			c := dial(t, g.Addr, ae, storeContext(sop, ts))
			rsp, err := c.Store(sop, inst, ts, bytes.NewReader(data))
			if err != nil {
				t.Fatalf("C-STORE: %v", err)
			}
			if rsp.Status != want {
				t.Errorf("status %v (%q), want %v", rsp.Status, rsp.ErrorComment, want)
			}
			if err := c.Release(); err != nil {
				t.Errorf("release after the C-STORE: %v", err)
			}
			objs := newObjects(t, g.SpoolDir, before)
			noPartials(t, g.SpoolDir)
			if want != dimse.StatusSuccess {
				if len(objs) != 0 {
					t.Errorf("refused object was spooled: %v", objs)
				}
				return
			}
			if len(objs) != 1 {
				t.Fatalf("%d new objects, want 1", len(objs))
			}
			obj := readSpooled(t, objs[0])
			stored[obj.Meta.SOPInstanceUID]++
			checkMeta(t, obj, sop, inst, ts, ae)
			checkDcmdump(t, dcmdump, obj.Path)
			if !bytes.Equal(obj.DataSet, data) {
				t.Errorf("spooled data set differs from the one sent: %s", firstDiff(obj.DataSet, data))
			}
		})
	}
	for name := range wantCannot {
		t.Errorf("%s is not marked CANNOT send in the manifest", name)
	}

	// Every success is its own file, even for one SOP Instance UID sent
	// many times (8 corpus files share one): the gateway queues, it does
	// not deduplicate or overwrite.
	total := 0
	for _, n := range stored {
		total += n
	}
	all, err := harness.SpooledFiles(g.SpoolDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != total {
		t.Errorf("queue has %d objects after %d successful stores", len(all), total)
	}
	perUID := map[string]int{}
	for _, p := range all {
		perUID[readSpooled(t, p).Meta.SOPInstanceUID]++
	}
	manifestUID := map[string]int{}
	for _, cf := range corpus {
		if cf.SOPInstanceUID != "" {
			manifestUID[cf.SOPInstanceUID]++
		}
	}
	shared := ""
	for u, n := range manifestUID {
		if n >= 8 {
			shared = u
		}
	}
	if shared == "" {
		t.Fatal("no SOP Instance UID is shared by 8 corpus files; the corpus changed")
	}
	if perUID[shared] != stored[shared] || perUID[shared] < manifestUID[shared]-1 {
		// All but edge-truncated-malformed.dcm (C000) are stored.
		t.Errorf("SOP Instance UID %s: %d objects in the queue, %d stores succeeded, %d corpus files share it",
			shared, perUID[shared], stored[shared], manifestUID[shared])
	}
	t.Logf("shared SOP Instance UID %s: %d corpus files, %d separate objects spooled", shared, manifestUID[shared], perUID[shared])

	t.Logf("storescu: %d objects; %d byte-identical to the file's data set, %d identical to what storescp (+B) received from the same command %v",
		scuStats.identical+scuStats.viaStorescp, scuStats.identical, scuStats.viaStorescp, scuStats.reencodedOne)
	t.Logf("dcmsend:  %d objects; %d byte-identical to the file's data set, %d identical to what storescp (+B) received from the same command %v",
		sendStats.identical+sendStats.viaStorescp, sendStats.identical, sendStats.viaStorescp, sendStats.reencodedOne)
}
