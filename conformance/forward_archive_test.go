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
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// TestForwardArchive: with no --stow-url, dicomgw files what it receives
// under --archive-dir as <study>/<series>/<sop>.dcm, data sets as spooled.
// Peer-supplied UIDs that are not UIDs ("../../x" as Study Instance UID,
// "1/2" as Series Instance UID) never name anything outside the archive:
// such objects end as dead letters whose reason names the bad UID, shown by
// `dicomgw spool ls`, and `dicomgw spool retry --all` re-queues them, after
// which they are dead-lettered again (they are still bad).
func TestForwardArchive(t *testing.T) {
	t.Parallel()
	storescu := needTool(t, "storescu")
	root := t.TempDir()
	spoolDir := filepath.Join(root, "spool")
	// Two levels down, so that "<archive>/../../x" would land inside root,
	// where the walk below looks.
	archive := filepath.Join(root, "data", "archive")
	if err := os.MkdirAll(filepath.Dir(archive), 0o755); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, spoolDir, "--archive-dir", archive, "--keep-delivered", "1h")
	if rec, err := g.WaitLog("dicomgw listening", 5*time.Second, nil); err != nil || rec["destination"] != "archive:"+archive {
		t.Fatalf("destination %v (%v), want archive:%s", rec["destination"], err, archive)
	}

	// A few corpus files: several transfer syntaxes, one without a file
	// meta header.
	files := []string{"mr-explicit-le.dcm", "us-rgb-explicit-be.dcm", "ct-jpeg-ls-near-lossless.dcm", "sc-deflated-explicit-le.dcm", "rtstruct-implicit-le-no-meta.dcm"}
	profiles := t.TempDir()
	want := map[string]harness.CorpusFile{} // by SOP Instance UID
	for i, name := range files {
		cf := corpusFile(t, name)
		if r := storescuSend(t, storescu, profiles, cf, fmt.Sprintf("ARCH%02d", i), g.Addr); r.Code != 0 {
			t.Fatalf("%s: %v", name, r)
		}
		want[cf.SOPInstanceUID] = cf
	}

	// Hostile UIDs, in otherwise valid data sets whose SOP Class and
	// Instance UIDs match the command.
	hostile := []struct {
		name, study, series, badUID, which string
	}{
		{"study ../../x", "../../x", harness.NewUID(), "../../x", "Study Instance UID"},
		{"series 1/2", harness.NewUID(), "1/2", "1/2", "Series Instance UID"},
	}
	hostileSOP := map[string]int{}
	for i, h := range hostile {
		inst := harness.NewUID()
		var e harness.Elements
		e.Str(0x0008, 0x0016, "UI", sopSecondaryCapture)
		e.Str(0x0008, 0x0018, "UI", inst)
		e.Str(0x0008, 0x0060, "CS", "OT")
		e.Str(0x0010, 0x0010, "PN", "HOSTILE^UID")
		e.Str(0x0020, 0x000D, "UI", h.study)
		e.Str(0x0020, 0x000E, "UI", h.series)
		if st := storeDataSet(t, g.Addr, "HOSTILE", sopSecondaryCapture, inst, e); st != dimse.StatusSuccess {
			t.Fatalf("%s: C-STORE status %v, want 0000 (the UIDs are the forwarder's business)", h.name, st)
		}
		hostileSOP[inst] = i
	}

	c := waitDrained(t, g, 30*time.Second)
	if c.Delivered != len(files) || c.Dead != len(hostile) || c.Reasons != len(hostile) {
		t.Fatalf("spool: %v; want %d delivered and %d dead letters with reasons", c, len(files), len(hostile))
	}

	// The archive: exactly the good objects, each where its UIDs say, the
	// data set as spooled.
	delivered := map[string]spooledObject{}
	for _, obj := range stateObjects(t, spoolDir, "delivered") {
		delivered[obj.Meta.SOPInstanceUID] = obj
	}
	archived := checkArchiveLayout(t, archive)
	if len(archived) != len(files) {
		t.Errorf("archive holds %d files, want %d: %v", len(archived), len(files), archived)
	}
	for sop, cf := range want {
		p := archived[sop]
		if p == "" {
			t.Errorf("%s (%s) is not in the archive", cf.Name, sop)
			continue
		}
		if study := strings.Split(p, string(filepath.Separator))[0]; study != cf.StudyInstanceUID {
			t.Errorf("%s filed under study %s, its Study Instance UID is %s", cf.Name, study, cf.StudyInstanceUID)
		}
		ds, err := harness.DataSet(filepath.Join(archive, p))
		if err != nil {
			t.Fatal(err)
		}
		if obj, ok := delivered[sop]; !ok || !bytes.Equal(ds, obj.DataSet) {
			t.Errorf("%s: archived data set differs from the spooled one", cf.Name)
		}
		fm, err := harness.ReadFileMeta(filepath.Join(archive, p))
		if err != nil || fm.MediaStorageSOPInstanceUID != sop || fm.TransferSyntaxUID != cf.TransferSyntaxUID {
			t.Errorf("%s: archived file meta %+v (%v)", cf.Name, fm, err)
		}
	}
	checkConfined(t, root, spoolDir, archive)

	// The dead letters name the bad UID.
	checkHostileDead := func(round int) {
		t.Helper()
		dead := stateObjects(t, spoolDir, "dead")
		if len(dead) != len(hostile) {
			t.Fatalf("round %d: %d dead letters, want %d", round, len(dead), len(hostile))
		}
		for id, obj := range dead {
			i, ok := hostileSOP[obj.Meta.SOPInstanceUID]
			if !ok {
				t.Errorf("round %d: unexpected dead letter %s (%s)", round, id, obj.Meta.SOPInstanceUID)
				continue
			}
			h := hostile[i]
			r := deadReason(t, spoolDir, id)
			if !strings.Contains(r, h.which) || !strings.Contains(r, fmt.Sprintf("%q", h.badUID)) {
				t.Errorf("round %d, %s: dead letter reason %q does not name the %s %q", round, h.name, r, h.which, h.badUID)
			} else if round == 1 {
				t.Logf("%s: dead letter reason: %s", h.name, r)
			}
		}
		ls := spoolLs(t, spoolDir, "--state", "dead")
		if len(ls) != len(hostile) {
			t.Fatalf("round %d: spool ls --state dead lists %d objects, want %d", round, len(ls), len(hostile))
		}
		for _, rec := range ls {
			sop, _ := rec["sop_instance_uid"].(string)
			i, ok := hostileSOP[sop]
			if !ok {
				t.Errorf("round %d: spool ls lists %v", round, rec)
				continue
			}
			h := hostile[i]
			reason, _ := rec["reason"].(string)
			if rec["state"] != "dead" || rec["study_instance_uid"] != h.study || !strings.Contains(reason, h.badUID) || rec["calling_ae"] != "HOSTILE" {
				t.Errorf("round %d, %s: spool ls shows %v", round, h.name, rec)
			}
		}
	}
	checkHostileDead(1)

	// Re-queued by the operator, picked up by the forwarder's rescan
	// (every 30 s), dead-lettered again.
	out := dicomgwCmd(t, "spool", "retry", "--all", "--spool-dir", spoolDir)
	if strings.TrimSpace(out) != fmt.Sprintf("re-queued %d dead letter(s)", len(hostile)) {
		t.Errorf("spool retry --all printed %q", out)
	}
	// Right after: back in the queue (unless a rescan happened to take
	// them at once: then dead again, never lost).
	if c := countSpool(t, spoolDir); c.Queued+c.Dead != len(hostile) || c.Reasons != c.Dead {
		t.Errorf("right after spool retry --all: %v; want the %d objects queued", c, len(hostile))
	}
	deadline := time.Now().Add(45 * time.Second)
	for len(g.LogRecords("object dead-lettered")) < 2*len(hostile) {
		if time.Now().After(deadline) {
			t.Fatalf("re-queued dead letters not dead-lettered again within 45 s (the rescan interval is 30 s); spool: %v", countSpool(t, spoolDir))
		}
		time.Sleep(100 * time.Millisecond)
	}
	c = waitDrained(t, g, 10*time.Second)
	if c.Dead != len(hostile) || c.Delivered != len(files) {
		t.Errorf("after retry --all: %v", c)
	}
	checkHostileDead(2)
	if n := len(checkArchiveLayout(t, archive)); n != len(files) {
		t.Errorf("after retry --all the archive holds %d files, want %d", n, len(files))
	}
	checkConfined(t, root, spoolDir, archive)
}

// checkArchiveLayout walks the archive and checks that every entry is
// <study>/<series>/<sop>.dcm with three valid UIDs; it returns the files
// by SOP Instance UID, as paths relative to the archive.
func checkArchiveLayout(t *testing.T, archive string) map[string]string {
	t.Helper()
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
		switch {
		case d.IsDir() && len(parts) <= 2 && uid.Valid(parts[len(parts)-1]) == nil:
		case !d.IsDir() && d.Type().IsRegular() && len(parts) == 3 && strings.HasSuffix(parts[2], ".dcm") && uid.Valid(strings.TrimSuffix(parts[2], ".dcm")) == nil:
			out[strings.TrimSuffix(parts[2], ".dcm")] = rel
		default:
			t.Errorf("archive entry %s is not <study>/<series>/<sop>.dcm of valid UIDs", rel)
		}
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
