package conformance

// qr_find_test.go: C-FIND through dicomgw (issue 16). One Orthanc holds the
// corpus and answers both DIMSE C-FIND and QIDO-RS; the same dcmtk findscu
// requests go to Orthanc directly and to dicomgw in front of its QIDO-RS,
// and the answers are compared: the same matches, the same values for the
// keys asked.

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// findAnswer is one Pending response of findscu: its keys' values, by tag.
type findAnswer map[string]string

var findLine = regexp.MustCompile(`^I: \(([0-9a-f]{4},[0-9a-f]{4})\) (..) (?:\[(.*)\]|\(no value available\)|=(\S*))`)

// findscuRun runs findscu and parses its Pending responses; status is the
// final status line.
func findscuRun(t *testing.T, addr, called string, model string, keys ...string) ([]findAnswer, string) {
	return findscuOpts(t, addr, called, nil, model, keys...)
}

func findscuOpts(t *testing.T, addr, called string, opts []string, model string, keys ...string) ([]findAnswer, string) {
	t.Helper()
	host, port := splitAddr(addr)
	args := append(append([]string{"-v"}, opts...), model, "-aet", "FINDER", "-aec", called, host, port)
	for _, k := range keys {
		args = append(args, "-k", k)
	}
	out, _ := exec.Command("findscu", args...).CombinedOutput()
	var answers []findAnswer
	var cur findAnswer
	status := ""
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.Contains(line, "Find Response:") && strings.Contains(line, "(Pending)"):
			cur = findAnswer{}
			answers = append(answers, cur)
		case strings.Contains(line, "Find Response:"), strings.Contains(line, "Received Final Find Response"):
			status = line
		case cur != nil:
			if m := findLine.FindStringSubmatch(line); m != nil {
				cur[m[1]] = strings.TrimRight(m[3], " \x00")
			}
		}
	}
	if strings.Contains(string(out), "E: ") {
		status += "\n" + string(out)
	}
	return answers, status
}

// canon makes answers comparable: only the keys asked (not what a server
// adds of its own: Specific Character Set, Retrieve AE Title, Instance
// Availability), numbers as numbers, sorted by all their values.
func canon(answers []findAnswer, asked []string) []string {
	var out []string
	for _, a := range answers {
		var parts []string
		for _, tag := range asked {
			v := a[tag]
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				v = strconv.FormatFloat(f, 'g', -1, 64) // IS and DS: "1 " and 1, "0.50" and 0.5
			}
			parts = append(parts, tag+"="+v)
		}
		out = append(out, strings.Join(parts, " "))
	}
	slices.Sort(out)
	return out
}

// askedTags are the tags of "-k Keyword[=value]" keys, as dcmtk prints them.
var keywordTags = map[string]string{
	"PatientName": "0010,0010", "PatientID": "0010,0020", "PatientBirthDate": "0010,0030", "PatientSex": "0010,0040",
	"StudyInstanceUID": "0020,000d", "StudyDate": "0008,0020", "StudyTime": "0008,0030", "AccessionNumber": "0008,0050",
	"StudyID": "0020,0010", "StudyDescription": "0008,1030", "ModalitiesInStudy": "0008,0061",
	"SeriesInstanceUID": "0020,000e", "Modality": "0008,0060", "SeriesNumber": "0020,0011", "SeriesDescription": "0008,103e",
	"SOPInstanceUID": "0008,0018", "SOPClassUID": "0008,0016", "InstanceNumber": "0020,0013",
}

func askedTags(keys []string) []string {
	var out []string
	for _, k := range keys {
		name, _, _ := strings.Cut(k, "=")
		if tag, ok := keywordTags[name]; ok {
			out = append(out, tag)
		}
	}
	return out
}

func TestFindThroughQIDO(t *testing.T) {
	if _, err := exec.LookPath("findscu"); err != nil {
		t.Fatal("findscu (dcmtk) is not installed: make test installs it")
	}
	o := startOrthanc(t, map[string]any{"DicomAlwaysAllowFind": true})
	files := loadCorpus(t)
	n := 0
	for _, cf := range files {
		if !cf.HasPart10 || strings.Contains(cf.Name, "malformed") {
			continue
		}
		b, err := os.ReadFile(cf.Path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.Post("/instances", "application/dicom", b); err == nil {
			n++
		}
	}
	stats, err := o.Statistics()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Orthanc holds %d instances of %d files", stats.CountInstances, n)
	// A page of 5 results: every query with more matches pages.
	g := startGateway(t, t.TempDir()+"/spool", "--stow-url", o.BaseURL(), "--qr-destination", "default", "--qr-page-size", "5")

	// Values to match on, from what Orthanc holds.
	var studies []map[string]any
	if err := o.GetJSON("/studies?expand", &studies); err != nil {
		t.Fatal(err)
	}
	var aStudy, bStudy, aPatientID string
	for _, s := range studies {
		main, _ := s["MainDicomTags"].(map[string]any)
		pat, _ := s["PatientMainDicomTags"].(map[string]any)
		uid, _ := main["StudyInstanceUID"].(string)
		if aStudy == "" {
			aStudy = uid
			aPatientID, _ = pat["PatientID"].(string)
		} else if bStudy == "" {
			bStudy = uid
		}
	}
	if aStudy == "" || bStudy == "" || aPatientID == "" {
		t.Fatalf("no studies to query: %v", studies)
	}
	cases := []struct {
		name  string
		model string
		keys  []string
		min   int // matches expected at least
	}{
		{"study root, all studies", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "AccessionNumber", "StudyDescription"}, 20},
		{"study root, date range", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyDate=19000101-20991231", "StudyInstanceUID", "StudyDate"}, 5},
		{"study root, UID list", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + aStudy + `\` + bStudy, "PatientID"}, 2},
		{"study root, wildcard", "-S", []string{"QueryRetrieveLevel=STUDY", "PatientID=" + aPatientID[:1] + "*", "StudyInstanceUID", "PatientID"}, 1},
		{"study root, series of a study", "-S", []string{"QueryRetrieveLevel=SERIES", "StudyInstanceUID=" + aStudy, "SeriesInstanceUID", "Modality", "SeriesNumber"}, 1},
		{"study root, all series", "-S", []string{"QueryRetrieveLevel=SERIES", "SeriesInstanceUID", "Modality"}, 20},
		{"study root, images of a study", "-S", []string{"QueryRetrieveLevel=IMAGE", "StudyInstanceUID=" + aStudy, "SOPInstanceUID", "SOPClassUID", "InstanceNumber"}, 1},
		{"patient root, patients", "-P", []string{"QueryRetrieveLevel=PATIENT", "PatientID", "PatientName"}, 10},
		{"patient root, studies of a patient", "-P", []string{"QueryRetrieveLevel=STUDY", "PatientID=" + aPatientID, "StudyInstanceUID", "StudyDate"}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want, wantStatus := findscuRun(t, o.DICOMAddr(), o.AETitle, c.model, c.keys...)
			got, gotStatus := findscuRun(t, g.Addr, "DICOMGW", c.model, c.keys...)
			if !strings.Contains(gotStatus, "Success") {
				t.Fatalf("dicomgw's final status: %s\n%s", gotStatus, harness.Tail(g.Logs(), 3000))
			}
			if len(want) < c.min {
				t.Fatalf("Orthanc answered %d matches (%s), the test wants at least %d", len(want), wantStatus, c.min)
			}
			asked := askedTags(c.keys)
			if c.keys[0] == "QueryRetrieveLevel=PATIENT" {
				// Several corpus studies have no Patient ID, under
				// different names: each server answers that one "patient"
				// with a name of its own choosing. It is compared by ID
				// only.
				for _, as := range [][]findAnswer{want, got} {
					for _, a := range as {
						if a["0010,0020"] == "" {
							delete(a, "0010,0010")
						}
					}
				}
			}
			w, h := canon(want, asked), canon(got, asked)
			if !slices.Equal(w, h) {
				t.Errorf("%d matches from dicomgw, %d from Orthanc; differences:\n%s", len(h), len(w), diffLines(w, h))
			}
		})
	}
	// C-CANCEL after two matches ends the query with Cancel, short of all.
	all, _ := findscuRun(t, g.Addr, "DICOMGW", "-S", "QueryRetrieveLevel=SERIES", "SeriesInstanceUID")
	some, status := findscuOpts(t, g.Addr, "DICOMGW", []string{"--cancel", "2"}, "-S", "QueryRetrieveLevel=SERIES", "SeriesInstanceUID")
	if !strings.Contains(status, "Cancel") || len(some) >= len(all) || len(some) < 2 {
		t.Errorf("C-CANCEL after 2 of %d matches: %d matches, status %s", len(all), len(some), status)
	}
	m, err := g.Scrape()
	if err != nil {
		t.Fatal(err)
	}
	if v := m.Sum("dicomgw_qr_queries_total", `outcome="success"`); v != float64(len(cases)+1) {
		t.Errorf("dicomgw_qr_queries_total{outcome=success} = %v, want %d", v, len(cases)+1)
	}
	if v := m.Sum("dicomgw_qr_queries_total", `outcome="cancelled"`); v != 1 {
		t.Errorf("dicomgw_qr_queries_total{outcome=cancelled} = %v, want 1", v)
	}
}

func diffLines(want, got []string) string {
	var b strings.Builder
	for _, w := range want {
		if !slices.Contains(got, w) {
			fmt.Fprintf(&b, "  only Orthanc: %s\n", w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			fmt.Fprintf(&b, "  only dicomgw: %s\n", g)
		}
	}
	return b.String()
}

// TestFindEndpointDown: with the DICOMweb server down, a C-FIND gets a
// failure status at once, not a hung association.
func TestFindEndpointDown(t *testing.T) {
	g := startGateway(t, t.TempDir()+"/spool", "--stow-url", "http://127.0.0.1:1/dicom-web", "--qr-destination", "default")
	start := time.Now()
	answers, status := findscuRun(t, g.Addr, "DICOMGW", "-S", "QueryRetrieveLevel=STUDY", "StudyInstanceUID")
	if len(answers) != 0 || !strings.Contains(status, "Unable to process") && !strings.Contains(status, "0xc000") && !strings.Contains(status, "Failed") {
		t.Fatalf("with the endpoint down: %d answers, status %s", len(answers), status)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the failure took %v", d)
	}
}
