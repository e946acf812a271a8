package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

// A session is one login. Its ID travels in an HttpOnly, SameSite=Strict
// cookie; its CSRF token in every form, and an action without both is
// refused.
type session struct {
	id, user, csrf string
	created, seen  time.Time
	flash          string // a message for the next page (what an action did)
}

// sessions are the logins in force, in memory: a restart logs everybody
// out, which is what a restarted gateway should do.
type sessions struct {
	idle, max time.Duration
	now       func() time.Time

	mu sync.Mutex
	m  map[string]*session
}

// maxSessions bounds the sessions kept; beyond it the least recently used
// one ends.
const maxSessions = 1000

func newSessions(idle, max time.Duration, now func() time.Time) *sessions {
	return &sessions{idle: idle, max: max, now: now, m: map[string]*session{}}
}

// token is 32 random bytes, base64url.
func token() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session for user: always a new ID, so that an ID known
// before the login (fixation) is worth nothing after it.
func (s *sessions) create(user string) *session {
	now := s.now()
	ss := &session{id: token(), user: user, csrf: token(), created: now, seen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= maxSessions {
		var oldest *session
		for _, o := range s.m {
			if oldest == nil || o.seen.Before(oldest.seen) {
				oldest = o
			}
		}
		delete(s.m, oldest.id)
	}
	s.m[ss.id] = ss
	return ss
}

func (s *sessions) expired(ss *session, now time.Time) bool {
	return now.Sub(ss.seen) > s.idle || now.Sub(ss.created) > s.max
}

// get returns the session with this ID, in force, and marks it used; nil
// when there is none.
func (s *sessions) get(id string) *session { return s.lookup(id, true) }

// peek is get for a page that refreshes itself: it does not count as use,
// so that a forgotten tab still ends its session after the idle timeout.
func (s *sessions) peek(id string) *session { return s.lookup(id, false) }

func (s *sessions) lookup(id string, touch bool) *session {
	if id == "" {
		return nil
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.m[id]
	if ss == nil {
		return nil
	}
	if s.expired(ss, now) {
		delete(s.m, id)
		return nil
	}
	if touch {
		ss.seen = now
	}
	return ss
}

// takeFlash returns the session's message and clears it.
func (s *sessions) takeFlash(ss *session) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := ss.flash
	ss.flash = ""
	return f
}

func (s *sessions) setFlash(ss *session, msg string) {
	s.mu.Lock()
	ss.flash = msg
	s.mu.Unlock()
}

func (s *sessions) drop(id string) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

// sweep forgets the expired sessions.
func (s *sessions) sweep() {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, ss := range s.m {
		if s.expired(ss, now) {
			delete(s.m, id)
		}
	}
}

func (s *sessions) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

func sameToken(a, b string) bool {
	return a != "" && len(a) == len(b) && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// Cookie names.
const (
	sessionCookie = "dicomgw_session"
	loginCookie   = "dicomgw_login" // the login form's own CSRF token (double submit)
)

func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration) {
	ck := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: c.viaHTTPS(r), SameSite: http.SameSiteStrictMode}
	switch {
	case maxAge < 0:
		ck.MaxAge = -1
	case maxAge > 0:
		ck.MaxAge = int(maxAge / time.Second)
	}
	http.SetCookie(w, ck)
}

func cookie(r *http.Request, name string) string {
	ck, err := r.Cookie(name)
	if err != nil {
		return ""
	}
	return ck.Value
}

// throttle slows password guessing: after maxFailures failed logins from
// one address within failureWindow, that address may not try again until
// the window has passed since its first failure.
type throttle struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*failures
}

type failures struct {
	n     int
	first time.Time
}

const (
	maxFailures   = 5
	failureWindow = 5 * time.Minute
	maxThrottled  = 10000 // addresses remembered
)

func newThrottle(now func() time.Time) *throttle {
	return &throttle{now: now, m: map[string]*failures{}}
}

// wait is how long addr must wait before its next try (0: it may try).
func (t *throttle) wait(addr string) time.Duration {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.m[addr]
	if f == nil {
		return 0
	}
	if now.Sub(f.first) >= failureWindow {
		delete(t.m, addr)
		return 0
	}
	if f.n < maxFailures {
		return 0
	}
	return failureWindow - now.Sub(f.first)
}

func (t *throttle) failed(addr string) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.m[addr]
	if f == nil || now.Sub(f.first) >= failureWindow {
		if len(t.m) >= maxThrottled {
			for a, o := range t.m {
				if now.Sub(o.first) >= failureWindow {
					delete(t.m, a)
				}
			}
			if len(t.m) >= maxThrottled {
				return
			}
		}
		f = &failures{first: now}
		t.m[addr] = f
	}
	f.n++
}

func (t *throttle) succeeded(addr string) {
	t.mu.Lock()
	delete(t.m, addr)
	t.mu.Unlock()
}
