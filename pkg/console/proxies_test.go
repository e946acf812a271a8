package console

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"
)

// Behind a trusted proxy, the client is the address it forwarded for and
// the scheme is the one it says; from anyone else the headers are ignored.
func TestTrustedProxies(t *testing.T) {
	c := &Console{cfg: Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}}}
	for _, tc := range []struct {
		remote, xff, proto string
		client             string
		https              bool
	}{
		{"192.0.2.7:5555", "203.0.113.9", "https", "192.0.2.7", false},                         // not a proxy: its headers are the client's words
		{"10.1.2.3:5555", "", "", "10.1.2.3", false},                                           // a proxy that forwards nothing
		{"10.1.2.3:5555", "203.0.113.9", "https", "203.0.113.9", true},                         // one proxy
		{"10.1.2.3:5555", "198.51.100.1, 203.0.113.9, 10.9.9.9", "http", "203.0.113.9", false}, // the client wrote 198.51.100.1 itself: not believed
		{"[::1]:5555", "garbage, 203.0.113.9", "HTTPS", "203.0.113.9", true},
		{"10.1.2.3:5555", "203.0.113.9, nonsense", "", "10.1.2.3", false}, // garbage last: the proxy's own address
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		r.Header.Set("X-Forwarded-Proto", tc.proto)
		if got := c.clientAddr(r); got != tc.client {
			t.Errorf("%s via %s: client %s, want %s", tc.xff, tc.remote, got, tc.client)
		}
		if got := c.viaHTTPS(r); got != tc.https {
			t.Errorf("%s via %s (%s): HTTPS %v, want %v", tc.xff, tc.remote, tc.proto, got, tc.https)
		}
	}

	// The lockout counts the forwarded client: one client's failures do
	// not lock out another behind the same proxy; the cookie is Secure
	// when the proxy says the client used HTTPS.
	h := newHarness(t, Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, nil)
	b := h.browser("10.0.0.5") // the Ingress controller
	login := func(client, pass string) *http.Response {
		tok := b.loginForm()
		resp, _ := b.post("/login", url.Values{"login_token": {tok}, "username": {"alice"}, "password": {pass}},
			"X-Forwarded-For", client, "X-Forwarded-Proto", "https")
		return resp
	}
	for range maxFailures {
		login("203.0.113.66", "guess")
	}
	if resp := login("203.0.113.66", alicePass); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("the guessing client: %s, want 429", resp.Status)
	}
	resp := login("203.0.113.10", alicePass)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("another client behind the same proxy: %s, want 303", resp.Status)
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie && !ck.Secure {
			t.Errorf("the session cookie behind a proxy that says https is not Secure")
		}
	}
}
