package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"

	"github.com/dicomgw/dicomgw/pkg/auth"
	"github.com/dicomgw/dicomgw/pkg/console"
	"github.com/dicomgw/dicomgw/pkg/ledger"
	"github.com/dicomgw/dicomgw/pkg/spool"
)

// consoleSource is what the console reads and acts on: the ledger, the
// spool's files and the running forwarders.
type consoleSource struct {
	led *ledger.Ledger
	sp  *spool.Spool
	del *deliveries
	rt  *router
	now func() time.Time
}

func (s *consoleSource) Trace(q ledger.Query) ([]ledger.ObjectState, error) { return s.led.Trace(q) }

// DeadLetters are the ledger's (objects it knows in the spool), less those
// whose file is gone already (purged by `dicomgw spool purge`, which the
// ledger learns of only at the janitor's next sweeps).
func (s *consoleSource) DeadLetters(dest string, limit int) ([]ledger.ObjectState, error) {
	objs, err := s.led.DeadLetters(dest, limit)
	if err != nil {
		return nil, err
	}
	out := objs[:0]
	for _, o := range objs {
		if _, err := s.sp.Item(spool.StateDead, o.ID); err != nil {
			if _, err := s.sp.Item(spool.StateQueued, o.ID); err != nil {
				continue
			}
		}
		out = append(out, o)
	}
	return out, nil
}

// Retry turns the dead delivery back into a pending one (the ledger
// first: a crash before the file moves leaves a dead/ file with a
// destination pending, which the next start moves back), moves the file
// back to the queue when it was in dead/, and tells the forwarder.
func (s *consoleSource) Retry(id, dest string) error {
	if err := s.led.Requeue(id, dest); err != nil {
		return err
	}
	s.del.forget(id)
	if _, err := s.sp.Item(spool.StateDead, id); err == nil {
		if err := s.sp.Requeue(id); err != nil {
			return fmt.Errorf("re-queued in the ledger, but its file could not move back to the queue (the next start moves it): %w", err)
		}
	}
	f := s.rt.current().fwds[dest]
	if f == nil {
		return fmt.Errorf("re-queued, but destination %s is not configured: it waits until the destination is defined again", dest)
	}
	f.Notify(id)
	return nil
}

// Purge removes an object every destination is done with (some could not
// take it) from the spool, and tells the ledger it left.
func (s *consoleSource) Purge(id string) error {
	o, ok, err := s.led.Object(id)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("object %s: %w", id, ledger.ErrNotFound)
	}
	for _, d := range o.Deliveries {
		if d.State == ledger.StatePending {
			return fmt.Errorf("object %s is still queued for %s", id, d.Destination)
		}
	}
	if _, err := s.sp.Discard(spool.StateDead, id); err != nil {
		return err
	}
	s.led.Gone(id, s.now())
	return nil
}

func (s *consoleSource) LastFailure(dest string) (time.Time, string) {
	if f := s.rt.current().fwds[dest]; f != nil {
		return f.LastFailure()
	}
	return time.Time{}, ""
}

func (s *consoleSource) Paused(dest string) (bool, string) {
	if f := s.rt.current().fwds[dest]; f != nil {
		return f.Paused()
	}
	return false, ""
}

// forget drops what deliveries remembers of id: the ledger changed under
// it (an operator's retry), and is read again when the object is next
// settled.
func (d *deliveries) forget(id string) {
	d.mu.Lock()
	delete(d.objs, id)
	d.mu.Unlock()
}

// consoleChecks checks the console's flags: a users file that reads (a
// console without login is not offered), and a certificate with its key.
func (c serveConfig) consoleChecks() (*auth.Authenticator, *tls.Config, error) {
	if c.consoleListen == "" {
		return nil, nil, nil
	}
	if c.consoleUsersFile == "" {
		return nil, nil, errors.New("--console-listen needs --console-users-file: the console requires a login (htpasswd -nbB USER PASSWORD >> FILE)")
	}
	if err := c.consoleAddrFree(); err != nil {
		return nil, nil, err
	}
	users, err := auth.New(auth.Config{UsersFile: c.consoleUsersFile})
	if err != nil {
		return nil, nil, fmt.Errorf("--console-users-file: %w", err)
	}
	if (c.consoleTLSCert == "") != (c.consoleTLSKey == "") {
		return nil, nil, errors.New("--console-tls-cert and --console-tls-key go together")
	}
	var tc *tls.Config
	if c.consoleTLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.consoleTLSCert, c.consoleTLSKey)
		if err != nil {
			return nil, nil, fmt.Errorf("--console-tls-cert/--console-tls-key: %w", err)
		}
		tc = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	if c.consoleSessionTimeout < time.Minute {
		return nil, nil, fmt.Errorf("--console-session-timeout=%v: want at least 1m", c.consoleSessionTimeout)
	}
	return users, tc, nil
}

// consoleAddrFree checks --console-listen: a host:port whose port is a
// number, not one another listener of the gateway takes (which serve would
// find only when it starts).
func (c serveConfig) consoleAddrFree() error {
	host, port, err := net.SplitHostPort(c.consoleListen)
	if err != nil {
		return fmt.Errorf("--console-listen=%s: want host:port or :port: %v", c.consoleListen, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("--console-listen=%s: port %q: want 0 to 65535", c.consoleListen, port)
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	for _, o := range []struct{ flag, addr string }{{"listen", c.listen}, {"tls-listen", c.tlsListen}, {"metrics-listen", c.metricsListen}} {
		oh, op, err := net.SplitHostPort(o.addr)
		if err != nil || n == 0 || op != port {
			continue
		}
		if oh == host || wildcard(oh) || wildcard(host) {
			return fmt.Errorf("--console-listen=%s: --%s=%s listens there", c.consoleListen, o.flag, o.addr)
		}
	}
	return nil
}

// parseProxies reads --console-trusted-proxies: addresses (one host) or
// CIDRs.
func parseProxies(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("--console-trusted-proxies: %q is neither an address nor a CIDR", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// consoleServer is the console's listener, running.
type consoleServer struct {
	con   *console.Console
	certs atomic.Pointer[tls.Config]  // nil: plain HTTP
	cfg   atomic.Pointer[serveConfig] // the flags in force (a SIGHUP replaces them)
	log   *slog.Logger
	stop  func()
}

// startConsole serves the console on c.consoleListen; over HTTPS when
// given a certificate. Its sampling goroutine and the HTTP server end with
// stop.
func startConsole(c serveConfig, con *console.Console, tc *tls.Config, log *slog.Logger) (*consoleServer, net.Addr, error) {
	ln, err := net.Listen("tcp", c.consoleListen)
	if err != nil {
		return nil, nil, fmt.Errorf("--console-listen: %w", err)
	}
	cs := &consoleServer{con: con, log: log}
	cs.cfg.Store(&c)
	if tc != nil {
		cs.certs.Store(tc)
		ln = tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return cs.certs.Load(), nil
		}})
	} else if host, _, err := net.SplitHostPort(ln.Addr().String()); err == nil && len(c.consoleProxies) == 0 {
		// Behind trusted proxies, they are the ones that serve HTTPS.
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			log.Warn("the console is served over plain HTTP on a non-loopback address: passwords cross the network in the clear; give it --console-tls-cert and --console-tls-key")
		}
	}
	srv := &http.Server{Handler: con.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 3)
	go func() {
		defer func() { done <- struct{}{} }()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("console server failed", "err", err)
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		con.Run(ctx)
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		cs.watch(ctx, consoleWatchEvery)
	}()
	cs.stop = func() {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		srv.Shutdown(sctx)
		<-done
		<-done
		<-done
	}
	return cs, ln.Addr(), nil
}

// consoleWatchEvery is how often the console's users file and certificate
// are looked at for a change.
const consoleWatchEvery = 5 * time.Second

// watch takes the users file and the certificate again when they change on
// disk (a Kubernetes Secret's update, an edit), as a SIGHUP would: a
// container cannot be sent one.
func (cs *consoleServer) watch(ctx context.Context, every time.Duration) {
	stamp := func() string {
		c := cs.cfg.Load()
		var b strings.Builder
		for _, f := range []string{c.consoleUsersFile, c.consoleTLSCert, c.consoleTLSKey} {
			if f == "" {
				continue
			}
			if fi, err := os.Stat(f); err == nil {
				fmt.Fprintf(&b, "%s %d %d;", f, fi.Size(), fi.ModTime().UnixNano())
			} else {
				fmt.Fprintf(&b, "%s missing;", f)
			}
		}
		return b.String()
	}
	last := stamp()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := stamp()
		if now == last {
			continue
		}
		last = now
		if err := cs.reload(*cs.cfg.Load()); err != nil {
			cs.log.Error("the console's users file or certificate changed and cannot be read; keeping the ones in force", "err", err)
			continue
		}
		cs.log.Info("the console's users file or certificate changed: taken")
	}
}

// reload takes a new users file and certificate (a change on disk).
func (cs *consoleServer) reload(c serveConfig) error {
	users, tc, err := c.consoleChecks()
	if err != nil {
		return err
	}
	return cs.take(c, users, tc)
}

// take puts in force what consoleChecks read from c (SIGHUP, or reload).
func (cs *consoleServer) take(c serveConfig, users *auth.Authenticator, tc *tls.Config) error {
	if users == nil {
		return errors.New("the console cannot be switched off by a reload: restart")
	}
	if (tc == nil) != (cs.certs.Load() == nil) {
		return errors.New("the console's HTTPS cannot be switched on or off by a reload: restart")
	}
	cs.con.SetUsers(users)
	if tc != nil {
		cs.certs.Store(tc)
	}
	cs.cfg.Store(&c)
	return nil
}

// consoleSettings is what the configuration page shows: the effective
// flags (as check-config prints them), the destinations and routes.
func consoleSettings(fs *pflag.FlagSet, set *settings) console.Settings {
	s := console.Settings{Flags: effectiveFlags(fs), Loaded: time.Now(), Version: version + " (" + commit + ")", Unrouted: set.unrouted}
	used := map[string]bool{set.unrouted: true}
	for _, r := range set.table.Routes() {
		s.Routes = append(s.Routes, r.String())
		for _, d := range r.Destinations() {
			used[d] = true
		}
	}
	for _, n := range slices.Sorted(maps.Keys(set.dests)) {
		d := set.dests[n]
		s.Destinations = append(s.Destinations, console.DestinationSetting{Name: n, Kind: string(d.kind), Where: d.where, Spec: d.spec, Routed: used[n]})
	}
	return s
}

// effectiveFlags lists every flag with its value, lists one line per
// element; URLs without their query strings and passwords (a KHEOPS
// album's, a user's).
func effectiveFlags(fs *pflag.FlagSet) []console.Setting {
	var out []console.Setting
	fs.VisitAll(func(f *pflag.Flag) {
		switch v, isList := f.Value.(pflag.SliceValue); {
		case f.Name == "flagfile":
		case isList && len(v.GetSlice()) == 0:
			out = append(out, console.Setting{Name: f.Name, None: true})
		case isList:
			for _, e := range v.GetSlice() {
				out = append(out, console.Setting{Name: f.Name, Value: e})
			}
		case strings.HasSuffix(f.Name, "-url"):
			out = append(out, console.Setting{Name: f.Name, Value: redactURL(f.Value.String())})
		default:
			out = append(out, console.Setting{Name: f.Name, Value: f.Value.String()})
		}
	})
	return out
}

// redactURL leaves out a URL's query string and password.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || s == "" {
		if s == "" {
			return ""
		}
		return "[not a URL]"
	}
	if u.RawQuery != "" {
		u.RawQuery = "[query]"
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "[redacted]")
		}
	}
	return strings.Replace(u.String(), "%5Bquery%5D", "[query]", 1)
}
