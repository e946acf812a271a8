// Package route parses and evaluates dicomgw's routes (issue 13): which
// destinations a received object goes to, chosen by label matchers over the
// AE titles of its association, the sender's address and attributes of its
// data set's header.
//
// A route is written
//
//	{MATCHER, MATCHER, ...} -> DEST[,DEST...]
//
// where the matchers are Prometheus label matchers as Alertmanager parses
// them (github.com/prometheus/alertmanager/pkg/labels, the syntax operators
// already write in alerting routes and silences): KEY="value", KEY!="value",
// KEY=~"regexp", KEY!~"regexp", with regular expressions (RE2 syntax) fully
// anchored, so called_ae=~"KP-.+" matches "KP-1" but not "xKP-1". A route
// with no matchers, {}, matches every object; a route matches when all its
// matchers do, and a key may appear more than once. Every matching route
// applies: an object goes to the union of their destinations.
//
// The keys are
//   - called_ae and calling_ae: the AE titles of the association, without
//     their padding;
//   - peer: the sender's IP address, without port or brackets, an
//     IPv4-mapped IPv6 address written as IPv4 (see PeerAddr);
//   - a DICOM keyword of pkg/dict (Modality, SOPClassUID, StudyDescription,
//     InstitutionName, ...): the value of that element in the top-level data
//     set, as dcmhead.WalkCollect gives it (trailing padding trimmed,
//     multiple values joined by backslashes, numbers in decimal). Keywords of
//     elements whose values the walk does not read (bulk data, sequences,
//     file meta elements) are rejected.
//
// As in Prometheus, an absent value is the empty string: Modality!="SR"
// matches an object without Modality, and Modality="" matches only such an
// object (or one with an empty Modality).
package route

import (
	"errors"
	"fmt"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/dicomgw/dicomgw/pkg/dcmhead"
	"github.com/dicomgw/dicomgw/pkg/dict"
	"github.com/prometheus/alertmanager/pkg/labels"
)

// The keys a route can match besides DICOM keywords.
const (
	KeyCalledAE  = "called_ae"
	KeyCallingAE = "calling_ae"
	KeyPeer      = "peer"
)

// MaxDestinationName is the longest destination name.
const MaxDestinationName = 32

// Facts is what a route is matched against: the value of a key, "" when
// the object has none.
type Facts interface {
	Get(key string) string
}

// Route is one parsed route. The zero Route has no matchers and no
// destinations; routes come from Parse.
type Route struct {
	matchers []*labels.Matcher
	dests    []string
	tags     []uint32 // header elements the matchers read, sorted
}

// Parse parses a route, "MATCHERS -> DEST[,DEST...]", white space around
// its parts allowed. MATCHERS is "{...}" holding comma-separated label
// matchers (see the package documentation for the keys). Destination names
// are 1 to 32 characters: a lower-case letter or digit, then lower-case
// letters, digits, '_' and '-'; a name may appear only once in a route.
// Whether a destination exists is for the caller to check.
//
// An error is one line, without the route itself, meant to be prefixed with
// where the route came from (a flags file's name and line).
func Parse(spec string) (Route, error) {
	if !utf8.ValidString(spec) {
		return Route{}, errors.New("route is not valid UTF-8")
	}
	s := strings.TrimSpace(spec)
	if !strings.HasPrefix(s, "{") {
		return Route{}, errors.New(`a route starts with "{": want {MATCHERS} -> DEST[,DEST...]`)
	}
	end := closingBrace(s)
	if end < 0 {
		return Route{}, errors.New(`no "}" closes the matchers: want {MATCHERS} -> DEST[,DEST...]`)
	}
	var r Route
	var err error
	if r.matchers, err = parseMatchers(s[1:end]); err != nil {
		return Route{}, err
	}
	for _, m := range r.matchers {
		tag, err := checkMatcher(m)
		if err != nil {
			return Route{}, err
		}
		if tag != 0 && !slices.Contains(r.tags, tag) {
			r.tags = append(r.tags, tag)
		}
	}
	slices.Sort(r.tags)
	rest, ok := strings.CutPrefix(strings.TrimSpace(s[end+1:]), "->")
	if !ok {
		return Route{}, fmt.Errorf(`want "->" and destinations after the matchers, found %s`, quoteShort(strings.TrimSpace(s[end+1:])))
	}
	if r.dests, err = parseDestinations(rest); err != nil {
		return Route{}, err
	}
	return r, nil
}

// closingBrace returns the index in s (which starts with '{') of the '}'
// that closes the matchers: the first one outside double quotes, quotes
// and backslash escapes being tracked exactly as labels.ParseMatchers
// tracks them, so that both agree on what is quoted. -1 if there is none.
func closingBrace(s string) int {
	var inQuotes, escaped bool
	for i, r := range s[1:] {
		switch r {
		case '"':
			if !escaped {
				inQuotes = !inQuotes
			} else {
				escaped = false
			}
		case '\\':
			escaped = !escaped
		case ',':
		case '}':
			if !inQuotes {
				return i + 1
			}
			escaped = false
		default:
			escaped = false
		}
	}
	return -1
}

// parseMatchers parses what is between the braces.
func parseMatchers(inner string) ([]*labels.Matcher, error) {
	if strings.TrimSpace(inner) == "" {
		return nil, nil
	}
	if strings.HasPrefix(inner, "{") {
		// labels.ParseMatchers would drop it: "{{a="b"}" is no route.
		return nil, errors.New(`unexpected "{" inside the matchers`)
	}
	ms, err := labels.ParseMatchers(inner)
	if err != nil {
		var se *syntax.Error
		if errors.As(err, &se) {
			// labels.NewMatcher compiled "^(?:" + value + ")$".
			expr := se.Expr
			if strings.HasPrefix(expr, "^(?:") && strings.HasSuffix(expr, ")$") {
				expr = expr[4 : len(expr)-2]
			}
			return nil, fmt.Errorf("invalid regular expression: %s: %s", se.Code, quoteShort(expr))
		}
		return nil, fmt.Errorf("invalid matchers: %s", oneLine(err.Error()))
	}
	return ms, nil
}

// checkMatcher checks a matcher's key and value; for a header key it
// returns the element's tag.
func checkMatcher(m *labels.Matcher) (uint32, error) {
	for _, r := range m.Value {
		if unicode.IsControl(r) {
			return 0, fmt.Errorf("matcher %s: the value holds a control character (a regular expression can match one with an escape such as \\x0A)", oneLine(m.String()))
		}
	}
	switch m.Name {
	case KeyCalledAE, KeyCallingAE, KeyPeer:
		return 0, nil
	}
	e, ok := dict.ByKeyword(m.Name)
	if !ok {
		return 0, fmt.Errorf("unknown key %q: not %s, %s, %s or a DICOM keyword", m.Name, KeyCalledAE, KeyCallingAE, KeyPeer)
	}
	if e.Tag>>16 == 0x0002 {
		return 0, fmt.Errorf("key %q: a file meta element (group 0002), not part of the data set", m.Name)
	}
	if !dcmhead.Collects(e.VR) {
		return 0, fmt.Errorf("key %q: values of VR %s are not read for routing", m.Name, e.VR)
	}
	return e.Tag, nil
}

// parseDestinations parses the comma-separated destination names.
func parseDestinations(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New(`no destination after "->"`)
	}
	var dests []string
	for _, d := range strings.Split(s, ",") {
		d = strings.TrimSpace(d)
		if err := checkDestination(d); err != nil {
			return nil, err
		}
		if slices.Contains(dests, d) {
			return nil, fmt.Errorf("destination %q listed twice", d)
		}
		dests = append(dests, d)
	}
	return dests, nil
}

// checkDestination checks a destination name: [a-z0-9][a-z0-9_-]{0,31}.
func checkDestination(d string) error {
	if d == "" {
		return errors.New(`empty destination name (a stray ",")`)
	}
	if len(d) > MaxDestinationName {
		return fmt.Errorf("destination name %s longer than %d characters", quoteShort(d), MaxDestinationName)
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '_' || c == '-') {
			continue
		}
		return fmt.Errorf("destination name %s: want a lower-case letter or digit, then lower-case letters, digits, '_' or '-'", quoteShort(d))
	}
	return nil
}

// quoteShort quotes s for an error message, cut to a readable length.
func quoteShort(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}

// oneLine escapes what would break a one-line message.
func oneLine(s string) string {
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// Matches reports whether every matcher of r matches f.
func (r Route) Matches(f Facts) bool {
	for _, m := range r.matchers {
		if !m.Matches(f.Get(m.Name)) {
			return false
		}
	}
	return true
}

// Destinations returns the route's destinations, in the order written.
func (r Route) Destinations() []string { return slices.Clone(r.dests) }

// Tags returns the tags of the header elements r's matchers read, sorted.
func (r Route) Tags() []uint32 { return slices.Clone(r.tags) }

// String returns r in canonical form, which Parse reads back to the same
// route: {KEY="value", ...} -> DEST,DEST with the matchers in the order
// written and values quoted and escaped as Alertmanager prints them.
func (r Route) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range r.matchers {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(m.String())
	}
	b.WriteString("} -> ")
	b.WriteString(strings.Join(r.dests, ","))
	return b.String()
}
