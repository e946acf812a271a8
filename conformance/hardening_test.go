package conformance

// hardening_test.go: issue 12 through the binary. A lying endpoint, a
// damaged spool and a wrong clock must not lose or corrupt what the
// gateway acknowledged.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/pkg/ledger"
)

// answerJSON is a STOW-RS answer (PS3.18 10.5.3) listing sops as stored.
func stowAnswerJSON(sops []string) string {
	var refs []any
	for _, s := range sops {
		refs = append(refs, map[string]any{
			"00081150": map[string]any{"vr": "UI", "Value": []string{sopSecondaryCapture}},
			"00081155": map[string]any{"vr": "UI", "Value": []string{s}},
		})
	}
	body := map[string]any{"00081190": map[string]any{"vr": "UR", "Value": []string{"http://endpoint/studies"}}}
	if refs != nil {
		body["00081199"] = map[string]any{"vr": "SQ", "Value": refs}
	}
	b, _ := json.Marshal(body)
	return string(b)
}

// studiesObjects is n objects, each of a study of its own.
func studiesObjects(t *testing.T, n, pixelBytes int) []testObject {
	var out []testObject
	for range n {
		out = append(out, studyObjects(t, t.TempDir(), 1, pixelBytes)...)
	}
	return out
}

// TestLyingEndpoint: answers that are no proof of storage deliver nothing.
func TestLyingEndpoint(t *testing.T) {
	t.Parallel()

	// An SSO proxy in front of the endpoint whose session expired answers
	// 200 with its login page: the destination pauses, says why (log,
	// metrics), and keeps every object.
	t.Run("login page", func(t *testing.T) {
		t.Parallel()
		objs := studyObjects(t, t.TempDir(), 5, 8<<10)
		fake, srv := newSTOWFake(t, nil)
		fake.raw = func(_ int, _ []string, w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, `<!DOCTYPE html><html><body><form action="/auth/realms/kheops/login-actions/authenticate">Sign in</form></body></html>`)
		}
		g := startGateway(t, t.TempDir(), append([]string{"--stow-url", srv.URL + "/dicom-web"}, fastRetry...)...)
		storeAll(t, g.Addr, "PROXYSCU", objs)
		rec, err := g.WaitLog("destination paused: objects are kept until it accepts them again", 15*time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		if why, _ := rec["reason"].(string); !strings.Contains(why, `"text/html"`) || !strings.Contains(why, "not a DICOM STOW-RS response") {
			t.Errorf("pause reason %q", why)
		}
		m, err := g.Scrape()
		if err != nil {
			t.Fatal(err)
		}
		if m.Get("dicomgw_forward_pauses_total", `cause="not_dicom_answer"`, `destination="default"`) < 1 || m.Sum("dicomgw_forward_destination_up") != 0 {
			t.Errorf("pauses %v, up %v", m.Get("dicomgw_forward_pauses_total", `cause="not_dicom_answer"`, `destination="default"`), m.Sum("dicomgw_forward_destination_up"))
		}
		time.Sleep(2 * time.Second) // several retry-max periods: the pause holds
		if c := countSpool(t, g.SpoolDir); c.Queued != len(objs) || c.Dead != 0 {
			t.Errorf("after a login page: %v; want all %d objects queued", c, len(objs))
		}
		if n := len(g.LogRecords("object delivered")); n != 0 {
			t.Errorf("%d objects called delivered on a login page", n)
		}
	})

	// A well-formed DICOM answer that leaves instances out: the others are
	// delivered, the left-out ones retried, then dead-lettered with the
	// reason after five such answers in a row.
	t.Run("instances left out", func(t *testing.T) {
		t.Parallel()
		objs := studyObjects(t, t.TempDir(), 4, 8<<10)
		listed := map[string]bool{objs[0].SOPInstanceUID: true, objs[1].SOPInstanceUID: true}
		fake, srv := newSTOWFake(t, nil)
		fake.raw = func(_ int, sops []string, w http.ResponseWriter) {
			var say []string
			for _, s := range sops {
				if listed[s] {
					say = append(say, s)
				}
			}
			w.Header().Set("Content-Type", "application/dicom+json")
			io.WriteString(w, stowAnswerJSON(say))
		}
		g := startGateway(t, t.TempDir(), append([]string{"--stow-url", srv.URL + "/dicom-web"}, fastRetry...)...)
		storeAll(t, g.Addr, "OMITSCU", objs)
		c := waitDrained(t, g, 60*time.Second)
		if c.Dead != 2 {
			t.Fatalf("spool %v, want the 2 left-out objects dead-lettered", c)
		}
		delivered := deliveredRecords(g)
		for i, o := range objs {
			if listed[o.SOPInstanceUID] != (len(delivered[o.SOPInstanceUID]) == 1) {
				t.Errorf("object %d: %d delivery records", i, len(delivered[o.SOPInstanceUID]))
			}
		}
		for id, obj := range stateObjects(t, g.SpoolDir, "dead") {
			if listed[obj.Meta.SOPInstanceUID] {
				t.Errorf("%s: a listed instance was dead-lettered", obj.Meta.SOPInstanceUID)
			}
			if r := deadReason(t, g.SpoolDir, id); !strings.Contains(r, "left this instance out 5 times in a row") {
				t.Errorf("reason %q", r)
			}
		}
		reqs, _ := fake.snapshot()
		for _, o := range objs[2:] {
			n := 0
			for _, r := range reqs {
				for _, s := range r.sops {
					if s == o.SOPInstanceUID {
						n++
					}
				}
			}
			if n != 5 {
				t.Errorf("%s sent %d times, want 5 before the dead letter", o.SOPInstanceUID, n)
			}
		}
	})

	// Answers that announce (or just are) 10 GB: each worker reads at most
	// a few hundred KiB of one, whatever the Content-Length, so eight
	// workers facing them at once keep the process small.
	for _, chunked := range []bool{false, true} {
		name := "10 GB answers announced"
		if chunked {
			name = "endless chunked answers"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const workers = 8
			objs := studiesObjects(t, workers, 8<<10)
			var mu sync.Mutex
			arrived := 0
			all := make(chan struct{})
			fake, srv := newSTOWFake(t, nil)
			fake.raw = func(_ int, _ []string, w http.ResponseWriter) {
				mu.Lock()
				if arrived++; arrived == workers {
					close(all)
				}
				mu.Unlock()
				select { // answer together: eight huge answers at once
				case <-all:
				case <-time.After(10 * time.Second):
				}
				w.Header().Set("Content-Type", "application/dicom+json")
				if !chunked {
					w.Header().Set("Content-Length", strconv.FormatInt(10<<30, 10))
				}
				w.WriteHeader(http.StatusOK)
				chunk := bytes.Repeat([]byte(" "), 1<<20)
				w.Write([]byte("{"))
				for end := time.Now().Add(20 * time.Second); time.Now().Before(end); {
					if _, err := w.Write(chunk); err != nil {
						return // the gateway hung up: it read what it needed
					}
				}
			}
			g := startGateway(t, t.TempDir(), append([]string{"--stow-url", srv.URL + "/dicom-web", "--forward-workers", strconv.Itoa(workers)}, fastRetry...)...)
			storeAll(t, g.Addr, "HUGESCU", objs)
			if _, err := g.WaitLog("destination paused: objects are kept until it accepts them again", 30*time.Second, nil); err != nil {
				t.Fatal(err)
			}
			reqs, _ := fake.snapshot()
			peak, err := g.PeakRSS()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d requests answered with huge bodies; gateway peak RSS %.1f MB", len(reqs), float64(peak)/1e6)
			if len(reqs) < workers {
				t.Errorf("%d requests at once, want %d: the test did not load every worker", len(reqs), workers)
			}
			if peak >= 100<<20 {
				t.Errorf("peak RSS %.1f MB with %d workers facing huge answers, want < 100 MB", float64(peak)/1e6, workers)
			}
			if c := countSpool(t, g.SpoolDir); c.Queued != len(objs) {
				t.Errorf("spool %v: every object must stay queued", c)
			}
		})
	}
}

// damageSpool stores objs into a gateway whose endpoint is down, stops it
// cleanly, and returns the spool IDs by SOP Instance UID, the retry records
// removed (so that the next run tries at once).
func damageSpool(t *testing.T, spoolDir string, objs []testObject) map[string]string {
	t.Helper()
	g := startGateway(t, spoolDir)
	if rec := g.LogRecords("spool opened"); len(rec) == 0 || rec[0]["commit"] != "sealed slots" {
		t.Fatalf("the spool does not commit with seals here (%v): a CRC check needs user extended attributes on the test file system", rec)
	}
	// Half of them before the slot pool is ready, half after: objects
	// committed either way are sealed.
	storeAll(t, g.Addr, "DAMAGESCU", objs[:len(objs)/2])
	if _, err := g.WaitLog("spool slots ready", 30*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	storeAll(t, g.Addr, "DAMAGESCU", objs[len(objs)/2:])
	if err := g.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for id, obj := range stateObjects(t, spoolDir, "queue") {
		ids[obj.Meta.SOPInstanceUID] = id
		os.Remove(filepath.Join(spoolDir, "queue", id+".retry"))
	}
	if len(ids) != len(objs) {
		t.Fatalf("%d queued objects, want %d", len(ids), len(objs))
	}
	return ids
}

// TestDamagedSpoolNeverForwarded: while the daemon is stopped, one queued
// file gets a byte flipped, one is cut short, one gets garbage for a retry
// record. After a restart none of the three is sent (the STOW-RS request
// that carried the flipped one never completes; the archive never files
// it), each is quarantined as a dead letter saying what is damaged and
// counted, `spool ls` names them, and the intact object is delivered.
func TestDamagedSpoolNeverForwarded(t *testing.T) {
	t.Parallel()
	for _, dest := range []string{"stow", "archive"} {
		t.Run(dest, func(t *testing.T) {
			t.Parallel()
			spoolDir := t.TempDir()
			objs := studyObjects(t, t.TempDir(), 4, 200<<10)
			ids := damageSpool(t, spoolDir, objs)
			queue := filepath.Join(spoolDir, "queue")
			flipped, cut, garbled := ids[objs[1].SOPInstanceUID], ids[objs[2].SOPInstanceUID], ids[objs[3].SOPInstanceUID]

			f, err := os.OpenFile(filepath.Join(queue, flipped+".dcm"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := f.Stat()
			var b [1]byte
			f.ReadAt(b[:], fi.Size()/2)
			f.WriteAt([]byte{b[0] ^ 1}, fi.Size()/2) // one bit, in the pixel data
			f.Close()
			if err := os.Truncate(filepath.Join(queue, cut+".dcm"), 50_000); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(queue, garbled+".retry"), []byte("\x00\x00{\"attempts\": garbage"), 0o640); err != nil {
				t.Fatal(err)
			}

			// The operator's view, daemon stopped: every object listed,
			// the unreadable ones named.
			rows := spoolLs(t, spoolDir)
			damagedRows := map[string]bool{}
			for _, r := range rows {
				if r["damaged"] == true {
					damagedRows[r["id"].(string)] = true
				}
			}
			if len(rows) != 4 || !damagedRows[cut] || !damagedRows[garbled] {
				t.Errorf("spool ls: %d rows, damaged %v; want 4 rows naming %s and %s", len(rows), damagedRows, cut, garbled)
			}

			var fake *stowFake
			args := []string{}
			archive := t.TempDir()
			if dest == "stow" {
				f, s := newSTOWFake(t, func(int, []string) (int, string, map[string]uint16) { return http.StatusOK, "", nil })
				fake = f
				args = append(args, "--stow-url", s.URL+"/dicom-web")
			} else {
				args = append(args, "--archive-dir", archive)
			}
			g := startGateway(t, spoolDir, append(args, fastRetry...)...)
			c := waitDrained(t, g, 30*time.Second)
			if c.Dead != 3 {
				t.Fatalf("spool %v, want the 3 damaged objects dead-lettered", c)
			}
			for id, what := range map[string]string{
				flipped: "damaged in the spool: queue/" + flipped + ".dcm: CRC-32C",
				cut:     "damaged in the spool: queue/" + cut + ".dcm at offset 50000: the file has 50000 bytes, its seal says",
				garbled: "damaged in the spool: queue/" + garbled + ".retry",
			} {
				if r := deadReason(t, spoolDir, id); !strings.HasPrefix(r, what) {
					t.Errorf("%s: reason %q, want it to begin %q", id, r, what)
				}
				rf, _ := os.ReadFile(filepath.Join(spoolDir, "dead", id+".reason"))
				if !bytes.Contains(rf, []byte("damaged: yes")) {
					t.Errorf("%s: reason file without \"damaged: yes\":\n%s", id, rf)
				}
			}
			m, err := g.Scrape()
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Get("dicomgw_spool_damaged_objects_total"); got != 3 {
				t.Errorf("dicomgw_spool_damaged_objects_total = %v, want 3", got)
			}
			if dest == "stow" {
				reqs, stored := fake.snapshot()
				if len(stored) != 1 || !bytes.Equal(stored[objs[0].SOPInstanceUID], objs[0].DataSet) {
					t.Errorf("the endpoint stored %v, want only the intact object", sortedKeys(stored))
				}
				for _, r := range reqs {
					for _, s := range r.sops {
						if s != objs[0].SOPInstanceUID {
							t.Errorf("a complete request carried the damaged %s", s)
						}
					}
				}
				fake.mu.Lock()
				incomplete := fake.incomplete
				fake.mu.Unlock()
				if incomplete != 1 {
					t.Errorf("%d abandoned requests, want 1 (the one the flipped object was in)", incomplete)
				}
			} else {
				got := checkArchiveLayout(t, archive)
				if len(got) != 1 {
					t.Errorf("archive holds %v, want only the intact object", got)
				}
				for _, o := range objs[1:] {
					if _, ok := got[o.SOPInstanceUID]; ok {
						t.Errorf("damaged %s archived", o.SOPInstanceUID)
					}
				}
			}
		})
	}
}

// TestWrongClockHeals: retry records written while the clock was five
// years ahead are retried within --retry-max once it is right again: in the
// delivery ledger, and in the .retry files of a spool an earlier version
// left (taken into the ledger at start-up).
func TestWrongClockHeals(t *testing.T) {
	t.Parallel()
	for _, where := range []string{"ledger", "legacy retry files"} {
		t.Run(where, func(t *testing.T) {
			t.Parallel()
			spoolDir := t.TempDir()
			objs := studyObjects(t, t.TempDir(), 3, 4<<10)
			g := startGateway(t, spoolDir) // the endpoint is down: records are written
			storeAll(t, g.Addr, "CLOCKSCU", objs)
			waitFor(t, 20*time.Second, "retry records", func() bool { return len(retryRecords(t, spoolDir)) == len(objs) })
			if err := g.Stop(20 * time.Second); err != nil {
				t.Fatal(err)
			}
			ahead := time.Now().AddDate(5, 0, 0).UTC()
			ids := map[string]bool{}
			for id := range stateObjects(t, spoolDir, "queue") {
				ids[id] = true
			}
			if where == "ledger" {
				led, err := ledger.Open(ledger.Config{Path: filepath.Join(spoolDir, "ledger.db")}, nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				for id := range ids {
					led.Attempted(id, "default", ledger.Retry{Attempts: 1, FirstFailure: ahead, NextAttempt: ahead.Add(time.Second),
						LastError: "connection refused", Delay: time.Second})
				}
				if err := led.Close(); err != nil {
					t.Fatal(err)
				}
			} else {
				// A spool of a version before the ledger: no ledger.db, a
				// .retry file beside each queued object.
				for _, f := range []string{"ledger.db", "ledger.db-wal", "ledger.db-shm"} {
					os.Remove(filepath.Join(spoolDir, f))
				}
				for id := range ids {
					rec := fmt.Sprintf(`{"attempts":1,"first_failure":%q,"next_attempt":%q,"last_error":"connection refused","delay_seconds":1}`+"\n",
						ahead.Format(time.RFC3339Nano), ahead.Add(time.Second).Format(time.RFC3339Nano))
					if err := os.WriteFile(filepath.Join(spoolDir, "queue", id+".retry"), []byte(rec), 0o640); err != nil {
						t.Fatal(err)
					}
				}
			}
			fake, srv := newSTOWFake(t, func(int, []string) (int, string, map[string]uint16) { return http.StatusOK, "", nil })
			g = startGateway(t, spoolDir, "--stow-url", srv.URL+"/dicom-web", "--retry-min", "200ms", "--retry-max", "2s")
			c := waitDrained(t, g, 20*time.Second)
			if c.Dead != 0 || c.Retry != 0 {
				t.Errorf("spool %v", c)
			}
			if _, stored := fake.snapshot(); len(stored) != len(objs) {
				t.Errorf("%d of %d stored", len(stored), len(objs))
			}
			if len(g.LogRecords("a retry record asks to wait longer than --retry-max (was the clock ahead?): retrying within --retry-max")) != len(objs) {
				t.Errorf("no log line per healed record")
			}
		})
	}
}
