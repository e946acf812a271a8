package forward

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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
	// Another data set under the same SOP Instance UID: kept apart.
	s3 := s
	s3.ID, s3.Fill = "0003", 9
	o3 := writeObject(t, r.spool, s3)
	if res := deliverOne(t, r.a, o3); res.Outcome != Dead || !strings.Contains(res.Reason, "different object") {
		t.Errorf("different data set, same SOP UID: %v: %s", res.Outcome, res.Reason)
	}
	if got := fileDataSet(t, dst); !bytes.Equal(got, dataSetOf(t, o)) {
		t.Error("the archived object was overwritten")
	}
	// A different size of data set, too.
	s4 := s
	s4.ID, s4.Pixels = "0004", 100
	if res := deliverOne(t, r.a, writeObject(t, r.spool, s4)); res.Outcome != Dead {
		t.Errorf("different data set length, same SOP UID: %v: %s", res.Outcome, res.Reason)
	}
	want := []string{"archive/1.2.3/1.2.3.4/1.2.3.4.5.dcm", "spool/0001.dcm", "spool/0002.dcm", "spool/0003.dcm", "spool/0004.dcm"}
	if got := r.files(t); !slices.Equal(got, want) {
		t.Errorf("files %v, want %v", got, want)
	}
}

func TestArchiveRefusesMaliciousUIDs(t *testing.T) {
	r := newArchiveRig(t)
	long := strings.Repeat("1", 65)
	cases := []struct{ study, series, sop string }{
		{"../../x", "1.2", "1.2.3"},
		{"1.2", "../..", "1.2.3"},
		{"1.2", "1.2.3", "../../../escaped"},
		{"1.2/3", "1.2", "1.2.3"},
		{"1.2", "1.2", "1.2/3"},
		{"", "1.2", "1.2.3"},
		{"1.2", "", "1.2.3"},
		{"1.2", "1.2", ""},
		{long, "1.2", "1.2.3"},
		{"1.2", "1.2", long},
		{"..", "1.2", "1.2.3"},
		{"1.2", "1.2", ".."},
		{"1..2", "1.2", "1.2.3"},
		{"/etc", "1.2", "1.2.3"},
		{"1.2", "1.2", "1.2\x00"},
	}
	for i, c := range cases {
		o := writeObject(t, r.spool, spec{ID: string(rune('a' + i)), Study: c.study, Series: c.series, SOP: c.sop, Pixels: 64})
		if res := deliverOne(t, r.a, o); res.Outcome != Dead || !strings.Contains(res.Reason, "UID") {
			t.Errorf("study %q series %q sop %q: %v (%s), want dead", c.study, c.series, c.sop, res.Outcome, res.Reason)
		}
	}
	for _, f := range r.files(t) {
		if !strings.HasPrefix(f, "spool/") {
			t.Errorf("%s written", f)
		}
	}
	if _, err := os.Stat(r.a.Dir); !os.IsNotExist(err) {
		t.Errorf("archive directory created for nothing: %v", err)
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
	if res := deliverOne(t, r.a, o); res.Outcome != Dead {
		t.Errorf("next attempt: %v: %s, want dead (a different file holds the name)", res.Outcome, res.Reason)
	}
	if got := r.files(t); !slices.Equal(got, []string{"archive/1.2/1.2.3/1.2.3.4.dcm", "spool/0001.dcm"}) {
		t.Errorf("files %v: a temporary file left behind?", got)
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
	}
	q := newFakeQueue(objs...)
	stop := start(t, New(fastConfig(), q, r.a, nil, nil))
	waitFor(t, 5*time.Second, "every object settled", q.allDone)
	stop()
	q.checkAccounted(t, map[string]string{"0001": "delivered", "0002": "delivered", "0003": "dead"})
	if !strings.Contains(q.reason("0003"), "Series Instance UID") {
		t.Errorf("reason %q", q.reason("0003"))
	}
	want := []string{"archive/1.2/1.2.3/1.2.3.1.dcm", "archive/1.2/1.2.3/1.2.3.2.dcm", "spool/0001.dcm", "spool/0002.dcm", "spool/0003.dcm"}
	if got := r.files(t); !slices.Equal(got, want) {
		t.Errorf("files %v, want %v", got, want)
	}
}
