package main

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/dicomgw/dicomgw/pkg/dict"
	"github.com/dicomgw/dicomgw/pkg/forward"
	"github.com/dicomgw/dicomgw/pkg/rewrite"
	"github.com/dicomgw/dicomgw/pkg/spool"
)

// stampFlags is --stamp DEST=Keyword=VALUE: an attribute set on the copy a
// destination gets (Kaapana's Clinical Trial attributes from AE titles, a
// site's simple coercions). VALUE may use {calling_ae}, {called_ae} and
// {received_date}. Each value is checked when it is set, against what its
// VR allows whatever the placeholders become, so that a stamp can never
// make an object unsendable.
type stampFlags struct {
	specs []stampSpec
}

type stampSpec struct {
	Dest, Keyword, Template string
	Tag                     uint32
	VR                      string
	Origin                  string
}

// stampVRs are the VRs a stamp may set, with the longest value each
// allows (0: no limit short of 2^32-2) and the characters it refuses
// beyond control characters and the backslash (multiple values are not
// stamped).
var stampVRs = map[string]struct {
	max   int
	chars *regexp.Regexp // the whole value must match; nil: any text
}{
	"AE": {16, nil}, "CS": {16, regexp.MustCompile(`^[A-Z0-9 _]*$`)}, "DA": {8, regexp.MustCompile(`^[0-9]*$`)},
	"DS": {16, regexp.MustCompile(`^[0-9+\-Ee. ]*$`)}, "IS": {12, regexp.MustCompile(`^[0-9+\- ]*$`)},
	"LO": {64, nil}, "LT": {10240, nil}, "PN": {64 * 3, nil}, "SH": {16, nil}, "ST": {1024, nil},
	"TM": {14, regexp.MustCompile(`^[0-9.]*$`)}, "UC": {0, nil}, "UT": {0, nil},
}

// stampPlaceholders are what VALUE may use, with the longest text each
// may become and an example of its characters.
var stampPlaceholders = map[string]struct {
	max     int
	example string
}{
	"{calling_ae}": {16, "ct scanner_1"}, "{called_ae}": {16, "kp-ct"}, "{received_date}": {8, "20261205"},
}

var placeholderRE = regexp.MustCompile(`\{[a-z_]*\}`)

func parseStamp(s string) (stampSpec, error) {
	dest, rest, ok := strings.Cut(s, "=")
	kw, val, ok2 := strings.Cut(rest, "=")
	if !ok || !ok2 || dest == "" || kw == "" {
		return stampSpec{}, fmt.Errorf("%q: want DEST=Keyword=VALUE", s)
	}
	e, found := dict.ByKeyword(kw)
	if !found {
		return stampSpec{}, fmt.Errorf("%s: %q is not a DICOM keyword (PS3.6), e.g. ClinicalTrialSponsorName", dest, kw)
	}
	lim, ok := stampVRs[e.VR]
	if !ok {
		return stampSpec{}, fmt.Errorf("%s: %s is %s: only text attributes can be stamped (AE, CS, DA, DS, IS, LO, LT, PN, SH, ST, TM, UC, UT)", dest, kw, e.VR)
	}
	if e.Tag>>16 == 0x0002 || e.Tag>>16 == 0x0008 && e.Tag&0xFFFF == 0x0016 || e.Tag>>16 == 0x0008 && e.Tag&0xFFFF == 0x0018 {
		return stampSpec{}, fmt.Errorf("%s: %s cannot be stamped: the copy must stay the instance it is", dest, kw)
	}
	for _, p := range placeholderRE.FindAllString(val, -1) {
		if _, ok := stampPlaceholders[p]; !ok {
			return stampSpec{}, fmt.Errorf("%s: %s: unknown placeholder %s (one of {calling_ae}, {called_ae}, {received_date})", dest, kw, p)
		}
	}
	// The longest and the most varied value the template can become.
	longest, sample := val, val
	for p, v := range stampPlaceholders {
		longest = strings.ReplaceAll(longest, p, strings.Repeat("X", v.max))
		sample = strings.ReplaceAll(sample, p, v.example)
	}
	if lim.max > 0 && len(longest) > lim.max {
		return stampSpec{}, fmt.Errorf("%s: %s (%s) holds at most %d characters; %q can become %d", dest, kw, e.VR, lim.max, val, len(longest))
	}
	for i := 0; i < len(val); i++ {
		if c := val[i]; c < 0x20 || c == 0x7F || c == '\\' {
			return stampSpec{}, fmt.Errorf("%s: %s: a control character or backslash in %q (one value, printable)", dest, kw, val)
		}
	}
	if lim.chars != nil && !lim.chars.MatchString(sample) {
		return stampSpec{}, fmt.Errorf("%s: %s (%s) does not allow the characters %q may hold (AE titles can have lower case letters and spaces)", dest, kw, e.VR, val)
	}
	return stampSpec{Dest: dest, Keyword: kw, Template: val, Tag: e.Tag, VR: e.VR, Origin: "command line"}, nil
}

func (s stampSpec) String() string { return s.Dest + "=" + s.Keyword + "=" + s.Template }

func (f *stampFlags) String() string {
	out := make([]string, len(f.specs))
	for i, s := range f.specs {
		out[i] = s.String()
	}
	return "[" + strings.Join(out, ", ") + "]"
}

func (f *stampFlags) Type() string { return "stamp" }

func (f *stampFlags) Set(s string) error {
	sp, err := parseStamp(s)
	if err != nil {
		return err
	}
	for _, o := range f.specs {
		if o.Dest == sp.Dest && o.Tag == sp.Tag {
			return fmt.Errorf("%s=%s given twice (the other at %s)", sp.Dest, sp.Keyword, o.Origin)
		}
	}
	f.specs = append(f.specs, sp)
	return nil
}

func (f *stampFlags) setOrigin(where string) { f.specs[len(f.specs)-1].Origin = where }

// GetSlice is for check-config's listing (pflag.SliceValue).
func (f *stampFlags) GetSlice() []string {
	out := make([]string, len(f.specs))
	for i, s := range f.specs {
		out[i] = s.String()
	}
	return out
}

func (f *stampFlags) Append(s string) error { return f.Set(s) }

func (f *stampFlags) Replace(ss []string) error {
	f.specs = nil
	for _, s := range ss {
		if err := f.Set(s); err != nil {
			return err
		}
	}
	return nil
}

// attach gives each destination its stamps; a stamp for a destination that
// does not exist is an error naming its line.
func (f *stampFlags) attach(dests map[string]*dest) error {
	for _, s := range f.specs {
		d := dests[s.Dest]
		if d == nil {
			return fmt.Errorf("%s: --stamp %s: no destination %q", s.Origin, s, s.Dest)
		}
		d.stamps = append(d.stamps, s)
	}
	for _, d := range dests {
		if len(d.stamps) == 0 {
			continue
		}
		var parts []string
		for _, s := range d.stamps {
			parts = append(parts, s.Keyword+"="+s.Template)
		}
		slices.Sort(parts)
		d.spec += " stamps: " + strings.Join(parts, " ")
		d.key += "\x00stamps:" + strings.Join(parts, "\x00")
	}
	return nil
}

// stampValue is a stamp's value for one object, padded to even length.
func stampValue(s stampSpec, desc *spool.Description) []byte {
	v := strings.NewReplacer("{calling_ae}", desc.CallingAE, "{called_ae}", desc.CalledAE,
		"{received_date}", desc.Received.UTC().Format("20060102")).Replace(s.Template)
	if len(v)%2 == 1 {
		v += " " // text VRs pad with a space (PS3.5 6.2)
	}
	return []byte(v)
}

// stamped is the object as a destination with stamps gets it: its data set
// rewritten as it is read, its size that of the copy (read once to know
// it).
func stamped(obj *forward.Object, desc *spool.Description, stamps []stampSpec) (*forward.Object, error) {
	rs := make([]rewrite.Stamp, len(stamps))
	for i, s := range stamps {
		rs[i] = rewrite.Stamp{Tag: s.Tag, VR: s.VR, Value: stampValue(s, desc)}
	}
	rw, err := rewrite.New(obj.TransferSyntaxUID, rs)
	if err != nil {
		return nil, err
	}
	src, err := obj.Open()
	if err != nil {
		return nil, err
	}
	size, err := rw.Size(src)
	src.Close()
	if err != nil {
		return nil, err
	}
	open := obj.Open
	out := *obj
	out.DataSize = size
	out.Open = func() (io.ReadCloser, error) {
		src, err := open()
		if err != nil {
			return nil, err
		}
		return rw.Open(src), nil
	}
	return &out, nil
}
