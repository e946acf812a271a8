package spool

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/dicomgw/dicomgw/internal/durable"
)

// State is where an object is in its life.
type State string

// States, each a directory of the spool.
const (
	StateQueued    State = "queued"    // queue/: waiting to be forwarded (maybe after failed attempts)
	StateDead      State = "dead"      // dead/: could not be delivered; kept with a reason
	StateDelivered State = "delivered" // delivered/: kept for a while after delivery, if so configured
)

// States lists every state, in the order an object goes through them.
var States = []State{StateQueued, StateDead, StateDelivered}

func (st State) dir() string {
	switch st {
	case StateDead:
		return deadDir
	case StateDelivered:
		return deliveredDir
	}
	return queueDir
}

// ParseState reads a state name.
func ParseState(s string) (State, error) {
	for _, st := range States {
		if string(st) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("spool: unknown state %q (one of queued, dead, delivered)", s)
}

// Retry is the durable record of failed delivery attempts, kept beside a
// queued object as <id>.retry, so that a restart neither forgets how long an
// object has been failing nor retries it at once.
type Retry struct {
	Attempts     int       `json:"attempts"`
	FirstFailure time.Time `json:"first_failure"`
	NextAttempt  time.Time `json:"next_attempt"`
	LastError    string    `json:"last_error"`
	// Unconfirmed counts the endpoint's answers in a row that left the
	// object out (neither stored nor refused).
	Unconfirmed int `json:"unconfirmed,omitempty"`
	// DelaySeconds is the wait NextAttempt was set for when the record
	// was written: after a clock correction, no object waits longer than
	// that from now.
	DelaySeconds float64 `json:"delay_seconds,omitempty"`
}

// Item is an object in some state, as the operator commands and the
// forwarder see it.
type Item struct {
	Entry
	State    State
	Modified time.Time // when it entered its state (file modification time for queued ones: receipt)
	Retry    *Retry    // queued objects that have failed before
	Reason   string    // dead objects: why
	// Damage, when set, says that one of the object's files (its retry
	// record) cannot be read: the object is to be quarantined, the other
	// objects listed as usual.
	Damage *DamagedError
}

// Items lists the objects in state st, oldest first.
func (d *Dir) Items(st State) ([]Item, error) {
	dir := filepath.Join(d.root, st.dir())
	des, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("spool: %w", err)
	}
	var out []Item
	for _, de := range des {
		name := de.Name()
		if !strings.HasSuffix(name, objectExt) || !de.Type().IsRegular() {
			continue
		}
		info, err := de.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // moved meanwhile
			}
			return nil, fmt.Errorf("spool: %w", err)
		}
		id := strings.TrimSuffix(name, objectExt)
		it := Item{Entry: Entry{ID: id, Path: filepath.Join(dir, name), Size: info.Size()}, State: st, Modified: info.ModTime()}
		switch st {
		case StateQueued:
			it.Retry, it.Damage = readRetry(id, filepath.Join(dir, id+retryExt))
		case StateDead:
			it.Reason = readReason(filepath.Join(dir, id+reasonExt))
		}
		out = append(out, it)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Item returns the object id in state st.
func (d *Dir) Item(st State, id string) (Item, error) {
	if err := validID(id); err != nil {
		return Item{}, err
	}
	dir := filepath.Join(d.root, st.dir())
	path := filepath.Join(dir, id+objectExt)
	info, err := os.Stat(path)
	if err != nil {
		return Item{}, fmt.Errorf("spool: %w", err)
	}
	it := Item{Entry: Entry{ID: id, Path: path, Size: info.Size()}, State: st, Modified: info.ModTime()}
	if st == StateQueued {
		it.Retry, it.Damage = readRetry(id, filepath.Join(dir, id+retryExt))
	}
	return it, nil
}

// maxRetryRecord bounds what is read of a retry record: ours are a few
// hundred bytes.
const maxRetryRecord = 64 << 10

// readRetry reads an object's retry record: nil when there is none, or a
// DamagedError when it cannot be read as one (garbage, a directory, a
// huge file): whatever it holds, it concerns that object alone.
func readRetry(id, path string) (*Retry, *DamagedError) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, damaged(id, path, -1, "its retry record cannot be opened: %v", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRetryRecord+1))
	if err != nil {
		return nil, damaged(id, path, -1, "its retry record cannot be read: %v", err)
	}
	if len(b) > maxRetryRecord {
		return nil, damaged(id, path, maxRetryRecord, "its retry record is longer than %d bytes", maxRetryRecord)
	}
	var r Retry
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&r); err != nil {
		var se *json.SyntaxError
		off := int64(-1)
		if errors.As(err, &se) {
			off = se.Offset
		}
		return nil, damaged(id, path, off, "its retry record is not one: %v", err)
	}
	if r.Attempts < 0 || r.Unconfirmed < 0 || r.DelaySeconds < 0 {
		return nil, damaged(id, path, -1, "its retry record holds negative counts")
	}
	return &r, nil
}

// readReason returns the "reason:" line of a dead letter's reason file.
func readReason(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if r, ok := strings.CutPrefix(sc.Text(), "reason: "); ok {
			return r
		}
	}
	return ""
}

// validID checks that id is one the spool generated: operator input and
// forwarder calls must never name anything else.
func validID(id string) error {
	if len(id) != 25 || id[16] != '-' {
		return fmt.Errorf("spool: %q is not a spool object ID", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if i != 16 && !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("spool: %q is not a spool object ID", id)
		}
	}
	return nil
}

// SetRetry records a failed attempt for a queued object: written to a
// temporary file, fsynced and renamed over the old record, so a crash leaves
// either the old record or the new one.
func (d *Dir) SetRetry(id string, r Retry) error {
	if err := validID(id); err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	q := filepath.Join(d.root, queueDir)
	if err := durable.WriteFile(filepath.Join(q, id+retryExt), append(b, '\n'), 0o640); err != nil {
		return fmt.Errorf("spool: retry record of %s: %w", id, err)
	}
	return nil
}

// DropRetry removes a queued object's retry record (the daemon has taken
// it into the delivery ledger).
func (d *Dir) DropRetry(id string) error {
	if err := validID(id); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(d.root, queueDir, id+retryExt)); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// Delivered takes a delivered object out of the queue: removed, or moved to
// delivered/ when the spool keeps delivered objects for a while.
func (d *Dir) Delivered(id string) error {
	if err := validID(id); err != nil {
		return err
	}
	q := filepath.Join(d.root, queueDir)
	src := filepath.Join(q, id+objectExt)
	if d.keepDelivered {
		dst := filepath.Join(d.root, deliveredDir, id+objectExt)
		if err := os.Rename(src, dst); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		// A fresh modification time: retention counts from delivery.
		now := time.Now()
		os.Chtimes(dst, now, now)
	} else if size, ok := d.reuseFile(src); ok {
		d.cap.add(-size)
	} else {
		info, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		if err := os.Remove(src); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		d.cap.add(-info.Size())
	}
	if err := os.Remove(filepath.Join(q, id+retryExt)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// reuseFile offers a delivered object's file to d.reuse, if there is one.
func (d *Dir) reuseFile(path string) (int64, bool) {
	if d.reuse == nil {
		return 0, false
	}
	return d.reuse(path)
}

// Dead moves a queued object to dead/ with a reason file an operator can
// read. details are extra "key: value" lines.
func (d *Dir) Dead(id, reason string, details map[string]string) error {
	if err := validID(id); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "dead-lettered: %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "reason: %s\n", oneLine(reason))
	keys := make([]string, 0, len(details))
	for k := range details {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, oneLine(details[k]))
	}
	dead := filepath.Join(d.root, deadDir)
	// The reason first: a dead letter is never without its reason.
	if err := durable.WriteFile(filepath.Join(dead, id+reasonExt), []byte(b.String()), 0o640); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	q := filepath.Join(d.root, queueDir)
	if err := os.Rename(filepath.Join(q, id+objectExt), filepath.Join(dead, id+objectExt)); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	// A fresh modification time: purging by age counts from here.
	now := time.Now()
	os.Chtimes(filepath.Join(dead, id+objectExt), now, now)
	if err := durable.SyncDir(dead); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	// RemoveAll: whatever a damaged retry record turned out to be (a
	// directory...), the dead letter is made; its reason says what it was.
	if err := os.RemoveAll(filepath.Join(q, id+retryExt)); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Requeue moves a dead object back to the queue, with its failure history
// cleared, for the forwarder to try again.
func (d *Dir) Requeue(id string) error {
	if err := validID(id); err != nil {
		return err
	}
	dead := filepath.Join(d.root, deadDir)
	q := filepath.Join(d.root, queueDir)
	if err := os.Rename(filepath.Join(dead, id+objectExt), filepath.Join(q, id+objectExt)); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if err := durable.SyncDir(q); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if err := os.Remove(filepath.Join(dead, id+reasonExt)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// Discard deletes one object in state st (dead or delivered), with its
// dead letter's reason, and returns its size: an operator gave it up.
func (d *Dir) Discard(st State, id string) (int64, error) {
	if st == StateQueued {
		return 0, errors.New("spool: queued objects are never purged")
	}
	it, err := d.Item(st, id)
	if err != nil {
		return 0, err
	}
	if err := os.Remove(it.Path); err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	os.Remove(filepath.Join(filepath.Dir(it.Path), it.ID+reasonExt))
	d.cap.add(-it.Size)
	return it.Size, nil
}

// Purge deletes the objects in state st (dead or delivered) that entered it
// before cutoff, and returns how many and how many bytes.
func (d *Dir) Purge(st State, cutoff time.Time) (int, int64, error) {
	if st == StateQueued {
		return 0, 0, errors.New("spool: queued objects are never purged")
	}
	items, err := d.Items(st)
	if err != nil {
		return 0, 0, err
	}
	var n int
	var bytes int64
	for _, it := range items {
		if !it.Modified.Before(cutoff) {
			continue
		}
		if err := os.Remove(it.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, bytes, fmt.Errorf("spool: %w", err)
		}
		os.Remove(filepath.Join(filepath.Dir(it.Path), it.ID+reasonExt))
		n++
		bytes += it.Size
	}
	d.cap.add(-bytes)
	return n, bytes, nil
}
