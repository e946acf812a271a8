package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/pkg/spool"
)

// spoolWith commits objects (one per SOP instance UID, all of study
// 1.2.99) into a fresh spool and returns its directory and their IDs.
func spoolWith(t *testing.T, insts ...string) (string, *spool.Spool, []string) {
	t.Helper()
	dir := t.TempDir()
	s, err := spool.Open(spool.Config{Dir: dir, ImplementationClassUID: "2.25.1", ImplementationVersionName: "T"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var ids []string
	for _, inst := range insts {
		w, err := s.Create(spool.Meta{SOPClassUID: "1.2.840.10008.5.1.4.1.1.7", SOPInstanceUID: inst, TransferSyntaxUID: "1.2.840.10008.1.2.1", CallingAE: "CT1"})
		if err != nil {
			t.Fatal(err)
		}
		var ds []byte
		for _, el := range []struct {
			elem uint16
			v    string
		}{{0x0016, "1.2.840.10008.5.1.4.1.1.7"}, {0x0018, inst}} {
			ds = appendUI(ds, 0x0008, el.elem, el.v)
		}
		ds = appendUI(ds, 0x0020, 0x000D, "1.2.99")
		w.Write(ds)
		e, err := w.Commit()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	return dir, s, ids
}

func appendUI(b []byte, g, e uint16, v string) []byte {
	if len(v)%2 == 1 {
		v += "\x00"
	}
	b = binary.LittleEndian.AppendUint16(b, g)
	b = binary.LittleEndian.AppendUint16(b, e)
	b = append(b, 'U', 'I')
	b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestSpoolCommands(t *testing.T) {
	dir, s, ids := spoolWith(t, "1.2.1", "1.2.2", "1.2.3")
	if err := s.Dead(ids[1], "FailureReason 0xC122", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRetry(ids[2], spool.Retry{Attempts: 3, LastError: "HTTP 503", NextAttempt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}

	code, out, errs := runCmd(t, "spool", "stats", "--spool-dir", dir, "--json")
	if code != 0 {
		t.Fatalf("stats: %d %s", code, errs)
	}
	var stats []stateStats
	if err := json.Unmarshal([]byte(out), &stats); err != nil {
		t.Fatal(err)
	}
	got := map[string]stateStats{}
	for _, s := range stats {
		got[s.State] = s
	}
	if got["queued"].Objects != 2 || got["queued"].Retrying != 1 || got["dead"].Objects != 1 || got["delivered"].Objects != 0 || got["queued"].Bytes == 0 {
		t.Fatalf("stats %+v", stats)
	}

	code, out, _ = runCmd(t, "spool", "ls", "--spool-dir", dir, "--state", "dead")
	if code != 0 || !strings.Contains(out, ids[1]) || !strings.Contains(out, "1.2.2") || !strings.Contains(out, "FailureReason 0xC122") || strings.Contains(out, ids[0]) {
		t.Fatalf("ls dead:\n%s", out)
	}
	code, out, _ = runCmd(t, "spool", "ls", "--spool-dir", dir, "--json")
	if code != 0 || strings.Count(out, "\n") != 3 || !strings.Contains(out, `"attempts":3`) || !strings.Contains(out, `"study_instance_uid":"1.2.99"`) {
		t.Fatalf("ls json:\n%s", out)
	}

	if code, _, errs := runCmd(t, "spool", "retry", "--spool-dir", dir); code == 0 || !strings.Contains(errs, "say which") {
		t.Fatalf("retry without a choice: %d %s", code, errs)
	}
	if code, _, errs := runCmd(t, "spool", "retry", "--spool-dir", dir, ids[0]); code == 0 || !strings.Contains(errs, "not a dead letter") {
		t.Fatalf("retry of a queued object: %d %s", code, errs)
	}
	code, out, _ = runCmd(t, "spool", "retry", "--spool-dir", dir, "--sop", "1.2.2")
	if code != 0 || !strings.Contains(out, "re-queued 1") {
		t.Fatalf("retry: %d %s", code, out)
	}
	if dead, _ := s.Items(spool.StateDead); len(dead) != 0 {
		t.Fatal("still dead after retry")
	}

	if err := s.Dead(ids[0], "x", nil); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := runCmd(t, "spool", "purge", "--spool-dir", dir, "--older-than", "1d"); code != 0 || !strings.Contains(out, "purged 0 dead") {
		t.Fatalf("purge 1d: %d %s", code, out)
	}
	if code, out, _ := runCmd(t, "spool", "purge", "--spool-dir", dir, "--older-than", "0s", "--state", "dead"); code != 0 || !strings.Contains(out, "purged 1 dead") {
		t.Fatalf("purge 0s: %d %s", code, out)
	}
	for _, bad := range [][]string{
		{"spool", "purge", "--spool-dir", dir},
		{"spool", "purge", "--spool-dir", dir, "--older-than", "-1h"},
		{"spool", "purge", "--spool-dir", dir, "--older-than", "1h", "--state", "queued"},
		{"spool", "ls", "--spool-dir", dir, "--state", "lost"},
		{"spool", "frob", "--spool-dir", dir},
		{"spool", "ls", "--spool-dir", t.TempDir()},
		{"spool"},
	} {
		if code, _, _ := runCmd(t, bad...); code == 0 {
			t.Errorf("%v succeeded", bad)
		}
	}
}

func TestParseAge(t *testing.T) {
	for in, want := range map[string]time.Duration{"7d": 7 * 24 * time.Hour, "1.5d": 36 * time.Hour, "90m": 90 * time.Minute, "0s": 0} {
		if got, err := parseAge(in); err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	for _, bad := range []string{"xd", "-1d", "-5m", "soon"} {
		if _, err := parseAge(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// TestSpoolLsCannotBeForged: a Study UID holding a newline and a fake row
// (a file written by an earlier version, or by hand) shows as one quoted
// cell of its own row; JSON carries it as it is. An object whose retry
// record is garbage is listed, named as damaged, and the others with it.
func TestSpoolLsCannotBeForged(t *testing.T) {
	dir, s, ids := spoolWith(t, "1.2.1", "1.2.2")
	// Received today such a UID gets C000 (--uid-policy); a file written by
	// an earlier version, or by hand, may still hold one: the object is
	// committed with a stand-in of the same length, then patched.
	forged := "1.2\n0000000000000000-00000000  queued\x1b[2J"
	stand := strings.Repeat("1", len(forged))
	w, err := s.Create(spool.Meta{SOPClassUID: "1.2.840.10008.5.1.4.1.1.7", SOPInstanceUID: "1.2.3", TransferSyntaxUID: "1.2.840.10008.1.2.1", CallingAE: "CT1"})
	if err != nil {
		t.Fatal(err)
	}
	ds := appendUI(nil, 0x0008, 0x0016, "1.2.840.10008.5.1.4.1.1.7")
	ds = appendUI(ds, 0x0008, 0x0018, "1.2.3")
	ds = appendUI(ds, 0x0020, 0x000D, stand)
	w.Write(ds)
	e, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(e.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.Path, bytes.Replace(b, []byte(stand), []byte(forged), 1), 0o640); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCmd(t, "spool", "ls", "--spool-dir", dir)
	if code != 0 {
		t.Fatalf("ls: %d %s", code, errs)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 4 { // header and three objects
		t.Fatalf("ls printed %d lines for 3 objects:\n%s", len(lines), out)
	}
	if strings.Contains(out, "\x1b") || !strings.Contains(out, `"1.2\n0000000000000000-00000000`) {
		t.Errorf("the forged UID is not shown quoted:\n%s", out)
	}
	code, out, _ = runCmd(t, "spool", "ls", "--spool-dir", dir, "--json")
	if code != 0 || strings.Count(out, "\n") != 3 {
		t.Fatalf("ls --json: %d\n%s", code, out)
	}

	// One object's retry record is garbage: ls still lists every object,
	// names that one damaged, and says why.
	if err := os.WriteFile(filepath.Join(dir, "queue", ids[0]+".retry"), []byte("}{ not json"), 0o640); err != nil {
		t.Fatal(err)
	}
	code, out, errs = runCmd(t, "spool", "ls", "--spool-dir", dir, "--json")
	if code != 0 {
		t.Fatalf("ls with a garbled retry record: %d %s", code, errs)
	}
	var rows []listed
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var r listed
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r)
	}
	if len(rows) != 3 {
		t.Fatalf("%d rows, want 3", len(rows))
	}
	for _, r := range rows {
		bad := r.ID == ids[0]
		if r.Damaged != bad || bad && !strings.Contains(r.Reason, "damaged in the spool: queue/"+ids[0]+".retry") {
			t.Errorf("row %+v", r)
		}
		if r.ID == ids[1] && r.SOPInstance != "1.2.2" {
			t.Errorf("good row %+v", r)
		}
	}
	if code, _, _ := runCmd(t, "spool", "stats", "--spool-dir", dir); code != 0 {
		t.Errorf("stats with a garbled retry record: %d", code)
	}
}
