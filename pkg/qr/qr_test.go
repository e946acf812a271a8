package qr

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// ident builds an Explicit VR Little Endian identifier.
func ident(els ...[3]string) []byte {
	var b []byte
	for _, e := range els {
		tag, _ := strconv.ParseUint(e[0], 16, 32)
		v := e[2]
		if len(v)%2 == 1 {
			v += " "
		}
		b = binary.LittleEndian.AppendUint16(b, uint16(tag>>16))
		b = binary.LittleEndian.AppendUint16(b, uint16(tag))
		b = append(b, e[1]...)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
		b = append(b, v...)
	}
	return b
}

const evle = "1.2.840.10008.1.2.1"

func TestParseQueryAndParams(t *testing.T) {
	q, err := ParseQuery(StudyRoot, evle, ident(
		[3]string{"00080052", "CS", "STUDY"},
		[3]string{"00100010", "PN", "DOE^J*"},
		[3]string{"0020000D", "UI", `1.2.3\1.2.4`},
		[3]string{"00080020", "DA", "20200101-20201231"},
		[3]string{"00080061", "CS", ""},
	))
	if err != nil {
		t.Fatal(err)
	}
	if q.Level != "STUDY" || len(q.Keys) != 4 || q.Keys[0].Tag != 0x00080020 {
		t.Fatalf("%+v", q)
	}
	want := url.Values{
		"00100010":     {"DOE^J*"},
		"0020000D":     {"1.2.3,1.2.4"},
		"00080020":     {"20200101-20201231"},
		"includefield": {"00080020", "00080061", "00100010", "0020000D"},
	}
	if got := q.Params(); !reflect.DeepEqual(got, want) {
		t.Fatalf("params\n got %v\nwant %v", got, want)
	}
	for _, c := range []struct {
		model string
		data  []byte
		want  uint16
	}{
		{StudyRoot, ident([3]string{"00100010", "PN", ""}), 0xA900},                                                 // no level
		{StudyRoot, ident([3]string{"00080052", "CS", "PATIENT"}), 0xA900},                                          // not in study root
		{PatientRoot, ident([3]string{"00080052", "CS", "WORLD"}), 0xA900},                                          // unknown level
		{StudyRoot, ident([3]string{"00080005", "CS", "ISO_IR 100"}, [3]string{"00080052", "CS", "STUDY"}), 0xC000}, // Latin-1
		{StudyRoot, ident([3]string{"00080052", "CS", "STUDY"})[:9], 0xA900},                                        // truncated
	} {
		_, err := ParseQuery(c.model, evle, c.data)
		var e *Error
		if !errors.As(err, &e) || e.Status != c.want {
			t.Errorf("%x: %v, want status %#x", c.data, err, c.want)
		}
	}
}

// TestEncode: the response identifier holds exactly the keys asked, with
// the result's values (empty when absent), numbers and person name groups
// as DICOM writes them, and ISO_IR 192 when a value is not ASCII.
func TestEncode(t *testing.T) {
	q := &Query{Level: "SERIES", Keys: []Key{
		{Tag: 0x00080060, VR: "CS"}, {Tag: 0x00100010, VR: "PN"}, {Tag: 0x00200011, VR: "IS"},
		{Tag: 0x00201209, VR: "IS"}, {Tag: 0x00281050, VR: "DS"}, {Tag: 0x00280010, VR: "US"},
	}}
	var obj map[string]attr
	if err := json.Unmarshal([]byte(`{
		"00080060": {"vr": "CS", "Value": ["MR"]},
		"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東", "Phonetic": ""}]},
		"00200011": {"vr": "IS", "Value": [7]},
		"00281050": {"vr": "DS", "Value": [40.5, -2]},
		"00280010": {"vr": "US", "Value": [512]}
	}`), &obj); err != nil {
		t.Fatal(err)
	}
	b, err := Encode(q, obj, evle)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint32]string{}
	for off := 0; off < len(b); {
		tag := uint32(binary.LittleEndian.Uint16(b[off:]))<<16 | uint32(binary.LittleEndian.Uint16(b[off+2:]))
		n := int(binary.LittleEndian.Uint16(b[off+6:]))
		got[tag] = string(b[off+8 : off+8+n])
		off += 8 + n
	}
	want := map[uint32]string{
		0x00080005: "ISO_IR 192", 0x00080052: "SERIES", 0x00080060: "MR", 0x00100010: "Wang^XiaoDong=王^小東= ",
		0x00200011: "7 ", 0x00201209: "", 0x00281050: `40.5\-2 `, 0x00280010: "\x00\x02",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("\n got %v\nwant %v", got, want)
	}
}

// TestPaging: pages are asked for until an empty one, whatever the
// server's own cap; a server that ignores offset is caught rather than
// looped on; a server error is ErrEndpoint.
func TestPaging(t *testing.T) {
	total := 23
	var offsets []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		offsets = append(offsets, r.URL.Query().Get("offset"))
		if r.URL.Query().Get("broken") == "offset" {
			w.Write([]byte(`[{"0020000D":{"vr":"UI","Value":["1.2.1"]}}]`))
			return
		}
		if r.URL.Query().Get("broken") == "500" {
			http.Error(w, "no", 500)
			return
		}
		off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
		var objs []string
		for i := off; i < total && i < off+4; i++ { // the server caps pages at 4
			objs = append(objs, `{"0020000D":{"vr":"UI","Value":["1.2.`+strconv.Itoa(i)+`"]}}`)
		}
		if len(objs) == 0 {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "application/dicom+json")
		w.Write([]byte("[" + strings.Join(objs, ",") + "]"))
	}))
	defer srv.Close()
	base, _ := url.Parse(srv.URL + "/dicom-web")
	c := &Client{Base: base, HTTP: srv.Client(), PageSize: 10}
	q := &Query{Model: StudyRoot, Level: "STUDY", Keys: []Key{{Tag: 0x0020000D, VR: "UI"}}}
	n := 0
	if err := c.Find(context.Background(), q, evle, func([]byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != total || strings.Join(offsets, ",") != "0,4,8,12,16,20,23" {
		t.Fatalf("%d matches over offsets %v", n, offsets)
	}
	for _, broken := range []string{"offset", "500"} {
		b2, _ := url.Parse(srv.URL + "/dicom-web?broken=" + broken)
		c2 := &Client{Base: b2, HTTP: srv.Client(), PageSize: 10}
		if err := c2.Find(context.Background(), q, evle, func([]byte) error { return nil }); !errors.Is(err, ErrEndpoint) {
			t.Errorf("broken %s: %v, want ErrEndpoint", broken, err)
		}
	}
}
