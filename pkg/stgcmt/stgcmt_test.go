package stgcmt

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"
)

const ct = "1.2.840.10008.5.1.4.1.1.2"

func hx(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

// TestReportGolden pins a report's bytes in both syntaxes (PS3.5 7.1.2,
// 7.5: defined lengths; UI padded with NUL; ascending tags: Transaction
// UID, Failed SOP Sequence, Referenced SOP Sequence).
func TestReportGolden(t *testing.T) {
	r := &Report{TransactionUID: "1.2.3", Success: []Ref{{"1.2", "1.2.4"}}, Failed: []Failure{{Ref{"1.2", "1.5"}, ReasonNoSuchObjectInstance}}}
	explicit := hx(`
		0800 9511 5549 0600 312e322e3300
		0800 9811 5351 0000 2a000000
		  feff 00e0 22000000
		    0800 5011 5549 0400 312e3200
		    0800 5511 5549 0400 312e3500
		    0800 9711 5553 0200 1201
		0800 9911 5351 0000 22000000
		  feff 00e0 1a000000
		    0800 5011 5549 0400 312e3200
		    0800 5511 5549 0600 312e322e3400`)
	implicit := hx(`
		0800 9511 06000000 312e322e3300
		0800 9811 2a000000
		  feff 00e0 22000000
		    0800 5011 04000000 312e3200
		    0800 5511 04000000 312e3500
		    0800 9711 02000000 1201
		0800 9911 22000000
		  feff 00e0 1a000000
		    0800 5011 04000000 312e3200
		    0800 5511 06000000 312e322e3400`)
	for ts, want := range map[string][]byte{ExplicitVRLittleEndian: explicit, ImplicitVRLittleEndian: implicit} {
		got, err := EncodeReport(r, ts)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %x\nwant %x", ts, got, want)
		}
	}
	if r.EventTypeID() != EventFailures || (&Report{TransactionUID: "1.2"}).EventTypeID() != EventSuccess {
		t.Error("event type IDs")
	}
}

// request builds a request data set by hand: refs as (class, instance)
// pairs, with defined or undefined lengths.
func request(explicit, undefined bool, tx string, refs ...Ref) []byte {
	e := &encoder{explicit: explicit}
	e.uid(tagTransaction, tx)
	if !undefined {
		e.sequence(tagRefSeq, len(refs), func(i int) {
			e.uid(tagSOPClass, refs[i].SOPClassUID)
			e.uid(tagSOPInstance, refs[i].SOPInstanceUID)
		})
		return e.b
	}
	e.header(tagRefSeq, "SQ", 0)
	binary.LittleEndian.PutUint32(e.b[len(e.b)-4:], undefinedLength)
	for _, r := range refs {
		e.b = append(e.b, 0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF)
		e.uid(tagSOPClass, r.SOPClassUID)
		e.uid(tagSOPInstance, r.SOPInstanceUID)
		e.b = append(e.b, 0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0)
	}
	return append(e.b, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0)
}

func TestDecodeRequest(t *testing.T) {
	refs := []Ref{{ct, "1.2.3.1"}, {ct, "1.2.3.2"}, {ct, "1.2.3.1"}} // one listed twice
	for _, explicit := range []bool{false, true} {
		for _, undefined := range []bool{false, true} {
			ts := map[bool]string{false: ImplicitVRLittleEndian, true: ExplicitVRLittleEndian}[explicit]
			got, err := DecodeRequest(request(explicit, undefined, "1.2.9", refs...), ts)
			if err != nil {
				t.Fatalf("explicit %v undefined %v: %v", explicit, undefined, err)
			}
			if want := (&Request{TransactionUID: "1.2.9", Refs: refs[:2]}); !reflect.DeepEqual(got, want) {
				t.Errorf("explicit %v undefined %v: %+v, want %+v", explicit, undefined, got, want)
			}
		}
	}
}

// TestDecodeDcmtkRequests decodes requests written by dcmtk's dump2dcm (a
// real encoder): both syntaxes, defined and undefined lengths, with
// elements and a nested sequence the gateway ignores.
func TestDecodeDcmtkRequests(t *testing.T) {
	dump2dcm, err := exec.LookPath("dump2dcm")
	if err != nil {
		t.Skip("dump2dcm (dcmtk) is not installed: make test installs it")
	}
	dir := t.TempDir()
	dump := `(0008,1195) UI [1.2.826.0.1.3680043.2.1143.99.1]
(0008,1111) SQ (Sequence with undefined length #=1)
  (fffe,e000) na (Item with undefined length #=2)
    (0008,1150) UI [1.2.840.10008.3.1.2.3.3]
    (0008,1155) UI [1.2.3.4.5.6]
    (0008,1111) SQ (Sequence with undefined length #=1)
      (fffe,e000) na (Item with undefined length #=1)
        (0010,0010) PN [Deeply^Nested]
      (fffe,e00d) na (ItemDelimitationItem)
    (fffe,e0dd) na (SequenceDelimitationItem)
  (fffe,e00d) na (ItemDelimitationItem)
(fffe,e0dd) na (SequenceDelimitationItem)
(0008,1199) SQ (Sequence with undefined length #=2)
  (fffe,e000) na (Item with undefined length #=2)
    (0008,1150) UI [1.2.840.10008.5.1.4.1.1.2]
    (0008,1155) UI [1.2.826.0.1.3680043.2.1143.1.1]
  (fffe,e00d) na (ItemDelimitationItem)
  (fffe,e000) na (Item with undefined length #=3)
    (0008,1150) UI [1.2.840.10008.5.1.4.1.1.4]
    (0008,1155) UI [1.2.826.0.1.3680043.2.1143.1.22]
    (0009,0010) LO [PRIVATE CREATOR]
  (fffe,e00d) na (ItemDelimitationItem)
(fffe,e0dd) na (SequenceDelimitationItem)
(2200,0001) LO [FILESET]
`
	in := filepath.Join(dir, "req.dump")
	if err := os.WriteFile(in, []byte(dump), 0o600); err != nil {
		t.Fatal(err)
	}
	want := &Request{TransactionUID: "1.2.826.0.1.3680043.2.1143.99.1", Refs: []Ref{
		{"1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.2.1143.1.1"},
		{"1.2.840.10008.5.1.4.1.1.4", "1.2.826.0.1.3680043.2.1143.1.22"},
	}}
	for _, c := range []struct {
		opts []string
		ts   string
	}{
		{[]string{"+ti", "+e"}, ImplicitVRLittleEndian},
		{[]string{"+ti", "-e"}, ImplicitVRLittleEndian},
		{[]string{"+te", "+e"}, ExplicitVRLittleEndian},
		{[]string{"+te", "-e"}, ExplicitVRLittleEndian},
	} {
		out := filepath.Join(dir, "req.dcm")
		args := append([]string{"-F"}, c.opts...)
		if b, err := exec.Command(dump2dcm, append(args, in, out)...).CombinedOutput(); err != nil {
			t.Fatalf("dump2dcm %v: %v\n%s", c.opts, err, b)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeRequest(data, c.ts)
		if err != nil {
			t.Fatalf("dump2dcm %v: %v", c.opts, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("dump2dcm %v: %+v, want %+v", c.opts, got, want)
		}
	}
}

// part10 wraps a data set into a Part 10 file, for tools that read files.
func part10(data []byte, ts string) []byte {
	var meta []byte
	el := func(e uint16, vr string, v []byte) {
		meta = binary.LittleEndian.AppendUint16(meta, 2)
		meta = binary.LittleEndian.AppendUint16(meta, e)
		meta = append(meta, vr...)
		if vr == "OB" {
			meta = append(meta, 0, 0)
			meta = binary.LittleEndian.AppendUint32(meta, uint32(len(v)))
		} else {
			meta = binary.LittleEndian.AppendUint16(meta, uint16(len(v)))
		}
		meta = append(meta, v...)
	}
	pad := func(s string) []byte {
		if len(s)%2 == 1 {
			return append([]byte(s), 0)
		}
		return []byte(s)
	}
	el(0x0001, "OB", []byte{0, 1})
	el(0x0002, "UI", pad(SOPClassUID))
	el(0x0003, "UI", pad("1.2.3.4"))
	el(0x0010, "UI", pad(ts))
	out := append(make([]byte, 128), "DICM"...)
	out = append(out, 2, 0, 0, 0, 'U', 'L', 4, 0)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(meta)))
	out = append(out, meta...)
	return append(out, data...)
}

// TestReportOracle: two other parsers read the encoded report the same:
// github.com/suyashkumar/dicom finds every UID and reason, and dcmtk's
// dcmdump reads it without a complaint.
func TestReportOracle(t *testing.T) {
	r := &Report{TransactionUID: "1.2.826.0.1.3680043.2.1143.99.1",
		Success: []Ref{{ct, "1.2.826.0.1.3680043.2.1143.1.1"}, {ct, "1.2.826.0.1.3680043.2.1143.1.2"}},
		Failed:  []Failure{{Ref{ct, "1.2.826.0.1.3680043.2.1143.1.3"}, ReasonNoSuchObjectInstance}, {Ref{ct, "1.2.826.0.1.3680043.2.1143.1.4"}, ReasonProcessingFailure}}}
	dcmdump, _ := exec.LookPath("dcmdump")
	for _, ts := range []string{ImplicitVRLittleEndian, ExplicitVRLittleEndian} {
		data, err := EncodeReport(r, ts)
		if err != nil {
			t.Fatal(err)
		}
		file := part10(data, ts)
		ds, err := dicom.Parse(bytes.NewReader(file), int64(len(file)), nil, dicom.SkipPixelData())
		if err != nil {
			t.Fatalf("%s: oracle: %v", ts, err)
		}
		var uids []string
		var reasons []int
		for it := ds.FlatStatefulIterator(); it.HasNext(); {
			e := it.Next()
			switch e.Tag {
			case tag.Tag{Group: 0x0008, Element: 0x1155}, tag.Tag{Group: 0x0008, Element: 0x1195}:
				uids = append(uids, e.Value.GetValue().([]string)...)
			case tag.Tag{Group: 0x0008, Element: 0x1197}:
				reasons = append(reasons, e.Value.GetValue().([]int)...)
			}
		}
		wantUIDs := []string{r.TransactionUID, r.Failed[0].SOPInstanceUID, r.Failed[1].SOPInstanceUID, r.Success[0].SOPInstanceUID, r.Success[1].SOPInstanceUID}
		if !reflect.DeepEqual(uids, wantUIDs) || !reflect.DeepEqual(reasons, []int{0x0112, 0x0110}) {
			t.Errorf("%s: oracle read UIDs %v reasons %v", ts, uids, reasons)
		}
		if dcmdump == "" {
			continue
		}
		path := filepath.Join(t.TempDir(), "report.dcm")
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(dcmdump, "-dc", path).CombinedOutput()
		if err != nil || bytes.Contains(out, []byte("E:")) || bytes.Contains(out, []byte("W:")) || !bytes.Contains(out, []byte("1.2.826.0.1.3680043.2.1143.1.4")) {
			t.Errorf("%s: dcmdump: %v\n%s", ts, err, out)
		}
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	good := request(true, false, "1.2.9", Ref{ct, "1.2.3.1"})
	noRef := (&encoder{explicit: true})
	noRef.uid(tagTransaction, "1.2.9")
	emptySeq := append(bytes.Clone(noRef.b), 0x08, 0x00, 0x99, 0x11, 'S', 'Q', 0, 0, 0, 0, 0, 0)
	noClass := &encoder{explicit: true}
	noClass.uid(tagTransaction, "1.2.9")
	noClass.sequence(tagRefSeq, 1, func(int) { noClass.uid(tagSOPInstance, "1.2.3") })
	for _, c := range []struct {
		name   string
		data   []byte
		ts     string
		status uint16
	}{
		{"big endian", good, "1.2.840.10008.1.2.2", statusMistypedArgument},
		{"no transaction UID", request(true, false, "", Ref{ct, "1.2.3.1"})[8:], ExplicitVRLittleEndian, statusInvalidArgumentValue},
		{"invalid transaction UID", request(true, false, "1.2/../9", Ref{ct, "1.2.3.1"}), ExplicitVRLittleEndian, statusInvalidArgumentValue},
		{"invalid instance UID", request(true, false, "1.2.9", Ref{ct, "1.2.3.1\n"}), ExplicitVRLittleEndian, statusInvalidArgumentValue},
		{"no sequence", noRef.b, ExplicitVRLittleEndian, statusInvalidArgumentValue},
		{"empty sequence", emptySeq, ExplicitVRLittleEndian, statusInvalidArgumentValue},
		{"item without class", noClass.b, ExplicitVRLittleEndian, statusInvalidArgumentValue},
		{"garbage", []byte("this is not a data set at all"), ExplicitVRLittleEndian, statusMistypedArgument},
		{"implicit read as explicit", request(false, false, "1.2.9", Ref{ct, "1.2.3.1"}), ExplicitVRLittleEndian, statusMistypedArgument},
		{"undefined sequence without delimiter", request(true, true, "1.2.9", Ref{ct, "1.2.3.1"})[:len(request(true, true, "1.2.9", Ref{ct, "1.2.3.1"}))-8],
			ExplicitVRLittleEndian, statusMistypedArgument},
	} {
		_, err := DecodeRequest(c.data, c.ts)
		var e *Error
		if !errors.As(err, &e) || e.Status != c.status {
			t.Errorf("%s: %v, want status 0x%04X", c.name, err, c.status)
		}
	}
	// Bounds.
	var many []Ref
	for i := range MaxRefs + 1 {
		many = append(many, Ref{ct, "1.2.3." + strconv.Itoa(i)})
	}
	_, err := DecodeRequest(request(true, false, "1.2.9", many...), ExplicitVRLittleEndian)
	var e *Error
	if !errors.As(err, &e) || e.Status != statusResourceLimitation {
		t.Errorf("%d refs: %v, want resource limitation", len(many), err)
	}
	if _, err := DecodeRequest(make([]byte, MaxRequestBytes+1), ExplicitVRLittleEndian); !errors.As(err, &e) || e.Status != statusResourceLimitation {
		t.Errorf("oversized: %v", err)
	}
	// Deep nesting of an ignored sequence.
	deep := &encoder{explicit: true}
	deep.uid(tagTransaction, "1.2.9")
	var nest func(d int)
	nest = func(d int) {
		if d == 0 {
			return
		}
		deep.sequence(0x00081111, 1, func(int) { nest(d - 1) })
	}
	nest(maxDepth + 2)
	if _, err := DecodeRequest(deep.b, ExplicitVRLittleEndian); !errors.As(err, &e) || e.Status != statusMistypedArgument {
		t.Errorf("deep nesting: %v", err)
	}
	// Every truncation of valid requests fails cleanly, never panics.
	for _, data := range [][]byte{good, request(false, true, "1.2.9", Ref{ct, "1.2.3.1"}, Ref{ct, "1.2.3.2"})} {
		for n := range len(data) {
			for _, ts := range []string{ImplicitVRLittleEndian, ExplicitVRLittleEndian} {
				if r, err := DecodeRequest(data[:n], ts); err == nil && len(r.Refs) == 0 {
					t.Fatalf("truncated at %d: accepted with no refs", n)
				}
			}
		}
	}
}

func TestEncodeReportRefusesInvalid(t *testing.T) {
	for _, r := range []*Report{
		{TransactionUID: ""},
		{TransactionUID: "1.2", Success: []Ref{{ct, "1.2 3"}}},
		{TransactionUID: "1.2", Failed: []Failure{{Ref{"x/y", "1.2"}, ReasonProcessingFailure}}},
	} {
		if _, err := EncodeReport(r, ExplicitVRLittleEndian); err == nil {
			t.Errorf("%+v encoded", r)
		}
	}
	if _, err := EncodeReport(&Report{TransactionUID: "1.2"}, "1.2.840.10008.1.2.2"); err == nil {
		t.Error("big endian encoded")
	}
}

// FuzzDecodeRequest: whatever the bytes, no panic; what decodes has a
// valid Transaction UID and unique, valid refs that encode again.
func FuzzDecodeRequest(f *testing.F) {
	for _, explicit := range []bool{false, true} {
		for _, undefined := range []bool{false, true} {
			f.Add(request(explicit, undefined, "1.2.9", Ref{ct, "1.2.3.1"}, Ref{ct, "1.2.3.2"}), explicit)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, explicit bool) {
		ts := ImplicitVRLittleEndian
		if explicit {
			ts = ExplicitVRLittleEndian
		}
		r, err := DecodeRequest(data, ts)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		seen := map[string]bool{}
		for _, ref := range r.Refs {
			if seen[ref.SOPInstanceUID] {
				t.Fatalf("instance %q listed twice", ref.SOPInstanceUID)
			}
			seen[ref.SOPInstanceUID] = true
		}
		if len(r.Refs) == 0 {
			t.Fatal("decoded without refs")
		}
		if _, err := EncodeReport(&Report{TransactionUID: r.TransactionUID, Success: r.Refs}, ts); err != nil {
			t.Fatalf("decoded UIDs do not encode: %v", err)
		}
	})
}
