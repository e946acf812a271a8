package forward

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
)

const (
	implicitLE  = "1.2.840.10008.1.2"
	jpegBase    = "1.2.840.10008.1.2.4.50"
	jpegLSLossl = "1.2.840.10008.1.2.4.80"
	mrClass     = "1.2.840.10008.5.1.4.1.1.4"
)

func newTestCStore(t *testing.T, addr string, edit ...func(*CStoreConfig)) *CStore {
	t.Helper()
	cfg := CStoreConfig{Addr: addr, CalledAE: "PACS", CallingAE: "DICOMGW", Timeout: 20 * time.Second}
	for _, e := range edit {
		e(&cfg)
	}
	c, err := NewCStore(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// deliver runs Deliver with a bound: a destination that does not honour
// its context, or hangs, fails the test rather than the suite.
func deliver(t *testing.T, c *CStore, objs ...*Object) []Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rs := c.Deliver(ctx, objs)
	if len(rs) != len(objs) {
		t.Fatalf("%d results for %d objects", len(rs), len(objs))
	}
	return rs
}

func TestNewCStoreValidates(t *testing.T) {
	good := CStoreConfig{Addr: "pacs.example:104", CalledAE: "PACS", CallingAE: "DICOMGW"}
	c, err := NewCStore(good, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.String(); got != "dicom://PACS@pacs.example:104" {
		t.Errorf("String() = %q", got)
	}
	tc := good
	tc.TLS = &tls.Config{}
	if c, err := NewCStore(tc, nil); err != nil || c.String() != "dicoms://PACS@pacs.example:104" {
		t.Errorf("with TLS: %v, %v", c, err)
	}
	for name, edit := range map[string]func(*CStoreConfig){
		"no port":         func(c *CStoreConfig) { c.Addr = "pacs.example" },
		"no host":         func(c *CStoreConfig) { c.Addr = ":104" },
		"port 0":          func(c *CStoreConfig) { c.Addr = "pacs:0" },
		"port too large":  func(c *CStoreConfig) { c.Addr = "pacs:65536" },
		"port not number": func(c *CStoreConfig) { c.Addr = "pacs:dicom" },
		"no called AE":    func(c *CStoreConfig) { c.CalledAE = "" },
		"long called AE":  func(c *CStoreConfig) { c.CalledAE = "ABCDEFGHIJKLMNOPQ" },
		"backslash":       func(c *CStoreConfig) { c.CallingAE = `A\B` },
		"blank calling":   func(c *CStoreConfig) { c.CallingAE = "   " },
		"control char":    func(c *CStoreConfig) { c.CallingAE = "A\nB" },
		"tiny max PDU":    func(c *CStoreConfig) { c.MaxPDULength = 1000 },
	} {
		cfg := good
		edit(&cfg)
		if _, err := NewCStore(cfg, nil); err == nil {
			t.Errorf("%s: NewCStore accepted %+v", name, cfg)
		}
	}
}

// TestCStoreDeliversInOwnTransferSyntax: a batch of objects of several
// SOP classes and transfer syntaxes goes over one association, each in a
// presentation context of its own class and syntax, and the SCP commits
// each data set byte for byte as it was spooled.
func TestCStoreDeliversInOwnTransferSyntax(t *testing.T) {
	h := newSCPHandler()
	addr := startSCP(t, dimse.Config{MaxPDULength: 16384}, h, nil)
	objs := []*Object{
		ctObject("1", "1.2.826.0.1.99.3.1", 100_000), // several PDUs
		memObject("2", ctClass, "1.2.826.0.1.99.3.2", jpegBase, "MODALITY", []byte("jpeg baseline data set, as spooled")),
		memObject("3", mrClass, "1.2.826.0.1.99.3.3", jpegLSLossl, "MODALITY", []byte("jpeg-ls data set")),
		memObject("4", mrClass, "1.2.826.0.1.99.3.4", implicitLE, "MODALITY", []byte("implicit")),
		ctObject("5", "1.2.826.0.1.99.3.5", 10),
	}
	rs := deliver(t, newTestCStore(t, addr), objs...)
	committed, aborted, _ := h.snapshot()
	assocs := map[string]bool{}
	for i, o := range objs {
		if rs[i].Outcome != Delivered || rs[i].Reason != "" {
			t.Errorf("object %s: %+v", o.ID, rs[i])
		}
		got, ok := committed[o.SOPInstanceUID]
		if !ok {
			t.Errorf("object %s not committed by the SCP", o.ID)
			continue
		}
		if !bytes.Equal(got.data, dataSetOf(t, o)) {
			t.Errorf("object %s: the SCP got a different data set", o.ID)
		}
		if got.ts != o.TransferSyntaxUID || got.sopClass != o.SOPClassUID {
			t.Errorf("object %s: sent as %s in %s, want %s in %s", o.ID, got.sopClass, got.ts, o.SOPClassUID, o.TransferSyntaxUID)
		}
		if got.calling != "DICOMGW" || got.called != "PACS" {
			t.Errorf("object %s: calling %q called %q", o.ID, got.calling, got.called)
		}
		assocs[got.assoc] = true
	}
	if len(assocs) != 1 {
		t.Errorf("the batch went over %d associations, want 1", len(assocs))
	}
	if len(aborted) != 0 {
		t.Errorf("aborted at the SCP: %v", aborted)
	}
}

// TestCStoreStatuses: each C-STORE-RSP status is read as PS3.4 B.2.3 and
// PS3.7 C say, the way STOW-RS FailureReasons are; the association goes
// on after a refusal.
func TestCStoreStatuses(t *testing.T) {
	cases := []struct {
		status  dimse.Status
		outcome Outcome
		cause   Cause
		reason  string
	}{
		{0x0000, Delivered, CauseNone, ""},
		{0xB000, Delivered, CauseNone, "0xB000 (Warning: coercion of data elements)"},
		{0xB006, Delivered, CauseNone, "0xB006 (Warning: elements discarded)"},
		{0xB007, Delivered, CauseNone, "0xB007 (Warning: data set does not match SOP class)"},
		{0xA700, Retry, CauseNone, "0xA700 (Refused: out of resources)"},
		{0xA7F3, Retry, CauseNone, "0xA7F3"},
		{0x0110, Retry, CauseNone, "0x0110 (Failure: processing failure)"},
		{0xA900, Dead, CauseNone, "0xA900 (Error: data set does not match SOP class)"},
		{0xA9FF, Dead, CauseNone, "0xA9FF"},
		{0xC000, Dead, CauseNone, "0xC000 (Error: cannot understand)"},
		{0xC123, Dead, CauseNone, "0xC123"},
		{0x0122, Dead, CauseNone, "0x0122 (Refused: SOP class not supported)"},
		{0x0211, Dead, CauseNone, "0x0211 (Unrecognized operation)"},
		{0x0124, Pause, CauseNotAuthorized, "0x0124 (Refused: not authorized)"},
		{0x0001, Retry, CauseNone, "0x0001"},           // a warning C-STORE does not define
		{0xB123, Retry, CauseNone, "0xB123"},           // likewise
		{0xFF00, Retry, CauseNone, "0xFF00"},           // pending: no C-STORE has it
		{0xFE00, Retry, CauseNone, "0xFE00"},           // cancel
		{0x0212, Retry, CauseNone, "0x0212"},           // mistyped argument
		{0xD000, Retry, CauseNone, "0xD000 (failure)"}, // no such status
	}
	h := newSCPHandler()
	addr := startSCP(t, dimse.Config{}, h, nil)
	var objs []*Object
	for i, c := range cases {
		o := ctObject(fmt.Sprint(i), fmt.Sprintf("1.2.826.0.1.99.4.%d", i+1), 64)
		objs = append(objs, o)
		if c.status != 0 {
			h.answer[o.SOPInstanceUID] = &dimse.StatusError{Status: c.status, Comment: "said the PACS\\"}
		}
	}
	rs := deliver(t, newTestCStore(t, addr), objs...)
	for i, c := range cases {
		r := rs[i]
		if r.Outcome != c.outcome || r.Cause != c.cause || !strings.Contains(r.Reason, c.reason) {
			t.Errorf("status 0x%04X: %v %v %q, want %v %v and a reason naming %q", uint16(c.status), r.Outcome, r.Cause, r.Reason, c.outcome, c.cause, c.reason)
		}
		if c.status != 0 && !strings.Contains(r.Reason, `"said the PACS?"`) {
			t.Errorf("status 0x%04X: the reason %q does not quote the error comment", uint16(c.status), r.Reason)
		}
	}
	committed, _, begun := h.snapshot()
	if begun != len(cases) || len(committed) != 1 {
		t.Errorf("the SCP began %d stores and committed %d, want %d and 1", begun, len(committed), len(cases))
	}
}

// TestCStoreRefusedContexts: an object whose SOP class or transfer syntax
// the peer does not accept is dead-lettered saying so — never sent in
// another syntax — and the rest of the batch is delivered.
func TestCStoreRefusedContexts(t *testing.T) {
	h := newSCPHandler()
	addr := startSCP(t, dimse.Config{}, h, nil)
	objs := []*Object{
		memObject("1", "1.2.826.0.1.99.777", explicitLE, explicitLE, "MODALITY", []byte("private class")), // not storage for the Server
		ctObject("2", "1.2.826.0.1.99.5.2", 32),
		memObject("3", ctClass, "1.2.826.0.1.99.5.3", "1.2.826.0.1.99.888", "MODALITY", []byte("unknown syntax")),
		memObject("4", ctClass, "1.2.826.0.1.99.5.4", "1.2.840.10008.1.2.6.1", "MODALITY", []byte("MIME encapsulation: never on the network")),
	}
	objs[0].SOPInstanceUID = "1.2.826.0.1.99.5.1"
	rs := deliver(t, newTestCStore(t, addr), objs...)
	want := []struct {
		outcome Outcome
		reason  string
	}{
		{Dead, "the destination does not accept 1.2.826.0.1.99.777 in Explicit VR Little Endian (1.2.840.10008.1.2.1) (abstract-syntax-not-supported)"},
		{Delivered, ""},
		{Dead, "the destination does not accept CT Image Storage (1.2.840.10008.5.1.4.1.1.2) in 1.2.826.0.1.99.888 (transfer-syntaxes-not-supported)"},
		{Dead, "(transfer-syntaxes-not-supported)"},
	}
	for i, w := range want {
		if rs[i].Outcome != w.outcome || !strings.Contains(rs[i].Reason, w.reason) {
			t.Errorf("object %d: %v %q, want %v %q", i+1, rs[i].Outcome, rs[i].Reason, w.outcome, w.reason)
		}
	}
	if committed, _, begun := h.snapshot(); begun != 1 || len(committed) != 1 {
		t.Errorf("the SCP began %d stores and committed %d, want 1 and 1", begun, len(committed))
	}
}

// TestCStoreAssociationRejected: a permanent rejection pauses the
// destination with the cause association_rejected and a reason naming the
// rejection; a transient one is retried.
func TestCStoreAssociationRejected(t *testing.T) {
	busy := errors.New("spool full")
	addr := startSCP(t, dimse.Config{CallingAEs: []dimse.CallingAE{{AE: "KNOWN"}}}, newSCPHandler(), nil)
	busyAddr := startSCP(t, dimse.Config{Admit: func() error { return busy }}, newSCPHandler(), nil)
	objs := []*Object{ctObject("1", "1.2.826.0.1.99.6.1", 8), ctObject("2", "1.2.826.0.1.99.6.2", 8)}
	cases := []struct {
		name    string
		addr    string
		edit    func(*CStoreConfig)
		outcome Outcome
		cause   Cause
		reason  string
	}{
		{"called AE unknown", addr, func(c *CStoreConfig) { c.CalledAE = "NOTPACS"; c.CallingAE = "KNOWN" }, Pause, CauseRejected,
			`the destination rejected the association (service-user, called-AE-title-not-recognized): is "NOTPACS" the destination's AE title?`},
		{"calling AE unknown", addr, nil, Pause, CauseRejected,
			`the destination rejected the association (service-user, calling-AE-title-not-recognized): the destination does not know the calling AE title "DICOMGW"`},
		{"transient", busyAddr, nil, Retry, CauseNone,
			"the destination rejected the association for now (service-provider-presentation, temporary-congestion)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var edits []func(*CStoreConfig)
			if c.edit != nil {
				edits = append(edits, c.edit)
			}
			rs := deliver(t, newTestCStore(t, c.addr, edits...), objs...)
			for i, r := range rs {
				if r.Outcome != c.outcome || r.Cause != c.cause || r.Reason != c.reason {
					t.Errorf("object %d: %v %v %q, want %v %v %q", i+1, r.Outcome, r.Cause, r.Reason, c.outcome, c.cause, c.reason)
				}
			}
		})
	}
	if CauseRejected.String() != "association_rejected" {
		t.Errorf("CauseRejected is %q", CauseRejected)
	}
}

// TestCStoreConnectionRefused: nobody listening is a transient failure.
func TestCStoreConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rs := deliver(t, newTestCStore(t, addr), ctObject("1", "1.2.826.0.1.99.7.1", 8), ctObject("2", "1.2.826.0.1.99.7.2", 8))
	for i, r := range rs {
		if r.Outcome != Retry || !strings.Contains(r.Reason, "cannot open an association with the destination") || !strings.Contains(r.Reason, "refused") {
			t.Errorf("object %d: %v %q", i+1, r.Outcome, r.Reason)
		}
	}
}

// TestCStoreChecksTheResponse: a C-STORE-RSP that does not answer the
// request — another message ID, another SOP instance or class, no message
// ID, another command — is a protocol error: the object is retried, the
// association aborted, and the objects not yet sent go again at once.
func TestCStoreChecksTheResponse(t *testing.T) {
	cases := []struct {
		name   string
		bad    func(rsp *dimse.Command)
		reason string
	}{
		{"message ID", func(r *dimse.Command) { r.MessageIDBeingRespondedTo += 7 }, "the C-STORE-RSP answers message 9, the request was message 2"},
		{"no message ID", func(r *dimse.Command) { r.Has &^= dimse.HasMessageIDBeingRespondedTo }, "the C-STORE-RSP has no Message ID Being Responded To (0000,0120)"},
		{"SOP instance", func(r *dimse.Command) { r.AffectedSOPInstanceUID = "1.2.3.4" }, `the C-STORE-RSP names SOP instance "1.2.3.4", the request 1.2.826.0.1.99.8.2`},
		{"SOP class", func(r *dimse.Command) { r.AffectedSOPClassUID = mrClass }, `the C-STORE-RSP names SOP class "1.2.840.10008.5.1.4.1.1.4", the request 1.2.840.10008.5.1.4.1.1.2`},
		{"no status", func(r *dimse.Command) { r.Has &^= dimse.HasStatus }, "the C-STORE-RSP has no Status (0000,0900)"},
		{"echo response", func(r *dimse.Command) { r.CommandField = dimse.CEchoRSP }, "answered a C-STORE-RQ with C-ECHO-RSP"},
		{"data set", func(r *dimse.Command) { r.CommandDataSetType = 0 }, "the C-STORE-RSP announces a data set"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			scp := startRawSCP(t, func(n int, rq *dimse.Command) rawAction {
				rsp := okResponse(rq)
				if n == 2 {
					c.bad(rsp)
				}
				return rawAction{rsp: rsp}
			})
			objs := []*Object{ctObject("1", "1.2.826.0.1.99.8.1", 8), ctObject("2", "1.2.826.0.1.99.8.2", 8), ctObject("3", "1.2.826.0.1.99.8.3", 8)}
			rs := deliver(t, newTestCStore(t, scp.addr), objs...)
			if rs[0].Outcome != Delivered {
				t.Errorf("object 1: %+v", rs[0])
			}
			if rs[1].Outcome != Retry || rs[1].Reason != "the destination broke the protocol: "+c.reason {
				t.Errorf("object 2: %v %q, want retry naming %q", rs[1].Outcome, rs[1].Reason, c.reason)
			}
			if rs[2].Outcome != Abandoned {
				t.Errorf("object 3: %+v, want abandoned", rs[2])
			}
			waitForEvents(t, scp, "associate DICOMGW", "store 1.2.826.0.1.99.8.1", "store 1.2.826.0.1.99.8.2", "aborted")
		})
	}
}

// waitForEvents waits until the raw SCP's log is want.
func waitForEvents(t *testing.T, scp *rawSCP, want ...string) {
	t.Helper()
	waitFor(t, 10*time.Second, "the raw SCP's events", func() bool { return strings.Join(scp.log(), "|") == strings.Join(want, "|") })
}

// TestCStorePeerAbortsMidBatch: a peer that aborts the association while
// an object is under way: that object is retried, those not yet sent are
// abandoned (sent again at once, without it); what it answered before
// stays delivered.
func TestCStorePeerAbortsMidBatch(t *testing.T) {
	scp := startRawSCP(t, func(n int, rq *dimse.Command) rawAction {
		if n == 2 {
			return rawAction{abort: true}
		}
		return rawAction{rsp: okResponse(rq)}
	})
	objs := []*Object{ctObject("1", "1.2.826.0.1.99.9.1", 8), ctObject("2", "1.2.826.0.1.99.9.2", 8), ctObject("3", "1.2.826.0.1.99.9.3", 8)}
	rs := deliver(t, newTestCStore(t, scp.addr), objs...)
	if rs[0].Outcome != Delivered {
		t.Errorf("object 1: %+v", rs[0])
	}
	const aborted = "the destination aborted the association (source service-provider, reason reason-not-specified)"
	if rs[1].Outcome != Retry || rs[1].Reason != aborted {
		t.Errorf("object 2: %v %q, want retry %q", rs[1].Outcome, rs[1].Reason, aborted)
	}
	if rs[2].Outcome != Abandoned || rs[2].Reason != "not sent: the association ended under another object of its batch: "+aborted {
		t.Errorf("object 3: %v %q", rs[2].Outcome, rs[2].Reason)
	}
}

// TestCStorePeerStopsAnswering: a peer that takes an object and never
// answers: after the exchange timeout that object and those not yet sent
// are retried (a peer that stopped answering is not sent the rest at
// once), and the association is aborted.
func TestCStorePeerStopsAnswering(t *testing.T) {
	scp := startRawSCP(t, func(n int, rq *dimse.Command) rawAction {
		if n == 2 {
			return rawAction{hang: true}
		}
		return rawAction{rsp: okResponse(rq)}
	})
	objs := []*Object{ctObject("1", "1.2.826.0.1.99.9.11", 8), ctObject("2", "1.2.826.0.1.99.9.12", 8), ctObject("3", "1.2.826.0.1.99.9.13", 8)}
	rs := deliver(t, newTestCStore(t, scp.addr, func(c *CStoreConfig) { c.Timeout = 300 * time.Millisecond }), objs...)
	if rs[0].Outcome != Delivered {
		t.Errorf("object 1: %+v", rs[0])
	}
	const silent = "the destination did not answer within 300ms"
	if rs[1].Outcome != Retry || rs[1].Reason != silent {
		t.Errorf("object 2: %v %q, want retry %q", rs[1].Outcome, rs[1].Reason, silent)
	}
	if rs[2].Outcome != Retry || rs[2].Reason != "not sent: the association ended before its turn: "+silent {
		t.Errorf("object 3: %v %q", rs[2].Outcome, rs[2].Reason)
	}
	waitForEvents(t, scp, "associate DICOMGW", "store 1.2.826.0.1.99.9.11", "store 1.2.826.0.1.99.9.12", "aborted")
}

// TestCStoreDamagedObjectNeverCommitted: an object whose spool copy fails
// its check mid-stream is dead-lettered as damaged; the association is
// aborted before its last fragment, so the SCP discards it (its writer is
// aborted, never committed); the objects after it are abandoned (sent
// again at once, on a fresh association), those before it delivered.
func TestCStoreDamagedObjectNeverCommitted(t *testing.T) {
	for _, size := range []int{40, 300_000} { // within the first PDU; after several
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			h := newSCPHandler()
			addr := startSCP(t, dimse.Config{MaxPDULength: 16384}, h, nil)
			bad := ctObject("2", "1.2.826.0.1.99.10.2", size)
			bad.Open = damagedOpener(dataSetOf(t, bad))
			objs := []*Object{ctObject("1", "1.2.826.0.1.99.10.1", 8), bad, ctObject("3", "1.2.826.0.1.99.10.3", 8)}
			rs := deliver(t, newTestCStore(t, addr), objs...)
			if rs[0].Outcome != Delivered {
				t.Errorf("object 1: %+v", rs[0])
			}
			if rs[1].Outcome != Dead || !rs[1].Damaged || !strings.Contains(rs[1].Reason, "CRC-32C mismatch") {
				t.Errorf("damaged object: %+v", rs[1])
			}
			if rs[2].Outcome != Abandoned {
				t.Errorf("object 3: %+v, want abandoned", rs[2])
			}
			waitFor(t, 10*time.Second, "the SCP to discard the damaged object", func() bool {
				_, aborted, _ := h.snapshot()
				return len(aborted) == 1
			})
			committed, aborted, begun := h.snapshot()
			if _, ok := committed[bad.SOPInstanceUID]; ok || aborted[0] != bad.SOPInstanceUID || begun != 2 || len(committed) != 1 {
				t.Errorf("SCP: committed %d (the damaged one: %v), aborted %v, begun %d", len(committed), ok, aborted, begun)
			}
		})
	}
}

// TestCStoreDataSetNotAsRecorded: a data set that ends before its recorded
// size, or runs past it, is damaged; an object whose Open fails is not
// sent, and the association goes on with the next.
func TestCStoreDataSetNotAsRecorded(t *testing.T) {
	h := newSCPHandler()
	addr := startSCP(t, dimse.Config{}, h, nil)
	short := ctObject("1", "1.2.826.0.1.99.11.1", 100)
	short.DataSize += 10
	long := ctObject("3", "1.2.826.0.1.99.11.3", 100)
	long.DataSize -= 2
	unopenable := ctObject("5", "1.2.826.0.1.99.11.5", 8)
	unopenable.Open = func() (io.ReadCloser, error) {
		return nil, fmt.Errorf("%w: queue/5.dcm: seal size mismatch", ErrDamaged)
	}
	gone := ctObject("6", "1.2.826.0.1.99.11.6", 8)
	gone.Open = func() (io.ReadCloser, error) { return nil, errors.New("too many open files") }
	c := newTestCStore(t, addr)
	check := func(r Result, what string, outcome Outcome, damaged bool, reason string) {
		t.Helper()
		if r.Outcome != outcome || r.Damaged != damaged || !strings.Contains(r.Reason, reason) {
			t.Errorf("%s: %+v, want %v damaged=%v %q", what, r, outcome, damaged, reason)
		}
	}
	rs := deliver(t, c, short, ctObject("2", "1.2.826.0.1.99.11.2", 8))
	check(rs[0], "short", Dead, true, "damaged in the spool: the data set ends 10 bytes short of its recorded size")
	check(rs[1], "after short", Abandoned, false, "not sent")
	rs = deliver(t, c, long, ctObject("4", "1.2.826.0.1.99.11.4", 8))
	check(rs[0], "long", Dead, true, "damaged in the spool: the data set is longer than the")
	check(rs[1], "after long", Abandoned, false, "not sent")
	rs = deliver(t, c, unopenable, gone, ctObject("7", "1.2.826.0.1.99.11.7", 8))
	check(rs[0], "unopenable", Dead, true, "seal size mismatch")
	check(rs[1], "unreadable", Retry, false, "cannot read the object from the spool: too many open files")
	check(rs[2], "after them", Delivered, false, "")
	// The SCP learns of an abort on its own goroutine, a moment after
	// Deliver returned.
	waitFor(t, 10*time.Second, "the SCP to see both aborts", func() bool {
		_, aborted, _ := h.snapshot()
		return len(aborted) == 2
	})
	committed, aborted, _ := h.snapshot()
	if len(committed) != 1 || len(aborted) != 2 {
		t.Errorf("SCP committed %d, aborted %v; want 1 and the short and long ones", len(committed), aborted)
	}
}

// TestCStoreContextEndsMidTransfer: when the forwarder shuts down while a
// large object is on its way to a peer that reads slowly, Deliver returns
// at once (the exchange timeout is an hour away), every object unanswered
// is abandoned, and the peer discards the partial object.
func TestCStoreContextEndsMidTransfer(t *testing.T) {
	h := newSCPHandler()
	h.holdWrite, h.writing = make(chan struct{}), make(chan struct{})
	addr := startSCP(t, dimse.Config{MaxPDULength: 16384}, h, nil)
	const size = 256 << 20 // more than any socket buffers hold
	big := memObject("1", ctClass, "1.2.826.0.1.99.12.1", explicitLE, "MODALITY", nil)
	big.DataSize = size
	big.Open = func() (io.ReadCloser, error) { return io.NopCloser(&patternReader{n: size}), nil }
	c := newTestCStore(t, addr, func(c *CStoreConfig) { c.Timeout = time.Hour })
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-h.writing // the SCP has the first bytes and stops reading
		cancel()
	}()
	rs := c.Deliver(ctx, []*Object{big, ctObject("2", "1.2.826.0.1.99.12.2", 8)})
	close(h.holdWrite)
	for i, r := range rs {
		if r.Outcome != Abandoned {
			t.Errorf("object %d: %+v, want abandoned", i+1, r)
		}
	}
	waitFor(t, 10*time.Second, "the SCP to discard the partial object", func() bool {
		_, aborted, _ := h.snapshot()
		return len(aborted) == 1
	})
	if committed, _, begun := h.snapshot(); len(committed) != 0 || begun != 1 {
		t.Errorf("SCP committed %d, began %d", len(committed), begun)
	}
}

// TestCStoreContextEndsWhileWaiting: the forwarder shuts down while the
// peer takes its time to answer: Deliver returns at once, abandoned.
func TestCStoreContextEndsWhileWaiting(t *testing.T) {
	h := newSCPHandler()
	h.holdCommit, h.committing = make(chan struct{}), make(chan struct{})
	addr := startSCP(t, dimse.Config{}, h, nil)
	defer close(h.holdCommit)
	c := newTestCStore(t, addr, func(c *CStoreConfig) { c.Timeout = time.Hour })
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-h.committing
		cancel()
	}()
	rs := c.Deliver(ctx, []*Object{ctObject("1", "1.2.826.0.1.99.13.1", 8), ctObject("2", "1.2.826.0.1.99.13.2", 8)})
	for i, r := range rs {
		if r.Outcome != Abandoned || r.Reason != "shutting down" {
			t.Errorf("object %d: %+v, want abandoned", i+1, r)
		}
	}
	// Already over: nothing is even dialled.
	rs = c.Deliver(ctx, []*Object{ctObject("3", "1.2.826.0.1.99.13.3", 8)})
	if rs[0].Outcome != Abandoned {
		t.Errorf("after the end: %+v", rs[0])
	}
}

// TestCStoreOriginalCallingAE: with OriginalCallingAE each object goes
// with the calling AE title it was received from, one association per
// title; without, every object goes as ours over one association.
func TestCStoreOriginalCallingAE(t *testing.T) {
	mk := func(id, calling string) *Object {
		o := ctObject(id, "1.2.826.0.1.99.14."+id, 8)
		o.CallingAE = calling
		return o
	}
	objs := []*Object{mk("1", "MOD_A"), mk("2", "MOD_B"), mk("3", "MOD_A"), mk("4", "")}
	t.Run("original", func(t *testing.T) {
		h := newSCPHandler()
		addr := startSCP(t, dimse.Config{}, h, nil)
		rs := deliver(t, newTestCStore(t, addr, func(c *CStoreConfig) { c.OriginalCallingAE = true }), objs...)
		committed, _, _ := h.snapshot()
		for i, o := range objs[:3] {
			if rs[i].Outcome != Delivered || committed[o.SOPInstanceUID].calling != o.CallingAE {
				t.Errorf("object %s: %+v, SCP saw calling AE %q", o.ID, rs[i], committed[o.SOPInstanceUID].calling)
			}
		}
		if rs[3].Outcome != Dead || !strings.Contains(rs[3].Reason, "original calling AE title") {
			t.Errorf("object without a calling AE: %+v", rs[3])
		}
		a, b := committed[objs[0].SOPInstanceUID].assoc, committed[objs[2].SOPInstanceUID].assoc
		if a != b || a == committed[objs[1].SOPInstanceUID].assoc {
			t.Errorf("associations: MOD_A %s and %s, MOD_B %s; want MOD_A's objects together", a, b, committed[objs[1].SOPInstanceUID].assoc)
		}
	})
	t.Run("ours", func(t *testing.T) {
		h := newSCPHandler()
		addr := startSCP(t, dimse.Config{}, h, nil)
		rs := deliver(t, newTestCStore(t, addr), objs...)
		committed, _, _ := h.snapshot()
		assocs := map[string]bool{}
		for i, o := range objs {
			if rs[i].Outcome != Delivered || committed[o.SOPInstanceUID].calling != "DICOMGW" {
				t.Errorf("object %s: %+v, SCP saw calling AE %q", o.ID, rs[i], committed[o.SOPInstanceUID].calling)
			}
			assocs[committed[o.SOPInstanceUID].assoc] = true
		}
		if len(assocs) != 1 {
			t.Errorf("%d associations, want 1", len(assocs))
		}
	})
}

// TestCStoreManyContexts: a batch with more distinct (class, syntax)
// pairs than one association can propose (128) goes over several.
func TestCStoreManyContexts(t *testing.T) {
	h := newSCPHandler()
	addr := startSCP(t, dimse.Config{AcceptUnknownSOPClasses: true}, h, nil)
	var objs []*Object
	for i := range 130 {
		objs = append(objs, memObject(fmt.Sprint(i), fmt.Sprintf("1.2.826.0.1.99.500.%d", i), fmt.Sprintf("1.2.826.0.1.99.15.%d", i), explicitLE, "M", []byte{byte(i), 0}))
	}
	rs := deliver(t, newTestCStore(t, addr), objs...)
	for i, r := range rs {
		if r.Outcome != Delivered {
			t.Fatalf("object %d: %+v", i, r)
		}
	}
	committed, _, _ := h.snapshot()
	assocs := map[string]bool{}
	for _, o := range committed {
		assocs[o.assoc] = true
	}
	if len(committed) != 130 || len(assocs) != 2 {
		t.Errorf("%d committed over %d associations, want 130 over 2", len(committed), len(assocs))
	}
}

// TestCStoreTLS: dicoms:// — the peer's certificate is verified against
// our CA, ours is presented to it; a peer we cannot verify is a
// transient failure naming the TLS error.
func TestCStoreTLS(t *testing.T) {
	pki, err := harness.NewPKI(t.TempDir(), "test CA")
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := pki.Server("server")
	if err != nil {
		t.Fatal(err)
	}
	cliCert, err := pki.Client("client", "DICOMGW")
	if err != nil {
		t.Fatal(err)
	}
	h := newSCPHandler()
	addr := startSCP(t, dimse.Config{}, h, func(ln net.Listener) net.Listener {
		return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{srvCert.TLS}, ClientCAs: pki.Pool(),
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	})
	c := newTestCStore(t, addr, func(c *CStoreConfig) {
		c.TLS = &tls.Config{RootCAs: pki.Pool(), Certificates: []tls.Certificate{cliCert.TLS}, MinVersion: tls.VersionTLS12}
	})
	if !strings.HasPrefix(c.String(), "dicoms://PACS@127.0.0.1:") {
		t.Errorf("String() = %q", c.String())
	}
	o := ctObject("1", "1.2.826.0.1.99.16.1", 50_000)
	if rs := deliver(t, c, o); rs[0].Outcome != Delivered {
		t.Fatalf("over TLS: %+v", rs[0])
	}
	if committed, _, _ := h.snapshot(); !bytes.Equal(committed[o.SOPInstanceUID].data, dataSetOf(t, o)) {
		t.Error("the SCP got a different data set over TLS")
	}

	other, err := harness.NewPKI(t.TempDir(), "other CA")
	if err != nil {
		t.Fatal(err)
	}
	c = newTestCStore(t, addr, func(c *CStoreConfig) {
		c.TLS = &tls.Config{RootCAs: other.Pool(), Certificates: []tls.Certificate{cliCert.TLS}, MinVersion: tls.VersionTLS12}
	})
	rs := deliver(t, c, ctObject("2", "1.2.826.0.1.99.16.2", 8))
	if rs[0].Outcome != Retry || !strings.Contains(rs[0].Reason, "TLS handshake") || !strings.Contains(rs[0].Reason, "certificate") {
		t.Errorf("unverifiable peer: %+v", rs[0])
	}
}

// TestCStoreThroughForwarder: the forwarder with a C-STORE destination
// drains a queue into the SCP, quarantines a damaged object without the
// SCP ever committing it, and delivers the rest of its batch.
func TestCStoreThroughForwarder(t *testing.T) {
	h := newSCPHandler()
	addr := startSCP(t, dimse.Config{}, h, nil)
	var objs []*Object
	for i := range 6 {
		objs = append(objs, ctObject(fmt.Sprintf("%02d", i), fmt.Sprintf("1.2.826.0.1.99.17.%d", i+1), 1000))
	}
	objs[2].Open = damagedOpener(dataSetOf(t, objs[2]))
	q := newFakeQueue(objs...)
	f := New(Config{BatchLinger: -1, RetryMin: time.Millisecond, RetryMax: time.Millisecond}, q, newTestCStore(t, addr), nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	waitFor(t, 20*time.Second, "the queue to drain", q.allDone)
	cancel()
	<-done
	want := map[string]string{}
	for _, o := range objs {
		want[o.ID] = "delivered"
	}
	want[objs[2].ID] = "dead"
	q.checkAccounted(t, want)
	committed, _, _ := h.snapshot()
	if _, ok := committed[objs[2].SOPInstanceUID]; ok || len(committed) != 5 {
		t.Errorf("SCP committed %d objects (the damaged one: %v)", len(committed), ok)
	}
}
