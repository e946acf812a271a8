package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicomgw/dicomgw/pkg/forward"
	"github.com/dicomgw/dicomgw/pkg/route"
	"github.com/dicomgw/dicomgw/pkg/spool"
)

// router holds where objects go: the routing table, and a running
// forwarder per destination. A SIGHUP replaces the table and starts the
// forwarders of new destinations; it never stops one that objects may
// wait for (objects keep the destinations they were routed to).
type router struct {
	cur      atomic.Pointer[routing]
	unrouted prometheus.Counter
	del      *deliveries
	sp       *spool.Spool
	reg      prometheus.Registerer
	log      *slog.Logger

	mu      sync.Mutex
	running map[string]*runningDest
	started bool // run was called: new forwarders run at once
	ctx     context.Context
	wg      sync.WaitGroup
	sem     chan struct{} // background work running
}

// runningDest is a destination whose forwarder runs.
type runningDest struct {
	d   *dest
	fwd *forward.Forwarder
}

// routing is one version of where objects go.
type routing struct {
	table    *route.Table
	unrouted string   // "": refuse
	tags     []uint32 // the header elements the routes read
	fwds     map[string]*forward.Forwarder
	stamps   map[string][]stampSpec // of the running destinations that stamp their copy
	del      *deliveries
	log      *slog.Logger
	// background runs work that must not hold the C-STORE's answer (a
	// stamped copy is read whole to know its size).
	background func(func())
}

// route is where an object with these facts goes; none: refuse it.
func (rt *routing) route(f route.Facts) []string {
	dests := rt.table.Match(f)
	if len(dests) == 0 && rt.unrouted != "" {
		dests = []string{rt.unrouted}
	}
	return dests
}

// committed hands an object just committed to the ledger and to the
// forwarders of its destinations, described: nothing is read again.
func (rt *routing) committed(d *spool.Description) {
	rt.del.received(d)
	obj := objectOf(*d)
	for _, name := range d.Destinations {
		f := rt.fwds[name]
		if f == nil {
			continue
		}
		st := rt.stamps[name]
		if len(st) == 0 {
			f.Offer(obj)
			continue
		}
		desc := *d
		rt.background(func() {
			o, err := stamped(obj, &desc, st)
			if err != nil {
				// Its forwarder finds it at its next rescan, and says why
				// it cannot be sent.
				rt.log.Error("cannot stamp an object's copy", "destination", name, "id", desc.ID, "err", err)
				return
			}
			f.Offer(o)
		})
	}
}

func newRouter(ctx context.Context, del *deliveries, sp *spool.Spool, reg prometheus.Registerer, log *slog.Logger) *router {
	r := &router{del: del, sp: sp, reg: reg, log: log, ctx: ctx, running: map[string]*runningDest{}, sem: make(chan struct{}, maxBackground),
		unrouted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicomgw_objects_unrouted_total",
			Help: "C-STOREs refused with 0124 because no route matches the object and --unrouted refuses such objects.",
		})}
	reg.MustRegister(r.unrouted)
	return r
}

func (r *router) current() *routing { return r.cur.Load() }

// destinationNames are the destinations of the current configuration.
func (r *router) destinationNames() []string {
	rt := r.current()
	if rt == nil {
		return nil
	}
	return slices.Collect(maps.Keys(rt.fwds))
}

// apply makes a routing table and its destinations current: destinations
// new to the gateway are prepared and their forwarders made (started once
// run has been called); running ones are kept (a changed definition takes
// effect at the next start: returned as changed); none is stopped.
func (r *router) apply(table *route.Table, unrouted string, dests map[string]*dest) (changed []string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(dests))
	for n := range dests {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		d := dests[n]
		if rd := r.running[n]; rd != nil {
			if rd.d.key != d.key {
				changed = append(changed, n)
			}
			continue
		}
		if d.prepare != nil {
			if err := d.prepare(); err != nil {
				return changed, fmt.Errorf("destination %s: %w", n, err)
			}
		}
		r.startLocked(d)
	}
	fwds := make(map[string]*forward.Forwarder, len(r.running))
	stamps := map[string][]stampSpec{}
	// `,"destinations":[` and `]` around the names, each `"name",` (names
	// are [a-z0-9_-]: nothing to escape), and a margin.
	reserve := len(`,"destinations":[]`) + 16
	for n, rd := range r.running {
		fwds[n] = rd.fwd
		if len(rd.d.stamps) > 0 {
			stamps[n] = rd.d.stamps
		}
		reserve += len(n) + 3
	}
	// Room in each object's record for the longest destination list.
	r.sp.SetRecordReserve(reserve)
	r.cur.Store(&routing{table: table, unrouted: unrouted, tags: table.Tags(), fwds: fwds, stamps: stamps, del: r.del, log: r.log,
		background: r.background})
	return changed, nil
}

// startLocked starts d's forwarder. r.mu is held.
func (r *router) startLocked(d *dest) {
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"destination": d.name}, r.reg)
	log := r.log.With("destination", d.name)
	f := forward.New(d.fcfg, destQueue{d: r.del, name: d.name, stamps: d.stamps}, d.to, log, reg)
	if d.creds != nil {
		reg.MustRegister(forward.NewCredentialsCollector(d.creds))
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "dicomgw_destination_info",
		Help:        "Always 1: a destination the gateway forwards to, with its kind (stow, dicom, archive).",
		ConstLabels: prometheus.Labels{"kind": string(d.kind)},
	})
	info.Set(1)
	reg.MustRegister(info)
	r.running[d.name] = &runningDest{d: d, fwd: f}
	if r.started {
		r.wg.Go(func() { f.Run(r.ctx) })
	}
	log.Info("forwarding to destination", "kind", string(d.kind), "spec", d.spec, "workers", d.fcfg.Workers)
}

// run starts the forwarders: once the ledger agrees with the spool
// (reconcile), so that their first listing of what is pending is whole.
func (r *router) run() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		return
	}
	r.started = true
	for _, rd := range r.running {
		f := rd.fwd
		r.wg.Go(func() { f.Run(r.ctx) })
	}
}

// wait waits for every forwarder, and the background work, to end (their
// context ended).
func (r *router) wait() { r.wg.Wait() }

// maxBackground bounds the stamped copies being sized at once.
const maxBackground = 4

// background runs fn on a goroutine the router waits for, at most
// maxBackground at once; after the forwarders' context ended it does not
// run (the forwarders find the object at their next start).
func (r *router) background(fn func()) {
	r.wg.Go(func() {
		select {
		case r.sem <- struct{}{}:
			defer func() { <-r.sem }()
		case <-r.ctx.Done():
			return
		}
		if r.ctx.Err() == nil {
			fn()
		}
	})
}

// legacy routes an object committed before routing existed: to "default"
// when it is configured (it was the only destination), else by the
// routes, else to --unrouted's destination; none: nowhere.
func (r *router) legacy(desc *spool.Description) []string {
	rt := r.current()
	if rt.fwds[defaultDestination] != nil {
		return []string{defaultDestination}
	}
	values, err := desc.Collect(rt.tags)
	if err != nil {
		r.log.Warn("cannot read an old object's header to route it", "id", desc.ID, "err", err)
	}
	return rt.route(route.Object{CalledAE: desc.CalledAE, CallingAE: desc.CallingAE, Peer: route.PeerAddr(desc.RemoteAddr), Values: values})
}

// describe is what the start-up log says of the destinations.
func describeDests(dests map[string]*dest) string {
	var out []string
	for _, d := range dests {
		out = append(out, d.spec)
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}
