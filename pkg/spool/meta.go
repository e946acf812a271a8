package spool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/dicomgw/dicomgw/pkg/part10"
)

// Meta is what the spool records with each object. It travels inside the
// object's own Part 10 file meta information, so that one atomic rename
// commits the object and its record together.
type Meta struct {
	SOPClassUID       string    `json:"sop_class_uid"`
	SOPInstanceUID    string    `json:"sop_instance_uid"`
	TransferSyntaxUID string    `json:"transfer_syntax_uid"`
	CallingAE         string    `json:"calling_ae"`
	CalledAE          string    `json:"called_ae"`
	RemoteAddr        string    `json:"remote_addr"`
	AssociationID     string    `json:"association_id"`
	Received          time.Time `json:"received"`
	// Destinations are where the object was routed when it was committed:
	// written into the record by the commit, before the fsync that makes
	// the object durable, so routing survives with the object.
	Destinations []string `json:"destinations,omitempty"`
}

// recordVersion is the version of the JSON record in (0002,0102).
const recordVersion = 1

type record struct {
	Version int `json:"v"`
	Meta
}

// tagPrivateInfo is where the record is: Private Information (0002,0102)
// (PS3.10 Table 7.1-1).
const tagPrivateInfo = 0x0102

// appendMeta appends the preamble, "DICM" and the file meta information
// (PS3.10 7.1): version 00 01, media storage SOP class and instance from the
// C-STORE command, the transfer syntax of the presentation context, our
// implementation class UID and version name, the calling AE as source AE
// title, and our record as private information whose creator is our
// implementation class UID. The record is padded with reserve spaces, room
// for what the commit adds to it (recordAt). It returns where the record's
// value lies in b.
func appendMeta(b []byte, m *Meta, implUID, implVersion string, reserve int) ([]byte, recordAt, error) {
	rec, err := json.Marshal(record{Version: recordVersion, Meta: *m})
	if err != nil {
		return nil, recordAt{}, err
	}
	padded := append(rec, bytes.Repeat([]byte{' '}, reserve)...)
	if len(padded)%2 == 1 {
		padded = append(padded, ' ') // what part10 would add
	}
	b = part10.AppendMeta(b, &part10.Meta{
		SOPClassUID:               m.SOPClassUID,
		SOPInstanceUID:            m.SOPInstanceUID,
		TransferSyntaxUID:         m.TransferSyntaxUID,
		ImplementationClassUID:    implUID,
		ImplementationVersionName: implVersion,
		SourceAE:                  m.CallingAE,
		PrivateCreator:            implUID,
		Private:                   padded,
	})
	// The record is the last element of the group.
	return b, recordAt{off: len(b) - len(padded), n: len(padded)}, nil
}

// recordAt is where a record's value lies in a head: it may be rewritten
// in place with a record of at most n bytes, padded with spaces.
type recordAt struct{ off, n int }

// rewriteRecord writes m's record over the one at r in head.
func rewriteRecord(head []byte, r recordAt, m *Meta) error {
	rec, err := json.Marshal(record{Version: recordVersion, Meta: *m})
	if err != nil {
		return err
	}
	if len(rec) > r.n {
		return fmt.Errorf("spool: the record needs %d bytes, %d were reserved for it", len(rec), r.n)
	}
	copy(head[r.off:], rec)
	for i := r.off + len(rec); i < r.off+r.n; i++ {
		head[i] = ' '
	}
	return nil
}

// ErrNotSpoolFile is wrapped by ReadMeta errors for files the spool did not
// write (or that were damaged).
var ErrNotSpoolFile = errors.New("spool: not a spool file")

// ReadMeta reads back the record and the data set offset of a file written
// by the spool.
func ReadMeta(r io.ReaderAt) (Meta, int64, error) {
	g, err := part10.ReadGroup(r)
	if err != nil {
		return Meta{}, 0, fmt.Errorf("%w: %v", ErrNotSpoolFile, err)
	}
	v, ok := g.Elements[tagPrivateInfo]
	if !ok {
		return Meta{}, 0, fmt.Errorf("%w: no spool record", ErrNotSpoolFile)
	}
	var rec record
	if err := json.Unmarshal(bytes.TrimRight(v, " "), &rec); err != nil {
		return Meta{}, 0, fmt.Errorf("%w: record: %v", ErrNotSpoolFile, err)
	}
	if rec.Version != recordVersion {
		return Meta{}, 0, fmt.Errorf("%w: record version %d", ErrNotSpoolFile, rec.Version)
	}
	return rec.Meta, g.DataOffset, nil
}
