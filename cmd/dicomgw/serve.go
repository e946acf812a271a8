package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/dicomgw/dicomgw/pkg/auth"
	"github.com/dicomgw/dicomgw/pkg/console"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/ledger"
	"github.com/dicomgw/dicomgw/pkg/spool"
)

func runServer(c serveConfig, fs *pflag.FlagSet, args []string, log *slog.Logger) error {
	values := flagValues(fs)
	// Signals are caught from the start: a SIGTERM that arrives while the
	// spool opens or just after "dicomgw listening" is logged is a clean
	// shutdown, not the default death.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	set, err := c.check(log.With("component", "forward"))
	if err != nil {
		return err
	}
	sp, err := spool.Open(spool.Config{
		Dir:                       c.spoolDir,
		ImplementationClassUID:    set.dimse.ImplementationClassUID,
		ImplementationVersionName: set.dimse.ImplementationVersionName,
		KeepDelivered:             c.keepDelivered > 0,
		Limits:                    spool.Limits{MaxBytes: int64(c.spoolMaxBytes), MinFree: int64(c.spoolMinFree)},
		MaxObjectSize:             int64(c.maxObjectSize),
		UIDPolicy:                 set.dimse.UIDPolicy,
	}, log.With("component", "spool"))
	if err != nil {
		return err
	}
	defer sp.Close()

	reg, opsm := newRegistry()
	// The ledger lives in the spool, whose lock keeps a second daemon out
	// of both.
	led, err := ledger.Open(ledger.Config{Path: filepath.Join(c.spoolDir, ledgerFile)}, log.With("component", "ledger"), reg)
	if err != nil {
		return err
	}
	defer led.Close()
	stats := spool.NewStatsCache(sp.Dir, 5*time.Second)
	reg.MustRegister(spool.NewCollector(stats), spool.NewCapacityCollector(sp))

	// Forwarders run until the receiving side has stopped; then their
	// requests in flight finish or are abandoned, objects staying queued.
	// They and the janitor are done before the ledger and the spool close.
	fwdCtx, stopForwarding := context.WithCancel(context.Background())
	del := newDeliveries(sp, led, log.With("component", "forward"), reg)
	rt := newRouter(fwdCtx, del, sp, reg, log.With("component", "forward"))
	reg.MustRegister(newDestinationCollector(led, rt.destinationNames, 5*time.Second))
	defer func() {
		stopForwarding()
		rt.wait()
	}()
	if _, err := rt.apply(set.table, set.unrouted, set.dests); err != nil {
		return err
	}
	added, finished, err := del.reconcile(rt.legacy)
	if err != nil {
		return fmt.Errorf("completing the delivery ledger from the spool: %w", err)
	}
	if added+finished > 0 {
		log.Info("delivery ledger completed from the spool", "added", added, "finished", finished)
	}
	rt.run()
	if waiting, err := pendingElsewhere(led, set.dests); err == nil && len(waiting) > 0 {
		log.Warn("objects wait for destinations that are no longer configured; they are kept until those are defined again",
			"destinations", strings.Join(waiting, ", "))
	}

	// Storage commitment: requests left open by the last run are taken
	// over before anyone can ask anything new, and answered even with
	// --commitment off (which refuses new ones: the SOP class is not
	// offered). It stops before the ledger closes.
	cm := newCommitments(led, c.commitment, c.commitmentTimeout, set.remotes, newCommitMetrics(reg), log.With("component", "commitment"))
	if err := cm.load(); err != nil {
		return fmt.Errorf("storage commitment requests in the ledger: %w", err)
	}
	del.news = cm.news
	if c.commitment != "off" {
		set.dimse.Commitment = cm
	}
	cmCtx, stopCommitments := context.WithCancel(context.Background())
	cmDone := make(chan struct{})
	go func() {
		defer close(cmDone)
		cm.run(cmCtx)
	}()
	defer func() {
		stopCommitments()
		<-cmDone
	}()

	if c.qrDestination != "" {
		qc := set.dests[c.qrDestination].qido
		qc.PageSize = c.qrPageSize
		set.dimse.Find = newFinder(c.qrDestination, qc, log.With("component", "qr"), reg)
		set.dimse.Move = newMover(c.qrDestination, qc, cm.remote, "", log.With("component", "qr"), reg)
	}

	set.dimse.Admit = sp.Admit
	var cs *consoleServer
	var dimseSrv atomic.Pointer[dimse.Server] // for the console's associations in progress
	if set.consoleUsers != nil {
		assocs := console.NewAssociations(0)
		set.dimse.Ended = assocs.Record
		con, err := console.New(console.Config{
			Source:       &consoleSource{led: led, sp: sp, del: del, rt: rt, now: time.Now},
			Gatherer:     reg,
			Associations: assocs,
			Active: func() []dimse.Summary {
				if s := dimseSrv.Load(); s != nil {
					return s.Active()
				}
				return nil
			},
			SessionIdle: c.consoleSessionTimeout,
			Secure:      set.consoleTLS != nil,
		}, set.consoleUsers, log.With("component", "console"), reg)
		if err != nil {
			return err
		}
		con.SetSettings(consoleSettings(fs, set))
		var addr net.Addr
		if cs, addr, err = startConsole(c, con, set.consoleTLS, log.With("component", "console")); err != nil {
			return err
		}
		defer cs.stop()
		log.Info("console listening", "addr", addr.String(), "https", set.consoleTLS != nil)
	}
	ids := &identities{require: c.requireIdentity}
	if set.auth != nil {
		ids.cur.Store(set.auth)
		set.dimse.Authenticator, set.dimse.RequireUserIdentity = ids, c.requireIdentity
	}
	srv, err := dimse.NewServer(set.dimse, &storeHandler{spool: sp, router: rt, log: log.With("component", "store")}, log.With("component", "dimse"), reg)
	if err != nil {
		return err
	}
	if err := srv.SetPolicy(set.policy); err != nil {
		return err
	}
	dimseSrv.Store(srv)
	ready := &readiness{commit: sp.CheckCommit, full: sp.Full, probeEvery: 5 * time.Second}
	if c.metricsListen != "" {
		addr, stopOps, err := startOps(context.Background(), c.metricsListen, opsHandler(reg, ready), log)
		if err != nil {
			return err
		}
		defer stopOps()
		log.Info("metrics and health listening", "addr", addr.String())
	}
	var listeners []net.Listener
	defer func() {
		for _, ln := range listeners {
			ln.Close()
		}
	}()
	plainAddr, tlsAddr := "", ""
	if c.listen != "" {
		ln, err := net.Listen("tcp", c.listen)
		if err != nil {
			return err
		}
		listeners, plainAddr = append(listeners, ln), ln.Addr().String()
	}
	tlsCerts := &tlsSwitch{}
	if c.tlsListen != "" {
		ln, err := net.Listen("tcp", c.tlsListen)
		if err != nil {
			return err
		}
		tlsCerts.cur.Store(set.tls)
		listeners, tlsAddr = append(listeners, dimse.NewTLSListener(ln, tlsCerts.listenerConfig())), ln.Addr().String()
	}
	log.Info("dicomgw listening", "addr", plainAddr, "tls_addr", tlsAddr, "mutual_tls", c.tlsClientCA != "",
		"ae_titles", strings.Join(c.aeTitles, ","), "calling_aes", strings.Join(c.callingAEs, ","),
		"user_identity", identityMode(c), "spool_dir", c.spoolDir, "destinations", describeDests(set.dests), "routes", strings.TrimSpace(strings.ReplaceAll(set.table.String(), "\n", "; ")),
		"version", version, "commit", commit)

	served := make(chan error, len(listeners))
	for _, ln := range listeners {
		go func() { served <- srv.Serve(ln) }()
	}
	ready.listening.Store(true)

	stopBackground := startBackground(func(ctx context.Context) error {
		<-ctx.Done()
		stopForwarding()
		rt.wait()
		return nil
	}, sp, c.keepDelivered, log.With("component", "spool"),
		func(time.Time) { del.adopt(rt.legacy) }, del.forgetPurged,
		pruneEvery(led, c.ledgerRetention, log.With("component", "ledger")))
	defer stopBackground()

	for waiting := true; waiting; {
		select {
		case err := <-served:
			return err
		case <-hup:
			if err := reload(values, args, srv, tlsCerts, ids, rt, cm, cs, log); err != nil {
				opsm.reloads.WithLabelValues("failure").Inc()
				log.Error("config reload failed; keeping the running settings", "err", err)
			} else {
				opsm.reloads.WithLabelValues("success").Inc()
				opsm.lastReload.SetToCurrentTime()
			}
		case sig := <-sigs:
			log.Info("shutting down: no new associations; waiting for running ones", "signal", sig.String(), "timeout", c.shutdownTimeout)
			ready.listening.Store(false)
			waiting = false
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	go func() {
		// A second signal: stop waiting. Every acknowledged object is
		// already durable; partial ones are discarded by the aborts.
		select {
		case sig := <-sigs:
			log.Warn("second signal: aborting running associations now", "signal", sig.String())
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("associations aborted at shutdown", "err", err)
	}
	for range listeners {
		if err := <-served; err != nil && !errors.Is(err, dimse.ErrServerClosed) {
			return err
		}
	}
	log.Info("dicomgw stopped")
	return nil
}

// reload re-reads the command line and its flags files (SIGHUP): the AE
// titles and the calling AE allowlist apply to new associations at once;
// other changes are reported as waiting for a restart. values holds the
// flags in force, and is updated with what was applied. On any error the
// running settings stay.
func reload(values map[string]string, args []string, srv *dimse.Server, certs *tlsSwitch, ids *identities, rt *router, cm *commitments, cs *consoleServer, log *slog.Logger) error {
	nc, nfs, err := loadConfig("dicomgw serve", args, io.Discard)
	if err != nil {
		return err
	}
	pol, err := nc.policy()
	if err != nil {
		return err
	}
	dcfg := dimse.Config{AETitles: nc.aeTitles, ImplementationClassUID: dimse.ImplementationClassUID, ImplementationVersionName: implementationVersionName()}
	dests, table, unrouted, err := nc.routing(dcfg, log.With("component", "forward"))
	if err != nil {
		return err
	}
	pol.CalledAE = table.AcceptsCalledAE
	remotes, err := nc.remoteAEs.remoteAEs()
	if err != nil {
		return err
	}
	// Everything is built before anything is applied: a bad file leaves
	// the running settings whole.
	var tlsCfg *tls.Config
	if certs.cur.Load() != nil {
		if tlsCfg, err = serverTLS(nc.tlsCert, nc.tlsKey, nc.tlsClientCA); err != nil {
			return err
		}
	}
	var a *auth.Authenticator
	if ids.cur.Load() != nil {
		ac := nc.authConfig()
		if ac == nil {
			return errors.New("user identity checking cannot be switched off by a reload: restart")
		}
		if a, err = auth.New(*ac); err != nil {
			return err
		}
	}
	var consoleUsers *auth.Authenticator
	var consoleTLS *tls.Config
	if cs != nil {
		// Read and checked before anything is applied, like the rest.
		if consoleUsers, consoleTLS, err = nc.consoleChecks(); err != nil {
			return err
		}
	}
	// New routes apply to objects committed from now on; objects already
	// committed keep the destinations they were routed to.
	changed, err := rt.apply(table, unrouted, dests)
	if err != nil {
		return err
	}
	if len(changed) > 0 {
		log.Warn("destinations whose definition changed keep the running one until a restart", "destinations", strings.Join(changed, ","))
	}
	if err := srv.SetPolicy(pol); err != nil {
		return err
	}
	if tlsCfg != nil {
		certs.cur.Store(tlsCfg)
	}
	if a != nil {
		ids.cur.Store(a)
	}
	cm.setRemotes(remotes)
	if cs != nil {
		if err := cs.take(nc, consoleUsers, consoleTLS); err != nil {
			log.Warn("console settings not reloaded", "err", err)
		}
		cs.con.SetSettings(consoleSettings(nfs, &settings{dests: dests, table: table, unrouted: unrouted}))
	}
	var ignored []string
	for name, v := range flagValues(nfs) {
		switch {
		case liveFlags[name]:
			values[name] = v
		case name != "flagfile" && values[name] != v:
			ignored = append(ignored, "--"+name)
		}
	}
	if len(ignored) > 0 {
		sort.Strings(ignored)
		log.Warn("flags changed that take effect only after a restart; ignored until then", "flags", strings.Join(ignored, " "))
	}
	log.Info("config reloaded", "ae_titles", strings.Join(nc.aeTitles, ","), "calling_aes", strings.Join(nc.callingAEs, ","),
		"destinations", describeDests(dests), "routes", strings.TrimSpace(strings.ReplaceAll(table.String(), "\n", "; ")))
	return nil
}

// identityMode says how user identities are treated, for the start-up log.
func identityMode(c serveConfig) string {
	switch {
	case c.requireIdentity:
		return "required"
	case c.authConfig() != nil:
		return "checked-when-sent"
	}
	return "ignored"
}

// startBackground runs the forwarding and the spool janitor (with its
// chores, each round) until stop is called, which waits for both: what
// they use (the spool, the ledger) is closed only once neither runs.
func startBackground(forward func(context.Context) error, sp janitorSpool, keep time.Duration, log *slog.Logger, chores ...func(now time.Time)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { forward(ctx) }) // it ends when ctx does: nothing to report
	wg.Go(func() { spoolJanitor(ctx, sp, keep, log, chores...) })
	return func() {
		cancel()
		wg.Wait()
	}
}

// janitorSpool is what spoolJanitor does to the spool (*spool.Spool).
type janitorSpool interface {
	Purge(st spool.State, cutoff time.Time) (int, int64, error)
	Resync() error
}

// spoolJanitor keeps the spool's byte count true to what is on disk
// (operator commands in other processes change it too) and, when delivered
// objects are kept, removes them once they have been kept long enough.
func spoolJanitor(ctx context.Context, sp janitorSpool, keep time.Duration, log *slog.Logger, chores ...func(now time.Time)) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	lastPurge := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if keep > 0 && time.Since(lastPurge) >= min(keep/4+time.Second, 10*time.Minute) {
			lastPurge = time.Now()
			n, bytes, err := sp.Purge(spool.StateDelivered, time.Now().Add(-keep))
			if err != nil {
				log.Error("purging delivered objects", "err", err)
			} else if n > 0 {
				log.Info("purged delivered objects", "objects", n, "bytes", bytes, "older_than", keep)
			}
		}
		if err := sp.Resync(); err != nil {
			log.Error("recounting the spool", "err", err)
		}
		for _, chore := range chores {
			if ctx.Err() != nil {
				return
			}
			chore(time.Now())
		}
	}
}

// pruneEvery is the janitor's chore that forgets, at most every ten
// minutes, the objects that left the spool more than retention ago.
func pruneEvery(led *ledger.Ledger, retention time.Duration, log *slog.Logger) func(time.Time) {
	var last time.Time
	return func(now time.Time) {
		if now.Sub(last) < 10*time.Minute {
			return
		}
		last = now
		n, err := led.Prune(now.Add(-retention))
		if err != nil {
			log.Error("pruning the delivery ledger", "err", err)
		} else if n > 0 {
			log.Info("pruned the delivery ledger", "objects", n, "older_than", retention)
		}
		n, err = led.PruneCommitments(now.Add(-retention))
		if err != nil {
			log.Error("pruning storage commitment requests", "err", err)
		} else if n > 0 {
			log.Info("pruned storage commitment requests", "requests", n, "older_than", retention)
		}
	}
}

// implementationVersionName is sent to peers (PS3.7 D.3.3.2, at most 16
// characters).
func implementationVersionName() string {
	n := "DICOMGW_" + version
	if len(n) > 16 {
		n = n[:16]
	}
	return n
}
