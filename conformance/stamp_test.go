package conformance

// stamp_test.go: --stamp (issue 15): a destination's copy carries the
// stamped attributes, filled from the association's AE titles; the other
// destination of the same route gets the originals bit for bit.

import (
	"strings"
	"testing"
	"time"
)

func TestStampOrthanc(t *testing.T) {
	pacs, research := startOrthanc(t, nil), startOrthanc(t, nil)
	g := startGateway(t, t.TempDir()+"/spool",
		"--destination", "pacs="+pacs.BaseURL(), "--destination", "research="+research.BaseURL(),
		"--route", "{} -> pacs,research",
		"--stamp", "research=ClinicalTrialSponsorName={called_ae}",
		"--stamp", "research=ClinicalTrialProtocolID={calling_ae}-{received_date}",
		"--stamp", "research=InstitutionName=Research copy")
	objs := studyObjects(t, t.TempDir(), 3, 4096)
	storeAll(t, g.Addr, "CT_SCANNER_1", objs)
	if _, err := research.WaitInstances(len(objs), 60*time.Second); err != nil {
		t.Fatalf("research: %v", err)
	}
	if _, err := pacs.WaitInstances(len(objs), 60*time.Second); err != nil {
		t.Fatalf("pacs: %v", err)
	}
	// The PACS has the originals, byte for byte.
	checkArrived(t, pacs, objs)
	// The research copy has the stamps, and is otherwise the object sent.
	ids, err := research.SOPInstanceUIDs()
	if err != nil {
		t.Fatal(err)
	}
	today := time.Now().UTC().Format("20060102")
	// The ledger tells the research copy from the original.
	waitDrained(t, g, 30*time.Second)
	recs := traceJSON(t, g.SpoolDir, "--study", objs[0].StudyInstanceUID)
	if len(recs) != len(objs) {
		t.Fatalf("spool trace: %d objects, want %d", len(recs), len(objs))
	}
	for _, rec := range recs {
		if len(rec.Destinations) != 2 {
			t.Errorf("spool trace: %s has %d destinations, want 2", rec.SOPInstance, len(rec.Destinations))
		}
		for _, d := range rec.Destinations {
			want := ""
			if d.Name == "research" {
				want = "stamped ClinicalTrialSponsorName=DICOMGW ClinicalTrialProtocolID=CT_SCANNER_1-" + today + " InstitutionName=Research copy"
			}
			if d.State != "delivered" || d.Copy != want {
				t.Errorf("spool trace: %s %s copy %q, want delivered, copy %q", rec.SOPInstance, d.Name, d.Copy, want)
			}
		}
	}
	for _, o := range objs {
		id := ids[o.SOPInstanceUID]
		if id == "" {
			t.Fatalf("%s is not in the research Orthanc", o.SOPInstanceUID)
		}
		var tags map[string]string
		if err := research.GetJSON("/instances/"+id+"/simplified-tags", &tags); err != nil {
			t.Fatal(err)
		}
		for k, want := range map[string]string{
			"ClinicalTrialSponsorName": "DICOMGW",
			"ClinicalTrialProtocolID":  "CT_SCANNER_1-" + today,
			"InstitutionName":          "Research copy",
			"PatientName":              "FORWARD^TEST",
			"StudyInstanceUID":         o.StudyInstanceUID,
		} {
			if got := strings.TrimSpace(tags[k]); got != want {
				t.Errorf("%s: %s = %q in the research copy, want %q", o.SOPInstanceUID, k, got, want)
			}
		}
	}
}
