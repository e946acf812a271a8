package spool

import (
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dicomgw/dicomgw/pkg/dcmhead"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// ErrMalformed is wrapped when the data set cannot be parsed (truncated,
// undefined lengths not closed, ...): the sender should be told "cannot
// understand" (C000).
var ErrMalformed = errors.New("spool: malformed data set")

// ErrTooLarge is wrapped when an object passes Config.MaxObjectSize.
var ErrTooLarge = errors.New("spool: object too large")

// MismatchError says that the data set's SOP Class or Instance UID is not
// the one the C-STORE command announced (the sender should get A900).
type MismatchError struct {
	Attribute string // "SOP Class UID" or "SOP Instance UID"
	Command   string
	DataSet   string // "" when the data set lacks the attribute
}

func (e *MismatchError) Error() string {
	if e.DataSet == "" {
		return fmt.Sprintf("spool: data set has no %s (command says %s)", e.Attribute, e.Command)
	}
	return fmt.Sprintf("spool: data set %s %s differs from the command's %s", e.Attribute, e.DataSet, e.Command)
}

// UIDError says that a UID of the data set is one Config.UIDPolicy refuses
// (the sender should be told "cannot understand", C000).
type UIDError struct {
	Attribute uid.Attribute
	Problem   uid.Problem
	Value     string
}

func (e *UIDError) Error() string {
	return fmt.Sprintf("spool: data set %v %.64q %v", e.Attribute, e.Value, e.Problem)
}

// Writer receives one object. It is used by one goroutine.
type Writer struct {
	s       *Spool
	meta    Meta
	enc     dcmhead.Encoding
	id      string
	tmp     string // incoming/<id>.part
	slot    string // the slot written into; "": tmp is the only name
	pool    *slots // the slot's pool
	f       *os.File
	head    []byte   // the file meta information as written
	record  recordAt // where the record lies in head
	crc     uint32   // CRC-32C of the data set so far (the seal's)
	dataOff int64
	size    int64
	counted int64 // bytes added to the spool's accounting
	err     error // first write error; the object is lost
	done    bool
	seen    *Examined // what the walk found, once Examine has run
}

// Examined is what the walk at commit found in the data set.
type Examined struct {
	Summary dcmhead.Summary
	// Nonconforming are the data set's UIDs that the policy let through
	// although they break PS3.5 9.1.
	Nonconforming []uid.Finding
}

// Create starts receiving an object described by m (whose UIDs the caller
// has validated). It writes the file meta information at once.
func (s *Spool) Create(m Meta) (*Writer, error) {
	ts, ok := uid.LookupTransferSyntax(m.TransferSyntaxUID)
	if !ok {
		return nil, fmt.Errorf("spool: unknown transfer syntax %q", m.TransferSyntaxUID)
	}
	if err := s.cap.admit(); err != nil {
		return nil, err
	}
	if m.Received.IsZero() {
		m.Received = time.Now()
	}
	m.Received = m.Received.UTC()
	w := &Writer{s: s, meta: m, enc: encodingOf(ts.Encoding), id: s.newID(m.Received)}
	w.tmp = filepath.Join(s.incoming, w.id+partialExt)
	head, rec, err := appendMeta(nil, &m, s.cfg.ImplementationClassUID, s.cfg.ImplementationVersionName, int(s.reserve.Load()))
	if err != nil {
		return nil, err
	}
	w.head, w.record = head, rec
	if err := w.open(); err != nil {
		return nil, err
	}
	if _, err := w.f.Write(head); err != nil {
		w.Abort()
		return nil, fmt.Errorf("spool: writing file meta information: %w", err)
	}
	w.dataOff = int64(len(head))
	w.count(w.dataOff)
	return w, nil
}

// open takes a slot, named <id>.part too for whoever looks into incoming/,
// or else creates the file.
func (w *Writer) open() error {
	if w.pool = w.s.slots; w.pool != nil {
		if sl, ok := w.pool.take(); ok {
			if err := os.Link(sl.path, w.tmp); err != nil {
				sl.f.Close()
				os.Remove(sl.path)
				return fmt.Errorf("spool: %w", err)
			}
			w.f, w.slot = sl.f, sl.path
			return nil
		}
	}
	f, err := os.OpenFile(w.tmp, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o640)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	w.f = f
	return nil
}

// count adds n bytes of this object to the spool's accounting.
func (w *Writer) count(n int64) {
	w.counted += n
	w.s.cap.add(n)
}

func encodingOf(e uid.Encoding) dcmhead.Encoding {
	switch e {
	case uid.EncodingImplicitVRLittleEndian:
		return dcmhead.ImplicitVRLittleEndian
	case uid.EncodingExplicitVRBigEndian:
		return dcmhead.ExplicitVRBigEndian
	case uid.EncodingDeflatedExplicitVRLittleEndian:
		return dcmhead.DeflatedExplicitVRLittleEndian
	}
	return dcmhead.ExplicitVRLittleEndian
}

// ID is the spool's name for the object.
func (w *Writer) ID() string { return w.id }

// Write appends data set bytes.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	next := w.size + int64(len(p))
	if max := w.s.cfg.MaxObjectSize; max > 0 && next > max {
		w.err = fmt.Errorf("%w: more than %d bytes (--max-object-size)", ErrTooLarge, max)
		return 0, w.err
	}
	if err := w.s.cap.fits(int64(len(p)), w.size/freeCheckEvery != next/freeCheckEvery); err != nil {
		w.err = err
		return 0, err
	}
	n, err := w.f.Write(p)
	w.crc = crc32.Update(w.crc, castagnoli, p[:n])
	w.size += int64(n)
	w.count(int64(n))
	if err != nil {
		w.err = fmt.Errorf("spool: %w", err)
		return n, w.err
	}
	return n, nil
}

// Examine walks the data set as written (its structure, its SOP Class
// and Instance UIDs against the command's, its Study and Series UIDs
// against the policy) and returns what it found, with the values of the
// top-level elements in want (Summary.Values), for the caller to route the
// object before it commits it. On an error the object is removed: the
// sender is told why.
func (w *Writer) Examine(want []uint32) (Examined, error) {
	if w.done {
		return Examined{}, errors.New("spool: writer already finished")
	}
	if w.err != nil {
		w.Abort()
		return Examined{}, w.err
	}
	if w.seen == nil {
		sum, nonconforming, err := w.check(want)
		if err != nil {
			w.Abort()
			return Examined{}, err
		}
		w.seen = &Examined{Summary: sum, Nonconforming: nonconforming}
	}
	return *w.seen, nil
}

// Commit is CommitTo without destinations (objects of a spool whose
// caller does not route).
func (w *Writer) Commit() (Entry, error) {
	d, err := w.CommitTo(nil)
	return d.Entry, err
}

// CommitTo checks the data set (Examine, if the caller has not), records
// the destinations the object was routed to in its record, makes the
// object durable and queues it. On any error the object is removed: a nil
// error is the only "stored". What it returns is the queued object as the
// forwarder needs it: nothing has to be read again.
func (w *Writer) CommitTo(dests []string) (Description, error) {
	seen, err := w.Examine(nil)
	if err != nil {
		return Description{}, err
	}
	if len(dests) > 0 {
		w.meta.Destinations = dests
		if err := rewriteRecord(w.head, w.record, &w.meta); err != nil {
			w.Abort()
			return Description{}, err
		}
		if _, err := w.f.WriteAt(w.head[w.record.off:w.record.off+w.record.n], int64(w.record.off)); err != nil {
			w.Abort()
			return Description{}, fmt.Errorf("spool: writing the record: %w", err)
		}
	}
	sum := seen.Summary
	final := filepath.Join(w.s.queue, w.id+objectExt)
	total := w.dataOff + w.size
	si := sealInfo{id: w.id, size: total, headLen: w.dataOff, headCRC: crc32.Checksum(w.head, castagnoli), dataCRC: w.crc}
	d := Description{
		Item: Item{Entry: Entry{ID: w.id, Path: final, Size: total, StudyInstanceUID: sum.StudyInstanceUID, SeriesInstanceUID: sum.SeriesInstanceUID,
			Nonconforming: seen.Nonconforming}, State: StateQueued, Modified: w.meta.Received},
		Meta: w.meta, DataOffset: w.dataOff, StudyInstanceUID: sum.StudyInstanceUID, SeriesInstanceUID: sum.SeriesInstanceUID,
	}
	if w.slot != "" {
		d.seal = &si
		return d, w.commitSealed(final, si)
	}
	if w.s.slots != nil {
		// No slot was ready (the pool was empty), but the file system
		// takes seals: sealed all the same, so that every object of such
		// a spool is checked against its CRC on its way out.
		if err := unix.Fsetxattr(int(w.f.Fd()), sealAttr, seal(si.id, si.size, si.headLen, si.headCRC, si.dataCRC), 0); err != nil {
			w.Abort()
			return Description{}, fmt.Errorf("spool: sealing: %w", err)
		}
		d.seal = &si
	}
	if err := w.s.sync.SyncFile(w.f); err != nil {
		w.Abort()
		return Description{}, fmt.Errorf("spool: fsync: %w", err)
	}
	if err := w.f.Close(); err != nil {
		w.f = nil
		w.Abort()
		return Description{}, fmt.Errorf("spool: %w", err)
	}
	w.f = nil
	if err := os.Rename(w.tmp, final); err != nil {
		w.Abort()
		return Description{}, fmt.Errorf("spool: %w", err)
	}
	if err := w.s.sync.SyncDir(w.s.queue); err != nil {
		// The rename may or may not survive a crash: take it back, so that
		// an object we could not promise is never forwarded.
		os.Remove(final)
		w.done = true
		w.count(-w.counted)
		return Description{}, fmt.Errorf("spool: fsync of queue directory: %w", err)
	}
	w.done = true
	return d, nil
}

// commitSealed commits an object written into a slot: seal and fsync (the
// object is durable under the slot's name), link into queue/, and leave
// the queue directory's fsync and the slot's removal to the background.
func (w *Writer) commitSealed(final string, si sealInfo) error {
	if err := unix.Fsetxattr(int(w.f.Fd()), sealAttr, seal(si.id, si.size, si.headLen, si.headCRC, si.dataCRC), 0); err != nil {
		w.Abort()
		return fmt.Errorf("spool: sealing: %w", err)
	}
	if err := w.s.sync.SyncFile(w.f); err != nil {
		w.Abort()
		return fmt.Errorf("spool: fsync: %w", err)
	}
	err := w.f.Close()
	w.f = nil
	if err != nil {
		w.Abort()
		return fmt.Errorf("spool: %w", err)
	}
	if err := os.Link(w.slot, final); err != nil {
		w.Abort()
		return fmt.Errorf("spool: %w", err)
	}
	w.done = true
	if err := os.Remove(w.tmp); err != nil {
		w.s.log.Warn("cannot remove the receiving name of a committed object", "file", w.tmp, "err", err)
	}
	w.pool.committed(w.id, w.slot)
	return nil
}

// check walks the data set as written and compares its SOP Class and
// Instance UIDs with the command's (PS3.4 B.2.3: A900 when they differ),
// whose UIDs the caller has put through the policy. Its Study and Series
// Instance UIDs, when present, must pass Config.UIDPolicy (C000 otherwise);
// it returns those that pass although they break PS3.5 9.1.
func (w *Writer) check(want []uint32) (dcmhead.Summary, []uid.Finding, error) {
	sum, err := dcmhead.WalkCollect(w.f, w.dataOff, w.size, w.enc, want)
	if err != nil {
		var fe *dcmhead.FormatError
		if errors.As(err, &fe) {
			return sum, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		return sum, nil, fmt.Errorf("spool: reading back: %w", err)
	}
	if sum.SOPClassUID != w.meta.SOPClassUID {
		return sum, nil, &MismatchError{Attribute: "SOP Class UID", Command: w.meta.SOPClassUID, DataSet: sum.SOPClassUID}
	}
	if sum.SOPInstanceUID != w.meta.SOPInstanceUID {
		return sum, nil, &MismatchError{Attribute: "SOP Instance UID", Command: w.meta.SOPInstanceUID, DataSet: sum.SOPInstanceUID}
	}
	var found []uid.Finding
	for _, u := range []struct {
		attr uid.Attribute
		v    string
	}{{uid.StudyInstanceUID, sum.StudyInstanceUID}, {uid.SeriesInstanceUID, sum.SeriesInstanceUID}} {
		if u.v == "" {
			continue // absent (or empty): filed under a placeholder, never refused
		}
		p := uid.Check(u.v)
		if !w.s.cfg.UIDPolicy.Accepts(p) {
			return sum, nil, &UIDError{Attribute: u.attr, Problem: p, Value: u.v}
		}
		if p != uid.NoProblem {
			found = append(found, uid.Finding{Attribute: u.attr, Problem: p})
		}
	}
	return sum, found, nil
}

// Abort discards the object. It is safe to call more than once.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	for _, name := range []string{w.tmp, w.slot} {
		if name == "" {
			continue
		}
		if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			w.s.log.Error("cannot remove partial object", "file", name, "err", err)
		}
	}
	w.count(-w.counted)
}
