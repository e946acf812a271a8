// Package console is the operator console: a web application the daemon
// serves on a listener of its own, for people without Grafana or a shell on
// the host. It answers the two questions hospital IT asks every day ("did
// the study from CT 2 arrive, and where did it go?", "what is stuck, why,
// and can I push it again?") from the same sources as everything else: the
// numbers come from the gateway's Prometheus registry (what /metrics
// serves), the history of each object from the delivery ledger.
//
// Pages are rendered on the server with html/template, every asset is
// embedded, and everything works without JavaScript except the overview's
// refreshing by itself. Every page needs a login (users with bcrypt hashes,
// the file `htpasswd -nbB` writes); every action is a POST that carries the
// session's CSRF token, asks for confirmation, and is logged with the user
// who did it. Nothing but UIDs, AE titles, addresses and times is shown:
// no patient data on any page or in any URL.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicomgw/dicomgw/pkg/auth"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/ledger"
)

// Source is what the console reads and acts on besides the metrics: the
// delivery ledger and the forwarders (cmd/dicomgw wires it).
type Source interface {
	// Trace is the ledger's Trace: objects matching q, newest first.
	Trace(q ledger.Query) ([]ledger.ObjectState, error)
	// DeadLetters are the objects still in the spool with a dead delivery
	// to dest ("" any), the most recently dead first, at most limit.
	DeadLetters(dest string, limit int) ([]ledger.ObjectState, error)
	// Retry makes the dead delivery of object id to dest pending again and
	// tells dest's forwarder.
	Retry(id, dest string) error
	// Purge removes object id from the spool: every one of its deliveries
	// is dead (none is pending), and an operator gives it up.
	Purge(id string) error
	// Paused says whether dest's forwarder is paused, and why.
	Paused(dest string) (bool, string)
	// LastFailure is when an attempt to deliver to dest last failed (zero:
	// never since the start), and why.
	LastFailure(dest string) (time.Time, string)
}

// Config is what a console is built from.
type Config struct {
	Source   Source
	Gatherer prometheus.Gatherer // the registry /metrics serves
	// Associations holds the recent associations (fed by the DIMSE
	// server's Ended hook).
	Associations *Associations
	// Active, if set, lists the associations in progress (the DIMSE
	// server's Active).
	Active func() []dimse.Summary
	// SessionIdle ends a session nothing was asked in for this long
	// (default 30 min); SessionMax ends any session this long after the
	// login (default 12 h).
	SessionIdle, SessionMax time.Duration
	// Secure: the console is served over HTTPS, so its cookies are sent
	// over HTTPS only.
	Secure bool
	// TrustedProxies are the reverse proxies (an Ingress controller) whose
	// X-Forwarded-For and X-Forwarded-Proto are believed: the client's
	// address (the log, the login throttle) is then the one they forwarded
	// for, and cookies are Secure when they say the client used HTTPS.
	TrustedProxies []netip.Prefix
	// Refresh is how often the overview and the associations page refresh
	// themselves (default 5 s).
	Refresh time.Duration
	// SampleEvery is how often the counters behind "in the last hour" are
	// sampled (default 15 s).
	SampleEvery time.Duration
	Now         func() time.Time
}

func (c *Config) defaults() {
	if c.SessionIdle <= 0 {
		c.SessionIdle = 30 * time.Minute
	}
	if c.SessionMax <= 0 {
		c.SessionMax = 12 * time.Hour
	}
	if c.Refresh <= 0 {
		c.Refresh = 5 * time.Second
	}
	if c.SampleEvery <= 0 {
		c.SampleEvery = 15 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Associations == nil {
		c.Associations = NewAssociations(0)
	}
}

// Console is the operator console. Handler serves it; Run samples the
// counters until its context ends.
type Console struct {
	cfg      Config
	log      *slog.Logger
	users    atomic.Pointer[auth.Authenticator]
	settings atomic.Pointer[Settings]
	sessions *sessions
	throttle *throttle
	hist     *history
	pages    map[string]*template.Template
	m        *metrics
	started  time.Time
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// New makes a console; users are who may log in (nil: nobody).
func New(cfg Config, users *auth.Authenticator, log *slog.Logger, reg prometheus.Registerer) (*Console, error) {
	cfg.defaults()
	if cfg.Source == nil || cfg.Gatherer == nil {
		return nil, errors.New("console: a Source and a Gatherer are needed")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Console{
		cfg: cfg, log: log,
		sessions: newSessions(cfg.SessionIdle, cfg.SessionMax, cfg.Now),
		throttle: newThrottle(cfg.Now),
		hist:     newHistory(cfg.Now, time.Hour+cfg.SampleEvery),
		m:        newMetrics(reg),
		started:  cfg.Now(),
	}
	c.users.Store(users)
	c.settings.Store(&Settings{})
	var err error
	if c.pages, err = parsePages(); err != nil {
		return nil, err
	}
	c.sample()
	return c, nil
}

// SetUsers replaces who may log in (an edited users file, on SIGHUP).
// Running sessions stay.
func (c *Console) SetUsers(a *auth.Authenticator) { c.users.Store(a) }

// SetSettings replaces what the configuration page shows.
func (c *Console) SetSettings(s Settings) { c.settings.Store(&s) }

// Run samples the counters behind "in the last hour", and forgets expired
// sessions, until ctx ends.
func (c *Console) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.SampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.sample()
			c.sessions.sweep()
			c.m.sessions.Set(float64(c.sessions.count()))
		}
	}
}

func (c *Console) sample() {
	fams, err := c.cfg.Gatherer.Gather()
	if err != nil && len(fams) == 0 {
		c.log.Warn("console: cannot read the metrics for its history", "err", err)
		return
	}
	c.hist.add(counterSeries(fams, historyFamilies...))
}

// parsePages parses each page with the layout.
func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		base := n[len("templates/"):]
		if base == "layout.html" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", base, err)
		}
		pages[base] = t
	}
	return pages, nil
}

// Handler serves the console.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", cacheable(http.FileServerFS(static))))
	mux.HandleFunc("GET /login", c.loginPage)
	mux.HandleFunc("POST /login", c.login)
	mux.HandleFunc("POST /logout", c.action(c.logout))
	mux.HandleFunc("GET /{$}", c.page(c.overview))
	mux.HandleFunc("GET /find", c.page(c.find))
	mux.HandleFunc("GET /dead", c.page(c.dead))
	mux.HandleFunc("POST /dead/confirm", c.action(c.deadConfirm))
	mux.HandleFunc("POST /dead/act", c.action(c.deadAct))
	mux.HandleFunc("GET /associations", c.page(c.associations))
	mux.HandleFunc("GET /config", c.page(c.configPage))
	return secureHeaders(mux)
}

// secureHeaders sets what every answer carries: nothing from elsewhere is
// loaded or may frame the console, and pages are never cached.
func secureHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		if hd.Get("Cache-Control") == "" {
			hd.Set("Cache-Control", "no-store")
		}
		h.ServeHTTP(w, r)
	})
}

func cacheable(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "private, max-age=300")
		h.ServeHTTP(w, r)
	})
}
