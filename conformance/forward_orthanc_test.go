package conformance

import (
	"bytes"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
)

// refusedByOrthanc are the corpus files dicomgw accepts but Orthanc 1.10
// (DICOMweb plugin 1.7) refuses, with the FailureReason it gives. Found by
// sending every corpus file to it: a data set without Study Instance UID
// cannot be indexed ("STOW-RS: Missing a mandatory tag in incoming DICOM
// file" in its log); it answers HTTP 400 with a DICOM JSON body that lists
// the instance in FailedSOPSequence with FailureReason 0xC000 (49152), and
// the other instances of the same request in ReferencedSOPSequence, stored.
var refusedByOrthanc = map[string]uint16{
	"sc-htj2k-lossless-rgb.dcm": 0xC000,
}

// TestForwardCorpusToOrthanc sends the whole corpus into dicomgw (storescu
// for every file it can send, in the file's own transfer syntax; our
// requestor for the rest) with a real Orthanc behind it as the STOW-RS
// endpoint, and checks that every SOP instance arrives in Orthanc (QIDO-RS
// and the REST API) with the data set dicomgw spooled for it byte for byte,
// that the spool drains, and that what Orthanc refuses ends as a dead
// letter naming Orthanc's FailureReason.
func TestForwardCorpusToOrthanc(t *testing.T) {
	t.Parallel()
	storescu := needTool(t, "storescu")
	corpus := loadCorpus(t)
	o := startOrthanc(t, nil)
	// --keep-delivered: delivered objects move to delivered/ instead of
	// being deleted, so the test can compare what was spooled with what
	// Orthanc stored.
	g := startGateway(t, t.TempDir(), append([]string{"--stow-url", o.BaseURL(), "--keep-delivered", "1h"}, fastRetry...)...)
	profiles := t.TempDir()

	// The objects Orthanc refuses go last, once the rest is delivered:
	// how dicomgw handles a refusal must not decide whether the rest
	// arrives (see the refused subtest).
	var refused []harness.CorpusFile
	accepted := map[string]bool{} // SOP Instance UIDs dicomgw acknowledged
	send := func(t *testing.T, i int, cf harness.CorpusFile) {
		ae := fmt.Sprintf("FWD%02d", i)
		if storescuCanSend(cf) {
			if r := storescuSend(t, storescu, profiles, cf, ae, g.Addr); r.Code != 0 {
				t.Errorf("%s: %v", cf.Name, r)
				return
			}
			accepted[cf.SOPInstanceUID] = true
			return
		}
		st, inst := requestorSend(t, cf, ae, g.Addr)
		if want := expectedStatus(cf); st != want {
			t.Errorf("%s via our requestor: status %v, want %v", cf.Name, st, want)
		}
		if st == dimse.StatusSuccess {
			accepted[inst] = true
		}
	}
	for i, cf := range corpus {
		if _, ok := refusedByOrthanc[cf.Name]; ok {
			refused = append(refused, cf)
			continue
		}
		send(t, i, cf)
	}
	if len(refused) != len(refusedByOrthanc) {
		t.Fatalf("corpus lacks some of %v", sortedKeys(refusedByOrthanc))
	}

	counts := waitDrained(t, g, 90*time.Second)
	if counts.Dead != 0 {
		for id, obj := range stateObjects(t, g.SpoolDir, "dead") {
			t.Errorf("dead letter %s (%s): %s", id, obj.Meta.SOPInstanceUID, deadReason(t, g.SpoolDir, id))
		}
	}
	delivered := stateObjects(t, g.SpoolDir, "delivered")
	if counts.Delivered == 0 || len(delivered) != len(g.LogRecords("object delivered")) {
		t.Errorf("%d objects in delivered/, %d \"object delivered\" log records", len(delivered), len(g.LogRecords("object delivered")))
	}

	// Every SOP instance dicomgw acknowledged is in Orthanc, and nothing
	// else is; Orthanc keeps the first copy of a SOP Instance UID it
	// receives several times.
	inOrthanc, err := o.SOPInstanceUIDs()
	if err != nil {
		t.Fatal(err)
	}
	for sop := range accepted {
		if inOrthanc[sop] == "" {
			t.Errorf("SOP instance %s was acknowledged by dicomgw but is not in Orthanc", sop)
		}
	}
	if len(inOrthanc) != len(accepted) {
		t.Errorf("Orthanc holds %d SOP instances, dicomgw acknowledged %d distinct ones", len(inOrthanc), len(accepted))
	}
	if n, err := o.CountInstances(); err != nil || n != len(accepted) {
		t.Errorf("Orthanc /statistics counts %d instances (%v), want %d", n, err, len(accepted))
	}

	// What Orthanc stored is what dicomgw spooled: the data set byte for
	// byte (Orthanc keeps the received file; dicomgw sends its own file
	// meta header and the data set as received).
	versions := map[string][][]byte{} // SOP Instance UID -> data sets spooled
	for _, obj := range delivered {
		versions[obj.Meta.SOPInstanceUID] = append(versions[obj.Meta.SOPInstanceUID], obj.DataSet)
	}
	if len(versions) != len(accepted) {
		t.Errorf("%d distinct SOP instances delivered, %d acknowledged", len(versions), len(accepted))
	}
	multi := 0
	for sop, sets := range versions {
		file, err := o.InstanceFile(sop)
		if err != nil {
			t.Errorf("%s: %v", sop, err)
			continue
		}
		got := dataSetOfFile(t, file)
		match := false
		for _, ds := range sets {
			match = match || bytes.Equal(got, ds)
		}
		if !match {
			t.Errorf("SOP instance %s: Orthanc's data set matches none of the %d spooled for it (%s against the first)", sop, len(sets), firstDiff(got, sets[0]))
		}
		if len(sets) > 1 {
			multi = max(multi, len(sets))
		}
	}
	if multi < 7 {
		t.Errorf("the SOP Instance UID shared by 8 corpus files was delivered at most %d times, want 7 (all but the malformed one)", multi)
	}

	// QIDO-RS finds each study with its instances.
	studies := map[string]int{}
	for _, cf := range corpus {
		if accepted[cf.SOPInstanceUID] && cf.StudyInstanceUID != "" {
			studies[cf.StudyInstanceUID]++
		}
	}
	for study := range studies {
		found, err := o.QIDOInstances(url.Values{"StudyInstanceUID": {study}})
		if err != nil {
			t.Errorf("QIDO-RS for study %s: %v", study, err)
			continue
		}
		for _, m := range found {
			if sop := harness.DICOMJSONString(m, "00080018"); !accepted[sop] {
				t.Errorf("QIDO-RS for study %s lists SOP instance %q, which was not sent", study, sop)
			}
		}
		if len(found) == 0 {
			t.Errorf("QIDO-RS finds nothing in study %s", study)
		}
	}
	t.Logf("%d SOP instances (%d objects, %d studies) forwarded to Orthanc, data sets identical; spool: %v",
		len(accepted), len(delivered), len(studies), counts)

	t.Run("refused", func(t *testing.T) {
		for i, cf := range refused {
			send(t, 100+i, cf)
		}
		for _, cf := range refused {
			checkRefused(t, g, o, cf, refusedByOrthanc[cf.Name])
		}
	})
}

// checkRefused waits for the object of a corpus file that the endpoint
// refuses to be dead-lettered, and checks that its reason names the
// endpoint's FailureReason and that nothing is left in the queue. Orthanc
// answers such a request with HTTP 400 and a DICOM JSON body giving the
// FailureReason per instance: that answer must be read per instance, not
// taken for a configuration error that pauses the destination.
func checkRefused(t *testing.T, g *harness.Gateway, o *harness.Orthanc, cf harness.CorpusFile, code uint16) {
	t.Helper()
	want := fmt.Sprintf("FailureReason 0x%04X", code)
	deadline := time.Now().Add(30 * time.Second)
	for {
		for id, obj := range stateObjects(t, g.SpoolDir, "dead") {
			if obj.Meta.SOPClassUID != cf.SOPClassUID || !bytes.Equal(obj.DataSet, dataSetOf(t, cf)) {
				continue
			}
			if r := deadReason(t, g.SpoolDir, id); !strings.Contains(r, want) {
				t.Errorf("%s: dead letter reason %q does not name %s", cf.Name, r, want)
			}
			if c := countSpool(t, g.SpoolDir); c.Queued != 0 || c.Retry != 0 || c.Incoming != 0 {
				t.Errorf("after the dead letter the spool is not drained: %v", c)
			}
			if id, err := o.InstanceID(obj.Meta.SOPInstanceUID); err != nil || id != "" {
				t.Errorf("%s: Orthanc has it (%q, %v) although it refused it", cf.Name, id, err)
			}
			return
		}
		if paused := g.LogRecords("destination paused: objects are kept until it accepts them again"); len(paused) > 0 {
			t.Fatalf("destination paused instead of reading the answer per instance: %v", paused[0])
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no dead letter within 30 s; spool: %v", cf.Name, countSpool(t, g.SpoolDir))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
