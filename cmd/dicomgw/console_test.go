package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/pkg/ledger"
	"github.com/dicomgw/dicomgw/pkg/spool"
)

// A dead letter purged behind the gateway's back (dicomgw spool purge)
// leaves the ledger's dead letters once its file has been missing at two
// sweeps; one still in dead/ stays; the console's purge (consoleSource)
// refuses an object still pending elsewhere and records the one it
// removes.
func TestForgetPurgedAndConsolePurge(t *testing.T) {
	dir, sp, ids := spoolWith(t, "1.2.1", "1.2.2", "1.2.3")
	led, err := ledger.Open(ledger.Config{Path: filepath.Join(dir, ledgerFile)}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	now := time.Now()
	for i, id := range ids {
		led.Received(ledger.Object{ID: id, SOPInstanceUID: "1.2." + strconv.Itoa(i+1), Received: now, Destinations: []string{"a", "b"}})
		if err := led.Dead(id, "a", "refused", now); err != nil {
			t.Fatal(err)
		}
	}
	// ids[0], ids[1]: dead for both, in dead/; ids[2]: still pending for b.
	for _, id := range ids[:2] {
		if err := led.Dead(id, "b", "refused", now); err != nil {
			t.Fatal(err)
		}
		if err := sp.Dead(id, "refused", nil); err != nil {
			t.Fatal(err)
		}
	}
	del := &deliveries{sp: sp, led: led, log: slog.New(slog.DiscardHandler), now: time.Now, objs: map[string]*objState{}}
	dead := func() map[string]int {
		t.Helper()
		if err := led.Sync(); err != nil {
			t.Fatal(err)
		}
		s, err := led.DestinationStats()
		if err != nil {
			t.Fatal(err)
		}
		return map[string]int{"a": s["a"].Dead, "b": s["b"].Dead}
	}
	if got := dead(); got["a"] != 3 || got["b"] != 2 {
		t.Fatalf("dead letters at first: %v", got)
	}

	// Purged by hand (what dicomgw spool purge does): gone after two sweeps.
	if _, err := sp.Discard(spool.StateDead, ids[0]); err != nil {
		t.Fatal(err)
	}
	del.forgetPurged(now)
	if got := dead(); got["a"] != 3 {
		t.Fatalf("after one sweep: %v, want the purged one still counted (it may be moving)", got)
	}
	del.forgetPurged(now.Add(time.Minute)) // too soon: not a sweep
	del.forgetPurged(now.Add(sweepEvery))
	if got := dead(); got["a"] != 2 || got["b"] != 1 {
		t.Fatalf("after two sweeps: %v, want the purged one forgotten", got)
	}

	// The console's purge.
	src := &consoleSource{led: led, sp: sp, del: del, now: time.Now}
	if err := src.Purge(ids[2]); err == nil {
		t.Fatal("purge of an object still pending for b: no error")
	}
	if err := src.Purge(ids[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Item(spool.StateDead, ids[1]); err == nil {
		t.Fatal("the purged object is still in dead/")
	}
	if got := dead(); got["a"] != 1 || got["b"] != 0 {
		t.Fatalf("after the console's purge: %v", got)
	}
	dl, err := src.DeadLetters("", 0)
	if err != nil || len(dl) != 1 || dl[0].ID != ids[2] {
		t.Fatalf("dead letters left: %v %v", dl, err)
	}
}

// The console's flags are checked before anything starts: no console
// without a users file; a users file's bad line is named; a certificate
// without its key is refused.
func TestConsoleFlagsChecked(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("# operators\nalice:$2y$05$8KlINODNLv1MMdgCi3Mm.uokXrxcIxH9SlP7mD63grH0OyzUzIjbi\nbob:plaintext\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"check-config", "--spool-dir", dir, "--console-listen", "127.0.0.1:0"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--console-listen needs --console-users-file"},
		{[]string{"--console-users-file", users}, users + ":3"},
		{[]string{"--console-users-file", filepath.Join(dir, "missing")}, "no such file"},
	} {
		code, _, errs := runCmd(t, append(append([]string{}, base...), c.args...)...)
		if code != 1 || !strings.Contains(errs, c.want) {
			t.Errorf("check-config %v: exit %d, %q; want 1 and %q", c.args, code, errs, c.want)
		}
	}
	if err := os.WriteFile(users, []byte("alice:$2y$05$8KlINODNLv1MMdgCi3Mm.uokXrxcIxH9SlP7mD63grH0OyzUzIjbi\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runCmd(t, append(base, "--console-users-file", users, "--console-tls-cert", users)...); code != 1 || !strings.Contains(errs, "--console-tls-cert and --console-tls-key go together") {
		t.Errorf("a certificate without its key: %d %s", code, errs)
	}
	for _, c := range []struct{ listen, want string }{
		{":9477", "--metrics-listen=:9477 listens there"},
		{"127.0.0.1:11112", "--listen=:11112 listens there"},
		{":70000", `port "70000": want 0 to 65535`},
		{"9480", "want host:port"},
	} {
		args := []string{"check-config", "--spool-dir", dir, "--console-users-file", users, "--console-listen", c.listen}
		if code, _, errs := runCmd(t, args...); code != 1 || !strings.Contains(errs, c.want) {
			t.Errorf("--console-listen=%s: %d %q, want %q", c.listen, code, errs, c.want)
		}
	}
	if code, _, errs := runCmd(t, append(base, "--console-users-file", users, "--console-trusted-proxies", "10.0.0.0/8,ingress")...); code != 1 || !strings.Contains(errs, `"ingress" is neither an address nor a CIDR`) {
		t.Errorf("a trusted proxy by name: %d %q", code, errs)
	}
	if code, _, errs := runCmd(t, append(base, "--console-users-file", users, "--console-trusted-proxies", "10.0.0.0/8,192.0.2.1,fd00::/8")...); code != 0 {
		t.Errorf("trusted proxies: %d %q", code, errs)
	}
	if code, _, errs := runCmd(t, "check-config", "--spool-dir", dir, "--console-users-file", users, "--console-listen", "127.0.0.2:9477", "--metrics-listen", "127.0.0.1:9477"); code != 0 {
		t.Errorf("a console on another address's port 9477: %d %s", code, errs)
	}
	if code, out, errs := runCmd(t, append(base, "--console-users-file", users)...); code != 0 || !strings.Contains(out, "--console-listen=127.0.0.1:0") {
		t.Errorf("check-config with a good users file: %d %s %s", code, out, errs)
	}
}
