package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/dicomgw/dicomgw/pkg/route"
)

// routeFlags is --route: repeatable, each value 'MATCHERS -> DEST[,DEST...]'
// (pkg/route), parsed when it is set so that a flags file's bad line is
// named at once; whether its destinations exist is checked once every flag
// is read (routeSpec.Origin names the line then).
type routeFlags struct {
	specs []routeSpec
}

type routeSpec struct {
	Route  route.Route
	Origin string
}

func (f *routeFlags) String() string {
	out := make([]string, len(f.specs))
	for i, r := range f.specs {
		out[i] = r.Route.String()
	}
	return "[" + strings.Join(out, ", ") + "]"
}

func (f *routeFlags) Type() string { return "route" }

func (f *routeFlags) Set(s string) error {
	r, err := route.Parse(s)
	if err != nil {
		return err
	}
	f.specs = append(f.specs, routeSpec{Route: r, Origin: "command line"})
	return nil
}

func (f *routeFlags) setOrigin(where string) { f.specs[len(f.specs)-1].Origin = where }

// GetSlice is for check-config's listing (pflag.SliceValue).
func (f *routeFlags) GetSlice() []string {
	out := make([]string, len(f.specs))
	for i, r := range f.specs {
		out[i] = r.Route.String()
	}
	return out
}

func (f *routeFlags) Append(s string) error { return f.Set(s) }

func (f *routeFlags) Replace(ss []string) error {
	f.specs = nil
	for _, s := range ss {
		if err := f.Set(s); err != nil {
			return err
		}
	}
	return nil
}

// table checks that every route's destinations exist and returns the
// routing table; with no route at all, everything goes to "default".
func (f *routeFlags) table(dests map[string]*dest) (*route.Table, error) {
	if len(f.specs) == 0 {
		if dests[defaultDestination] == nil {
			names := slices.Sorted(maps.Keys(dests))
			return nil, fmt.Errorf("no --route, and no destination %q for everything to go to: say where objects go, e.g. --route '{} -> %s'", defaultDestination, strings.Join(names, ","))
		}
		r, err := route.Parse("{} -> " + defaultDestination)
		if err != nil {
			return nil, err
		}
		return route.NewTable([]route.Route{r}), nil
	}
	routes := make([]route.Route, len(f.specs))
	for i, s := range f.specs {
		for _, d := range s.Route.Destinations() {
			if dests[d] == nil {
				return nil, fmt.Errorf("%s: route %s: no destination %q (define it with --destination %s=URL)", s.Origin, s.Route.String(), d, d)
			}
		}
		routes[i] = s.Route
	}
	return route.NewTable(routes), nil
}
