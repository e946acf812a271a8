package main

import (
	"errors"
	"io"
	"time"

	"github.com/dicomgw/dicomgw/pkg/forward"
	"github.com/dicomgw/dicomgw/pkg/spool"
)

// spoolQueue is the spool as the forwarder sees it (forward.Queue).
type spoolQueue struct{ s *spool.Spool }

func (q spoolQueue) QueuedIDs() ([]string, error) {
	items, err := q.s.Items(spool.StateQueued)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.ID
	}
	return ids, nil
}

func (q spoolQueue) Describe(id string) (*forward.Object, forward.RetryRecord, error) {
	d, err := q.s.Describe(id)
	if err != nil {
		return nil, forward.RetryRecord{}, damageOf(err)
	}
	obj := &forward.Object{
		ID:                d.ID,
		Open:              func() (io.ReadCloser, error) { return openChecked(&d) },
		DataSize:          d.Size - d.DataOffset,
		SOPClassUID:       d.SOPClassUID,
		SOPInstanceUID:    d.SOPInstanceUID,
		TransferSyntaxUID: d.TransferSyntaxUID,
		StudyInstanceUID:  d.StudyInstanceUID,
		SeriesInstanceUID: d.SeriesInstanceUID,
		CallingAE:         d.CallingAE,
		Received:          d.Received,
	}
	var rec forward.RetryRecord
	if r := d.Retry; r != nil {
		rec = forward.RetryRecord{Attempts: r.Attempts, FirstFailure: r.FirstFailure, NextAttempt: r.NextAttempt, LastError: r.LastError,
			Unconfirmed: r.Unconfirmed, Delay: time.Duration(r.DelaySeconds * float64(time.Second))}
	}
	return obj, rec, nil
}

// openChecked is the object's opener: the spool's checked reader, its
// damage reported as the forwarder knows it.
func openChecked(d *spool.Description) (io.ReadCloser, error) {
	rc, err := d.Open()
	if err != nil {
		return nil, damageOf(err)
	}
	return damageReader{rc}, nil
}

// damaged is a spool error that is also forward.ErrDamaged: the two
// packages do not know each other, and meet here.
type damaged struct{ err error }

func (d damaged) Error() string        { return d.err.Error() }
func (d damaged) Unwrap() error        { return d.err }
func (d damaged) Is(target error) bool { return target == forward.ErrDamaged }

func damageOf(err error) error {
	if errors.Is(err, spool.ErrDamaged) {
		return damaged{err}
	}
	return err
}

type damageReader struct{ io.ReadCloser }

func (r damageReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = damageOf(err)
	}
	return n, err
}

func (q spoolQueue) Delivered(id string) error { return q.s.Delivered(id) }

func (q spoolQueue) Retry(id string, r forward.RetryRecord) error {
	return q.s.SetRetry(id, spool.Retry{Attempts: r.Attempts, FirstFailure: r.FirstFailure, NextAttempt: r.NextAttempt, LastError: r.LastError,
		Unconfirmed: r.Unconfirmed, DelaySeconds: r.Delay.Seconds()})
}

func (q spoolQueue) Dead(id, reason string, details map[string]string) error {
	return q.s.Dead(id, reason, details)
}
