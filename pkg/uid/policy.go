package uid

import (
	"fmt"
	"strings"
)

// Problem says how a UID breaks the encoding rules of PS3.5 9.1, or that it
// does not (NoProblem). Problems are a closed set, safe in logs and in the
// Error Comment of a response: they never carry the UID itself.
//
// The first problems (Letters to LeadingZero) are Tolerable: they are seen in
// the wild (hexadecimal hashes used as UIDs, leading zeros from long-deployed
// equipment, empty components, a trailing dot), the UID is still 1 to 64
// bytes of [0-9A-Za-z._-], and archives such as Orthanc, dcm4chee and dcmtk's
// storescp store such objects. The others are never accepted: a UID with a
// slash, a space, a control character or a non-ASCII byte, or longer than 64
// bytes, is not an identifier anyone can use safely.
type Problem uint8

// Problems, tolerable ones first.
const (
	NoProblem Problem = iota

	Letters        // letters, as in a hexadecimal hash
	DashUnderscore // '-' or '_'
	LeadingDot     // ".1.2": an empty first component
	TrailingDot    // "1.2.": an empty last component
	EmptyComponent // "1..2"
	LeadingZero    // "1.02": a multi-digit component starting with 0

	Empty          // no characters at all
	TooLong        // more than MaxLength bytes
	Slash          // '/' or '\'
	Space          // ' ' inside the value (padding is trimmed before)
	Control        // a control character, NUL inside the value included
	NonASCII       // a byte above 0x7E
	OtherCharacter // punctuation outside [0-9A-Za-z._-], such as ',' or '*'
)

// Tolerable reports whether a UID with problem p is accepted under Lenient.
func (p Problem) Tolerable() bool { return p >= Letters && p <= LeadingZero }

// String says what is wrong in a few words, e.g. "has a leading zero in a
// component"; it reads after the name of the attribute.
func (p Problem) String() string {
	switch p {
	case NoProblem:
		return "conforms to PS3.5 9.1"
	case Letters:
		return "has letters (hexadecimal?)"
	case DashUnderscore:
		return "has '-' or '_'"
	case LeadingDot:
		return "starts with '.'"
	case TrailingDot:
		return "ends with '.'"
	case EmptyComponent:
		return "has an empty component"
	case LeadingZero:
		return "has a leading zero in a component"
	case Empty:
		return "is empty"
	case TooLong:
		return "is longer than 64 bytes" // MaxLength
	case Slash:
		return "has a slash"
	case Space:
		return "has a space"
	case Control:
		return "has a control character"
	case NonASCII:
		return "has a non-ASCII byte"
	case OtherCharacter:
		return "has a character outside [0-9A-Za-z._-]"
	}
	return fmt.Sprintf("Problem(%d)", uint8(p))
}

// Check classifies uid (padding already trimmed, see Trim) against PS3.5
// 9.1: 1 to 64 bytes, digits and '.' only, no empty component, no leading
// zero in a multi-digit component. It returns the first problem that
// decides: any problem that is not Tolerable wins over the tolerable ones,
// so a UID is accepted under Lenient exactly when Check(uid).Tolerable().
func Check(uid string) Problem {
	switch {
	case uid == "":
		return Empty
	case len(uid) > MaxLength:
		return TooLong
	}
	letters, dash := false, false
	for i := 0; i < len(uid); i++ {
		switch c := uid[i]; {
		case c >= '0' && c <= '9' || c == '.':
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			letters = true
		case c == '-' || c == '_':
			dash = true
		case c == '/' || c == '\\':
			return Slash
		case c == ' ':
			return Space
		case c < 0x20 || c == 0x7F:
			return Control
		case c > 0x7F:
			return NonASCII
		default:
			return OtherCharacter
		}
	}
	switch {
	case letters:
		return Letters
	case dash:
		return DashUnderscore
	case uid[0] == '.':
		return LeadingDot
	case uid[len(uid)-1] == '.':
		return TrailingDot
	case strings.Contains(uid, ".."):
		return EmptyComponent
	}
	for i := 0; i+1 < len(uid); i++ {
		if uid[i] == '0' && (i == 0 || uid[i-1] == '.') && uid[i+1] != '.' {
			return LeadingZero
		}
	}
	return NoProblem
}

// Policy decides which UIDs the gateway accepts in a C-STORE: the command's
// Affected SOP Class and Instance UIDs and the data set's SOP Class, SOP
// Instance, Study Instance and Series Instance UIDs.
type Policy uint8

// Policies. The zero value is Lenient, the default.
const (
	// Lenient accepts UIDs that conform to PS3.5 9.1 and those whose
	// problem is Tolerable.
	Lenient Policy = iota
	// Strict accepts only UIDs that conform to PS3.5 9.1.
	Strict
)

// ParsePolicy reads "lenient" or "strict".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "lenient":
		return Lenient, nil
	case "strict":
		return Strict, nil
	}
	return Lenient, fmt.Errorf("UID policy %q: want lenient or strict", s)
}

func (p Policy) String() string {
	switch p {
	case Lenient:
		return "lenient"
	case Strict:
		return "strict"
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

// Accepts reports whether a UID with problem pr is accepted under p.
func (p Policy) Accepts(pr Problem) bool {
	return pr == NoProblem || p == Lenient && pr.Tolerable()
}

// Attribute names a UID attribute of a C-STORE the policy is applied to.
type Attribute uint8

// Attributes the policy covers.
const (
	SOPClassUID       Attribute = iota + 1 // (0000,0002) in the command, (0008,0016) in the data set
	SOPInstanceUID                         // (0000,1000) in the command, (0008,0018) in the data set
	StudyInstanceUID                       // (0020,000D)
	SeriesInstanceUID                      // (0020,000E)
)

// String is the attribute's name in PS3.6, e.g. "Study Instance UID".
func (a Attribute) String() string {
	switch a {
	case SOPClassUID:
		return "SOP Class UID"
	case SOPInstanceUID:
		return "SOP Instance UID"
	case StudyInstanceUID:
		return "Study Instance UID"
	case SeriesInstanceUID:
		return "Series Instance UID"
	}
	return fmt.Sprintf("Attribute(%d)", uint8(a))
}

// Label is the attribute as a metric label value or log key, e.g.
// "study_instance_uid".
func (a Attribute) Label() string {
	switch a {
	case SOPClassUID:
		return "sop_class_uid"
	case SOPInstanceUID:
		return "sop_instance_uid"
	case StudyInstanceUID:
		return "study_instance_uid"
	case SeriesInstanceUID:
		return "series_instance_uid"
	}
	return "other"
}

// Attributes lists every Attribute, for metrics that want all their series
// from the start.
func Attributes() []Attribute {
	return []Attribute{SOPClassUID, SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID}
}

// Finding is a UID accepted although it breaks PS3.5 9.1.
type Finding struct {
	Attribute Attribute
	Problem   Problem
}
