package route

import (
	"slices"
	"strings"
	"testing"
)

// facts is a Facts from a map.
type facts map[string]string

func (f facts) Get(key string) string { return f[key] }

func mustParse(t testing.TB, spec string) Route {
	t.Helper()
	r, err := Parse(spec)
	if err != nil {
		t.Fatalf("Parse(%q): %v", spec, err)
	}
	return r
}

func TestParseCanonical(t *testing.T) {
	for _, tt := range []struct{ spec, want string }{
		{`{called_ae="PROJ1"} -> kaapana`, `{called_ae="PROJ1"} -> kaapana`},
		{`{called_ae=~"KP-.+", Modality!="SR"} -> kp,archive`, `{called_ae=~"KP-.+", Modality!="SR"} -> kp,archive`},
		{`{}->all`, `{} -> all`},
		{"  {  }   ->   a ,  b-2,c_3  ", `{} -> a,b-2,c_3`},
		{"\t{Modality = \"CT\" ,calling_ae!~ \"TEST.*\" ,}\t->\tx\t", `{Modality="CT", calling_ae!~"TEST.*"} -> x`},
		// Unquoted values, as Alertmanager accepts them.
		{`{Modality=CT, peer=10.0.0.1} -> x`, `{Modality="CT", peer="10.0.0.1"} -> x`},
		{`{Modality=} -> x`, `{Modality=""} -> x`},
		// Quoting: escaped quotes and backslashes, commas, braces and "->" in values.
		{`{StudyDescription="say \"hi\", then \\ go"} -> x`, `{StudyDescription="say \"hi\", then \\ go"} -> x`},
		{`{StudyDescription="a}b -> c"} -> x`, `{StudyDescription="a}b -> c"} -> x`},
		{`{StudyDescription=~"Thorax\\^.*"} -> x`, `{StudyDescription=~"Thorax\\^.*"} -> x`},
		{`{InstitutionName="Universitätsklinikum"} -> x`, `{InstitutionName="Universitätsklinikum"} -> x`},
		// Repeated keys; retired keywords.
		{`{called_ae=~"KP-.+", called_ae!="KP-TEST"} -> x`, `{called_ae=~"KP-.+", called_ae!="KP-TEST"} -> x`},
		{`{LengthToEnd="1"} -> x`, `{LengthToEnd="1"} -> x`},
		{`{Rows="512", SOPClassUID="1.2.840.10008.5.1.4.1.1.2"} -> x`, `{Rows="512", SOPClassUID="1.2.840.10008.5.1.4.1.1.2"} -> x`},
		{`{} -> ` + strings.Repeat("a", 32), `{} -> ` + strings.Repeat("a", 32)},
		{`{} -> 0`, `{} -> 0`},
	} {
		r := mustParse(t, tt.spec)
		if got := r.String(); got != tt.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.spec, got, tt.want)
		}
		if again := mustParse(t, r.String()); again.String() != r.String() {
			t.Errorf("reparsed %q as %q", r.String(), again.String())
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct{ spec, want string }{
		{``, `a route starts with "{"`},
		{`called_ae="X" -> a`, `a route starts with "{"`},
		{`{called_ae="X" -> a`, `no "}" closes the matchers`},
		{`{called_ae="X}" -> a`, `no "}" closes the matchers`},
		{`{called_ae="X"}`, `want "->" and destinations after the matchers, found ""`},
		{`{called_ae="X"} a`, `want "->" and destinations after the matchers, found "a"`},
		{`{called_ae="X"} => a`, `found "=> a"`},
		{`{} -> `, `no destination after "->"`},
		{`{} -> a,`, `empty destination name`},
		{`{} -> a,,b`, `empty destination name`},
		{`{} -> A`, `destination name "A": want a lower-case letter or digit`},
		{`{} -> -a`, `destination name "-a"`},
		{`{} -> _a`, `destination name "_a"`},
		{`{} -> a.b`, `destination name "a.b"`},
		{`{} -> a b`, `destination name "a b"`},
		{`{} -> a -> b`, `destination name "a -> b"`},
		{`{} -> ` + strings.Repeat("a", 33), `longer than 32 characters`},
		{`{} -> a,b,a`, `destination "a" listed twice`},
		{`{Modalty="CT"} -> a`, `unknown key "Modalty": not called_ae, calling_ae, peer or a DICOM keyword`},
		{`{modality="CT"} -> a`, `unknown key "modality"`},
		{`{CalledAE="X"} -> a`, `unknown key "CalledAE"`},
		{`{a:b="X"} -> a`, `unknown key "a:b"`},
		{`{PixelData=""} -> a`, `key "PixelData": values of VR OB or OW are not read for routing`},
		{`{ReferencedSeriesSequence=""} -> a`, `key "ReferencedSeriesSequence": values of VR SQ are not read`},
		{`{SmallestImagePixelValue="0"} -> a`, `values of VR US or SS are not read`},
		{`{TransferSyntaxUID="1.2.840.10008.1.2"} -> a`, `key "TransferSyntaxUID": a file meta element`},
		{`{called_ae=~"KP-(.+"} -> a`, `invalid regular expression: missing closing ): "KP-(.+"`},
		{`{called_ae=~"*"} -> a`, `invalid regular expression: missing argument to repetition operator: "*"`},
		{`{called_ae!~"a\\q"} -> a`, `invalid regular expression: invalid escape sequence: "\\q"`},
		{`{called_ae="X" "} -> a`, `no "}" closes the matchers`},
		{`{called_ae="X"Y} -> a`, `invalid matchers: matcher value contains unescaped double quote`},
		{`{called_ae="X"Y"} -> a`, `no "}" closes the matchers`},
		{`{called_ae=="X"} -> a`, `invalid matchers: matcher value contains unescaped double quote`},
		{`{called_ae} -> a`, `invalid matchers: bad matcher format: called_ae`},
		{`{,} -> a`, `invalid matchers: bad matcher format`},
		{`{"called_ae"="X"} -> a`, `invalid matchers: bad matcher format`},
		{`{{called_ae="X"}} -> a`, `unexpected "{" inside the matchers`},
		{`{called_ae="A\nB"} -> a`, `the value holds a control character`},
		{"{called_ae=\"A\tB\"} -> a", `the value holds a control character`},
		{"{called_ae=\"A\u0085B\"} -> a", `the value holds a control character`},
		{"{called_ae=\"\xff\"} -> a", `route is not valid UTF-8`},
	} {
		r, err := Parse(tt.spec)
		if err == nil {
			t.Errorf("Parse(%q) = %s, want an error containing %q", tt.spec, r, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q): %q, want it to contain %q", tt.spec, err, tt.want)
		}
		if strings.ContainsAny(err.Error(), "\n\r") {
			t.Errorf("Parse(%q): error of several lines: %q", tt.spec, err)
		}
	}
}

func TestMatch(t *testing.T) {
	ct := facts{"called_ae": "KP-1", "calling_ae": "CT01", "peer": "10.1.2.3", "Modality": "CT", "StudyDescription": "Thorax^Routine"}
	for _, tt := range []struct {
		spec string
		f    facts
		want bool
	}{
		{`{}`, ct, true},
		{`{}`, facts{}, true},
		{`{called_ae="PROJ1"}`, facts{"called_ae": "PROJ1"}, true},
		{`{called_ae="PROJ1"}`, facts{"called_ae": "PROJ10"}, false},
		{`{called_ae="PROJ1"}`, facts{"called_ae": "proj1"}, false},
		{`{called_ae=~"KP-.+", Modality!="SR"}`, ct, true},
		{`{called_ae=~"KP-.+", Modality!="SR"}`, facts{"called_ae": "KP-1", "Modality": "SR"}, false},
		{`{called_ae=~"KP-.+", Modality!="SR"}`, facts{"called_ae": "KP-1"}, true}, // absent is "", not "SR"
		// Fully anchored.
		{`{called_ae=~"KP-.+"}`, facts{"called_ae": "xKP-1"}, false},
		{`{called_ae=~"KP-.+"}`, facts{"called_ae": "KP-"}, false},
		{`{called_ae=~"KP"}`, facts{"called_ae": "KP-1"}, false},
		{`{called_ae=~"KP|MR"}`, facts{"called_ae": "MR"}, true},
		{`{called_ae=~"KP|MR"}`, facts{"called_ae": "KPMR"}, false},
		{`{called_ae!~"KP-.+"}`, facts{"called_ae": "xKP-1"}, true},
		{`{called_ae!~"KP-.+"}`, facts{"called_ae": "KP-1"}, false},
		{`{called_ae!~"KP-.+"}`, facts{}, true},
		// Absent is "".
		{`{Modality=""}`, facts{}, true},
		{`{Modality=""}`, ct, false},
		{`{Modality=~".*"}`, facts{}, true},
		{`{Modality=~".+"}`, facts{}, false},
		// Repeated keys: all must match.
		{`{called_ae=~"KP-.+", called_ae!="KP-TEST"}`, facts{"called_ae": "KP-TEST"}, false},
		{`{called_ae=~"KP-.+", called_ae!="KP-TEST"}`, facts{"called_ae": "KP-2"}, true},
		{`{Modality="CT", Modality="MR"}`, ct, false},
		// Header values as the walk gives them.
		{`{StudyDescription=~"Thorax\\^.*"}`, ct, true},
		{`{StudyDescription="Thorax^Routine"}`, ct, true},
		{`{ImageType=~"ORIGINAL\\\\.*"}`, facts{"ImageType": `ORIGINAL\PRIMARY\AXIAL`}, true},
		{`{ImageType=~".*\\\\LOCALIZER(\\\\.*)?"}`, facts{"ImageType": `ORIGINAL\PRIMARY\LOCALIZER`}, true},
		{`{peer=~"10\\..*"}`, ct, true},
		{`{peer="10.1.2.3", calling_ae="CT01"}`, ct, true},
		{`{calling_ae="CT02"}`, ct, false},
	} {
		r := mustParse(t, tt.spec+" -> d")
		if got := r.Matches(tt.f); got != tt.want {
			t.Errorf("%s matches %v: %v, want %v", tt.spec, tt.f, got, tt.want)
		}
	}
}

func newTable(t testing.TB, specs ...string) *Table {
	t.Helper()
	var rs []Route
	for _, s := range specs {
		rs = append(rs, mustParse(t, s))
	}
	return NewTable(rs)
}

func TestTable(t *testing.T) {
	tab := newTable(t,
		`{called_ae=~"KP-.+", Modality!="SR"} -> kaapana,archive`,
		`{called_ae="PROJ1"} -> proj1`,
		`{Modality="SR"} -> reports, archive`,
		`{} -> archive`,
		`{InstitutionName=~"Klinik.*", StudyDescription!="", Modality=~"CT|MR"} -> research`,
	)
	for _, tt := range []struct {
		f    facts
		want []string
	}{
		{facts{"called_ae": "KP-7", "Modality": "CT"}, []string{"kaapana", "archive"}},
		{facts{"called_ae": "KP-7", "Modality": "SR"}, []string{"reports", "archive"}},
		{facts{"called_ae": "PROJ1", "Modality": "MR"}, []string{"proj1", "archive"}},
		{facts{"called_ae": "DICOMGW"}, []string{"archive"}},
		{facts{"called_ae": "KP-1", "Modality": "MR", "InstitutionName": "Klinikum X", "StudyDescription": "Kopf"},
			[]string{"kaapana", "archive", "research"}},
	} {
		if got := tab.Match(tt.f); !slices.Equal(got, tt.want) {
			t.Errorf("Match(%v) = %q, want %q", tt.f, got, tt.want)
		}
	}
	if got := newTable(t, `{Modality="CT"} -> a`).Match(facts{}); got != nil {
		t.Errorf("no route matching: %q, want nil", got)
	}

	// Tags: the header elements any route reads, sorted, once each.
	want := []uint32{0x00080060, 0x00080080, 0x00081030}
	if got := tab.Tags(); !slices.Equal(got, want) {
		t.Errorf("Tags() = %08X, want %08X", got, want)
	}
	if got := newTable(t, `{called_ae="X", peer="::1"} -> a`, `{} -> b`).Tags(); len(got) != 0 {
		t.Errorf("Tags() = %08X, want none", got)
	}

	wantText := `{called_ae=~"KP-.+", Modality!="SR"} -> kaapana,archive
{called_ae="PROJ1"} -> proj1
{Modality="SR"} -> reports,archive
{} -> archive
{InstitutionName=~"Klinik.*", StudyDescription!="", Modality=~"CT|MR"} -> research
`
	if got := tab.String(); got != wantText {
		t.Errorf("String() =\n%s\nwant\n%s", got, wantText)
	}
	if rs := tab.Routes(); len(rs) != 5 || rs[1].String() != `{called_ae="PROJ1"} -> proj1` || !slices.Equal(rs[2].Destinations(), []string{"reports", "archive"}) {
		t.Errorf("Routes() = %v", rs)
	}

	// A nil table has no routes.
	var none *Table
	if none.Match(facts{}) != nil || none.Tags() != nil || none.AcceptsCalledAE("X") || none.Routes() != nil || none.String() != "" {
		t.Error("nil table is not empty")
	}
}

func TestAcceptsCalledAE(t *testing.T) {
	tab := newTable(t,
		`{called_ae=~"KP-.+", called_ae!="KP-TEST"} -> kaapana`,
		`{called_ae="PROJ1", Modality="CT"} -> proj1`,
		`{called_ae!="OTHER"} -> x`,
		`{called_ae!~"Z.*"} -> x`,
		`{} -> archive`,
		`{calling_ae="CT01"} -> x`,
	)
	for ae, want := range map[string]bool{
		"KP-1":    true,
		"KP-abc":  true,
		"KP-":     false, // .+ needs a character
		"xKP-1":   false, // anchored
		"KP-TEST": false, // a negative matcher of the same route narrows
		"PROJ1":   true,  // whatever the route's other matchers
		"PROJ10":  false,
		"OTHER":   false,
		"DICOMGW": false, // only negative matchers and {} would match it: never widened
		"CT01":    false,
		"":        false,
	} {
		if got := tab.AcceptsCalledAE(ae); got != want {
			t.Errorf("AcceptsCalledAE(%q) = %v, want %v", ae, got, want)
		}
	}
	if newTable(t, `{} -> a`).AcceptsCalledAE("ANY") {
		t.Error("{} accepts a called AE title")
	}
	if !newTable(t, `{called_ae=~".*"} -> a`).AcceptsCalledAE("ANY") {
		t.Error(`{called_ae=~".*"} does not accept every title`)
	}
}

func TestPeerAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:104":                "10.0.0.1",
		"10.0.0.1":                    "10.0.0.1",
		"[::1]:11112":                 "::1",
		"[::1]":                       "::1",
		"::1":                         "::1",
		"[::ffff:10.0.0.1]:4242":      "10.0.0.1",
		"[2001:DB8:0:0:0:0:0:1]:104":  "2001:db8::1",
		"[fe80::1%eth0]:104":          "fe80::1",
		"@":                           "",
		"":                            "",
		"host.example:104":            "",
		"/run/dicomgw.sock":           "",
		"[10.0.0.1]:104":              "10.0.0.1",
		"10.0.0.1:104:5":              "",
		"[::ffff:192.168.1.20]:65535": "192.168.1.20",
	} {
		if got := PeerAddr(in); got != want {
			t.Errorf("PeerAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestObject(t *testing.T) {
	o := Object{CalledAE: "KP-1", CallingAE: "CT01", Peer: "10.0.0.1", Values: map[uint32]string{0x00080060: "CT", 0x00280010: "512"}}
	for key, want := range map[string]string{
		"called_ae": "KP-1", "calling_ae": "CT01", "peer": "10.0.0.1",
		"Modality": "CT", "Rows": "512", "StudyDescription": "", "Nonsense": "", "modality": "",
	} {
		if got := o.Get(key); got != want {
			t.Errorf("Get(%q) = %q, want %q", key, got, want)
		}
	}
	tab := newTable(t, `{called_ae=~"KP-.+", Modality="CT", Rows="512", peer=~"10\\..+"} -> kp`)
	if got := tab.Match(o); !slices.Equal(got, []string{"kp"}) {
		t.Errorf("Match = %q", got)
	}
}
