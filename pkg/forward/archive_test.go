package forward

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicomgw/dicomgw/pkg/uid"
)

// archiveRig is a temp tree holding a spool directory and an archive
// directory two levels down, so that a walk of the whole tree shows
// anything written outside the archive, "../.." escapes included.
type archiveRig struct {
	base, root, spool string
	a                 *Archive
}

func newArchiveRig(t *testing.T) *archiveRig {
	base := t.TempDir()
	root := filepath.Join(base, "outer", "inner")
	r := &archiveRig{base: base, root: root, spool: filepath.Join(root, "spool"),
		a: &Archive{Dir: filepath.Join(root, "archive"), ImplementationClassUID: testImplUID, ImplementationVersionName: "ARCHIVE_1"}}
	if err := os.MkdirAll(r.spool, 0o750); err != nil {
		t.Fatal(err)
	}
	return r
}

// files lists the regular files of the whole tree, relative to the root
// (a file outside it shows as "../...").
func (r *archiveRig) files(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(r.base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(r.root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func deliverOne(t *testing.T, a *Archive, o *Object) Result {
	t.Helper()
	res := a.Deliver(context.Background(), []*Object{o})
	if len(res) != 1 {
		t.Fatalf("%d results", len(res))
	}
	return res[0]
}

func TestArchiveFilesByStudySeriesSOP(t *testing.T) {
	r := newArchiveRig(t)
	s := spec{ID: "0001", Study: "1.2.3", Series: "1.2.3.4", SOP: "1.2.3.4.5", Pixels: 512, Private: true}
	o := writeObject(t, r.spool, s)
	if res := deliverOne(t, r.a, o); res.Outcome != Delivered {
		t.Fatalf("%v: %s", res.Outcome, res.Reason)
	}
	dst := filepath.Join(r.a.Dir, "1.2.3", "1.2.3.4", "1.2.3.4.5.dcm")
	checkArchived(t, dst, o)

	// The same object again (after a restart, say): delivered, untouched.
	if res := deliverOne(t, r.a, o); res.Outcome != Delivered {
		t.Errorf("same object again: %v: %s", res.Outcome, res.Reason)
	}
	// The same data set received again, with other file meta information.
	s2 := s
	s2.ID, s2.Private = "0002", false
	o2 := writeObject(t, r.spool, s2)
	if res := deliverOne(t, r.a, o2); res.Outcome != Delivered {
		t.Errorf("identical data set again: %v: %s", res.Outcome, res.Reason)
	}
	// Another data set under the same SOP Instance UID: kept beside the
	// first, under a name with its spool ID, never over it.
	s3 := s
	s3.ID, s3.Fill = "0003", 9
	o3 := writeObject(t, r.spool, s3)
	dup3 := "1.2.3/1.2.3.4/1.2.3.4.5+dup-0003.dcm"
	if res := deliverOne(t, r.a, o3); res.Outcome != Delivered || res.Filed != FiledDuplicate || res.Location != dup3 {
		t.Errorf("different data set, same SOP UID: %v %q filed %v: %s", res.Outcome, res.Location, res.Filed, res.Reason)
	}
	if got := fileDataSet(t, dst); !bytes.Equal(got, dataSetOf(t, o)) {
		t.Error("the archived object was overwritten")
	}
	if got := fileDataSet(t, filepath.Join(r.a.Dir, dup3)); !bytes.Equal(got, dataSetOf(t, o3)) {
		t.Error("the duplicate's data set differs from its spool file's")
	}
	// Filed again (a retry after a crash), or received again with another
	// spool ID: recognised, no third file.
	if res := deliverOne(t, r.a, o3); res.Outcome != Delivered || res.Location != dup3 {
		t.Errorf("the duplicate again: %v %q: %s", res.Outcome, res.Location, res.Reason)
	}
	s5 := s3
	s5.ID = "0005"
	if res := deliverOne(t, r.a, writeObject(t, r.spool, s5)); res.Outcome != Delivered || res.Location != dup3 {
		t.Errorf("the duplicate's data set with another spool ID: %v %q: %s", res.Outcome, res.Location, res.Reason)
	}
	// A different size of data set, too: a second duplicate.
	s4 := s
	s4.ID, s4.Pixels = "0004", 100
	if res := deliverOne(t, r.a, writeObject(t, r.spool, s4)); res.Outcome != Delivered || res.Filed != FiledDuplicate {
		t.Errorf("different data set length, same SOP UID: %v: %s", res.Outcome, res.Reason)
	}
	want := []string{"archive/1.2.3/1.2.3.4/1.2.3.4.5+dup-0003.dcm", "archive/1.2.3/1.2.3.4/1.2.3.4.5+dup-0004.dcm", "archive/1.2.3/1.2.3.4/1.2.3.4.5.dcm",
		"spool/0001.dcm", "spool/0002.dcm", "spool/0003.dcm", "spool/0004.dcm", "spool/0005.dcm"}
	if got := r.files(t); !slices.Equal(got, want) {
		t.Errorf("files %v, want %v", got, want)
	}
	// A spool ID unfit for a name (a file put into the queue by hand)
	// gives a duplicate no name: a dead letter, nothing written.
	s6 := s
	s6.ID, s6.Fill = "0006", 3
	o6 := writeObject(t, r.spool, s6)
	o6.ID = "../../0006"
	if res := deliverOne(t, r.a, o6); res.Outcome != Dead || !strings.Contains(res.Reason, "different object") {
		t.Errorf("duplicate with spool ID %q: %v: %s", o6.ID, res.Outcome, res.Reason)
	}
	if got := r.files(t); !slices.Equal(got, append(want, "spool/0006.dcm")) {
		t.Errorf("files %v", got)
	}
}

// TestArchiveNames: UIDs the lenient policy accepts are filed under
// "_uid-" and the UID, never as ".", "..", a hidden or option-like name,
// and never where a conforming UID's object goes; a missing Study or
// Series Instance UID under a placeholder; UIDs refused under both
// policies (a slash, a NUL, more than 64 bytes) name nothing. Nothing is
// ever written outside the archive.
func TestArchiveNames(t *testing.T) {
	r := newArchiveRig(t)
	hex64 := strings.Repeat("0123456789abcdef", 4)
	long := strings.Repeat("1", 65)
	cases := []struct {
		study, series, sop string
		want               string // path in the archive; "" for a dead letter
		filed              Filing
	}{
		{"1.2", "1.2.3", "1.2.3.4", "1.2/1.2.3/1.2.3.4.dcm", 0},
		{"1.02", "1.2.3", "01.2", "1.02/1.2.3/01.2.dcm", 0}, // leading zeros: digits and dots, named as before
		{"..", "1.2", "1.2.3", "_uid-../1.2/1.2.3.dcm", 0},
		{".", "1.2", "1.2.3", "_uid-./1.2/1.2.3.dcm", 0},
		{"1.2", "-x", "1.2.3", "1.2/_uid--x/1.2.3.dcm", 0},
		{"1.2", "1.2", "a..b", "1.2/1.2/_uid-a..b.dcm", 0},
		{"1.2.", "1.2", "1.2.4", "_uid-1.2./1.2/1.2.4.dcm", 0},
		{"1..2", "1.2", "1.2.5", "_uid-1..2/1.2/1.2.5.dcm", 0},
		{hex64, hex64, hex64, "_uid-" + hex64 + "/_uid-" + hex64 + "/_uid-" + hex64 + ".dcm", 0},
		{"1.2", "1.2", "..", "1.2/1.2/_uid-...dcm", 0},
		{"", "1.2", "1.2.6", "_no-study-uid/1.2/1.2.6.dcm", FiledNoStudy},
		{"1.2", "", "1.2.7", "1.2/_no-series-uid/1.2.7.dcm", FiledNoSeries},
		{"", "", "1.2.8", "_no-study-uid/_no-series-uid/1.2.8.dcm", FiledNoStudy | FiledNoSeries},
		// Refused when received, under either policy: never a name.
		{"../../x", "1.2", "1.2.3", "", 0},
		{"1.2", "../..", "1.2.3", "", 0},
		{"1.2", "1.2.3", "../../../escaped", "", 0},
		{"1.2/3", "1.2", "1.2.3", "", 0},
		{"/etc", "1.2", "1.2.3", "", 0},
		{"1.2", "1.2", "", "", 0},
		{long, "1.2", "1.2.3", "", 0},
		{"1.2", "1.2", long, "", 0},
		{"1.2", "1.2", "1.2\x00", "", 0},
		{"1.2", "1.2 3", "1.2.3", "", 0},
		{"1.2", "1.2", "1.2.\u00e9", "", 0},
	}
	var want []string
	for i, c := range cases {
		id := fmt.Sprintf("%04d", i)
		o := writeObject(t, r.spool, spec{ID: id, Study: c.study, Series: c.series, SOP: c.sop, Pixels: 64})
		want = append(want, "spool/"+id+".dcm")
		res := deliverOne(t, r.a, o)
		if c.want == "" {
			if res.Outcome != Dead || !strings.Contains(res.Reason, "UID") {
				t.Errorf("study %q series %q sop %q: %v (%s), want dead", c.study, c.series, c.sop, res.Outcome, res.Reason)
			}
			continue
		}
		want = append(want, "archive/"+c.want)
		if res.Outcome != Delivered || res.Location != c.want || res.Filed != c.filed {
			t.Errorf("study %q series %q sop %q: %v at %q filed %v (%s), want delivered at %q filed %v",
				c.study, c.series, c.sop, res.Outcome, res.Location, res.Filed, res.Reason, c.want, c.filed)
		}
	}
	slices.Sort(want)
	if got := r.files(t); !slices.Equal(got, want) {
		t.Errorf("files\n%v\nwant\n%v", got, want)
	}
	// No name in the archive is ".", "..", hidden or option-like.
	err := filepath.WalkDir(r.a.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == r.a.Dir {
			return err
		}
		if n := d.Name(); n == "." || n == ".." || strings.HasPrefix(n, ".") || strings.HasPrefix(n, "-") {
			t.Errorf("archive entry %q", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestArchiveNameKinds: the three kinds of names (a conforming UID's, a
// lenient UID's, a placeholder) and a duplicate's infix cannot meet.
func TestArchiveNameKinds(t *testing.T) {
	for _, v := range []string{"1.2", "0", "1.02", "_no-study-uid", "_uid-1.2", "1.2+dup-0001", "a", "..", "-", "_"} {
		n, err := archiveName(uid.StudyInstanceUID, v, noStudy)
		if err != nil {
			if uid.Check(v).Tolerable() || uid.Valid(v) == nil {
				t.Errorf("archiveName(%q): %v", v, err)
			}
			continue
		}
		switch {
		case uid.Valid(v) == nil && n != v:
			t.Errorf("archiveName(%q) = %q, want the UID itself", v, n)
		case uid.Valid(v) != nil && (!strings.HasPrefix(n, lenientPrefix) || n[len(lenientPrefix):] != v):
			t.Errorf("archiveName(%q) = %q, want %q", v, n, lenientPrefix+v)
		case n == noStudy || n == noSeries || strings.Contains(n, "+"):
			t.Errorf("archiveName(%q) = %q meets a placeholder or a duplicate's name", v, n)
		}
	}
	if n, err := archiveName(uid.StudyInstanceUID, "", noStudy); err != nil || n != noStudy {
		t.Errorf("archiveName(\"\") = %q, %v", n, err)
	}
	if _, err := archiveName(uid.SOPInstanceUID, "", ""); err == nil {
		t.Error("an empty SOP Instance UID got a name")
	}
}

// checkArchived checks an archived file: the data set of o byte for byte,
// behind a file meta header of the archive's own — the object's SOP class
// and instance, transfer syntax and calling AE, our implementation — and
// nothing of the spool's private receive record (the peer's address).
func checkArchived(t *testing.T, path string, o *Object) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fileDataSet(t, path); !bytes.Equal(got, dataSetOf(t, o)) {
		t.Errorf("%s: data set differs from the spool's", path)
	}
	off, err := dataSetOffset(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseMeta(b[132:off])
	if err != nil {
		t.Fatal(err)
	}
	for el, want := range map[uint16]string{0x0002: o.SOPClassUID, 0x0003: o.SOPInstanceUID, 0x0010: o.TransferSyntaxUID,
		0x0012: testImplUID, 0x0013: "ARCHIVE_1", 0x0016: o.CallingAE} {
		if got := m.str(el); got != want {
			t.Errorf("%s: (0002,%04X) = %q, want %q", path, el, got, want)
		}
	}
	for _, el := range []uint16{0x0100, 0x0102} {
		if _, ok := m.elems[el]; ok {
			t.Errorf("%s: the spool's private record (0002,%04X) was archived", path, el)
		}
	}
	if bytes.Contains(b, []byte("remote_addr")) || bytes.Contains(b, []byte("10.0.0.7")) {
		t.Errorf("%s: the receive record (peer address) leaked into the archive", path)
	}
}

// TestArchiveNeverArchivesDamaged: a spool copy that fails its check is
// quarantined (a damaged dead letter), and nothing is left in the archive,
// temporary files included.
func TestArchiveNeverArchivesDamaged(t *testing.T) {
	r := newArchiveRig(t)
	o := writeObject(t, r.spool, spec{ID: "0001", Study: "1.2", Series: "1.2.3", SOP: "1.2.3.4", Pixels: 300000})
	o.Open = damagedOpener(dataSetOf(t, o))
	res := deliverOne(t, r.a, o)
	if res.Outcome != Dead || !res.Damaged || !strings.Contains(res.Reason, "damaged in the spool") {
		t.Fatalf("%v damaged=%v: %s", res.Outcome, res.Damaged, res.Reason)
	}
	for _, f := range r.files(t) {
		if strings.HasPrefix(f, "archive/") {
			t.Errorf("%s written from a damaged copy", f)
		}
	}
	// The same when an earlier good copy is already archived: the
	// comparison reads the damaged copy to its end and says so.
	good := writeObject(t, r.spool, spec{ID: "0002", Study: "1.2", Series: "1.2.3", SOP: "1.2.3.4", Pixels: 300000})
	if res := deliverOne(t, r.a, good); res.Outcome != Delivered {
		t.Fatalf("%v: %s", res.Outcome, res.Reason)
	}
	if res := deliverOne(t, r.a, o); res.Outcome != Dead || !res.Damaged {
		t.Errorf("damaged copy of an archived object: %v damaged=%v: %s", res.Outcome, res.Damaged, res.Reason)
	}
}

// TestArchiveWriteDoesNotReplaceAnObjectFiledMeanwhile: another worker
// files an object under the same name while this one is being written:
// the name is taken without replacing it, and the next attempt compares.
func TestArchiveWriteDoesNotReplaceAnObjectFiledMeanwhile(t *testing.T) {
	r := newArchiveRig(t)
	o := writeObject(t, r.spool, spec{ID: "0001", Study: "1.2", Series: "1.2.3", SOP: "1.2.3.4", Pixels: 100})
	dst := filepath.Join(r.a.Dir, "1.2", "1.2.3", "1.2.3.4.dcm")
	open := o.Open
	o.Open = func() (io.ReadCloser, error) {
		if err := os.WriteFile(dst, []byte("the other object"), 0o640); err != nil {
			t.Fatal(err)
		}
		return open()
	}
	if res := deliverOne(t, r.a, o); res.Outcome != Retry {
		t.Errorf("%v: %s, want retry", res.Outcome, res.Reason)
	}
	if b, _ := os.ReadFile(dst); string(b) != "the other object" {
		t.Error("the object filed meanwhile was replaced")
	}
	o.Open = open
	if res := deliverOne(t, r.a, o); res.Outcome != Delivered || res.Filed != FiledDuplicate {
		t.Errorf("next attempt: %v filed %v: %s, want delivered beside the other object", res.Outcome, res.Filed, res.Reason)
	}
	if b, _ := os.ReadFile(dst); string(b) != "the other object" {
		t.Error("the object filed meanwhile was replaced")
	}
	if got := r.files(t); !slices.Equal(got, []string{"archive/1.2/1.2.3/1.2.3.4+dup-0001.dcm", "archive/1.2/1.2.3/1.2.3.4.dcm", "spool/0001.dcm"}) {
		t.Errorf("files %v", got)
	}
}

func TestArchiveAbandonsOnShutdown(t *testing.T) {
	r := newArchiveRig(t)
	o := writeObject(t, r.spool, spec{ID: "0001", Study: "1.2", Series: "1.2.3", SOP: "1.2.3.4", Pixels: 10})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if res := r.a.Deliver(ctx, []*Object{o}); res[0].Outcome != Abandoned {
		t.Errorf("%v, want abandoned", res[0].Outcome)
	}
	if got := r.files(t); len(got) != 1 {
		t.Errorf("files %v", got)
	}
}

// Through the Forwarder: every object of a mixed batch ends delivered or
// dead, and the malicious one writes nothing.
func TestArchiveThroughForwarder(t *testing.T) {
	r := newArchiveRig(t)
	objs := []*Object{
		writeObject(t, r.spool, spec{ID: "0001", Study: "1.2", Series: "1.2.3", SOP: "1.2.3.1", Pixels: 10}),
		writeObject(t, r.spool, spec{ID: "0002", Study: "1.2", Series: "1.2.3", SOP: "1.2.3.2", Pixels: 10}),
		writeObject(t, r.spool, spec{ID: "0003", Study: "1.2", Series: "../../../x", SOP: "1.2.3.3", Pixels: 10}),
		writeObject(t, r.spool, spec{ID: "0004", SOP: "1.2.3.4", Pixels: 10}),
		writeObject(t, r.spool, spec{ID: "0005", Study: "1.2", Series: "1.2.3", SOP: "1.2.3.1", Pixels: 10, Fill: 7}),
	}
	q := newFakeQueue(objs...)
	reg := prometheus.NewPedanticRegistry()
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewJSONHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	f := New(fastConfig(), q, r.a, log, reg)
	stop := start(t, f)
	waitFor(t, 5*time.Second, "every object settled", q.allDone)
	stop()
	q.checkAccounted(t, map[string]string{"0001": "delivered", "0002": "delivered", "0003": "dead", "0004": "delivered", "0005": "delivered"})
	if !strings.Contains(q.reason("0003"), "Series Instance UID") {
		t.Errorf("reason %q", q.reason("0003"))
	}
	want := []string{"archive/1.2/1.2.3/1.2.3.1+dup-0005.dcm", "archive/1.2/1.2.3/1.2.3.1.dcm", "archive/1.2/1.2.3/1.2.3.2.dcm",
		"archive/_no-study-uid/_no-series-uid/1.2.3.4.dcm",
		"spool/0001.dcm", "spool/0002.dcm", "spool/0003.dcm", "spool/0004.dcm", "spool/0005.dcm"}
	if got := r.files(t); !slices.Equal(got, want) {
		t.Errorf("files %v, want %v", got, want)
	}
	for reason, n := range map[string]float64{"no_study_instance_uid": 1, "no_series_instance_uid": 1, "duplicate_sop_instance_uid": 1} {
		if got := testutil.ToFloat64(f.m.filed.WithLabelValues(reason)); got != n {
			t.Errorf("dicomgw_archive_filed_apart_total{reason=%q} = %v, want %v", reason, got, n)
		}
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if !strings.Contains(out, `"location":"1.2/1.2.3/1.2.3.1+dup-0005.dcm","filed_apart":"duplicate_sop_instance_uid"`) ||
		strings.Count(out, "the archive holds a different object with this SOP Instance UID") != 1 {
		t.Errorf("log lacks the duplicate's location or warning:\n%s", out)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
