package spool

import (
	"fmt"
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
}

// Describe reads a queued object's record and walks its data set for the
// study and series it belongs to. The walk seeks over values, so it costs
// the same for a 4 KB and a 4 GB object.
func (d *Dir) Describe(id string) (Description, error) {
	it, err := d.Item(StateQueued, id)
	if err != nil {
		return Description{}, err
	}
	return DescribeItem(it)
}

// DescribeItem is Describe for an item of any state.
func DescribeItem(it Item) (Description, error) {
	f, err := os.Open(it.Path)
	if err != nil {
		return Description{}, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	m, off, err := ReadMeta(f)
	if err != nil {
		return Description{}, fmt.Errorf("%s: %w", filepath.Base(it.Path), err)
	}
	ts, ok := uid.LookupTransferSyntax(m.TransferSyntaxUID)
	if !ok {
		return Description{}, fmt.Errorf("spool: %s: unknown transfer syntax %q", filepath.Base(it.Path), m.TransferSyntaxUID)
	}
	sum, err := dcmhead.Walk(f, off, it.Size-off, encodingOf(ts.Encoding))
	if err != nil {
		return Description{}, fmt.Errorf("spool: %s: %w", filepath.Base(it.Path), err)
	}
	return Description{Item: it, Meta: m, DataOffset: off, StudyInstanceUID: sum.StudyInstanceUID, SeriesInstanceUID: sum.SeriesInstanceUID}, nil
}
