package spool

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dicomgw/dicomgw/pkg/uid"
)

// dataSetWithStudy is dataSet with the given Study and Series Instance UIDs
// ("" leaves the element out).
func dataSetWithStudy(inst, study, series string) []byte {
	var b []byte
	short := func(g, e uint16, v string) {
		if len(v)%2 == 1 {
			v += "\x00"
		}
		b = binary.LittleEndian.AppendUint16(b, g)
		b = binary.LittleEndian.AppendUint16(b, e)
		b = append(b, "UI"...)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
		b = append(b, v...)
	}
	short(0x0008, 0x0016, ctClass)
	short(0x0008, 0x0018, inst)
	if study != "" {
		short(0x0020, 0x000D, study)
	}
	if series != "" {
		short(0x0020, 0x000E, series)
	}
	return b
}

// TestDataSetUIDPolicy: the data set's Study and Series Instance UIDs go
// through Config.UIDPolicy. A UID with a slash, a space, a control
// character, a non-ASCII byte or more than 64 bytes is a *UIDError (the
// sender gets C000) under both policies and leaves nothing behind; one that
// breaks PS3.5 9.1 in a tolerable way is stored under lenient and reported
// in Entry.Nonconforming, and refused under strict; a data set without
// them is stored under both (the forwarder files it under a placeholder).
func TestDataSetUIDPolicy(t *testing.T) {
	const good = "1.2.3.4"
	hex := strings.Repeat("0123456789abcdef", 4)
	cases := []struct {
		name          string
		study, series string
		lenient       []uid.Finding // nil: stored, conforming
		refusedBoth   *UIDError     // refused under both policies
	}{
		{"conforming", good, good + ".1", nil, nil},
		{"no study, no series", "", "", nil, nil},
		{"no series", good, "", nil, nil},
		{"hexadecimal study", hex, good, []uid.Finding{{Attribute: uid.StudyInstanceUID, Problem: uid.Letters}}, nil},
		{"leading zero series", good, "1.2.03", []uid.Finding{{Attribute: uid.SeriesInstanceUID, Problem: uid.LeadingZero}}, nil},
		{"both", "1..2", "1.2.", []uid.Finding{{Attribute: uid.StudyInstanceUID, Problem: uid.EmptyComponent}, {Attribute: uid.SeriesInstanceUID, Problem: uid.TrailingDot}}, nil},
		{"dot-dot study", "..", good, []uid.Finding{{Attribute: uid.StudyInstanceUID, Problem: uid.LeadingDot}}, nil},
		{"slash study", "../../x", good, nil, &UIDError{Attribute: uid.StudyInstanceUID, Problem: uid.Slash}},
		{"space series", good, "1.2 3", nil, &UIDError{Attribute: uid.SeriesInstanceUID, Problem: uid.Space}},
		{"control series", good, "1.2\n3", nil, &UIDError{Attribute: uid.SeriesInstanceUID, Problem: uid.Control}},
		{"non-ASCII study", "1.2.\u00e9", good, nil, &UIDError{Attribute: uid.StudyInstanceUID, Problem: uid.NonASCII}},
		{"65-byte study", "1." + strings.Repeat("2", 63), good, nil, &UIDError{Attribute: uid.StudyInstanceUID, Problem: uid.TooLong}},
	}
	for _, pol := range []uid.Policy{uid.Lenient, uid.Strict} {
		t.Run(pol.String(), func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(Config{Dir: dir, ImplementationClassUID: implUID, ImplementationVersionName: "TEST_1", UIDPolicy: pol}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			stored := 0
			for i, c := range cases {
				inst := "1.2.9." + strconv.Itoa(i)
				e, err := store(t, s, meta(inst), dataSetWithStudy(inst, c.study, c.series))
				var ue *UIDError
				switch {
				case c.refusedBoth != nil || pol == uid.Strict && c.lenient != nil:
					want := c.refusedBoth
					if want == nil {
						want = &UIDError{Attribute: c.lenient[0].Attribute, Problem: c.lenient[0].Problem}
					}
					if !errors.As(err, &ue) || ue.Attribute != want.Attribute || ue.Problem != want.Problem {
						t.Errorf("%s: err = %v, want a UIDError for the %v (%v)", c.name, err, want.Attribute, want.Problem)
					}
				case err != nil:
					t.Errorf("%s: %v", c.name, err)
				default:
					stored++
					if !slices.Equal(e.Nonconforming, c.lenient) {
						t.Errorf("%s: Nonconforming = %v, want %v", c.name, e.Nonconforming, c.lenient)
					}
					if e.StudyInstanceUID != c.study || e.SeriesInstanceUID != c.series {
						t.Errorf("%s: entry says study %q series %q", c.name, e.StudyInstanceUID, e.SeriesInstanceUID)
					}
				}
			}
			if got := listDir(t, filepath.Join(dir, queueDir)); len(got) != stored {
				t.Errorf("%d objects queued, %d stored: %v", len(got), stored, got)
			}
			if got := listDir(t, filepath.Join(dir, incomingDir)); len(got) != 0 {
				t.Errorf("incoming/ not empty: %v", got)
			}
		})
	}
	if _, err := Open(Config{Dir: t.TempDir(), ImplementationClassUID: implUID, ImplementationVersionName: "T", UIDPolicy: 7}, nil); err == nil {
		t.Error("Open accepted an unknown UID policy")
	}
}
