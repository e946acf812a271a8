package dict

import (
	"strings"
	"testing"

	"github.com/suyashkumar/dicom/pkg/tag"
)

// TestOracleSuyashkumar cross-checks every entry with the tag dictionary of
// github.com/suyashkumar/dicom, which was generated independently (from
// Innolitics' JSON rendering of a later PS3.6 edition). Each difference
// must be one of the known ones below, with its reason.
func TestOracleSuyashkumar(t *testing.T) {
	known := map[uint32]string{
		// The oracle files the repeating (0028,04x0)-(0028,04x3) under
		// (0028,0400)-(0028,0403), over the elements PS3.6 has there.
		0x00280400: "oracle: (0028,04x0) range pinned to (0028,0400)",
		0x00280401: "oracle: (0028,04x1) range pinned to (0028,0401)",
		0x00280402: "oracle: (0028,04x2) range pinned to (0028,0402)",
		0x00280403: "oracle: (0028,04x3) range pinned to (0028,0403)",
		// Written "1-n or 1" by the oracle.
		0x00281200: "oracle: VM notation",
		0x00283006: "oracle: VM notation",
		// Changed or retired by PS3.6 editions after 2022b.
		0x00089007: "later edition: Frame Type VM 4 became 4-5",
		0x00380004: "later edition: retired",
		0x00701807: "later edition: retired",
		0x00701808: "later edition: retired",
		0x30040010: "later edition: retired",
		0x30040012: "later edition: retired",
		0x30060085: "later edition: retired",
		0x30060088: "later edition: retired",
		0x3008002B: "later edition: retired",
		0x30100090: "later edition: retired",
	}
	same := 0
	for _, e := range entries {
		info, err := tag.Find(tag.Tag{Group: uint16(e.Tag >> 16), Element: uint16(e.Tag)})
		var diff []string
		if err != nil {
			diff = append(diff, "not in the oracle")
		} else {
			if info.Keyword != e.Keyword {
				diff = append(diff, "keyword "+info.Keyword)
			}
			if vr := strings.Join(info.VRs, " or "); vr != e.VR {
				diff = append(diff, "VR "+vr)
			}
			if info.VM != e.VM {
				diff = append(diff, "VM "+info.VM)
			}
			if info.Retired != e.Retired {
				diff = append(diff, "retired differs")
			}
		}
		why, isKnown := known[e.Tag]
		switch {
		case len(diff) == 0 && isKnown:
			t.Errorf("%08X %s: listed as a known difference (%s) but agrees", e.Tag, e.Keyword, why)
		case len(diff) == 0:
			same++
		case !isKnown:
			t.Errorf("%08X %s %s %s: oracle has %s", e.Tag, e.Keyword, e.VR, e.VM, strings.Join(diff, ", "))
		}
	}
	t.Logf("%d of %d entries agree with the oracle, %d known differences", same, len(entries), len(known))
}
