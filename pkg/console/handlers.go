package console

import (
	"bytes"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// view is what every page's template gets.
type view struct {
	Title   string
	Nav     string // which tab is current
	User    string
	CSRF    string
	Flash   string
	Error   string
	Refresh int // seconds; 0: the page does not refresh itself
	Now     time.Time
	Data    any
}

// render writes a page; a template error is a 500 that says so in the log,
// never half a page.
func (c *Console) render(w http.ResponseWriter, code int, page string, v view) {
	v.Now = c.cfg.Now()
	var buf bytes.Buffer
	if err := c.pages[page].ExecuteTemplate(&buf, "layout", v); err != nil {
		c.log.Error("console: cannot render a page", "page", page, "err", err)
		http.Error(w, "the page could not be rendered; see the gateway's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// pageFunc is a page for a logged-in user; it fills v (User, CSRF and
// Flash are set) and says which template renders it, with what status.
type pageFunc func(r *http.Request, ss *session, v *view) (page string, code int)

// page serves GET pages: without a session, the login page (the URL asked
// for is where the login goes after).
func (c *Console) page(fn pageFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// The script's own refresh does not keep a session alive.
		refresh := r.Header.Get("X-Console-Refresh") == "1"
		var ss *session
		if refresh {
			ss = c.sessions.peek(cookie(r, sessionCookie))
		} else {
			ss = c.sessions.get(cookie(r, sessionCookie))
		}
		if ss == nil {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		v := view{User: ss.user, CSRF: ss.csrf}
		if !refresh {
			v.Flash = c.sessions.takeFlash(ss)
		}
		page, code := fn(r, ss, &v)
		c.render(w, code, page, v)
	}
}

// actionFunc does what a POST asks, for a logged-in user whose CSRF token
// checked out, and writes the answer.
type actionFunc func(w http.ResponseWriter, r *http.Request, ss *session)

// maxForm bounds a form's body: a selection of a thousand dead letters is
// about 40 KiB.
const maxForm = 1 << 20

// action serves POSTs: refused (403) without a session in force, without
// the session's CSRF token in the form, or from another site.
func (c *Console) action(fn actionFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if crossSite(r) {
			c.refuse(w, r, "", "a request from another site")
			return
		}
		ss := c.sessions.get(cookie(r, sessionCookie))
		if ss == nil {
			c.refuse(w, r, "", "no session (not logged in, or the session expired)")
			return
		}
		if err := r.ParseForm(); err != nil {
			c.m.refused.WithLabelValues("bad_form").Inc()
			http.Error(w, "the form could not be read", http.StatusBadRequest)
			return
		}
		if !sameToken(r.PostForm.Get("csrf"), ss.csrf) {
			c.refuse(w, r, ss.user, "the form's CSRF token is missing or wrong")
			return
		}
		fn(w, r, ss)
	}
}

// refuse answers an action that is not allowed, and logs it.
func (c *Console) refuse(w http.ResponseWriter, r *http.Request, user, why string) {
	label := "csrf"
	switch {
	case strings.HasPrefix(why, "no session"):
		label = "no_session"
	case strings.HasPrefix(why, "a request from another site"):
		label = "cross_site"
	}
	c.m.refused.WithLabelValues(label).Inc()
	c.log.Warn("console: action refused", "reason", why, "user", user, "path", r.URL.Path, "client", c.clientAddr(r))
	c.render(w, http.StatusForbidden, "refused.html", view{Title: "Refused", Error: why, Now: c.cfg.Now()})
}

// crossSite: the browser says the request comes from another site
// (Sec-Fetch-Site), or its Origin is not this console's.
func crossSite(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s == "cross-site" || s == "same-site" {
		return true
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return true
		}
	}
	return false
}

// clientAddr is the client's IP address: the peer's, or, when the peer is
// a trusted proxy (Config.TrustedProxies), the nearest address in
// X-Forwarded-For that is not one (what a client writes there itself is
// never believed: only the proxies' own appends are read, right to left).
func (c *Console) clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !c.trusted(ip) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // garbage: stop at the last address known good
		}
		ip = hop.Unmap()
		if !c.trusted(ip) {
			break
		}
	}
	return ip.String()
}

func (c *Console) trusted(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range c.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// viaHTTPS: the console is served over HTTPS, by itself or by a trusted
// proxy that says so (X-Forwarded-Proto): its cookies are then Secure.
func (c *Console) viaHTTPS(r *http.Request) bool {
	if c.cfg.Secure || r.TLS != nil {
		return true
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && c.trusted(ip) && strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

type loginData struct {
	Token, Next, Username string
}

// safeNext is where to go after the login: a path of this console, never
// another site. No control characters: browsers drop tabs and newlines
// from a URL before reading it, so "/\t/evil.example" is "//evil.example"
// to them.
func safeNext(s string) string {
	if s == "" || !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") || strings.HasPrefix(s, "/\\") ||
		strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "/"
	}
	return s
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if ss := c.sessions.get(cookie(r, sessionCookie)); ss != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	c.showLogin(w, r, http.StatusOK, "", "")
}

func (c *Console) showLogin(w http.ResponseWriter, r *http.Request, code int, username, msg string) {
	t := token()
	c.setCookie(w, r, loginCookie, t, 0)
	next := r.URL.Query().Get("next")
	if r.Method == http.MethodPost {
		next = r.PostForm.Get("next")
	}
	c.render(w, code, "login.html", view{Title: "Log in", Error: msg, Data: loginData{Token: t, Next: safeNext(next), Username: username}})
}

// maxCredential bounds a username or password read from the form (bcrypt
// reads 72 bytes of a password at most).
const maxCredential = 256

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "the form could not be read", http.StatusBadRequest)
		return
	}
	addr := c.clientAddr(r)
	if crossSite(r) || !sameToken(r.PostForm.Get("login_token"), cookie(r, loginCookie)) {
		c.m.logins.WithLabelValues("refused").Inc()
		c.log.Warn("console: login form refused: its token does not match its cookie (an old page, or a request from another site)", "client", addr)
		c.showLogin(w, r, http.StatusForbidden, "", "This login form is out of date; try again.")
		return
	}
	user, pass := r.PostForm.Get("username"), r.PostForm.Get("password")
	if wait := c.throttle.wait(addr); wait > 0 {
		c.m.logins.WithLabelValues("throttled").Inc()
		c.log.Warn("console: login refused: too many failures from this address", "client", addr, "retry_in", wait.Round(time.Second))
		c.showLogin(w, r, http.StatusTooManyRequests, "", "Too many failed logins from this address; try again in "+wait.Round(time.Second).String()+".")
		return
	}
	users := c.users.Load()
	ok := users != nil && len(user) <= maxCredential && len(pass) <= maxCredential && utf8.ValidString(user) &&
		users.Passcode([]byte(user), []byte(pass), true) == nil
	if !ok {
		c.throttle.failed(addr)
		c.m.logins.WithLabelValues("failure").Inc()
		c.log.Warn("console: login failed", "user", clipUser(user), "client", addr)
		c.showLogin(w, r, http.StatusUnauthorized, "", "Unknown user or wrong password.")
		return
	}
	c.throttle.succeeded(addr)
	ss := c.sessions.create(user)
	c.m.logins.WithLabelValues("success").Inc()
	c.m.sessions.Set(float64(c.sessions.count()))
	c.log.Info("console: logged in", "user", user, "client", addr)
	c.setCookie(w, r, loginCookie, "", -1)
	c.setCookie(w, r, sessionCookie, ss.id, 0)
	http.Redirect(w, r, safeNext(r.PostForm.Get("next")), http.StatusSeeOther)
}

// clipUser is a username someone typed, for the log: at most 64 bytes
// (the log's handler quotes what needs quoting).
func clipUser(u string) string {
	if len(u) > 64 {
		u = u[:64] + "..."
	}
	return strings.ToValidUTF8(u, "?")
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, ss *session) {
	c.sessions.drop(ss.id)
	c.m.sessions.Set(float64(c.sessions.count()))
	c.log.Info("console: logged out", "user", ss.user, "client", c.clientAddr(r))
	c.setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
