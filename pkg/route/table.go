package route

import (
	"slices"
	"strings"

	"github.com/prometheus/alertmanager/pkg/labels"
)

// Table is the set of configured routes. It is immutable, and safe for
// concurrent use; a nil *Table has no routes.
type Table struct {
	routes []Route
	tags   []uint32
}

// NewTable builds the table of routes, in the order given (the order in
// which Match reports destinations).
func NewTable(routes []Route) *Table {
	t := &Table{routes: slices.Clone(routes)}
	for _, r := range routes {
		t.tags = append(t.tags, r.tags...)
	}
	slices.Sort(t.tags)
	t.tags = slices.Compact(t.tags)
	return t
}

// Match returns the destinations of every route that matches f: their
// union, each once, in the order of first appearance (routes in table
// order, destinations in the order written). It returns nil when no route
// matches.
func (t *Table) Match(f Facts) []string {
	if t == nil {
		return nil
	}
	var dests []string
	for _, r := range t.routes {
		if !r.Matches(f) {
			continue
		}
		for _, d := range r.dests {
			if !slices.Contains(dests, d) {
				dests = append(dests, d)
			}
		}
	}
	return dests
}

// Tags returns the tags of the header elements any route reads, sorted:
// what the structural walk must collect (dcmhead.WalkCollect) for Match.
func (t *Table) Tags() []uint32 {
	if t == nil {
		return nil
	}
	return slices.Clone(t.tags)
}

// AcceptsCalledAE reports whether the routes can match objects sent to the
// called AE title ae (without padding): whether some route has a positive
// matcher on called_ae (= or =~) and every one of its called_ae matchers
// matches ae. The gateway accepts associations for its own AE title and for
// these; any other is rejected (A-ASSOCIATE-RJ 1/1/7).
//
// Negative matchers never widen what is accepted: {called_ae!="TEST"} says
// which of the accepted titles a route leaves out, not that every other
// title is to be accepted, which would silently turn off the check that
// catches a modality sending to the wrong gateway. They do narrow it:
// {called_ae=~"KP-.+", called_ae!="KP-TEST"} accepts KP-1, not KP-TEST.
// Routes without a called_ae matcher ({} included) accept nothing more.
func (t *Table) AcceptsCalledAE(ae string) bool {
	if t == nil {
		return false
	}
	for _, r := range t.routes {
		positive, all := false, true
		for _, m := range r.matchers {
			if m.Name != KeyCalledAE {
				continue
			}
			if m.Type == labels.MatchEqual || m.Type == labels.MatchRegexp {
				positive = true
			}
			if !m.Matches(ae) {
				all = false
				break
			}
		}
		if positive && all {
			return true
		}
	}
	return false
}

// Routes returns the routes of the table, in order.
func (t *Table) Routes() []Route {
	if t == nil {
		return nil
	}
	return slices.Clone(t.routes)
}

// String returns the routes in canonical form (Route.String), one per line,
// each line ended by a newline: what "dicomgw check-config" prints as the
// effective routes.
func (t *Table) String() string {
	if t == nil {
		return ""
	}
	var b strings.Builder
	for _, r := range t.routes {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}
