package harness

import (
	"bytes"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestOrthanc starts Orthanc, stores a generated object through its REST
// API, finds it again by every route the tests use (statistics, the
// instance list, /tools/lookup, QIDO-RS), checks that the file it keeps
// holds our data set byte for byte, and that a restart on the same ports
// and storage still has it.
func TestOrthanc(t *testing.T) {
	if err := CheckOrthanc(); err != nil {
		t.Fatal(err) // names the Debian packages
	}
	dir := t.TempDir()
	o, err := StartOrthanc(dir, map[string]any{"Name": "harness-test", "DicomWeb": map[string]any{"StudiesMetadata": "MainDicomTags"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Kill)

	cfg, err := os.ReadFile(o.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"Name": "harness-test"`, `"Root": "/dicom-web/"`, `"StudiesMetadata": "MainDicomTags"`, `"RemoteAccessAllowed": false`} {
		if !bytes.Contains(cfg, []byte(want)) {
			t.Errorf("configuration lacks %s:\n%s", want, cfg)
		}
	}
	if n, err := o.CountInstances(); err != nil || n != 0 {
		t.Fatalf("fresh Orthanc holds %d instances (%v)", n, err)
	}

	sop, study := NewUID(), NewUID()
	var ds Elements
	ds.Str(0x0008, 0x0016, "UI", "1.2.840.10008.5.1.4.1.1.7")
	ds.Str(0x0008, 0x0018, "UI", sop)
	ds.Str(0x0008, 0x0060, "CS", "OT")
	ds.Str(0x0010, 0x0010, "PN", "HARNESS^ORTHANC")
	ds.Str(0x0010, 0x0020, "LO", "H1")
	ds.Str(0x0020, 0x000D, "UI", study)
	ds.Str(0x0020, 0x000E, "UI", NewUID())
	path := filepath.Join(t.TempDir(), "o.dcm")
	if _, err := WritePart10(path, FileMeta{MediaStorageSOPClassUID: "1.2.840.10008.5.1.4.1.1.7", MediaStorageSOPInstanceUID: sop, TransferSyntaxUID: "1.2.840.10008.1.2.1"}, ds, 0, nil); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Post("/instances", "application/dicom", file); err != nil {
		t.Fatal(err)
	}

	if n, err := o.WaitInstances(1, 10*time.Second); err != nil || n != 1 {
		t.Fatalf("after one upload Orthanc holds %d instances (%v)", n, err)
	}
	uids, err := o.SOPInstanceUIDs()
	if err != nil || len(uids) != 1 || uids[sop] == "" {
		t.Errorf("SOPInstanceUIDs = %v (%v), want just %s", uids, err, sop)
	}
	if id, err := o.InstanceID(sop); err != nil || id != uids[sop] {
		t.Errorf("InstanceID = %q (%v), want %q", id, err, uids[sop])
	}
	if id, err := o.InstanceID(NewUID()); err != nil || id != "" {
		t.Errorf("InstanceID of an unknown UID = %q (%v)", id, err)
	}
	got, err := o.InstanceFile(sop)
	if err != nil {
		t.Fatal(err)
	}
	gotPath := filepath.Join(t.TempDir(), "got.dcm")
	os.WriteFile(gotPath, got, 0o644)
	if gotDS, err := DataSet(gotPath); err != nil || !bytes.Equal(gotDS, ds) {
		t.Errorf("Orthanc's file holds another data set (%v)", err)
	}
	found, err := o.QIDOInstances(url.Values{"StudyInstanceUID": {study}})
	if err != nil || len(found) != 1 || DICOMJSONString(found[0], "00080018") != sop {
		t.Errorf("QIDO-RS for the study: %v (%v)", found, err)
	}

	// Same ports, same storage.
	port := o.HTTPPort
	if err := o.Stop(30 * time.Second); err != nil {
		t.Errorf("Orthanc did not stop cleanly on SIGTERM: %v", err)
	}
	if _, err := o.CountInstances(); err == nil {
		t.Error("the REST API still answers after Stop")
	}
	if err := o.Restart(); err != nil {
		t.Fatal(err)
	}
	if o.HTTPPort != port {
		t.Errorf("restarted on port %d, was %d", o.HTTPPort, port)
	}
	if n, err := o.CountInstances(); err != nil || n != 1 {
		t.Errorf("after a restart Orthanc holds %d instances (%v), want the 1 stored before", n, err)
	}
	if err := o.Restart(); err == nil {
		t.Error("Restart of a running Orthanc did not fail")
	}
}
