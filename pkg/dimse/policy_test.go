package dimse

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

func TestParseCallingAE(t *testing.T) {
	ctx := context.Background()
	for spec, want := range map[string]string{
		"CT1":              "",
		"CT1@10.0.0.0/8":   "10.0.0.0/8",
		"CT1@10.1.2.3/8":   "10.0.0.0/8",
		"CT1@127.0.0.1":    "127.0.0.1/32",
		"CT1@::1":          "::1/128",
		"CT1@fd00::/8":     "fd00::/8",
		"CT1@localhost":    "127.0.0.1/32",
		"MR 2@192.168.0.1": "192.168.0.1/32",
	} {
		c, err := ParseCallingAE(ctx, spec)
		if err != nil {
			t.Errorf("%s: %v", spec, err)
			continue
		}
		got := ""
		for _, p := range c.Prefixes {
			if got == "" || p.Addr().Is4() {
				got = p.String()
			}
		}
		if got != want {
			t.Errorf("%s: prefixes %v, want %s", spec, c.Prefixes, want)
		}
	}
	for _, bad := range []string{"", "@10.0.0.1", "CT1@", "WAY_TOO_LONG_AE_TITLE@1.2.3.4", "CT1@no-such-host.invalid", "C\\T@1.2.3.4"} {
		if _, err := ParseCallingAE(ctx, bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCallingAllowed(t *testing.T) {
	ctx := context.Background()
	var entries []CallingAE
	for _, s := range []string{"CT1@10.0.0.0/8", "MR1", "US1@::1"} {
		c, err := ParseCallingAE(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, c)
	}
	p, err := compile(Policy{AETitles: []string{"GW"}, CallingAEs: entries})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ae, addr string
		want     bool
	}{
		{"CT1", "10.9.8.7", true},
		{"CT1", "::ffff:10.9.8.7", true},
		{"CT1", "192.168.1.1", false},
		{"MR1", "192.168.1.1", true},
		{"US1", "::1", true},
		{"US1", "127.0.0.1", false},
		{"XX", "10.0.0.1", false},
		{"ct1", "10.0.0.1", false}, // AE titles are case sensitive (PS3.5 6.2)
	} {
		if got := p.callingAllowed(c.ae, netip.MustParseAddr(c.addr), nil); got != c.want {
			t.Errorf("%s from %s: %v", c.ae, c.addr, got)
		}
	}
	if open, _ := compile(Policy{AETitles: []string{"GW"}}); !open.callingAllowed("ANYONE", netip.MustParseAddr("1.2.3.4"), nil) {
		t.Error("an empty allowlist refuses")
	}
	if !p.Known("CT1") || p.Known("XX") {
		t.Error("Known")
	}
}

// TestCallingAERejectAndLiveReload: an unknown calling AE (or a known one
// from the wrong host) gets A-ASSOCIATE-RJ 1/1/3; SetPolicy applies to new
// associations while an established one carries on.
func TestCallingAERejectAndLiveReload(t *testing.T) {
	ctx := context.Background()
	bound, _ := ParseCallingAE(ctx, "TESTSCU@10.0.0.0/8")
	srv, addr := startServer(t, Config{CallingAEs: []CallingAE{bound}}, newMemStore())
	dialAs := func(calling string) (*Client, error) {
		return Dial(ctx, addr, DialConfig{CallingAE: calling, CalledAE: "DICOMGW", Contexts: []ProposedContext{ctVerification}, Timeout: 5 * time.Second})
	}
	want := pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceUser, Reason: pdu.RejectCallingAENotRecognized}
	for _, calling := range []string{"TESTSCU", "STRANGER"} { // wrong host; not listed
		_, err := dialAs(calling)
		var rj *RejectedError
		if !errors.As(err, &rj) || rj.AssociateRJ != want {
			t.Fatalf("%s: %v", calling, err)
		}
	}
	local, _ := ParseCallingAE(ctx, "TESTSCU@127.0.0.0/8")
	if err := srv.SetPolicy(Policy{AETitles: []string{"DICOMGW", "NEWNAME"}, CallingAEs: []CallingAE{local}}); err != nil {
		t.Fatal(err)
	}
	c, err := dialAs("TESTSCU")
	if err != nil {
		t.Fatal(err)
	}
	// The running association survives a policy that would now refuse it.
	if err := srv.SetPolicy(Policy{AETitles: []string{"NEWNAME"}}); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Echo(); err != nil || st != StatusSuccess {
		t.Fatalf("echo after reload: %v %v", st, err)
	}
	c.Release()
	if _, err := dialAs("TESTSCU"); err == nil {
		t.Fatal("old called AE still answered after reload")
	}
	c, err = Dial(ctx, addr, DialConfig{CallingAE: "ANYONE", CalledAE: "NEWNAME", Contexts: []ProposedContext{{AbstractSyntax: uid.Verification, TransferSyntaxes: []string{uid.ImplicitVRLittleEndian}}}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("new called AE: %v", err)
	}
	c.Release()
	if err := srv.SetPolicy(Policy{}); err == nil {
		t.Fatal("empty policy accepted")
	}
}

// TestCalledAEPredicate: a called AE title outside AETitles is answered to
// when Policy.CalledAE accepts it (a route selecting on called_ae), and
// refused 1/1/7 otherwise, the reason saying a route was consulted.
func TestCalledAEPredicate(t *testing.T) {
	srv, addr := startServer(t, Config{}, newMemStore())
	if err := srv.SetPolicy(Policy{AETitles: []string{"DICOMGW"}, CalledAE: func(ae string) bool { return len(ae) > 3 && ae[:3] == "KP-" }}); err != nil {
		t.Fatal(err)
	}
	for called, ok := range map[string]bool{"DICOMGW": true, "KP-PROJ1": true, "KP-": false, "OTHER": false} {
		c, err := Dial(context.Background(), addr, DialConfig{CallingAE: "TESTSCU", CalledAE: called, Contexts: []ProposedContext{ctVerification}, Timeout: 5 * time.Second})
		if ok {
			if err != nil {
				t.Errorf("called %s: %v", called, err)
				continue
			}
			c.Release()
			continue
		}
		var rj *RejectedError
		if !errors.As(err, &rj) || rj.Result != pdu.RejectPermanent || rj.Reason != pdu.RejectCalledAENotRecognized {
			t.Errorf("called %s: %v, want A-ASSOCIATE-RJ 1/1/7", called, err)
		}
	}
}
