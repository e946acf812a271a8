package conformance

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dcmhead"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// TestForwardArchive: with no --stow-url, dicomgw files what it receives
// under --archive-dir as <study>/<series>/<sop>.dcm, data sets as spooled.
//
// It never acknowledges an object and then drops it. Peer-supplied UIDs
// that cannot name anything ("../../x" as Study Instance UID, "1/2" as
// Series Instance UID) get C000 and are not spooled. An object without a
// Study or Series Instance UID gets 0000 and is filed under the
// placeholders _no-study-uid and _no-series-uid; a second object with the
// SOP Instance UID of an archived one but other bytes is filed beside it
// as <sop>+dup-<spool id>.dcm, while the same bytes again count as
// delivered and add no file.
//
// And when the archive cannot take an object (an operator left a file
// where a study directory must go), it is retried until --retry-for, then
// dead-lettered with a reason that `dicomgw spool ls` shows; once the
// operator has cleared the way, `dicomgw spool retry --all` re-queues it
// and it is filed.
func TestForwardArchive(t *testing.T) {
	t.Parallel()
	storescu := needTool(t, "storescu")
	root := t.TempDir()
	spoolDir := filepath.Join(root, "spool")
	// Two levels down, so that "<archive>/../../x" would land inside root,
	// where the walk below looks.
	archive := filepath.Join(root, "data", "archive")
	if err := os.MkdirAll(archive, 0o755); err != nil {
		t.Fatal(err)
	}
	// The operator's mistake: a file where a study's directory must go.
	blockedStudy := harness.NewUID()
	blocker := filepath.Join(archive, blockedStudy)
	if err := os.WriteFile(blocker, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, spoolDir, append([]string{"--archive-dir", archive, "--keep-delivered", "1h", "--retry-for", "2s"}, fastRetry...)...)
	if rec, err := g.WaitLog("dicomgw listening", 5*time.Second, nil); err != nil || rec["destinations"] != "default=file://"+archive {
		t.Fatalf("destinations %v (%v), want default=file://%s", rec["destinations"], err, archive)
	}

	// A few corpus files: several transfer syntaxes, one without a file
	// meta header.
	files := []string{"mr-explicit-le.dcm", "us-rgb-explicit-be.dcm", "ct-jpeg-ls-near-lossless.dcm", "sc-deflated-explicit-le.dcm", "rtstruct-implicit-le-no-meta.dcm"}
	profiles := t.TempDir()
	want := map[string]string{} // archive path -> what was sent
	sent := map[string][]byte{} // archive path -> data set sent, where the test made it
	for i, name := range files {
		cf := corpusFile(t, name)
		if r := storescuSend(t, storescu, profiles, cf, fmt.Sprintf("ARCH%02d", i), g.Addr); r.Code != 0 {
			t.Fatalf("%s: %v", name, r)
		}
		p := filepath.Join(cf.StudyInstanceUID, seriesOf(t, cf), cf.SOPInstanceUID+".dcm")
		want[p] = name // its data set as spooled: storescu re-encodes some
	}

	// Hostile UIDs, in otherwise valid data sets whose SOP Class and
	// Instance UIDs match the command: refused before 0000.
	for _, h := range []struct{ name, study, series, comment string }{
		{"study ../../x", "../../x", harness.NewUID(), "Study Instance UID has a slash"},
		{"series 1/2", harness.NewUID(), "1/2", "Series Instance UID has a slash"},
	} {
		inst := harness.NewUID()
		c := dial(t, g.Addr, "HOSTILE", storeContext(sopSecondaryCapture, tsExplicitLE))
		rsp, err := c.Store(sopSecondaryCapture, inst, tsExplicitLE, bytes.NewReader(uidDataSet(inst, h.study, h.series)))
		if err != nil {
			t.Fatal(err)
		}
		if rsp.Status != dimse.StatusCannotUnderstand || rsp.ErrorComment != h.comment {
			t.Errorf("%s: C-STORE status %v (%q), want C000 (%q)", h.name, rsp.Status, rsp.ErrorComment, h.comment)
		}
		c.Release()
	}

	// Without a Study or a Series Instance UID: 0000, then filed under
	// the placeholders.
	store := func(name, inst, study, series, path string) {
		t.Helper()
		ds := uidDataSet(inst, study, series)
		if st := storeDataSet(t, g.Addr, "PLACEHOLD", sopSecondaryCapture, inst, ds); st != dimse.StatusSuccess {
			t.Fatalf("%s: C-STORE status %v, want 0000", name, st)
		}
		if path != "" {
			want[path], sent[path] = name, ds
		}
	}
	study, series := harness.NewUID(), harness.NewUID()
	noStudy, noSeries, neither := harness.NewUID(), harness.NewUID(), harness.NewUID()
	store("no study", noStudy, "", series, filepath.Join("_no-study-uid", series, noStudy+".dcm"))
	store("no series", noSeries, study, "", filepath.Join(study, "_no-series-uid", noSeries+".dcm"))
	store("neither", neither, "", "", filepath.Join("_no-study-uid", "_no-series-uid", neither+".dcm"))
	// The object of the blocked study.
	blockedInst := harness.NewUID()
	blockedSeries := harness.NewUID()
	store("blocked", blockedInst, blockedStudy, blockedSeries, "")

	// The same SOP Instance UID twice with other bytes, each sent twice.
	dupInst := harness.NewUID()
	first := uidDataSet(dupInst, study, series)
	store("first", dupInst, study, series, filepath.Join(study, series, dupInst+".dcm"))
	if _, err := g.WaitLog("object delivered", 30*time.Second, func(r map[string]any) bool { return r["sop_instance"] == dupInst }); err != nil {
		t.Fatal(err)
	}
	second := uidDataSetNamed(dupInst, study, series, "OTHER^OBJECT")
	for _, ds := range [][]byte{second, first, second} {
		if st := storeDataSet(t, g.Addr, "DUPLICATE", sopSecondaryCapture, dupInst, ds); st != dimse.StatusSuccess {
			t.Fatalf("same SOP Instance UID again: C-STORE status %v, want 0000", st)
		}
	}

	// The blocked object is retried until --retry-for (2 s), then dead.
	deadline := time.Now().Add(30 * time.Second)
	for len(g.LogRecords("object dead-lettered")) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the blocked object was not dead-lettered within 30 s; spool: %v", countSpool(t, spoolDir))
		}
		time.Sleep(50 * time.Millisecond)
	}
	c := waitDrained(t, g, 30*time.Second)
	wantDelivered := len(files) + 3 + 4 // the corpus, the placeholders, the four objects with dupInst
	if c.Delivered != wantDelivered || c.Dead != 1 || c.Reasons != 1 {
		t.Fatalf("spool: %v; want %d delivered and 1 dead letter with its reason", c, wantDelivered)
	}
	// The second data set is kept beside the first, once: its name has
	// the spool ID of its first receipt.
	var dupPath string
	for _, r := range g.LogRecords("object delivered") {
		if loc, _ := r["location"].(string); r["sop_instance"] == dupInst && strings.Contains(loc, "+dup-") {
			if r["filed_apart"] != "duplicate_sop_instance_uid" {
				t.Errorf("duplicate's delivery log record: %v", r)
			}
			if dupPath == "" {
				dupPath = loc
			} else if loc != dupPath {
				t.Errorf("the second data set filed twice: %s and %s", dupPath, loc)
			}
		}
	}
	if wantName := dupInst + "+dup-"; !strings.HasPrefix(filepath.Base(dupPath), wantName) || filepath.Dir(dupPath) != filepath.Join(study, series) {
		t.Errorf("the second data set was filed as %q, want %s/%s/%s<spool id>.dcm", dupPath, study, series, wantName)
	}
	want[dupPath], sent[dupPath] = "second", second
	if n := len(g.LogRecords("the archive holds a different object with this SOP Instance UID: this one is kept beside it, for an operator to decide")); n != 2 {
		t.Errorf("%d warnings about the duplicate, want 2 (both receipts of the second data set)", n)
	}

	// The dead letter names the archive's trouble, and spool ls shows it.
	checkBlockedDead := func() {
		t.Helper()
		dead := stateObjects(t, spoolDir, "dead")
		for id, obj := range dead {
			if obj.Meta.SOPInstanceUID != blockedInst {
				t.Errorf("unexpected dead letter %s (%s): %s", id, obj.Meta.SOPInstanceUID, deadReason(t, spoolDir, id))
				continue
			}
			if r := deadReason(t, spoolDir, id); !strings.Contains(r, "not a directory") || !strings.Contains(r, "still failing") {
				t.Errorf("dead letter reason %q does not say why", r)
			} else {
				t.Logf("dead letter reason: %s", r)
			}
		}
		ls := spoolLs(t, spoolDir, "--state", "dead")
		if len(ls) != 1 || ls[0]["sop_instance_uid"] != blockedInst || ls[0]["study_instance_uid"] != blockedStudy || ls[0]["calling_ae"] != "PLACEHOLD" {
			t.Errorf("spool ls --state dead: %v", ls)
		}
	}
	checkBlockedDead()

	// The operator clears the way and re-queues: the forwarder's rescan
	// (every 30 s) picks it up and files it.
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	out := dicomgwCmd(t, "spool", "retry", "--all", "--spool-dir", spoolDir)
	if strings.TrimSpace(out) != "re-queued 1 dead letter(s)" {
		t.Errorf("spool retry --all printed %q", out)
	}
	if c := countSpool(t, spoolDir); c.Queued+c.Delivered != wantDelivered+1 || c.Dead != 0 {
		t.Errorf("right after spool retry --all: %v; want the dead letter queued", c)
	}
	blockedPath := filepath.Join(blockedStudy, blockedSeries, blockedInst+".dcm")
	if _, err := g.WaitLog("object delivered", 45*time.Second, func(r map[string]any) bool { return r["location"] == blockedPath }); err != nil {
		t.Fatalf("re-queued dead letter not filed within 45 s (the rescan interval is 30 s): %v", countSpool(t, spoolDir))
	}
	want[blockedPath], sent[blockedPath] = "blocked", uidDataSet(blockedInst, blockedStudy, blockedSeries)
	if c := waitDrained(t, g, 10*time.Second); c.Dead != 0 || c.Delivered != wantDelivered+1 {
		t.Errorf("after retry --all: %v", c)
	}

	// The archive: exactly these files, each data set as sent and as
	// spooled, with file meta naming its SOP instance.
	delivered := map[string]bool{}
	for _, obj := range stateObjects(t, spoolDir, "delivered") {
		delivered[string(obj.DataSet)] = true
	}
	archived := checkArchiveLayout(t, archive)
	if len(archived) != len(want) {
		t.Errorf("archive holds %d files, want %d: %v", len(archived), len(want), archived)
	}
	for p, name := range want {
		if _, ok := archived[p]; !ok {
			t.Errorf("%s is not in the archive as %s", name, p)
			continue
		}
		ds, err := harness.DataSet(filepath.Join(archive, p))
		if err != nil {
			t.Fatal(err)
		}
		if sent[p] != nil && !bytes.Equal(ds, sent[p]) || !delivered[string(ds)] {
			t.Errorf("%s: archived data set differs from the one sent (or spooled)", name)
		}
		fm, err := harness.ReadFileMeta(filepath.Join(archive, p))
		if err != nil || fm.MediaStorageSOPInstanceUID != archived[p] {
			t.Errorf("%s: archived file meta %+v (%v)", name, fm, err)
		}
	}
	checkConfined(t, root, spoolDir, archive)
}

// seriesOf reads a corpus file's Series Instance UID (the manifest has the
// study's only).
func seriesOf(t *testing.T, cf harness.CorpusFile) string {
	t.Helper()
	ds := dataSetOf(t, cf)
	ts, ok := uid.LookupTransferSyntax(cf.TransferSyntaxUID)
	if !ok {
		t.Fatalf("%s: transfer syntax %s", cf.Name, cf.TransferSyntaxUID)
	}
	enc := map[uid.Encoding]dcmhead.Encoding{
		uid.EncodingImplicitVRLittleEndian: dcmhead.ImplicitVRLittleEndian, uid.EncodingExplicitVRLittleEndian: dcmhead.ExplicitVRLittleEndian,
		uid.EncodingExplicitVRBigEndian: dcmhead.ExplicitVRBigEndian, uid.EncodingDeflatedExplicitVRLittleEndian: dcmhead.DeflatedExplicitVRLittleEndian,
	}[ts.Encoding]
	sum, err := dcmhead.Walk(bytes.NewReader(ds), 0, int64(len(ds)), enc)
	if err != nil || sum.SeriesInstanceUID == "" {
		t.Fatalf("%s: series %q (%v)", cf.Name, sum.SeriesInstanceUID, err)
	}
	return sum.SeriesInstanceUID
}

// checkArchiveLayout walks the archive and checks that every entry is
// <study>/<series>/<sop>.dcm or <study>/<series>/<sop>+dup-<spool id>.dcm,
// each name a UID of digits and dots, "_uid-" and a UID the lenient policy
// accepts, or (study and series) a placeholder; it returns the files, as
// paths relative to the archive, with the SOP Instance UID their name says.
func checkArchiveLayout(t *testing.T, archive string) map[string]string {
	t.Helper()
	name := func(n string, placeholder string) (string, bool) {
		switch {
		case n == placeholder && placeholder != "":
			return "", true
		case uid.Valid(n) == nil:
			return n, true
		case strings.HasPrefix(n, "_uid-") && uid.Check(n[5:]).Tolerable():
			return n[5:], true
		}
		return "", false
	}
	out := map[string]string{}
	err := filepath.WalkDir(archive, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(archive, p)
		if rel == "." {
			return nil
		}
		parts := strings.Split(rel, string(filepath.Separator))
		last := parts[len(parts)-1]
		switch {
		case d.IsDir() && len(parts) == 1:
			if _, ok := name(last, "_no-study-uid"); ok {
				return nil
			}
		case d.IsDir() && len(parts) == 2:
			if _, ok := name(last, "_no-series-uid"); ok {
				return nil
			}
		case d.Type().IsRegular() && len(parts) == 3 && strings.HasSuffix(last, ".dcm"):
			base := strings.TrimSuffix(last, ".dcm")
			if i := strings.Index(base, "+dup-"); i > 0 {
				base = base[:i]
			}
			if sop, ok := name(base, ""); ok {
				out[rel] = sop
				return nil
			}
		}
		t.Errorf("archive entry %s is not <study>/<series>/<sop>.dcm as the README describes", rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkConfined walks everything under root and fails on any entry
// outside the spool and the archive (and the archive's parents).
func checkConfined(t *testing.T, root, spoolDir, archive string) {
	t.Helper()
	allowed := map[string]bool{root: true}
	for d := archive; d != root && d != "/"; d = filepath.Dir(d) {
		allowed[d] = true
	}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if allowed[p] || p == spoolDir || strings.HasPrefix(p, spoolDir+string(filepath.Separator)) ||
			strings.HasPrefix(p, archive+string(filepath.Separator)) {
			return nil
		}
		t.Errorf("%s was created outside the spool and the archive", p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(filepath.Dir(root), "x")); err == nil {
		t.Errorf("%s exists", filepath.Join(filepath.Dir(root), "x"))
	}
}
