package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicomgw/dicomgw/pkg/spool"
)

// TestCheckConfigRouting: check-config prints the destinations, the routes
// and what becomes of an object no route matches; a bad route or
// destination is reported with its file and line.
func TestCheckConfigRouting(t *testing.T) {
	archive := t.TempDir()
	good := writeFile(t, "routes.flags", strings.Join([]string{
		"# Kaapana: one route per project AE, a research copy of MR",
		"--destination=proj1=http://127.0.0.1:8080/dicom-web?album=SECRET token-file=" + writeFile(t, "tok", "abc") + " workers=2",
		"--destination=pacs=dicom://PACS@10.0.0.5:104 calling-ae=original",
		"--destination=mr=file://" + archive,
		"--destination=spare=file://" + archive + "/spare",
		`--route={called_ae=~"KP-.+"} -> proj1`,
		`--route={Modality="MR", called_ae!="KP-TEST"} -> mr,pacs`,
		"--unrouted=pacs",
		"",
	}, "\n"))
	code, out, errs := runCmd(t, "check-config", "--flagfile", good)
	if code != 0 {
		t.Fatalf("%d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{
		"proj1 (stow, from " + good + ":2): proj1=http://127.0.0.1:8080/dicom-web?[query]",
		"pacs (dicom, from " + good + ":3): pacs=dicom://PACS@10.0.0.5:104 calling-ae=original",
		"spare (archive, from " + good + ":5)",
		"no route sends anything here",
		`{called_ae=~"KP-.+"} -> proj1`,
		`{Modality="MR", called_ae!="KP-TEST"} -> mr,pacs`,
		"an object no route matches: sent to pacs",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, out)
		}
	}
	// With --destination lines, the archive's default directory alone
	// makes no destination "default"; --archive-dir given does.
	if strings.Contains(out, "default (") {
		t.Errorf("a destination \"default\" nobody asked for:\n%s", out)
	}
	code, out, errs = runCmd(t, "check-config", "--flagfile", good, "--archive-dir", archive+"/default")
	if want := "default (archive, from --stow-url/--archive-dir)"; code != 0 || !strings.Contains(out, want) {
		t.Errorf("with --archive-dir: exit %d, output lacks %q:\n%s\n%s", code, want, out, errs)
	}
	code, _, errs = runCmd(t, "check-config", "--destination", "a=file://"+archive)
	if want := "say where objects go, e.g. --route '{} -> a'"; code == 0 || !strings.Contains(errs, want) {
		t.Errorf("one --destination and no --route: exit %d, %q lacks %q", code, errs, want)
	}
	if strings.Contains(out, "SECRET") {
		t.Errorf("the album query string was printed:\n%s", out)
	}
	for content, want := range map[string]string{
		"--route={Modalty=\"MR\"} -> default\n":                   `unknown key "Modalty": not called_ae, calling_ae, peer or a DICOM keyword`,
		"\n--route={called_ae=\"X\"} -> nowhere\n":                `c.flags:2: route {called_ae="X"} -> nowhere: no destination "nowhere"`,
		"--destination=x=ftp://host/\n":                           `destination x: scheme "ftp"`,
		"--destination=x=dicom://host:104\n":                      "want dicom://CALLED_AE@HOST:PORT",
		"--destination=x=http://h/ workers=zero\n":                `destination x: workers: "zero" is not a positive number`,
		"--destination=x=http://h/ colour=blue\n":                 `unknown option "colour" for a stow destination`,
		"--destination=x=file:///a\n--destination=x=file:///b\n":  "destination x defined twice (the other at ",
		"--destination=Bad=file:///a\n":                           `destination name "Bad"`,
		"--unrouted=elsewhere\n":                                  "--unrouted=elsewhere: no such destination",
		"--destination=default=file:///a\n--stow-url=http://h/\n": "keep one",
	} {
		p := filepath.Join(t.TempDir(), "c.flags")
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, errs := runCmd(t, "check-config", "--flagfile", p)
		line := "c.flags:1:"
		if strings.HasPrefix(content, "\n") || strings.Contains(want, "twice") {
			line = "c.flags:2:"
		}
		if code != 1 || !strings.Contains(errs, want) || !strings.Contains(errs, line) && !strings.Contains(want, "keep one") && !strings.Contains(want, "--unrouted") {
			t.Errorf("%q: %d %s, want %s and %q", content, code, errs, line, want)
		}
	}
}

// TestRecordReserveFitsEveryDestination: the room the router leaves in
// each object's record holds the longest destination list it can route an
// object to.
func TestRecordReserveFitsEveryDestination(t *testing.T) {
	var lines []string
	var names []string
	for i := range 40 {
		n := fmt.Sprintf("destination-%02d-with-a-long-nam", i) // 32 characters, the longest name
		names = append(names, n)
		lines = append(lines, fmt.Sprintf("--destination=%s=file://%s", n, filepath.Join(t.TempDir(), n)))
	}
	lines = append(lines, "--route={} -> "+strings.Join(names, ","))
	c, _, err := loadConfig("dicomgw serve", []string{"--flagfile", writeFile(t, "many.flags", strings.Join(lines, "\n")+"\n")}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	set, err := c.check(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(spool.Config{Dir: t.TempDir(), ImplementationClassUID: "2.25.1", ImplementationVersionName: "T"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	rt := newRouter(t.Context(), nil, sp, newTestRegistry(), slog.New(slog.DiscardHandler))
	if _, err := rt.apply(set.table, set.unrouted, set.dests); err != nil {
		t.Fatal(err)
	}
	w, err := sp.Create(spool.Meta{SOPClassUID: "1.2.840.10008.5.1.4.1.1.7", SOPInstanceUID: "1.2.3", TransferSyntaxUID: "1.2.840.10008.1.2.1", CallingAE: "CT1"})
	if err != nil {
		t.Fatal(err)
	}
	ds := appendUI(appendUI(nil, 0x0008, 0x0016, "1.2.840.10008.5.1.4.1.1.7"), 0x0008, 0x0018, "1.2.3")
	w.Write(ds)
	dests := append(append([]string{}, names...), "default")
	if _, err := w.CommitTo(dests); err != nil {
		t.Fatalf("committing to all %d destinations: %v", len(dests), err)
	}
}

func newTestRegistry() *prometheus.Registry { return prometheus.NewPedanticRegistry() }

// TestParseStamp: a stamp names a text attribute by keyword and a value its
// VR can hold whatever the placeholders become; anything else is refused
// when the flag is read, with the reason.
func TestParseStamp(t *testing.T) {
	ok := []string{
		"research=ClinicalTrialSponsorName={called_ae}",
		"research=ClinicalTrialProtocolID={calling_ae}-{received_date}",
		"r=InstitutionName=Research site",
		"r=PatientComments=",
	}
	for _, s := range ok {
		if _, err := parseStamp(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	for s, want := range map[string]string{
		"research":                                     "want DEST=Keyword=VALUE",
		"research=NoSuchKeyword=x":                     "not a DICOM keyword",
		"research=PixelData=x":                         "only text attributes",
		"research=SOPInstanceUID=1.2":                  "only text attributes",
		"research=Modality={calling_ae}":               "does not allow the characters",
		"research=StationName={calling_ae}{called_ae}": "holds at most 16 characters",
		"research=InstitutionName={patient_id}":        "unknown placeholder",
		"research=InstitutionName=a\\b":                "backslash",
		"research=StudyDate={calling_ae}":              "holds at most 8 characters",
	} {
		if _, err := parseStamp(s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error saying %q", s, err, want)
		}
	}
}
