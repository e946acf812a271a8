package conformance

// forward_cstore_test.go: the C-STORE destination (forward.CStore) against
// two real peers, dcmtk's storescp and Orthanc's DICOM port: the corpus in
// its own transfer syntaxes, compressed ones included, arrives with its
// data sets byte for byte, under the calling AE title configured.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/forward"
)

// cstoreObject is a corpus file as the forwarder holds it once dicomgw has
// spooled it: the UIDs of its C-STORE command and its data set as it came.
type cstoreObject struct {
	name string // of the corpus file
	obj  *forward.Object
}

// spoolableCorpus is the corpus files dicomgw stores (expectedStatus is
// success: the others are refused at the door and never spooled), as
// forwarder objects whose data sets are read from the corpus files, plus
// one in Deflated Explicit VR Little Endian as a dcmtk sender delivers it
// (deflatedObject). Their calling AE titles alternate between two
// modalities.
func spoolableCorpus(t *testing.T) []cstoreObject {
	t.Helper()
	var out []cstoreObject
	for i, cf := range loadCorpus(t) {
		if expectedStatus(cf) != dimse.StatusSuccess {
			continue
		}
		fm, err := harness.ReadFileMeta(cf.Path)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cstoreObject{name: cf.Name, obj: fileObject(t, cf.Path, &forward.Object{
			ID:                fmt.Sprintf("%03d", i),
			SOPClassUID:       firstNonEmpty(cf.SOPClassUID, fm.MediaStorageSOPClassUID),
			SOPInstanceUID:    firstNonEmpty(cf.SOPInstanceUID, fm.MediaStorageSOPInstanceUID),
			TransferSyntaxUID: firstNonEmpty(cf.TransferSyntaxUID, fm.TransferSyntaxUID),
			StudyInstanceUID:  cf.StudyInstanceUID,
			CallingAE:         []string{"MODALITY_A", "MODALITY_B"}[i%2],
		})})
	}
	if len(out) < 45 {
		t.Fatalf("only %d spoolable corpus files", len(out))
	}
	return append(out, deflatedObject(t))
}

// fileObject completes o with an opener of the data set of the DICOM file
// at path and its size.
func fileObject(t *testing.T, path string, o *forward.Object) *forward.Object {
	t.Helper()
	off, err := harness.DataSetOffset(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	size := st.Size() - off
	o.DataSize, o.Received = size, time.Now()
	o.Open = func() (io.ReadCloser, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{io.NewSectionReader(f, off, size), f}, nil
	}
	return o
}

// deflatedObject is mr-explicit-le.dcm in Deflated Explicit VR Little
// Endian (PS3.5 A.5), deflated by dcmconv and, when the deflated stream
// has an odd length, padded with one NUL byte: what dcmtk's storescu puts
// on the wire (and so what dicomgw spools) for a deflated file. The
// corpus's own deflated file has an odd length, which dcmtk receivers
// refuse (refusedByStorescp).
func deflatedObject(t *testing.T) cstoreObject {
	t.Helper()
	cf := corpusFile(t, "mr-explicit-le.dcm")
	dir := t.TempDir()
	deflated, padded := filepath.Join(dir, "deflated.dcm"), filepath.Join(dir, "padded.dcm")
	if r := runTool(time.Minute, needTool(t, "dcmconv"), "+td", cf.Path, deflated); r.Code != 0 {
		t.Fatalf("dcmconv +td: %v", r)
	}
	ds, err := harness.DataSet(deflated)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds)%2 == 1 {
		ds = append(ds, 0)
	}
	head := harness.Part10Header(harness.FileMeta{MediaStorageSOPClassUID: cf.SOPClassUID, MediaStorageSOPInstanceUID: cf.SOPInstanceUID, TransferSyntaxUID: tsDeflatedLE})
	if err := os.WriteFile(padded, append(head, ds...), 0o644); err != nil {
		t.Fatal(err)
	}
	return cstoreObject{name: "mr-explicit-le.dcm deflated by dcmconv", obj: fileObject(t, padded, &forward.Object{
		ID: "999", SOPClassUID: cf.SOPClassUID, SOPInstanceUID: cf.SOPInstanceUID, TransferSyntaxUID: tsDeflatedLE,
		StudyInstanceUID: cf.StudyInstanceUID, CallingAE: "MODALITY_A",
	})}
}

// firstOfEach splits objects into the first object of each SOP Instance
// UID (one batch, one association per calling AE) and the rest (the corpus
// has one SOP Instance UID in several encodings), to send one by one.
func firstOfEach(objs []cstoreObject) (first, again []cstoreObject) {
	seen := map[string]bool{}
	for _, o := range objs {
		if seen[o.obj.SOPInstanceUID] {
			again = append(again, o)
			continue
		}
		seen[o.obj.SOPInstanceUID] = true
		first = append(first, o)
	}
	return first, again
}

// cstoreDeliver delivers objs as the forwarder would: in one batch, then
// what came back abandoned (not sent: another object of the batch ended
// the association) again at once, until every object has an outcome.
func cstoreDeliver(t *testing.T, d *forward.CStore, objs []cstoreObject) map[*forward.Object]forward.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := map[*forward.Object]forward.Result{}
	list := make([]*forward.Object, len(objs))
	for i, o := range objs {
		list[i] = o.obj
	}
	for round := 1; len(list) > 0; round++ {
		if round > 10 {
			t.Fatalf("still %d objects abandoned after 10 rounds", len(list))
		}
		rs := d.Deliver(ctx, list)
		if len(rs) != len(list) {
			t.Fatalf("%d results for %d objects", len(rs), len(list))
		}
		var again []*forward.Object
		for i, r := range rs {
			if r.Outcome == forward.Abandoned {
				again = append(again, list[i])
				continue
			}
			out[list[i]] = r
		}
		list = again
	}
	return out
}

func newCStore(t *testing.T, addr, called string, original bool) *forward.CStore {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	d, err := forward.NewCStore(forward.CStoreConfig{
		Addr: addr, CalledAE: called, CallingAE: "DICOMGW", OriginalCallingAE: original, Timeout: time.Minute,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// refusedByStorescp are the spoolable corpus files storescp (dcmtk 3.6.7,
// every transfer syntax it knows accepted with a profile, bit-preserving)
// does not take, and what becomes of them. It rejects the presentation
// context of a transfer syntax dcmtk 3.6.7 does not know: dead-lettered as
// not accepted, never sent in another syntax. It aborts the association on
// a data set of odd length, whose last fragment is odd ("DIMSE: Odd
// Fragment Length" in its log): the PixelData of dx-odd-length-pixeldata
// has an odd length, and the deflated stream of sc-deflated-explicit-le
// is 4303 bytes. Those are retried (the objects after them in the batch go
// again at once and are delivered); sent byte for byte, they never pass
// dcmtk, and end as dead letters after --retry-for.
var refusedByStorescp = map[string]forward.Result{
	"sc-htj2k-lossless-rgb.dcm": {Outcome: forward.Dead,
		Reason: "the destination does not accept Secondary Capture Image Storage (1.2.840.10008.5.1.4.1.1.7) in High-Throughput JPEG 2000 Image Compression (Lossless Only) (1.2.840.10008.1.2.4.201) (transfer-syntaxes-not-supported)"},
	"seg-deflated-image-frame-compression.dcm": {Outcome: forward.Dead,
		Reason: "the destination does not accept Segmentation Storage (1.2.840.10008.5.1.4.1.1.66.4) in Deflated Image Frame Compression (1.2.840.10008.1.2.8.1) (transfer-syntaxes-not-supported)"},
	"dx-odd-length-pixeldata.dcm": {Outcome: forward.Retry, Reason: "the destination aborted the association (source service-user, reason reason-not-specified)"},
	"sc-deflated-explicit-le.dcm": {Outcome: forward.Retry, Reason: "the destination aborted the association (source service-user, reason reason-not-specified)"},
}

// TestForwardCStoreToStorescp sends every spoolable corpus file with the
// C-STORE destination to dcmtk's storescp in bit-preserving mode (+B: it
// writes the data set exactly as it came off the wire), in the file's own
// transfer syntax — JPEG baseline, extended, lossless, JPEG-LS, JPEG 2000,
// RLE, deflate, big endian included — and checks that each received data
// set is byte-identical to the file's, that the file meta group storescp
// wrote names the right transfer syntax and the calling AE title each
// association used (the modality's with OriginalCallingAE, ours without),
// and that what storescp refuses is dead-lettered as not accepted.
func TestForwardCStoreToStorescp(t *testing.T) {
	t.Parallel()
	objs := spoolableCorpus(t)
	var classes []string
	for _, o := range objs {
		classes = append(classes, o.obj.SOPClassUID)
	}
	scp := startStorescp(t, "STORESCP", "+B", "+uf", "-xf", scpProfile(t, t.TempDir(), classes), "P")
	first, again := firstOfEach(objs)

	want := map[*forward.Object]string{} // calling AE title each object must arrive with
	results := map[*forward.Object]forward.Result{}
	// The first copy of each SOP instance in one batch (an association
	// per modality), the other copies one by one with our calling AE.
	for obj, r := range cstoreDeliver(t, newCStore(t, scp.Addr(), "STORESCP", true), first) {
		results[obj], want[obj] = r, obj.CallingAE
	}
	for obj, r := range cstoreDeliver(t, newCStore(t, scp.Addr(), "STORESCP", false), again) {
		results[obj], want[obj] = r, "DICOMGW"
	}

	// What storescp wrote: by SOP Instance UID, each file's data set and
	// meta group.
	type received struct {
		fm      harness.FileMeta
		ds      []byte
		matched bool
	}
	got := map[string][]*received{}
	entries, err := os.ReadDir(scp.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		path := filepath.Join(scp.Dir, e.Name())
		fm, err := harness.ReadFileMeta(path)
		if err != nil {
			t.Fatal(err)
		}
		ds, err := harness.DataSet(path)
		if err != nil {
			t.Fatal(err)
		}
		got[fm.MediaStorageSOPInstanceUID] = append(got[fm.MediaStorageSOPInstanceUID], &received{fm: fm, ds: ds})
	}

	var took, refused []string
	for _, o := range objs {
		r := results[o.obj]
		if w, ok := refusedByStorescp[o.name]; ok {
			refused = append(refused, fmt.Sprintf("%s (%v)", o.name, r.Outcome))
			if r.Outcome != w.Outcome || r.Reason != w.Reason {
				t.Errorf("%s: %v %q, want %v %q", o.name, r.Outcome, r.Reason, w.Outcome, w.Reason)
			}
			continue
		}
		if r.Outcome != forward.Delivered || r.Reason != "" {
			t.Errorf("%s: %v %q, want delivered", o.name, r.Outcome, r.Reason)
			continue
		}
		took = append(took, o.name)
		sent := objectData(t, o.obj)
		var match *received
		for _, g := range got[o.obj.SOPInstanceUID] {
			if !g.matched && bytes.Equal(g.ds, sent) && g.fm.TransferSyntaxUID == o.obj.TransferSyntaxUID && g.fm.SourceAETitle == want[o.obj] {
				match = g
				break
			}
		}
		if match == nil {
			var seen []string
			for _, g := range got[o.obj.SOPInstanceUID] {
				seen = append(seen, fmt.Sprintf("%s from %q (%s)", g.fm.TransferSyntaxUID, g.fm.SourceAETitle, firstDiff(g.ds, sent)))
			}
			t.Errorf("%s: storescp holds no byte-identical copy in %s from %q; it holds %d: %v",
				o.name, o.obj.TransferSyntaxUID, want[o.obj], len(seen), seen)
			continue
		}
		match.matched = true
	}
	for sop, gs := range got {
		for _, g := range gs {
			if !g.matched {
				t.Errorf("storescp received an object of SOP instance %s that matches nothing delivered", sop)
			}
		}
	}
	if len(refused) != len(refusedByStorescp) {
		t.Errorf("refused %v, want %v", refused, sortedKeys(refusedByStorescp))
	}
	sort.Strings(took)
	t.Logf("storescp took %d objects byte for byte in %d transfer syntaxes: %s", len(took), countSyntaxes(objs, took), strings.Join(took, " "))
	t.Logf("storescp refused %d: %s", len(refused), strings.Join(refused, " "))
}

// countSyntaxes is how many transfer syntaxes the named corpus files use.
func countSyntaxes(objs []cstoreObject, names []string) int {
	in := map[string]bool{}
	for _, n := range names {
		in[n] = true
	}
	ts := map[string]bool{}
	for _, o := range objs {
		if in[o.name] {
			ts[o.obj.TransferSyntaxUID] = true
		}
	}
	return len(ts)
}

// TestForwardCStoreToOrthanc sends every spoolable corpus file with the
// C-STORE destination to Orthanc's DICOM port (a second implementation
// besides dcmtk's storescp), each in its own transfer syntax, compressed
// ones included, and checks that each one Orthanc takes is stored with
// the data set sent, byte for byte (its /instances/{id}/file), under the
// calling AE title of the association (Orthanc's RemoteAET: the
// modality's with OriginalCallingAE, ours without); and that each one it
// does not take is classified as its answer says.
func TestForwardCStoreToOrthanc(t *testing.T) {
	t.Parallel()
	objs := spoolableCorpus(t)
	// OverwriteInstances: the corpus holds one SOP instance in several
	// encodings; each copy sent replaces the last, to be compared.
	// DicomScpTimeout: after a store fails, Orthanc aborts the
	// association only once it has been idle that long (30 s by default).
	o := startOrthanc(t, map[string]any{"OverwriteInstances": true, "DicomScpTimeout": 2})
	first, again := firstOfEach(objs)

	dcmconv := needTool(t, "dcmconv")
	var took, refused, reencoded, zeroFilled []string
	check := func(co cstoreObject, r forward.Result, calling string) {
		t.Helper()
		if w, ok := refusedByOrthancCStore[co.name]; ok {
			refused = append(refused, fmt.Sprintf("%s (%v)", co.name, r.Outcome))
			if r.Outcome != w.Outcome || r.Reason != w.Reason {
				t.Errorf("%s: %v %q, want %v %q", co.name, r.Outcome, r.Reason, w.Outcome, w.Reason)
			}
			if id, err := o.InstanceID(co.obj.SOPInstanceUID); err != nil || id != "" {
				t.Errorf("%s: Orthanc holds it (%q, %v) although it refused it", co.name, id, err)
			}
			return
		}
		if r.Outcome != forward.Delivered || r.Reason != "" {
			t.Errorf("%s: %v %q, want delivered", co.name, r.Outcome, r.Reason)
			return
		}
		file, err := o.InstanceFile(co.obj.SOPInstanceUID)
		if err != nil {
			t.Errorf("%s: %v", co.name, err)
			return
		}
		fm, ds, err := harness.ParsePart10(file)
		if err != nil {
			t.Errorf("%s: Orthanc's file: %v", co.name, err)
			return
		}
		sent := objectData(t, co.obj)
		switch {
		case bytes.Equal(ds, sent):
		case co.obj.TransferSyntaxUID == tsDeflatedLE && bytes.HasPrefix(ds, sent) && allZero(ds[len(sent):]):
			// Orthanc 1.10 keeps a deflated data set as it came, followed
			// by NULs up to the size of the inflated data set: the
			// deflate stream is intact (an inflater stops at its end).
			zeroFilled = append(zeroFilled, co.name)
		default:
			// Orthanc parses what it receives and writes it again with
			// dcmtk (group lengths recalculated, sequences and items of
			// explicit length). What it holds must then be exactly what
			// dcmtk 3.6.7 makes of the bytes sent.
			re := dcmtkReencode(t, dcmconv, co.obj, sent)
			if !bytes.Equal(ds, re) {
				t.Errorf("%s: Orthanc's data set differs from the one sent (%s) and from dcmtk's re-encoding of it (%s)",
					co.name, firstDiff(ds, sent), firstDiff(ds, re))
				return
			}
			reencoded = append(reencoded, co.name)
		}
		if fm.TransferSyntaxUID != co.obj.TransferSyntaxUID {
			t.Errorf("%s: Orthanc stored it in %s, sent in %s", co.name, fm.TransferSyntaxUID, co.obj.TransferSyntaxUID)
		}
		id, _ := o.InstanceID(co.obj.SOPInstanceUID)
		aet, err := o.Get("/instances/" + id + "/metadata/RemoteAET")
		if err != nil || string(aet) != calling {
			t.Errorf("%s: Orthanc's RemoteAET is %q (%v), want %q", co.name, aet, err, calling)
		}
		took = append(took, co.name)
	}
	res := cstoreDeliver(t, newCStore(t, o.DICOMAddr(), o.AETitle, true), first)
	for _, co := range first {
		check(co, res[co.obj], co.obj.CallingAE)
	}
	for _, co := range again {
		res := cstoreDeliver(t, newCStore(t, o.DICOMAddr(), o.AETitle, false), []cstoreObject{co})
		check(co, res[co.obj], "DICOMGW")
	}
	if len(refused) != len(refusedByOrthancCStore) {
		t.Errorf("refused %v, want %v", refused, sortedKeys(refusedByOrthancCStore))
	}
	sort.Strings(took)
	t.Logf("Orthanc took %d objects in %d transfer syntaxes: %s", len(took), countSyntaxes(objs, took), strings.Join(took, " "))
	t.Logf("of which it stored %d re-encoded by dcmtk and %d followed by NULs (the rest byte for byte): %s; %s",
		len(reencoded), len(zeroFilled), strings.Join(reencoded, " "), strings.Join(zeroFilled, " "))
	t.Logf("Orthanc refused %d: %s", len(refused), strings.Join(refused, " "))
}

// refusedByOrthancCStore are the spoolable corpus files Orthanc 1.10's
// DICOM port does not take, and what becomes of them. Orthanc receives
// with dcmtk 3.6.7: like storescp it aborts on a data set of odd length
// ("DIMSE: Odd Fragment Length" in its log), and it rejects the
// presentation contexts of the transfer syntaxes dcmtk 3.6.7 does not
// know — with the result "abstract syntax not supported".
var refusedByOrthancCStore = map[string]forward.Result{
	"sc-htj2k-lossless-rgb.dcm": {Outcome: forward.Dead,
		Reason: "the destination does not accept Secondary Capture Image Storage (1.2.840.10008.5.1.4.1.1.7) in High-Throughput JPEG 2000 Image Compression (Lossless Only) (1.2.840.10008.1.2.4.201) (abstract-syntax-not-supported)"},
	"seg-deflated-image-frame-compression.dcm": {Outcome: forward.Dead,
		Reason: "the destination does not accept Segmentation Storage (1.2.840.10008.5.1.4.1.1.66.4) in Deflated Image Frame Compression (1.2.840.10008.1.2.8.1) (abstract-syntax-not-supported)"},
	"dx-odd-length-pixeldata.dcm": {Outcome: forward.Retry, Reason: "the destination aborted the association (source service-user, reason reason-not-specified)"},
	"sc-deflated-explicit-le.dcm": {Outcome: forward.Retry, Reason: "the destination aborted the association (source service-user, reason reason-not-specified)"},
}

// objectData reads an object's data set through its opener: what the
// destination sent.
func objectData(t *testing.T, o *forward.Object) []byte {
	t.Helper()
	rc, err := o.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dcmtkReencode is what dcmtk (dcmconv, default options: same transfer
// syntax, explicit lengths, group lengths recalculated where present, no
// padding) writes for the data set ds of o: what Orthanc, which stores
// with the same library, makes of it.
func dcmtkReencode(t *testing.T, dcmconv string, o *forward.Object, ds []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.dcm"), filepath.Join(dir, "out.dcm")
	head := harness.Part10Header(harness.FileMeta{
		MediaStorageSOPClassUID: o.SOPClassUID, MediaStorageSOPInstanceUID: o.SOPInstanceUID, TransferSyntaxUID: o.TransferSyntaxUID,
	})
	if err := os.WriteFile(in, append(head, ds...), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runTool(time.Minute, dcmconv, in, out); r.Code != 0 {
		t.Fatalf("dcmconv: %v", r)
	}
	re, err := harness.DataSet(out)
	if err != nil {
		t.Fatal(err)
	}
	return re
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// TestForwardCStoreDamagedNeverReachesStorescp: an object whose spool copy
// fails its check part way (as the spool's reader does: an error wrapping
// forward.ErrDamaged before the last bytes) is dead-lettered as damaged,
// and storescp keeps no file of it, whole or partial: the association was
// aborted before its last fragment. The object before it is delivered,
// the one after it goes again at once and is delivered.
func TestForwardCStoreDamagedNeverReachesStorescp(t *testing.T) {
	t.Parallel()
	big := corpusFile(t, "dx-jpeg-lossless-un-vr-3mb.dcm")
	mk := func(name string) cstoreObject {
		cf := corpusFile(t, name)
		return cstoreObject{name: name, obj: fileObject(t, cf.Path, &forward.Object{
			ID: name, SOPClassUID: cf.SOPClassUID, SOPInstanceUID: cf.SOPInstanceUID, TransferSyntaxUID: cf.TransferSyntaxUID,
			StudyInstanceUID: cf.StudyInstanceUID, CallingAE: "MODALITY_A",
		})}
	}
	before, damaged, after := mk("ct-explicit-le.dcm"), mk(big.Name), mk("mr-explicit-le.dcm")
	good := damaged.obj.Open
	damaged.obj.Open = func() (io.ReadCloser, error) {
		rc, err := good()
		if err != nil {
			return nil, err
		}
		// Two thirds of the data set, then the spool's verdict.
		return struct {
			io.Reader
			io.Closer
		}{io.MultiReader(io.LimitReader(rc, damaged.obj.DataSize*2/3), failing{fmt.Errorf("%w: queue/x.dcm: CRC-32C mismatch", forward.ErrDamaged)}), rc}, nil
	}
	scp := startStorescp(t, "STORESCP", "+B", "-xf", scpProfile(t, t.TempDir(), []string{before.obj.SOPClassUID, big.SOPClassUID, after.obj.SOPClassUID}), "P")
	res := cstoreDeliver(t, newCStore(t, scp.Addr(), "STORESCP", false), []cstoreObject{before, damaged, after})
	if r := res[damaged.obj]; r.Outcome != forward.Dead || !r.Damaged || !strings.Contains(r.Reason, "CRC-32C mismatch") {
		t.Errorf("damaged object: %+v", r)
	}
	for _, o := range []cstoreObject{before, after} {
		if r := res[o.obj]; r.Outcome != forward.Delivered {
			t.Errorf("%s: %+v", o.name, r)
		}
	}
	entries, err := os.ReadDir(scp.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		files = append(files, e.Name())
		if strings.Contains(e.Name(), damaged.obj.SOPInstanceUID) {
			t.Errorf("storescp keeps %s, a file of the damaged object", e.Name())
		}
	}
	if len(files) != 2 {
		t.Errorf("storescp holds %v, want the two good objects", files)
	}
}

type failing struct{ err error }

func (f failing) Read([]byte) (int, error) { return 0, f.err }
