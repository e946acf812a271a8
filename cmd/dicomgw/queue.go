package main

import (
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
		return nil, forward.RetryRecord{}, err
	}
	obj := &forward.Object{
		ID:                d.ID,
		Path:              d.Path,
		Size:              d.Size,
		DataOffset:        d.DataOffset,
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
		rec = forward.RetryRecord{Attempts: r.Attempts, FirstFailure: r.FirstFailure, NextAttempt: r.NextAttempt, LastError: r.LastError}
	}
	return obj, rec, nil
}

func (q spoolQueue) Delivered(id string) error { return q.s.Delivered(id) }

func (q spoolQueue) Retry(id string, r forward.RetryRecord) error {
	return q.s.SetRetry(id, spool.Retry{Attempts: r.Attempts, FirstFailure: r.FirstFailure, NextAttempt: r.NextAttempt, LastError: r.LastError})
}

func (q spoolQueue) Dead(id, reason string, details map[string]string) error {
	return q.s.Dead(id, reason, details)
}
