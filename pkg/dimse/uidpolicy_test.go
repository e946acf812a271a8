package dimse

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicomgw/dicomgw/pkg/uid"
)

// logSink collects JSON log records.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logSink) records(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

const nonconformingMsg = "accepted UIDs that break PS3.5 9.1; later objects of this association are counted, not logged"

// TestUIDPolicy: the Affected SOP Instance and Class UIDs of a C-STORE-RQ
// against Config.UIDPolicy. Under lenient, UIDs seen in the wild (a
// hexadecimal hash, a leading zero, an empty component, a trailing dot)
// are stored, counted by attribute in dicomgw_nonconforming_uids_total
// together with what the handler reports of the data set, and logged once
// per association; under strict they get C000 naming the problem. Under
// both, a slash, a space, a non-ASCII byte or 65 bytes get C000, and the
// association goes on.
func TestUIDPolicy(t *testing.T) {
	const privateClass = "1.2.826.0.1.3680043.2.1125.07" // a leading zero, accepted as storage with AcceptUnknownSOPClasses
	lenientOnly := []struct{ inst, problem string }{
		{strings.Repeat("0123456789abcdef", 4), "has letters (hexadecimal?)"},
		{"01.2.3", "has a leading zero in a component"},
		{"1..2", "has an empty component"},
		{"1.2.3.", "ends with '.'"},
	}
	refused := []struct{ inst, problem string }{
		{"1.2/3", "has a slash"},
		{"1.2 3", "has a space"},
		{"1.2.\u00e9", "has a non-ASCII byte"},
		{"1." + strings.Repeat("2", 63), "is longer than 64 bytes"},
	}
	for _, pol := range []uid.Policy{uid.Lenient, uid.Strict} {
		t.Run(pol.String(), func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			store := newMemStore()
			store.nonconforming = []uid.Finding{{Attribute: uid.StudyInstanceUID, Problem: uid.Letters}}
			var logs logSink
			log := slog.New(slog.NewJSONHandler(&logs, nil))
			srv, err := NewServer(Config{AETitles: []string{"DICOMGW"}, UIDPolicy: pol, AcceptUnknownSOPClasses: true}, store, log, reg)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ln) }()
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				srv.Shutdown(ctx)
				<-done
			}()
			private := ProposedContext{AbstractSyntax: privateClass, TransferSyntaxes: []string{uid.ExplicitVRLittleEndian}}

			for round := 0; round < 2; round++ { // two associations: one log line each
				c := dial(t, ln.Addr().String(), ctCT, private)
				send := func(class, inst string) *Command {
					t.Helper()
					rsp, err := c.Store(class, inst, uid.ExplicitVRLittleEndian, bytes.NewReader(ctDataSet(class, inst, 300)))
					if err != nil {
						t.Fatal(err)
					}
					return rsp
				}
				for _, u := range lenientOnly {
					rsp := send(ctClass, u.inst)
					switch {
					case pol == uid.Lenient && rsp.Status != StatusSuccess:
						t.Errorf("%q: %v (%q), want 0000", u.inst, rsp.Status, rsp.ErrorComment)
					case pol == uid.Strict && (rsp.Status != StatusCannotUnderstand || rsp.ErrorComment != "affected SOP instance UID "+u.problem):
						t.Errorf("%q: %v (%q), want C000 (affected SOP instance UID %s)", u.inst, rsp.Status, rsp.ErrorComment, u.problem)
					}
				}
				for _, u := range refused {
					if rsp := send(ctClass, u.inst); rsp.Status != StatusCannotUnderstand || rsp.ErrorComment != "affected SOP instance UID "+u.problem {
						t.Errorf("%q: %v (%q), want C000 (affected SOP instance UID %s)", u.inst, rsp.Status, rsp.ErrorComment, u.problem)
					}
				}
				rsp := send(privateClass, "1.2.3.4")
				if want := map[uid.Policy]Status{uid.Lenient: StatusSuccess, uid.Strict: StatusCannotUnderstand}[pol]; rsp.Status != want {
					t.Errorf("SOP class %s: %v (%q), want %v", privateClass, rsp.Status, rsp.ErrorComment, want)
				}
				if rsp := send(ctClass, "1.2.840.99"); rsp.Status != StatusSuccess {
					t.Errorf("a conforming UID after the rest: %v (%q)", rsp.Status, rsp.ErrorComment)
				}
				if err := c.Release(); err != nil {
					t.Fatal(err)
				}
			}
			waitIdle(t, srv)

			// Per association: 4 objects with a non-conforming instance UID,
			// one with a non-conforming class, and the data set's study UID
			// of each stored object (6 of them) as the handler reports.
			want := map[string]float64{"sop_instance_uid": 8, "sop_class_uid": 2, "study_instance_uid": 12, "series_instance_uid": 0}
			lines, objects := 2, 6.0
			if pol == uid.Strict {
				want = map[string]float64{"sop_instance_uid": 0, "sop_class_uid": 0, "study_instance_uid": 2, "series_instance_uid": 0}
				lines, objects = 2, 1
			}
			for attr, n := range want {
				if got := testutil.ToFloat64(srv.m.nonconforming.WithLabelValues(attr)); got != n {
					t.Errorf("dicomgw_nonconforming_uids_total{attribute=%q} = %v, want %v", attr, got, n)
				}
			}
			if n := testutil.CollectAndCount(reg, "dicomgw_nonconforming_uids_total"); n != 4 {
				t.Errorf("%d series of dicomgw_nonconforming_uids_total, want 4", n)
			}
			recs := logs.records(nonconformingMsg)
			if len(recs) != lines {
				t.Fatalf("%d log lines about non-conforming UIDs, want %d (one per association)", len(recs), lines)
			}
			first := recs[0]
			if pol == uid.Lenient && (first["sop_instance_uid"] != lenientOnly[0].problem || first["study_instance_uid"] != "has letters (hexadecimal?)" ||
				first["sop_instance"] != lenientOnly[0].inst || first["policy"] != "lenient") {
				t.Errorf("log line %v", first)
			}
			for _, end := range logs.records("association ended") {
				if n, _ := end["nonconforming_uid_objects"].(float64); n != objects {
					t.Errorf("association end line says %v objects with non-conforming UIDs, want %v: %v", end["nonconforming_uid_objects"], objects, end)
				}
			}
		})
	}
}
