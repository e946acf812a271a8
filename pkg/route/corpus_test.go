package route

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/dicomgw/dicomgw/pkg/dcmhead"
)

// TestCorpusRouting routes real files the way the gateway is to: the walk
// collects Table.Tags, and the table matches an Object built from them.
func TestCorpusRouting(t *testing.T) {
	const dir = "/work/shared/dicom-corpus"
	tab := newTable(t,
		`{Modality="MR", Rows="64", Columns="64"} -> mr64`,
		`{Modality="CT"} -> ct`,
		`{SOPClassUID="1.2.840.10008.5.1.4.1.1.4", called_ae=~"KP-.+"} -> kp-mr`,
		`{ImageType=~"ORIGINAL\\\\PRIMARY(\\\\.*)?"} -> original`,
		`{Modality!~"CT|MR"} -> other`,
	)
	for _, tc := range []struct {
		file string
		enc  dcmhead.Encoding
		want []string
	}{
		{"mr-explicit-be.dcm", dcmhead.ExplicitVRBigEndian, []string{"mr64", "kp-mr"}},
		{"mr-implicit-le.dcm", dcmhead.ImplicitVRLittleEndian, []string{"mr64", "kp-mr"}},
		{"ct-explicit-le.dcm", dcmhead.ExplicitVRLittleEndian, []string{"ct", "original"}},
		{"sc-deflated-explicit-le.dcm", dcmhead.DeflatedExplicitVRLittleEndian, []string{"other"}},
	} {
		b, err := os.ReadFile(filepath.Join(dir, tc.file))
		if errors.Is(err, os.ErrNotExist) {
			t.Skipf("corpus not available at %s", dir)
		}
		if err != nil {
			t.Fatal(err)
		}
		// Part 10: preamble, "DICM", then (0002,0000) UL giving the
		// length of the rest of the meta group.
		if len(b) < 144 || string(b[128:132]) != "DICM" || binary.LittleEndian.Uint32(b[132:]) != 0x00000002 {
			t.Fatalf("%s: no meta group length", tc.file)
		}
		off := 144 + int64(binary.LittleEndian.Uint32(b[140:]))
		sum, err := dcmhead.WalkCollect(bytes.NewReader(b), off, int64(len(b))-off, tc.enc, tab.Tags())
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		o := Object{CalledAE: "KP-9", CallingAE: "STORESCU", Peer: PeerAddr("127.0.0.1:5000"), Values: sum.Values}
		if got := tab.Match(o); !slices.Equal(got, tc.want) {
			t.Errorf("%s: routed to %q, want %q (values %v)", tc.file, got, tc.want, sum.Values)
		}
	}
}
