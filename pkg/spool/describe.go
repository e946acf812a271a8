package spool

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/dicomgw/dicomgw/pkg/dcmhead"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// Description is what the forwarder needs to know of a queued object.
type Description struct {
	Item
	Meta
	DataOffset        int64 // where the data set starts in the file
	StudyInstanceUID  string
	SeriesInstanceUID string
	seal              *sealInfo // nil: committed the simple way (no seal)
}

// Describe reads a queued object's record and walks its data set for the
// study and series it belongs to. The walk seeks over values, so it costs
// the same for a 4 KB and a 4 GB object. An error wrapping ErrDamaged
// (*DamagedError) says the object's files are damaged; one wrapping
// fs.ErrNotExist, that it is not queued (any more).
func (d *Dir) Describe(id string) (Description, error) {
	it, err := d.Item(StateQueued, id)
	if err != nil {
		return Description{}, err
	}
	return DescribeItem(it)
}

// DescribeItem is Describe for an item of any state. Whatever the files
// hold, it returns: a *DamagedError when they are not what the spool
// wrote (the item's retry record included).
func DescribeItem(it Item) (Description, error) {
	if it.Damage != nil {
		return Description{}, it.Damage
	}
	f, err := os.Open(it.Path)
	if err != nil {
		return Description{}, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	d := Description{Item: it}
	si, sealed, err := sealOf(f)
	switch {
	case errors.Is(err, errBadSeal):
		return d, damaged(it.ID, it.Path, -1, "%v", err)
	case err != nil:
		return d, fmt.Errorf("spool: %s: %w", filepath.Base(it.Path), err)
	case sealed && si.id != it.ID:
		return d, damaged(it.ID, it.Path, -1, "its seal is that of object %s", si.id)
	case sealed && si.size != it.Size:
		return d, damaged(it.ID, it.Path, min(si.size, it.Size), "the file has %d bytes, its seal says %d", it.Size, si.size)
	case sealed && si.headLen > 0:
		// A version 2 seal: the head (read here anyway) is checked now,
		// the data set as it is read (Open).
		h := crc32.New(castagnoli)
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, si.headLen)); err != nil {
			return d, fmt.Errorf("spool: %s: %w", filepath.Base(it.Path), err)
		}
		if h.Sum32() != si.headCRC {
			return d, damaged(it.ID, it.Path, 0, "its file meta information's CRC-32C is %08x, its seal says %08x", h.Sum32(), si.headCRC)
		}
		d.seal = &si
	case sealed:
		d.seal = &si
	}
	m, off, err := ReadMeta(f)
	if err != nil {
		return d, damaged(it.ID, it.Path, 0, "its file meta information cannot be read: %v", err)
	}
	ts, ok := uid.LookupTransferSyntax(m.TransferSyntaxUID)
	if !ok {
		return d, damaged(it.ID, it.Path, 0, "unknown transfer syntax %q in its file meta information", m.TransferSyntaxUID)
	}
	sum, err := dcmhead.Walk(f, off, it.Size-off, encodingOf(ts.Encoding))
	if err != nil {
		var fe *dcmhead.FormatError
		if errors.As(err, &fe) {
			// It was walked whole when it was committed.
			return d, damaged(it.ID, it.Path, off+fe.Offset, "its data set no longer parses: %s", fe.Reason)
		}
		return d, fmt.Errorf("spool: %s: %w", filepath.Base(it.Path), err)
	}
	d.Meta, d.DataOffset, d.StudyInstanceUID, d.SeriesInstanceUID = m, off, sum.StudyInstanceUID, sum.SeriesInstanceUID
	return d, nil
}

// Collect walks the object's data set for the values of the top-level
// elements in tags (dcmhead.WalkCollect): for routing an object whose
// record has no destinations (received before routing existed).
func (d *Description) Collect(tags []uint32) (map[uint32]string, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	f, err := os.Open(d.Path)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	ts, ok := uid.LookupTransferSyntax(d.TransferSyntaxUID)
	if !ok {
		return nil, damaged(d.ID, d.Path, 0, "unknown transfer syntax %q in its file meta information", d.TransferSyntaxUID)
	}
	sum, err := dcmhead.WalkCollect(f, d.DataOffset, d.Size-d.DataOffset, encodingOf(ts.Encoding), tags)
	if err != nil {
		return nil, fmt.Errorf("spool: %s: %w", filepath.Base(d.Path), err)
	}
	return sum.Values, nil
}
