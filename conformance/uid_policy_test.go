package conformance

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
)

// nonconformingLog is the gateway's line for the first object of an
// association with UIDs that break PS3.5 9.1.
const nonconformingLog = "accepted UIDs that break PS3.5 9.1; later objects of this association are counted, not logged"

// hexUID is 64 hexadecimal digits, as some systems make SOP Instance UIDs
// from a hash.
func hexUID() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// uidDataSet is a Secondary Capture data set with the given SOP Instance,
// Study and Series Instance UIDs ("" leaves the element out).
func uidDataSet(inst, study, series string) []byte {
	return uidDataSetNamed(inst, study, series, "UID^POLICY")
}

// uidDataSetNamed is uidDataSet with the given Patient's Name.
func uidDataSetNamed(inst, study, series, patient string) []byte {
	var e harness.Elements
	e.Str(0x0008, 0x0016, "UI", sopSecondaryCapture)
	e.Str(0x0008, 0x0018, "UI", inst)
	e.Str(0x0008, 0x0060, "CS", "OT")
	e.Str(0x0010, 0x0010, "PN", patient)
	if study != "" {
		e.Str(0x0020, 0x000D, "UI", study)
	}
	if series != "" {
		e.Str(0x0020, 0x000E, "UI", series)
	}
	return e
}

// uidCase is one object of TestUIDPolicy.
type uidCase struct {
	name                string
	inst, study, series string
	// lenient: breaks PS3.5 9.1 in a way --uid-policy lenient accepts;
	// comment: the Error Comment of the C000 it gets when refused.
	lenient bool
	comment string
	// archived: where the archive files it (relative), when accepted.
	archived string
}

func uidCases() []uidCase {
	study, series := harness.NewUID(), harness.NewUID()
	h, hs := hexUID(), hexUID()
	lz, ec, td := harness.NewUID()+".01", "2.25.."+harness.NewUID()[5:], harness.NewUID()+"."
	lzs := harness.NewUID() + ".002"
	ok, i5, i6 := harness.NewUID(), harness.NewUID(), harness.NewUID()
	under := study + "/" + series + "/"
	return []uidCase{
		{name: "conforming", inst: ok, study: study, series: series, archived: under + ok + ".dcm"},
		{name: "hexadecimal SOP Instance UID", inst: h, study: study, series: series, lenient: true,
			comment: "affected SOP instance UID has letters (hexadecimal?)", archived: under + "_uid-" + h + ".dcm"},
		{name: "leading zero", inst: lz, study: study, series: series, lenient: true,
			comment: "affected SOP instance UID has a leading zero in a component", archived: under + lz + ".dcm"},
		{name: "empty component", inst: ec, study: study, series: series, lenient: true,
			comment: "affected SOP instance UID has an empty component", archived: under + "_uid-" + ec + ".dcm"},
		{name: "trailing dot", inst: td, study: study, series: series, lenient: true,
			comment: "affected SOP instance UID ends with '.'", archived: under + "_uid-" + td + ".dcm"},
		{name: "hexadecimal Study Instance UID", inst: i5, study: hs, series: series, lenient: true,
			comment: "Study Instance UID has letters (hexadecimal?)", archived: "_uid-" + hs + "/" + series + "/" + i5 + ".dcm"},
		{name: "leading zero in the Series Instance UID", inst: i6, study: study, series: lzs, lenient: true,
			comment: "Series Instance UID has a leading zero in a component", archived: study + "/" + lzs + "/" + i6 + ".dcm"},
		// Refused under both policies.
		{name: "slash", inst: harness.NewUID() + "/1", study: study, series: series, comment: "affected SOP instance UID has a slash"},
		{name: "space", inst: harness.NewUID() + " 1", study: study, series: series, comment: "affected SOP instance UID has a space"},
		{name: "non-ASCII", inst: harness.NewUID() + ".\u00e9", study: study, series: series, comment: "affected SOP instance UID has a non-ASCII byte"},
		{name: "65 bytes", inst: "1." + strings.Repeat("2", 63), study: study, series: series, comment: "affected SOP instance UID is longer than 64 bytes"},
		{name: "Study Instance UID ../../x", inst: harness.NewUID(), study: "../../x", series: series, comment: "Study Instance UID has a slash"},
		{name: "Series Instance UID 1 2", inst: harness.NewUID(), study: study, series: "1 2", comment: "Series Instance UID has a space"},
	}
}

// TestUIDPolicy: through the binary, with our requestor sending over one
// association, --uid-policy lenient (the default) stores UIDs seen in the
// wild that break PS3.5 9.1 (a 64-digit hexadecimal SOP Instance UID, a
// leading zero, an empty component, a trailing dot; a hexadecimal Study
// and a leading-zero Series Instance UID in the data set) with 0000, files
// them in the archive under the documented names, counts them in
// dicomgw_nonconforming_uids_total and logs them once per association;
// --uid-policy strict answers each of them C000. Under both, a slash, a
// space, a non-ASCII byte or 65 bytes get C000 with an Error Comment that
// names the attribute and the problem, and leave nothing behind.
func TestUIDPolicy(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"lenient", "strict"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			spoolDir, archive := filepath.Join(root, "spool"), filepath.Join(root, "data", "archive")
			if err := os.MkdirAll(filepath.Dir(archive), 0o755); err != nil {
				t.Fatal(err)
			}
			args := []string{"--archive-dir", archive, "--keep-delivered", "1h"}
			if policy == "strict" {
				args = append(args, "--uid-policy", "strict")
			}
			g := startGateway(t, spoolDir, args...)
			cases := uidCases()
			accepted := 0
			// Two associations: the same objects, then one more of each
			// lenient kind with fresh UIDs: one log line each.
			for round := 0; round < 2; round++ {
				if round == 1 {
					cases = uidCases()
				}
				c := dial(t, g.Addr, "UIDPOLICY", storeContext(sopSecondaryCapture, tsExplicitLE))
				for _, u := range cases {
					rsp, err := c.Store(sopSecondaryCapture, u.inst, tsExplicitLE, bytes.NewReader(uidDataSet(u.inst, u.study, u.series)))
					if err != nil {
						t.Fatalf("%s: %v", u.name, err)
					}
					stored := u.comment == "" || u.lenient && policy == "lenient"
					switch {
					case stored && rsp.Status != dimse.StatusSuccess:
						t.Errorf("%s: %v (%q), want 0000", u.name, rsp.Status, rsp.ErrorComment)
					case !stored && (rsp.Status != dimse.StatusCannotUnderstand || rsp.ErrorComment != u.comment):
						t.Errorf("%s: %v (%q), want C000 (%q)", u.name, rsp.Status, rsp.ErrorComment, u.comment)
					}
					if stored {
						accepted++
					}
				}
				if err := c.Release(); err != nil {
					t.Fatal(err)
				}
			}
			c := waitDrained(t, g, 30*time.Second)
			if c.Delivered != accepted || c.Dead != 0 {
				t.Errorf("spool %v, want %d delivered", c, accepted)
			}
			noPartials(t, spoolDir)

			// The archive: the objects of the last round where the README
			// says, with the data set as sent.
			for _, u := range cases {
				if u.archived == "" || u.lenient && policy == "strict" {
					continue
				}
				ds, err := harness.DataSet(filepath.Join(archive, u.archived))
				if err != nil {
					t.Errorf("%s: not archived as %s: %v", u.name, u.archived, err)
					continue
				}
				if !bytes.Equal(ds, uidDataSet(u.inst, u.study, u.series)) {
					t.Errorf("%s: archived data set differs from the one sent", u.name)
				}
			}
			checkConfined(t, root, spoolDir, archive)

			// Counted by attribute, logged once per association.
			m, err := g.Scrape()
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]float64{"sop_instance_uid": 8, "study_instance_uid": 2, "series_instance_uid": 2, "sop_class_uid": 0}
			lines := 2
			if policy == "strict" {
				want = map[string]float64{"sop_instance_uid": 0, "study_instance_uid": 0, "series_instance_uid": 0, "sop_class_uid": 0}
				lines = 0
			}
			for attr, n := range want {
				if got := m.Get("dicomgw_nonconforming_uids_total", `attribute="`+attr+`"`); got != n {
					t.Errorf("dicomgw_nonconforming_uids_total{attribute=%q} = %v, want %v", attr, got, n)
				}
			}
			recs := g.LogRecords(nonconformingLog)
			if len(recs) != lines {
				t.Fatalf("%d %q lines, want %d (one per association)", len(recs), nonconformingLog, lines)
			}
			if lines > 0 {
				if recs[0]["assoc"] == recs[1]["assoc"] || recs[0]["sop_instance_uid"] != "has letters (hexadecimal?)" || recs[0]["policy"] != "lenient" {
					t.Errorf("log lines %v", recs)
				}
			}
			for _, end := range g.LogRecords("association ended") {
				if n, _ := end["nonconforming_uid_objects"].(float64); end["calling_ae"] == "UIDPOLICY" && int(n) != map[string]int{"lenient": 6, "strict": 0}[policy] {
					t.Errorf("association end: %v objects with non-conforming UIDs: %v", end["nonconforming_uid_objects"], end)
				}
			}
			if t.Failed() {
				t.Logf("spool: %v", countSpool(t, spoolDir))
			}
		})
	}
}

// TestHexUIDToOrthanc: a real Orthanc (1.10, DICOMweb plugin) takes an
// object with a 64-digit hexadecimal SOP Instance UID by STOW-RS, as it
// takes one with a hexadecimal Study Instance UID (which the gateway posts
// to /studies, never into the URL path): through the gateway, under the
// default --uid-policy, both arrive with their UIDs and data sets as sent.
// The first is sent with dcmtk's storescu from a Part 10 file.
func TestHexUIDToOrthanc(t *testing.T) {
	t.Parallel()
	storescu := needTool(t, "storescu")
	o := startOrthanc(t, nil)
	g := startGateway(t, t.TempDir(), append([]string{"--stow-url", o.BaseURL(), "--keep-delivered", "1h"}, fastRetry...)...)

	inst := hexUID()
	file := filepath.Join(t.TempDir(), "hex.dcm")
	sent := map[string][]byte{inst: uidDataSet(inst, harness.NewUID(), harness.NewUID())}
	writeObject(t, file, sopSecondaryCapture, inst, sent[inst], 0)
	host, port := splitAddr(g.Addr)
	if r := runTool(time.Minute, storescu, "-aet", "HEXUID", "-aec", calledAE, host, port, file); r.Code != 0 {
		t.Fatalf("storescu: %v", r)
	}
	inst2, study2 := harness.NewUID(), hexUID()
	sent[inst2] = uidDataSet(inst2, study2, harness.NewUID())
	if st := storeDataSet(t, g.Addr, "HEXUID", sopSecondaryCapture, inst2, sent[inst2]); st != dimse.StatusSuccess {
		t.Fatalf("hexadecimal Study Instance UID: %v", st)
	}
	c := waitDrained(t, g, 30*time.Second)
	if c.Delivered != 2 || c.Dead != 0 {
		for id, obj := range stateObjects(t, g.SpoolDir, "dead") {
			t.Errorf("dead letter %s (%s): %s", id, obj.Meta.SOPInstanceUID, deadReason(t, g.SpoolDir, id))
		}
		t.Fatalf("spool %v, want 2 delivered", c)
	}
	for sop, ds := range sent {
		f, err := o.InstanceFile(sop)
		if err != nil {
			t.Errorf("Orthanc: %v", err)
			continue
		}
		if got := dataSetOfFile(t, f); !bytes.Equal(got, ds) {
			t.Errorf("%s: Orthanc's data set differs from the one sent (%s)", sop, firstDiff(got, ds))
		}
	}
	found, err := o.QIDOInstances(map[string][]string{"StudyInstanceUID": {study2}})
	if err != nil || len(found) != 1 {
		t.Errorf("QIDO-RS for study %s: %d instances (%v)", study2, len(found), err)
	}
	if n := len(g.LogRecords(nonconformingLog)); n != 2 {
		t.Errorf("%d %q lines, want 2 (two associations)", n, nonconformingLog)
	}
	t.Logf("Orthanc took SOP Instance UID %s and Study Instance UID %s", inst, study2)
}
