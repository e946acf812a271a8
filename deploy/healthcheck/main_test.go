package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestHealthcheck: 200 is healthy (exit 0); any other status, a closed
// port or a server that does not answer in time is not (exit 1); bad
// arguments are exit 2.
func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			io.WriteString(w, `{"status":"ok"}`)
		case "/slow":
			time.Sleep(time.Second)
		default:
			http.Error(w, "no", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/healthz"
	ln.Close()

	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{"--url", srv.URL + "/healthz"}, 0},
		{[]string{"--url", srv.URL + "/readyz"}, 1},
		{[]string{"--url", closed}, 1},
		{[]string{"--url", srv.URL + "/slow", "--timeout", "200ms"}, 1},
		{[]string{"--sleep", "10ms"}, 0},
		{[]string{"--bogus"}, 2},
		{[]string{"extra"}, 2},
	} {
		var out strings.Builder
		if got := run(c.args, &out); got != c.want {
			t.Errorf("run %q = %d, want %d (%s)", c.args, got, c.want, out.String())
		}
	}
	t.Setenv("DICOMGW_HEALTHCHECK_URL", srv.URL+"/healthz")
	if got := run(nil, io.Discard); got != 0 {
		t.Errorf("with $DICOMGW_HEALTHCHECK_URL: %d, want 0", got)
	}
}
