package route

import (
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzRoute checks that Parse never panics, that its errors are one line,
// and that a parsed route prints (String) as one line of valid UTF-8
// without control characters that parses back to the same route: the same
// matchers (type, key, value), destinations and header tags, matching the
// same facts.
func FuzzRoute(f *testing.F) {
	for _, s := range []string{
		`{called_ae="PROJ1"} -> kaapana`,
		`{called_ae=~"KP-.+", Modality!="SR"} -> kp,archive`,
		`{} -> all`,
		`{StudyDescription="say \"hi\", then \\ go"} -> x`,
		`{StudyDescription="a}b -> c"} -> x`,
		`{Modality=CT, peer=10.0.0.1,} -> x`,
		`{called_ae=~"KP-.+", called_ae!="KP-TEST"} -> a,b-c,d_e`,
		`{ImageType=~".*\\\\LOCALIZER(\\\\.*)?"} -> x`,
		`{called_ae=\"} -> x`,
		`{a="\\"} -> x`,
		`{Rows="512", InstitutionName!~"Test.*"} -> x`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		r, err := Parse(spec)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("error of several lines: %q", err)
			}
			return
		}
		s := r.String()
		if !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl) {
			t.Fatalf("String() = %q: not one clean line", s)
		}
		r2, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q) = %s, whose String %q does not parse: %v", spec, r, s, err)
		}
		if s2 := r2.String(); s2 != s {
			t.Fatalf("String %q reparses as %q", s, s2)
		}
		if len(r.matchers) != len(r2.matchers) {
			t.Fatalf("%d matchers, reparsed %d", len(r.matchers), len(r2.matchers))
		}
		fs := facts{}
		for i, m := range r.matchers {
			m2 := r2.matchers[i]
			if m.Type != m2.Type || m.Name != m2.Name || m.Value != m2.Value {
				t.Fatalf("matcher %d: %s, reparsed %s", i, m, m2)
			}
			fs[m.Name] = m.Value
		}
		if !slices.Equal(r.dests, r2.dests) || !slices.Equal(r.tags, r2.tags) {
			t.Fatalf("destinations %q tags %08X, reparsed %q %08X", r.dests, r.tags, r2.dests, r2.tags)
		}
		if r.Matches(fs) != r2.Matches(fs) || r.Matches(facts{}) != r2.Matches(facts{}) {
			t.Fatal("reparsed route matches differently")
		}
	})
}
