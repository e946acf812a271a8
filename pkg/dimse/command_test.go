package dimse

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func hx(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

// TestCommandGolden pins a C-ECHO-RQ command set: Implicit VR Little
// Endian, group length first, elements ascending, UI padded with NUL to
// even length (PS3.7 6.3.1, E.1; PS3.5 7.1.1, 6.2 UI).
func TestCommandGolden(t *testing.T) {
	c := &Command{
		AffectedSOPClassUID: "1.2.840.10008.1.1", CommandField: CEchoRQ, MessageID: 7,
		CommandDataSetType: NoDataSet, Has: HasAffectedSOPClassUID | HasMessageID,
	}
	want := hx(`
		0000 0000 04000000 38000000
		0000 0200 12000000` + hex.EncodeToString([]byte("1.2.840.10008.1.1\x00")) + `
		0000 0001 02000000 3000
		0000 1001 02000000 0700
		0000 0008 02000000 0101`)
	got := AppendCommand(nil, c)
	if !bytes.Equal(got, want) {
		t.Fatalf("encode:\n got %x\nwant %x", got, want)
	}
	dec, err := DecodeCommand(got)
	if err != nil {
		t.Fatal(err)
	}
	c.Has |= HasCommandField | HasCommandDataSetType
	if !reflect.DeepEqual(dec, c) {
		t.Fatalf("decode:\n got %+v\nwant %+v", dec, c)
	}
}

func TestCommandRoundTrip(t *testing.T) {
	c := &Command{
		AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.1.2", CommandField: CStoreRSP,
		MessageIDBeingRespondedTo: 65535, CommandDataSetType: NoDataSet, Status: StatusDataSetDoesNotMatchClass,
		ErrorComment: "SOP Instance UID mismatch", AffectedSOPInstanceUID: "1.2.3.4",
		MoveOriginatorAE: "MOVER", MoveOriginatorMessageID: 3, Priority: 2,
		Has: HasAffectedSOPClassUID | HasMessageIDBeingRespondedTo | HasStatus | HasErrorComment |
			HasAffectedSOPInstanceUID | HasMoveOriginatorAE | HasMoveOriginatorMessageID | HasPriority |
			HasCommandField | HasCommandDataSetType,
	}
	dec, err := DecodeCommand(AppendCommand(nil, c))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dec, c) {
		t.Fatalf("got %+v\nwant %+v", dec, c)
	}
}

// TestCommandErrors: every length is checked against what is left, and
// only group 0000 may appear (PS3.7 6.3.1).
func TestCommandErrors(t *testing.T) {
	for name, b := range map[string][]byte{
		"other group":      hx("0800 1600 04000000 31320000"),
		"overrun":          hx("0000 0001 10000000 3000"),
		"huge length":      hx("0000 0001 FFFFFFFF 3000"),
		"partial header":   hx("0000 0001 0200"),
		"US of 3 bytes":    hx("0000 0001 03000000 300000"),
		"no command field": hx("0000 0008 02000000 0101"),
		"no data set type": hx("0000 0001 02000000 3000"),
		"too long":         make([]byte, MaxCommandLength+1),
	} {
		if _, err := DecodeCommand(b); !errors.Is(err, ErrCommand) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	// Unknown group 0000 elements are skipped.
	b := append(hx("0000 0001 02000000 3000 0000 0008 02000000 0101"), hx("0000 FF0F 02000000 AAAA")...)
	if c, err := DecodeCommand(b); err != nil || c.CommandField != CEchoRQ {
		t.Fatalf("%+v, %v", c, err)
	}
}

// FuzzDecodeCommand: no panic on any input; whatever decodes re-encodes to
// something that decodes to the same command.
func FuzzDecodeCommand(f *testing.F) {
	f.Add(AppendCommand(nil, &Command{AffectedSOPClassUID: "1.2", CommandField: CStoreRQ, MessageID: 1, AffectedSOPInstanceUID: "1.2.3",
		CommandDataSetType: 0, Has: HasAffectedSOPClassUID | HasMessageID | HasAffectedSOPInstanceUID}))
	f.Add(hx("0000 0001 FFFFFFFF"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		c2, err := DecodeCommand(AppendCommand(nil, c))
		if err != nil {
			t.Fatalf("re-encoded command does not decode: %v", err)
		}
		// Padding may be trimmed once more on the way back; compare what
		// the second pass is stable on.
		c3, _ := DecodeCommand(AppendCommand(nil, c2))
		if !reflect.DeepEqual(c2, c3) {
			t.Fatalf("not stable:\n%+v\n%+v", c2, c3)
		}
	})
}

func TestStatusStrings(t *testing.T) {
	for st, want := range map[Status]string{
		StatusSuccess:                  "0x0000 (Success)",
		StatusOutOfResources:           "0xA700 (Refused: out of resources)",
		0xA7FF:                         "0xA7FF (Refused: out of resources)",
		StatusDataSetDoesNotMatchClass: "0xA900 (Error: data set does not match SOP class)",
		0xC123:                         "0xC123 (Error: cannot understand)",
		StatusElementsDiscarded:        "0xB006 (Warning: elements discarded)",
		0xFE00:                         "0xFE00 (cancel)",
	} {
		if got := st.String(); got != want {
			t.Errorf("%04X: %q, want %q", uint16(st), got, want)
		}
	}
	if got := errorComment(strings.Repeat("x\\\n", 40)); len(got) != 64 || strings.ContainsAny(got, "\\\n") {
		t.Errorf("errorComment: %q", got)
	}
}
