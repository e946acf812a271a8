package uid

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	uid64 := "1." + strings.Repeat("2", 62)
	tests := []struct {
		in   string
		want Problem
	}{
		// PS3.5 9.1 conforming.
		{"1", NoProblem},
		{"0", NoProblem},
		{"0.0", NoProblem},
		{"1.2.0.3", NoProblem},
		{"1.2.840.10008.5.1.4.1.1.2", NoProblem},
		{"1.20.300", NoProblem},
		{uid64, NoProblem},
		// Seen in the wild: accepted under Lenient.
		{hex64, Letters},
		{"1.2.ABCDEF", Letters},
		{"2.25.x", Letters},
		{"1.2-3", DashUnderscore},
		{"1_2", DashUnderscore},
		{"-x", Letters},
		{"-1", DashUnderscore},
		{".1.2", LeadingDot},
		{".", LeadingDot},
		{"..", LeadingDot},
		{"1.2.", TrailingDot},
		{"1..2", EmptyComponent},
		{"a..b", Letters},
		{"01.2", LeadingZero},
		{"1.02", LeadingZero},
		{"1.2.840.0001", LeadingZero},
		{"1.00", LeadingZero},
		// Never accepted.
		{"", Empty},
		{uid64 + "3", TooLong},
		{strings.Repeat("1", 10000), TooLong},
		{"../../x", Slash},
		{"1.2/3", Slash},
		{`1.2\3`, Slash},
		{"1.2 3", Space},
		{"1.2\x003", Control},
		{"1.2\n", Control},
		{"1.2\x7f", Control},
		{"1.2.é", NonASCII},
		{"1.2\xff", NonASCII},
		{"1,2", OtherCharacter},
		{"1.2*", OtherCharacter},
		{"1.2:3", OtherCharacter},
		// A problem that is never accepted wins over tolerable ones.
		{"ab/..", Slash},
		{"01.2 ", Space},
	}
	for _, tt := range tests {
		if got := Check(tt.in); got != tt.want {
			t.Errorf("Check(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestCheckAgreesWithValid: Check finds no problem, or only a leading
// zero, exactly where Valid accepts (the two readings of PS3.5 9.1 differ
// only there).
func TestCheckAgreesWithValid(t *testing.T) {
	for _, in := range []string{"1", "1.2", "01.2", "1.02", "", ".", "..", "1..2", "1.", ".1", "a", "1/2", "1 2",
		strings.Repeat("1", 64), strings.Repeat("1", 65), "1.2.840.10008.1.2.4.50", "0.0.0", "1.2.00"} {
		p := Check(in)
		if valid := Valid(in) == nil; valid != (p == NoProblem || p == LeadingZero) {
			t.Errorf("%q: Valid says %v, Check says %v", in, valid, p)
		}
	}
}

func TestPolicy(t *testing.T) {
	for p := NoProblem; p <= OtherCharacter; p++ {
		tolerable := p >= Letters && p <= LeadingZero
		if p.Tolerable() != tolerable {
			t.Errorf("%v.Tolerable() = %v", p, p.Tolerable())
		}
		if got, want := Lenient.Accepts(p), p == NoProblem || tolerable; got != want {
			t.Errorf("Lenient.Accepts(%v) = %v", p, got)
		}
		if got := Strict.Accepts(p); got != (p == NoProblem) {
			t.Errorf("Strict.Accepts(%v) = %v", p, got)
		}
		if s := p.String(); strings.HasPrefix(s, "Problem(") || s == "" {
			t.Errorf("Problem %d has no description", p)
		}
	}
	for _, tt := range []struct {
		in   string
		want Policy
		err  bool
	}{{"lenient", Lenient, false}, {"strict", Strict, false}, {"", Lenient, true}, {"Strict", Lenient, true}, {"lax", Lenient, true}} {
		got, err := ParsePolicy(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParsePolicy(%q) = %v, %v", tt.in, got, err)
		}
		if err == nil && got.String() != tt.in {
			t.Errorf("%v.String() = %q", got, got.String())
		}
	}
	var zero Policy
	if zero != Lenient {
		t.Error("the zero Policy is not Lenient")
	}
}

func TestAttributes(t *testing.T) {
	seen := map[string]bool{}
	for _, a := range Attributes() {
		l := a.Label()
		if l == "other" || seen[l] || strings.HasPrefix(a.String(), "Attribute(") {
			t.Errorf("attribute %d: label %q, name %q", a, l, a.String())
		}
		seen[l] = true
	}
	if Attribute(0).Label() != "other" {
		t.Error("unknown attribute label")
	}
}
