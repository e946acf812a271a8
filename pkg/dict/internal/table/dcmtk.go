package table

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// DcmtkDic is where Debian's libdcmtk17 (DCMTK 3.6.7) installs the DICOM
// data dictionary that dictionary.tsv was converted from.
const DcmtkDic = "/usr/share/libdcmtk17/dicom.dic"

// dcmtkVR maps DCMTK's internal pseudo-VRs for elements whose VR PS3.6 gives
// as a choice to the PS3.6 text.
var dcmtkVR = map[string]string{
	"xs": "US or SS",       // EVR_xs
	"ox": "OB or OW",       // EVR_ox
	"px": "OB or OW",       // EVR_px: Pixel Data
	"lt": "US or SS or OW", // EVR_lt: lookup table data
	"up": "UL",             // EVR_up: a UL that DCMTK resolves as a file offset
}

// dcmtkVROverride corrects where DCMTK's pseudo-VR is broader than PS3.6.
var dcmtkVROverride = map[uint32]string{
	0x00283006: "US or OW", // LUT Data: DCMTK's "lt" also allows SS; PS3.6 does not
}

// Skipped counts the dicom.dic entries FromDcmtk leaves out, by reason.
type Skipped struct {
	Ranges    int // repeating groups or elements, e.g. (6000-60FF,3000), (0020,3100-31FF)
	Pinned    int // DCMTK's hand-added retired ranges pinned to one tag, e.g. (1000,0010) for (1000,xxx0)
	NotDICOM  int // DCMTK's generic, illegal and private-range entries
	Command   int // group 0000, the command set of PS3.7
	Items     int // (FFFE,E000), (FFFE,E00D), (FFFE,E0DD): no VR
	Edition   string
	Generated string
}

// manualSection starts the end of dicom.dic where DCMTK added, by hand,
// retired elements whose PS3.6 tags are ranges ((0028,04x0), (0028,08x0),
// (1000,xxx0), (1010,xxxx)), each pinned to one tag of its range.
const manualSection = "# (This section is not generated automatically but added manually.)"

// FromDcmtk converts DCMTK's dicom.dic (tab-separated "(gggg,eeee) VR Name
// VM Version" lines) into dictionary rows, in ascending tag order. It keeps
// the standard elements with an exact tag, group 0002 (file meta, PS3.6 7)
// and group 0004 (directory structuring, PS3.6 8) included. It leaves out
// range entries (repeating groups: curves, overlays, variable pixel data;
// their keywords stand for many tags, and the retired ranges that DCMTK pins
// to one tag in a section it adds by hand), DCMTK's generic and private entries,
// the command group 0000 (PS3.7, not PS3.6) and the item and delimitation
// tags, and says how many of each it left out. DCMTK writes retired keywords
// with a "RETIRED_" prefix; it is removed and the row marked retired.
func FromDcmtk(r io.Reader) ([]Row, Skipped, error) {
	var (
		rows   []Row
		sk     Skipped
		manual bool
	)
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "# Generated automatically from ") {
			sk.Generated = strings.TrimPrefix(line, "# ")
		}
		if line == manualSection {
			manual = true
		}
		if line == "" || line[0] == '#' {
			continue
		}
		if manual {
			sk.Pinned++
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 5 {
			return nil, sk, fmt.Errorf("dicom.dic line %d: %d fields, want 5", n, len(f))
		}
		tagText, vr, keyword, vm, version := f[0], f[1], f[2], f[3], f[4]
		switch version {
		case "DICOM", "DICOM/retired", "DICOM/DICONDE", "DICOM/DICOS":
		default:
			sk.NotDICOM++
			continue
		}
		if strings.Contains(tagText, "-") {
			sk.Ranges++
			continue
		}
		tag, err := parseDcmtkTag(tagText)
		if err != nil {
			return nil, sk, fmt.Errorf("dicom.dic line %d: %w", n, err)
		}
		switch tag >> 16 {
		case 0x0000:
			sk.Command++
			continue
		case 0xFFFE:
			sk.Items++
			continue
		}
		retired := version == "DICOM/retired"
		kw, prefixed := strings.CutPrefix(keyword, "RETIRED_")
		if prefixed != retired {
			return nil, sk, fmt.Errorf("dicom.dic line %d: keyword %s with version %s", n, keyword, version)
		}
		if v, ok := dcmtkVR[vr]; ok {
			vr = v
		}
		if v, ok := dcmtkVROverride[tag]; ok {
			vr = v
		}
		row := Row{Tag: tag, VR: vr, VM: vm, Keyword: kw, Retired: retired}
		if err := checkTag(tag); err != nil {
			return nil, sk, fmt.Errorf("dicom.dic line %d: %w", n, err)
		}
		if err := CheckVR(row.VR); err != nil {
			return nil, sk, fmt.Errorf("dicom.dic line %d: %w", n, err)
		}
		if err := checkVM(row.VM); err != nil {
			return nil, sk, fmt.Errorf("dicom.dic line %d: %w", n, err)
		}
		if err := checkKeyword(row.Keyword); err != nil {
			return nil, sk, fmt.Errorf("dicom.dic line %d: %w", n, err)
		}
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		return nil, sk, err
	}
	slices.SortFunc(rows, func(a, b Row) int { return compareUint32(a.Tag, b.Tag) })
	return rows, sk, nil
}

func parseDcmtkTag(s string) (uint32, error) {
	if len(s) != 11 || s[0] != '(' || s[5] != ',' || s[10] != ')' {
		return 0, fmt.Errorf("tag %q is not (gggg,eeee)", s)
	}
	g, err1 := strconv.ParseUint(s[1:5], 16, 16)
	e, err2 := strconv.ParseUint(s[6:10], 16, 16)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("tag %q is not (gggg,eeee)", s)
	}
	return uint32(g)<<16 | uint32(e), nil
}

// WriteTSV renders rows as dictionary.tsv, with a header that records the
// source and what was left out.
func WriteTSV(rows []Row, sk Skipped) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `# DICOM data dictionary for dicomgw: the data elements of DICOM PS3.6
# (section 6, with the file meta elements of section 7 and the directory
# structuring elements of section 8), one per line.
#
# Source: DCMTK 3.6.7's data dictionary, %s,
# as installed by Debian's libdcmtk17 3.6.7; DCMTK's header says:
#   %s
# It includes the DICONDE and DICOS elements that PS3.6 registers.
# Converted by pkg/dict/dcmtk.go (pkg/dict/internal/table.FromDcmtk); edit the
# conversion, not this file, then run: go generate ./pkg/dict
#
# Left out: %d entries for ranges of tags (repeating groups such as
# (6000-60FF,3000) Overlay Data and (5000-50FF,3000) Curve Data, and
# (0020,3100-31FF)), whose keyword stands for many tags; %d retired
# elements whose PS3.6 tags are ranges too ((0028,04x0), (0028,08x0),
# (1000,xxx0), (1010,xxxx)), which DCMTK adds by hand, each pinned to one
# tag; %d of DCMTK's own generic and private-range entries (group lengths,
# private creators); %d command elements of group 0000 (PS3.7, not PS3.6);
# %d item and delimitation tags of group FFFE (no VR). Private elements are
# not in DCMTK's dicom.dic.
#
# Where PS3.6 gives a choice of VR, the VR column says so as PS3.6 does
# ("US or SS", "OB or OW", "US or OW", "US or SS or OW"); DCMTK's pseudo-VRs
# xs, ox, px, lt and up are written that way (up as UL), and LUT Data
# (0028,3006) as "US or OW", as PS3.6 has it.
#
# Columns: tag (group and element, hex), VR, VM, keyword, retired.
`, DcmtkDic, sk.Generated, sk.Ranges, sk.Pinned, sk.NotDICOM, sk.Command, sk.Items)
	for _, r := range rows {
		fmt.Fprintf(&b, "%08X\t%s\t%s\t%s\t%t\n", r.Tag, r.VR, r.VM, r.Keyword, r.Retired)
	}
	return b.Bytes()
}
